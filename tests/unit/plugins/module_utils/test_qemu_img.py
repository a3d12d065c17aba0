# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of the qemu-img mechanics: VHD footers, lock probe, hashing, convert options."""
from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import time

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img

MIB = 1024 * 1024


def vhd_footer(current_size, disk_type=2):
    """A VHD footer with the fields our code reads (cookie, sizes, type)."""
    footer = bytearray(512)
    footer[0:8] = b'conectix'
    footer[40:48] = struct.pack('>Q', current_size)
    footer[48:56] = struct.pack('>Q', current_size)
    footer[60:64] = struct.pack('>I', disk_type)
    footer[64:68] = struct.pack('>I', qemu_img.vhd_checksum(bytes(footer)))
    return bytes(footer)


def write_sparse(path, size, extents):
    """A sparse file of SIZE with (offset, bytes) extents written."""
    with open(path, 'wb') as handle:
        handle.truncate(size)
        for offset, data in extents:
            handle.seek(offset)
            handle.write(data)


def test_fixed_vhd_footer_is_read(tmp_path):
    path = tmp_path / 'disk.vhd'
    write_sparse(path, MIB, [(100, b'data')])
    with open(path, 'ab') as handle:
        handle.write(vhd_footer(MIB))
    footer = qemu_img.read_vhd_footer(str(path))
    assert footer == {'disk_type': 'fixed', 'current_size': MIB, 'file_size': MIB + 512, 'footer_at_end': True}
    assert qemu_img.vhd_problem(footer) is None


def test_fixed_vhd_with_wrong_length_is_a_problem(tmp_path):
    path = tmp_path / 'disk.vhd'
    write_sparse(path, MIB - 4096, [])
    with open(path, 'ab') as handle:
        handle.write(vhd_footer(MIB))
    assert 'truncated or padded' in qemu_img.vhd_problem(qemu_img.read_vhd_footer(str(path)))


def test_dynamic_vhd_cut_before_its_footer_is_a_problem(tmp_path):
    path = tmp_path / 'disk.vhd'
    path.write_bytes(vhd_footer(MIB, disk_type=3) + bytes(4096))
    footer = qemu_img.read_vhd_footer(str(path))
    assert footer['disk_type'] == 'dynamic' and not footer['footer_at_end']
    assert 'missing at the end' in qemu_img.vhd_problem(footer)


def test_footer_checksum_matches_qemu_img(tmp_path):
    path = tmp_path / 'made-by-qemu-img.vhd'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', str(path), '1M'], check=True)
    footer = path.read_bytes()[-512:]
    assert qemu_img.is_vhd_footer(footer)
    assert not qemu_img.is_vhd_footer(footer[:64] + b'\0\0\0\0' + footer[68:])


def test_plain_raw_file_has_no_footer(tmp_path):
    path = tmp_path / 'disk.raw'
    write_sparse(path, MIB, [(0, b'conectix is mentioned but not a footer')])
    assert qemu_img.read_vhd_footer(str(path)) is None
    assert qemu_img.stray_vhd_footer(str(path)) is None


def test_padded_vhd_is_recognised_by_its_displaced_footer(tmp_path):
    path = tmp_path / 'disk.img'
    write_sparse(path, MIB, [])
    with open(path, 'ab') as handle:
        handle.write(vhd_footer(MIB) + bytes(4096))
    assert 'padded' in qemu_img.stray_vhd_footer(str(path))


def test_vhd_named_file_without_footer_is_suspect(tmp_path):
    path = tmp_path / 'upload.vhd'
    write_sparse(path, MIB, [])
    assert 'truncated' in qemu_img.stray_vhd_footer(str(path))


@pytest.mark.parametrize('size, aligned', [(MIB, MIB), (MIB + 1, 2 * MIB), (100000000, 96 * MIB), (1, MIB)])
def test_fixed_vhd_size_rounds_up_to_a_mib(size, aligned):
    assert qemu_img.vhd_fixed_size(size) == aligned


