# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Checks of a planted root that do not trust the planter.

The manifest is checked entry by entry against the file system, and, separately, every
residue category the deprovisioning issue's foundation part names is looked for at the
paths a used VM of each family has it, from the lists below (never from the manifest).
"""
from __future__ import annotations

import json
import pathlib
import re
import subprocess
import xml.etree.ElementTree as ET

PROVISIONED_USER = 'azureadmin'
PRODUCTION_USER = 'produser'
HOSTNAME = 'web-prod-01'
MAC_ADDRESS = '00:0d:3a:4f:21:8c'
JOURNAL_MAGIC = b'LPKSHHRH'
KNOWN_CATEGORIES = {
    'ssh_host_keys', 'machine_id', 'random_seed', 'hostname', 'dhcp_leases', 'network_identity', 'lvm_devices',
    'registration', 'user_ssh_keys', 'shell_history', 'provisioning_account', 'root_password', 'kerberos_keytab',
    'directory_service_state', 'logs', 'tmp_files', 'package_caches', 'crash_dumps', 'mail_spool', 'cron_spool',
    'backup_files', 'cloud_init_state', 'azure_agent_state',
}

# Where each family keeps what differs: dhclient leases, the two syslog files, mail and cron
# spools, downloaded packages.
FAMILY_PATHS = {
    'debian': {'dhclient': '/var/lib/dhcp/dhclient.eth0.leases', 'syslog': ('syslog', 'auth.log'), 'mail': '/var/mail',
               'cron': '/var/spool/cron/crontabs', 'packages': 'var/cache/apt/archives/*.deb'},
    'ubuntu': {'dhclient': '/var/lib/dhcp/dhclient.eth0.leases', 'syslog': ('syslog', 'auth.log'), 'mail': '/var/mail',
               'cron': '/var/spool/cron/crontabs', 'packages': 'var/cache/apt/archives/*.deb'},
    'rhel': {'dhclient': '/var/lib/dhclient/dhclient-eth0.leases', 'syslog': ('messages', 'secure'), 'mail': '/var/spool/mail',
             'cron': '/var/spool/cron', 'packages': 'var/cache/dnf/*/packages/*.rpm'},
    'suse': {'dhclient': '/var/lib/dhcp/dhclient.leases', 'syslog': ('messages', 'warn'), 'mail': '/var/spool/mail',
             'cron': '/var/spool/cron/tabs', 'packages': 'var/cache/zypp/packages/*/*/*.rpm'},
    'arch': {'dhclient': '/var/lib/dhclient/dhclient.leases', 'syslog': ('pacman.log', 'auth.log'), 'mail': '/var/spool/mail',
             'cron': '/var/spool/cron', 'packages': 'var/cache/pacman/pkg/*.pkg.tar.zst'},
}


def inside(root: pathlib.Path, path: str) -> pathlib.Path:
    """PATH of the planted root, as a path on this machine."""
    return root / path.lstrip('/')


def manifest_entry_problems(root: pathlib.Path, manifest: list[dict[str, str]]) -> list[str]:
    """Every way in which MANIFEST does not match ROOT (an empty list when it all holds)."""
    problems = []
    for entry in manifest:
        if set(entry) != {'category', 'path', 'kind', 'detail'}:
            problems.append(f'malformed entry {entry}')
            continue
        if entry['category'] not in KNOWN_CATEGORIES:
            problems.append(f'{entry["path"]}: unknown category {entry["category"]}')
        if not entry['path'].startswith('/'):
            problems.append(f'{entry["path"]}: not an absolute path in the root')
        path = inside(root, entry['path'])
        kind = entry['kind']
        if kind == 'symlink':
            if not path.is_symlink():
                problems.append(f'{entry["path"]}: not a symlink')
        elif kind == 'dir':
            if path.is_symlink() or not path.is_dir():
                problems.append(f'{entry["path"]}: not a directory')
        elif kind in ('file', 'content'):
            if path.is_symlink() or not path.is_file():
                problems.append(f'{entry["path"]}: not a regular file')
            elif path.stat().st_size == 0:
                problems.append(f'{entry["path"]}: empty')
            elif kind == 'content' and (not entry['detail'] or entry['detail'].encode() not in path.read_bytes()):
                problems.append(f'{entry["path"]}: does not contain {entry["detail"]!r}')
        else:
            problems.append(f'{entry["path"]}: unknown kind {kind}')
    return problems


def non_empty_file(root: pathlib.Path, path: str) -> bytes:
    """The content of PATH in ROOT, asserting it is a non-empty regular file."""
    target = inside(root, path)
    assert target.is_file() and not target.is_symlink(), f'{path} is missing'
    data = target.read_bytes()
    assert data, f'{path} is empty'
    return data


def globbed(root: pathlib.Path, pattern: str) -> list[pathlib.Path]:
    """Non-empty regular files matching PATTERN (relative to ROOT)."""
    return [p for p in sorted(root.glob(pattern.lstrip('/'))) if p.is_file() and not p.is_symlink() and p.stat().st_size]


def home(root: pathlib.Path, user: str) -> str:
    """Home directory of USER, read from the root's /etc/passwd."""
    for line in inside(root, '/etc/passwd').read_text(encoding='utf-8').splitlines():
        fields = line.split(':')
        if fields[0] == user:
            return fields[5]
    raise AssertionError(f'{user} is not in /etc/passwd')


