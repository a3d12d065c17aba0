# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The page blob engine: zero pages, chunk plans, range arithmetic, the one-pass scan, read-back and repair."""
from __future__ import annotations

import hashlib
import os
import types

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils import _page_blob as page_blob
from ansible_collections.imageprep.vm.plugins.module_utils._page_blob import Chunk

MIB = 1024 * 1024
PAGE = 512


def pages(*numbers, fill=b'\x07'):
    """A buffer of max(numbers)+1 pages where the given pages hold FILL bytes and the others zeros."""
    data = bytearray((max(numbers) + 1) * PAGE)
    for number in numbers:
        data[number * PAGE:(number + 1) * PAGE] = fill * PAGE
    return bytes(data)


def write_sparse(path, size, extents):
    """A sparse file of SIZE with (offset, bytes) extents written."""
    with open(path, 'wb') as handle:
        handle.truncate(size)
        for offset, data in extents:
            handle.seek(offset)
            handle.write(data)
    return str(path)


# -- zero pages ------------------------------------------------------------------------------

def test_all_zero_data_has_no_pages():
    assert page_blob.nonzero_pages(bytes(4 * MIB), 0) == []


def test_nonzero_pages_are_found_and_joined():
    data = pages(0, 3, 4, 200)
    assert page_blob.nonzero_pages(data, 10 * MIB) == [
        (10 * MIB, 10 * MIB + 512), (10 * MIB + 3 * 512, 10 * MIB + 5 * 512), (10 * MIB + 200 * 512, 10 * MIB + 201 * 512)]


def test_one_byte_makes_a_page_nonzero():
    data = bytearray(MIB)
    data[MIB - 1] = 1  # the last byte of the last 64 KiB block
    data[65536] = 1  # the first byte of the second block
    assert page_blob.nonzero_pages(bytes(data), 0) == [(65536, 65536 + 512), (MIB - 512, MIB)]


def test_differing_pages():
    local = pages(1, 2, 9)
    remote = bytearray(local)
    remote[2 * 512 + 7] ^= 0xFF
    remote[5 * 512] = 1
    assert page_blob.differing_pages(local, bytes(remote), 1024) == [(1024 + 1024, 1024 + 1536), (1024 + 2560, 1024 + 3072)]
    assert page_blob.differing_pages(local, local, 0) == []


# -- chunk plans ---------------------------------------------------------------------------

def test_runs_are_cut_into_chunks_of_at_most_4_mib():
    chunks = page_blob.plan_chunks([(MIB, MIB + 9 * MIB + 512)], gap=0)
    assert chunks == [Chunk(MIB, 4 * MIB), Chunk(5 * MIB, 4 * MIB), Chunk(9 * MIB, MIB + 512)]
    assert all(c.offset % 512 == 0 and c.length % 512 == 0 and c.length <= 4 * MIB for c in chunks)


def test_zero_pages_between_runs_are_skipped_unless_the_gap_is_small():
    runs = [(0, 512), (1024, 2048), (10 * MIB, 10 * MIB + 512)]
    assert page_blob.plan_chunks(runs, gap=0) == [Chunk(0, 512), Chunk(1024, 1024), Chunk(10 * MIB, 512)]
    # the default joins a 512-byte zero gap (cheaper than a request), not a 10 MiB one
    assert page_blob.plan_chunks(runs) == [Chunk(0, 2048), Chunk(10 * MIB, 512)]
    assert page_blob.plan_chunks([], gap=0) == []


# -- range arithmetic ----------------------------------------------------------------------

@pytest.mark.parametrize('ranges, merged', [
    ([], []),
    ([(5, 10), (0, 5)], [(0, 10)]),
    ([(0, 4), (2, 3), (8, 9)], [(0, 4), (8, 9)]),
    ([(3, 3), (1, 2)], [(1, 2)]),
])
def test_merge_ranges(ranges, merged):
    assert page_blob.merge_ranges(ranges) == merged


def test_complement_and_intersect():
    ranges = [(10, 20), (30, 40)]
    assert page_blob.complement(ranges, 50) == [(0, 10), (20, 30), (40, 50)]
    assert page_blob.complement([(0, 50)], 50) == []
    assert page_blob.complement([], 8) == [(0, 8)]
    assert page_blob.intersect([(0, 15), (18, 35)], ranges) == [(10, 15), (18, 20), (30, 35)]
    assert page_blob.intersect([(0, 5)], ranges) == []


