#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A real libvirt host for the tests: the system daemon, and test domains defined on test disks.

``ensure_daemon()`` starts ``virtlogd`` and ``libvirtd`` by hand when they do not answer (these
hosts have no systemd to socket-activate them), waits until ``virsh -c qemu:///system list``
answers and reports whether it found them running or started them. A start that fails stops
what it started and raises with the tail of the daemon's log.

``LibvirtDomain.define()`` renders a domain from disks (OS disk ``vda``, data disks ``vdb``...),
memory and an optional kernel/initrd/command line (direct kernel boot) or UEFI firmware (OVMF
from flash, with the domain's own variable store): ``<domain type='qemu'>``
(``kvm`` only where qemu_vm.py's probe shows that KVM runs a guest kernel), virtio disks, the
serial console logged to a file, no graphics, no network unless an SSH port is forwarded (QEMU's
user-mode network: libvirt's default network needs a bridge and dnsmasq, and is not used).
QEMU runs as root without relabelling, so test files keep their owner and test directories need
not be open to libvirt's ``libvirt-qemu`` user. A domain used as a context manager is always
destroyed and undefined. ``SshDomain`` reaches its guest over SSH on a forwarded loopback port;
``DebianDomain`` is one that boots the cached Debian disk of qemu_vm.py on a qcow2 overlay, as
root (demo_vm.py's ``DemoVM`` is another).

Test domains are named ``imageprep-test-<pid>-<random>-<label>``: concurrent tests never clash,
and ``cleanup_stale()`` removes the domains whose creating process is gone (killed runs).

Usage:
  libvirt_host.py daemon        start the daemons unless they answer; say how they were found
  libvirt_host.py cleanup [--include-unowned]
                                destroy and undefine test domains left behind by dead processes
  libvirt_host.py boot [DIR]    boot the cached Debian disk as a domain, shut it down on Ctrl-C/SIGTERM
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import grp
import json
import os
import pathlib
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
import xml.etree.ElementTree as ET

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import qemu_vm  # noqa: E402  pylint: disable=wrong-import-position
import target_cache  # noqa: E402  pylint: disable=wrong-import-position

CONNECT_URI = 'qemu:///system'
TEST_DOMAIN_PREFIX = 'imageprep-test-'
RUN_DIR = pathlib.Path('/run')
LOG_DIR = pathlib.Path('/var/log/libvirt')
# where libvirt's QEMU driver keeps each domain's QEMU log (written through virtlogd)
QEMU_LOG_DIR = LOG_DIR / 'qemu'
VIRTLOGD_SOCKET = RUN_DIR / 'libvirt' / 'virtlogd-sock'
# the account Debian's libvirt-daemon-system creates and qemu.conf runs QEMU as
QEMU_USER = 'libvirt-qemu'
KVM_DEVICE = pathlib.Path('/dev/kvm')
KVM_GROUP = 'kvm'
# what udev's default rule gives /dev/kvm on Debian; without udev the device stays root-only
KVM_DEVICE_MODE = 0o660
DAEMON_TIMEOUT = 30.0
VIRSH_TIMEOUT = 60.0
QEMU_NAMESPACE = 'http://libvirt.org/schemas/domain/qemu/1.0'
DISK_FORMATS = ('qcow2', 'raw', 'vmdk', 'vpc', 'vhdx')
# what else a domain may carry that would make `virsh undefine` refuse (UEFI variables, saved state, snapshots)
UNDEFINE_OPTIONS = ('--nvram', '--managed-save', '--snapshots-metadata', '--checkpoints-metadata')
# virtio-blk devices take PCI slots from 0x2 upwards; the forwarded NIC sits at the end of the bus
USER_NIC_PCI_SLOT = '0x1e'
# UEFI firmware from Debian's ovmf package: the 4 MiB build without Secure Boot (which needs machine q35 with SMM)
OVMF_CODE = pathlib.Path('/usr/share/OVMF/OVMF_CODE_4M.fd')
OVMF_VARS_TEMPLATE = pathlib.Path('/usr/share/OVMF/OVMF_VARS_4M.fd')


class LibvirtHostError(RuntimeError):
    """The libvirt daemon could not be started or reached, or a domain operation failed."""


# -- virsh -------------------------------------------------------------------------------


def virsh(*args: str, timeout: float = VIRSH_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``virsh -c qemu:///system ARGS`` (C locale: states are parsed); raise LibvirtHostError when it fails."""
    command = ['virsh', '-c', CONNECT_URI, *args]
    env = dict(os.environ, LC_ALL='C')
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except FileNotFoundError as exc:
        raise LibvirtHostError('virsh is not installed (Debian package libvirt-clients)') from exc
    except subprocess.TimeoutExpired as exc:
        raise LibvirtHostError(f'{shlex.join(command)} did not answer within {timeout:.0f}s') from exc
    if check and result.returncode != 0:
        raise LibvirtHostError(f'{shlex.join(command)} failed (exit {result.returncode}): {result.stderr.strip()}')
    return result


def daemon_answers(timeout: float = 10.0) -> bool:
    """True when libvirtd answers ``virsh list`` on qemu:///system."""
    with contextlib.suppress(LibvirtHostError):
        return virsh('list', '--name', timeout=timeout, check=False).returncode == 0
    return False


def socket_answers(path: pathlib.Path) -> bool:
    """True when something accepts connections on the unix socket PATH."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


# -- the daemons -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DaemonStatus:
    """How ``ensure_daemon()`` found the daemons: ``running`` (found answering) or ``started`` (by this call)."""

    virtlogd: str
    libvirtd: str
    seconds: float
    hypervisor: str
    kvm_device: str

    @property
    def started(self) -> bool:
        """True when this call started at least one daemon."""
        return 'started' in (self.virtlogd, self.libvirtd)


def daemon_pid(name: str) -> int | None:
    """Return the pid of daemon NAME from its pid file when that process is alive and is NAME, else None."""
    try:
        pid = int((RUN_DIR / f'{name}.pid').read_text(encoding='utf-8').strip())
        # /proc/PID/stat: "pid (comm) state ..."; a daemon that exited stays a zombie until PID 1 reaps it
        stat = pathlib.Path(f'/proc/{pid}/stat').read_text(encoding='utf-8')
    except (OSError, ValueError):
        return None
    comm, state = stat[stat.index('(') + 1:stat.rindex(')')], stat[stat.rindex(')') + 2:][:1]
    return pid if comm == name and state not in ('Z', 'X') else None


def log_size(path: pathlib.Path) -> int:
    """Return the size of a log file (0 when it does not exist): where this start's messages begin."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def log_since(path: pathlib.Path, offset: int, lines: int = 30) -> str:
    """Return the last LINES lines written to PATH after OFFSET ('' when there are none)."""
    try:
        with open(path, 'rb') as handle:
            handle.seek(offset if offset <= path.stat().st_size else 0)
            text = handle.read().decode('utf-8', errors='replace')
    except FileNotFoundError:
        return ''
    return '\n'.join(text.splitlines()[-lines:])


def kvm_device_needs_group(mode: int, gid: int, kvm_gid: int) -> bool:
    """True when /dev/kvm (MODE, GID) is not read-write for the kvm group, as udev would have made it."""
    return gid != kvm_gid or (mode & 0o060) != 0o060


def prepare_kvm_device() -> str:
    """Give /dev/kvm udev's default group and mode when nothing did; return what was found or done.

    libvirt checks whether its QEMU user may open /dev/kvm each time it looks up QEMU's
    capabilities, while its capability probe opens the device before dropping root. With a
    root-only /dev/kvm (no udev) the two disagree, every lookup discards the cached capabilities
    and probes QEMU again: defining a domain then takes about 50 s instead of 30 ms.
    """
    if not KVM_DEVICE.exists():
        return f'{KVM_DEVICE} absent'
    try:
        kvm_gid = grp.getgrnam(KVM_GROUP).gr_gid
    except KeyError:
        return f'{KVM_DEVICE} left as is: no {KVM_GROUP} group'
    status = KVM_DEVICE.stat()
    if not kvm_device_needs_group(status.st_mode, status.st_gid, kvm_gid):
        return f'{KVM_DEVICE} already group {KVM_GROUP}, mode {status.st_mode & 0o777:04o}'
    if os.geteuid() != 0:
        return f'{KVM_DEVICE} is not group {KVM_GROUP} read-write and only root can change it'
    os.chown(KVM_DEVICE, -1, kvm_gid)
    os.chmod(KVM_DEVICE, (status.st_mode & 0o777) | KVM_DEVICE_MODE)
    return f'{KVM_DEVICE} set to group {KVM_GROUP}, mode {KVM_DEVICE_MODE:04o} (no udev had done it)'


def missing_host_parts() -> list[str]:
    """Return what this host lacks to run the system daemon (empty when nothing)."""
    missing = [f'{program} (Debian package {package})' for program, package in (
        ('virtlogd', 'libvirt-daemon'), ('libvirtd', 'libvirt-daemon'), ('virsh', 'libvirt-clients'),
        ('qemu-system-x86_64', 'qemu-system-x86')) if shutil.which(program) is None]
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        missing.append(f'the {QEMU_USER} account (Debian package libvirt-daemon-system)')
    if not LOG_DIR.is_dir():
        missing.append(f'{LOG_DIR} (Debian package libvirt-daemon-system)')
    if not list(pathlib.Path('/usr/lib').glob('*/libvirt/connection-driver/libvirt_driver_qemu.so')):
        missing.append("libvirt's QEMU driver (Debian package libvirt-daemon-driver-qemu)")
    return missing


def _spawn_daemon(name: str) -> None:
    """Run ``NAME -d`` (it forks into the background itself); raise when it refuses to start."""
    with tempfile.TemporaryFile(mode='w+', encoding='utf-8') as output:
        # own session and cwd /: a Ctrl-C meant for the tests must not reach the daemon, nor may it hold a test directory
        try:
            result = subprocess.run([name, '-d'], stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, cwd='/',
                                    start_new_session=True, timeout=DAEMON_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise LibvirtHostError(f'{name} -d did not return within {DAEMON_TIMEOUT:.0f}s') from exc
        output.seek(0)
        text = output.read().strip()
    if result.returncode != 0:
        raise LibvirtHostError(f'{name} -d failed (exit {result.returncode}): {text}')


def _stop_daemon(name: str, timeout: float = 10.0) -> None:
    """Stop daemon NAME (found by its pid file): SIGTERM, then SIGKILL after TIMEOUT."""
    pid = daemon_pid(name)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon_pid(name) != pid:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _wait_until(ready: t.Callable[[], bool], alive: t.Callable[[], bool], timeout: float) -> bool:
    """Poll READY until it is true (True), ALIVE turns false or TIMEOUT passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if not alive():
            return ready()
        time.sleep(0.1)
    return ready()


def _hypervisor_version() -> str:
    """Return virsh's 'Running hypervisor' line."""
    lines = virsh('version').stdout.splitlines()
    return next((line.split(':', 1)[1].strip() for line in lines if line.startswith('Running hypervisor')), 'unknown')


def _start_daemons(timeout: float) -> tuple[str, str]:
    """Start virtlogd and libvirtd where they do not answer; return how each was found.

    Called under the daemon lock. On failure, stops what it started and raises with the log tail.
    """
    started: list[str] = []
    try:
        virtlogd = 'running'
        if not socket_answers(VIRTLOGD_SOCKET):
            # QEMU's own log goes through virtlogd: without it no domain starts
            offset = log_size(LOG_DIR / 'virtlogd.log')
            if daemon_pid('virtlogd') is None:
                _spawn_daemon('virtlogd')
                started.append('virtlogd')
                virtlogd = 'started'
            if not _wait_until(lambda: socket_answers(VIRTLOGD_SOCKET), lambda: daemon_pid('virtlogd') is not None, timeout):
                raise LibvirtHostError(f'virtlogd did not answer on {VIRTLOGD_SOCKET} within {timeout:.0f}s:\n'
                                       f'{log_since(LOG_DIR / "virtlogd.log", offset) or "(nothing in its log)"}')
        libvirtd = 'running'
        if not daemon_answers():
            offset = log_size(LOG_DIR / 'libvirtd.log')
            # a libvirtd that another process has just started answers soon: wait for it rather than start a second one
            if daemon_pid('libvirtd') is None:
                _spawn_daemon('libvirtd')
                started.append('libvirtd')
                libvirtd = 'started'
            # libvirtd forks before its drivers initialise: a driver that fails ends the daemon after `-d` returned 0
            if not _wait_until(daemon_answers, lambda: daemon_pid('libvirtd') is not None, timeout):
                how = 'exited' if daemon_pid('libvirtd') is None else f'did not answer within {timeout:.0f}s'
                raise LibvirtHostError(f'libvirtd {how} ({CONNECT_URI}); its log ({LOG_DIR / "libvirtd.log"}):\n'
                                       f'{log_since(LOG_DIR / "libvirtd.log", offset) or "(nothing in its log)"}')
    except (LibvirtHostError, OSError):
        # no half-started daemon stays behind: stop what this call started, libvirtd first
        for name in reversed(started):
            _stop_daemon(name)
        raise
    return virtlogd, libvirtd


def ensure_daemon(timeout: float = DAEMON_TIMEOUT) -> DaemonStatus:
    """Make sure libvirt's system daemon answers on qemu:///system; return how it was found.

    Idempotent, and safe from several tests and processes at once: the start is serialised by
    a lock, and a daemon that answers is left alone. Needs root.
    """
    start = time.monotonic()
    kvm_device = prepare_kvm_device()
    if socket_answers(VIRTLOGD_SOCKET) and daemon_answers():
        return DaemonStatus('running', 'running', time.monotonic() - start, _hypervisor_version(), kvm_device)
    if os.geteuid() != 0:
        raise LibvirtHostError('the libvirt system daemon does not answer, and only root can start it')
    missing = missing_host_parts()
    if missing:
        raise LibvirtHostError('cannot start the libvirt system daemon; missing: ' + ', '.join(missing))
    with target_cache.build_lock('libvirt-daemon'):
        virtlogd, libvirtd = _start_daemons(timeout)
    return DaemonStatus(virtlogd, libvirtd, time.monotonic() - start, _hypervisor_version(), kvm_device)


# -- domain names ------------------------------------------------------------------------


def unique_name(label: str = 'vm') -> str:
    """Return a test domain name carrying this process's pid: ``imageprep-test-<pid>-<random>-<label>``."""
    if not re.fullmatch(r'[A-Za-z0-9_.-]{1,40}', label):
        raise LibvirtHostError(f'a domain label is 1-40 letters, digits, dots, dashes or underscores, not {label!r}')
    return f'{TEST_DOMAIN_PREFIX}{os.getpid()}-{secrets.token_hex(3)}-{label}'


def owner_pid(name: str) -> int | None:
    """Return the pid of the process that named a test domain, or None when NAME is not such a name."""
    match = re.fullmatch(re.escape(TEST_DOMAIN_PREFIX) + r'(\d+)-[0-9a-f]{6}-.+', name)
    return int(match.group(1)) if match else None


def process_alive(pid: int) -> bool:
    """True when a process with PID exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(name: str, alive: t.Callable[[int], bool] = process_alive, include_unowned: bool = False) -> bool:
    """True for a test domain whose creating process is gone.

    A test-prefixed name without a pid (not made by ``unique_name()``) may belong to a running
    test: it counts as stale only with INCLUDE_UNOWNED.
    """
    if not name.startswith(TEST_DOMAIN_PREFIX):
        return False
    pid = owner_pid(name)
    return include_unowned if pid is None else not alive(pid)


# -- domain XML --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DiskSpec:
    """One disk of a domain: an image file, its format and the guest device it appears as."""

    path: pathlib.Path
    format: str = 'qcow2'
    target_dev: str = ''


def virtio_target(index: int) -> str:
    """Return the virtio disk name for position INDEX: vda, vdb, ... vdz, vdaa ..."""
    letters = ''
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord('a') + remainder) + letters
    return 'vd' + letters


def disk_specs(disks: t.Iterable[DiskSpec | t.Mapping[str, t.Any]]) -> list[DiskSpec]:
    """Normalise disks (DiskSpec or ``{path, format, target_dev}``): absolute paths, ``vda``, ``vdb``... in order."""
    specs: list[DiskSpec] = []
    for index, disk in enumerate(disks):
        if isinstance(disk, DiskSpec):
            disk = dataclasses.asdict(disk)
        unknown = set(disk) - {'path', 'format', 'target_dev'}
        if unknown:
            raise LibvirtHostError(f'disk {index}: unknown keys {sorted(unknown)}')
        if not disk.get('path'):
            raise LibvirtHostError(f'disk {index}: no path')
        disk_format = disk.get('format') or 'qcow2'
        if disk_format not in DISK_FORMATS:
            raise LibvirtHostError(f'disk {index}: format must be one of {list(DISK_FORMATS)}, not {disk_format!r}')
        target = disk.get('target_dev') or virtio_target(index)
        if not re.fullmatch(r'vd[a-z]+', target):
            raise LibvirtHostError(f'disk {index}: target_dev must be a virtio disk name (vda, vdb, ...), not {target!r}')
        specs.append(DiskSpec(pathlib.Path(disk['path']).absolute(), disk_format, target))
    targets = [spec.target_dev for spec in specs]
    duplicates = sorted({target for target in targets if targets.count(target) > 1})
    if duplicates:
        raise LibvirtHostError(f'disk targets used twice: {duplicates}')
    return specs


@dataclasses.dataclass(frozen=True)
class UefiFirmware:
    """UEFI firmware for a domain: read-only code, and the domain's own variable store, copied from a template on first start."""

    nvram: pathlib.Path
    code: pathlib.Path = OVMF_CODE
    vars_template: pathlib.Path = OVMF_VARS_TEMPLATE


@dataclasses.dataclass(frozen=True)
class DomainSpec:  # pylint: disable=too-many-instance-attributes
    """Everything a test domain's XML is rendered from."""

    name: str
    disks: tuple[DiskSpec, ...]
    console_log: pathlib.Path
    memory_mib: int = 256
    vcpus: int = 1
    domain_type: str = 'qemu'
    kernel: pathlib.Path | None = None
    initrd: pathlib.Path | None = None
    cmdline: str | None = None
    ssh_port: int | None = None
    # None: SeaBIOS, or the kernel above; UefiFirmware: OVMF boots the disk's EFI system partition
    firmware: UefiFirmware | None = None


def choose_domain_type(kernel: pathlib.Path | None) -> tuple[str, str]:
    """Return (libvirt domain type, why): ``kvm`` only when qemu_vm.py's probe shows KVM runs KERNEL, else ``qemu``.

    Without a kernel there is nothing to probe with (and a domain that boots nothing gains nothing
    from KVM), so ``qemu`` (TCG) is used unless ``IMAGEPREP_QEMU_ACCEL`` says otherwise.
    """
    accel_types = {'kvm': 'kvm', 'tcg': 'qemu'}
    override = qemu_vm.accel_override(os.environ.get('IMAGEPREP_QEMU_ACCEL', ''))
    if override:
        return accel_types[override], 'set by IMAGEPREP_QEMU_ACCEL'
    if kernel is None:
        return 'qemu', 'no kernel to probe KVM with: TCG'
    accel, why = qemu_vm.choose_accel(kernel)
    return accel_types[accel], why


def _element(parent: ET.Element, tag: str, text: str | None = None, **attributes: str) -> ET.Element:
    """Append a child element with ATTRIBUTES and TEXT to PARENT; return it."""
    child = ET.SubElement(parent, tag, attributes)
    if text is not None:
        child.text = text
    return child


def render_domain_xml(spec: DomainSpec) -> str:
    """Return the libvirt domain XML for SPEC."""
    if spec.domain_type not in ('qemu', 'kvm'):
        raise LibvirtHostError(f"domain type must be 'qemu' or 'kvm', not {spec.domain_type!r}")
    if not spec.disks:
        raise LibvirtHostError('a domain needs at least one disk')
    if (spec.initrd or spec.cmdline) and not spec.kernel:
        raise LibvirtHostError('initrd and cmdline need a kernel')
    ET.register_namespace('qemu', QEMU_NAMESPACE)
    domain = ET.Element('domain', {'type': spec.domain_type})
    _element(domain, 'name', spec.name)
    _element(domain, 'memory', str(spec.memory_mib), unit='MiB')
    _element(domain, 'vcpu', str(spec.vcpus))
    os_element = _element(domain, 'os')
    _element(os_element, 'type', 'hvm', arch='x86_64', machine='pc')
    if spec.firmware:
        _element(os_element, 'loader', str(pathlib.Path(spec.firmware.code).absolute()), readonly='yes', type='pflash')
        _element(os_element, 'nvram', str(pathlib.Path(spec.firmware.nvram).absolute()),
                 template=str(pathlib.Path(spec.firmware.vars_template).absolute()))
    if spec.kernel:
        _element(os_element, 'kernel', str(pathlib.Path(spec.kernel).absolute()))
        if spec.initrd:
            _element(os_element, 'initrd', str(pathlib.Path(spec.initrd).absolute()))
        if spec.cmdline:
            _element(os_element, 'cmdline', spec.cmdline)
    else:
        _element(os_element, 'boot', dev='hd')
    features = _element(domain, 'features')
    _element(features, 'acpi')  # `virsh shutdown` presses the ACPI power button
    _element(features, 'apic')
    if spec.domain_type == 'kvm':
        _element(domain, 'cpu', mode='host-passthrough', check='none')
    else:
        _element(domain, 'cpu', mode='maximum', check='none')
    _element(domain, 'on_poweroff', 'destroy')
    _element(domain, 'on_reboot', 'restart')
    _element(domain, 'on_crash', 'destroy')
    devices = _element(domain, 'devices')
    for disk in spec.disks:
        disk_element = _element(devices, 'disk', type='file', device='disk')
        _element(disk_element, 'driver', name='qemu', type=disk.format)
        _element(disk_element, 'source', file=str(disk.path))
        _element(disk_element, 'target', dev=disk.target_dev, bus='virtio')
    serial = _element(devices, 'serial', type='file')
    _element(serial, 'source', path=str(pathlib.Path(spec.console_log).absolute()))
    _element(serial, 'target', port='0')
    _element(devices, 'controller', type='usb', model='none')
    _element(devices, 'memballoon', model='none')
    rng = _element(devices, 'rng', model='virtio')
    _element(rng, 'backend', '/dev/urandom', model='random')
    # QEMU as root, files not relabelled: test disks keep their owner and may sit in root-only directories
    seclabel = _element(domain, 'seclabel', type='static', model='dac', relabel='no')
    _element(seclabel, 'label', '+0:+0')
    if spec.ssh_port is not None:
        # libvirt 9.0 forwards ports of a user-mode NIC only with passt, which Debian 12's libvirt rejects:
        # QEMU's own user-mode network, as qemu_vm.py uses it, is passed through
        commandline = _element(domain, f'{{{QEMU_NAMESPACE}}}commandline')
        for value in ('-netdev', f'user,id=imageprep-net0,hostfwd=tcp:127.0.0.1:{spec.ssh_port}-:22',
                      '-device', f'virtio-net-pci,netdev=imageprep-net0,bus=pci.0,addr={USER_NIC_PCI_SLOT}'):
            _element(commandline, f'{{{QEMU_NAMESPACE}}}arg', value=value)
    ET.indent(domain)
    return ET.tostring(domain, encoding='unicode') + '\n'


# -- domains -----------------------------------------------------------------------------


class LibvirtDomain:
    """A defined libvirt domain on qemu:///system, driven through virsh.

    Its files (domain XML, serial console log, and QEMU's log once it is undefined) live in
    ``workdir``. As a context manager it is always destroyed and undefined on exit.
    """

    def __init__(self, name: str, workdir: pathlib.Path, console_log: pathlib.Path | None = None) -> None:
        self.name = name
        self.workdir = pathlib.Path(workdir)
        self.console_log = console_log or self.workdir / 'console.log'
        self.domain_type = ''
        self.domain_type_why = ''

    @classmethod
    def define(cls, name: str | None, disks: t.Iterable[DiskSpec | t.Mapping[str, t.Any]], workdir: pathlib.Path, *,  # pylint: disable=too-many-arguments
               memory_mib: int = 256, vcpus: int = 1, kernel: pathlib.Path | None = None, initrd: pathlib.Path | None = None,
               cmdline: str | None = None, domain_type: str | None = None, ssh_port: int | None = None,
               firmware: UefiFirmware | None = None) -> LibvirtDomain:
        """Define a domain (NAME, or a unique test name when None) on DISKS; return it (not started)."""
        domain = cls(name or unique_name(), workdir)
        domain._define(disk_specs(disks), memory_mib=memory_mib, vcpus=vcpus, kernel=kernel, initrd=initrd, cmdline=cmdline,
                       domain_type=domain_type, ssh_port=ssh_port, firmware=firmware)
        return domain

    def _define(self, disks: list[DiskSpec], *, domain_type: str | None, probe_kernel: pathlib.Path | None = None,
                **options: t.Any) -> None:
        """Render the XML into the work directory and define it.

        Without DOMAIN_TYPE, KVM is probed with the direct-boot kernel, or PROBE_KERNEL (the guest's
        kernel, for a domain its firmware boots).
        """
        if domain_type:
            self.domain_type, self.domain_type_why = domain_type, 'chosen by the caller'
        else:
            self.domain_type, self.domain_type_why = choose_domain_type(options.get('kernel') or probe_kernel)
        self.workdir.mkdir(parents=True, exist_ok=True)
        spec = DomainSpec(name=self.name, disks=tuple(disks), console_log=self.console_log, domain_type=self.domain_type, **options)
        xml_path = self.workdir / f'{self.name}.xml'
        xml_path.write_text(render_domain_xml(spec), encoding='utf-8')
        virsh('define', str(xml_path))

    # -- queries ---------------------------------------------------------------------

    def exists(self) -> bool:
        """True while the domain is defined (or running transiently)."""
        return virsh('domstate', self.name, check=False).returncode == 0

    def state(self) -> str:
        """Return ``virsh domstate``: ``running``, ``paused``, ``shut off``, ``in shutdown``, ``crashed``..."""
        return virsh('domstate', self.name).stdout.strip()

    def block_devices(self) -> dict[str, str]:
        """Return ``{target: source path}`` from ``virsh domblklist``."""
        lines = virsh('domblklist', self.name, '--details').stdout.splitlines()
        devices = {}
        for line in lines[2:]:
            fields = line.split(None, 3)
            if len(fields) == 4:
                devices[fields[2]] = fields[3]
        return devices

    def dumpxml(self) -> str:
        """Return the domain's XML as libvirt holds it."""
        return virsh('dumpxml', self.name).stdout

    @property
    def qemu_log(self) -> pathlib.Path:
        """QEMU's log for this domain, kept by libvirt (moved into the work directory on undefine)."""
        return QEMU_LOG_DIR / f'{self.name}.log'

    def _failure(self, message: str) -> LibvirtHostError:
        """Return an error carrying MESSAGE and the tails of QEMU's log and the console."""
        return LibvirtHostError(f'{message}\n--- qemu ({self.qemu_log}) ---\n{qemu_vm.tail(self.qemu_log, 10)}'
                                f'\n--- console ({self.console_log}) ---\n{qemu_vm.tail(self.console_log, 20)}')

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> LibvirtDomain:
        """Start the domain (QEMU opens and locks its disks)."""
        try:
            virsh('start', self.name)
        except LibvirtHostError as exc:
            raise self._failure(str(exc)) from exc
        return self

    def suspend(self) -> None:
        """Pause the guest's CPUs (QEMU keeps running and keeps its disk locks)."""
        virsh('suspend', self.name)

    def resume(self) -> None:
        """Resume a paused guest."""
        virsh('resume', self.name)

    def destroy(self) -> bool:
        """Stop QEMU at once (hard power off); True when it was running."""
        if self.state() == 'shut off':
            return False
        virsh('destroy', self.name)
        return True

    def wait_for_state(self, wanted: str, timeout: float) -> bool:
        """Wait up to TIMEOUT seconds for the domain to reach state WANTED; True when it did."""
        deadline = time.monotonic() + timeout
        while True:
            if self.state() == wanted:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.5)

    def shutdown(self, timeout: float = 120.0, destroy_after_timeout: bool = True) -> str:
        """Ask the guest to power off (ACPI button) and wait, bounded; return ``guest`` or ``destroy``.

        The guest needs something that handles the button (systemd-logind with dbus, or acpid).
        When it is not off within TIMEOUT the domain is destroyed, or LibvirtHostError is raised.
        """
        if self.state() == 'shut off':
            return 'guest'
        virsh('shutdown', self.name)
        if self.wait_for_state('shut off', timeout):
            return 'guest'
        if not destroy_after_timeout:
            raise self._failure(f'{self.name} did not shut down within {timeout:.0f}s')
        self.destroy()
        return 'destroy'

    def undefine(self, remove_storage: bool = False) -> list[pathlib.Path]:
        """Remove the domain's definition; with REMOVE_STORAGE also its disk files. Return the files removed.

        Disks are files outside any storage pool, so libvirt would not remove them itself. QEMU's
        log is moved into the work directory.
        """
        disks = [pathlib.Path(source) for source in self.block_devices().values()] if remove_storage else []
        virsh('undefine', self.name, *UNDEFINE_OPTIONS)
        if self.qemu_log.exists() and self.workdir.is_dir():
            shutil.move(self.qemu_log, self.workdir / 'qemu.log')
        removed = []
        for disk in disks:
            if disk.exists():
                disk.unlink()
                removed.append(disk)
        return removed

    def cleanup(self) -> None:
        """Destroy the domain if it runs and undefine it if it is defined (disks stay)."""
        if not self.exists():
            return
        with contextlib.suppress(LibvirtHostError):
            self.destroy()
        self.undefine()

    def __enter__(self) -> LibvirtDomain:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


def cleanup_stale(alive: t.Callable[[int], bool] = process_alive, include_unowned: bool = False) -> list[str]:
    """Destroy and undefine test domains whose creating process is gone; return their names.

    Domains of live processes (concurrent test runs) are left alone, and so are test-prefixed
    names without a pid unless INCLUDE_UNOWNED. QEMU logs that dead runs left in libvirt's log
    directory are removed.
    """
    names = [line.strip() for line in virsh('list', '--all', '--name').stdout.splitlines() if line.strip()]
    removed = []
    for name in names:
        if not is_stale(name, alive, include_unowned):
            continue
        # fails harmlessly when the domain is not running
        virsh('destroy', name, check=False)
        virsh('undefine', name, *UNDEFINE_OPTIONS)
        removed.append(name)
    for log in QEMU_LOG_DIR.glob(TEST_DOMAIN_PREFIX + '*.log*'):
        if is_stale(re.sub(r'\.log(\.\d+)?$', '', log.name), alive, include_unowned):
            log.unlink(missing_ok=True)
    return removed


# -- the cached Debian disk as a domain --------------------------------------------------


class SshDomain(LibvirtDomain):
    """A domain whose guest answers SSH on a forwarded loopback port, logged into as SSH_USER with PRIVATE_KEY."""

    def __init__(self, name: str, workdir: pathlib.Path, ssh_user: str, private_key: pathlib.Path) -> None:
        super().__init__(name, workdir)
        self.ssh_user = ssh_user
        self.private_key = pathlib.Path(private_key)
        self.port: int | None = None
        self.started_at: float | None = None

    def start(self) -> SshDomain:
        """Start the domain; return once QEMU runs (not once SSH answers)."""
        super().start()
        self.started_at = time.monotonic()
        return self

    def ssh_command(self, command: str | t.Sequence[str] = (), connect_timeout: int = 10) -> list[str]:
        """Return the ssh command line that runs COMMAND (a string or argv) as the SSH user in the guest."""
        remote = command if isinstance(command, str) else shlex.join(command)
        argv = ['ssh', '-F', '/dev/null', *qemu_vm.SSH_OPTIONS, '-o', 'BatchMode=yes', '-o', f'ConnectTimeout={connect_timeout}',
                '-i', str(self.private_key), '-p', str(self.port), f'{self.ssh_user}@127.0.0.1']
        return argv + ['--', remote] if remote else argv

    def ssh(self, command: str | t.Sequence[str], timeout: float = 120.0) -> subprocess.CompletedProcess:
        """Run COMMAND in the guest over SSH; return the CompletedProcess (text output)."""
        try:
            return subprocess.run(self.ssh_command(command), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise LibvirtHostError(f'ssh {command!r} did not finish within {timeout:.0f}s') from exc

    def wait_for_ssh(self, timeout: float = 300.0) -> float:
        """Wait until the SSH user can log in; return seconds since start. Bounded by TIMEOUT."""
        origin = self.started_at if self.started_at is not None else time.monotonic()

        def gone() -> t.Optional[str]:
            state = self.state()
            return None if state == 'running' else f'{self.name} is {state} before SSH answered'
        qemu_vm.poll_ssh(self.ssh_command, gone, timeout, self._failure)
        return time.monotonic() - origin


class DebianDomain(SshDomain):
    """The cached Debian disk of qemu_vm.py booted as a libvirt domain, on its own qcow2 overlay, reached as root.

    The kernel boots directly; the guest's port 22 is forwarded to a free loopback port. The
    overlay is removed on cleanup; the cached base disk is never written.
    """

    def __init__(self, workdir: pathlib.Path, base: qemu_vm.BaseDisk | None = None, name: str | None = None) -> None:
        base = base or qemu_vm.build()
        super().__init__(name or unique_name('debian'), workdir, 'root', base.private_key)
        self.base = base
        self.overlay = self.workdir / 'overlay.qcow2'

    @classmethod
    def create(cls, workdir: pathlib.Path, base: qemu_vm.BaseDisk | None = None, *,  # pylint: disable=too-many-arguments
               memory_mib: int = 1024, vcpus: int = 2, data_disks: t.Iterable[DiskSpec | t.Mapping[str, t.Any]] = (),
               name: str | None = None) -> DebianDomain:
        """Create the overlay and define the domain (OS disk vda, DATA_DISKS from vdb); return it (not started)."""
        domain = cls(workdir, base, name)
        domain.workdir.mkdir(parents=True, exist_ok=True)
        domain.overlay.unlink(missing_ok=True)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', str(domain.base.disk), str(domain.overlay)],
                       check=True)
        domain.port = qemu_vm.free_port()
        disks = disk_specs([DiskSpec(domain.overlay, 'qcow2', 'vda'), *data_disks])
        domain._define(disks, memory_mib=memory_mib, vcpus=vcpus, kernel=domain.base.kernel, initrd=domain.base.initrd,
                       cmdline=qemu_vm.KERNEL_APPEND, domain_type=None, ssh_port=domain.port)
        return domain

    def inventory_vars(self) -> dict[str, t.Any]:
        """Return the host variables Ansible needs to reach this guest over SSH."""
        return qemu_vm.ssh_inventory_vars(self.port, self.base.private_key)

    def cleanup(self) -> None:
        """Destroy and undefine the domain, and remove the overlay."""
        super().cleanup()
        self.overlay.unlink(missing_ok=True)


# -- command line ------------------------------------------------------------------------


def _interrupt(signum: int, _frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``boot`` shuts its domain down either way."""
    raise KeyboardInterrupt(f'signal {signum}')


def _boot(workdir: pathlib.Path | None) -> None:
    """Boot the cached Debian disk as a domain; print how to reach it; shut it down on Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)
    print(f'daemon: {ensure_daemon()}')
    directory = workdir or pathlib.Path(tempfile.mkdtemp(prefix='imageprep-libvirt-'))
    with DebianDomain.create(directory) as domain:
        domain.start()
        print(f'domain:      {domain.name} (type {domain.domain_type}: {domain.domain_type_why})')
        print(f'console log: {domain.console_log}')
        print(f'ssh ready after {domain.wait_for_ssh():.1f}s')
        print('ssh:         ' + shlex.join(domain.ssh_command()))
        print('inventory:   ' + json.dumps(domain.inventory_vars()))
        print('Ctrl-C or SIGTERM shuts it down', flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while domain.state() == 'running':
                time.sleep(1.0)
        if domain.state() != 'shut off':
            print(f'stopped by {domain.shutdown(timeout=60.0)}')


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=['daemon', 'cleanup', 'boot'])
    parser.add_argument('workdir', nargs='?', type=pathlib.Path)
    parser.add_argument('--include-unowned', action='store_true',
                        help='cleanup: also remove test domains whose name carries no pid (make sure no test runs)')
    args = parser.parse_args()
    try:
        if args.action == 'daemon':
            status = ensure_daemon()
            print(f'virtlogd: {status.virtlogd}\nlibvirtd: {status.libvirtd}\nhypervisor: {status.hypervisor}\n'
                  f'kvm device: {status.kvm_device}\nseconds: {status.seconds:.2f}')
        elif args.action == 'cleanup':
            ensure_daemon()
            removed = cleanup_stale(include_unowned=args.include_unowned)
            print('\n'.join(removed) if removed else 'no stale test domains')
        else:
            _boot(args.workdir)
    except (LibvirtHostError, qemu_vm.QemuVMError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f'libvirt_host.py {args.action}: {exc}') from exc


if __name__ == '__main__':
    main()
