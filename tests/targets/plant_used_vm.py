#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make a root filesystem look like a VM that ran in production before it was captured.

The residue a used VM carries (machine identity, leases, provisioning accounts, secrets,
logs, caches, agent state) is planted the way the real programs leave it:

* On a root whose programs run here (the Debian guest root), the root's own programs do the
  work inside ``chroot``: cloud-init runs all four boot stages against a NoCloud seed (it
  creates the provisioning account, its sudoers file, authorized_keys, SSH host keys,
  hostname, /etc/hosts, ENI and udev network files and its whole state), the Azure agent's
  own provisioning code copies ``ovf-env.xml`` and writes its sudoers file, ``dhclient``
  (through ``ifup``) and ``systemd-networkd`` take real DHCP leases from a DHCP server on a
  virtual NIC, ``useradd``, ``ssh-keygen``, ``bash``, ``crontab``, ``mktemp``,
  ``logrotate``, ``utmpdump``, ``dpkg-deb`` and ``apt-cache`` write their own files. That
  happens in private namespaces (mount, UTS, IPC, network, PID): /proc, /sys and a minimal
  /dev are mounted only there and unmounted at the end, the hostname cloud-init sets and the
  NIC exist only there, and nothing is left behind on this machine when the process exits.
* On a fixture tree of a family that cannot be built here (no programs to run), files are
  written in the programs' real formats, using this machine's tools where they work on a
  directory (``ssh-keygen -f``, ``useradd --prefix``, ``systemd-machine-id-setup --root``,
  ``openssl``, ``utmpdump -r``, ``dpkg-deb``).
* Either way, journal files are real: this machine's ``systemd-journal-remote`` writes them
  from export-format input; the sssd cache is a real LDB file written by ``ldbadd``. Written
  in their format everywhere (no program for them runs here): NetworkManager's internal
  lease, zsh, fish, python, less and vim histories, the mail spool, crash dumps (kdump and
  apport layouts, headers only), the Kerberos keytab, the syslog files before rotation.

Fixed inputs (real generated keys): the provisioning account is ``azureadmin`` (named in
``ovf-env.xml`` and cloud-init's data), the ordinary operator account is ``produser``, the
VM is ``web-prod-01.contoso.internal`` with instance id ``6f2a9c3e-...``, MAC
``00:0d:3a:4f:21:8c`` and address ``10.1.0.4``.

Every planted item is recorded in a manifest: a list of
``{category, path, kind, detail}`` with ``kind`` one of ``file``, ``dir``, ``symlink`` or
``content`` (``path`` is a file that contains the text ``detail``). Categories are those of
the residue catalogue.

Usage:
  plant_used_vm.py ROOT [--family debian|rhel|suse|ubuntu|arch] [--manifest OUT.json]

Needs root and, on this machine: util-linux (unshare, mount, utmpdump), iproute2,
dnsmasq (package dnsmasq-base), openssh-client, systemd-journal-remote, ldb-tools, openssl,
dpkg, zstd.
"""
from __future__ import annotations

import argparse
import base64
import dataclasses
import gzip
import hashlib
import io
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import typing as t

PROVISIONED_USER = 'azureadmin'
PRODUCTION_USER = 'produser'
HOSTNAME = 'web-prod-01'
DOMAIN = 'contoso.internal'
FQDN = f'{HOSTNAME}.{DOMAIN}'
REALM = DOMAIN.upper()
INSTANCE_ID = '6f2a9c3e-4b1d-4e8a-9c7f-2d5b8e1a3c40'
MAC_ADDRESS = '00:0d:3a:4f:21:8c'
IP_ADDRESS = '10.1.0.4'
GATEWAY = '10.1.0.1'
NETMASK = '255.255.255.0'
BROADCAST = '10.1.0.255'
DNS_SERVER = '168.63.129.16'
IFINDEX = 2
# NetworkManager's uuid of the "System eth0" profile it derives from ifcfg-eth0
NM_CONNECTION_UUID = '5fb06bd0-0bb0-7ffb-45f1-d6edd65f3e03'
OPERATOR_ADDRESS = '203.0.113.10'
ATTACKER_ADDRESS = '198.51.100.23'
# 2025-11-22 09:00:00 UTC: the VM's working life in the planted logs
BASE_TIME = 1763802000
BOOT_ID = '8c1d4f0b2a7e4d93b6f1e0a5c3d2b7f4'

CATEGORIES = (
    'ssh_host_keys', 'machine_id', 'random_seed', 'hostname', 'dhcp_leases', 'network_identity',
    'lvm_devices', 'registration', 'user_ssh_keys', 'shell_history', 'provisioning_account',
    'root_password', 'kerberos_keytab', 'directory_service_state', 'logs', 'tmp_files',
    'package_caches', 'crash_dumps', 'mail_spool', 'cron_spool', 'backup_files',
    'cloud_init_state', 'azure_agent_state',
)
KINDS = ('file', 'dir', 'symlink', 'content')
SSH_HOST_KEY_TYPES = ('rsa', 'ecdsa', 'ed25519')


class PlantError(Exception):
    """Planting failed: a program failed or a file it should have written is missing."""


@dataclasses.dataclass(frozen=True)
class FamilyLayout:
    """Where a distribution family keeps the residue that differs between families.

    ``syslog_traditional``: the syslog daemon's default file format is the traditional
    ``Nov 22 09:00:00`` one (RHEL, Ubuntu, Arch's syslog-ng), not RFC 3339 (Debian 12, SUSE).
    """

    name: str
    dhclient_lease: str
    admin_group: str
    syslog_files: tuple[str, str]
    syslog_traditional: bool
    mail_dir: str
    cron_dir: str
    cloud_init_version: str
    package_cache: str
    crash_style: str
    audit_log: bool
    python_version: str
    kernel: str


FAMILIES = {
    'debian': FamilyLayout('debian', '/var/lib/dhcp/dhclient.eth0.leases', 'sudo', ('syslog', 'auth.log'), False,
                           '/var/mail', '/var/spool/cron/crontabs', '22.4.2', 'apt', 'kdump-tools', False, '3.11',
                           '6.1.0-28-cloud-amd64'),
    'ubuntu': FamilyLayout('ubuntu', '/var/lib/dhcp/dhclient.eth0.leases', 'sudo', ('syslog', 'auth.log'), True,
                           '/var/mail', '/var/spool/cron/crontabs', '24.1.3-0ubuntu1~22.04.5', 'apt', 'apport', False, '3.10',
                           '6.5.0-1025-azure'),
    'rhel': FamilyLayout('rhel', '/var/lib/dhclient/dhclient-eth0.leases', 'wheel', ('messages', 'secure'), True,
                         '/var/spool/mail', '/var/spool/cron', '23.4-7.el9_4', 'dnf', 'kdump', True, '3.9',
                         '5.14.0-427.13.1.el9_4.x86_64'),
    'suse': FamilyLayout('suse', '/var/lib/dhcp/dhclient.leases', 'wheel', ('messages', 'warn'), False,
                         '/var/spool/mail', '/var/spool/cron/tabs', '23.3-150100.8.71.1', 'zypp', 'kdump', True, '3.6',
                         '6.4.0-150600.8.8-azure'),
    'arch': FamilyLayout('arch', '/var/lib/dhclient/dhclient.leases', 'wheel', ('pacman.log', 'auth.log'), True,
                         '/var/spool/mail', '/var/spool/cron', '24.2', 'pacman', 'coredump', False, '3.12',
                         '6.11.5-arch1-1'),
}


class Manifest:
    """The list of planted residue; every entry is checked against the root when it is added."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.entries: list[dict[str, str]] = []

    def add(self, category: str, path: str, kind: str, detail: str) -> None:
        """Record one planted item after checking that the root really holds it."""
        if category not in CATEGORIES:
            raise PlantError(f'unknown residue category {category!r}')
        if kind not in KINDS:
            raise PlantError(f'unknown manifest kind {kind!r}')
        problem = entry_problem(self.root, {'category': category, 'path': path, 'kind': kind, 'detail': detail})
        if problem:
            raise PlantError(problem)
        self.entries.append({'category': category, 'path': path, 'kind': kind, 'detail': detail})

    def file(self, category: str, path: str, detail: str) -> None:
        """Record a planted regular file."""
        self.add(category, path, 'file', detail)

    def content(self, category: str, path: str, text: str) -> None:
        """Record residue that is a piece of a shared file (a line of /etc/passwd, /etc/hosts...)."""
        self.add(category, path, 'content', text)


def entry_problem(root: pathlib.Path, entry: dict[str, str]) -> str:
    """Return why ENTRY does not hold in ROOT, or an empty string when it does."""
    path = root / entry['path'].lstrip('/')
    kind = entry['kind']
    if kind == 'symlink':
        return '' if path.is_symlink() else f'{entry["path"]} is not a symlink'
    if path.is_symlink():
        return f'{entry["path"]} is a symlink, manifest says {kind}'
    if kind == 'dir':
        return '' if path.is_dir() else f'{entry["path"]} is not a directory'
    if not path.is_file():
        return f'{entry["path"]} is not a regular file'
    if path.stat().st_size == 0:
        return f'{entry["path"]} is empty'
    if kind == 'content' and entry['detail'].encode() not in path.read_bytes():
        return f'{entry["path"]} does not contain {entry["detail"]!r}'
    return ''


@dataclasses.dataclass(frozen=True)
class Account:
    """A user of the planted root, read from the root's own /etc/passwd."""

    name: str
    uid: int
    gid: int
    home: str


def root_account(root: pathlib.Path, name: str) -> Account:
    """Look NAME up in ROOT/etc/passwd (never in this machine's user database)."""
    for line in (root / 'etc/passwd').read_text(encoding='utf-8').splitlines():
        fields = line.split(':')
        if len(fields) >= 7 and fields[0] == name:
            return Account(name, int(fields[2]), int(fields[3]), fields[5])
    raise PlantError(f'user {name} not found in {root}/etc/passwd')


def root_group_id(root: pathlib.Path, name: str, default: int = 0) -> int:
    """Return the gid of group NAME in ROOT/etc/group, or DEFAULT when the group is missing."""
    group_file = root / 'etc/group'
    if group_file.exists():
        for line in group_file.read_text(encoding='utf-8').splitlines():
            fields = line.split(':')
            if len(fields) >= 3 and fields[0] == name:
                return int(fields[2])
    return default


def run_host(argv: t.Sequence[str], *, stdin: t.Union[str, bytes, None] = None, cwd: t.Optional[pathlib.Path] = None) -> str:
    """Run a program of this machine; return its standard output, raise PlantError on failure."""
    if shutil.which(argv[0]) is None and not os.path.exists(argv[0]):
        raise PlantError(f'{argv[0]} is not installed on this machine')
    completed = subprocess.run(list(argv), input=stdin, capture_output=True, check=False, cwd=cwd, timeout=300,
                               text=not isinstance(stdin, bytes))
    if completed.returncode != 0:
        raise PlantError(f'{shlex.join(argv)} failed ({completed.returncode}): {completed.stderr!s:.2000}')
    return completed.stdout if isinstance(completed.stdout, str) else completed.stdout.decode()


def write_file(path: pathlib.Path, data: t.Union[str, bytes], mode: int = 0o644, owner: tuple[int, int] = (0, 0),
               append: bool = False) -> pathlib.Path:
    """Write DATA to PATH (creating parents), then set its mode and numeric owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    with open(path, 'ab' if append else 'wb') as handle:
        handle.write(raw)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def make_dir(path: pathlib.Path, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> pathlib.Path:
    """Create directory PATH (and parents) with MODE and numeric OWNER."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def rfc2822(stamp: float) -> str:
    """Format STAMP the way cloud-init's util.time_rfc2822 does."""
    return time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(stamp))


def syslog_line(stamp: float, program: str, pid: int, message: str, traditional: bool) -> str:
    """One rsyslog line: RFC 3339 high-precision (Debian 12 default) or the traditional format."""
    if traditional:
        prefix = time.strftime('%b %e %H:%M:%S', time.gmtime(stamp))
    else:
        prefix = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(stamp)) + f'.{int(stamp * 1e6) % 1000000:06d}+00:00'
    return f'{prefix} {HOSTNAME} {program}[{pid}]: {message}\n'


