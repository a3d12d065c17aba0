# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The root file system inside a disk image file, mounted read-only for an offline audit.

:func:`image_root` is a context manager: it gives the directory where the image's Linux root
is mounted, and unmounts it and removes every temporary when the block ends, also on errors.

No nbd or device-mapper is needed: a raw image is read in place; any other format ``qemu-img``
reads (qcow2 with its backing chain, vpc, vhdx, vmdk) is first flattened into a sparse raw
file in a temporary directory. The partition table (GPT or MBR, with logical partitions) is
read here; each partition with a Linux file system is loop-mounted read-only at its offset
(``ro,loop,offset=N,sizelimit=M``, the loop device itself read-only) without journal replay,
and the one holding ``etc/os-release`` is the root. The image file is never written.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import typing as t
import uuid

from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img
from ansible_collections.imageprep.vm.plugins.module_utils._rootfs import RootFS

RunCommand = t.Callable[..., t.Tuple[int, str, str]]

SECTOR = 512
GPT_SIGNATURE = b'EFI PART'
MBR_SIGNATURE = b'\x55\xaa'
MBR_EXTENDED = (0x05, 0x0f, 0x85)
MBR_PROTECTIVE = 0xee
MBR_TYPE_NAMES = {0x82: 'Linux swap', 0x83: 'Linux', 0x8e: 'Linux LVM', 0xef: 'EFI system partition',
                  0xfd: 'Linux RAID', 0x07: 'NTFS/exFAT', 0x0b: 'FAT32', 0x0c: 'FAT32', 0x06: 'FAT16'}
GPT_TYPE_NAMES = {
    'c12a7328-f81f-11d2-ba4b-00a0c93ec93b': 'EFI system partition',
    '0fc63daf-8483-4772-8e79-3d69d8477de4': 'Linux filesystem',
    '4f68bce3-e8cd-4db1-96e7-fbcaf984b709': 'Linux root (x86-64)',
    'b921b045-1df0-41c3-af44-4c6f280d3fae': 'Linux root (ARM64)',
    '4d21b016-b534-45c2-a9fb-5c16e091fd2d': 'Linux /var',
    '933ac7e1-2eb4-4f13-b844-0e14e2aef915': 'Linux /home',
    '21686148-6449-6e6f-744e-656564454649': 'BIOS boot partition',
    '0657fd6d-a4ab-43c4-84e5-0933c84b4f4f': 'Linux swap',
    'e6d6d379-f507-44c2-a23c-238f2a3df928': 'Linux LVM',
    'a19d880f-05fc-4d3b-a006-743f0f84911e': 'Linux RAID',
    'bc13c2ff-59e6-4262-a352-b275fd6f7172': 'Linux extended boot',
    'ebd0a0a2-b9e5-4433-87c0-68b6b72699c7': 'Microsoft basic data',
    'e3c9e316-0b5c-4db8-817d-f92df00215ae': 'Microsoft reserved',
    'de94bba4-06d1-4d40-a16a-bfd50179d6ac': 'Windows recovery',
}
# Partition types that never hold a Linux root: not even probed.
NOT_A_ROOT_TYPES = ('EFI system partition', 'BIOS boot partition', 'Linux swap', 'Microsoft reserved')
# File systems a Linux root lives on, with the mount options that keep a read-only mount from
# replaying a journal (which would write to the image, or fail on a read-only loop device).
LINUX_FILESYSTEMS = {
    'ext2': 'ro',
    'ext3': 'ro,noload',
    'ext4': 'ro,noload',
    'xfs': 'ro,norecovery',
    'btrfs': 'ro,rescue=nologreplay',
    'f2fs': 'ro',
    'jfs': 'ro',
    'reiserfs': 'ro,nolog',
}
# Why a file system that is found cannot be audited here.
UNSUPPORTED = {
    'LVM2_member': 'an LVM physical volume (no device-mapper on this host: not mounted)',
    'crypto_LUKS': 'LUKS-encrypted',
    'linux_raid_member': 'a Linux RAID member',
}


class ImageRootError(Exception):
    """The disk image has no Linux root that can be mounted here; the message says what was found."""


