# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The residue catalogue: its decisions, and plan -> apply -> audit on planted roots of every family."""
from __future__ import annotations

import os
import pathlib
import re
import stat
import subprocess
import textwrap
import typing as t

import pytest

import fixture_trees
from tree_listing import covered, listing
import plant_used_vm

from ansible_collections.imageprep.vm.plugins.module_utils import _residue as residue
from ansible_collections.imageprep.vm.plugins.module_utils._rootfs import RootFS

# -- the catalogue -----------------------------------------------------------------------
REQUIRED = ('ssh_host_keys', 'machine_id', 'random_seed', 'hostname', 'dhcp_leases', 'network_identity', 'lvm_devices',
            'registration', 'user_ssh_keys', 'shell_history', 'provisioning_account', 'root_password', 'kerberos_keytab',
            'directory_service_state', 'logs', 'tmp_files', 'package_caches', 'crash_dumps', 'mail_spool', 'cron_spool',
            'backup_files', 'cloud_init_state', 'azure_agent_state')
OFF_BY_DEFAULT = ('cron_spool', 'root_password')


def test_catalogue_names_are_unique():
    names = [c.name for c in residue.CATALOGUE]
    assert len(names) == len(set(names))
    assert list(residue.BY_NAME) == names


@pytest.mark.parametrize('category', residue.CATALOGUE, ids=lambda c: c.name)
def test_catalogue_category_is_well_formed(category):
    assert category.severity in residue.SEVERITIES
    assert category.description.strip()
    assert category.rules
    for rule in category.rules:
        assert rule.reset in residue.RESETS
        assert set(rule.families) <= set(residue.FAMILIES)
        assert (rule.reset == 'rewrite') == bool(rule.rewriter)
        if rule.reset not in ('run', 'report'):
            assert rule.pattern.startswith(('/', '~/')), rule.pattern


@pytest.mark.parametrize('name', REQUIRED)
def test_required_category_is_present(name):
    assert name in residue.BY_NAME
    assert residue.BY_NAME[name].default is (name not in OFF_BY_DEFAULT)


def test_planter_categories_are_catalogue_categories():
    assert set(plant_used_vm.CATEGORIES) <= set(residue.BY_NAME)


# -- selection ---------------------------------------------------------------------------
def test_select_defaults_are_every_default_category_in_catalogue_order():
    chosen = residue.select((), ())
    assert chosen == [c.name for c in residue.CATALOGUE if c.default]
    assert not set(OFF_BY_DEFAULT) & set(chosen)


@pytest.mark.parametrize('categories, exclude, expected', [
    (('logs', 'ssh_host_keys'), (), ['ssh_host_keys', 'logs']),
    (('cron_spool',), (), ['cron_spool']),
    (('logs', 'tmp_files'), ('logs',), ['tmp_files']),
    ((), ('logs', 'tmp_files'), [c.name for c in residue.CATALOGUE if c.default and c.name not in ('logs', 'tmp_files')]),
    (('logs',), ('logs',), []),
])
def test_select(categories, exclude, expected):
    assert residue.select(categories, exclude) == expected


@pytest.mark.parametrize('categories, exclude, named', [
    (('logz',), (), 'category logz;'),
    (('logs', 'ssh_keys', 'tmp'), (), 'categories ssh_keys, tmp;'),
    ((), ('history',), 'category history;'),
])
def test_select_refuses_unknown_names(categories, exclude, named):
    with pytest.raises(residue.ResidueError, match=named):
        residue.select(categories, exclude)