def dhclient_lease_text(interface: str, stamp: float) -> str:
    """A lease in the syntax dhclient writes to its lease database."""
    def when(offset: int) -> str:
        return time.strftime('%w %Y/%m/%d %H:%M:%S', time.gmtime(stamp + offset))
    return textwrap.dedent(f'''\
        lease {{
          interface "{interface}";
          fixed-address {IP_ADDRESS};
          option subnet-mask {NETMASK};
          option routers {GATEWAY};
          option dhcp-lease-time 86400;
          option dhcp-message-type 5;
          option domain-name-servers {DNS_SERVER};
          option dhcp-server-identifier {GATEWAY};
          option dhcp-renewal-time 43200;
          option broadcast-address {BROADCAST};
          option dhcp-rebinding-time 75600;
          option host-name "{HOSTNAME}";
          option domain-name "{DOMAIN}";
          renew {when(43200)};
          rebind {when(75600)};
          expire {when(86400)};
        }}
        ''')


def networkd_lease_text(machine_id: str) -> str:
    """A lease in the format systemd-networkd saves to /run/systemd/netif/leases/<ifindex>."""
    client_id = 'ff' + hashlib.sha256(machine_id.encode()).hexdigest()[:36]
    return textwrap.dedent(f'''\
        # This is private data. Do not parse.
        ADDRESS={IP_ADDRESS}
        NETMASK={NETMASK}
        ROUTER={GATEWAY}
        SERVER_ADDRESS={GATEWAY}
        NEXT_SERVER={GATEWAY}
        BROADCAST={BROADCAST}
        T1=43200
        T2=75600
        LIFETIME=86400
        DNS={DNS_SERVER}
        DOMAINNAME={DOMAIN}
        HOSTNAME={HOSTNAME}
        CLIENTID={client_id}
        ''')


def ovf_env_xml(public_key: str) -> str:
    """The ovf-env.xml Azure attaches on the provisioning ISO (schema of the Azure Linux agent)."""
    return textwrap.dedent(f'''\
        <?xml version="1.0" encoding="utf-8"?>
        <Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" \
xmlns:wa="http://schemas.microsoft.com/windowsazure" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
            <wa:ProvisioningSection>
              <wa:Version>1.0</wa:Version>
              <LinuxProvisioningConfigurationSet xmlns="http://schemas.microsoft.com/windowsazure" \
xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
                <ConfigurationSetType>LinuxProvisioningConfiguration</ConfigurationSetType>
                <HostName>{HOSTNAME}</HostName>
                <UserName>{PROVISIONED_USER}</UserName>
                <DisableSshPasswordAuthentication>true</DisableSshPasswordAuthentication>
                <SSH>
                  <PublicKeys>
                    <PublicKey>
                      <Fingerprint>EB0C0AB4B2D5FC35F2F0658D19F44C8283E2DD62</Fingerprint>
                      <Path>/home/{PROVISIONED_USER}/.ssh/authorized_keys</Path>
                      <Value>{public_key}</Value>
                    </PublicKey>
                  </PublicKeys>
                </SSH>
              </LinuxProvisioningConfigurationSet>
            </wa:ProvisioningSection>
            <wa:PlatformSettingsSection>
              <wa:Version>1.0</wa:Version>
              <wa:PlatformSettings>
                <wa:KmsServerHostname>kms.core.windows.net</wa:KmsServerHostname>
                <wa:ProvisionGuestAgent>true</wa:ProvisionGuestAgent>
                <wa:GuestAgentPackageName xsi:nil="true"/>
                <wa:RetainWindowsPEPassInUnattend>true</wa:RetainWindowsPEPassInUnattend>
                <wa:RetainOfflineServicingPassInUnattend>true</wa:RetainOfflineServicingPassInUnattend>
                <wa:PreprovisionedVm>false</wa:PreprovisionedVm>
              </wa:PlatformSettings>
            </wa:PlatformSettingsSection>
        </Environment>
        ''')


def utmp_text(records: t.Iterable[tuple[int, int, str, str, str, str, float]]) -> str:
    """utmpdump's text form of (type, pid, id, user, line, host, time) records, for ``utmpdump -r``."""
    lines = []
    for kind, pid, ident, user, line, host, stamp in records:
        when = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(stamp)) + f',{int(stamp * 1e6) % 1000000:06d}+00:00'
        addr = host if re.fullmatch(r'[0-9.]+', host) else '0.0.0.0'
        lines.append(f'[{kind}] [{pid:05d}] [{ident:<4.4}] [{user:<8}] [{line:<12}] [{host:<20}] [{addr:<15}] [{when}]\n')
    return ''.join(lines)


def wtmp_records(start: float, kernel: str) -> list[tuple[int, int, str, str, str, str, float]]:
    """A boot, a run level change, and an SSH session of each account, as wtmp holds them."""
    return [
        (2, 0, '~~', 'reboot', '~', kernel, start),
        (1, 51, '~~', 'runlevel', '~', kernel, start + 9),
        (7, 1412, 'ts/0', PROVISIONED_USER, 'pts/0', OPERATOR_ADDRESS, start + 600),
        (8, 1412, 'ts/0', '', 'pts/0', '', start + 1500),
        (7, 2230, 'ts/1', PRODUCTION_USER, 'pts/1', OPERATOR_ADDRESS, start + 3600),
        (8, 2230, 'ts/1', '', 'pts/1', '', start + 5400),
    ]


def btmp_records(start: float) -> list[tuple[int, int, str, str, str, str, float]]:
    """Failed SSH logins as sshd records them in btmp."""
    return [(6, 3000 + n, '', user, 'ssh:notty', ATTACKER_ADDRESS, start + 60 * n)
            for n, user in enumerate(('admin', 'oracle', 'ubuntu', 'root'))]


def lastlog_record(stamp: float, line: str, host: str) -> bytes:
    """One ``struct lastlog`` (int32 time, char line[32], char host[256])."""
    return struct.pack('<i32s256s', int(stamp), line.encode(), host.encode())


def keytab_bytes(principals: t.Sequence[str], realm: str, kvno: int) -> bytes:
    """An MIT Kerberos keytab (format 0x0502) with AES256 and AES128 keys for each principal."""
    def counted(data: bytes) -> bytes:
        return struct.pack('>H', len(data)) + data
    out = bytearray(b'\x05\x02')
    for principal in principals:
        components = principal.split('/')
        for enctype, key_length in ((18, 32), (17, 16)):
            body = struct.pack('>H', len(components)) + counted(realm.encode())
            body += b''.join(counted(c.encode()) for c in components)
            body += struct.pack('>IIB', 1, BASE_TIME, kvno & 0xff)
            body += struct.pack('>H', enctype) + counted(os.urandom(key_length))
            body += struct.pack('>I', kvno)
            out += struct.pack('>i', len(body)) + body
    return bytes(out)


def rpm_lead(name: str) -> bytes:
    """The 96-byte lead every binary RPM package starts with."""
    return struct.pack('>4sBBhh66shh16s', b'\xed\xab\xee\xdb', 3, 0, 0, 1, name.encode()[:65], 1, 5, b'')