@pytest.mark.parametrize('extents', [
    [],                                                  # all hole
    [(0, b'a' * 5000)],                                  # data at the start
    [(3 * MIB - 7, b'tail')],                            # data up to the very end
    [(4096, os.urandom(70000)), (2 * MIB, b'x' * 10)],   # several extents
])
def test_sparse_hash_equals_a_full_read(tmp_path, extents):
    path = tmp_path / 'disk'
    write_sparse(path, 3 * MIB - 3, extents)
    assert qemu_img.sha256_file(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


def hold_lock(path, byte):
    """Start a process that holds a shared lock on one byte of PATH, as QEMU does; return it once locked."""
    holder = subprocess.Popen([sys.executable, '-c', (
        'import fcntl, os, time\n'
        f'fd = os.open({str(path)!r}, os.O_RDWR)\n'
        f'fcntl.lockf(fd, fcntl.LOCK_SH, 1, {byte})\n'
        'print("locked", flush=True)\n'
        'time.sleep(30)\n')], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == 'locked'
    return holder


@pytest.mark.parametrize('byte, writer', [(101, True), (100, False), (201, False)])
def test_lock_probe_sees_only_write_permission_held_by_another_process(tmp_path, byte, writer):
    path = tmp_path / 'disk.raw'
    write_sparse(path, MIB, [])
    assert qemu_img.writer_holds_lock(str(path)) is False
    holder = hold_lock(path, byte)
    try:
        assert qemu_img.writer_holds_lock(str(path)) is writer
    finally:
        holder.kill()
        holder.wait()
    deadline = time.monotonic() + 5
    while qemu_img.writer_holds_lock(str(path)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert qemu_img.writer_holds_lock(str(path)) is False


class RecordingRunner:
    """A run_command that records calls and answers from a list."""

    def __init__(self, answers=None):
        self.calls = []
        self.answers = list(answers or [])

    def __call__(self, args):
        self.calls.append(args)
        return self.answers.pop(0) if self.answers else (0, '', '')


@pytest.mark.parametrize('fmt, compression, expected', [
    ('qcow2', 'none', ['convert', '-f', 'raw', '-O', 'qcow2', 'in', 'out']),
    ('qcow2', 'zstd', ['convert', '-f', 'raw', '-O', 'qcow2', '-c', '-o', 'compression_type=zstd', 'in', 'out']),
    ('vpc', 'none', ['convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed,force_size=on', 'in', 'out']),
    ('raw', 'none', ['convert', '-f', 'raw', '-O', 'raw', 'in', 'out']),
])
def test_convert_options(fmt, compression, expected):
    runner = RecordingRunner()
    qemu_img.convert(runner, 'in', 'raw', 'out', fmt, compression=compression, virtual_size=MIB)
    assert runner.calls == [['qemu-img'] + expected]


def test_convert_to_vhd_grows_an_unaligned_disk_to_the_next_mib():
    runner = RecordingRunner()
    qemu_img.convert(runner, 'in', 'qcow2', 'out', 'vpc', virtual_size=MIB + 512)
    assert runner.calls[0] == ['qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', 'out', str(2 * MIB)]
    assert runner.calls[1] == ['qemu-img', 'convert', '-f', 'qcow2', '-n', '--target-is-zero', '-O', 'vpc', 'in', 'out']


def test_convert_rejects_compression_outside_qcow2():
    with pytest.raises(qemu_img.DiskImageError, match='only available for qcow2'):
        qemu_img.convert(RecordingRunner(), 'in', 'raw', 'out', 'raw', compression='zlib')


@pytest.mark.parametrize('stderr, message', [
    ('qemu-img: Could not open \'in\': Failed to get shared "write" lock\nIs another process using the image [in]?', 'in use by a running VM'),
    ('qemu-img: error while writing at byte 0: No space left on device', 'no space left'),
    ('qemu-img: Could not open \'in\': Image is not in qcow2 format', 'Image is not in qcow2 format'),
])
def test_convert_errors_are_translated(stderr, message):
    runner = RecordingRunner([(1, '', stderr)])
    with pytest.raises(qemu_img.DiskImageError, match=message):
        qemu_img.convert(runner, 'in', 'qcow2', 'out', 'qcow2', virtual_size=MIB)


@pytest.mark.parametrize('rc, corrupt', [(0, False), (3, False), (2, True), (1, True)])
def test_check_exit_codes(rc, corrupt):
    runner = RecordingRunner([(rc, '{}', 'details')])
    if corrupt:
        with pytest.raises(qemu_img.DiskImageError, match='corrupt'):
            qemu_img.check_image(runner, 'disk', 'qcow2')
    else:
        qemu_img.check_image(runner, 'disk', 'qcow2')
    assert runner.calls[0][:3] == ['qemu-img', 'check', '-f']


def test_check_skips_formats_without_metadata():
    runner = RecordingRunner()
    qemu_img.check_image(runner, 'disk', 'raw')
    assert runner.calls == []


def test_a_missing_image_file_is_not_a_missing_qemu_img(tmp_path):
    def run(args, **_kwargs):
        # through env, as a wrapper would: a program that is not there exits 127
        completed = subprocess.run(['env'] + args, capture_output=True, text=True, check=False)
        return completed.returncode, completed.stdout, completed.stderr

    with pytest.raises(qemu_img.DiskImageError) as caught:
        qemu_img.run_qemu_img(run, ['info', str(tmp_path / 'gone.qcow2')])
    assert 'gone.qcow2' in str(caught.value) and 'not installed' not in str(caught.value)
    with pytest.raises(qemu_img.DiskImageError, match='is not installed'):
        qemu_img.run_qemu_img(run, ['info', str(tmp_path / 'gone.qcow2')], qemu_img=str(tmp_path / 'qemu-img'))