# -- OS families -------------------------------------------------------------------------
OS_RELEASES = {
    'debian-12': ('debian', '''\
        PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
        NAME="Debian GNU/Linux"
        VERSION_ID="12"
        VERSION="12 (bookworm)"
        VERSION_CODENAME=bookworm
        ID=debian
        HOME_URL="https://www.debian.org/"
        '''),
    'ubuntu-22.04': ('debian', '''\
        PRETTY_NAME="Ubuntu 22.04.4 LTS"
        NAME="Ubuntu"
        VERSION_ID="22.04"
        VERSION="22.04.4 LTS (Jammy Jellyfish)"
        VERSION_CODENAME=jammy
        ID=ubuntu
        ID_LIKE=debian
        UBUNTU_CODENAME=jammy
        '''),
    'rhel-9': ('redhat', '''\
        NAME="Red Hat Enterprise Linux"
        VERSION="9.4 (Plow)"
        ID="rhel"
        ID_LIKE="fedora"
        VERSION_ID="9.4"
        PLATFORM_ID="platform:el9"
        '''),
    'rocky-9': ('redhat', '''\
        NAME="Rocky Linux"
        VERSION="9.4 (Blue Onyx)"
        ID="rocky"
        ID_LIKE="rhel centos fedora"
        VERSION_ID="9.4"
        PLATFORM_ID="platform:el9"
        '''),
    'alma-9': ('redhat', '''\
        NAME="AlmaLinux"
        VERSION="9.4 (Seafoam Ocelot)"
        ID="almalinux"
        ID_LIKE="rhel centos fedora"
        VERSION_ID="9.4"
        '''),
    'oracle-9': ('redhat', '''\
        NAME="Oracle Linux Server"
        VERSION="9.4"
        ID="ol"
        ID_LIKE="fedora"
        VARIANT="Server"
        VERSION_ID="9.4"
        '''),
    'fedora-40': ('redhat', '''\
        NAME="Fedora Linux"
        VERSION="40 (Cloud Edition)"
        ID=fedora
        VERSION_ID=40
        VARIANT_ID=cloud
        '''),
    'amazon-2023': ('redhat', '''\
        NAME="Amazon Linux"
        VERSION="2023"
        ID="amzn"
        ID_LIKE="fedora"
        VERSION_ID="2023"
        '''),
    'amazon-2': ('redhat', '''\
        NAME="Amazon Linux"
        VERSION="2"
        ID="amzn"
        ID_LIKE="centos rhel fedora"
        VERSION_ID="2"
        '''),
    'centos-stream-9': ('redhat', '''\
        NAME="CentOS Stream"
        VERSION="9"
        ID="centos"
        ID_LIKE="rhel fedora"
        VERSION_ID="9"
        '''),
    'sles-15': ('suse', '''\
        NAME="SLES"
        VERSION="15-SP6"
        VERSION_ID="15.6"
        ID="sles"
        ID_LIKE="suse"
        '''),
    'opensuse-leap-15': ('suse', '''\
        NAME="openSUSE Leap"
        VERSION="15.6"
        ID="opensuse-leap"
        ID_LIKE="suse opensuse"
        VERSION_ID="15.6"
        '''),
    'opensuse-tumbleweed': ('suse', '''\
        NAME="openSUSE Tumbleweed"
        # VERSION="20241128"
        ID="opensuse-tumbleweed"
        ID_LIKE="opensuse suse"
        VERSION_ID="20241128"
        '''),
    'arch': ('archlinux', '''\
        NAME="Arch Linux"
        PRETTY_NAME="Arch Linux"
        ID=arch
        BUILD_ID=rolling
        '''),
    'alpine': ('generic', '''\
        NAME="Alpine Linux"
        ID=alpine
        VERSION_ID=3.20.3
        '''),
    'nixos': ('generic', '''\
        NAME=NixOS
        ID=nixos
        VERSION_ID="24.05"
        '''),
    'empty': ('generic', ''),
}


@pytest.mark.parametrize('text, family', [(textwrap.dedent(v[1]), v[0]) for v in OS_RELEASES.values()], ids=list(OS_RELEASES))
def test_os_family(text, family):
    assert residue.os_family(residue.parse_os_release(text)) == family


def test_parse_os_release_unquotes_and_skips_comments():
    assert residue.parse_os_release('# ID=no\nID="rhel"\nNAME=\'x y\'\n\nVERSION_ID=9\n') == {'ID': 'rhel', 'NAME': 'x y', 'VERSION_ID': '9'}


# -- rewriters ---------------------------------------------------------------------------
@pytest.mark.parametrize('before, after', [
    ('web-prod-01\n', 'localhost\n'),
    ('web-prod-01.contoso.internal', 'localhost\n'),
    ('localhost\n', 'localhost\n'),
    ('localhost.localdomain\n', 'localhost.localdomain\n'),
    ('', ''),
])
def test_rewrite_hostname(before, after):
    assert residue.rewrite_hostname(before) == after


@pytest.mark.parametrize('before, after', [
    # cloud-init's Debian template: the host's own line goes
    ('127.0.1.1 web-prod-01.contoso.internal web-prod-01\n127.0.0.1 localhost\n\n'
     '# The following lines are desirable for IPv6 capable hosts\n::1 localhost ip6-localhost ip6-loopback\n'
     'ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n',
     '127.0.0.1 localhost\n\n# The following lines are desirable for IPv6 capable hosts\n'
     '::1 localhost ip6-localhost ip6-loopback\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n'),
    # the RHEL template puts the host name on the localhost lines: only the names go
    ('127.0.0.1 web-prod-01.contoso.internal web-prod-01 localhost localhost.localdomain localhost4\n'
     '::1 web-prod-01.contoso.internal web-prod-01 localhost6 localhost6.localdomain6\n',
     '127.0.0.1 localhost localhost.localdomain localhost4\n::1 localhost6 localhost6.localdomain6\n'),
    # other addresses are the administrator's: kept
    ('127.0.0.1   localhost\n10.1.0.20 db.contoso.internal db\n', '127.0.0.1   localhost\n10.1.0.20 db.contoso.internal db\n'),
    ('127.0.0.1 localhost # the loopback\n', '127.0.0.1 localhost # the loopback\n'),
])
def test_rewrite_hosts(before, after):
    assert residue.rewrite_hosts(before) == after


