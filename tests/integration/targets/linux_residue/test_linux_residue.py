# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""linux_residue and linux_residue_info on a real planted Debian 12 guest root.

Through the chroot connection the module runs inside the root, and the root's own cloud-init
and waagent run. Offline, the root is an ext4 disk image loop-mounted on this host and the
module runs here with ``root:``; the image's tools run through chroot. Either way: check ->
apply -> check -> apply, the audit is clean after, every planted item of a default category
is gone or reset, and nothing outside the items the module reports changed.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import socket
import subprocess
import tempfile
import typing as t

import ansible
import pytest

from conftest import Planted, playbook, read_results
from module_runs import run_module
from tree_listing import covered, listing

# Paths the vendor tools change that no catalogue item names, and why.
TOOL_WRITTEN = {
    # waagent -deprovision locks root's password when waagent.conf says Provisioning.DeleteRootPassword=y
    # (Debian's package does)
    '/etc/shadow': 'waagent locks the root password',
}
# Ansible's own working directory in the root (the chroot connection puts its temporary files there).
ANSIBLE_OWN = ('/root/.ansible',)
# A password the planter put in an operator's shell history (plant_used_vm.py).
SECRET = b"mysql -u app -p'Winter2025!' appdb"
# Categories that are off by default: what the planter put there must still be there.
OFF_BY_DEFAULT = ('cron_spool', 'root_password')


def item_paths(removed: dict[str, list[dict[str, str]]]) -> list[str]:
    """Paths of every item the module reported (vendor tool runs are not paths)."""
    return [entry['path'] for entries in removed.values() for entry in entries if entry['action'] not in ('run',)]


def assert_only_items_changed(before: dict, after: dict, items: list[str]) -> None:
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    unexplained = [p for p in changed if not covered(p, items) and p not in TOOL_WRITTEN and not covered(p, list(ANSIBLE_OWN))]
    assert unexplained == [], f'changed outside the reported items: {unexplained}'
    assert changed, 'nothing changed at all'


def assert_planted_residue_gone(root: pathlib.Path, manifest: list[dict[str, str]]) -> None:
    problems = []
    for entry in manifest:
        path = root / entry['path'].lstrip('/')
        present = os.path.lexists(path)
        if entry['category'] in OFF_BY_DEFAULT:
            if not present:
                problems.append(f'{entry["path"]}: {entry["category"]} is off by default but was removed')
            continue
        if entry['kind'] == 'content':
            if present and path.is_file() and entry['detail'].encode() in path.read_bytes():
                problems.append(f'{entry["path"]}: still holds {entry["detail"]!r}')
        elif entry['kind'] == 'file' and present and path.is_file() and path.stat().st_size == 0:
            continue  # truncated: logs keep their file
        elif present:
            problems.append(f'{entry["path"]}: still there ({entry["category"]})')
    assert problems == []


def test_chroot_quartet_removes_every_planted_item_and_nothing_else(planted: Planted) -> None:
    host_before = host_identity()
    before = listing(planted.root)
    results = planted.scratch / 'results.json'
    playbook('-i', f'{planted.root},', '-c', 'community.general.chroot', '-e', 'ansible_python_interpreter=/usr/bin/python3',
             '-e', f'__results={results}', 'quartet.yml')
    outcome = read_results(results)
    after = listing(planted.root)
    assert_only_items_changed(before, after, item_paths(outcome['apply_1']['removed']))
    assert_planted_residue_gone(planted.root, planted.manifest)
    tools = [run['command'] for run in outcome['apply_1']['tools']]
    # the root's own tools ran, isolated from this machine (waagent sets the kernel's host name)
    assert any(command.endswith('waagent -force -deprovision') for command in tools), tools
    assert any('cloud-init clean --logs --seed' in command for command in tools), tools
    assert all(command.startswith('unshare --uts --ipc --net') for command in tools), tools
    assert host_identity() == host_before
    # first boot: systemd 252 has first-boot semantics; D-Bus reads the same id
    assert (planted.root / 'etc/machine-id').read_text() == 'uninitialized\n'
    assert os.readlink(planted.root / 'var/lib/dbus/machine-id') == '/etc/machine-id'
    # waagent deletes /etc/resolv.conf when it deprovisions; the module keeps it
    assert (planted.root / 'etc/resolv.conf').exists()
    # the provisioning account is gone, with its sudo rights; the operator account stays
    passwd = (planted.root / 'etc/passwd').read_text()
    assert 'azureadmin:' not in passwd and 'produser:' in passwd
    assert not (planted.root / 'etc/sudoers.d/90-cloud-init-users').exists()
    assert not (planted.root / 'etc/sudoers.d/waagent').exists()
    visudo = subprocess.run(['chroot', str(planted.root), 'visudo', '-c'], capture_output=True, text=True, check=False)
    assert visudo.returncode == 0, visudo.stdout + visudo.stderr


def host_identity() -> dict[str, str]:
    """What deprovisioning this machine by mistake would change first."""
    identity = {'hostname': socket.gethostname()}
    for path in ('/etc/machine-id', '/etc/hostname', '/etc/passwd', '/etc/shadow', '/etc/hosts'):
        with open(path, 'rb') as handle:
            identity[path] = hashlib.sha256(handle.read()).hexdigest()
    return identity


@pytest.fixture(autouse=True)
def host_canary() -> t.Iterator[pathlib.Path]:
    """A file in this machine's /tmp: a run that escaped its root would remove it with the guest's /tmp."""
    fd, name = tempfile.mkstemp(prefix='imageprep-host-canary-', dir='/tmp')
    os.close(fd)
    canary = pathlib.Path(name)
    yield canary
    assert canary.exists(), "this machine's /tmp was emptied"
    canary.unlink()


