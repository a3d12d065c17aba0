# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""linux_residue_info, the whole module on a small hand-made offline root."""
from __future__ import annotations

import json
import os

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.imageprep.vm.plugins.module_utils import _residue as residue
from ansible_collections.imageprep.vm.plugins.modules import linux_residue_info

OS_RELEASE = 'NAME="Rocky Linux"\nVERSION="9.4 (Blue Onyx)"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n'
PASSWD = ('root:x:0:0:root:/root:/bin/bash\n'
          'azureadmin:x:1000:1000::/home/azureadmin:/bin/bash\n'
          'produser:x:1001:1001::/home/produser:/bin/bash\n')
CLEAN = {
    '/etc/os-release': OS_RELEASE,
    '/etc/passwd': PASSWD,
    '/etc/hostname': 'localhost\n',
    '/etc/hosts': '127.0.0.1 localhost localhost.localdomain\n',
    '/etc/machine-id': '',
    '/var/log/messages': '',
    '/home/produser/.profile': '# ~/.profile\n',
}
DIRTY = {
    '/etc/hostname': 'web-prod-01\n',
    '/etc/ssh/ssh_host_ecdsa_key.pub': 'ecdsa-sha2-nistp256 AAAAE2VjZHNh root@web-prod-01\n',
    '/home/produser/.bash_history': 'sudo -i\n',
    '/home/produser/.ssh/authorized_keys': 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperator ops\n',
    '/var/log/messages': 'Nov 22 09:00:00 web-prod-01 systemd[1]: Started Session 1 of User produser.\n',
    '/var/log/secure': 'Nov 22 09:00:01 web-prod-01 sshd[812]: Accepted publickey for produser\n',
    '/tmp/appdb.sql': 'dump\n',
}
MARKER = {'categories': ['logs', 'tmp_files', 'backup_files'], 'users': ['produser'], 'remove_users': []}


def make_root(base, files) -> str:
    for path, data in files.items():
        host = os.path.join(str(base), path.lstrip('/'))
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, 'w', encoding='utf-8') as handle:
            handle.write(data)
    return str(base)


def run_module(args, capsys):
    """Run main() with ARGS and return its JSON result."""
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            linux_residue_info.main()
    return json.loads(capsys.readouterr().out)


def test_a_clean_root_is_clean(tmp_path, capsys):
    result = run_module({'root': make_root(tmp_path, CLEAN)}, capsys)
    assert result['changed'] is False
    assert result['clean'] is True
    assert result['findings'] == [] and result['deferred_findings'] == [] and result['counts'] == {}
    assert result['categories'] == residue.select((), ())
    assert (result['os_family'], result['distribution'], result['final_pass_pending']) == ('redhat', 'rocky', False)


def test_a_used_root_is_not_clean(tmp_path, capsys):
    result = run_module({'root': make_root(tmp_path, dict(CLEAN, **DIRTY))}, capsys)
    assert result['changed'] is False and result['clean'] is False
    found = {(f['category'], f['path']) for f in result['findings']}
    assert found >= {
        ('hostname', '/etc/hostname'),
        ('ssh_host_keys', '/etc/ssh/ssh_host_ecdsa_key.pub'),
        ('shell_history', '/home/produser/.bash_history'),
        ('user_ssh_keys', '/home/produser/.ssh/authorized_keys'),
        ('logs', '/var/log/messages'),
        ('logs', '/var/log/secure'),
        ('tmp_files', '/tmp/appdb.sql'),
    }
    assert len(found) == len(result['findings']), 'one finding per category and path'
    for finding in result['findings']:
        assert finding['severity'] == residue.SEVERITY[finding['category']]
        assert finding['found']
    counts: dict = {}
    for finding in result['findings']:
        counts[finding['category']] = counts.get(finding['category'], 0) + 1
    assert result['counts'] == counts and result['counts']['logs'] == 2
    order = [f['category'] for f in result['findings']]
    assert order == sorted(order, key=list(residue.BY_NAME).index), 'findings come in catalogue order'


@pytest.mark.parametrize('args, category_counts', [
    ({'categories': ['logs']}, {'logs': 2}),
    ({'exclude': ['logs', 'tmp_files', 'hostname', 'ssh_host_keys']}, {'user_ssh_keys': 1, 'shell_history': 1}),
    ({'keep_users': ['produser'], 'categories': ['user_ssh_keys', 'shell_history']}, {}),
])
def test_categories_exclude_and_keep_users(tmp_path, capsys, args, category_counts):
    result = run_module(dict(args, root=make_root(tmp_path, dict(CLEAN, **DIRTY))), capsys)
    assert result['counts'] == category_counts
    assert result['clean'] is (not category_counts)


def test_remove_users_must_be_gone(tmp_path, capsys):
    result = run_module({'root': make_root(tmp_path, CLEAN), 'categories': ['provisioning_account']}, capsys)
    assert result['clean'] is True
    (tmp_path / 'etc/sudoers.d').mkdir()
    (tmp_path / 'etc/sudoers.d/90-cloud-init-users').write_text('# User rules for azureadmin\nazureadmin ALL=(ALL) NOPASSWD:ALL\n')
    result = run_module({'root': str(tmp_path), 'categories': ['provisioning_account']}, capsys)
    assert result['clean'] is False
    assert {(f['category'], f['path'], f['severity']) for f in result['findings']} == {
        ('provisioning_account', '/etc/passwd', 'secret'), ('provisioning_account', '/etc/sudoers.d/90-cloud-init-users', 'secret')}
    assert all('azureadmin' in f['found'] for f in result['findings'])