IFCFG = '''\
TYPE=Ethernet
BOOTPROTO=dhcp
NAME="System eth0"
UUID=5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03
DEVICE=eth0
ONBOOT=yes
HWADDR=00:0D:3A:4F:21:8C
'''
NM_KEYFILE = '''\
[connection]
id=Wired connection 1
uuid=1dd9a779-d327-56e1-8454-c65e2556c12c
type=ethernet
interface-name=eth0

[ethernet]
mac-address=00:0D:3A:4F:21:8C

[ipv4]
method=auto
'''
NETWORKD = '''\
[Match]
MACAddress=00:0d:3a:4f:21:8c

[Network]
DHCP=ipv4
'''
NETPLAN = '''\
network:
    ethernets:
        eth0:
            dhcp4: true
            match:
                driver: hv_netvsc
                macaddress: 00:0d:3a:4f:21:8c
    version: 2
'''
UDEV = '''\
# net device ()
SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{address}=="00:0d:3a:4f:21:8c", NAME="eth0"
'''
ENI = '''\
auto eth0
iface eth0 inet dhcp
    hwaddress ether 00:0d:3a:4f:21:8c
'''


@pytest.mark.parametrize('path, before, gone, kept', [
    ('/etc/sysconfig/network-scripts/ifcfg-eth0', IFCFG, ['HWADDR=', 'UUID='], ['DEVICE=eth0', 'BOOTPROTO=dhcp', 'NAME="System eth0"']),
    ('/etc/sysconfig/network/ifcfg-eth0', 'BOOTPROTO=dhcp4\nLLADDR=00:0d:3a:4f:21:8c\nSTARTMODE=auto\n', ['LLADDR='],
     ['BOOTPROTO=dhcp4', 'STARTMODE=auto']),
    ('/etc/NetworkManager/system-connections/eth0.nmconnection', NM_KEYFILE, ['uuid=', 'mac-address='],
     ['id=Wired connection 1', 'interface-name=eth0', '[ethernet]', 'method=auto']),
    ('/etc/systemd/network/10-eth0.network', NETWORKD, ['MACAddress='], ['[Match]\nType=ether\n', 'DHCP=ipv4']),
    ('/etc/netplan/50-cloud-init.yaml', NETPLAN, ['macaddress'], ['driver: hv_netvsc', 'dhcp4: true']),
    ('/etc/udev/rules.d/70-persistent-net.rules', UDEV, ['00:0d:3a'], ['# net device']),
    ('/etc/network/interfaces.d/eth0', ENI, ['hwaddress'], ['iface eth0 inet dhcp']),
])
def test_rewrite_network(path, before, gone, kept):
    after = residue.rewrite_network(path, before)
    for text in gone:
        assert text not in after
    for text in kept:
        assert text in after
    assert residue.rewrite_network(path, after) == after


def test_rewrite_netplan_drops_set_name_with_the_mac_match():
    # cloud-init's netplan for Azure: without its MAC, the match selects every hv_netvsc NIC, and
    # set-name would give each of them the name eth0
    text = NETPLAN.replace('                macaddress: 00:0d:3a:4f:21:8c\n',
                           '                macaddress: 00:0d:3a:4f:21:8c\n            set-name: eth0\n')
    after = residue.rewrite_network('/etc/netplan/50-cloud-init.yaml', text)
    assert 'macaddress' not in after
    assert 'set-name' not in after


def test_rewrite_network_leaves_loopback_ifcfg():
    text = 'DEVICE=lo\nIPADDR=127.0.0.1\nUUID=deadbeef\n'
    assert residue.rewrite_network('/etc/sysconfig/network-scripts/ifcfg-lo', text) == text


