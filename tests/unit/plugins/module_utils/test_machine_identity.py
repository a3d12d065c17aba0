# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The identity of a root (machine id, host name, SSH host keys, regular accounts) on the planted roots,
with fingerprints checked against ssh-keygen."""
from __future__ import annotations

import pathlib
import subprocess

import pytest

import plant_used_vm
from ansible_collections.imageprep.vm.plugins.module_utils import _machine_identity as identity
from ansible_collections.imageprep.vm.plugins.module_utils._rootfs import RootFS

FAMILIES = ('debian', 'rhel', 'suse', 'ubuntu', 'arch')


def ssh_keygen_fingerprint(path: pathlib.Path) -> tuple[str, str]:
    """(fingerprint, comment-stripped type) as ``ssh-keygen -l`` prints them for PATH."""
    fields = subprocess.run(['ssh-keygen', '-l', '-E', 'sha256', '-f', str(path)], capture_output=True, text=True,
                            check=True).stdout.split()
    return fields[1], fields[-1]


@pytest.mark.parametrize('family', FAMILIES)
def test_identity_of_a_used_root(used_roots, family):
    used = used_roots(family)
    root = pathlib.Path(used.root)
    found = identity.machine_identity(RootFS(used.root))
    assert found['machine_id'] == (root / 'etc/machine-id').read_text().strip()
    assert len(found['machine_id']) == 32
    assert found['hostname'] == plant_used_vm.HOSTNAME
    keys = sorted(root.glob('etc/ssh/ssh_host_*_key.pub'))
    assert len(keys) >= 2
    assert [k['path'] for k in found['ssh_host_keys']] == [f'/etc/ssh/{k.name}' for k in keys]
    for key, path in zip(found['ssh_host_keys'], keys):
        fingerprint, _kind = ssh_keygen_fingerprint(path)
        assert key['fingerprint'] == fingerprint
        assert path.read_text().split()[:2] == [key['type'], key['public_key']]
    names = [a['name'] for a in found['accounts']]
    assert plant_used_vm.PROVISIONED_USER in names and plant_used_vm.PRODUCTION_USER in names
    assert 'root' not in names and 'nobody' not in names
    for account in found['accounts']:
        assert 1000 <= account['uid'] < 60000
        assert set(account) == {'name', 'uid', 'home', 'shell'}
    produser = next(a for a in found['accounts'] if a['name'] == plant_used_vm.PRODUCTION_USER)
    assert produser['home'] == f'/home/{plant_used_vm.PRODUCTION_USER}' and produser['shell'].endswith('sh')


@pytest.mark.parametrize('key_type', ['ed25519', 'ecdsa', 'rsa'])
def test_fingerprints_are_those_ssh_keygen_prints(tmp_path, key_type):
    key = tmp_path / 'key'
    subprocess.run(['ssh-keygen', '-q', '-t', key_type, '-N', '', '-f', str(key)], check=True)
    parsed = identity.parse_public_key((tmp_path / 'key.pub').read_text())
    assert parsed is not None
    assert parsed['fingerprint'] == ssh_keygen_fingerprint(tmp_path / 'key.pub')[0]


@pytest.mark.parametrize('text', [
    '',
    '# a comment only\n',
    'ssh-ed25519 not-base64!\n',
    # a valid blob under the wrong type name
    'ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl host\n',
])
def test_what_is_not_a_public_key_is_left_out(text):
    assert identity.parse_public_key(text) is None


@pytest.mark.parametrize('login_defs, first', [
    (None, 1000),
    ('', 1000),
    ('# UID_MIN 5000\nUID_MIN\t\t\t 2000\nUID_MAX 60000\n', 2000),
    ('SYS_UID_MIN 201\nUID_MIN 500   # old Red Hat\n', 500),
])
def test_uid_min_comes_from_login_defs(login_defs, first):
    assert identity.uid_min(login_defs) == first


def test_regular_accounts():
    passwd = ('root:x:0:0:root:/root:/bin/bash\n'
              'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n'
              'ops:x:500:500::/home/ops:/bin/sh\n'
              'alice:x:1000:1000:Alice:/home/alice:/bin/bash\n'
              'broken line\n'
              '+@netgroup::::::\n'
              'svc:x:59999:59999::/srv/svc:/usr/sbin/nologin\n'
              'dyn:x:61184:61184::/:/usr/sbin/nologin\n'
              'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n')
    assert [a['name'] for a in identity.regular_accounts(passwd, 1000)] == ['alice', 'svc']
    assert [a['name'] for a in identity.regular_accounts(passwd, 500)] == ['ops', 'alice', 'svc']
    assert identity.regular_accounts(None, 1000) == []


def test_empty_and_missing_files(tmp_path):
    (tmp_path / 'etc').mkdir()
    (tmp_path / 'etc/machine-id').write_text('')
    found = identity.machine_identity(RootFS(str(tmp_path)))
    assert found == {'machine_id': '', 'hostname': None, 'ssh_host_keys': [], 'accounts': []}
    (tmp_path / 'etc/machine-id').write_text('uninitialized\n')
    (tmp_path / 'etc/hostname').write_text('\n')
    assert identity.machine_identity(RootFS(str(tmp_path)))['machine_id'] == 'uninitialized'
    assert identity.machine_identity(RootFS(str(tmp_path)))['hostname'] == ''
    (tmp_path / 'etc/machine-id').unlink()
    assert identity.machine_identity(RootFS(str(tmp_path)))['machine_id'] is None


def test_links_are_read_inside_the_root(tmp_path):
    # an absolute link in an offline root means the root's own file, never this machine's
    root = tmp_path / 'root'
    (root / 'etc').mkdir(parents=True)
    (root / 'srv').mkdir()
    (root / 'srv/hostname').write_text('inside\n')
    (root / 'etc/hostname').symlink_to('/srv/hostname')
    (root / 'etc/machine-id').symlink_to('/proc/sys/kernel/random/boot_id')  # exists on every host
    found = identity.machine_identity(RootFS(str(root)))
    assert found['hostname'] == 'inside'
    assert found['machine_id'] is None