@pytest.mark.parametrize('start, end, inside', [
    (0, 512, True), (512, 1024, True), (0, 1024, True), (0, 1536, False), (1536, 2048, False),
    (2048, 4096, True), (1024, 2560, False), (4096, 4608, False),
])
def test_coverage(start, end, inside):
    ranges = [(0, 1024), (2048, 4096)]
    assert page_blob.covered(ranges, start, end) is inside


def test_a_resume_sends_the_chunks_the_blob_lacks():
    chunks = [Chunk(0, 4 * MIB), Chunk(4 * MIB, 4 * MIB), Chunk(8 * MIB, 4 * MIB), Chunk(20 * MIB, 512)]
    # the blob has the first chunk, half the second, and an unrelated range
    ranges = page_blob.merge_ranges([(0, 4 * MIB), (4 * MIB, 6 * MIB), (12 * MIB, 13 * MIB)])
    assert page_blob.uncovered(chunks, ranges) == chunks[1:]
    assert page_blob.uncovered(chunks, [(0, 21 * MIB)]) == []
    assert page_blob.uncovered(chunks, []) == chunks


def test_page_align():
    assert page_blob.page_align([(700, 800), (1000, 1100), (5000, 5001)], 5120) == [(512, 1536), (4608, 5120)]


# -- the local file --------------------------------------------------------------------------

def test_scan_hashes_the_whole_file_and_finds_its_data(tmp_path):
    size = 16 * MIB + 512
    extents = [(MIB, b'\x01' * 3000), (5 * MIB + 100, b'\x02' * (2 * MIB)), (size - 512, b'conectix' + b'\x03' * 504)]
    path = write_sparse(tmp_path / 'disk.vhd', size, extents)
    content = open(path, 'rb').read()
    scan = page_blob.scan_file(path)
    assert scan.size == size
    assert scan.sha256 == hashlib.sha256(content).hexdigest()
    assert scan.md5 == hashlib.md5(content).digest()
    assert scan.runs == [(MIB, MIB + 3072), (5 * MIB, 5 * MIB + 2 * MIB + 512), (size - 512, size)]
    # only the data extents were read: far less than the file
    assert scan.data_bytes <= os.stat(path).st_blocks * 512 < size // 2


def test_scan_always_counts_the_last_page(tmp_path):
    path = write_sparse(tmp_path / 'zeros.vhd', 2 * MIB, [])
    scan = page_blob.scan_file(path)
    assert scan.runs == [(2 * MIB - 512, 2 * MIB)]
    assert scan.sha256 == hashlib.sha256(bytes(2 * MIB)).hexdigest()
    assert scan.data_bytes == 0


def test_scan_refuses_a_file_that_is_not_whole_pages(tmp_path):
    path = write_sparse(tmp_path / 'odd', 1000, [(0, b'x')])
    with pytest.raises(page_blob.PageBlobError, match='1000 bytes'):
        page_blob.scan_file(path)


def test_scan_writes_the_last_page_from_the_digest_of_the_data(tmp_path):
    size = 2 * MIB + 512
    path = write_sparse(tmp_path / 'disk.vhd', size, [(4096, b'\x09' * 512), (size - 512, b'old footer')])
    seen = []

    def last_page(digest):
        seen.append(digest)
        return b'new footer'.ljust(512, b'\x00')

    scan = page_blob.scan_file(path, last_page=last_page)
    content = open(path, 'rb').read()
    assert seen == [hashlib.sha256(content[:-512]).digest()]
    assert content[-512:] == b'new footer'.ljust(512, b'\x00')
    assert scan.sha256 == hashlib.sha256(content).hexdigest()
    assert scan.md5 == hashlib.md5(content).digest()


def test_data_extents_skip_holes(tmp_path):
    path = write_sparse(tmp_path / 'disk', 64 * MIB, [(8 * MIB, b'\x01' * 4096), (40 * MIB, b'\x02' * 4096)])
    fd = os.open(path, os.O_RDONLY)
    try:
        extents = list(page_blob.data_extents(fd, 64 * MIB))
    finally:
        os.close(fd)
    assert sum(end - start for start, end in extents) < MIB
    assert any(start <= 8 * MIB < end for start, end in extents)
    assert any(start <= 40 * MIB < end for start, end in extents)


# -- read-back and repair, against an in-memory page blob -------------------------------------

