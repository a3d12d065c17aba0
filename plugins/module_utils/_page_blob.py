# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Page blobs in Azure Storage: send a fixed VHD as its non-zero pages, in parallel, resumably, and read it back.

A page blob is a sparse array of 512-byte pages: pages never written read as zeros, so only the
pages that hold data need sending. :func:`scan_file` reads the local file once (its data extents
only, found with ``SEEK_DATA``/``SEEK_HOLE``; holes are hashed as zeros), hashing it (SHA-256 and
MD5) and finding its non-zero pages; :func:`plan_chunks` groups those into Put Page requests of at
most 4 MiB. :class:`PageBlob` sends them in parallel with a per-request MD5 (``validate_content``),
tells which are there already (the blob's page ranges, for a resumed upload), and reads the blob
back to compare it with the file.

Every failure leaves this file as :class:`PageBlobError`.
"""
from __future__ import annotations

import bisect
import collections
import concurrent.futures
import errno
import hashlib
import os
import traceback
import typing as t

STORAGE_IMPORT_ERROR = None
try:
    import requests
    from requests.adapters import HTTPAdapter
    from azure.core.credentials import AzureSasCredential
    from azure.core.exceptions import AzureError as _SdkError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobClient, BlobType, ContentSettings
except ImportError:  # the module reports it with missing_required_lib()
    STORAGE_IMPORT_ERROR = traceback.format_exc()

MIB = 1024 * 1024
PAGE = 512
# Put Page takes at most 4 MiB; a ranged Get Blob returns its MD5 only up to 4 MiB.
MAX_REQUEST = 4 * MIB
READ_BLOCK = 4 * MIB
# a zero run shorter than this between data is sent with it: cheaper than another request
SEND_ZERO_GAP_BELOW = 64 * 1024
_ZERO_PAGE = bytes(PAGE)
_ZERO_BLOCK_SIZE = 64 * 1024
_ZERO_BLOCK = bytes(_ZERO_BLOCK_SIZE)
_ZEROS = bytes(READ_BLOCK)

Range = t.Tuple[int, int]  # [start, end) in bytes


class PageBlobError(Exception):
    """A page blob operation failed; the message says which and why."""

    def __init__(self, message: str, status: t.Optional[int] = None, code: t.Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Chunk(t.NamedTuple):
    """One Put Page request: LENGTH bytes at OFFSET."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length


class Scan(t.NamedTuple):
    """What one read of a local file found."""

    size: int
    sha256: str
    md5: bytes
    runs: list  # [start, end) runs of non-zero pages, sorted and merged; the last page always included
    data_bytes: int  # bytes in the file's data extents (what was read)


# ---------------------------------------------------------------------------------------------------
# ranges (pure)

def merge_ranges(ranges: t.Iterable[Range]) -> list[Range]:
    """Return RANGES sorted, with overlapping and touching ranges joined."""
    merged: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def complement(ranges: list[Range], size: int) -> list[Range]:
    """Return the parts of [0, SIZE) outside the merged RANGES."""
    holes: list[Range] = []
    position = 0
    for start, end in ranges:
        if start > position:
            holes.append((position, min(start, size)))
        position = max(position, end)
    if position < size:
        holes.append((position, size))
    return [h for h in holes if h[1] > h[0]]


def intersect(first: list[Range], second: list[Range]) -> list[Range]:
    """Return the intersection of two merged range lists."""
    found: list[Range] = []
    i = j = 0
    while i < len(first) and j < len(second):
        start = max(first[i][0], second[j][0])
        end = min(first[i][1], second[j][1])
        if start < end:
            found.append((start, end))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return found


def covered(ranges: list[Range], start: int, end: int) -> bool:
    """Return True when [START, END) lies wholly inside one of the merged RANGES."""
    index = bisect.bisect_right(ranges, (start, float('inf'))) - 1
    return index >= 0 and ranges[index][0] <= start and ranges[index][1] >= end


def uncovered(chunks: t.Iterable[Chunk], ranges: list[Range]) -> list[Chunk]:
    """Return the CHUNKS that the merged page RANGES of a blob do not wholly cover (to send on a resume)."""
    return [chunk for chunk in chunks if not covered(ranges, chunk.offset, chunk.end)]


def split(ranges: t.Iterable[Range], most: int = MAX_REQUEST) -> list[Chunk]:
    """Return RANGES cut into chunks of at most MOST bytes."""
    chunks = []
    for start, end in ranges:
        while start < end:
            length = min(most, end - start)
            chunks.append(Chunk(start, length))
            start += length
    return chunks


def plan_chunks(runs: list[Range], most: int = MAX_REQUEST, gap: int = SEND_ZERO_GAP_BELOW) -> list[Chunk]:
    """Return the Put Page requests for the non-zero RUNS: runs closer than GAP are joined, then cut at MOST bytes."""
    joined: list[Range] = []
    for start, end in runs:
        if joined and start - joined[-1][1] < gap:
            joined[-1] = (joined[-1][0], end)
        else:
            joined.append((start, end))
    return split(joined, most)


def add_run(runs: list[Range], start: int, end: int) -> None:
    """Append [START, END) to the sorted RUNS (START not before the last run's start), joining when they touch."""
    if runs and start <= runs[-1][1]:
        runs[-1] = (runs[-1][0], max(runs[-1][1], end))
    else:
        runs.append((start, end))


def nonzero_pages(data: bytes, base: int) -> list[Range]:
    """Return the runs of 512-byte pages of DATA (read at offset BASE) that are not all zeros."""
    runs: list[Range] = []
    if data == _ZEROS[:len(data)]:
        return runs
    size = len(data)
    for block in range(0, size, _ZERO_BLOCK_SIZE):
        block_end = min(block + _ZERO_BLOCK_SIZE, size)
        if data[block:block_end] == _ZERO_BLOCK[:block_end - block]:
            continue
        for page in range(block, block_end, PAGE):
            if data[page:page + PAGE] != _ZERO_PAGE[:min(PAGE, size - page)]:
                add_run(runs, base + page, base + min(page + PAGE, size))
    return runs


def differing_pages(local: bytes, remote: bytes, base: int) -> list[Range]:
    """Return the runs of 512-byte pages where LOCAL and REMOTE (both read at BASE) differ."""
    runs: list[Range] = []
    size = max(len(local), len(remote))
    for page in range(0, size, PAGE):
        if local[page:page + PAGE] != remote[page:page + PAGE]:
            add_run(runs, base + page, base + min(page + PAGE, size))
    return runs


def page_align(ranges: t.Iterable[Range], size: int) -> list[Range]:
    """Return RANGES widened to whole 512-byte pages inside [0, SIZE), merged."""
    return merge_ranges((start // PAGE * PAGE, min(size, -(-end // PAGE) * PAGE)) for start, end in ranges)


# ---------------------------------------------------------------------------------------------------
# the local file

def data_extents(fd: int, size: int) -> t.Iterator[Range]:
    """Yield the data extents of the open file FD (holes skipped), page aligned, in order."""
    position = 0
    while position < size:
        try:
            start = os.lseek(fd, position, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole is left
                return
            if exc.errno == errno.EINVAL:  # no SEEK_DATA on this file system: all of it is data
                yield position, size
                return
            raise
        if start >= size:
            return
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        start = max(position, start // PAGE * PAGE)
        end = min(size, -(-end // PAGE) * PAGE)
        yield start, end
        position = end


def _hash_zeros(digests: t.Sequence[t.Any], count: int) -> None:
    while count > 0:
        step = min(count, READ_BLOCK)
        block = _ZEROS if step == READ_BLOCK else _ZEROS[:step]
        for digest in digests:
            digest.update(block)
        count -= step


def scan_file(path: str, last_page: t.Optional[t.Callable[[bytes], bytes]] = None) -> Scan:
    """Read PATH once: its SHA-256 and MD5, and the runs of its non-zero pages (the last page always counts).

    LAST_PAGE, when given, is called with the SHA-256 digest of everything before the file's last
    512 bytes and returns what those bytes must be; they are written to PATH before they are hashed.
    """
    sha256 = hashlib.sha256()
    md5 = hashlib.md5()  # Azure's Content-MD5 of a blob, not a security use
    runs: list[Range] = []
    data_bytes = 0
    fd = os.open(path, os.O_RDWR if last_page else os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        if size == 0 or size % PAGE:
            raise PageBlobError(f'{path} is {size} bytes long; a page blob holds a whole number of 512-byte pages')
        end_of_data = size - PAGE if last_page else size
        position = 0
        for start, end in data_extents(fd, end_of_data):
            _hash_zeros((sha256, md5), start - position)
            while start < end:
                data = os.pread(fd, min(READ_BLOCK, end - start), start)
                if not data:
                    raise PageBlobError(f'{path} shrank while it was read')
                sha256.update(data)
                md5.update(data)
                for run in nonzero_pages(data, start):
                    add_run(runs, *run)
                start += len(data)
                data_bytes += len(data)
            position = end
        _hash_zeros((sha256, md5), end_of_data - position)
        if last_page:
            page = last_page(sha256.copy().digest())
            if len(page) != PAGE or os.pwrite(fd, page, end_of_data) != PAGE:
                raise PageBlobError(f'cannot write the last page of {path}')
            sha256.update(page)
            md5.update(page)
            data_bytes += PAGE
    finally:
        os.close(fd)
    add_run(runs, size - PAGE, size)  # the VHD footer: always sent
    return Scan(size, sha256.hexdigest(), md5.digest(), runs, data_bytes)


def _all_zero(data: bytes) -> bool:
    return data == (_ZEROS[:len(data)] if len(data) <= READ_BLOCK else bytes(len(data)))


# ---------------------------------------------------------------------------------------------------
# the blob

def blob_client(container: str, blob: str, account_url: t.Optional[str] = None, credential: t.Any = None,
                connection_string: t.Optional[str] = None, sas_token: t.Optional[str] = None, connections: int = 8,
                verify: bool = True) -> t.Any:
    """Return a BlobClient for CONTAINER/BLOB whose HTTP connection pool holds CONNECTIONS connections.

    The credential is CONNECTION_STRING, or SAS_TOKEN, or CREDENTIAL (an account key dict or a token
    credential). VERIFY False skips TLS certificate validation.
    """
    if STORAGE_IMPORT_ERROR:
        raise PageBlobError('the Azure Storage SDK (azure-storage-blob) is not installed')
    if sas_token:
        credential = AzureSasCredential(sas_token.lstrip('?'))
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=2, pool_maxsize=connections)
    session.mount('http://', adapter)
    session.mount('https://', adapter)
    options = {'transport': RequestsTransport(session=session, session_owner=True), 'connection_verify': verify}
    if connection_string:
        return BlobClient.from_connection_string(connection_string, container, blob, **options)
    return BlobClient(account_url, container, blob, credential=credential, **options)


STORAGE_SCOPE = 'https://storage.azure.com/.default'


def sign_in(credential: t.Any) -> None:
    """Get a storage token from CREDENTIAL now: a refusal is told at once (the blob client would retry it for a minute)."""
    try:
        credential.get_token(STORAGE_SCOPE)
    except ClientAuthenticationError as exc:
        raise PageBlobError(f'signing in to Microsoft Entra ID failed: {_first_line(exc)}', status=exc.status_code) from exc
    except _SdkError as exc:
        raise PageBlobError(f'signing in to Microsoft Entra ID failed: {_first_line(exc)}') from exc


class PageBlob:
    """One page blob, and the parallel requests that write and read it."""

    def __init__(self, client: t.Any, parallel: int = 8) -> None:
        self.client = client
        self.parallel = parallel

    @property
    def url(self) -> str:
        """The blob's URL without a query (no SAS token)."""
        return self.client.url.split('?', 1)[0]

    def _call(self, what: str, function: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return function(*args, **kwargs)
        except HttpResponseError as exc:
            status = exc.status_code
            code = getattr(exc, 'error_code', None)  # set by the storage SDK from x-ms-error-code
            code = str(getattr(code, 'value', code)) if code else None
            if isinstance(exc, ClientAuthenticationError) and not code:  # from azure-identity, not from the storage service
                message = f'signing in to Microsoft Entra ID failed: {_first_line(exc)}'
            elif isinstance(exc, ClientAuthenticationError) or status == 403:
                message = (f'the storage account did not accept the credentials ({code or status}): a wrong key, an expired '
                           'SAS token or one without the permission, or an identity without a data role on the container')
            elif isinstance(exc, ResourceNotFoundError) and code == 'ContainerNotFound':
                message = f'the container {self.client.container_name} does not exist in {self.client.account_name}; create it first'
            else:
                message = f'{code or status}: {_first_line(exc)}'
            raise PageBlobError(f'{what}: {message}', status=status, code=code) from exc
        except _SdkError as exc:
            raise PageBlobError(f'{what}: {_first_line(exc)}') from exc

    def properties(self) -> t.Optional[dict[str, t.Any]]:
        """Return the blob's type, size, metadata and Content-MD5, or None when there is no such blob."""
        try:
            props = self._call(f'reading the properties of {self.url}', self.client.get_blob_properties)
        except PageBlobError as exc:
            if exc.status == 404 and exc.code != 'ContainerNotFound':
                return None
            raise
        md5 = props.content_settings.content_md5
        return {'blob_type': 'PageBlob' if props.blob_type == BlobType.PAGEBLOB else str(props.blob_type),
                'size': props.size, 'metadata': dict(props.metadata or {}), 'etag': props.etag,
                'content_md5': bytes(md5) if md5 else None, 'content_type': props.content_settings.content_type}

    def create(self, size: int, metadata: dict[str, str]) -> None:
        """Create (or overwrite) the blob as an empty page blob of SIZE bytes with METADATA."""
        self._call(f'creating the page blob {self.url}', self.client.create_page_blob, size,
                   content_settings=ContentSettings(content_type='application/octet-stream'), metadata=metadata)

    def set_metadata(self, metadata: dict[str, str]) -> None:
        """Replace the blob's metadata."""
        self._call(f'setting the metadata of {self.url}', self.client.set_blob_metadata, metadata)

    def set_content_md5(self, md5: bytes, content_type: t.Optional[str]) -> None:
        """Set the blob's Content-MD5 (and keep its content type)."""
        self._call(f'setting the Content-MD5 of {self.url}', self.client.set_http_headers,
                   ContentSettings(content_type=content_type or 'application/octet-stream', content_md5=bytearray(md5)))

    def delete(self) -> bool:
        """Delete the blob with its snapshots; False when there was none."""
        try:
            self._call(f'deleting {self.url}', self.client.delete_blob, delete_snapshots='include')
        except PageBlobError as exc:
            if exc.status == 404 and exc.code != 'ContainerNotFound':
                return False
            raise
        return True

    def page_ranges(self) -> list[Range]:
        """Return the blob's written page ranges, [start, end), merged."""
        pages = self._call(f'listing the page ranges of {self.url}', lambda: list(self.client.list_page_ranges()))
        return merge_ranges((page.start, page.end + 1) for page in pages if not getattr(page, 'cleared', False))

    def upload(self, path: str, chunks: list[Chunk]) -> int:
        """Send CHUNKS of the file PATH, PARALLEL at a time, each with its MD5; return the bytes sent."""
        fd = os.open(path, os.O_RDONLY)
        try:
            def send(chunk: Chunk) -> int:
                data = os.pread(fd, chunk.length, chunk.offset)
                if len(data) != chunk.length:
                    raise PageBlobError(f'{path} shrank while it was uploaded')
                self._call(f'uploading bytes {chunk.offset}-{chunk.end - 1} to {self.url}', self.client.upload_page,
                           data, offset=chunk.offset, length=chunk.length, validate_content=True)
                return chunk.length
            return sum(self._parallel(send, chunks))
        finally:
            os.close(fd)

    def repair(self, path: str, ranges: list[Range]) -> tuple[int, list[Chunk]]:
        """Make the blob equal the file PATH in RANGES: send their data, clear pages that are zeros locally.

        Return (bytes sent, the chunks sent or cleared).
        """
        chunks = split(ranges)
        fd = os.open(path, os.O_RDONLY)
        try:
            def fix(chunk: Chunk) -> int:
                data = os.pread(fd, chunk.length, chunk.offset)
                what = f'rewriting bytes {chunk.offset}-{chunk.end - 1} of {self.url}'
                if _all_zero(data):
                    self._call(what, self.client.clear_page, offset=chunk.offset, length=chunk.length)
                    return 0
                self._call(what, self.client.upload_page, data, offset=chunk.offset, length=chunk.length, validate_content=True)
                return chunk.length
            return sum(self._parallel(fix, chunks)), chunks
        finally:
            os.close(fd)

    def read_back(self, path: str, size: int, local_runs: list[Range]) -> tuple[str, list[Range]]:
        """Read the blob back (its page ranges, in parallel; holes hashed as zeros) and compare it with PATH.

        Return (the blob's SHA-256, the page-aligned ranges where it differs from the file, merged).
        LOCAL_RUNS are the file's non-zero pages: where the blob has a hole, the file must be zeros.
        """
        ranges = [(start, min(end, size)) for start, end in self.page_ranges() if start < size]
        digest = hashlib.sha256()
        differing: list[Range] = []
        fd = os.open(path, os.O_RDONLY)
        try:
            def fetch(chunk: Chunk) -> bytes:
                data = self._call(f'reading bytes {chunk.offset}-{chunk.end - 1} of {self.url}', lambda: self.client.download_blob(
                    offset=chunk.offset, length=chunk.length, max_concurrency=1, validate_content=True).readall())
                if len(data) != chunk.length:
                    raise PageBlobError(f'reading bytes {chunk.offset}-{chunk.end - 1} of {self.url}: got {len(data)} bytes')
                return data
            position = 0
            for chunk, data in self._parallel_in_order(fetch, split(ranges)):
                _hash_zeros((digest,), chunk.offset - position)
                digest.update(data)
                local = os.pread(fd, chunk.length, chunk.offset)
                if local != data:
                    differing.extend(differing_pages(local, data, chunk.offset))
                position = chunk.end
            _hash_zeros((digest,), size - position)
        finally:
            os.close(fd)
        differing.extend(intersect(local_runs, complement(ranges, size)))
        return digest.hexdigest(), page_align(differing, size)

    # --- parallel requests

    def _parallel(self, function: t.Callable[[Chunk], int], chunks: list[Chunk]) -> list[int]:
        """Run FUNCTION on every chunk, PARALLEL at a time; on the first failure drop what has not started and raise it."""
        if not chunks:
            return []
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=min(self.parallel, len(chunks)))
        try:
            futures = [executor.submit(function, chunk) for chunk in chunks]
            for future in concurrent.futures.as_completed(futures):
                future.result()
            return [future.result() for future in futures]
        finally:
            # on failure (or KeyboardInterrupt) nothing queued starts; requests in flight end first
            executor.shutdown(wait=True, cancel_futures=True)

    def _parallel_in_order(self, function: t.Callable[[Chunk], bytes], chunks: list[Chunk]) -> t.Iterator[tuple[Chunk, bytes]]:
        """Yield (chunk, FUNCTION(chunk)) in order, with up to PARALLEL requests running ahead (bounded memory)."""
        if not chunks:
            return
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=min(self.parallel, len(chunks)))
        try:
            pending: collections.deque = collections.deque()
            queued = iter(chunks)
            for chunk in queued:
                pending.append((chunk, executor.submit(function, chunk)))
                if len(pending) >= self.parallel:
                    break
            while pending:
                chunk, future = pending.popleft()
                data = future.result()
                following = next(queued, None)
                if following is not None:
                    pending.append((following, executor.submit(function, following)))
                yield chunk, data
        finally:
            executor.shutdown(wait=True, cancel_futures=True)


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, 'message', None) or str(exc)
    return (text.strip().splitlines() or [''])[0]
