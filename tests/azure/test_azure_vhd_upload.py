# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""azure_vhd_upload against Azurite, run as a real module process: what is sent, what the blob holds, resuming
after a kill, corruption found and repaired, refusals, check mode.

Disks are small sparse images made with qemu-img; what the blob must hold is worked out here independently
(``qemu-img convert -O raw`` of the source, padded to a whole MiB, and a VHD footer checked field by field).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import pathlib
import socket
import struct
import subprocess
import sys
import threading
import time
import typing as t
import uuid

import pytest
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from azurite import Azurite  # tests/targets, on the path through conftest.py
from module_runs import MIB, ModuleProcess, make_disk, run_module

MODULE = 'azure_vhd_upload'
# bound for a frozen upload to reach the gate, and for Azurite to show the pages it stored
REACH_TIMEOUT = 60.0


# -- independent expectations ----------------------------------------------------------------

def footer_fields(data: bytes) -> dict[str, t.Any]:
    """Decode a VHD footer the way the format specification lays it out (written here, not imported)."""
    assert len(data) == 512
    return {
        'cookie': data[0:8],
        'current_size': struct.unpack('>Q', data[48:56])[0],
        'original_size': struct.unpack('>Q', data[40:48])[0],
        'disk_type': struct.unpack('>I', data[60:64])[0],
        'checksum': struct.unpack('>I', data[64:68])[0],
        'computed': (~(sum(data[:64]) + sum(data[68:])) & 0xFFFFFFFF),
    }


def expected_data(source: pathlib.Path, workdir: pathlib.Path) -> bytes:
    """The disk's data as qemu-img reads it, padded with zeros to a whole MiB: what the VHD must hold before its footer."""
    raw = workdir / f'{source.name}.expected.raw'
    subprocess.run(['qemu-img', 'convert', '-O', 'raw', str(source), str(raw)], check=True)
    data = raw.read_bytes()
    raw.unlink()
    return data + bytes(-len(data) % MIB)


def assert_blob_is_fixed_vhd(blob: t.Any, data: bytes, result: dict[str, t.Any]) -> bytes:
    """The blob is DATA then a valid fixed-VHD footer for it, and the module's result says so; return the blob."""
    content = blob.download_blob().readall()
    assert len(content) == len(data) + 512 == result['size'] == result['bytes_total']
    assert content[:-512] == data
    footer = footer_fields(content[-512:])
    assert footer['cookie'] == b'conectix'
    assert footer['disk_type'] == 2
    assert footer['current_size'] == len(data) == result['virtual_size']
    assert footer['current_size'] % MIB == 0
    assert footer['checksum'] == footer['computed']
    props = blob.get_blob_properties()
    assert props.blob_type == 'PageBlob'
    assert props.metadata['imageprep_state'] == 'complete'
    assert props.metadata['imageprep_sha256'] == result['sha256'] == hashlib.sha256(content).hexdigest()
    assert bytes(props.content_settings.content_md5) == hashlib.md5(content).digest()
    return content


def page_ranges(blob: t.Any) -> list[tuple[int, int]]:
    """The blob's written pages as [start, end) ranges, from Azurite's own answer (which lists a rewritten page
    inside a range as a range of its own: touching ranges are joined here)."""
    joined: list[tuple[int, int]] = []
    for page in blob.list_page_ranges():
        if joined and page.start == joined[-1][1]:
            joined[-1] = (joined[-1][0], page.end + 1)
        else:
            joined.append((page.start, page.end + 1))
    return joined


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def azurite(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Azurite]:
    with Azurite(tmp_path_factory.mktemp('azurite')) as server:
        yield server