# -- cloud-init clean --------------------------------------------------------------------
# `cloud-init clean --help` of Debian 12's cloud-init 22.4.2 (no --configs yet)
CLOUD_INIT_22_4_HELP = '''\
usage: /usr/bin/cloud-init clean [-h] [-l] [--machine-id] [-r] [-s]

options:
  -h, --help    show this help message and exit
  -l, --logs    Remove cloud-init logs.
  --machine-id  Remove /etc/machine-id for golden image creation. Next boot
                generates a new machine-id.
  -r, --reboot  Reboot system after logs are cleaned so cloud-init re-runs.
  -s, --seed    Remove cloud-init seed directory /var/lib/cloud/seed.
'''
# the same of cloud-init 23.4 and later (24.x): argparse's rendering of cloudinit/cmd/clean.py with -c/--configs
CLOUD_INIT_24_HELP = '''\
usage: /usr/bin/cloud-init clean [-h] [-l] [--machine-id] [-r] [-s]
                                 [-c {all,ssh_config,network} [{all,ssh_config,network} ...]]

Remove logs, configs and artifacts so cloud-init re-runs on a clean system

options:
  -h, --help            show this help message and exit
  -l, --logs            Remove cloud-init logs.
  --machine-id          Set /etc/machine-id to 'uninitialized ' for golden
                        imagecreation. On next boot, systemd generates a new
                        machine-id. Remove /etc/machine-id on non-systemd
                        environments.
  -r, --reboot          Reboot system after logs are cleaned so cloud-init re-
                        runs.
  -s, --seed            Remove cloud-init seed directory /var/lib/cloud/seed.
  -c {all,ssh_config,network} [{all,ssh_config,network} ...], --configs {all,ssh_config,network} [{all,ssh_config,network} ...]
                        Remove cloud-init generated config files of a certain
                        type. Config types: all, ssh_config, network
'''
CLOUD_INIT_20_HELP = '''\
usage: /usr/bin/cloud-init clean [-h] [-l] [-r] [-s]

optional arguments:
  -h, --help    show this help message and exit
  -l, --logs    Remove cloud-init logs.
  -r, --reboot  Reboot system after logs are cleaned so cloud-init re-runs.
  -s, --seed    Remove cloud-init seed directory /var/lib/cloud/seed.
'''


@pytest.mark.parametrize('help_text, args', [
    (CLOUD_INIT_20_HELP, ['clean', '--logs', '--seed']),
    (CLOUD_INIT_22_4_HELP, ['clean', '--logs', '--seed', '--machine-id']),
    (CLOUD_INIT_24_HELP, ['clean', '--logs', '--seed', '--machine-id', '--configs', 'all']),
], ids=['20.x', '22.4', '24.x'])
def test_cloud_init_clean_args(help_text, args):
    assert residue.cloud_init_clean_args(help_text) == args


# -- accounts ----------------------------------------------------------------------------
PASSWD = '''\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
jenkins:x:115:122:Jenkins,,,:/var/lib/jenkins:/bin/bash
produser:x:1001:1001::/home/produser:/bin/bash
azureadmin:x:1000:1000:Ubuntu:/home/azureadmin:/bin/bash
azure:x:1002:1002::/home/azure:/bin/bash
'''
GROUP = '''\
root:x:0:
sudo:x:27:azureadmin,produser
adm:x:4:azureadmin
azureadmin:x:1000:
produser:x:1001:
shared:x:1003:azureadmin
azure:x:1002:
'''
CLOUD_INIT_SUDOERS = '''\

# Created by cloud-init v. 22.4.2 on Sat, 22 Nov 2025 09:00:12 +0000

# User rules for azureadmin
azureadmin ALL=(ALL) NOPASSWD:ALL
'''


@pytest.mark.parametrize('text, user, expected', [
    (PASSWD, 'azureadmin', PASSWD.replace('azureadmin:x:1000:1000:Ubuntu:/home/azureadmin:/bin/bash\n', '')),
    (PASSWD, 'azure', PASSWD.replace('azure:x:1002:1002::/home/azure:/bin/bash\n', '')),
    (PASSWD, 'nobody', PASSWD),
    (CLOUD_INIT_SUDOERS, 'azureadmin', '\n# Created by cloud-init v. 22.4.2 on Sat, 22 Nov 2025 09:00:12 +0000\n\n'),
    ('azureadmin ALL=(ALL) NOPASSWD: ALL\n', 'azureadmin', ''),
    ('azureadmin\tALL=(ALL) ALL\n%azureadmin ALL=(ALL) ALL\n', 'azureadmin', '%azureadmin ALL=(ALL) ALL\n'),
    ('a.b ALL=(ALL) ALL\naxb ALL=(ALL) ALL\n', 'a.b', 'axb ALL=(ALL) ALL\n'),
])
def test_without_user_lines(text, user, expected):
    assert residue._without_user_lines(text, user) == expected


@pytest.mark.parametrize('user, expected', [
    ('azureadmin', 'root:x:0:\nsudo:x:27:produser\nadm:x:4:\nproduser:x:1001:\nshared:x:1003:\nazure:x:1002:\n'),
    ('azure', GROUP.replace('azure:x:1002:\n', '')),
    ('produser', GROUP.replace('azureadmin,produser', 'azureadmin').replace('produser:x:1001:\n', '')),
])
def test_without_group_member(user, expected):
    assert residue._without_group_member(GROUP, user) == expected


def test_without_group_member_keeps_a_users_group_that_has_other_members():
    text = 'azureadmin:x:1000:produser\n'
    assert residue._without_group_member(text, 'azureadmin') == text


