# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""linux_residue, the whole module on a small hand-made offline root."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.imageprep.vm.plugins.module_utils import _residue as residue
from ansible_collections.imageprep.vm.plugins.module_utils._residue import Item
from ansible_collections.imageprep.vm.plugins.module_utils._rootfs import RootFS
from ansible_collections.imageprep.vm.plugins.modules import linux_residue

OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
PASSWD = ('root:x:0:0:root:/root:/bin/bash\n'
          'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n'
          'azureadmin:x:1000:1000:Ubuntu:/home/azureadmin:/bin/bash\n'
          'produser:x:1001:1001::/home/produser:/bin/bash\n')
USED = {
    '/etc/os-release': OS_RELEASE,
    '/etc/passwd': PASSWD,
    '/etc/shadow': 'root:*:19000:0:99999:7:::\nazureadmin:!:20000:0:99999:7:::\nproduser:$6$x$y:20000:0:99999:7:::\n',
    '/etc/group': 'root:x:0:\nsudo:x:27:azureadmin\nazureadmin:x:1000:\nproduser:x:1001:\n',
    '/etc/sudoers.d/90-cloud-init-users': '# Created by cloud-init v. 22.4.2\n\n# User rules for azureadmin\nazureadmin ALL=(ALL) NOPASSWD:ALL\n',
    '/etc/hostname': 'web-prod-01\n',
    '/etc/hosts': '127.0.1.1 web-prod-01.contoso.internal web-prod-01\n127.0.0.1 localhost\n',
    '/etc/machine-id': 'd9e984c3d26147e4b10833fd2a4f3d1a\n',
    '/etc/ssh/ssh_host_ed25519_key.pub': 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHostKeyHostKeyHostKeyHostKeyHostKeyHost root@web-prod-01\n',
    '/etc/ssh/sshd_config': 'PermitRootLogin no\n',
    '/home/azureadmin/.ssh/authorized_keys': 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorOperatorOperatorOperatorOperat ops\n',
    '/home/produser/.bash_history': 'mysql -u root -pS3cret appdb\n',
    '/root/.bash_history': 'cat /etc/shadow\n',
    '/var/log/syslog': '2025-11-22T09:00:00+00:00 web-prod-01 sshd[812]: Accepted publickey for azureadmin\n',
    '/var/log/syslog.1': 'older\n',
    '/var/lib/dhcp/dhclient.eth0.leases': 'lease {\n  fixed-address 10.1.0.4;\n}\n',
    '/tmp/appdb.sql': 'dump\n',
    '/srv/app/config.yml': 'port: 8080\n',
}
KEPT = ('/etc/os-release', '/etc/passwd', '/etc/shadow', '/etc/group', '/etc/hostname', '/etc/hosts', '/etc/machine-id',
        '/etc/ssh/sshd_config', '/var/log/syslog', '/srv/app/config.yml')


def make_root(base, files=None) -> str:
    for path, data in (USED if files is None else files).items():
        host = os.path.join(str(base), path.lstrip('/'))
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, 'w', encoding='utf-8') as handle:
            handle.write(data)
    return str(base)