@pytest.fixture
def container(azurite: Azurite, request: pytest.FixtureRequest) -> t.Iterator[t.Any]:
    """A fresh container for each test."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    name = 'vhds-' + uuid.uuid4().hex[:12]
    client = service.create_container(name)
    yield client
    client.delete_container()


@pytest.fixture
def workdir(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / 'work').mkdir()
    return tmp_path


def key_args(azurite: Azurite, container: t.Any, src: pathlib.Path, workdir: pathlib.Path, **more: t.Any) -> dict[str, t.Any]:
    """Module arguments with the account key, the work files in WORKDIR/work."""
    args = dict(src=str(src), storage_account=azurite.account, storage_account_key=azurite.key,
                blob_endpoint=azurite.blob_endpoint, container=container.container_name, tmpdir=str(workdir / 'work'))
    args.update(more)
    return args


def credential_args(kind: str, azurite: Azurite, container: t.Any) -> dict[str, t.Any]:
    """The storage options of each way to sign in."""
    if kind == 'key':
        return dict(storage_account=azurite.account, storage_account_key=azurite.key, blob_endpoint=azurite.blob_endpoint)
    if kind == 'connection_string':
        return dict(connection_string=azurite.connection_string)
    sas = generate_container_sas(azurite.account, container.container_name, account_key=azurite.key,
                                 permission=ContainerSasPermissions(read=True, write=True, create=True, delete=True),
                                 expiry=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1))
    return dict(storage_account=azurite.account, sas_token='?' + sas, blob_endpoint=azurite.blob_endpoint)


# -- what is sent ------------------------------------------------------------------------------

def test_a_sparse_disk_sends_only_its_data(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    # 64 MiB disk, 3 MiB written in two places
    disk = make_disk(workdir / 'sparse.qcow2', 'qcow2', 64 * MIB, [(0x11, MIB, MIB), (0x22, 40 * MIB, 2 * MIB)])
    result = run_module(MODULE, key_args(azurite, container, disk, workdir, _ansible_diff=True), workdir)
    assert result['rc'] == 0, result
    assert result['changed'] and result['converted'] and result['source_format'] == 'qcow2'
    assert result['bytes_sent'] == 3 * MIB + 512
    assert result['bytes_skipped_zero'] == 64 * MIB - 3 * MIB
    assert result['chunks_sent'] == 3  # 1 MiB, 2 MiB, the footer
    assert result['verify']['match'] and result['verify']['sha256'] == result['sha256']
    assert result['diff'] == {'before': {}, 'after': {'url': result['url'], 'size': 64 * MIB + 512,
                                                      'sha256': result['sha256'], 'state': 'complete'}}
    blob = container.get_blob_client('sparse.vhd')
    assert result['url'] == blob.url
    # Azurite's own record of the pages written: the two regions and the footer, nothing else
    assert page_ranges(blob) == [(MIB, 2 * MIB), (40 * MIB, 42 * MIB), (64 * MIB, 64 * MIB + 512)]
    assert_blob_is_fixed_vhd(blob, expected_data(disk, workdir), result)
    assert not os.listdir(workdir / 'work'), 'the work file was left behind'


def fixed_vhd(path: pathlib.Path, size: int, writes: list[tuple[int, int, int]]) -> pathlib.Path:
    """A fixed VHD of SIZE made by qemu-img, with qemu-io writes."""
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'vpc', '-o', 'subformat=fixed,force_size=on', str(path), str(size)], check=True)
    commands = [arg for pattern, offset, length in writes for arg in ('-c', f'write -P 0x{pattern:02x} {offset} {length}')]
    subprocess.run(['qemu-io', '-f', 'vpc'] + commands + [str(path)], check=True, capture_output=True)
    return path


@pytest.mark.parametrize('fmt, size, credential', [
    ('qcow2', 24 * MIB, 'key'),
    ('raw', 10 * MIB + 4608, 'connection_string'),  # not a whole MiB: rounded up to 11 MiB
    ('vmdk', 16 * MIB, 'sas'),
    ('vhdx', 16 * MIB, 'key'),
    ('vpc', 12 * MIB, 'key'),  # a dynamic VHD
])
def test_each_format_becomes_a_fixed_vhd(azurite: Azurite, container: t.Any, workdir: pathlib.Path,
                                         fmt: str, size: int, credential: str) -> None:
    disk = workdir / f'disk.{fmt}'
    if fmt == 'raw':
        with open(disk, 'wb') as handle:  # a raw file of any length, data up to its last byte
            handle.truncate(size)
            handle.seek(2 * MIB)
            handle.write(b'\x5a' * 70000)
            handle.seek(size - 100)
            handle.write(b'\x5b' * 100)
    else:
        make_disk(disk, fmt, size, [(0x31, 0, 64 * 1024), (0x32, 5 * MIB + 4096, MIB)])
    args = dict(src=str(disk), container=container.container_name, tmpdir=str(workdir / 'work'),
                **credential_args(credential, azurite, container))
    result = run_module(MODULE, args, workdir)
    assert result['rc'] == 0, result
    assert result['converted'] and result['source_format'] == fmt
    data = expected_data(disk, workdir)
    assert result['virtual_size'] == len(data)
    if fmt == 'raw':
        assert len(data) == 11 * MIB
    content = assert_blob_is_fixed_vhd(container.get_blob_client('disk.vhd'), data, result)
    # only non-zero pages went: what was sent is the data (in whole pages) plus the footer
    nonzero = sum(1 for page in range(0, len(content), 512) if content[page:page + 512] != bytes(512))
    assert result['bytes_sent'] == nonzero * 512
    assert not os.listdir(workdir / 'work')


def test_an_azure_ready_vhd_is_sent_as_it_is(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    disk = fixed_vhd(workdir / 'ready.vhd', 8 * MIB, [(0x41, 3 * MIB, 8192)])
    before = disk.read_bytes()
    result = run_module(MODULE, key_args(azurite, container, disk, workdir, convert=False), workdir)
    assert result['rc'] == 0, result
    assert not result['converted'] and result['source_format'] == 'vpc'
    blob = container.get_blob_client('ready.vhd')
    assert blob.download_blob().readall() == before == disk.read_bytes()
    assert result['bytes_sent'] == 8192 + 512
    assert_blob_is_fixed_vhd(blob, before[:-512], result)


# -- resuming ----------------------------------------------------------------------------------

class Gate:
    """A TCP relay to Azurite that passes the first LIMIT bytes the client sends, then holds the rest: an upload
    stuck in the middle of a request, at a point the test chooses, for the test to kill."""

    def __init__(self, target: str, limit: int) -> None:
        host, port = target.split('//', 1)[1].split('/', 1)[0].split(':')
        self.target = (host, int(port))
        self.limit = limit
        self.passed = 0
        self.lock = threading.Lock()
        self.frozen = threading.Event()
        self.closing = threading.Event()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _address = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.sockets += [client, upstream]
            threading.Thread(target=self._upward, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._downward, args=(upstream, client), daemon=True).start()

    def _upward(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self.lock:
                    allowed = data[:max(0, self.limit - self.passed)]
                    self.passed += len(allowed)
                if allowed:
                    sink.sendall(allowed)
                if len(allowed) < len(data):
                    self.frozen.set()
                    self.closing.wait()
                    return
            sink.shutdown(socket.SHUT_WR)

    def _downward(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)

    def close(self) -> None:
        self.closing.set()
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


def test_a_killed_upload_resumes(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    # 8 regions of 3 MiB, 8 MiB apart: one request each, sent one after the other (parallel=1)
    disk = make_disk(workdir / 'big.qcow2', 'qcow2', 64 * MIB, [(0x51 + k, k * 8 * MIB, 3 * MIB) for k in range(8)])
    gate = Gate(azurite.url, limit=10 * MIB)  # 3 regions get through, the 4th is held mid-request
    blob = container.get_blob_client('big.vhd')
    try:
        args = key_args(azurite, container, disk, workdir, parallel=1,
                        blob_endpoint=f'http://127.0.0.1:{gate.port}/{azurite.account}')
        with ModuleProcess(MODULE, args, workdir) as run:
            deadline = time.monotonic() + REACH_TIMEOUT
            while not gate.frozen.is_set():
                assert not run.finished(), f'the upload ended before the gate held it: {run.result()}'
                assert time.monotonic() < deadline, 'the upload never reached the gate'
                time.sleep(0.01)
            run.kill_group()
    finally:
        gate.close()
    props = blob.get_blob_properties()
    assert props.metadata['imageprep_state'] == 'uploading'
    assert page_ranges(blob) == [(k * 8 * MIB, k * 8 * MIB + 3 * MIB) for k in range(3)]
    assert os.listdir(workdir / 'work'), 'a killed run cannot remove its work file'

    result = run_module(MODULE, key_args(azurite, container, disk, workdir, parallel=4), workdir)
    assert result['rc'] == 0, result
    assert result['changed'] and result['resumed']
    assert result['bytes_already_uploaded'] == 9 * MIB
    assert result['bytes_sent'] == 15 * MIB + 512 < result['bytes_total']
    assert result['chunks_sent'] == 6
    assert result['cleaned'] and not os.listdir(workdir / 'work')  # the killed run's work file
    assert_blob_is_fixed_vhd(blob, expected_data(disk, workdir), result)


# -- verification ------------------------------------------------------------------------------

def test_a_changed_blob_is_found_and_repaired(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    disk = make_disk(workdir / 'disk.qcow2', 'qcow2', 32 * MIB, [(0x61, MIB, 2 * MIB)])
    args = key_args(azurite, container, disk, workdir)
    first = run_module(MODULE, args, workdir)
    assert first['rc'] == 0 and first['changed'], first
    blob = container.get_blob_client('disk.vhd')
    good = blob.download_blob().readall()
    ranges = page_ranges(blob)

    # the same VHD again: nothing sent, nothing changed, read back and found good
    again = run_module(MODULE, args, workdir)
    assert again['rc'] == 0, again
    assert not again['changed'] and again['bytes_sent'] == 0 and again['chunks_sent'] == 0
    assert again['verify'] == {'sha256': first['sha256'], 'match': True, 'repaired': []}

    # one page of data overwritten, and junk written where the disk has a hole
    blob.upload_page(b'\xee' * 512, offset=MIB + 8192, length=512)
    blob.upload_page(b'\xdd' * 512, offset=20 * MIB, length=512)
    corrupted_etag = blob.get_blob_properties().etag
    repaired = [{'offset': MIB + 8192, 'length': 512}, {'offset': 20 * MIB, 'length': 512}]

    predicted = run_module(MODULE, dict(args, _ansible_check_mode=True), workdir)
    assert predicted['rc'] == 0 and predicted['changed'], predicted
    assert predicted['verify']['repaired'] == repaired and not predicted['verify']['match']
    assert blob.get_blob_properties().etag == corrupted_etag  # check mode changed nothing

    fixed = run_module(MODULE, args, workdir)
    assert fixed['rc'] == 0, fixed
    assert fixed['changed'] and not fixed['resumed']
    assert fixed['verify'] == {'sha256': first['sha256'], 'match': True, 'repaired': repaired}
    assert fixed['bytes_sent'] == 512  # the data page; the junk page is cleared, not written
    assert blob.download_blob().readall() == good
    assert page_ranges(blob) == ranges
    assert blob.get_blob_properties().metadata['imageprep_state'] == 'complete'

    last = run_module(MODULE, args, workdir)
    assert last['rc'] == 0 and not last['changed'] and last['bytes_sent'] == 0, last


# -- refusals ----------------------------------------------------------------------------------

def blob_names(container: t.Any) -> list[str]:
    return [b.name for b in container.list_blobs()]


def test_a_dynamic_vhd_is_refused_without_convert(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    disk = make_disk(workdir / 'dynamic.vhd', 'vpc', 8 * MIB, [(0x71, 0, 4096)])
    result = run_module(MODULE, key_args(azurite, container, disk, workdir, convert=False), workdir)
    assert result['rc'] == 1 and result['failed'], result
    assert f'{disk} is a dynamic VHD' in result['msg']
    assert 'qemu-img convert -O vpc -o subformat=fixed,force_size=on' in result['msg'] and 'set convert: true' in result['msg']
    assert blob_names(container) == []


def test_a_fixed_vhd_of_the_wrong_size_is_refused_without_convert(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    disk = fixed_vhd(workdir / 'odd.vhd', 8 * MIB + 64 * 1024, [(0x72, 0, 4096)])
    result = run_module(MODULE, key_args(azurite, container, disk, workdir, convert=False), workdir)
    assert result['rc'] == 1, result
    assert 'not a whole number of MiB' in result['msg'] and str(9 * MIB) in result['msg']
    assert 'set convert: true' in result['msg']
    assert blob_names(container) == []
    # allowed to convert, it becomes 9 MiB
    converted = run_module(MODULE, key_args(azurite, container, disk, workdir), workdir)
    assert converted['rc'] == 0 and converted['converted'] and converted['virtual_size'] == 9 * MIB, converted


def test_another_source_does_not_replace_a_blob_without_force(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    first = make_disk(workdir / 'first.qcow2', 'qcow2', 8 * MIB, [(0x81, 0, MIB)])
    second = make_disk(workdir / 'second.qcow2', 'qcow2', 8 * MIB, [(0x82, 0, MIB)])
    assert run_module(MODULE, key_args(azurite, container, first, workdir, blob='shared.vhd'), workdir)['rc'] == 0
    blob = container.get_blob_client('shared.vhd')
    before = blob.get_blob_properties()
    content = blob.download_blob().readall()

    refused = run_module(MODULE, key_args(azurite, container, second, workdir, blob='shared.vhd'), workdir)
    assert refused['rc'] == 1, refused
    assert 'holds another VHD' in refused['msg'] and 'set force: true' in refused['msg']
    after = blob.get_blob_properties()
    assert (after.etag, after.metadata) == (before.etag, before.metadata)
    assert blob.download_blob().readall() == content
    assert not os.listdir(workdir / 'work'), 'the work file of the failed run was left behind'

    replaced = run_module(MODULE, key_args(azurite, container, second, workdir, blob='shared.vhd', force=True), workdir)
    assert replaced['rc'] == 0 and replaced['changed'], replaced
    assert_blob_is_fixed_vhd(blob, expected_data(second, workdir), replaced)


def test_a_missing_container_is_named(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    disk = make_disk(workdir / 'disk.qcow2', 'qcow2', 8 * MIB, [])
    result = run_module(MODULE, dict(key_args(azurite, container, disk, workdir), container='no-such-container'), workdir)
    assert result['rc'] == 1, result
    assert 'the container no-such-container does not exist' in result['msg']


def test_a_wrong_key_is_named(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    disk = make_disk(workdir / 'disk.qcow2', 'qcow2', 8 * MIB, [])
    wrong = 'A' * 86 + '=='
    result = run_module(MODULE, key_args(azurite, container, disk, workdir, storage_account_key=wrong), workdir)
    assert result['rc'] == 1, result
    assert 'did not accept the credentials' in result['msg']
    assert wrong not in str(result)
    assert blob_names(container) == []


def test_without_storage_credentials_entra_id_is_used(azurite: Azurite, container: t.Any, workdir: pathlib.Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # no AZURE_* variables, no ~/.azure/credentials, no Azure CLI, no managed identity: a clear error
    for name in list(os.environ):
        if name.startswith(('AZURE_', 'IDENTITY_', 'MSI_')):
            monkeypatch.delenv(name)
    monkeypatch.setenv('HOME', str(workdir))
    monkeypatch.setenv('PATH', os.path.dirname(sys.executable) + os.pathsep + '/usr/bin:/bin')
    disk = make_disk(workdir / 'disk.qcow2', 'qcow2', 8 * MIB, [])
    result = run_module(MODULE, dict(src=str(disk), storage_account=azurite.account, blob_endpoint=azurite.blob_endpoint,
                                     container=container.container_name), workdir)
    assert result['rc'] == 1, result
    assert 'no Azure credentials found' in result['msg']


def test_entra_id_signs_in_when_no_storage_credential_is_given(arm: t.Any, workdir: pathlib.Path) -> None:
    # A service principal of the ARM test server (its identity platform issues the storage token),
    # and an Azurite over TLS that takes bearer tokens.
    from arm_server import make_certificates  # pylint: disable=import-outside-toplevel
    (workdir / 'tls').mkdir()
    ca_file, cert_file, key_file = make_certificates(workdir / 'tls')
    bundle = workdir / 'ca-bundle.pem'
    bundle.write_text(pathlib.Path(arm.ca_file).read_text(encoding='utf-8') + ca_file.read_text(encoding='utf-8'), encoding='utf-8')
    env = dict(arm.env(), REQUESTS_CA_BUNDLE=str(bundle), HOME=str(workdir))
    with Azurite(workdir / 'azurite-tls', tls=(str(cert_file), str(key_file))) as azurite:
        service = BlobServiceClient.from_connection_string(azurite.connection_string, connection_verify=str(bundle))
        container = service.create_container('vhds')
        disk = make_disk(workdir / 'disk.qcow2', 'qcow2', 8 * MIB, [(0xb1, MIB, 8192)])
        args = dict(src=str(disk), storage_account=azurite.account, blob_endpoint=azurite.blob_endpoint,
                    container='vhds', tmpdir=str(workdir / 'work'))
        result = run_module(MODULE, args, workdir, env=env)
        assert result['rc'] == 0 and result['changed'], result
        assert result['bytes_sent'] == 8192 + 512
        assert_blob_is_fixed_vhd(container.get_blob_client('disk.vhd'), expected_data(disk, workdir), result)
        tokens = [r for r in arm.requests if r.method == 'POST' and r.path.endswith('/oauth2/v2.0/token')]
        assert tokens and all(r.status == 200 for r in tokens)

        refused = run_module(MODULE, dict(args, blob='other.vhd'), workdir, env=dict(env, AZURE_SECRET='not-the-secret'))
        assert refused['rc'] == 1, refused
        assert 'signing in to Microsoft Entra ID failed' in refused['msg'] and 'AADSTS7000215' in refused['msg']
        assert [b.name for b in container.list_blobs()] == ['disk.vhd']


# -- check mode, absent --------------------------------------------------------------------------

def test_check_mode_creates_nothing(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    disk = make_disk(workdir / 'disk.vmdk', 'vmdk', 16 * MIB, [(0x91, 2 * MIB, MIB)])
    args = key_args(azurite, container, disk, workdir, _ansible_check_mode=True, _ansible_diff=True)
    result = run_module(MODULE, args, workdir)
    assert result['rc'] == 0 and result['changed'], result
    assert result['bytes_sent'] == MIB + 512 and result['chunks_sent'] == 2
    assert result['converted'] and 'would create' in result['msg']
    assert result['diff']['before'] == {} and result['diff']['after']['state'] == 'complete'
    assert blob_names(container) == []
    assert not os.listdir(workdir / 'work')
    # the real run sends what check mode said
    done = run_module(MODULE, dict(args, _ansible_check_mode=False), workdir)
    assert done['rc'] == 0, done
    assert (done['bytes_sent'], done['chunks_sent'], done['sha256']) == (result['bytes_sent'], result['chunks_sent'], result['sha256'])


def test_absent_deletes_the_blob(azurite: Azurite, container: t.Any, workdir: pathlib.Path) -> None:
    disk = make_disk(workdir / 'gone.qcow2', 'qcow2', 8 * MIB, [(0xa1, 0, 4096)])
    assert run_module(MODULE, key_args(azurite, container, disk, workdir), workdir)['rc'] == 0
    args = dict(credential_args('key', azurite, container), container=container.container_name, blob='gone.vhd', state='absent')
    predicted = run_module(MODULE, dict(args, _ansible_check_mode=True), workdir)
    assert predicted['changed'] and blob_names(container) == ['gone.vhd'], predicted
    deleted = run_module(MODULE, args, workdir)
    assert deleted['rc'] == 0 and deleted['changed'], deleted
    assert blob_names(container) == []
    again = run_module(MODULE, args, workdir)
    assert again['rc'] == 0 and not again['changed'], again