def make_root(base, files: t.Mapping[str, t.Union[str, bytes]]) -> str:
    """A small root at BASE with FILES (guest path: content); every root has os-release and passwd."""
    files = {'/etc/os-release': textwrap.dedent(OS_RELEASES['debian-12'][1]), '/etc/passwd': PASSWD, **files}
    for path, data in files.items():
        host = os.path.join(str(base), path.lstrip('/'))
        os.makedirs(os.path.dirname(host), exist_ok=True)
        with open(host, 'wb') as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
    return str(base)


def target_of(root: str) -> residue.Target:
    return residue.Target(RootFS(root, mounts=[]))


@pytest.mark.parametrize('files, users', [
    ({}, []),
    ({'/var/lib/waagent/ovf-env.xml': plant_used_vm.ovf_env_xml('ssh-ed25519 AAAAC3Nz test')}, ['azureadmin']),
    ({'/var/lib/cloud/seed/azure/ovf-env.xml': plant_used_vm.ovf_env_xml('ssh-ed25519 AAAAC3Nz test')}, ['azureadmin']),
    ({'/etc/sudoers.d/90-cloud-init-users': CLOUD_INIT_SUDOERS}, ['azureadmin']),
    ({'/var/lib/waagent/ovf-env.xml': plant_used_vm.ovf_env_xml('k'), '/etc/sudoers.d/90-cloud-init-users': CLOUD_INIT_SUDOERS},
     ['azureadmin']),
    # named by the agents but no longer an account: nothing to remove
    ({'/etc/sudoers.d/90-cloud-init-users': CLOUD_INIT_SUDOERS.replace('azureadmin', 'ghost')}, []),
    ({'/run/cloud-init/instance-data.json': '{"merged_cfg": {"system_info": {"default_user": {"name": "produser"}}}}'},
     ['produser']),
    ({'/var/lib/waagent/ovf-env.xml': '<not xml'}, []),
])
def test_provisioned_users(tmp_path, files, users):
    assert residue.provisioned_users(target_of(make_root(tmp_path, files))) == users


@pytest.mark.parametrize('remove_users', [['root'], ['daemon'], ['jenkins'], ['produser', 'jenkins']])
def test_remove_users_refuses_system_accounts(tmp_path, remove_users):
    target = target_of(make_root(tmp_path, {}))
    with pytest.raises(residue.ResidueError, match='refusing to remove .*system account'):
        residue.accounts_to_remove(target, remove_users, [])
    with pytest.raises(residue.ResidueError, match='system account'):
        residue.plan(target, residue.Options(remove_users=tuple(remove_users)))


@pytest.mark.parametrize('remove_users, keep_users, removed', [
    ([], [], ['azureadmin']),
    (['produser'], [], ['azureadmin', 'produser']),
    (['produser', 'nobody-here'], ['azureadmin'], ['produser']),
])
def test_accounts_to_remove(tmp_path, remove_users, keep_users, removed):
    target = target_of(make_root(tmp_path, {'/etc/sudoers.d/90-cloud-init-users': CLOUD_INIT_SUDOERS}))
    assert [a.name for a in residue.accounts_to_remove(target, remove_users, keep_users)] == removed


# -- machine id --------------------------------------------------------------------------
@pytest.mark.parametrize('library, version, wanted', [
    (None, 0, b''),
    ('/usr/lib/x86_64-linux-gnu/systemd/libsystemd-shared-252.so', 252, b'uninitialized\n'),
    ('/usr/lib/systemd/libsystemd-shared-246.so', 246, b''),
    ('/usr/lib/systemd/libsystemd-shared-247.so', 247, b'uninitialized\n'),
    ('/usr/lib64/systemd/libsystemd-shared-255.5-1.fc40.so', 255, b'uninitialized\n'),
    ('/lib/systemd/libsystemd-shared-241.so', 241, b''),
])
def test_machine_id_by_systemd_version(tmp_path, library, version, wanted):
    files = {'/etc/machine-id': 'd9e984c3d26147e4b10833fd2a4f3d1a\n'}
    if library:
        files[library] = b'\x7fELF'
    target = target_of(make_root(tmp_path, files))
    assert target.systemd_version == version
    assert residue.first_boot_machine_id(target) == wanted
    items = residue.plan(target, residue.Options(categories=('machine_id',)))
    assert [(i.path, i.action) for i in items] == [('/etc/machine-id', 'first_boot')]
    residue.apply(target, residue.Options(categories=('machine_id',)), items, run_nothing, running=False)
    with open(tmp_path / 'etc/machine-id', 'rb') as handle:
        assert handle.read() == wanted
    assert residue.plan(target_of(str(tmp_path)), residue.Options(categories=('machine_id',))) == []