class Partition(t.NamedTuple):
    """A region of the disk that may hold a file system; NUMBER is None for the whole disk."""

    number: t.Optional[int]
    offset: int
    size: int
    type: str = ''


class Candidate(t.NamedTuple):
    """A region and what probing it found."""

    partition: Partition
    fstype: str
    note: str


class ImageRoot(t.NamedTuple):
    """The mounted root of an image: where it is and which region of which image it came from."""

    path: str
    partition: t.Optional[int]
    offset: int
    fstype: str
    format: str

    def describe(self) -> dict[str, t.Any]:
        """What the module returns as image_root."""
        return {'partition': self.partition, 'offset': self.offset, 'fstype': self.fstype, 'format': self.format}


# -- partition tables (pure: bytes in, partitions out) -----------------------------------
def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def parse_gpt(header: bytes, entries: bytes, sector: int = SECTOR) -> list[Partition]:
    """Partitions of a GPT: HEADER is its header sector, ENTRIES its partition entry array."""
    if header[:8] != GPT_SIGNATURE:
        raise ImageRootError('no GPT header')
    count, entry_size = struct.unpack('<II', header[80:88])
    if entry_size < 128 or count > 1024:
        raise ImageRootError(f'implausible GPT header ({count} entries of {entry_size} bytes)')
    partitions = []
    for index in range(count):
        entry = entries[index * entry_size:(index + 1) * entry_size]
        if len(entry) < 128 or entry[:16] == bytes(16):
            continue
        first, last = struct.unpack('<QQ', entry[32:48])
        if last < first:
            continue
        type_guid = _guid(entry[:16])
        partitions.append(Partition(index + 1, first * sector, (last - first + 1) * sector,
                                    GPT_TYPE_NAMES.get(type_guid, type_guid)))
    return partitions


def gpt_entries_location(header: bytes, sector: int = SECTOR) -> tuple[int, int]:
    """(byte offset, length) of the partition entry array a GPT header points to."""
    entries_lba = struct.unpack('<Q', header[72:80])[0]
    count, entry_size = struct.unpack('<II', header[80:88])
    return entries_lba * sector, min(count, 1024) * entry_size


def mbr_entries(sector0: bytes) -> list[tuple[int, int, int]]:
    """(type, first LBA, sectors) of the four primary slots of an MBR, empty slots left out."""
    if sector0[510:512] != MBR_SIGNATURE:
        return []
    slots = []
    for index in range(4):
        entry = sector0[446 + index * 16:446 + (index + 1) * 16]
        status, ptype = entry[0], entry[4]
        start, count = struct.unpack('<II', entry[8:16])
        if status not in (0x00, 0x80):
            return []  # not a partition table (a FAT or NTFS boot sector also ends in 55 AA)
        if ptype and count:
            slots.append((ptype, start, count))
    return slots


def parse_mbr(read: t.Callable[[int, int], bytes], disk_size: int) -> list[Partition]:
    """Partitions of an MBR disk, logical ones (numbered from 5) included; READ(offset, length) reads the disk."""
    partitions = []
    for index, (ptype, start, count) in enumerate(mbr_entries(read(0, SECTOR))):
        if ptype in MBR_EXTENDED:
            partitions += _logical_partitions(read, start)
            continue
        partitions.append(Partition(index + 1, start * SECTOR, count * SECTOR, MBR_TYPE_NAMES.get(ptype, f'0x{ptype:02x}')))
    return [p for p in partitions if p.offset < disk_size]


def _logical_partitions(read: t.Callable[[int, int], bytes], extended_start: int) -> list[Partition]:
    partitions: list[Partition] = []
    ebr = extended_start
    seen = set()
    while ebr not in seen and len(partitions) < 128:
        seen.add(ebr)
        slots = mbr_entries(read(ebr * SECTOR, SECTOR))
        if not slots:
            break
        ptype, start, count = slots[0]
        if ptype not in MBR_EXTENDED:
            partitions.append(Partition(5 + len(partitions), (ebr + start) * SECTOR, count * SECTOR,
                                        MBR_TYPE_NAMES.get(ptype, f'0x{ptype:02x}')))
        nxt = [s for s in slots[1:] if s[0] in MBR_EXTENDED]
        if not nxt:
            break
        ebr = extended_start + nxt[0][1]
    return partitions


