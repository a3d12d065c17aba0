# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixed VHDs for Azure: footer parsing and checksum, the whole-MiB rule, what a source needs, stable footers."""
from __future__ import annotations

import hashlib
import struct
import subprocess
import uuid

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils import _vhd as vhd

MIB = 1024 * 1024


def qemu_vhd(path, size, subformat='fixed'):
    """A VHD made by qemu-img (the footer our code must read is the one qemu-img writes)."""
    options = f'subformat={subformat},force_size=on' if subformat == 'fixed' else f'subformat={subformat}'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'vpc', '-o', options, str(path), str(size)], check=True)
    return path


def checksum(data):
    """The VHD checksum as the format specification defines it, written out here independently."""
    total = sum(data[:64]) + sum(data[68:512])
    return (~total) & 0xFFFFFFFF


@pytest.mark.parametrize('size, rounded', [
    (0, 0), (1, MIB), (512, MIB), (MIB - 512, MIB), (MIB, MIB), (MIB + 1, 2 * MIB),
    (10 * MIB + 4608, 11 * MIB), (30 * 1024 ** 3, 30 * 1024 ** 3),
])
def test_virtual_size_is_rounded_up_to_a_whole_mib(size, rounded):
    assert vhd.round_up_mib(size) == rounded


def test_footer_of_a_fixed_vhd_made_by_qemu_img_is_parsed(tmp_path):
    path = qemu_vhd(tmp_path / 'disk.vhd', 3 * MIB)
    size, footer = vhd.read_footer(str(path))
    raw = path.read_bytes()[-512:]
    assert size == 3 * MIB + 512
    assert footer.cookie == b'conectix'
    assert footer.disk_type == 2 and footer.disk_type_name == 'fixed'
    assert footer.current_size == 3 * MIB
    assert footer.data_offset == 0xFFFFFFFFFFFFFFFF  # a fixed disk has no dynamic header
    assert footer.checksum == struct.unpack('>I', raw[64:68])[0] == checksum(raw)
    assert footer.checksum_valid
    assert footer.unique_id == raw[68:84].hex()
    assert vhd.fixed_vhd_problem(footer, size) is None


def test_a_corrupted_footer_fails_its_checksum(tmp_path):
    path = qemu_vhd(tmp_path / 'disk.vhd', 2 * MIB)
    data = bytearray(path.read_bytes())
    data[-512 + 30] ^= 0x01  # creator application
    path.write_bytes(bytes(data))
    size, footer = vhd.read_footer(str(path))
    assert footer is not None and not footer.checksum_valid
    assert footer.computed_checksum == checksum(bytes(data[-512:]))
    assert 'checksum is wrong' in vhd.fixed_vhd_problem(footer, size)


@pytest.mark.parametrize('data', [b'', bytes(512), b'conectiy' + bytes(504), b'conectix' + bytes(503)])
def test_no_footer_without_the_cookie_in_512_bytes(data):
    assert vhd.parse_footer(data) is None


def test_a_dynamic_vhd_is_not_what_azure_takes(tmp_path):
    path = qemu_vhd(tmp_path / 'disk.vhd', 4 * MIB, 'dynamic')
    size, footer = vhd.read_footer(str(path))
    assert footer.disk_type_name == 'dynamic'
    assert 'dynamic VHD' in vhd.fixed_vhd_problem(footer, size)


def test_a_fixed_vhd_not_a_whole_mib_is_not_what_azure_takes(tmp_path):
    path = qemu_vhd(tmp_path / 'disk.vhd', 2 * MIB + 512 * 1024)
    size, footer = vhd.read_footer(str(path))
    problem = vhd.fixed_vhd_problem(footer, size)
    assert 'not a whole number of MiB' in problem and str(3 * MIB) in problem