def test_machine_id_copy_in_dbus_becomes_a_link(tmp_path):
    root = make_root(tmp_path, {'/etc/machine-id': 'uninitialized\n', '/var/lib/dbus/machine-id': 'd9e984c3d26147e4b10833fd2a4f3d1a\n',
                                '/usr/lib/systemd/libsystemd-shared-252.so': b''})
    options = residue.Options(categories=('machine_id',))
    items = residue.plan(target_of(root), options)
    assert [(i.path, i.action) for i in items] == [('/var/lib/dbus/machine-id', 'link')]
    residue.apply(target_of(root), options, items, run_nothing, running=False)
    assert os.readlink(tmp_path / 'var/lib/dbus/machine-id') == '/etc/machine-id'
    assert residue.plan(target_of(root), options) == []


def run_nothing(argv, **_kwargs):
    pytest.fail(f'no vendor tool may run on this root, but {argv} was run')


# -- used roots of every family: plan -> apply -> plan -> audit ---------------------------
ALL_CATEGORIES = tuple(residue.BY_NAME)
# debian: the real Debian 12 guest, planted by its own programs; the others: fixture trees
USED_FAMILIES = ('debian',) + fixture_trees.FAMILIES


# Paths the vendor tools write that no catalogue item names. None on these roots: what the Debian
# guest's waagent -deprovision writes falls under item paths (/etc/hostname: hostname; the root
# password locked in /etc/shadow: root_password; the leases and host keys it deletes), the
# /etc/resolv.conf it deletes is put back by apply (so it must compare equal), its
# set_dhcp_hostname leaves dhclient.conf alone (Debian's already sends gethostname()), and
# cloud-init clean removes only its own state and logs.
VENDOR_WRITES: dict[str, tuple[str, ...]] = {'debian': (), 'rhel': (), 'suse': (), 'ubuntu': (), 'arch': ()}
# A host name no tool sets: the tools run in a private UTS namespace that starts with it.
SENTINEL_HOSTNAME = 'imageprep-unit-sentinel'


def chroot_runner(calls: list) -> residue.RunCommand:
    """run_command for the root's own tools: subprocess.run in a private UTS namespace named
    SENTINEL_HOSTNAME, recording the host name each command leaves there, so a tool that renames
    the machine it runs on is seen without renaming this one."""

    def run(argv, **_kwargs):
        script = f'hostname {SENTINEL_HOSTNAME}; "$@"; rc=$?; uname -n >&2; exit $rc'
        completed = subprocess.run(['unshare', '--uts', 'sh', '-c', script, 'sh'] + list(argv),
                                   capture_output=True, text=True, check=False, timeout=300)
        lines = completed.stderr.rstrip('\n').split('\n')
        calls.append({'argv': list(argv), 'rc': completed.returncode, 'hostname_after': lines[-1]})
        return completed.returncode, completed.stdout, '\n'.join(lines[:-1])
    return run


class Cleaned(t.NamedTuple):
    """A used root after one plan and apply, with what was seen on the way."""

    used: t.Any
    before: dict
    after: dict
    items: list
    applied: dict
    calls: list


@pytest.fixture(scope='module', params=USED_FAMILIES)
def cleaned(request, used_roots) -> Cleaned:
    used = used_roots(request.param)
    options = residue.Options(categories=ALL_CATEGORIES)
    before = listing(used.root)
    target = target_of(used.root)
    items = residue.plan(target, options)
    calls: list = []
    run = chroot_runner(calls) if used.family == 'debian' else run_nothing
    applied = residue.apply(target, options, items, run, running=False)
    return Cleaned(used, before, listing(used.root), items, applied, calls)


def test_plan_finds_residue_in_every_category_planted(cleaned):
    planted = {e['category'] for e in cleaned.used.manifest}
    planned = {i.category for i in cleaned.items}
    assert planted - planned == set()


def in_root(argv: list) -> tuple[str, list]:
    """The root a command was chrooted into and the command run there."""
    assert 'chroot' in argv, f'{argv} is not run in the root'
    at = argv.index('chroot')
    return argv[at + 1], argv[at + 2:]


def test_tools_run_only_where_installed(cleaned):
    if cleaned.used.family == 'debian':
        # the root's own tools, inside the root (chroot ROOT ...), never this machine's
        assert {in_root(c['argv'])[0] for c in cleaned.calls} == {os.path.realpath(cleaned.used.root)}
        commands = [in_root(c['argv'])[1] for c in cleaned.calls]
        assert commands == [['cloud-init', 'clean', '--help'], ['cloud-init', 'clean', '--logs', '--seed', '--machine-id'],
                            ['waagent', '-force', '-deprovision']]
        assert [c['rc'] for c in cleaned.calls] == [0, 0, 0]
        tools = cleaned.applied['tools']
        assert [t['command'] for t in tools] == [' '.join(c['argv']) for c in cleaned.calls]
        assert [t['rc'] for t in tools] == ['0', '0', '0']
    else:
        assert cleaned.calls == [] and cleaned.applied['tools'] == []