class LiveSession:
    """Runs the root's own programs in chroot, inside the private namespaces this process is in.

    Mounts /proc, a read-only /sys and a minimal /dev (bind mounts of null, zero, full, random,
    urandom, tty) in the root, adds a virtual NIC ``eth0`` with the VM's MAC address and a DHCP
    server (dnsmasq) on its peer, and undoes all of it on exit, even after a failure.
    """

    PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self._mounts: list[pathlib.Path] = []
        self._dhcp_server: t.Optional[subprocess.Popen] = None
        self._scratch = pathlib.Path(tempfile.mkdtemp(prefix='plant-used-vm-'))

    def __enter__(self) -> 'LiveSession':
        try:
            self._mount(['-t', 'proc', 'proc'], self.root / 'proc')
            # read-only: the programs see this namespace's NIC, and cannot change anything
            self._mount(['-t', 'sysfs', '-o', 'ro,nosuid,nodev,noexec', 'sysfs'], self.root / 'sys')
            dev = self.root / 'dev'
            self._mount(['-t', 'tmpfs', '-o', 'mode=755,nosuid', 'tmpfs'], dev)
            for node in ('null', 'zero', 'full', 'random', 'urandom', 'tty'):
                (dev / node).touch()
                self._mount(['--bind', f'/dev/{node}'], dev / node)
            for name, target in (('fd', '/proc/self/fd'), ('stdin', '/proc/self/fd/0'), ('stdout', '/proc/self/fd/1'),
                                 ('stderr', '/proc/self/fd/2')):
                (dev / name).symlink_to(target)
            self._start_network()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the DHCP server and unmount everything this session mounted (newest first)."""
        if self._dhcp_server is not None:
            self._dhcp_server.terminate()
            try:
                self._dhcp_server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._dhcp_server.kill()
            self._dhcp_server = None
        while self._mounts:
            target = self._mounts.pop()
            if subprocess.run(['umount', str(target)], capture_output=True, check=False).returncode != 0:
                subprocess.run(['umount', '-l', str(target)], capture_output=True, check=False)
        shutil.rmtree(self._scratch, ignore_errors=True)

    def _mount(self, args: list[str], target: pathlib.Path) -> None:
        run_host(['mount', *args, str(target)])
        self._mounts.append(target)

    def _start_network(self) -> None:
        # the peer is created first, so eth0 gets ifindex 2 as in a VM with one NIC
        run_host(['ip', 'link', 'add', 'dhcp0', 'type', 'veth', 'peer', 'name', 'eth0'])
        run_host(['ip', 'link', 'set', 'eth0', 'address', MAC_ADDRESS])
        run_host(['ip', 'link', 'set', 'lo', 'up'])
        run_host(['ip', 'address', 'add', f'{GATEWAY}/24', 'dev', 'dhcp0'])
        run_host(['ip', 'link', 'set', 'dhcp0', 'up'])
        if shutil.which('dnsmasq') is None:
            raise PlantError('dnsmasq is not installed on this machine (Debian package dnsmasq-base)')
        self._dhcp_server = subprocess.Popen(  # pylint: disable=consider-using-with
            ['dnsmasq', '--keep-in-foreground', '--conf-file=/dev/null', '--port=0', '--interface=dhcp0',
             '--bind-interfaces', '--no-ping', '--dhcp-authoritative', '--pid-file=',
             f'--dhcp-range={IP_ADDRESS},{IP_ADDRESS},{NETMASK},24h', f'--dhcp-host={MAC_ADDRESS},{IP_ADDRESS}',
             f'--dhcp-option=option:router,{GATEWAY}', f'--dhcp-option=option:dns-server,{DNS_SERVER}',
             f'--dhcp-option=option:domain-name,{DOMAIN}', f'--dhcp-leasefile={self._scratch / "dnsmasq.leases"}',
             f'--log-facility={self._scratch / "dnsmasq.log"}'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def has(self, program: str) -> bool:
        """Whether the root has PROGRAM (an absolute path, or a name on the root's PATH)."""
        if program.startswith('/'):
            return os.access(self.root / program.lstrip('/'), os.X_OK)
        return any(os.access(self.root / directory.lstrip('/') / program, os.X_OK) for directory in self.PATH.split(':'))

    def run(self, argv: t.Sequence[str], *, user: t.Optional[str] = None, stdin: t.Optional[str] = None,
            env: t.Optional[dict[str, str]] = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run ARGV with the root's programs in chroot, as root or as USER of the root."""
        account = root_account(self.root, user or 'root')
        command = ['chroot']
        if user:
            command.append(f'--userspec={account.uid}:{account.gid}')
        environment = {'PATH': self.PATH, 'HOME': account.home, 'USER': account.name, 'LOGNAME': account.name,
                       'SHELL': '/bin/bash', 'LANG': 'C.UTF-8', 'TERM': 'dumb'}
        environment.update(env or {})
        completed = subprocess.run(command + [str(self.root)] + list(argv), input=stdin, capture_output=True, text=True,
                                   env=environment, check=False, timeout=300)
        if check and completed.returncode != 0:
            raise PlantError(f'in {self.root}: {shlex.join(argv)} failed ({completed.returncode}):\n'
                             f'{completed.stdout[-2000:]}\n{completed.stderr[-2000:]}')
        return completed

    def dhcp_server_log(self) -> str:
        """What the DHCP server logged (for error messages)."""
        log = self._scratch / 'dnsmasq.log'
        return log.read_text(encoding='utf-8', errors='replace') if log.exists() else ''


class Planter:
    """Plants every residue category into one root and records it in a manifest."""

    def __init__(self, root: pathlib.Path, family: str, session: t.Optional[LiveSession]) -> None:
        self.root = root
        self.layout = FAMILIES[family]
        self.session = session
        self.manifest = Manifest(root)
        self._keys = pathlib.Path(tempfile.mkdtemp(prefix='plant-operator-key-'))
        self.operator_key = ''
        self.operator_fingerprint = ''

    # -- helpers ------------------------------------------------------------------------------
    def path(self, path: str) -> pathlib.Path:
        """The host path of PATH inside the root."""
        return self.root / path.lstrip('/')

    def owner(self, user: str) -> tuple[int, int]:
        """Numeric (uid, gid) of USER in the root."""
        account = root_account(self.root, user)
        return account.uid, account.gid

    def home(self, user: str) -> str:
        """Home directory of USER in the root."""
        return root_account(self.root, user).home

    def can_run(self, program: str) -> bool:
        """Whether PROGRAM of the root can run here."""
        return self.session is not None and self.session.has(program)

    def live(self) -> LiveSession:
        """The live session (only called on code paths that checked can_run)."""
        if self.session is None:
            raise PlantError('no live session for this root')
        return self.session

    # -- the whole run ------------------------------------------------------------------------
    def plant(self) -> list[dict[str, str]]:
        """Plant every category; return the manifest."""
        try:
            self._make_operator_key()
            self.plant_machine_id()
            self.plant_random_seed()
            if self.can_run('cloud-init'):
                self.run_cloud_init()
            else:
                self.write_cloud_init_results()
            self.plant_azure_agent()
            self.plant_production_user()
            self.plant_dhcp_leases()
            self.plant_network_identity()
            self.plant_user_ssh_keys()
            self.plant_shell_history()
            self.plant_cron_spool()
            self.plant_tmp_files()
            self.plant_logs()
            self.plant_journal()
            self.plant_package_caches()
            self.plant_crash_dumps()
            self.plant_mail_spool()
            self.plant_kerberos_keytab()
            self.plant_directory_service_state()
            self.plant_backup_files()
        finally:
            shutil.rmtree(self._keys, ignore_errors=True)
        return self.manifest.entries

    def _make_operator_key(self) -> None:
        # the key pair of the person who deployed the VM; only its public half enters the root
        key = self._keys / 'operator'
        run_host(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', f'operator@{DOMAIN}', '-f', str(key)])
        self.operator_key = (self._keys / 'operator.pub').read_text(encoding='utf-8').strip()
        self.operator_fingerprint = run_host(['ssh-keygen', '-l', '-f', str(key) + '.pub']).split()[1]

    # -- identity -----------------------------------------------------------------------------
    def plant_machine_id(self) -> None:
        """/etc/machine-id and a separate copy in /var/lib/dbus/machine-id."""
        if self.can_run('systemd-machine-id-setup') and self.can_run('dbus-uuidgen'):
            self.live().run(['systemd-machine-id-setup'])
            self.live().run(['dbus-uuidgen', '--ensure'])
        else:
            self.path('/etc/machine-id').unlink(missing_ok=True)
            run_host(['systemd-machine-id-setup', f'--root={self.root}'])
            # a separate file with the same id, as dbus-uuidgen --ensure leaves it
            write_file(self.path('/var/lib/dbus/machine-id'), self.path('/etc/machine-id').read_bytes())
        machine_id = self.machine_id()
        if self.path('/var/lib/dbus/machine-id').read_text(encoding='utf-8').strip() != machine_id:
            raise PlantError('/var/lib/dbus/machine-id differs from /etc/machine-id')
        self.manifest.content('machine_id', '/etc/machine-id', machine_id)
        self.manifest.content('machine_id', '/var/lib/dbus/machine-id', machine_id)

    def machine_id(self) -> str:
        """The planted machine id."""
        value = self.path('/etc/machine-id').read_text(encoding='utf-8').strip()
        if not re.fullmatch(r'[0-9a-f]{32}', value):
            raise PlantError(f'/etc/machine-id holds {value!r}, not a machine id')
        return value

    def plant_random_seed(self) -> None:
        """systemd's saved random seed and the host secret systemd-creds encrypts credentials with."""
        seed, secret = '/var/lib/systemd/random-seed', '/var/lib/systemd/credential.secret'
        if self.can_run('/usr/lib/systemd/systemd-random-seed') and self.can_run('systemd-creds'):
            self.live().run(['/usr/lib/systemd/systemd-random-seed', 'save'])
            self.live().run(['systemd-creds', 'setup'])
            detail = 'written by {}'
        else:
            write_file(self.path(seed), os.urandom(512), 0o600)
            # struct credential_host_secret_format: 16 reserved bytes, then 4096 random bytes
            write_file(self.path(secret), bytes(16) + os.urandom(4096), 0o400)
            detail = 'in the format of {}'
        self.manifest.file('random_seed', seed, detail.format('systemd-random-seed save'))
        self.manifest.file('random_seed', secret, detail.format('systemd-creds setup'))

    # -- cloud-init: real run -----------------------------------------------------------------
    def run_cloud_init(self) -> None:
        """Boot cloud-init's four stages against a NoCloud seed, as on the VM's first boot."""
        seed = '/var/lib/cloud/seed/nocloud'
        write_file(self.path(f'{seed}/meta-data'), f'instance-id: {INSTANCE_ID}\nlocal-hostname: {HOSTNAME}\n'
                                                   f'public-keys:\n  - {self.operator_key}\n')
        write_file(self.path(f'{seed}/network-config'), textwrap.dedent(f'''\
            version: 2
            ethernets:
              eth0:
                match:
                  macaddress: "{MAC_ADDRESS}"
                set-name: eth0
                dhcp4: true
            '''))
        write_file(self.path(f'{seed}/user-data'), textwrap.dedent(f'''\
            #cloud-config
            user:
              name: {PROVISIONED_USER}
              gecos: Azure provisioning account
            hostname: {HOSTNAME}
            fqdn: {FQDN}
            manage_etc_hosts: true
            locale: C.UTF-8
            # the root file system of a test root must never be grown or repartitioned from here
            resize_rootfs: false
            growpart:
              mode: "off"
            '''))
        for stage in (['init', '--local'], ['init'], ['modules', '--mode', 'config'], ['modules', '--mode', 'final']):
            self.live().run(['cloud-init', *stage])
        result = json.loads(self.path('/var/lib/cloud/data/result.json').read_text(encoding='utf-8'))
        if result['v1']['errors']:
            raise PlantError(f'cloud-init reported errors: {result["v1"]["errors"]}')
        instance = f'/var/lib/cloud/instances/{INSTANCE_ID}'
        manifest = self.manifest
        manifest.add('cloud_init_state', '/var/lib/cloud/instance', 'symlink', f'-> {instance}, written by cloud-init')
        manifest.add('cloud_init_state', instance, 'dir', 'instance directory written by cloud-init')
        for name in ('obj.pkl', 'user-data.txt', 'boot-finished', 'datasource'):
            manifest.file('cloud_init_state', f'{instance}/{name}', 'written by cloud-init')
        for name in ('instance-id', 'previous-instance-id', 'status.json', 'result.json', 'set-hostname'):
            manifest.file('cloud_init_state', f'/var/lib/cloud/data/{name}', 'written by cloud-init')
        manifest.add('cloud_init_state', seed, 'dir', 'NoCloud seed the instance booted from')
        manifest.add('cloud_init_state', '/run/cloud-init', 'dir', 'runtime state written by cloud-init')
        for log in ('/var/log/cloud-init.log', '/var/log/cloud-init-output.log'):
            manifest.file('cloud_init_state', log, 'written by cloud-init')
        for key_type in SSH_HOST_KEY_TYPES:
            for suffix in ('', '.pub'):
                manifest.file('ssh_host_keys', f'/etc/ssh/ssh_host_{key_type}_key{suffix}', 'regenerated by cloud-init (cc_ssh)')
        manifest.content('hostname', '/etc/hostname', HOSTNAME)
        manifest.content('hostname', '/etc/hosts', f'127.0.1.1 {FQDN} {HOSTNAME}')
        self._record_provisioned_account('created by cloud-init (useradd)')
        manifest.content('provisioning_account', '/etc/sudoers.d/90-cloud-init-users', f'{PROVISIONED_USER} ALL=(ALL) NOPASSWD:ALL')
        manifest.content('user_ssh_keys', f'/home/{PROVISIONED_USER}/.ssh/authorized_keys', self.operator_key.split()[1])
        manifest.content('user_ssh_keys', '/root/.ssh/authorized_keys', f'Please login as the user \\"{PROVISIONED_USER}\\"')
        manifest.content('network_identity', '/etc/udev/rules.d/70-persistent-net.rules', MAC_ADDRESS)
        manifest.content('network_identity', '/etc/network/interfaces.d/50-cloud-init', 'iface eth0 inet dhcp')

    def _record_provisioned_account(self, how: str) -> None:
        self.manifest.content('provisioning_account', '/etc/passwd', f'{PROVISIONED_USER}:x:')
        self.manifest.content('provisioning_account', '/etc/shadow', f'{PROVISIONED_USER}:')
        self.manifest.content('provisioning_account', '/etc/group', f'{PROVISIONED_USER}:x:')
        self.manifest.add('provisioning_account', f'/home/{PROVISIONED_USER}', 'dir', how)

    # -- cloud-init: written in its format ----------------------------------------------------
    def write_cloud_init_results(self) -> None:
        """What cloud-init (Azure datasource) leaves when the family's own cloud-init cannot run here."""
        version = self.layout.cloud_init_version
        self.write_hostname()
        self.write_ssh_host_keys()
        self.add_user(PROVISIONED_USER, 'Azure provisioning account', [self.layout.admin_group])
        self._record_provisioned_account('created with useradd --prefix (this machine), as cloud-init does')
        admin = self.owner(PROVISIONED_USER)
        home = self.home(PROVISIONED_USER)
        make_dir(self.path(f'{home}/.ssh'), 0o700, admin)
        write_file(self.path(f'{home}/.ssh/authorized_keys'), self.operator_key + '\n', 0o600, admin)
        self.manifest.content('user_ssh_keys', f'{home}/.ssh/authorized_keys', self.operator_key.split()[1])
        # cloud-init's disable_root: the key is kept for root but forced to a message
        root_options = ('no-port-forwarding,no-agent-forwarding,no-X11-forwarding,command="echo \'Please login as the user '
                        f'\\"{PROVISIONED_USER}\\" rather than the user \\"root\\".\';echo;sleep 10;exit 142"')
        make_dir(self.path('/root/.ssh'), 0o700)
        write_file(self.path('/root/.ssh/authorized_keys'), f'{root_options} {self.operator_key}\n', 0o600)
        self.manifest.content('user_ssh_keys', '/root/.ssh/authorized_keys', f'Please login as the user \\"{PROVISIONED_USER}\\"')
        sudoers = (f'# Created by cloud-init v. {version} on {rfc2822(BASE_TIME - 86400)}\n\n'
                   f'# User rules for {PROVISIONED_USER}\n{PROVISIONED_USER} ALL=(ALL) NOPASSWD:ALL\n')
        make_dir(self.path('/etc/sudoers.d'), 0o750)
        write_file(self.path('/etc/sudoers.d/90-cloud-init-users'), sudoers, 0o440)
        self.manifest.content('provisioning_account', '/etc/sudoers.d/90-cloud-init-users', f'{PROVISIONED_USER} ALL=(ALL) NOPASSWD:ALL')

        started = BASE_TIME - 86400
        datasource = 'DataSourceAzure [seed=/dev/sr0]'
        instance = f'/var/lib/cloud/instances/{INSTANCE_ID}'
        stages = {}
        for offset, stage in enumerate(('init-local', 'init', 'modules-config', 'modules-final')):
            stages[stage] = {'errors': [], 'finished': started + 2 * offset + 1.5, 'start': started + 2 * offset}
        stages['modules-init'] = {'errors': [], 'finished': None, 'start': None}
        files = {
            '/var/lib/cloud/data/instance-id': INSTANCE_ID + '\n',
            '/var/lib/cloud/data/previous-instance-id': INSTANCE_ID + '\n',
            '/var/lib/cloud/data/previous-datasource': f'DataSourceAzure: {datasource}\n',
            '/var/lib/cloud/data/previous-hostname': HOSTNAME,
            '/var/lib/cloud/data/python-version': self.layout.python_version,
            '/var/lib/cloud/data/set-hostname': json.dumps({'fqdn': FQDN, 'hostname': HOSTNAME}, indent=1),
            '/var/lib/cloud/data/status.json': json.dumps({'v1': {'datasource': datasource, **stages, 'stage': None}},
                                                          indent=1, sort_keys=True),
            '/var/lib/cloud/data/result.json': json.dumps({'v1': {'datasource': datasource, 'errors': []}}, indent=1),
            f'{instance}/datasource': f'DataSourceAzure: {datasource}\n',
            f'{instance}/boot-finished': f'21.37 - {rfc2822(started + 8)} - v. {version}\n',
            f'{instance}/user-data.txt': '',
            f'{instance}/vendor-data.txt': '',
            f'{instance}/sem/config_users_groups': f'{started + 3:.6f}\n',
            f'{instance}/sem/config_ssh': f'{started + 3:.6f}\n',
            '/var/lib/cloud/seed/azure/ovf-env.xml': ovf_env_xml(self.operator_key),
        }
        for path, data in files.items():
            write_file(self.path(path), data, 0o600 if path.endswith(('.txt', 'ovf-env.xml')) else 0o644)
        for directory in ('handlers', 'scripts/per-boot', 'scripts/per-instance', 'scripts/per-once', 'scripts/vendor'):
            make_dir(self.path(f'/var/lib/cloud/{directory}'))
        self.path('/var/lib/cloud/instance').symlink_to(instance)
        self.manifest.add('cloud_init_state', '/var/lib/cloud/instance', 'symlink', f'-> {instance}, as cloud-init links it')
        self.manifest.add('cloud_init_state', instance, 'dir', 'instance directory in the layout cloud-init writes')
        for path in files:
            if self.path(path).stat().st_size:
                self.manifest.file('cloud_init_state', path, 'in the format cloud-init writes')
        log = ''.join(f'{time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(started + n))},{120 + n:03d} - {source}[{level}]: {message}\n'
                      for n, (source, level, message) in enumerate([
                          ('util.py', 'DEBUG', f"Cloud-init v. {version} running 'init-local' at {rfc2822(started)}. Up 6.12 seconds."),
                          ('handlers.py', 'DEBUG', 'start: init-local/search-Azure: searching for local data from DataSourceAzure'),
                          ('util.py', 'DEBUG', f'Writing to /var/lib/cloud/data/instance-id - wb: [644] {len(INSTANCE_ID) + 1} bytes'),
                          ('cc_set_hostname.py', 'DEBUG', f'Setting the hostname to {FQDN} ({HOSTNAME})'),
                          ('distros/__init__.py', 'DEBUG', f'Adding user {PROVISIONED_USER}'),
                          ('util.py', 'DEBUG', f"Cloud-init v. {version} finished at {rfc2822(started + 8)}. Datasource {datasource}."),
                      ]))
        write_file(self.path('/var/log/cloud-init.log'), log, 0o640, (0, root_group_id(self.root, 'adm')))
        output = (f"Cloud-init v. {version} running 'init' at {rfc2822(started + 2)}. Up 8.01 seconds.\n"
                  f'Cloud-init v. {version} finished at {rfc2822(started + 8)}. Datasource {datasource}.  Up 21.37 seconds\n')
        write_file(self.path('/var/log/cloud-init-output.log'), output, 0o640, (0, root_group_id(self.root, 'adm')))
        for path in ('/var/log/cloud-init.log', '/var/log/cloud-init-output.log'):
            self.manifest.file('cloud_init_state', path, 'in the format cloud-init writes')

    def write_hostname(self) -> None:
        """A production hostname with its /etc/hosts line (cloud-init's hosts template of the family)."""
        write_file(self.path('/etc/hostname'), HOSTNAME + '\n')
        address = '127.0.1.1' if self.layout.name in ('debian', 'ubuntu') else '127.0.0.1'
        hosts = self.path('/etc/hosts')
        previous = hosts.read_text(encoding='utf-8') if hosts.exists() else '127.0.0.1 localhost\n::1 localhost\n'
        write_file(hosts, f'{address} {FQDN} {HOSTNAME}\n' + previous)
        self.manifest.content('hostname', '/etc/hostname', HOSTNAME)
        self.manifest.content('hostname', '/etc/hosts', f'{address} {FQDN} {HOSTNAME}')

    def write_ssh_host_keys(self) -> None:
        """Host keys generated with this machine's ssh-keygen into the root."""
        make_dir(self.path('/etc/ssh'))
        for key_type in SSH_HOST_KEY_TYPES:
            key = self.path(f'/etc/ssh/ssh_host_{key_type}_key')
            key.unlink(missing_ok=True)
            key.with_name(key.name + '.pub').unlink(missing_ok=True)
            run_host(['ssh-keygen', '-q', '-t', key_type, '-N', '', '-C', f'root@{HOSTNAME}', '-f', str(key)])
            for suffix in ('', '.pub'):
                self.manifest.file('ssh_host_keys', f'/etc/ssh/ssh_host_{key_type}_key{suffix}', 'generated by ssh-keygen -f (this machine)')

    def add_user(self, name: str, comment: str, groups: t.Sequence[str]) -> None:
        """Create a user with the root's useradd, or with this machine's ``useradd --prefix``."""
        options = ['-m', '-s', '/bin/bash', '-c', comment]
        if groups:
            options += ['-G', ','.join(groups)]
        if self.can_run('useradd'):
            self.live().run(['useradd', *options, name])
        else:
            run_host(['useradd', '--prefix', str(self.root), '-k', str(self.path('/etc/skel')), *options, name])

    # -- Azure agent ---------------------------------------------------------------------------
    def plant_azure_agent(self) -> None:
        """waagent's provisioning: ovf-env.xml copied from the ISO, sudoers entry, certificates, log."""
        lib = '/var/lib/waagent'
        if self.can_run('waagent'):
            iso = self.path('/mnt/cdrom/secure')
            write_file(iso / 'ovf-env.xml', ovf_env_xml(self.operator_key))
            try:
                self.live().run(['python3', '-c', WAAGENT_PROVISIONING, INSTANCE_ID])
            finally:
                shutil.rmtree(self.path('/mnt/cdrom'), ignore_errors=True)
            how = 'written by the Azure agent\'s provisioning code'
        else:
            make_dir(self.path(lib), 0o700)
            write_file(self.path(f'{lib}/ovf-env.xml'), ovf_env_xml(self.operator_key), 0o600)
            write_file(self.path(f'{lib}/provisioned'), INSTANCE_ID, 0o644)
            make_dir(self.path('/etc/sudoers.d'), 0o750)
            write_file(self.path('/etc/sudoers.d/waagent'), f'{PROVISIONED_USER} ALL=(ALL) NOPASSWD: ALL\n', 0o440)
            # the agent's own command (CryptUtil.gen_transport_cert)
            run_host(['openssl', 'req', '-x509', '-nodes', '-subj', '/CN=LinuxTransport', '-days', '730', '-newkey', 'rsa:2048',
                      '-keyout', str(self.path(f'{lib}/TransportPrivate.pem')), '-out', str(self.path(f'{lib}/TransportCert.pem'))])
            stamp = time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(BASE_TIME - 86400))
            lines = ['Azure Linux Agent Version: 2.9.1.1', 'Copying ovf-env.xml', 'Starting provisioning',
                     'Create user account if not exists', 'Configure sudoer', 'Deploy ssh public key.', 'Provisioning complete']
            write_file(self.path('/var/log/waagent.log'),
                       ''.join(f'{stamp}.{n:06d}Z INFO Daemon Daemon {line}\n' for n, line in enumerate(lines)))
            how = 'in the format the Azure agent writes'
        self.manifest.content('azure_agent_state', f'{lib}/ovf-env.xml', f'<UserName>{PROVISIONED_USER}</UserName>')
        self.manifest.content('azure_agent_state', f'{lib}/provisioned', INSTANCE_ID)
        for name in ('TransportCert.pem', 'TransportPrivate.pem'):
            self.manifest.file('azure_agent_state', f'{lib}/{name}', how)
        self.manifest.content('provisioning_account', '/etc/sudoers.d/waagent', f'{PROVISIONED_USER} ALL=(ALL) NOPASSWD: ALL')
        self.manifest.file('logs', '/var/log/waagent.log', how)

    def plant_production_user(self) -> None:
        """An ordinary operator account that worked on the VM."""
        self.add_user(PRODUCTION_USER, 'Production operator', [])
        self.manifest.content('backup_files', '/etc/passwd-', 'root:x:0:0:')
        for name in ('shadow-', 'group-', 'gshadow-'):
            self.manifest.content('backup_files', f'/etc/{name}', 'root:')

    # -- network ------------------------------------------------------------------------------
    def plant_dhcp_leases(self) -> None:
        """Leases of dhclient, NetworkManager (internal and dhclient) and systemd-networkd."""
        nm_dir = '/var/lib/NetworkManager'
        nm_dhclient = f'{nm_dir}/dhclient-{NM_CONNECTION_UUID}-eth0.lease'
        networkd_lease = f'/run/systemd/netif/leases/{IFINDEX}'
        if self.can_run('/usr/lib/systemd/systemd-networkd') and self.can_run('dhclient') and self.can_run('ifup'):
            self._run_networkd()
            # ifup runs dhclient exactly as a booted Debian VM does, with the ENI file cloud-init wrote
            self.live().run(['ifup', 'eth0'])
            self.live().run(['dhclient', '-x', '-pf', '/run/dhclient.eth0.pid'], check=False)
            # NetworkManager's dhclient back end: same client, NetworkManager's lease file
            make_dir(self.path(nm_dir), 0o755)
            make_dir(self.path('/run/NetworkManager'), 0o755)
            self.live().run(['dhclient', '-1', '-sf', '/bin/true', '-pf', '/run/NetworkManager/dhclient-eth0.pid',
                             '-lf', nm_dhclient, 'eth0'])
            self.live().run(['dhclient', '-x', '-sf', '/bin/true', '-pf', '/run/NetworkManager/dhclient-eth0.pid'], check=False)
            leases = [self.layout.dhclient_lease, nm_dhclient, networkd_lease]
            for lease in leases:
                if not self.path(lease).exists():
                    raise PlantError(f'no lease at {lease}; DHCP server log:\n{self.live().dhcp_server_log()}')
            self.manifest.content('dhcp_leases', self.layout.dhclient_lease, f'fixed-address {IP_ADDRESS};')
            self.manifest.content('dhcp_leases', nm_dhclient, f'fixed-address {IP_ADDRESS};')
            self.manifest.content('dhcp_leases', networkd_lease, f'ADDRESS={IP_ADDRESS}')
        else:
            write_file(self.path(self.layout.dhclient_lease), dhclient_lease_text('eth0', BASE_TIME))
            write_file(self.path(nm_dhclient), dhclient_lease_text('eth0', BASE_TIME))
            network_user = root_account(self.root, 'systemd-network') if self._has_user('systemd-network') else None
            owner = (network_user.uid, network_user.gid) if network_user else (0, 0)
            for directory in ('/run/systemd/netif', '/run/systemd/netif/leases', '/run/systemd/netif/links'):
                make_dir(self.path(directory), 0o755, owner)
            write_file(self.path(networkd_lease), networkd_lease_text(self.machine_id()), 0o644, owner)
            self.manifest.content('dhcp_leases', self.layout.dhclient_lease, f'fixed-address {IP_ADDRESS};')
            self.manifest.content('dhcp_leases', nm_dhclient, f'fixed-address {IP_ADDRESS};')
            self.manifest.content('dhcp_leases', networkd_lease, f'ADDRESS={IP_ADDRESS}')
        # NetworkManager's internal DHCP client keeps only the address (nm-dhcp-nettools lease_save)
        internal = f'{nm_dir}/internal-{NM_CONNECTION_UUID}-eth0.lease'
        write_file(self.path(internal), f'# This is private data. Do not parse.\nADDRESS={IP_ADDRESS}\n')
        self.manifest.content('dhcp_leases', internal, f'ADDRESS={IP_ADDRESS}')
        if self.layout.name == 'suse':
            self._write_wicked_lease()
        if self.layout.name == 'arch':
            self._write_dhcpcd_lease()

    def _has_user(self, name: str) -> bool:
        try:
            root_account(self.root, name)
        except PlantError:
            return False
        return True

    def _run_networkd(self) -> None:
        network_file = '/etc/systemd/network/10-eth0.network'
        write_file(self.path(network_file), f'[Match]\nMACAddress={MAC_ADDRESS}\n\n[Network]\nDHCP=ipv4\n')
        self.manifest.content('network_identity', network_file, f'MACAddress={MAC_ADDRESS}')
        owner = self.owner('systemd-network')
        for directory in ('/run/systemd/netif', '/run/systemd/netif/links', '/run/systemd/netif/leases', '/run/systemd/netif/lldp'):
            make_dir(self.path(directory), 0o755, owner)
        lease = self.path(f'/run/systemd/netif/leases/{IFINDEX}')
        command = ['chroot', str(self.root), '/usr/lib/systemd/systemd-networkd']
        with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env={'PATH': LiveSession.PATH, 'SYSTEMD_LOG_LEVEL': 'info'}) as networkd:
            try:
                deadline = time.monotonic() + 30
                while not lease.exists() and networkd.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.1)
            finally:
                # killed, not stopped: a clean stop would drop the lease file, a powered-off VM keeps it
                networkd.send_signal(signal.SIGKILL)
                errors = networkd.communicate()[1]
        if not lease.exists():
            raise PlantError(f'systemd-networkd took no lease:\n{errors[-2000:]}\n{self.live().dhcp_server_log()}')

    def _write_wicked_lease(self) -> None:
        path = '/var/lib/wicked/lease-eth0-dhcp-ipv4.xml'
        client_id = 'ff:' + ':'.join(re.findall('..', hashlib.sha256(self.machine_id().encode()).hexdigest()[:36]))
        write_file(self.path(path), textwrap.dedent(f'''\
            <lease>
              <family>ipv4</family>
              <type>dhcp</type>
              <state>granted</state>
              <acquired>{BASE_TIME}</acquired>
              <ipv4:dhcp>
                <client-id>{client_id}</client-id>
                <server-address>{DNS_SERVER}</server-address>
                <lease-time>4294967295</lease-time>
                <address>{IP_ADDRESS}</address>
                <netmask>{NETMASK}</netmask>
                <broadcast>{BROADCAST}</broadcast>
                <hostname>{HOSTNAME}</hostname>
                <dns>
                  <domain>{DOMAIN}</domain>
                  <server>{DNS_SERVER}</server>
                </dns>
              </ipv4:dhcp>
            </lease>
            '''), 0o644)
        self.manifest.content('dhcp_leases', path, f'<address>{IP_ADDRESS}</address>')

    def _write_dhcpcd_lease(self) -> None:
        # dhcpcd stores the DHCP ACK as received: a BOOTP message followed by its options
        mac = bytes.fromhex(MAC_ADDRESS.replace(':', ''))
        header = struct.pack('>BBBBIHH4s4s4s4s16s64s128s4s', 2, 1, 6, 0, 0x3903F326, 0, 0, bytes(4), bytes(map(int, IP_ADDRESS.split('.'))),
                             bytes(4), bytes(4), mac.ljust(16, b'\0'), bytes(64), bytes(128), b'\x63\x82\x53\x63')
        options = bytearray()
        for code, value in ((53, b'\x05'), (54, bytes(map(int, GATEWAY.split('.')))), (51, struct.pack('>I', 86400)),
                            (1, bytes(map(int, NETMASK.split('.')))), (3, bytes(map(int, GATEWAY.split('.')))),
                            (6, bytes(map(int, DNS_SERVER.split('.')))), (15, DOMAIN.encode())):
            options += bytes([code, len(value)]) + value
        options += b'\xff'
        path = '/var/lib/dhcpcd/eth0.lease'
        write_file(self.path(path), header + bytes(options), 0o644)
        self.manifest.file('dhcp_leases', path, 'DHCP ACK as dhcpcd stores it')

    def plant_network_identity(self) -> None:
        """udev's persistent net rule for the VM's MAC (written by cloud-init where it ran)."""
        rules = '/etc/udev/rules.d/70-persistent-net.rules'
        if not self.path(rules).exists():
            write_file(self.path(rules), '# This file was automatically generated by the /lib/udev/write_net_rules\n'
                                         '# program, run by the persistent-net-generator.rules rules file.\n\n'
                                         f'# PCI device 0x1414:0x00 (hv_netvsc)\nSUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", '
                                         f'ATTR{{address}}=="{MAC_ADDRESS}", ATTR{{type}}=="1", KERNEL=="eth*", NAME="eth0"\n')
            self.manifest.content('network_identity', rules, MAC_ADDRESS)

    # -- user secrets -------------------------------------------------------------------------
    def plant_user_ssh_keys(self) -> None:
        """Private keys, authorized_keys and known_hosts of root and the operator account."""
        for user, key_type in (('root', 'ecdsa'), (PRODUCTION_USER, 'ed25519')):
            home = self.home(user)
            owner = self.owner(user)
            make_dir(self.path(f'{home}/.ssh'), 0o700, owner)
            key = f'{home}/.ssh/id_{key_type}'
            if self.can_run('ssh-keygen'):
                self.live().run(['ssh-keygen', '-q', '-t', key_type, '-N', '', '-C', f'{user}@{HOSTNAME}', '-f', key],
                                user=None if user == 'root' else user)
                how = 'generated by the root\'s ssh-keygen as the user'
            else:
                run_host(['ssh-keygen', '-q', '-t', key_type, '-N', '', '-C', f'{user}@{HOSTNAME}', '-f', str(self.path(key))])
                for suffix in ('', '.pub'):
                    os.chown(self.path(key + suffix), *owner)
                how = 'generated by ssh-keygen -f (this machine)'
            self.manifest.file('user_ssh_keys', key, how)
            self.manifest.file('user_ssh_keys', key + '.pub', how)
            known_hosts = self.path(f'{home}/.ssh/known_hosts')
            host_key = self.path('/etc/ssh/ssh_host_ed25519_key.pub').read_text(encoding='utf-8').split()[:2]
            write_file(known_hosts, f'git.{DOMAIN},10.1.0.20 {" ".join(host_key)}\n', 0o644, owner)
            if self.can_run('ssh-keygen'):
                self.live().run(['ssh-keygen', '-H', '-f', f'{home}/.ssh/known_hosts'], user=None if user == 'root' else user)
            else:
                run_host(['ssh-keygen', '-H', '-f', str(known_hosts)])
            self.path(f'{home}/.ssh/known_hosts.old').unlink(missing_ok=True)
            self.manifest.content('user_ssh_keys', f'{home}/.ssh/known_hosts', '|1|')
        home = self.home(PRODUCTION_USER)
        write_file(self.path(f'{home}/.ssh/authorized_keys'), self.operator_key + '\n', 0o600, self.owner(PRODUCTION_USER))
        self.manifest.content('user_ssh_keys', f'{home}/.ssh/authorized_keys', self.operator_key.split()[1])

    def plant_shell_history(self) -> None:
        """bash histories (real bash where it runs), and zsh, fish, python, less and vim histories."""
        commands = {
            'root': ['systemctl status nginx', 'journalctl -u nginx --since today', f'vim /etc/nginx/sites-enabled/{HOSTNAME}.conf',
                     'certbot renew --dry-run', 'apt-get update && apt-get -y upgrade'],
            PROVISIONED_USER: ['sudo -i', 'df -h', 'sudo journalctl -f', 'exit'],
            PRODUCTION_USER: ["mysql -u app -p'Winter2025!' appdb", f'scp backup.sql.gz backup@{DOMAIN}:/srv/backups/',
                              'git -C /srv/app pull', 'python3 manage.py migrate', 'less /var/log/app/app.log'],
        }
        for user, lines in commands.items():
            home = self.home(user)
            history = f'{home}/.bash_history'
            if self.can_run('bash'):
                # ``history -s`` records a command without running it; bash writes the file on exit
                script = ''.join(f'history -s {shlex.quote(line)}\n' for line in lines)
                self.live().run(['bash', '-i'], user=None if user == 'root' else user, stdin=script,
                                env={'HISTFILE': history, 'HISTTIMEFORMAT': '%F %T ', 'HISTSIZE': '1000', 'HISTFILESIZE': '2000'})
            else:
                write_file(self.path(history), ''.join(f'#{BASE_TIME + 60 * n}\n{line}\n' for n, line in enumerate(lines)),
                           0o600, self.owner(user))
            self.manifest.content('shell_history', history, lines[0])
        self._write_history(PROVISIONED_USER, '.zsh_history',
                            ''.join(f': {BASE_TIME + 30 * n}:0;{line}\n' for n, line in enumerate(commands[PROVISIONED_USER])),
                            commands[PROVISIONED_USER][0])
        fish = ''.join(f'- cmd: {line}\n  when: {BASE_TIME + 30 * n}\n' for n, line in enumerate(commands[PRODUCTION_USER][1:]))
        self._write_history(PRODUCTION_USER, '.local/share/fish/fish_history', fish, commands[PRODUCTION_USER][1])
        python = 'import os\nos.environ["DATABASE_URL"]\nfrom app import models\nmodels.User.objects.count()\n'
        for user in ('root', PRODUCTION_USER):
            self._write_history(user, '.python_history', python, 'os.environ["DATABASE_URL"]')
            self._write_history(user, '.lesshst', '.less-history-file:\n.search\n"ERROR\n"password\n.shell\n"ls -l\n', '"password')
            viminfo = textwrap.dedent(f'''\
                # This viminfo file was generated by Vim 9.0.
                # You may edit it if you're careful!

                # Viminfo version
                |1,4

                # Value of 'encoding' when this file was written
                *encoding=utf-8


                # hlsearch on (H) or off (h):
                ~h
                # Command Line History (newest to oldest):
                :wq
                |2,0,{BASE_TIME},,"wq"

                # Search String History (newest to oldest):
                ?/server_name
                |2,1,{BASE_TIME},47,"server_name"

                # File marks:
                '0  12  4  /etc/nginx/sites-enabled/{HOSTNAME}.conf
                |4,48,12,4,{BASE_TIME},"/etc/nginx/sites-enabled/{HOSTNAME}.conf"
                ''')
            self._write_history(user, '.viminfo', viminfo, f'/etc/nginx/sites-enabled/{HOSTNAME}.conf')

    def _write_history(self, user: str, name: str, text: str, marker: str) -> None:
        home = self.home(user)
        owner = self.owner(user)
        target = self.path(f'{home}/{name}')
        parent = target.parent
        created = []
        while not parent.exists():
            created.append(parent)
            parent = parent.parent
        for directory in reversed(created):
            make_dir(directory, 0o700, owner)
        write_file(target, text, 0o600, owner)
        self.manifest.content('shell_history', f'{home}/{name}', marker)

    def plant_cron_spool(self) -> None:
        """The operator's crontab, installed with crontab -u where the root's cron runs."""
        table = (f'# m h  dom mon dow   command\n15 2 * * * /usr/bin/mysqldump appdb | gzip > /var/backups/appdb.sql.gz\n'
                 f'*/5 * * * * curl -fsS https://healthchecks.{DOMAIN}/ping/3f1c >/dev/null\n')
        spool = f'{self.layout.cron_dir}/{PRODUCTION_USER}'
        if self.can_run('crontab'):
            staging = self.path('/run/plant-crontab')
            write_file(staging, table)
            try:
                self.live().run(['crontab', '-u', PRODUCTION_USER, '/run/plant-crontab'])
            finally:
                staging.unlink(missing_ok=True)
        else:
            spool_dir = self.path(self.layout.cron_dir)
            make_dir(spool_dir, 0o700 if self.layout.name != 'debian' else 0o1730)
            write_file(self.path(spool), table, 0o600, self.owner(PRODUCTION_USER))
        self.manifest.content('cron_spool', spool, 'mysqldump appdb')

    def plant_tmp_files(self) -> None:
        """Files and a directory in /tmp and /var/tmp (made by mktemp where it runs)."""
        make_dir(self.path('/tmp'), 0o1777)
        make_dir(self.path('/var/tmp'), 0o1777)
        owner = self.owner(PRODUCTION_USER)
        if self.can_run('mktemp'):
            made = self.live().run(['sh', '-c', 'f=$(mktemp) && echo "export of orders 2025-11" > "$f" && echo "$f"; '
                                          'd=$(mktemp -d -p /var/tmp deploy.XXXXXX) && echo "release 4.2.1" > "$d/RELEASE" && echo "$d"'],
                                   user=PRODUCTION_USER).stdout.split()
            temp_file, temp_dir = made
        else:
            temp_file, temp_dir = '/tmp/tmp.Xq3LrV0kPa', '/var/tmp/deploy.k2Hq9s'
            write_file(self.path(temp_file), 'export of orders 2025-11\n', 0o600, owner)
            make_dir(self.path(temp_dir), 0o700, owner)
            write_file(self.path(f'{temp_dir}/RELEASE'), 'release 4.2.1\n', 0o644, owner)
        self.manifest.file('tmp_files', temp_file, 'made by mktemp')
        self.manifest.add('tmp_files', temp_dir, 'dir', 'made by mktemp -d')
        write_file(self.path('/tmp/appdb.sql.gz'), gzip.compress(b'-- MySQL dump 10.13\nINSERT INTO users VALUES (1);\n'), 0o644, owner)
        self.manifest.file('tmp_files', '/tmp/appdb.sql.gz', 'a database dump left in /tmp')
        write_file(self.path('/var/tmp/upgrade-notes.txt'), 'nginx 1.22 -> 1.24 done\n', 0o644, owner)
        self.manifest.file('tmp_files', '/var/tmp/upgrade-notes.txt', 'a note left in /var/tmp')

    # -- logs ---------------------------------------------------------------------------------
    def plant_logs(self) -> None:
        """syslog and auth logs with rotated generations, wtmp, btmp, lastlog, audit log."""
        general, auth = self.layout.syslog_files
        adm = root_group_id(self.root, 'adm')
        utmp = root_group_id(self.root, 'utmp')
        kernel = self.layout.kernel
        for generation, start in enumerate((BASE_TIME - 14 * 86400, BASE_TIME - 7 * 86400, BASE_TIME)):
            self._append_syslog(general, auth, start, adm)
            records = utmp_text(wtmp_records(start, kernel))
            failed = utmp_text(btmp_records(start))
            for name, text, mode in (('wtmp', records, 0o664), ('btmp', failed, 0o660)):
                binary = self._utmp_binary(text)
                write_file(self.path(f'/var/log/{name}'), binary, mode, (0, utmp), append=True)
            if generation < 2:
                self._rotate_logs(general, auth)
        self._write_lastlog()
        for name in (general, auth, 'wtmp', 'btmp', 'lastlog'):
            self.manifest.file('logs', f'/var/log/{name}', 'current log')
        rotated = re.compile(r'(\.\d+(\.gz)?|\.gz|-\d{8}|-\d{4}-\d{2}-\d{2}-\d+(\.gz)?)$')
        for path in sorted(self.path('/var/log').rglob('*')):
            if path.is_file() and not path.is_symlink() and rotated.search(path.name) and path.stat().st_size:
                self.manifest.file('logs', '/' + str(path.relative_to(self.root)), 'rotated log')
        if self.layout.audit_log:
            lines = ''.join(f'type=USER_LOGIN msg=audit({BASE_TIME + n * 600}.{n:03d}:{4100 + n}): pid={1412 + n} uid=0 '
                            f'auid={1000 + n % 2} ses={3 + n} msg=\'op=login id={1000 + n % 2} exe="/usr/sbin/sshd" '
                            f'hostname={OPERATOR_ADDRESS} addr={OPERATOR_ADDRESS} terminal=/dev/pts/{n} res=success\'\n'
                            for n in range(4))
            write_file(self.path('/var/log/audit/audit.log'), lines, 0o600)
            os.chmod(self.path('/var/log/audit'), 0o700)
            self.manifest.content('logs', '/var/log/audit/audit.log', 'type=USER_LOGIN')

    def _append_syslog(self, general: str, auth: str, start: float, adm: int) -> None:
        style = self.layout.syslog_traditional
        if general == 'pacman.log':
            text = ''.join(f'[{time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime(start + n * 60))}] [ALPM] {line}\n'
                           for n, line in enumerate(['transaction started', 'upgraded nginx (1.26.1-1 -> 1.26.2-1)',
                                                     'upgraded openssl (3.3.1-1 -> 3.3.2-1)', 'transaction completed']))
        else:
            text = ''.join(syslog_line(start + n * 60, program, pid, message, style) for n, (program, pid, message) in enumerate([
                ('systemd', 1, 'Started nginx.service - A high performance web server and a reverse proxy server.'),
                ('dhclient', 612, f'bound to {IP_ADDRESS} -- renewal in 42307 seconds.'),
                ('CRON', 2210, f'({PRODUCTION_USER}) CMD (/usr/bin/mysqldump appdb | gzip > /var/backups/appdb.sql.gz)'),
                ('kernel', 0, 'hv_netvsc 000d3a4f-218c-000d-3a4f-218c000d3a4f eth0: VF slot 1 added'),
            ]))
        auth_text = ''.join(syslog_line(start + 600 + n * 60, program, pid, message, style) for n, (program, pid, message) in enumerate([
            ('sshd', 1412, f'Accepted publickey for {PROVISIONED_USER} from {OPERATOR_ADDRESS} port 51234 ssh2: '
                           f'ED25519 {self.operator_fingerprint}'),
            ('sudo', 1450, f'{PROVISIONED_USER} : TTY=pts/0 ; PWD=/home/{PROVISIONED_USER} ; USER=root ; COMMAND=/usr/bin/systemctl restart nginx'),
            ('sshd', 3001, f'Invalid user oracle from {ATTACKER_ADDRESS} port 40022'),
            ('sshd', 2230, f'Accepted publickey for {PRODUCTION_USER} from {OPERATOR_ADDRESS} port 51240 ssh2: ED25519 {self.operator_fingerprint}'),
        ]))
        write_file(self.path(f'/var/log/{general}'), text, 0o640, (0, adm), append=True)
        write_file(self.path(f'/var/log/{auth}'), auth_text, 0o640, (0, adm), append=True)

    def _utmp_binary(self, text: str) -> bytes:
        if self.can_run('utmpdump'):
            staging = self.path('/run/plant-utmp.txt')
            write_file(staging, text)
            try:
                with open(staging, 'rb') as source:
                    completed = subprocess.run(['chroot', str(self.root), 'utmpdump', '-r'], stdin=source, capture_output=True,
                                               check=False, env={'PATH': LiveSession.PATH})
            finally:
                staging.unlink(missing_ok=True)
            if completed.returncode != 0:
                raise PlantError(f'utmpdump -r failed: {completed.stderr.decode(errors="replace")}')
            return completed.stdout
        completed = subprocess.run(['utmpdump', '-r'], input=text.encode(), capture_output=True, check=False)
        if completed.returncode != 0:
            raise PlantError(f'utmpdump -r failed: {completed.stderr.decode(errors="replace")}')
        return completed.stdout

    def _rotate_logs(self, general: str, auth: str) -> None:
        """One rotation: the root's logrotate with its own configuration, or .1 / .N.gz by hand."""
        if self.can_run('logrotate'):
            # the rotation rsyslog's package installs, for the logs written above
            config = self.path('/run/plant-rsyslog.logrotate')
            write_file(config, f'/var/log/{general}\n/var/log/{auth}\n{{\n\trotate 4\n\tweekly\n\tmissingok\n\tnotifempty\n'
                               '\tcompress\n\tdelaycompress\n\tsharedscripts\n}\n')
            try:
                # with the root's own rules for wtmp and btmp
                self.live().run(['logrotate', '-f', '/run/plant-rsyslog.logrotate', '/etc/logrotate.d/wtmp', '/etc/logrotate.d/btmp'])
            finally:
                config.unlink(missing_ok=True)
            return
        for name in (general, auth, 'wtmp', 'btmp'):
            current = self.path(f'/var/log/{name}')
            first = current.with_name(name + '.1')
            if name not in ('wtmp', 'btmp') and first.exists():
                with open(first, 'rb') as source:
                    data = source.read()
                write_file(current.with_name(name + '.2.gz'), gzip.compress(data), 0o640, (first.stat().st_uid, first.stat().st_gid))
            stat = current.stat()
            os.replace(current, first)
            write_file(current, b'', stat.st_mode & 0o7777, (stat.st_uid, stat.st_gid))

    def _write_lastlog(self) -> None:
        path = self.path('/var/log/lastlog')
        utmp = root_group_id(self.root, 'utmp')
        if not path.exists():
            write_file(path, b'', 0o664, (0, utmp))
        with open(path, 'r+b') as handle:
            for user, offset in ((PROVISIONED_USER, 600), (PRODUCTION_USER, 3600)):
                handle.seek(root_account(self.root, user).uid * 292)
                handle.write(lastlog_record(BASE_TIME + offset, 'pts/0', OPERATOR_ADDRESS))

    def plant_journal(self) -> None:
        """Real journal files (system and the provisioning user's), written by systemd-journal-remote."""
        machine_id = self.machine_id()
        directory = make_dir(self.path(f'/var/log/journal/{machine_id}'), 0o2755, (0, root_group_id(self.root, 'systemd-journal')))
        uid = root_account(self.root, PROVISIONED_USER).uid
        system = [
            ('kernel', 0, 0, f'Linux version {self.layout.kernel}', 'kernel'),
            ('systemd', 1, 0, 'Started ssh.service - OpenBSD Secure Shell server.', 'journal'),
            ('cloud-init', 480, 0, f'Cloud-init v. {self.layout.cloud_init_version} finished.', 'syslog'),
            ('sshd', 1412, 0, f'Accepted publickey for {PROVISIONED_USER} from {OPERATOR_ADDRESS} port 51234 ssh2: '
                              f'ED25519 {self.operator_fingerprint}', 'syslog'),
            ('sudo', 1450, uid, f'{PROVISIONED_USER} : TTY=pts/0 ; PWD=/home/{PROVISIONED_USER} ; USER=root ; COMMAND=/usr/bin/apt-get upgrade',
             'syslog'),
        ]
        user = [('systemd', 1401, uid, 'Reached target default.target - Main User Target.', 'journal'),
                ('bash', 1420, uid, f'{PROVISIONED_USER} ran a deployment script', 'stdout')]
        gid = root_group_id(self.root, 'systemd-journal')
        for name, entries in (('system.journal', system), (f'user-{uid}.journal', user)):
            target = directory / name
            target.unlink(missing_ok=True)
            export = ''.join(
                f'__REALTIME_TIMESTAMP={(BASE_TIME + n * 61) * 1000000}\n__MONOTONIC_TIMESTAMP={(5 + n * 61) * 1000000}\n'
                f'_BOOT_ID={BOOT_ID}\n_MACHINE_ID={machine_id}\n_HOSTNAME={HOSTNAME}\nPRIORITY=6\nSYSLOG_IDENTIFIER={ident}\n'
                f'_PID={pid}\n_UID={entry_uid}\n_COMM={ident}\n_TRANSPORT={transport}\nMESSAGE={message}\n\n'
                for n, (ident, pid, entry_uid, message, transport) in enumerate(entries))
            source = directory / (name + '.export')
            source.write_text(export, encoding='utf-8')
            try:
                run_host([journal_remote_program(), f'--output={target}', '--split-mode=none', str(source)])
            finally:
                source.unlink(missing_ok=True)
            os.chown(target, 0, gid)
            os.chmod(target, 0o640)
            self.manifest.file('logs', '/' + str(target.relative_to(self.root)), 'journal file written by systemd-journal-remote')

    # -- caches, crashes, spools ----------------------------------------------------------------
    def plant_package_caches(self) -> None:
        """Downloaded packages and repository metadata of the family's package manager."""
        kind = self.layout.package_cache
        if kind == 'apt':
            self._plant_apt_cache()
        elif kind == 'dnf':
            repo = 'rhel-9-for-x86_64-appstream-rpms-c5cf3b5a2f6d1e9a'
            self._plant_rpm_cache(f'/var/cache/dnf/{repo}/packages/nginx-1.20.1-14.el9_2.1.x86_64.rpm',
                                  f'/var/cache/dnf/{repo}/repodata/repomd.xml')
        elif kind == 'zypp':
            repo = 'SLE-Module-Basesystem15-SP6-Updates'
            self._plant_rpm_cache(f'/var/cache/zypp/packages/{repo}/x86_64/nginx-1.21.5-150600.10.3.1.x86_64.rpm',
                                  f'/var/cache/zypp/raw/{repo}/repodata/repomd.xml')
        else:
            self._plant_pacman_cache()

    def _plant_apt_cache(self) -> None:
        name = 'contoso-monitoring-agent_1.4.2-1_amd64.deb'
        archive = f'/var/cache/apt/archives/{name}'
        staging = self.path('/run/plant-package')
        control = ('Package: contoso-monitoring-agent\nVersion: 1.4.2-1\nArchitecture: amd64\nMaintainer: Contoso Ops <ops@contoso.com>\n'
                   'Description: Contoso monitoring agent\n Ships metrics to the Contoso monitoring service.\n')
        write_file(staging / 'DEBIAN/control', control)
        write_file(staging / 'etc/contoso/agent.conf', f'endpoint = https://metrics.{DOMAIN}\n')
        make_dir(self.path('/var/cache/apt/archives'))
        try:
            if self.can_run('dpkg-deb'):
                self.live().run(['dpkg-deb', '--root-owner-group', '--build', '/run/plant-package', archive])
                how = 'built by the root\'s dpkg-deb'
            else:
                run_host(['dpkg-deb', '--root-owner-group', '--build', str(staging), str(self.path(archive))])
                how = 'built by dpkg-deb (this machine)'
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.manifest.file('package_caches', archive, how)
        data = self.path(archive).read_bytes()
        stanza = control.replace('Description:', f'Filename: pool/main/c/contoso-monitoring-agent/{name}\nSize: {len(data)}\n'
                                                 f'SHA256: {hashlib.sha256(data).hexdigest()}\nDescription:')
        lists = f'/var/lib/apt/lists/apt.{DOMAIN}_debian_dists_bookworm_main_binary-amd64_Packages'
        write_file(self.path(lists), stanza)
        self.manifest.content('package_caches', lists, 'Package: contoso-monitoring-agent')
        if self.can_run('apt-cache'):
            self.live().run(['apt-cache', 'gencaches'])
            for cache in ('/var/cache/apt/pkgcache.bin', '/var/cache/apt/srcpkgcache.bin'):
                self.manifest.file('package_caches', cache, 'written by apt-cache gencaches')

    def _plant_rpm_cache(self, package: str, repomd: str) -> None:
        write_file(self.path(package), rpm_lead(pathlib.PurePath(package).stem))
        self.manifest.file('package_caches', package, 'downloaded package (RPM lead only)')
        write_file(self.path(repomd), textwrap.dedent(f'''\
            <?xml version="1.0" encoding="UTF-8"?>
            <repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
              <revision>{BASE_TIME}</revision>
              <data type="primary">
                <checksum type="sha256">{hashlib.sha256(package.encode()).hexdigest()}</checksum>
                <location href="repodata/{hashlib.sha256(package.encode()).hexdigest()}-primary.xml.gz"/>
                <timestamp>{BASE_TIME}</timestamp>
              </data>
            </repomd>
            '''))
        self.manifest.content('package_caches', repomd, '<repomd')

    def _plant_pacman_cache(self) -> None:
        package = '/var/cache/pacman/pkg/nginx-1.26.2-1-x86_64.pkg.tar.zst'
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode='w') as archive:
            info = b'pkgname = nginx\npkgver = 1.26.2-1\narch = x86_64\n'
            member = tarfile.TarInfo('.PKGINFO')
            member.size = len(info)
            member.mtime = BASE_TIME
            archive.addfile(member, io.BytesIO(info))
        compressed = subprocess.run(['zstd', '-q', '-c'], input=buffer.getvalue(), capture_output=True, check=True).stdout
        write_file(self.path(package), compressed)
        self.manifest.file('package_caches', package, 'downloaded package (zstd tar with .PKGINFO)')

    def plant_crash_dumps(self) -> None:
        """Crash reports in the family's crash-dump layout, and a systemd-coredump file."""
        stamp = time.gmtime(BASE_TIME + 3 * 3600)
        style = self.layout.crash_style
        if style == 'apport':
            report = '/var/crash/_usr_bin_python3.10.1001.crash'
            body = textwrap.dedent(f'''\
                ProblemType: Crash
                Architecture: amd64
                Date: {time.strftime('%a %b %d %H:%M:%S %Y', stamp)}
                DistroRelease: Ubuntu 22.04
                ExecutablePath: /usr/bin/python3.10
                ProcCmdline: /usr/bin/python3 /srv/app/worker.py --queue orders
                ProcCwd: /srv/app
                Signal: 11
                Uname: Linux 6.5.0-1025-azure x86_64
                CoreDump: base64
                 {base64.b64encode(gzip.compress(b'ELF core')).decode()}
                ''')
            write_file(self.path(report), body, 0o640, self.owner(PRODUCTION_USER))
            self.manifest.content('crash_dumps', report, 'ProblemType: Crash')
        if style in ('apport', 'kdump-tools'):
            directory = f'/var/crash/{time.strftime("%Y%m%d%H%M", stamp)}'
            suffix = time.strftime('%Y%m%d%H%M', stamp)
            write_file(self.path(f'{directory}/dmesg.{suffix}'), '[ 8123.456789] Kernel panic - not syncing: Fatal exception\n')
            write_file(self.path(f'{directory}/dump.{suffix}'), b'KDUMP   ' + bytes(504))
            self.manifest.content('crash_dumps', f'{directory}/dmesg.{suffix}', 'Kernel panic')
            self.manifest.file('crash_dumps', f'{directory}/dump.{suffix}', 'makedumpfile dump (header only)')
        if style == 'kdump':
            directory = f'/var/crash/127.0.0.1-{time.strftime("%Y-%m-%d-%H:%M:%S", stamp)}'
            write_file(self.path(f'{directory}/vmcore-dmesg.txt'), '[ 8123.456789] Kernel panic - not syncing: Fatal exception\n')
            write_file(self.path(f'{directory}/vmcore'), b'KDUMP   ' + bytes(504))
            self.manifest.content('crash_dumps', f'{directory}/vmcore-dmesg.txt', 'Kernel panic')
            self.manifest.file('crash_dumps', f'{directory}/vmcore', 'makedumpfile dump (header only)')
        core = f'/var/lib/systemd/coredump/core.python3.1001.{BOOT_ID}.2874.{(BASE_TIME + 3 * 3600) * 1000000}'
        elf_header = struct.pack('<4sBBBB8xHHIQQQIHHHHHH', b'\x7fELF', 2, 1, 1, 0, 4, 62, 1, 0, 64, 0, 0, 64, 56, 1, 0, 0, 0)
        write_file(self.path(core), elf_header, 0o640)
        self.manifest.file('crash_dumps', core, 'systemd-coredump file (ELF core header only)')

    def plant_mail_spool(self) -> None:
        """Undelivered local mail (cron output) in mbox format."""
        when = time.strftime('%a %b %e %H:%M:%S %Y', time.gmtime(BASE_TIME + 7800))
        mail_group = root_group_id(self.root, 'mail')
        for user in ('root', PRODUCTION_USER):
            message = textwrap.dedent(f'''\
                From root@{FQDN}  {when}
                Return-path: <root@{FQDN}>
                From: root@{FQDN} (Cron Daemon)
                To: {user}@{FQDN}
                Subject: Cron <{user}@{HOSTNAME}> /usr/bin/mysqldump appdb | gzip > /var/backups/appdb.sql.gz
                Date: {time.strftime('%a, %d %b %Y %H:%M:%S +0000', time.gmtime(BASE_TIME + 7800))}

                mysqldump: Got error: 1045: Access denied for user 'app'@'localhost' (using password: YES)

                ''')
            spool = f'{self.layout.mail_dir}/{user}'
            owner = self.owner(user)
            write_file(self.path(spool), message, 0o660, (owner[0], mail_group))
            self.manifest.content('mail_spool', spool, 'Subject: Cron')

    def plant_kerberos_keytab(self) -> None:
        """/etc/krb5.keytab of a domain-joined host (MIT keytab format, random keys)."""
        principals = [f'host/{FQDN}', f'host/{HOSTNAME}', f'{HOSTNAME.upper()}$']
        write_file(self.path('/etc/krb5.keytab'), keytab_bytes(principals, REALM, 2), 0o600)
        self.manifest.file('kerberos_keytab', '/etc/krb5.keytab', f'keytab with {", ".join(principals)} @{REALM}')

    def plant_directory_service_state(self) -> None:
        """sssd's cache of a domain user, a real LDB file written by ldbadd."""
        database = self.path(f'/var/lib/sss/db/cache_{DOMAIN}.ldb')
        make_dir(database.parent, 0o700)
        database.unlink(missing_ok=True)
        ldif = textwrap.dedent(f'''\
            dn: cn=sysdb
            cn: sysdb
            description: base object
            version: 0.23

            dn: cn={DOMAIN},cn=sysdb
            cn: {DOMAIN}

            dn: cn=users,cn={DOMAIN},cn=sysdb
            cn: users

            dn: name=jdoe@{DOMAIN},cn=users,cn={DOMAIN},cn=sysdb
            name: jdoe@{DOMAIN}
            objectCategory: user
            uidNumber: 1668801105
            gidNumber: 1668800513
            fullName: John Doe
            homeDirectory: /home/jdoe@{DOMAIN}
            loginShell: /bin/bash
            cachedPassword: $6$Xq3LrV0kPa$4k1Jd9fQ0mUu0iS3yY7y1Sx5wC6v8eA2bN4zR1tH0gL9pK3oM7nB5vC2xZ8aQ6sD1fG4hJ7kL0
            lastLogin: {BASE_TIME}
            createTimestamp: {BASE_TIME - 86400}
            ''')
        ldif_file = database.with_suffix('.ldif')
        ldif_file.write_text(ldif, encoding='utf-8')
        try:
            run_host(['ldbadd', '-H', f'tdb://{database}', str(ldif_file)])
        finally:
            ldif_file.unlink(missing_ok=True)
        os.chmod(database, 0o600)
        self.manifest.file('directory_service_state', f'/var/lib/sss/db/cache_{DOMAIN}.ldb', 'sssd cache (LDB written by ldbadd)')

    def plant_backup_files(self) -> None:
        """Editor backups next to the files they copy."""
        hosts = self.path('/etc/hosts')
        write_file(self.path('/etc/hosts~'), hosts.read_bytes())
        self.manifest.content('backup_files', '/etc/hosts~', HOSTNAME)
        sshd_config = self.path('/etc/ssh/sshd_config')
        if sshd_config.exists():
            write_file(self.path('/etc/ssh/sshd_config~'), sshd_config.read_bytes())
            self.manifest.file('backup_files', '/etc/ssh/sshd_config~', 'editor backup')


