# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Disk image mechanics on the hypervisor host: qemu-img, VHD footers, QEMU's image locks, hashing.

Everything here raises :class:`DiskImageError` with a message a user can act on; callers
(the library and the modules) decide what to do with it.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import struct
import typing as t

# run_command(args) -> (rc, stdout, stderr): AnsibleModule.run_command in modules, a subprocess
# wrapper in tests. Taking it as a parameter keeps this file free of process handling.
RunCommand = t.Callable[..., t.Tuple[int, str, str]]

# Output formats the library stores, with the file extension each gets.
FORMAT_EXTENSIONS = {
    'qcow2': 'qcow2',
    'raw': 'raw',
    'vpc': 'vhd',
    'vhdx': 'vhdx',
    'vmdk': 'vmdk',
}
# Input formats accepted when registering an uploaded file.
INPUT_FORMATS = ('qcow2', 'raw', 'vpc', 'vhdx', 'vmdk')

MIB = 1024 * 1024
VHD_FOOTER_SIZE = 512
VHD_COOKIE = b'conectix'
VHD_DISK_TYPES = {2: 'fixed', 3: 'dynamic', 4: 'differencing'}
# How far from the end a displaced VHD footer is looked for.
STRAY_FOOTER_WINDOW = 1024 * 1024

# QEMU locks bytes of an image file with open file description locks: a process with write
# permission holds a shared lock on byte RAW_LOCK_PERM_BASE + BLK_PERM_WRITE's bit (101).
# The same lock that makes `qemu-img convert` fail with 'Failed to get shared "write" lock'.
QEMU_LOCK_PERM_BASE = 100
QEMU_PERM_WRITE_BIT = 1

HASH_CHUNK = 4 * MIB
_ZEROS = bytes(HASH_CHUNK)


class DiskImageError(Exception):
    """A disk image cannot be read, written or converted; the message says why and what to do."""


def run_qemu_img(run_command: RunCommand, args: list[str], qemu_img: str = 'qemu-img') -> str:
    """Run qemu-img and return its stdout; raise DiskImageError with its stderr on failure."""
    try:
        rc, out, err = run_command([qemu_img] + args)
    except OSError as exc:
        raise DiskImageError(f'cannot run {qemu_img}: {exc}') from exc
    if rc != 0:
        message = (err or out).strip()
        # 127: the shell or env found no such program; qemu-img's own errors also say
        # 'qemu-img: ... No such file or directory' when an image or backing file is missing
        if rc == 127:
            message = f'{qemu_img} is not installed (Debian/Ubuntu: qemu-utils, RHEL/Fedora: qemu-img)'
        raise DiskImageError(f'qemu-img {args[0]} failed: {message}')
    return out


def qemu_img_version(run_command: RunCommand, qemu_img: str = 'qemu-img') -> str:
    """Return qemu-img's version line, e.g. 'qemu-img version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)'."""
    return run_qemu_img(run_command, ['--version'], qemu_img).splitlines()[0].strip()


def vhd_checksum(footer: bytes) -> int:
    """Return the VHD footer checksum: the one's complement of the byte sum, without the checksum field."""
    return ~(sum(footer[:64]) + sum(footer[68:VHD_FOOTER_SIZE])) & 0xFFFFFFFF


def is_vhd_footer(data: bytes) -> bool:
    """Return True when DATA is a VHD footer: the cookie, a known disk type and a matching checksum."""
    if len(data) != VHD_FOOTER_SIZE or data[:8] != VHD_COOKIE:
        return False
    disk_type = struct.unpack('>I', data[60:64])[0]
    return disk_type in VHD_DISK_TYPES and struct.unpack('>I', data[64:68])[0] == vhd_checksum(data)


def read_vhd_footer(path: str) -> t.Optional[dict]:
    """Return the VHD footer of PATH as a dict, or None when the file does not end with one.

    A *fixed* VHD is raw data plus a 512-byte footer at the end, and ``qemu-img info`` calls it
    raw unless told ``-f vpc``; a dynamic VHD also keeps a copy of the footer at the start.
    """
    with open(path, 'rb') as handle:
        handle.seek(0, os.SEEK_END)
        file_size = handle.tell()
        if file_size < VHD_FOOTER_SIZE:
            return None
        handle.seek(file_size - VHD_FOOTER_SIZE)
        footer = handle.read(VHD_FOOTER_SIZE)
        handle.seek(0)
        head = handle.read(VHD_FOOTER_SIZE)
    at_end = is_vhd_footer(footer)
    at_start = is_vhd_footer(head)
    if not at_end and not at_start:
        return None
    data = footer if at_end else head
    current_size = struct.unpack('>Q', data[48:56])[0]
    disk_type = struct.unpack('>I', data[60:64])[0]
    return {
        'disk_type': VHD_DISK_TYPES.get(disk_type, f'unknown ({disk_type})'),
        'current_size': current_size,
        'file_size': file_size,
        'footer_at_end': at_end,
    }