def read_partitions(path: str) -> tuple[str, list[Partition]]:
    """('gpt' | 'mbr' | 'none', partitions) of the raw disk image PATH; 'none' gives the whole disk as one region."""
    size = os.path.getsize(path)
    with open(path, 'rb') as handle:
        def read(offset: int, length: int) -> bytes:
            handle.seek(offset)
            return handle.read(length)

        sector0 = read(0, SECTOR)
        slots = mbr_entries(sector0)
        for sector in (512, 4096):
            header = read(sector, 92)
            if header[:8] == GPT_SIGNATURE and (not slots or any(s[0] == MBR_PROTECTIVE for s in slots)):
                where, length = gpt_entries_location(header, sector)
                return 'gpt', [p for p in parse_gpt(header, read(where, length), sector) if p.offset < size]
        if slots and not any(s[0] == MBR_PROTECTIVE for s in slots):
            return 'mbr', parse_mbr(read, size)
    return 'none', [Partition(None, 0, size)]


# -- finding the root ------------------------------------------------------------------------
def describe_candidate(candidate: Candidate) -> str:
    """One line of the list of what an image holds, for the error that says no root was found."""
    part = candidate.partition
    where = 'the whole disk' if part.number is None else f'partition {part.number}'
    what = [part.type] if part.type else []
    if candidate.fstype or candidate.note != 'skipped':
        what.append(candidate.fstype or 'no file system found')
    if candidate.note:
        what.append(candidate.note)
    return f"{where} ({', '.join(dict.fromkeys(what))})"


def probe_fstype(run_command: RunCommand, path: str, part: Partition) -> str:
    """The file system type blkid finds in the region PART of PATH ('' for none)."""
    try:
        rc, out, err = run_command(['blkid', '-p', '-o', 'export', '-O', str(part.offset), '-S', str(part.size), path])
    except OSError as exc:
        raise ImageRootError(f'cannot run blkid (util-linux): {exc}') from exc
    if rc == 2:  # nothing found
        return ''
    if rc != 0:
        raise ImageRootError(f'blkid failed on {path} at offset {part.offset}: {(err or out).strip()}')
    values = dict(line.split('=', 1) for line in out.splitlines() if '=' in line)
    return values.get('TYPE', '') or ('(partition table inside)' if values.get('PTTYPE') else '')


def mount_options(fstype: str, part: Partition) -> str:
    """The mount options for a read-only loop mount of the region PART."""
    return f'{LINUX_FILESYSTEMS[fstype]},loop,offset={part.offset},sizelimit={part.size}'


def _is_root(directory: str) -> bool:
    # looked up inside the mounted file system: an absolute link there never leads to this host's files
    fs = RootFS(directory, mounts=[])
    return any(fs.exists(name) for name in ('/etc/os-release', '/usr/lib/os-release'))


def _unmount(run_command: RunCommand, directory: str) -> None:
    rc, out, err = run_command(['umount', directory])
    if rc != 0:
        raise ImageRootError(f'cannot unmount {directory}: {(err or out).strip()}')


def image_format(run_command: RunCommand, path: str) -> str:
    """The format qemu-img reads PATH in (a fixed VHD counts as raw: its data is raw from byte 0)."""
    try:
        info = json.loads(qemu_img.run_qemu_img(run_command, ['info', '--output=json', path]))
    except qemu_img.DiskImageError as exc:
        text = str(exc)
        if 'lock' in text:
            raise ImageRootError(f'{path} is in use by a running VM (QEMU holds its lock); shut the VM down first') from exc
        raise ImageRootError(f'qemu-img cannot read {path}: {text}') from exc
    return str(info.get('format', 'raw'))