WAAGENT_PROVISIONING = r'''
import sys
from azurelinuxagent.common import conf, logger
from azurelinuxagent.common.osutil import get_osutil
from azurelinuxagent.common.utils.cryptutil import CryptUtil
from azurelinuxagent.pa.provision.default import ProvisionHandler

instance_id = sys.argv[1]
conf.load_conf_from_file('/etc/waagent.conf')
logger.add_logger_appender(logger.AppenderType.FILE, logger.LogLevel.INFO, path='/var/log/waagent.log')
osutil_class = type(get_osutil())
# The provisioning ISO's files are already at the agent's mount point and there is no DMI
# for this VM: only these device operations are replaced; the rest is the agent's own code.
osutil_class.mount_dvd = lambda self, *args, **kwargs: None
osutil_class.umount_dvd = lambda self, *args, **kwargs: None
osutil_class.eject_dvd = lambda self, *args, **kwargs: None
osutil_class.get_instance_id = lambda self: instance_id
handler = ProvisionHandler()
logger.info('Copying ovf-env.xml')
ovf_env = handler.protocol_util.copy_ovf_env()
logger.info('Starting provisioning')
handler.config_user_account(ovf_env)
handler.write_provisioned()
lib_dir = conf.get_lib_dir()
CryptUtil(conf.get_openssl_cmd()).gen_transport_cert(lib_dir + '/TransportPrivate.pem', lib_dir + '/TransportCert.pem')
logger.info('Provisioning complete')
'''