def vhd_problem(footer: dict) -> t.Optional[str]:
    """Return why a VHD is unusable (truncated, no trailing footer), or None when it looks whole."""
    if not footer['footer_at_end']:
        return 'the VHD footer is missing at the end of the file (truncated upload?)'
    if footer['disk_type'] == 'fixed' and footer['file_size'] != footer['current_size'] + VHD_FOOTER_SIZE:
        return (f"a fixed VHD of {footer['current_size']} bytes must be {footer['current_size'] + VHD_FOOTER_SIZE} bytes long, "
                f"the file is {footer['file_size']} (truncated or padded)")
    return None


def stray_vhd_footer(path: str) -> t.Optional[str]:
    """Return why PATH looks like a VHD that lost its footer (cut or padded), or None.

    A fixed VHD whose end was cut off is raw data with nothing to say what it was: only its
    name (``.vhd``) or a footer that is no longer at the very end gives it away.
    """
    with open(path, 'rb') as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        start = max(0, size - STRAY_FOOTER_WINDOW)
        handle.seek(start)
        tail = handle.read()
    # Only a real footer counts: 512-byte aligned, and its disk size says the data ends right there.
    where = tail.rfind(VHD_COOKIE)
    while where >= 0:
        offset = start + where
        footer = tail[where:where + VHD_FOOTER_SIZE]
        if offset % VHD_FOOTER_SIZE == 0 and is_vhd_footer(footer) and struct.unpack('>Q', footer[48:56])[0] == offset:
            return (f'a VHD footer sits at byte {offset}, not in the last {VHD_FOOTER_SIZE} bytes of the file: '
                    'the VHD was padded after its footer')
        where = tail.rfind(VHD_COOKIE, 0, where)
    if path.lower().endswith('.vhd'):
        return 'the file is named .vhd but has no VHD footer (the upload was probably truncated)'
    return None


def image_info(run_command: RunCommand, path: str, fmt: t.Optional[str] = None, force_share: bool = False,
               qemu_img: str = 'qemu-img', allow_backing: bool = False) -> dict:
    """Return ``qemu-img info`` for PATH, detecting fixed VHDs that qemu-img would call raw.

    The result has qemu-img's keys plus ``detected-format`` (the format we will read it as) and
    ``backing-chain``: the absolute paths of the files under PATH, nearest first (empty without a
    backing file). An image with a backing file is refused unless ALLOW_BACKING: reading it reads
    the whole chain, which ``qemu-img convert`` flattens into one disk.
    """
    if not os.path.exists(path):
        raise DiskImageError(f'{path} does not exist')
    if os.path.isdir(path):
        raise DiskImageError(f'{path} is a directory, not a disk image')
    if fmt is None:
        footer = read_vhd_footer(path)
        if footer is not None:
            problem = vhd_problem(footer)
            if problem:
                raise DiskImageError(f'{path}: {problem}')
            fmt = 'vpc'
        else:
            problem = stray_vhd_footer(path)
            if problem:
                raise DiskImageError(f'{path}: {problem}')
    args = ['info', '--output=json']
    if force_share:
        args.append('--force-share')
    if fmt:
        args += ['-f', fmt]
    info = json.loads(run_qemu_img(run_command, args + [path], qemu_img))
    info['backing-chain'] = []
    if info.get('backing-filename'):
        if not allow_backing:
            raise DiskImageError(f"{path} has a backing file ({info['backing-filename']}); give a disk without one, "
                                 'after `qemu-img convert` or `virsh blockpull` flattened it')
        chain = json.loads(run_qemu_img(run_command, args + ['--backing-chain', path], qemu_img))
        info['backing-chain'] = [layer['filename'] for layer in chain[1:]]
        missing = [layer for layer in info['backing-chain'] if not os.path.exists(layer)]
        if missing:
            raise DiskImageError(f'{path}: the backing file {missing[0]} does not exist')
    info['detected-format'] = fmt or info['format']
    if info['detected-format'] not in INPUT_FORMATS:
        raise DiskImageError(f"{path} is in format {info['detected-format']}, which is not one of {', '.join(INPUT_FORMATS)}")
    return info


