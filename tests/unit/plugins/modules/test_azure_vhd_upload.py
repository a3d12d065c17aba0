# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""azure_vhd_upload decisions: what happens to an existing blob, names, endpoints, leftovers of killed runs."""
from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.imageprep.vm.plugins.modules import azure_vhd_upload as module

SIZE = 64 * 1024 * 1024 + 512
SHA = 'a' * 64


def props(size=SIZE, sha=SHA, state='complete', blob_type='PageBlob', meta_size=None, **extra):
    metadata = {} if sha is None else {module.META_SHA256: sha, module.META_SIZE: str(meta_size or size), module.META_STATE: state}
    metadata.update(extra)
    return {'blob_type': blob_type, 'size': size, 'metadata': metadata, 'etag': '"x"', 'content_md5': None,
            'content_type': 'application/octet-stream'}


@pytest.mark.parametrize('existing, force, action', [
    (None, False, 'create'),
    (props(), False, 'complete'),
    (props(state='uploading'), False, 'resume'),
    (props(state='uploading', other='kept'), True, 'resume'),
    (props(sha='b' * 64), True, 'replace'),
    (props(size=SIZE + 1024 * 1024), True, 'replace'),
    (props(sha=None), True, 'replace'),
    (props(blob_type='BlockBlob'), True, 'replace'),
])
def test_decide(existing, force, action):
    assert module.decide(existing, SIZE, SHA, force)[0] == action


@pytest.mark.parametrize('existing, said', [
    (props(sha='b' * 64), 'another VHD'),
    (props(size=SIZE + 1024 * 1024), 'another VHD'),
    (props(meta_size=SIZE + 512), 'another VHD'),
    (props(state='broken'), 'did not upload'),
    (props(sha=None), 'did not upload'),
    (props(blob_type='BlockBlob'), 'a BlockBlob'),
])
def test_another_blob_is_not_touched_without_force(existing, said):
    with pytest.raises(module.VhdUploadError) as caught:
        module.decide(existing, SIZE, SHA, False)
    assert said in str(caught.value)
    assert 'nothing was changed: set force: true' in str(caught.value)


@pytest.mark.parametrize('src, name', [
    ('/images/disk.qcow2', 'disk.vhd'),
    ('/images/disk.vhd', 'disk.vhd'),
    ('/images/disk', 'disk.vhd'),
    ('/images/web.1.0.vmdk', 'web.1.0.vhd'),
    ('/images/.hidden', '.hidden.vhd'),
])
def test_default_blob_name(src, name):
    assert module.default_blob_name(src) == name


def test_account_url():
    params = {'storage_account': 'images', 'blob_endpoint': None, 'cloud_environment': None}
    assert module.account_url(params, 'core.windows.net') == 'https://images.blob.core.windows.net'
    assert module.account_url(params, 'core.chinacloudapi.cn') == 'https://images.blob.core.chinacloudapi.cn'
    assert module.account_url(dict(params, blob_endpoint='http://127.0.0.1:10000/devstoreaccount1/'), None) == \
        'http://127.0.0.1:10000/devstoreaccount1'
    with pytest.raises(module.VhdUploadError, match='give blob_endpoint'):
        module.account_url(dict(params, cloud_environment='https://stack.example'), None)


@pytest.mark.parametrize('given, source', [
    ({}, 'azure_ad'),
    ({'sas_token': 'sv=x'}, 'sas_token'),
    ({'storage_account_key': 'k'}, 'storage_account_key'),
    ({'connection_string': 'c'}, 'connection_string'),
])
def test_credential_source(given, source):
    params = {'connection_string': None, 'storage_account_key': None, 'sas_token': None}
    params.update(given)
    assert module.credential_source(params) == source


def test_stale_work_dirs_are_those_of_dead_processes():
    names = ['azure-vhd-upload-100-abc', 'azure-vhd-upload-200-def', 'azure-vhd-upload-x-1', 'other-100-abc', 'azure-vhd-upload-300-']
    assert module.stale_work_dirs(names, lambda pid: pid == 200) == ['azure-vhd-upload-100-abc', 'azure-vhd-upload-300-']


def test_process_alive():
    assert module.process_alive(os.getpid())
    finished = subprocess.Popen(['true'])  # pylint: disable=consider-using-with  # waited for at once
    finished.wait()
    assert not module.process_alive(finished.pid)


def test_format_ranges():
    assert module.format_ranges([(0, 512), (1024, 2048)]) == '0-511, 1024-2047'
    assert module.format_ranges([(i * 1024, i * 1024 + 512) for i in range(12)], most=2) == '0-511, 1024-1535 and 10 more'
