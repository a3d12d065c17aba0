# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""local_image decisions, and the whole module on real small disks."""
from __future__ import annotations

import json
import subprocess

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.imageprep.vm.plugins.modules import local_image


@pytest.mark.parametrize('disks, expected', [
    (['/a'], [('/a', None, 'os')]),
    (['/a', '/b', '/c'], [('/a', None, 'os'), ('/b', 0, 'data'), ('/c', 1, 'data')]),
    (['/a', {'path': '/b', 'lun': 3}, {'path': '/c', 'lun': '1'}], [('/a', None, 'os'), ('/b', 3, 'data'), ('/c', 1, 'data')]),
])
def test_disk_items(disks, expected):
    assert [(d['path'], d['lun'], d['role']) for d in local_image.disk_items(disks)] == expected


@pytest.mark.parametrize('disks, message', [
    ([], 'at least the OS disk'),
    ([{'path': '/a', 'lun': 0}], 'takes no lun'),
    (['/a', {'path': '/b', 'lun': 0}, '/c'], r'disks\[2\] have no lun while others set one'),
    (['/a', {'path': '/b', 'lun': 64}], 'out of range'),
    (['/a', {'path': '/b', 'lun': 1}, {'path': '/c', 'lun': 1}], 'unique'),
    (['/a', {'path': '/b', 'lun': 'x'}], 'must be an integer'),
    (['/a', {'file': '/b'}], 'dictionary with path and lun'),
    (['/a', 7], 'must be a path'),
])
def test_bad_disk_items(disks, message):
    with pytest.raises(local_image.LocalImageError, match=message):
        local_image.disk_items(disks)


@pytest.mark.parametrize('checksum, ok', [
    ('sha256:' + 'A' * 64, True), ('sha256:' + 'a' * 63, False), ('md5:' + 'a' * 32, False), ('a' * 64, False), ('sha256:' + 'g' * 64, False),
])
def test_checksum_syntax(checksum, ok):
    if ok:
        assert local_image.parse_checksum(checksum) == 'a' * 64
    else:
        with pytest.raises(local_image.LocalImageError):
            local_image.parse_checksum(checksum)


BASE = {'name': 'web', 'version': '1.0.0', 'kind': 'os', 'os_type': 'linux', 'os_state': 'generalized', 'firmware': 'bios',
        'architecture': 'x86_64', 'format': 'qcow2', 'compression': 'none', 'fingerprint': 'f', 'description': '', 'tags': {},
        'provenance': {}}


@pytest.mark.parametrize('change, force, action', [
    ({}, False, 'unchanged'),
    ({'tags': {'a': 'b'}}, False, 'update'),
    ({'description': 'x'}, False, 'update'),
    ({'fingerprint': 'g'}, True, 'replace'),
    ({'os_state': 'specialized'}, True, 'replace'),
])
def test_decide(change, force, action):
    assert local_image.decide(dict(BASE), dict(BASE, **change), force)[0] == action


@pytest.mark.parametrize('change', [{'fingerprint': 'g'}, {'format': 'raw'}, {'kind': 'vm'}])
def test_immutable_without_force(change):
    with pytest.raises(local_image.LocalImageError, match='immutable'):
        local_image.decide(dict(BASE), dict(BASE, **change), False)


def test_new_version_is_created():
    assert local_image.decide(None, dict(BASE), False)[0] == 'create'


@pytest.mark.parametrize('versions, keep, protect, doomed', [
    (['1.0.0', '1.0.1', '1.0.2'], 2, '1.0.2', ['1.0.0']),
    (['1.0.9', '1.0.10', '1.0.11'], 1, '1.0.11', ['1.0.9', '1.0.10']),
    (['1.0.0'], 3, '1.0.0', []),
    (['1.0.0', '2.0.0'], None, '2.0.0', []),
    (['1.0.0', '2.0.0', '1.5.0'], 1, '1.5.0', ['1.0.0']),  # a capture of an older version is never its own victim
])
def test_retention(versions, keep, protect, doomed):
    assert local_image.retention(versions, keep, protect) == doomed


def run_module(args, capsys):
    """Run main() with ARGS and return its JSON result."""
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            local_image.main()
    return json.loads(capsys.readouterr().out)


def test_module_captures_then_reports_no_change(tmp_path, capsys):
    disk = tmp_path / 'os.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(disk), '64M'], check=True)
    subprocess.run(['qemu-io', '-c', 'write -P 0x5a 0 1M', str(disk)], check=True, capture_output=True)
    args = {'name': 'unit', 'library': str(tmp_path / 'lib'), 'disks': [str(disk)]}
    first = run_module(args, capsys)
    second = run_module(args, capsys)
    assert first['changed'] and not second['changed']
    assert first['image']['version'] == '1.0.0'
    assert second['image'] == first['image']
    compared = subprocess.run(['qemu-img', 'compare', str(disk), first['image']['disks'][0]['path']], check=False)
    assert compared.returncode == 0


def test_module_fails_clearly_and_writes_nothing(tmp_path, capsys):
    result = run_module({'name': '../x', 'library': str(tmp_path / 'lib'), 'disks': ['/nonexistent']}, capsys)
    assert result['failed'] and 'not valid' in result['msg']
    assert not (tmp_path / 'lib').exists()


def test_a_disk_on_a_backing_chain_is_captured_whole_and_the_chain_is_watched(tmp_path, capsys):
    base = tmp_path / 'base.raw'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', str(base), '64M'], check=True)
    subprocess.run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x11 0 1M', str(base)], check=True, capture_output=True)
    top = tmp_path / 'vm.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', str(base), str(top)], check=True)
    subprocess.run(['qemu-io', '-c', 'write -P 0x22 2M 1M', str(top)], check=True, capture_output=True)
    args = {'name': 'chain', 'library': str(tmp_path / 'lib'), 'disks': [str(top)]}
    first = run_module(args, capsys)
    assert first['changed'], first
    captured = first['image']['disks'][0]['path']
    # one self-contained disk: the base's bytes and the overlay's, no backing file left
    info = json.loads(subprocess.run(['qemu-img', 'info', '--output=json', captured], check=True, capture_output=True,
                                     text=True).stdout)
    assert 'backing-filename' not in info
    assert subprocess.run(['qemu-img', 'compare', str(top), captured], check=False).returncode == 0
    assert first['image']['source']['backing_chains'] == {str(top): [str(base)]}
    # unchanged chain: no change; a write into the backing file alone is a new source
    assert not run_module(dict(args, version='auto'), capsys)['changed']
    subprocess.run(['qemu-io', '-f', 'raw', '-c', 'write -P 0x33 4M 1M', str(base)], check=True, capture_output=True)
    second = run_module(dict(args, version='auto'), capsys)
    assert second['changed'] and second['image']['version'] == '1.0.1'


def test_an_uploaded_file_with_a_backing_file_is_refused(tmp_path, capsys):
    base = tmp_path / 'base.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(base), '64M'], check=True)
    top = tmp_path / 'upload.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', str(base), str(top)], check=True)
    result = run_module({'name': 'upload', 'library': str(tmp_path / 'lib'), 'file': str(top)}, capsys)
    assert result['failed'] and 'has a backing file' in result['msg']
    assert not (tmp_path / 'lib' / 'upload').exists()