class MemoryPageBlob:
    """Enough of azure.storage.blob.BlobClient for PageBlob: pages in a dict, page ranges from them."""

    url = 'https://account.blob.example/c/disk.vhd'
    container_name = 'c'
    account_name = 'account'

    def __init__(self, size):
        self.size = size
        self.pages = {}
        self.calls = []

    def upload_page(self, page, offset, length, validate_content=False):
        assert len(page) == length and offset % 512 == 0 and length % 512 == 0 and length <= 4 * MIB
        assert validate_content
        self.calls.append(('upload', offset, length))
        for index in range(0, length, 512):
            self.pages[offset + index] = bytes(page[index:index + 512])

    def clear_page(self, offset, length):
        self.calls.append(('clear', offset, length))
        for index in range(offset, offset + length, 512):
            self.pages.pop(index, None)

    def list_page_ranges(self):
        ranges = page_blob.merge_ranges((offset, offset + 512) for offset in self.pages)
        return [types.SimpleNamespace(start=start, end=end - 1, cleared=False) for start, end in ranges]

    def download_blob(self, offset, length, max_concurrency=1, validate_content=False):
        data = b''.join(self.pages.get(index, bytes(512)) for index in range(offset, offset + length, 512))
        return types.SimpleNamespace(readall=lambda: data)

    def content(self):
        return b''.join(self.pages.get(index, bytes(512)) for index in range(0, self.size, 512))


@pytest.fixture
def vhd_file(tmp_path):
    size = 12 * MIB + 512
    return write_sparse(tmp_path / 'disk.vhd', size, [(MIB, b'\x11' * (5 * MIB)), (9 * MIB, b'\x22' * 4096), (size - 512, b'F' * 512)])


@pytest.mark.parametrize('parallel', [1, 3])
def test_upload_then_read_back_matches(vhd_file, parallel):
    scan = page_blob.scan_file(vhd_file)
    client = MemoryPageBlob(scan.size)
    blob = page_blob.PageBlob(client, parallel)
    chunks = page_blob.plan_chunks(scan.runs)
    assert blob.upload(vhd_file, chunks) == sum(c.length for c in chunks) == 5 * MIB + 4096 + 512
    assert client.content() == open(vhd_file, 'rb').read()
    assert blob.read_back(vhd_file, scan.size, scan.runs) == (scan.sha256, [])
    assert blob.page_ranges() == [(MIB, 6 * MIB), (9 * MIB, 9 * MIB + 4096), (scan.size - 512, scan.size)]


def test_read_back_finds_changed_missing_and_extra_pages_and_repair_fixes_them(vhd_file):
    scan = page_blob.scan_file(vhd_file)
    client = MemoryPageBlob(scan.size)
    blob = page_blob.PageBlob(client, 4)
    blob.upload(vhd_file, page_blob.plan_chunks(scan.runs))
    client.pages[2 * MIB] = b'\xee' * 512  # changed
    del client.pages[9 * MIB + 1024]  # missing (a hole in the blob where the file has data)
    client.pages[11 * MIB] = b'\x01' * 512  # extra (data in the blob where the file has zeros)
    sha256, differing = blob.read_back(vhd_file, scan.size, scan.runs)
    assert sha256 != scan.sha256
    assert differing == [(2 * MIB, 2 * MIB + 512), (9 * MIB + 1024, 9 * MIB + 1536), (11 * MIB, 11 * MIB + 512)]
    client.calls.clear()
    sent, fixed = blob.repair(vhd_file, differing)
    assert sent == 1024
    assert client.calls.count(('clear', 11 * MIB, 512)) == 1
    assert len(fixed) == 3
    assert blob.read_back(vhd_file, scan.size, scan.runs) == (scan.sha256, [])
    assert client.content() == open(vhd_file, 'rb').read()


def test_a_failed_request_stops_the_upload_with_its_range(vhd_file):
    scan = page_blob.scan_file(vhd_file)

    class Failing(MemoryPageBlob):
        def upload_page(self, page, offset, length, validate_content=False):
            if offset == 9 * MIB:
                raise page_blob.HttpResponseError(message='The MD5 value specified in the request did not match')
            super().upload_page(page, offset, length, validate_content)

    blob = page_blob.PageBlob(Failing(scan.size), 1)
    with pytest.raises(page_blob.PageBlobError, match=f'uploading bytes {9 * MIB}-{9 * MIB + 4095}'):
        blob.upload(vhd_file, page_blob.plan_chunks(scan.runs))


def test_a_refused_sign_in_is_told_at_once():
    class Refusing:
        def get_token(self, *scopes):
            assert scopes == ('https://storage.azure.com/.default',)
            raise page_blob.ClientAuthenticationError(message='Authentication failed: AADSTS7000215: Invalid client secret provided.')

    with pytest.raises(page_blob.PageBlobError, match='signing in to Microsoft Entra ID failed: .*AADSTS7000215'):
        page_blob.sign_in(Refusing())
