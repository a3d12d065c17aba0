# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A library on a 32 MiB tmpfs fills up: a clear error, nothing registered, nothing left behind."""
from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess

import pytest

from library_checks import assert_library_consistent, leftovers, read_catalogue, unexpected_entries
from module_runs import MIB, capture, make_disk

PAGE = 4096


def free_bytes(path: pathlib.Path) -> int:
    """Bytes an unprivileged writer may still use on PATH's file system (what the module's pre-check reads)."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill_leaving(file_system: pathlib.Path, left: int) -> None:
    """Allocate a filler file on FILE_SYSTEM (beside the library) so that exactly LEFT bytes stay free."""
    filler = file_system / 'filler'
    with open(filler, 'ab') as handle:
        os.posix_fallocate(handle.fileno(), 0, filler.stat().st_size + free_bytes(file_system) - left)
    assert free_bytes(file_system) == left


def allocated(path: pathlib.Path) -> int:
    """Bytes PATH occupies (a sparse file counts only its data)."""
    return path.stat().st_blocks * 512


def seeded_library(file_system: pathlib.Path, scratch: pathlib.Path) -> pathlib.Path:
    """A library on FILE_SYSTEM holding one small image, so the catalogue exists before the fill."""
    library = file_system / 'library'
    seed = make_disk(scratch / 'seed.raw', 'raw', 1 * MIB, [(0x01, 0, 64 * 1024)])
    result = capture(scratch / 'runs', name='seed', library=str(library), disks=[str(seed)])
    assert result['rc'] == 0, result
    return library


def assert_nothing_registered(library: pathlib.Path, name: str) -> None:
    """No row for NAME, no staging files, no directory: the library is as the seed left it."""
    assert [image['name'] for image in read_catalogue(library)] == ['seed']
    assert leftovers(library) == set()
    assert not (library / name).exists()
    assert unexpected_entries(library) == set()
    assert_library_consistent(library)


def test_capture_larger_than_the_free_space_fails_before_writing(small_tmpfs, scratch):
    library = seeded_library(small_tmpfs, scratch)
    source = make_disk(scratch / 'big.raw', 'raw', 64 * MIB, [(0x11, 0, 40 * MIB)])
    free_before = free_bytes(small_tmpfs)
    assert allocated(source) > free_before

    result = capture(scratch / 'runs', name='big', library=str(library), disks=[str(source)])

    assert result['rc'] != 0 and result.get('failed'), result
    assert 'free' in result['msg'] and 'nothing was written' in result['msg'], result['msg']
    assert free_bytes(small_tmpfs) == free_before
    assert_nothing_registered(library, 'big')


@dataclasses.dataclass
class OverflowCase:
    """A source whose allocated data fits in the space left, while what conversion writes does not."""

    source_format: str
    writes: list[tuple[int, int, int]]
    compressed: bool
    capture_format: str
    # free space left for the capture: this many bytes, plus the source's allocated bytes when BEYOND_DATA
    free_left: int
    beyond_data: bool


OVERFLOWS = {
    # 24 MiB of data held in compressed clusters (a few hundred KiB), expanded by the capture
    'compressed source expands': OverflowCase('qcow2', [(0x5a, 0, 24 * MIB)], True, 'qcow2', 8 * MIB, False),
    # 4 MiB of raw data and a page more free: the qcow2 header, tables and refcounts do not fit
    'qcow2 metadata of a raw source': OverflowCase('raw', [(0x3b, 0, 4 * MIB)], False, 'qcow2', 2 * PAGE, True),
}


@pytest.mark.parametrize('case', list(OVERFLOWS.values()), ids=list(OVERFLOWS))
def test_capture_that_runs_out_of_space_while_converting_registers_nothing(case, small_tmpfs, scratch, request):
    library = seeded_library(small_tmpfs, scratch)
    source = make_disk(scratch / f'source.{case.source_format}', case.source_format, 64 * MIB, case.writes, case.compressed)
    # what the conversion writes, measured by converting the same source off the tmpfs
    reference = scratch / 'reference'
    subprocess.run(['qemu-img', 'convert', '-f', case.source_format, '-O', case.capture_format, str(source), str(reference)], check=True)
    fill_leaving(small_tmpfs, case.free_left + (allocated(source) if case.beyond_data else 0))
    free_before = free_bytes(small_tmpfs)
    request.node.user_properties.append(('sizes', f'source allocates {allocated(source)} B, {free_before} B free, '
                                                  f'the converted file needs {allocated(reference)} B'))
    # the module's pre-check passes, and the conversion cannot fit: it must hit ENOSPC
    assert allocated(source) <= free_before < allocated(reference)

    result = capture(scratch / 'runs', name='overflow', library=str(library), disks=[str(source)], format=case.capture_format)

    assert result['rc'] != 0 and result.get('failed'), result
    assert 'no space left' in result['msg'].lower(), result['msg']
    assert 'bytes free' not in result['msg']  # not the pre-check's refusal
    assert free_bytes(small_tmpfs) == free_before
    assert_nothing_registered(library, 'overflow')


def test_capture_whose_catalogue_commit_finds_the_disk_full_registers_nothing_and_says_so(small_tmpfs, scratch, request):
    library = seeded_library(small_tmpfs, scratch)
    source = make_disk(scratch / 'source.raw', 'raw', 64 * MIB, [(0x6c, 0, 4 * MIB)])
    # a raw capture writes exactly the allocated data: it fits, and the catalogue's journal then finds no page free
    fill_leaving(small_tmpfs, allocated(source))
    free_before = free_bytes(small_tmpfs)
    request.node.user_properties.append(('sizes', f'source allocates {allocated(source)} B, {free_before} B free'))

    result = capture(scratch / 'runs', name='exact', library=str(library), disks=[str(source)], format='raw')

    assert result['rc'] != 0 and result.get('failed'), result
    assert free_bytes(small_tmpfs) == free_before
    # both shortcomings at once, so one run shows everything to fix
    problems = []
    if 'no space left' not in result['msg'].lower():
        problems.append(f"the message does not say no space is left: {result['msg']!r}")
    if (library / 'exact').exists():
        problems.append(f"the failed run left {library / 'exact'} behind (contents: {sorted(os.listdir(library / 'exact'))})")
    assert not problems, '; '.join(problems)
    assert_nothing_registered(library, 'exact')