def check_image_file(path: str) -> None:
    """Refuse what cannot be an image file, before anything is run."""
    if not os.path.isabs(path):
        raise ImageRootError(f'image must be an absolute path, got {path!r}')
    if not os.path.exists(path):
        raise ImageRootError(f'image {path} does not exist')
    if os.path.isdir(path):
        raise ImageRootError(f'image {path} is a directory; audit a directory with root, not image')
    if not os.path.isfile(path):
        raise ImageRootError(f'image {path} is not a regular file (block devices are not audited as images)')
    if os.path.getsize(path) < 2 * SECTOR:
        raise ImageRootError(f'image {path} is not a disk image: it is only {os.path.getsize(path)} bytes long')


@contextlib.contextmanager
def image_root(path: str, run_command: RunCommand, tmpdir: str) -> t.Iterator[ImageRoot]:
    """Mount the Linux root of the disk image PATH read-only below TMPDIR; yield where it is.

    Everything made on the way (the flattened copy, the mount point, the mount) is removed when
    the block ends, also when it ends with an exception.
    """
    check_image_file(path)
    if os.geteuid() != 0:
        raise ImageRootError('auditing a disk image needs root privileges (loop mounts); use become: true')
    fmt = image_format(run_command, path)
    if fmt == 'raw' and qemu_img.writer_holds_lock(path):
        raise ImageRootError(f'{path} is in use by a running VM (QEMU holds its write lock); shut the VM down first')
    work = tempfile.mkdtemp(prefix='imageprep-image-', dir=tmpdir)
    mounted: t.Optional[str] = None
    try:
        raw = path
        if fmt != 'raw':
            raw = os.path.join(work, 'flat.raw')
            try:
                qemu_img.run_qemu_img(run_command, ['convert', '-f', fmt, '-O', 'raw', path, raw])
            except qemu_img.DiskImageError as exc:
                text = str(exc)
                if 'lock' in text:
                    raise ImageRootError(f'{path} is in use by a running VM (QEMU holds its lock); shut the VM down first') from exc
                if 'No space left on device' in text:
                    raise ImageRootError(f'no space left in {tmpdir} for the flattened copy of {path}; choose another tmpdir') from exc
                raise ImageRootError(f'qemu-img cannot read {path}: {text}') from exc
        _label, partitions = read_partitions(raw)
        point = os.path.join(work, 'root')
        os.mkdir(point, 0o700)
        seen = []
        for part in partitions:
            if part.type in NOT_A_ROOT_TYPES:
                seen.append(Candidate(part, '', 'skipped'))
                continue
            fstype = probe_fstype(run_command, raw, part)
            if fstype not in LINUX_FILESYSTEMS:
                seen.append(Candidate(part, fstype, UNSUPPORTED.get(fstype, '')))
                continue
            rc, out, err = run_command(['mount', '-t', fstype, '-o', mount_options(fstype, part), raw, point])
            if rc != 0:
                seen.append(Candidate(part, fstype, f"cannot be mounted: {' '.join((err or out).split())}"))
                continue
            mounted = point
            try:
                is_root, note = _is_root(point), 'no etc/os-release'
            except OSError as exc:
                is_root, note = False, f'unreadable: {exc.strerror}'
            if is_root:
                yield ImageRoot(point, part.number, part.offset, fstype, fmt)
                return
            _unmount(run_command, point)
            mounted = None
            seen.append(Candidate(part, fstype, note))
        found = '; '.join(describe_candidate(c) for c in seen) or 'no partitions'
        hint = '' if any(c.fstype for c in seen) or fmt != 'raw' else ' (is it a disk image?)'
        raise ImageRootError(f'no Linux root file system found in {path}: {found}{hint}')
    finally:
        _clean_up(run_command, work, mounted)


def _clean_up(run_command: RunCommand, work: str, mounted: t.Optional[str]) -> None:
    """Unmount MOUNTED and remove the work directory; never delete anything through a mount."""
    if mounted is not None:
        rc, out, err = run_command(['umount', mounted])
        if rc != 0:
            # something still holds a file there: detach it from the tree now, the kernel frees it later
            rc, _out, _err = run_command(['umount', '--lazy', mounted])
            if rc != 0:
                raise ImageRootError(f'cannot unmount {mounted}: {(err or out).strip()}; {work} is left in place')
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(work, 'flat.raw'))
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(os.path.join(work, 'root'))
    os.rmdir(work)