def snapshot(root: str) -> dict[str, str]:
    """Every path under ROOT with its kind and the sha256 of regular files."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            host = os.path.join(directory, name)
            if os.path.islink(host):
                found[host[len(root):]] = 'link ' + os.readlink(host)
            elif os.path.isdir(host):
                found[host[len(root):]] = 'dir'
            else:
                with open(host, 'rb') as handle:
                    found[host[len(root):]] = hashlib.sha256(handle.read()).hexdigest()
    return found


def run_module(args, capsys):
    """Run main() with ARGS and return its JSON result."""
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            linux_residue.main()
    return json.loads(capsys.readouterr().out)


def paths(result) -> set[str]:
    return {entry['path'] for entries in result['removed'].values() for entry in entries}


def test_check_mode_reports_the_items_and_changes_nothing(tmp_path, capsys):
    root = make_root(tmp_path)
    before = snapshot(root)
    result = run_module({'root': root, '_ansible_check_mode': True}, capsys)
    assert result['changed'] is True
    assert 'would be removed or reset' in result['msg']
    assert result['tools'] == [] and result['deferred'] == [] and result['final_pass'] is False
    assert (result['os_family'], result['distribution']) == ('debian', 'debian')
    assert {'/etc/ssh/ssh_host_ed25519_key.pub', '/home/azureadmin', '/etc/passwd', '/etc/sudoers.d/90-cloud-init-users',
            '/etc/hostname', '/etc/hosts', '/etc/machine-id', '/home/produser/.bash_history', '/root/.bash_history',
            '/var/log/syslog', '/var/log/syslog.1', '/var/lib/dhcp/dhclient.eth0.leases', '/tmp/appdb.sql'} <= paths(result)
    assert {'path': '/etc/machine-id', 'action': 'first_boot', 'detail': '(empty)'} in result['removed']['machine_id']
    assert {'path': '/var/log/syslog', 'action': 'truncate'} in result['removed']['logs']
    assert snapshot(root) == before


def test_apply_then_second_run_is_unchanged(tmp_path, capsys):
    root = make_root(tmp_path)
    first = run_module({'root': root}, capsys)
    assert first['changed'] is True
    after = snapshot(root)
    for path in KEPT:
        assert path in after, path
    for path in ('/etc/ssh/ssh_host_ed25519_key.pub', '/home/azureadmin', '/etc/sudoers.d/90-cloud-init-users',
                 '/root/.bash_history', '/home/produser/.bash_history', '/var/log/syslog.1', '/var/lib/dhcp/dhclient.eth0.leases',
                 '/tmp/appdb.sql'):
        assert path not in after, path
    assert '/home/produser' in after and '/tmp' in after
    assert 'azureadmin' not in (tmp_path / 'etc/passwd').read_text()
    assert 'produser' in (tmp_path / 'etc/passwd').read_text()
    assert (tmp_path / 'etc/hostname').read_text() == 'localhost\n'
    assert (tmp_path / 'etc/hosts').read_text() == '127.0.0.1 localhost\n'
    assert (tmp_path / 'var/log/syslog').read_text() == ''
    assert (tmp_path / 'etc/machine-id').read_text() == ''
    assert (tmp_path / 'srv/app/config.yml').read_text() == 'port: 8080\n'
    assert paths(first) >= {'/etc/passwd', '/var/log/syslog'}

    second = run_module({'root': root}, capsys)
    assert second['changed'] is False
    assert second['removed'] == {}
    assert snapshot(root) == after

    check = run_module({'root': root, '_ansible_check_mode': True}, capsys)
    assert check['changed'] is False and check['msg'] == 'no residue to remove'


def test_diff_is_the_paths_per_category_before_and_after(tmp_path, capsys):
    root = make_root(tmp_path)
    result = run_module({'root': root, '_ansible_diff': True, '_ansible_check_mode': True}, capsys)
    before, after = result['diff']['before'], result['diff']['after']
    assert set(before) == set(result['removed'])
    assert '/etc/ssh/ssh_host_ed25519_key.pub' in before['ssh_host_keys']
    assert after == {category: [] for category in before}
    applied = run_module({'root': root, '_ansible_diff': True}, capsys)
    assert applied['diff'] == result['diff']
    again = run_module({'root': root, '_ansible_diff': True}, capsys)
    assert again['diff'] == {'before': {}, 'after': {}}


def test_categories_and_keep_users_limit_the_work(tmp_path, capsys):
    root = make_root(tmp_path)
    result = run_module({'root': root, 'categories': ['shell_history', 'provisioning_account'], 'keep_users': ['produser']}, capsys)
    assert set(result['removed']) == {'shell_history', 'provisioning_account'}
    assert not (tmp_path / 'root/.bash_history').exists()
    assert (tmp_path / 'home/produser/.bash_history').exists()
    assert not (tmp_path / 'home/azureadmin').exists()
    assert (tmp_path / 'etc/ssh/ssh_host_ed25519_key.pub').exists()
    assert (tmp_path / 'var/log/syslog.1').exists()


@pytest.mark.parametrize('args, message', [
    ({'categories': ['logs', 'ssh_hostkeys']}, 'unknown category ssh_hostkeys'),
    ({'exclude': ['histories', 'tmp']}, 'unknown categories histories, tmp'),
    ({'keep_users': ['azureadmin', 'produser'], 'remove_users': ['produser']}, 'produser cannot be in both keep_users and remove_users'),
    ({'remove_users': ['root']}, 'refusing to remove root: it is a system account (UID 0)'),
    ({'remove_users': ['daemon']}, 'refusing to remove daemon: it is a system account (UID 1)'),
    ({'state': 'present'}, 'value of state must be one of: absent'),
])
def test_bad_input_fails_and_removes_nothing(tmp_path, capsys, args, message):
    root = make_root(tmp_path)
    before = snapshot(root)
    result = run_module(dict(args, root=root), capsys)
    assert result['failed'] is True
    assert message in result['msg']
    assert snapshot(root) == before


@pytest.mark.parametrize('root, message', [
    ('relative/root', 'root must be an absolute path'),
    ('EMPTY', 'is not a Linux root: it has neither /etc/os-release nor /etc/passwd'),
    ('MISSING', 'is not a directory'),
])
def test_bad_roots(tmp_path, capsys, root, message):
    (tmp_path / 'empty/etc').mkdir(parents=True)
    root = root.replace('EMPTY', str(tmp_path / 'empty')).replace('MISSING', str(tmp_path / 'missing'))
    result = run_module({'root': root}, capsys)
    assert result['failed'] is True and message in result['msg']
    assert os.listdir(tmp_path / 'empty') == ['etc']


def deny_writes_to(monkeypatch, directory: str) -> None:
    """Make os.access (as the module sees it) say DIRECTORY is not writable, as it would for a user that is not root."""
    real = os.access

    def access(path, mode, **kwargs):
        if os.path.realpath(path) == os.path.realpath(directory) and mode & os.W_OK:
            return False
        return real(path, mode, **kwargs)
    monkeypatch.setattr(linux_residue.os, 'access', access)


def test_without_write_permission_it_fails_before_changing_anything(tmp_path, capsys, monkeypatch):
    root = make_root(tmp_path)
    before = snapshot(root)
    deny_writes_to(monkeypatch, str(tmp_path / 'etc'))
    result = run_module({'root': root}, capsys)
    assert result['failed'] is True
    assert f'cannot write to {tmp_path}/etc' in result['msg'] and 'become: true' in result['msg']
    assert snapshot(root) == before


def test_without_write_permission_check_mode_still_reports(tmp_path, capsys, monkeypatch):
    root = make_root(tmp_path)
    deny_writes_to(monkeypatch, str(tmp_path / 'etc'))
    result = run_module({'root': root, '_ansible_check_mode': True}, capsys)
    assert result['changed'] is True and 'failed' not in result


def test_defer_users_on_a_running_system_needs_final_pass(tmp_path, capsys, monkeypatch):
    # the module only defers on the running system; stand in for one where the module looks
    root = make_root(tmp_path)
    before = snapshot(root)
    monkeypatch.setattr(linux_residue, 'is_running_system', lambda fs: True)
    result = run_module({'root': root, 'remove_users': ['produser'], 'defer_users': ['produser']}, capsys)
    assert result['failed'] is True and 'defer_users needs final_pass=true' in result['msg']
    assert snapshot(root) == before


def test_defer_users_on_an_offline_root_are_handled_at_once(tmp_path, capsys):
    root = make_root(tmp_path)
    result = run_module({'root': root, 'remove_users': ['produser'], 'defer_users': ['produser'], 'final_pass': True}, capsys)
    assert result['changed'] is True and result['deferred'] == [] and result['final_pass'] is False
    assert not (tmp_path / 'home/produser').exists()
    assert not (tmp_path / 'etc/systemd/system/imageprep-final-pass.service').exists()


def test_two_accounts_removed_together_leave_no_entries(tmp_path, capsys):
    # azureadmin is the provisioning account (cloud-init's sudoers file names it), produser is asked for
    root = make_root(tmp_path)
    first = run_module({'root': root, 'categories': ['provisioning_account'], 'remove_users': ['produser']}, capsys)
    assert first['changed'] is True
    # `skipped` is Ansible's (a task that did not run): the tools that could not run have their own key
    assert 'skipped' not in first and first['tools_not_run'] == []
    assert not (tmp_path / 'home/azureadmin').exists() and not (tmp_path / 'home/produser').exists()
    for name in ('passwd', 'shadow', 'group'):
        text = (tmp_path / 'etc' / name).read_text()
        assert 'azureadmin' not in text and 'produser' not in text, name
    second = run_module({'root': root, 'categories': ['provisioning_account'], 'remove_users': ['produser']}, capsys)
    assert second['changed'] is False


def test_an_offline_root_is_not_the_running_system(tmp_path):
    assert linux_residue.is_running_system(RootFS(make_root(tmp_path), mounts=[])) is False


def test_group_lists_items_by_category():
    items = [Item('logs', '/var/log/syslog', 'truncate'), Item('logs', '/var/log/syslog.1', 'delete'),
             Item('machine_id', '/etc/machine-id', 'first_boot', 'uninitialized')]
    assert linux_residue.group(items) == {
        'logs': [{'path': '/var/log/syslog', 'action': 'truncate'}, {'path': '/var/log/syslog.1', 'action': 'delete'}],
        'machine_id': [{'path': '/etc/machine-id', 'action': 'first_boot', 'detail': 'uninitialized'}],
    }


def test_the_final_pass_removes_a_deferred_account_from_every_sudoers_drop_in(tmp_path):
    # a provisioning account with its own drop-in (as image builders write them) runs the play: its
    # rules go at shutdown, and a drop-in left without a rule goes with them, as the live removal does it
    root = make_root(tmp_path)
    (tmp_path / 'etc/sudoers.d').mkdir(exist_ok=True)
    (tmp_path / 'etc/sudoers.d/90-produser').write_text('produser ALL=(ALL) NOPASSWD:ALL\n')
    (tmp_path / 'etc/sudoers.d/50-ops').write_text('# operators\nproduser ALL=(ALL) ALL\nopsuser ALL=(ALL) ALL\n')
    files = residue.final_pass_files(residue.Target(RootFS(root, mounts=[])), ['produser'], ['produser'])
    script = files[residue.FINAL_PASS_SCRIPT].decode()
    sudoers_lines = [line for line in script.splitlines() if '/etc/sudoers.d/' in line]
    assert any('90-produser' in line for line in sudoers_lines) and any('50-ops' in line for line in sudoers_lines)
    # run those lines against this root (the script itself runs in the guest, on /)
    subprocess.run(['sh', '-c', '\n'.join(line.replace("'/etc/", f"'{tmp_path}/etc/") for line in sudoers_lines)], check=True)
    assert not (tmp_path / 'etc/sudoers.d/90-produser').exists()
    assert (tmp_path / 'etc/sudoers.d/50-ops').read_text() == '# operators\nopsuser ALL=(ALL) ALL\n'