def check_image(run_command: RunCommand, path: str, fmt: str, qemu_img: str = 'qemu-img') -> None:
    """Let qemu-img check the metadata of formats that have any; raise on corruption."""
    if fmt not in ('qcow2', 'vhdx', 'vmdk'):
        return
    try:
        rc, out, err = run_command([qemu_img, 'check', '-f', fmt, '--force-share', '--output=json', path])
    except OSError as exc:
        raise DiskImageError(f'cannot run {qemu_img}: {exc}') from exc
    # exit 0: clean; 1: check not completed (error); 2: corruptions; 3: leaked clusters only (harmless)
    if rc in (1, 2):
        raise DiskImageError(f'{path} is corrupt ({fmt}): {(err or out).strip()}')


def writer_holds_lock(path: str) -> bool:
    """Return True when another process (a running QEMU) holds write permission on PATH.

    Reads QEMU's lock bytes with F_GETLK; it takes no lock and never blocks.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = QEMU_LOCK_PERM_BASE + QEMU_PERM_WRITE_BIT
        request = struct.pack('hhqqi', fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, request)
        lock_type = struct.unpack('hhqqi', answer)[0]
        return lock_type != fcntl.F_UNLCK
    finally:
        os.close(fd)


def vhd_fixed_size(virtual_size: int) -> int:
    """Return the virtual size a fixed VHD for Azure gets: rounded up to a whole MiB."""
    return -(-virtual_size // MIB) * MIB


def convert(run_command: RunCommand, source: str, source_format: str, dest: str, dest_format: str, compression: str = 'none',
            force_share: bool = False, virtual_size: t.Optional[int] = None, qemu_img: str = 'qemu-img') -> None:
    """Convert SOURCE into a new file DEST (sparse: only allocated data is written).

    A ``vpc`` destination is a *fixed* VHD whose virtual size is a whole number of MiB (what
    Azure requires); the disk is grown to that size when it is not aligned.
    """
    args = ['convert', '-f', source_format, '-O', dest_format]
    if force_share:
        args.append('-U')
    if dest_format == 'qcow2':
        if compression != 'none':
            args += ['-c', '-o', f'compression_type={compression}']
    elif compression != 'none':
        raise DiskImageError(f'compression is only available for qcow2, not {dest_format}')
    if dest_format == 'vpc':
        aligned = vhd_fixed_size(virtual_size or 0)
        if virtual_size is not None and aligned != virtual_size:
            # Create the aligned fixed VHD first, then copy into it without re-creating it.
            run_qemu_img(run_command, ['create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', dest, str(aligned)], qemu_img)
            # -n reuses that file; --target-is-zero keeps it sparse (qemu-img would write the zeros otherwise)
            args = args[:args.index('-O')] + ['-n', '--target-is-zero', '-O', 'vpc'] + args[args.index('-O') + 2:]
        else:
            args += ['-o', 'subformat=fixed,force_size=on']
    try:
        run_qemu_img(run_command, args + [source, dest], qemu_img)
    except DiskImageError as exc:
        text = str(exc)
        if 'Failed to get' in text and 'lock' in text:
            raise DiskImageError(f'{source} is in use by a running VM (QEMU holds its lock); shut the VM down, '
                                 'or set force=true for a crash-consistent copy') from exc
        if 'No space left on device' in text:
            raise DiskImageError(f'no space left on the library file system while writing {dest}') from exc
        raise


def sha256_file(path: str) -> str:
    """Return the sha256 of PATH, reading only its allocated data (holes are hashed as zeros)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        position = 0
        while position < size:
            try:
                data_start = os.lseek(fd, position, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: only a hole is left
                    raise
                data_start = size
            _hash_zeros(digest, data_start - position)
            if data_start >= size:
                break
            data_end = os.lseek(fd, data_start, os.SEEK_HOLE)
            os.lseek(fd, data_start, os.SEEK_SET)
            remaining = data_end - data_start
            while remaining:
                chunk = os.read(fd, min(HASH_CHUNK, remaining))
                if not chunk:
                    raise DiskImageError(f'{path} shrank while it was hashed')
                digest.update(chunk)
                remaining -= len(chunk)
            position = data_end
    finally:
        os.close(fd)
    return digest.hexdigest()


def _hash_zeros(digest: t.Any, count: int) -> None:
    while count > 0:
        step = min(count, HASH_CHUNK)
        digest.update(_ZEROS[:step] if step < HASH_CHUNK else _ZEROS)
        count -= step


def allocated_bytes(path: str) -> int:
    """Return the bytes PATH occupies on disk (sparse files count only their data)."""
    return os.stat(path).st_blocks * 512