def journal_remote_program() -> str:
    """Path of this machine's systemd-journal-remote."""
    for candidate in ('/usr/lib/systemd/systemd-journal-remote', '/lib/systemd/systemd-journal-remote'):
        if os.access(candidate, os.X_OK):
            return candidate
    raise PlantError('systemd-journal-remote is not installed on this machine (Debian package systemd-journal-remote)')


def detect_family(root: pathlib.Path) -> str:
    """The family of ROOT from its os-release (ID, then ID_LIKE)."""
    for candidate in (root / 'etc/os-release', root / 'usr/lib/os-release'):
        if candidate.exists() or candidate.is_symlink():
            text = (root / 'usr/lib/os-release').read_text(encoding='utf-8') if candidate.is_symlink() else candidate.read_text(encoding='utf-8')
            fields = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.MULTILINE))
            for word in [fields.get('ID', '')] + fields.get('ID_LIKE', '').split():
                for family, names in (('debian', {'debian'}), ('ubuntu', {'ubuntu'}), ('rhel', {'rhel', 'fedora', 'centos'}),
                                      ('suse', {'suse', 'sles', 'opensuse'}), ('arch', {'arch'})):
                    if word in names:
                        return family
    raise PlantError(f'cannot tell the family of {root}; pass --family')


def chroot_works(root: pathlib.Path) -> bool:
    """Whether the root's own programs run here (a real root, not a fixture tree)."""
    if not os.access(root / 'bin/sh', os.X_OK):
        return False
    return subprocess.run(['chroot', str(root), '/bin/sh', '-c', 'exit 0'], capture_output=True, check=False).returncode == 0