def test_vendor_tools_leave_this_machines_host_name_alone(cleaned):
    # an offline root's tools run on the machine doing the work: a tool that sets the host name
    # (waagent -deprovision runs `hostname localhost.localdomain`) must not rename that machine
    renamed = [(' '.join(c['argv']), c['hostname_after']) for c in cleaned.calls if c['hostname_after'] != SENTINEL_HOSTNAME]
    assert renamed == []


def test_every_selected_manifest_entry_is_gone_or_reset(cleaned):
    fs = RootFS(cleaned.used.root, mounts=[])
    selected = set(residue.select(ALL_CATEGORIES, ()))
    left = []
    for entry in cleaned.used.manifest:
        if entry['category'] not in selected:
            continue
        path, kind = entry['path'], entry['kind']
        if kind == 'content':
            data = fs.read_bytes(path, follow=True)
            if data is not None and entry['detail'].encode() in data:
                left.append(entry)
        elif fs.exists(path):
            st = fs.lstat(path)
            # a file that is truncated in place (wtmp, the current logs) stays, empty
            if not (kind == 'file' and stat.S_ISREG(st.st_mode) and st.st_size == 0):
                left.append(entry)
    assert left == []


@pytest.mark.parametrize('path, kept, gone', [
    ('/etc/passwd', 'root:x:0:0:', 'azureadmin:'),
    ('/etc/shadow', 'root:', 'azureadmin:'),
    ('/etc/group', 'root:x:0:', 'azureadmin'),
    ('/etc/hosts', 'localhost', 'web-prod-01'),
])
def test_shared_files_stay_without_the_residue(cleaned, path, kept, gone):
    text = RootFS(cleaned.used.root, mounts=[]).read_text(path)
    assert text is not None and kept in text and gone not in text


def test_shared_files_keep_mode_and_owner(cleaned):
    for path in ('/etc/passwd', '/etc/shadow', '/etc/group', '/etc/gshadow', '/etc/hosts', '/etc/hostname'):
        if path in cleaned.before and path in cleaned.after:
            assert cleaned.after[path][1:4] == cleaned.before[path][1:4], path


def test_machine_id_is_left_for_first_boot(cleaned):
    target = target_of(cleaned.used.root)
    with open(os.path.join(cleaned.used.root, 'etc/machine-id'), 'rb') as handle:
        assert handle.read() == residue.first_boot_machine_id(target)
    assert os.readlink(os.path.join(cleaned.used.root, 'var/lib/dbus/machine-id')) == '/etc/machine-id'


def test_second_plan_is_empty(cleaned):
    assert residue.plan(target_of(cleaned.used.root), residue.Options(categories=ALL_CATEGORIES)) == []


def test_audit_finds_nothing(cleaned):
    assert residue.audit(target_of(cleaned.used.root), residue.Options(categories=ALL_CATEGORIES)) == []


def test_nothing_outside_the_catalogue_changed(cleaned):
    item_paths = [i.path for i in cleaned.items] + [i.path for i in cleaned.applied['items']]
    allowed = item_paths + list(VENDOR_WRITES[cleaned.used.family])
    changed = sorted(p for p in set(cleaned.before) | set(cleaned.after) if cleaned.before.get(p) != cleaned.after.get(p))
    assert changed
    assert [p for p in changed if not covered(p, allowed)] == []
    assert not [p for p in cleaned.after if '.imageprep-' in p]


# -- the audit finds what the removal does not know --------------------------------------
def ed25519_private_key() -> bytes:
    return plant_used_vm.run_host(['sh', '-c', 'd=$(mktemp -d) && ssh-keygen -q -t ed25519 -N "" -C deploy -f "$d/k" '
                                   '&& cat "$d/k" && rm -rf "$d"']).encode()


AUTHORIZED = b'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5 jenkins@ci\n'