def make_ext4_image(source: pathlib.Path, image: pathlib.Path) -> None:
    """An ext4 disk image holding SOURCE, like the root disk of a powered-off VM."""
    used = int(subprocess.run(['du', '-sb', str(source)], capture_output=True, text=True, check=True).stdout.split()[0])
    size_mib = used // (1 << 20) + 512
    subprocess.run(['mkfs.ext4', '-q', '-F', '-d', str(source), str(image), f'{size_mib}M'], check=True)


def test_offline_root_on_a_loop_mounted_disk(planted: Planted) -> None:
    image = planted.scratch / 'disk.img'
    make_ext4_image(planted.root, image)
    mount = planted.scratch / 'mnt'
    mount.mkdir()
    subprocess.run(['mount', '-o', 'loop', str(image), str(mount)], check=True)
    host_before = host_identity()
    before = listing(mount, skip=('/lost+found',))
    results = planted.scratch / 'results.json'
    playbook('-i', 'localhost,', '-c', 'local', '-e', 'ansible_python_interpreter=/usr/bin/python3',
             '-e', f'__root={mount}', '-e', f'__results={results}', 'quartet.yml')
    outcome = read_results(results)
    after = listing(mount, skip=('/lost+found',))
    assert_only_items_changed(before, after, item_paths(outcome['apply_1']['removed']))
    assert_planted_residue_gone(mount, planted.manifest)
    # the image's own tools ran inside it, never this machine's
    tools = [run['command'] for run in outcome['apply_1']['tools']]
    assert tools and all(f' chroot {mount} ' in command for command in tools), tools
    assert host_identity() == host_before
    subprocess.run(['umount', str(mount)], check=True)
    fsck = subprocess.run(['e2fsck', '-fn', str(image)], capture_output=True, text=True, check=False)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    # deleting a file leaves its bytes in the disk's free blocks; zero_free_space overwrites them
    assert SECRET in image.read_bytes(), 'the planted secret was never in the disk: the check below proves nothing'
    subprocess.run(['mount', '-o', 'loop', str(image), str(mount)], check=True)
    zeroed = run_module('linux_residue', {'root': str(mount), 'zero_free_space': True}, planted.scratch / 'runs')
    assert not zeroed.get('failed'), zeroed
    assert zeroed['zeroed']['/'] > 100 * (1 << 20) and zeroed['removed'] == {}
    subprocess.run(['umount', str(mount)], check=True)
    assert SECRET not in image.read_bytes()


def test_a_local_connection_refuses_the_control_node(tmp_path: pathlib.Path) -> None:
    host_before = host_identity()
    refused = playbook('-i', 'localhost,', '-c', 'local', '-e', 'ansible_python_interpreter=/usr/bin/python3',
                       'refuse_control_node.yml', check=False)
    assert refused.returncode != 0
    assert 'refusing to deprovision the control node' in refused.stdout
    assert host_identity() == host_before


@pytest.mark.parametrize(('args', 'message'), [
    ({'categories': ['ssh_host_keys', 'bogus_category']}, 'unknown category bogus_category'),
    ({'exclude': ['logz']}, 'unknown category logz'),
    ({'remove_users': ['root']}, 'refusing to remove root'),
    ({'keep_users': ['produser'], 'remove_users': ['produser']}, 'cannot be in both keep_users and remove_users'),
])
def test_bad_input_is_refused_and_removes_nothing(planted_untouched: Planted, args: dict, message: str) -> None:
    planted = planted_untouched
    before = listing(planted.root)
    result = run_module('linux_residue', dict(args, root=str(planted.root)), planted.scratch / 'runs')
    assert result.get('failed') and message in result['msg'], result
    assert listing(planted.root) == before


@pytest.mark.parametrize(('root', 'message'), [
    ('relative/root', 'root must be an absolute path'),
    ('/nonexistent/imageprep-root', 'is not a directory'),
    ('EMPTY', 'is not a Linux root'),
])
def test_a_root_that_is_not_a_linux_root_is_refused(tmp_path: pathlib.Path, root: str, message: str) -> None:
    if root == 'EMPTY':
        root = str(tmp_path / 'empty')
        os.mkdir(root)
        (tmp_path / 'empty' / 'etc').mkdir()
    result = run_module('linux_residue', {'root': root}, tmp_path / 'runs')
    assert result.get('failed'), result
    assert message in result['msg'], result['msg']


def test_without_root_privileges_nothing_is_removed(planted_untouched: Planted) -> None:
    planted = planted_untouched
    before = listing(planted.root)
    os.chmod(planted.scratch, 0o755)
    args = planted.scratch / 'unprivileged-args.json'
    args.write_text('{"ANSIBLE_MODULE_ARGS": {"root": "%s"}}' % planted.root, encoding='utf-8')
    os.chmod(args, 0o644)
    completed = subprocess.run(
        ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '/usr/bin/python3', '-m',
         'ansible_collections.imageprep.vm.plugins.modules.linux_residue', str(args)],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([os.environ['ANSIBLE_COLLECTIONS_PATH'].split(os.pathsep)[0],
                                                         os.path.dirname(os.path.dirname(ansible.__file__))])))
    assert completed.returncode != 0
    assert 'root privileges' in completed.stdout, completed.stdout + completed.stderr
    assert listing(planted.root) == before
