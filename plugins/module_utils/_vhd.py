# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixed VHDs the way Azure takes them: the footer, its checksum, the whole-MiB rule, and what a source needs.

Azure creates managed disks and images only from a *fixed* VHD whose virtual size is a whole number
of MiB: the raw disk data, then a 512-byte footer (cookie ``conectix``, disk type 2, a valid checksum,
current size == the data size). The functions here read and judge such footers and decide whether a
source file can be uploaded as it is, must be converted, or is refused. They raise :class:`VhdError`.
"""
from __future__ import annotations

import os
import struct
import typing as t

from ansible_collections.imageprep.vm.plugins.module_utils._qemu_img import vhd_checksum, vhd_fixed_size

MIB = 1024 * 1024
FOOTER_SIZE = 512
COOKIE = b'conectix'
DISK_FIXED = 2
DISK_TYPES = {2: 'fixed', 3: 'dynamic', 4: 'differencing'}
# the qemu-img command that makes an Azure-ready VHD, for messages
CONVERT_HINT = ('qemu-img convert -O vpc -o subformat=fixed,force_size=on SOURCE DEST.vhd '
                '(after qemu-img resize of a raw copy to a whole number of MiB)')

# offset, struct format of the footer fields (Virtual Hard Disk Image Format Specification, "Hard Disk Footer Format")
_FIELDS = (
    ('cookie', 0, '8s'),
    ('features', 8, '>I'),
    ('format_version', 12, '>I'),
    ('data_offset', 16, '>Q'),
    ('timestamp', 24, '>I'),
    ('creator_application', 28, '4s'),
    ('creator_version', 32, '>I'),
    ('creator_host_os', 36, '4s'),
    ('original_size', 40, '>Q'),
    ('current_size', 48, '>Q'),
    ('cylinders', 56, '>H'),
    ('heads', 58, 'B'),
    ('sectors', 59, 'B'),
    ('disk_type', 60, '>I'),
    ('checksum', 64, '>I'),
    ('unique_id', 68, '16s'),
    ('saved_state', 84, 'B'),
)


class VhdError(Exception):
    """A source cannot become an Azure VHD as asked; the message says what is wrong and how to fix it."""


class Footer(t.NamedTuple):
    """The fields of a VHD footer, decoded."""

    cookie: bytes
    features: int
    format_version: int
    data_offset: int
    timestamp: int
    creator_application: str
    creator_version: int
    creator_host_os: str
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors: int
    disk_type: int
    checksum: int
    unique_id: str
    saved_state: int
    computed_checksum: int

    @property
    def checksum_valid(self) -> bool:
        return self.checksum == self.computed_checksum

    @property
    def disk_type_name(self) -> str:
        return DISK_TYPES.get(self.disk_type, f'unknown ({self.disk_type})')


def round_up_mib(size: int) -> int:
    """Return SIZE rounded up to a whole number of MiB (what Azure requires of a disk's virtual size)."""
    return vhd_fixed_size(size)


def parse_footer(data: bytes) -> t.Optional[Footer]:
    """Return the footer in the 512 bytes DATA, or None when DATA does not start with the VHD cookie."""
    if len(data) != FOOTER_SIZE or data[:8] != COOKIE:
        return None
    values: dict[str, t.Any] = {}
    for name, offset, fmt in _FIELDS:
        values[name] = struct.unpack_from(fmt, data, offset)[0]
    values['creator_application'] = values['creator_application'].decode('latin-1')
    values['creator_host_os'] = values['creator_host_os'].decode('latin-1')
    values['unique_id'] = values['unique_id'].hex()
    values['computed_checksum'] = vhd_checksum(data)
    return Footer(**values)


def last_bytes(path: str) -> tuple[int, bytes]:
    """Return (file size, the last 512 bytes of PATH, or fewer when it is shorter)."""
    with open(path, 'rb') as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - FOOTER_SIZE))
        return size, handle.read(FOOTER_SIZE)