def write_final_pass(base, unit: bool) -> None:
    marker = os.path.join(str(base), residue.FINAL_PASS_MARKER.lstrip('/'))
    os.makedirs(os.path.dirname(marker), exist_ok=True)
    with open(marker, 'w', encoding='utf-8') as handle:
        json.dump(MARKER, handle)
    if unit:
        make_root(base, {residue.FINAL_PASS_UNIT: '[Unit]\nDescription=imageprep.vm final deprovisioning pass at shutdown\n'})


def test_pending_final_pass_defers_what_it_removes(tmp_path, capsys):
    make_root(tmp_path, dict(CLEAN, **{k: v for k, v in DIRTY.items() if k.startswith(('/var/log/', '/tmp/', '/home/'))}))
    write_final_pass(tmp_path, unit=True)
    result = run_module({'root': str(tmp_path)}, capsys)
    assert result['final_pass_pending'] is True
    assert result['clean'] is True and result['findings'] == [] and result['counts'] == {}
    deferred = {(f['category'], f['path']) for f in result['deferred_findings']}
    assert deferred == {('logs', '/var/log/messages'), ('logs', '/var/log/secure'), ('tmp_files', '/tmp/appdb.sql'),
                        ('shell_history', '/home/produser/.bash_history'),
                        ('user_ssh_keys', '/home/produser/.ssh/authorized_keys')}
    assert all(f['severity'] == residue.SEVERITY[f['category']] for f in result['deferred_findings'])


def test_pending_final_pass_does_not_hide_other_residue(tmp_path, capsys):
    make_root(tmp_path, dict(CLEAN, **DIRTY))
    write_final_pass(tmp_path, unit=True)
    result = run_module({'root': str(tmp_path)}, capsys)
    assert result['clean'] is False
    assert {(f['category'], f['path']) for f in result['findings']} == {
        ('hostname', '/etc/hostname'), ('ssh_host_keys', '/etc/ssh/ssh_host_ecdsa_key.pub')}
    assert result['counts'] == {'hostname': 1, 'ssh_host_keys': 1}


def test_a_marker_without_its_unit_defers_nothing(tmp_path, capsys):
    make_root(tmp_path, dict(CLEAN, **{'/var/log/messages': DIRTY['/var/log/messages']}))
    write_final_pass(tmp_path, unit=False)
    result = run_module({'root': str(tmp_path)}, capsys)
    assert result['final_pass_pending'] is False
    assert result['deferred_findings'] == []
    assert result['clean'] is False and result['counts'] == {'logs': 1}


@pytest.mark.parametrize('args, message', [
    ({'categories': ['machine-id']}, 'unknown category machine-id'),
    ({'root': 'relative'}, 'root must be an absolute path'),
    ({'root': 'EMPTY'}, 'is not a Linux root'),
])
def test_bad_input(tmp_path, capsys, args, message):
    (tmp_path / 'empty').mkdir()
    make_root(tmp_path / 'root', CLEAN)
    args = dict({'root': str(tmp_path / 'root')}, **args)
    args['root'] = args['root'].replace('EMPTY', str(tmp_path / 'empty'))
    result = run_module(args, capsys)
    assert result['failed'] is True and message in result['msg']


def test_identity_is_returned(tmp_path, capsys):
    identity_files = {'/etc/machine-id': '4c1f0b5e8a9d4e2f9b3c7a1d5e6f8a90\n', '/etc/login.defs': 'UID_MIN 1001\n'}
    root = make_root(tmp_path, dict(CLEAN, **DIRTY, **identity_files))
    identity = run_module({'root': root}, capsys)['identity']
    assert identity['machine_id'] == '4c1f0b5e8a9d4e2f9b3c7a1d5e6f8a90'
    assert identity['hostname'] == 'web-prod-01'
    # UID_MIN 1001 leaves azureadmin (1000) out
    assert identity['accounts'] == [{'name': 'produser', 'uid': 1001, 'home': '/home/produser', 'shell': '/bin/bash'}]
    # the planted .pub holds no real key blob (its type name does not match): left out
    assert identity['ssh_host_keys'] == []


@pytest.mark.parametrize('args, message', [
    ({'root': '/', 'image': '/srv/disk.qcow2'}, 'parameters are mutually exclusive: root|image'),
    ({'tmpdir': '/var/tmp'}, 'missing parameter(s) required by \'tmpdir\': image'),
    ({'image': '/nonexistent/disk.qcow2'}, 'image /nonexistent/disk.qcow2 does not exist'),
    ({'image': 'TMP'}, 'is a directory; audit a directory with root, not image'),
    ({'image': '/nonexistent/disk.qcow2', 'categories': ['bogus']}, 'unknown category bogus'),
])
def test_bad_image_input(tmp_path, capsys, args, message):
    args = {k: (str(tmp_path) if v == 'TMP' else v) for k, v in args.items()}
    result = run_module(args, capsys)
    assert result['failed'] is True and message in result['msg'], result['msg']