def test_a_padded_fixed_vhd_is_not_what_azure_takes(tmp_path):
    path = qemu_vhd(tmp_path / 'disk.vhd', MIB)
    footer_bytes = path.read_bytes()[-512:]
    with open(path, 'r+b') as handle:  # data, 512 more bytes, then the footer
        handle.seek(MIB)
        handle.write(bytes(512) + footer_bytes)
    size, footer = vhd.read_footer(str(path))
    assert size == MIB + 1024
    assert f'must be {MIB + 512}' in vhd.fixed_vhd_problem(footer, size)


def test_a_raw_file_is_not_a_vhd(tmp_path):
    path = tmp_path / 'disk.raw'
    path.write_bytes(b'\x01' * 4096)
    size, footer = vhd.read_footer(str(path))
    assert footer is None
    assert vhd.fixed_vhd_problem(footer, size).startswith('not a VHD')


@pytest.mark.parametrize('fmt, problem, convert, expected', [
    ('vpc', None, False, 'upload'),
    ('vpc', None, True, 'upload'),
    ('vpc', 'a dynamic VHD', True, 'convert'),
    ('qcow2', None, True, 'convert'),
    ('raw', 'not a VHD', True, 'convert'),
    ('vmdk', None, True, 'convert'),
])
def test_source_action(fmt, problem, convert, expected):
    assert vhd.source_action('/images/d', fmt, problem, convert) == expected


@pytest.mark.parametrize('fmt, problem, said', [
    ('vpc', 'a dynamic VHD; Azure takes only fixed VHDs', 'is a dynamic VHD'),
    ('vpc', 'a fixed VHD of 1 bytes, which is not a whole number of MiB', 'is a fixed VHD of 1 bytes, which is not a whole'),
    ('qcow2', None, 'is a qcow2 image, not a fixed VHD'),
])
def test_a_source_that_needs_converting_is_refused_without_convert(fmt, problem, said):
    with pytest.raises(vhd.VhdError) as caught:
        vhd.source_action('/images/d', fmt, problem, False)
    message = str(caught.value)
    assert '/images/d ' + said in message
    assert 'qemu-img convert -O vpc -o subformat=fixed,force_size=on' in message
    assert 'set convert: true' in message


def test_stable_footer_is_made_from_the_data_not_the_clock(tmp_path):
    first = qemu_vhd(tmp_path / 'a.vhd', MIB).read_bytes()[-512:]
    second = qemu_vhd(tmp_path / 'b.vhd', MIB).read_bytes()[-512:]
    assert first != second  # qemu-img: a new unique id (and time) each time
    digest = hashlib.sha256(b'data').digest()
    stable = vhd.stable_footer(first, digest)
    assert stable == vhd.stable_footer(second, digest)
    footer = vhd.parse_footer(stable)
    assert footer.checksum_valid and footer.checksum == checksum(stable)
    assert footer.timestamp == 0
    assert uuid.UUID(footer.unique_id).version == 4
    assert footer.unique_id[:12] == digest[:6].hex()
    # everything else stays as qemu-img wrote it
    assert stable[:24] == first[:24] and stable[28:64] == first[28:64]
    assert vhd.stable_footer(first, hashlib.sha256(b'other').digest()) != stable


def test_stable_footer_needs_a_footer():
    with pytest.raises(vhd.VhdError):
        vhd.stable_footer(bytes(512), bytes(32))


def test_a_conversion_of_the_wrong_size_is_caught(tmp_path):
    path = qemu_vhd(tmp_path / 'disk.vhd', 2 * MIB)
    size, footer = vhd.check_converted(str(path), 2 * MIB - 4096)
    assert size == 2 * MIB + 512 and footer.current_size == 2 * MIB
    with pytest.raises(vhd.VhdError, match='not 3145728'):
        vhd.check_converted(str(path), 2 * MIB + 1)
    dynamic = qemu_vhd(tmp_path / 'dynamic.vhd', 2 * MIB, 'dynamic')
    with pytest.raises(vhd.VhdError, match='dynamic VHD'):
        vhd.check_converted(str(dynamic), 2 * MIB)