def read_footer(path: str) -> tuple[int, t.Optional[Footer]]:
    """Return (file size, the footer in the last 512 bytes of PATH or None)."""
    size, tail = last_bytes(path)
    return size, parse_footer(tail)


def fixed_vhd_problem(footer: t.Optional[Footer], file_size: int) -> t.Optional[str]:
    """Return why a file of FILE_SIZE ending in FOOTER is not a VHD Azure takes, or None when it is one."""
    if footer is None:
        return 'not a VHD (no VHD footer in its last 512 bytes)'
    if not footer.checksum_valid:
        return f'a VHD whose footer checksum is wrong ({footer.checksum:#010x}, computed {footer.computed_checksum:#010x})'
    if footer.disk_type != DISK_FIXED:
        return f'a {footer.disk_type_name} VHD; Azure takes only fixed VHDs'
    if footer.current_size % MIB:
        return (f'a fixed VHD of {footer.current_size} bytes, which is not a whole number of MiB '
                f'(Azure requires it: {round_up_mib(footer.current_size)} bytes would do)')
    if file_size != footer.current_size + FOOTER_SIZE:
        return (f'a fixed VHD of {footer.current_size} bytes in a file of {file_size} bytes; it must be '
                f'{footer.current_size + FOOTER_SIZE} (the data, then the 512-byte footer)')
    return None


def stable_footer(footer: bytes, data_sha256: bytes) -> bytes:
    """Return FOOTER with what qemu-img takes from the clock and from chance made from the disk's data instead.

    qemu-img stamps a new VHD with the time and a random unique ID, so two conversions of one disk
    differ in their footers. With the timestamp at the format's epoch (2000-01-01) and the unique ID
    made from DATA_SHA256 (the SHA-256 of the data before the footer, as a version-4 UUID), converting
    the same disk again gives the same file byte for byte, and an interrupted upload can be resumed.
    """
    if parse_footer(footer) is None:
        raise VhdError('the converted file does not end with a VHD footer')
    data = bytearray(footer)
    struct.pack_into('>I', data, 24, 0)
    unique_id = bytearray(data_sha256[:16])
    unique_id[6] = (unique_id[6] & 0x0F) | 0x40
    unique_id[8] = (unique_id[8] & 0x3F) | 0x80
    data[68:84] = unique_id
    data[84] = 0  # saved state: none
    struct.pack_into('>I', data, 64, vhd_checksum(bytes(data)))
    return bytes(data)


def source_action(path: str, source_format: str, problem: t.Optional[str], convert: bool) -> str:
    """Decide what becomes of a source: 'upload' as it is, or 'convert' into a fixed VHD; raise VhdError to refuse.

    SOURCE_FORMAT is how qemu-img reads the file (``vpc`` for a VHD); PROBLEM is
    :func:`fixed_vhd_problem` of its footer (None: an Azure-ready fixed VHD).
    """
    if source_format == 'vpc' and problem is None:
        return 'upload'
    if convert:
        return 'convert'
    what = problem if source_format == 'vpc' else f'a {source_format} image, not a fixed VHD'
    raise VhdError(f'{path} is {what}. Azure needs a fixed VHD of a whole number of MiB. Convert it with '
                   f'{CONVERT_HINT}, or let the module convert it: set convert: true. Nothing was uploaded.')


def check_converted(path: str, virtual_size: int) -> tuple[int, Footer]:
    """Check that PATH, converted from a disk of VIRTUAL_SIZE, is the fixed VHD Azure needs; return (size, footer)."""
    file_size, footer = read_footer(path)
    problem = fixed_vhd_problem(footer, file_size)
    if footer is None or problem:
        raise VhdError(f'qemu-img made {path}, but it is {problem}; nothing was uploaded')
    expected = round_up_mib(virtual_size)
    if footer.current_size != expected:
        raise VhdError(f'qemu-img made a fixed VHD of {footer.current_size} bytes from a disk of {virtual_size} bytes, '
                       f'not {expected}; nothing was uploaded')
    return file_size, footer