PARENT_NAMESPACES_VARIABLE = 'PLANT_USED_VM_PARENT_NAMESPACES'
NAMESPACES = ('mnt', 'uts', 'ipc', 'net', 'pid')


def namespace_ids() -> str:
    """This process's mount, UTS, IPC, network and PID namespaces, e.g. ``mnt:[4026531841] ...``."""
    return ' '.join(os.readlink(f'/proc/self/ns/{name}') for name in NAMESPACES)


def plant(root: pathlib.Path, family: t.Optional[str] = None) -> list[dict[str, str]]:
    """Plant production residue into ROOT and return the manifest.

    A root whose programs run here is planted by a child process in private namespaces
    (``unshare``), so mounts, the hostname and the virtual NIC never reach this machine.
    """
    root = root.resolve()
    family = family or detect_family(root)
    if family not in FAMILIES:
        raise PlantError(f'unknown family {family!r}; one of {", ".join(FAMILIES)}')
    if not chroot_works(root):
        return Planter(root, family, None).plant()
    with tempfile.TemporaryDirectory(prefix='plant-used-vm-') as scratch:
        manifest_path = pathlib.Path(scratch) / 'manifest.json'
        command = ['unshare', '--mount', '--propagation', 'private', '--uts', '--ipc', '--net', '--pid', '--fork',
                   '--kill-child', sys.executable, str(pathlib.Path(__file__).resolve()), str(root), '--family', family,
                   '--in-namespaces', '--manifest', str(manifest_path)]
        environment = dict(os.environ, **{PARENT_NAMESPACES_VARIABLE: namespace_ids()})
        completed = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900, env=environment)
        if completed.returncode != 0:
            raise PlantError(f'planting {root} failed:\n{completed.stderr[-6000:]}')
        return json.loads(manifest_path.read_text(encoding='utf-8'))