@pytest.mark.parametrize('plant, category, path', [
    pytest.param(plant, category, path, id=plant) for plant, category, path in (
        ('private_key', 'private_keys', '/srv/app/deploy.key'),
        ('service_authorized_keys', 'private_keys', '/var/lib/jenkins/.ssh/authorized_keys'),
        ('dbus_machine_id', 'machine_id', '/var/lib/dbus/machine-id'),
        ('machine_id', 'machine_id', '/etc/machine-id'),
        ('host_key', 'ssh_host_keys', '/etc/ssh/ssh_host_ed25519_key'),
        ('sudoers_ghost', 'provisioning_account', '/etc/sudoers.d/91-deploy'),
    )
])
def test_audit_finds_residue_planted_after_cleanup(cleaned, plant, category, path):
    root = cleaned.used.root
    fs = RootFS(root, mounts=[])
    options = residue.Options(categories=ALL_CATEGORIES)
    already = residue.audit(target_of(root), options)
    saved = {p: fs.read_bytes(p) for p in ('/etc/passwd', '/etc/machine-id')}
    dbus = os.readlink(fs.host('/var/lib/dbus/machine-id')) if fs.exists('/var/lib/dbus/machine-id') else None
    try:
        if plant == 'private_key':
            fs.makedirs('/srv/app')
            fs.write(path, ed25519_private_key(), mode=0o600)
        elif plant == 'service_authorized_keys':
            # a service account: UID below 1000, home outside /home, not a home the categories reset
            fs.write('/etc/passwd', saved['/etc/passwd'] + b'jenkins:x:115:122:Jenkins,,,:/var/lib/jenkins:/bin/bash\n')
            fs.makedirs('/var/lib/jenkins/.ssh')
            fs.write(path, AUTHORIZED, mode=0o600)
        elif plant == 'dbus_machine_id':
            fs.delete(path)
            fs.write(path, b'd9e984c3d26147e4b10833fd2a4f3d1a\n')
        elif plant == 'machine_id':
            fs.write(path, b'4c1f0e7a9b2d4e6f8a0b1c2d3e4f5a6b\n', mode=0o444)
        elif plant == 'host_key':
            fs.write(path, ed25519_private_key(), mode=0o600)
        elif plant == 'sudoers_ghost':
            fs.write(path, b'deploy ALL=(ALL) NOPASSWD:ALL\n', mode=0o440)
        findings = residue.audit(target_of(root), options)
        assert [(f.category, f.path) for f in findings if f.path == path] == [(category, path)], findings
    finally:
        for name in ('/srv/app', '/var/lib/jenkins', '/etc/ssh/ssh_host_ed25519_key', '/etc/sudoers.d/91-deploy'):
            fs.delete(name)
        for name, data in saved.items():
            if data is None:
                fs.delete(name)
            else:
                fs.write(name, data)
        if dbus is not None:
            fs.symlink(dbus, '/var/lib/dbus/machine-id')
        else:
            fs.delete('/var/lib/dbus/machine-id')
    assert residue.audit(target_of(root), options) == already


def test_the_documented_catalogue_table_matches_the_catalogue():
    doc = (pathlib.Path(__file__).resolve().parents[4] / 'docs' / 'linux-deprovisioning.md').read_text(encoding='utf-8')
    rows = {match.group(1): (match.group(2), match.group(3))
            for match in re.finditer(r'^\| `([a-z_]+)` \| (secret|identity|hygiene) \| (yes|no) \|', doc, re.MULTILINE)}
    assert rows == {c.name: (c.severity, 'yes' if c.default else 'no') for c in residue.CATALOGUE}
    for category in residue.CATALOGUE:
        row = next(line for line in doc.splitlines() if line.startswith(f'| `{category.name}` |'))
        for rule in category.rules:
            if rule.reset not in ('account', 'report'):
                assert f'`{rule.pattern}`' in row, (category.name, rule.pattern)


@pytest.mark.parametrize('rc', [126, 127])
def test_a_tool_that_cannot_run_in_the_root_is_skipped_with_a_note(tmp_path, rc):
    root = make_root(tmp_path, {
        'etc/os-release': 'ID=debian\n', 'etc/passwd': 'root:x:0:0:root:/root:/bin/bash\n',
        'usr/bin/cloud-init': '#!/usr/bin/python3\n', 'var/lib/cloud/data/instance-id': 'i-0123\n',
    })
    target = target_of(root)
    options = residue.Options(categories=('cloud_init_state',))
    items = residue.plan(target, options)
    assert ('run', 'cloud-init') in {(i.action, i.path) for i in items}
    done = residue.apply(target, options, items, lambda argv, **_: (rc, '', 'exec format error'), running=False)
    assert [note['category'] for note in done['skipped']] == ['cloud_init_state']
    assert 'reset by files only' in done['skipped'][0]['reason']
    assert not os.path.exists(os.path.join(root, 'var/lib/cloud/data'))


def test_a_tool_that_runs_and_fails_is_an_error_before_any_file_is_touched(tmp_path):
    root = make_root(tmp_path, {
        'etc/os-release': 'ID=debian\n', 'etc/passwd': 'root:x:0:0:root:/root:/bin/bash\n',
        'usr/bin/cloud-init': '#!/usr/bin/python3\n', 'var/lib/cloud/data/instance-id': 'i-0123\n',
    })
    target = target_of(root)
    options = residue.Options(categories=('cloud_init_state',))
    with pytest.raises(residue.ResidueError, match='failed'):
        residue.apply(target, options, residue.plan(target, options), lambda argv, **_: (1, '', 'boom'), running=False)
    assert os.path.exists(os.path.join(root, 'var/lib/cloud/data/instance-id'))