def machine_id(root: pathlib.Path) -> str:
    """The root's machine id, checked to be 32 hex digits."""
    value = non_empty_file(root, '/etc/machine-id').decode().strip()
    assert re.fullmatch(r'[0-9a-f]{32}', value), value
    return value


def ovf_user_name(root: pathlib.Path) -> str:
    """The UserName in waagent's copy of ovf-env.xml."""
    tree = ET.fromstring(non_empty_file(root, '/var/lib/waagent/ovf-env.xml'))
    names = [element.text for element in tree.iter('{http://schemas.microsoft.com/windowsazure}UserName')]
    assert len(names) == 1, names
    return names[0]


def journal_messages(journal: pathlib.Path) -> list[str]:
    """MESSAGE fields of a journal file, read with journalctl --file."""
    completed = subprocess.run(['journalctl', '--file', str(journal), '-o', 'json', '--no-pager'],
                               capture_output=True, text=True, check=True)
    return [json.loads(line)['MESSAGE'] for line in completed.stdout.splitlines() if line.strip()]


def assert_foundation_residue(root: pathlib.Path, family: str) -> None:
    """Every residue category of the foundation part is present where the family keeps it."""
    paths = FAMILY_PATHS[family]
    # identity
    for key_type in ('rsa', 'ecdsa', 'ed25519'):
        non_empty_file(root, f'/etc/ssh/ssh_host_{key_type}_key')
        non_empty_file(root, f'/etc/ssh/ssh_host_{key_type}_key.pub')
    identity = machine_id(root)
    assert non_empty_file(root, '/var/lib/dbus/machine-id').decode().strip() == identity
    assert non_empty_file(root, '/etc/hostname').decode().strip() == HOSTNAME
    assert re.search(rf'^\S+\s+.*\b{HOSTNAME}\b', non_empty_file(root, '/etc/hosts').decode(), re.MULTILINE)
    non_empty_file(root, '/var/lib/systemd/random-seed')
    non_empty_file(root, '/var/lib/systemd/credential.secret')
    # leases of all three DHCP clients
    assert b'lease {' in non_empty_file(root, paths['dhclient'])
    assert globbed(root, '/var/lib/NetworkManager/internal-*-eth0.lease')
    assert any(b'lease {' in p.read_bytes() for p in globbed(root, '/var/lib/NetworkManager/dhclient-*-eth0.lease'))
    assert any(b'ADDRESS=' in p.read_bytes() for p in globbed(root, '/run/systemd/netif/leases/*'))
    assert MAC_ADDRESS.encode() in non_empty_file(root, '/etc/udev/rules.d/70-persistent-net.rules')
    # the provisioning account, its keys and sudo rights from both agents
    passwd = non_empty_file(root, '/etc/passwd').decode()
    assert re.search(rf'^{PROVISIONED_USER}:x:\d+:\d+:', passwd, re.MULTILINE)
    admin_home = home(root, PROVISIONED_USER)
    assert b'ssh-' in non_empty_file(root, f'{admin_home}/.ssh/authorized_keys')
    assert re.search(rf'^{PROVISIONED_USER} ALL=\(ALL\) NOPASSWD:ALL$',
                     non_empty_file(root, '/etc/sudoers.d/90-cloud-init-users').decode(), re.MULTILINE)
    assert re.search(rf'^{PROVISIONED_USER} ALL=\(ALL\) NOPASSWD: ALL$',
                     non_empty_file(root, '/etc/sudoers.d/waagent').decode(), re.MULTILINE)
    # user secrets
    operator_home = home(root, PRODUCTION_USER)
    assert b'PRIVATE KEY' in non_empty_file(root, f'{operator_home}/.ssh/id_ed25519')
    assert globbed(root, '/root/.ssh/id_*')
    for user_home in ('/root', admin_home, operator_home):
        non_empty_file(root, f'{user_home}/.bash_history')
    for history in ('.zsh_history', '.python_history', '.lesshst', '.viminfo'):
        assert globbed(root, f'/root/{history}') + globbed(root, f'/home/*/{history}'), history
    assert inside(root, '/etc/krb5.keytab').read_bytes()[:2] == b'\x05\x02'
    assert any(p.read_bytes().startswith(b'TDB file') for p in globbed(root, '/var/lib/sss/db/*.ldb'))
    # logs: current and rotated, login records, journal files
    for name in paths['syslog']:
        non_empty_file(root, f'/var/log/{name}')
    assert globbed(root, '/var/log/**/*.1'), 'no rotated log (.1)'
    assert globbed(root, '/var/log/**/*.gz'), 'no compressed rotated log (.gz)'
    for name in ('wtmp', 'btmp', 'lastlog'):
        non_empty_file(root, f'/var/log/{name}')
    journals = globbed(root, f'/var/log/journal/{identity}/*.journal')
    assert len(journals) >= 2, journals
    for journal in journals:
        assert journal.read_bytes()[:8] == JOURNAL_MAGIC
    # cloud-init and Azure agent state
    assert inside(root, '/var/lib/cloud/instance').is_symlink()
    instance_id = non_empty_file(root, '/var/lib/cloud/data/instance-id').decode().strip()
    assert inside(root, f'/var/lib/cloud/instances/{instance_id}').is_dir()
    for name in ('status.json', 'result.json'):
        assert 'v1' in json.loads(non_empty_file(root, f'/var/lib/cloud/data/{name}'))
    non_empty_file(root, '/var/log/cloud-init.log')
    non_empty_file(root, '/var/log/cloud-init-output.log')
    assert ovf_user_name(root) == PROVISIONED_USER
    non_empty_file(root, '/var/lib/waagent/provisioned')
    # hygiene
    assert any(inside(root, '/tmp').iterdir()) and any(inside(root, '/var/tmp').iterdir())
    assert globbed(root, paths['packages']), paths['packages']
    assert globbed(root, '/var/crash/**/*') + globbed(root, '/var/lib/systemd/coredump/*')
    non_empty_file(root, f'{paths["mail"]}/{PRODUCTION_USER}')
    non_empty_file(root, f'{paths["cron"]}/{PRODUCTION_USER}')
    non_empty_file(root, '/etc/passwd-')
    non_empty_file(root, '/etc/shadow-')