def plant_in_namespaces(root: pathlib.Path, family: str) -> list[dict[str, str]]:
    """Plant a runnable root; the caller is already in private mount/UTS/IPC/net/PID namespaces."""
    # cloud-init sets the hostname, the session mounts and adds a NIC: never in this machine's namespaces
    parent = os.environ.get(PARENT_NAMESPACES_VARIABLE, '')
    if not parent or parent == namespace_ids() or os.getpid() != 1:
        raise PlantError('--in-namespaces is only for the child process plant() starts with unshare')
    with LiveSession(root) as session:
        return Planter(root, family, session).plant()


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', type=pathlib.Path)
    parser.add_argument('--family', choices=sorted(FAMILIES))
    parser.add_argument('--manifest', type=pathlib.Path, help='write the manifest (JSON) here')
    parser.add_argument('--in-namespaces', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        if args.in_namespaces:
            entries = plant_in_namespaces(args.root.resolve(), args.family)
        else:
            entries = plant(args.root, args.family)
    except PlantError as error:
        raise SystemExit(f'plant_used_vm: {error}') from error
    if args.manifest:
        args.manifest.write_text(json.dumps(entries, indent=1) + '\n', encoding='utf-8')
    if not args.in_namespaces:
        print(f'planted {len(entries)} items into {args.root}')


if __name__ == '__main__':
    main()
