#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot whole Debian 12 VMs under QEMU for the end-to-end tests.

The base disk is built once from the ``vm`` root of debian_root.py and cached (raw ext4
image, kernel, initrd and the SSH key pair the tests log in with). Every boot gets its own
qcow2 overlay on top of it, so the cached base is never written to.

QEMU runs the guest kernel directly (``-kernel``/``-initrd``, no boot loader), with a virtio
disk, user-mode networking with the guest's port 22 forwarded to a free loopback port, the
serial console logged to a file and a QMP socket for control. KVM is used only when a probe
boot shows that it really runs the guest kernel; otherwise TCG.

Usage:
  qemu_vm.py build          build (or reuse) the cached disk and print its paths
  qemu_vm.py accel          print the accelerator QEMU will use and why
  qemu_vm.py boot [DIR]     boot a VM (work files in DIR), print how to reach it, power off on Ctrl-C/SIGTERM

Environment:
  IMAGEPREP_TEST_CACHE      cache directory (see target_cache.py)
  IMAGEPREP_QEMU_ACCEL      kvm or tcg: skip detection and use this accelerator
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import debian_root  # noqa: E402  pylint: disable=wrong-import-position
import target_cache  # noqa: E402  pylint: disable=wrong-import-position

PROFILE = 'vm'
DISK_SIZE = '2G'
QEMU = 'qemu-system-x86_64'
KERNEL_APPEND = 'root=/dev/vda console=ttyS0 rw'
ACCEL_ARGS = {
    'kvm': ['-accel', 'kvm', '-cpu', 'host'],
    'tcg': ['-accel', 'tcg,thread=multi', '-cpu', 'max'],
}
# A working KVM takes the probe kernel to its final panic within seconds (TCG on these hosts: about 6 s).
KVM_PROBE_TIMEOUT = 20.0
# The kernel's last words when it finds no root file system: the probe got through a whole boot.
PROBE_END_MARK = 'Kernel panic - not syncing'
NETWORK_FILE = """\
# written by imageprep.vm's test disk builder: DHCP on QEMU's user-mode network
[Match]
Name=en* eth*

[Network]
DHCP=yes
"""
FSTAB = """\
# written by imageprep.vm's test disk builder
/dev/vda / ext4 defaults 0 1
"""
SSH_OPTIONS = [
    '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR',
    '-o', 'IdentitiesOnly=yes',
]


def ssh_inventory_vars(port: int, private_key: pathlib.Path) -> dict[str, t.Any]:
    """Return the host variables Ansible needs to reach a test guest's root over SSH on a loopback PORT."""
    return {
        'ansible_host': '127.0.0.1',
        'ansible_port': port,
        'ansible_user': 'root',
        'ansible_ssh_private_key_file': str(private_key),
        'ansible_ssh_common_args': ' '.join(SSH_OPTIONS),
        'ansible_host_key_checking': False,
        'ansible_python_interpreter': '/usr/bin/python3',
    }


def poll_ssh(ssh_command: t.Callable[..., list[str]], gone: t.Callable[[], t.Optional[str]], timeout: float,
             failure: t.Callable[[str], Exception]) -> None:
    """Try ``ssh true`` until it works; raise FAILURE(why) when GONE says the guest stopped, or after TIMEOUT.

    Shared by the plain QEMU and the libvirt guests: SSH_COMMAND(command, connect_timeout=...)
    builds the ssh command line, GONE returns why the guest can no longer answer (or None).
    """
    deadline = time.monotonic() + timeout
    last = ''
    while True:
        why = gone()
        if why:
            raise failure(why)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise failure(f'SSH did not answer within {timeout:.0f}s (last ssh error: {last or "none"})')
        try:
            result = subprocess.run(ssh_command('true', connect_timeout=5), stdin=subprocess.DEVNULL, capture_output=True,
                                    text=True, timeout=max(1.0, min(30.0, remaining)), check=False)
        except subprocess.TimeoutExpired:
            last = 'ssh attempt timed out'
            continue
        if result.returncode == 0:
            return
        last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f'exit {result.returncode}'
        time.sleep(1.0)


class QemuVMError(RuntimeError):
    """A test VM could not be built, started, reached or stopped."""


@dataclasses.dataclass(frozen=True)
class BaseDisk:
    """The cached, read-only parts every test VM boots from."""

    directory: pathlib.Path

    @property
    def disk(self) -> pathlib.Path:
        """Raw ext4 image of the root file system (the backing file of every overlay)."""
        return self.directory / 'disk.raw'

    @property
    def kernel(self) -> pathlib.Path:
        """The guest's kernel, booted directly by QEMU."""
        return self.directory / 'vmlinuz'

    @property
    def initrd(self) -> pathlib.Path:
        """The guest's initramfs."""
        return self.directory / 'initrd.img'

    @property
    def private_key(self) -> pathlib.Path:
        """Private half of the SSH key pair authorised for root in the guest (mode 0600)."""
        return self.directory / 'id_ed25519'

    @property
    def public_key(self) -> pathlib.Path:
        """Public half of the SSH key pair."""
        return self.directory / 'id_ed25519.pub'


def disk_path() -> pathlib.Path:
    """Return where the cached base disk directory lives (its name carries the input key)."""
    root_tarball = debian_root.tarball_path(PROFILE)
    # this file holds the whole recipe (customisation, size, mkfs options)
    key = target_cache.input_key(pathlib.Path(__file__), root_tarball.name)
    return target_cache.cache_dir() / f'debian12-vmdisk-{key}'


def _customise_root(root: pathlib.Path, public_key: str) -> None:
    """Make a copy of the vm root bootable as a test VM reached over SSH as root."""
    (root / 'etc' / 'fstab').write_text(FSTAB, encoding='utf-8')
    network_dir = root / 'etc' / 'systemd' / 'network'
    network_dir.mkdir(parents=True, exist_ok=True)
    (network_dir / '50-imageprep-test-dhcp.network').write_text(NETWORK_FILE, encoding='utf-8')
    # the guest's own systemctl creates exactly the links its unit files ask for
    subprocess.run(['chroot', str(root), 'systemctl', 'enable', '--quiet', 'systemd-networkd.service'], check=True)
    ssh_dir = root / 'root' / '.ssh'
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)
    authorized_keys = ssh_dir / 'authorized_keys'
    authorized_keys.write_text(public_key, encoding='utf-8')
    authorized_keys.chmod(0o600)


def build() -> BaseDisk:
    """Build the base disk unless a build with the same inputs exists; return its paths."""
    final = disk_path()
    root_tarball = debian_root.build(PROFILE)
    with target_cache.build_lock('debian12-vmdisk'):
        if final.exists():
            return BaseDisk(final)
        tmp = final.with_name(final.name + '.partial')
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(mode=0o700)
        parts = BaseDisk(tmp)
        root = tmp / 'root'
        debian_root.copy(PROFILE, root)
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'imageprep-vm-tests',
                        '-f', str(parts.private_key)], check=True)
        parts.private_key.chmod(0o600)
        _customise_root(root, parts.public_key.read_text(encoding='utf-8'))
        kernels = sorted((root / 'boot').glob('vmlinuz-*'))
        if len(kernels) != 1:
            raise QemuVMError(f'expected one kernel in {root_tarball}, found {[k.name for k in kernels]}')
        version = kernels[0].name[len('vmlinuz-'):]
        shutil.copyfile(kernels[0], parts.kernel)
        shutil.copyfile(root / 'boot' / f'initrd.img-{version}', parts.initrd)
        subprocess.run(['truncate', '-s', DISK_SIZE, str(parts.disk)], check=True)
        subprocess.run(['mkfs.ext4', '-q', '-F', '-L', 'imageprep-root', '-d', str(root), str(parts.disk)], check=True)
        shutil.rmtree(root)
        target_cache.publish(tmp, final)
        target_cache.prune('debian12-vmdisk-', final)
    return BaseDisk(final)


def _qemu_version() -> str:
    """Return QEMU's version line (part of the accelerator decision's cache key)."""
    result = subprocess.run([QEMU, '--version'], check=True, capture_output=True, text=True)
    return result.stdout.splitlines()[0]


def probe_verdict(console: str, returncode: int | None, stderr: str, seconds: float) -> tuple[bool, str]:
    """Judge a KVM probe boot from its console output and QEMU's exit; return (works, why).

    ``returncode`` is None when the probe was stopped at its time limit (``seconds``).
    """
    if returncode is None:
        seen = f'{len(console.splitlines())} console lines' if console.strip() else 'no console output'
        return False, f'a KVM probe boot did not finish within {seconds:.0f}s ({seen})'
    if PROBE_END_MARK in console:
        return True, f'a KVM probe boot ran the guest kernel to its end in {seconds:.1f}s'
    last = (stderr.strip().splitlines() or ['no error output'])[-1]
    return False, f'a KVM probe boot failed (QEMU exit {returncode}: {last})'


def probe_kvm(kernel: pathlib.Path, timeout: float = KVM_PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot KERNEL under KVM without a root file system; return (works, why).

    A kernel without a root panics at the end of its boot and QEMU (with ``-no-reboot`` and
    ``panic=-1``) exits: seeing that panic on the serial console proves KVM ran the whole boot.
    On hosts where /dev/kvm exists but cannot run stock kernels QEMU aborts or the console
    stays silent.
    """
    with tempfile.TemporaryDirectory(prefix='imageprep-kvm-probe-') as tmp:
        console = pathlib.Path(tmp) / 'console.log'
        command = [
            QEMU, '-nodefaults', '-no-user-config', '-display', 'none', '-m', '256', '-no-reboot',
            *ACCEL_ARGS['kvm'], '-kernel', str(kernel), '-append', 'console=ttyS0 panic=-1',
            '-serial', f'file:{console}',
        ]
        start = time.monotonic()
        with subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as process:
            try:
                stderr = process.communicate(timeout=timeout)[1]
                returncode: int | None = process.returncode
            except subprocess.TimeoutExpired:
                process.kill()
                stderr = process.communicate()[1]
                returncode = None
        seconds = time.monotonic() - start
        output = console.read_text(encoding='utf-8', errors='replace') if console.exists() else ''
        return probe_verdict(output, returncode, stderr, timeout if returncode is None else seconds)


_ACCEL_MEMO: dict[str, tuple[str, str]] = {}


def accel_override(value: str) -> str | None:
    """Return the accelerator named by an ``IMAGEPREP_QEMU_ACCEL`` value (None when empty)."""
    value = value.strip().lower()
    if not value:
        return None
    if value not in ACCEL_ARGS:
        raise QemuVMError(f'IMAGEPREP_QEMU_ACCEL must be one of {sorted(ACCEL_ARGS)}, not {value!r}')
    return value


def choose_accel(kernel: pathlib.Path | None = None) -> tuple[str, str]:
    """Return (accelerator, why): ``kvm`` when KVM really runs a guest kernel, else ``tcg``.

    The decision is cached per host kernel and QEMU version, in memory and in the cache
    directory, so a test session probes at most once. ``IMAGEPREP_QEMU_ACCEL`` overrides it.
    """
    override = accel_override(os.environ.get('IMAGEPREP_QEMU_ACCEL', ''))
    if override:
        return override, 'set by IMAGEPREP_QEMU_ACCEL'
    if not os.access('/dev/kvm', os.R_OK | os.W_OK):
        return 'tcg', '/dev/kvm is missing or not accessible'
    if kernel is None:
        kernel = build().kernel
    key = target_cache.input_key(pathlib.Path(__file__), os.uname().release, os.uname().version, _qemu_version(), kernel.name)
    if key in _ACCEL_MEMO:
        return _ACCEL_MEMO[key]
    record = target_cache.cache_dir() / f'qemu-accel-{key}.json'
    with target_cache.build_lock('qemu-accel'):
        if record.exists():
            data = json.loads(record.read_text(encoding='utf-8'))
            decision = (data['accel'], data['why'] + ' (cached decision)')
        else:
            works, why = probe_kvm(kernel)
            decision = ('kvm' if works else 'tcg', why)
            tmp = record.with_name(record.name + '.partial')
            tmp.write_text(json.dumps({'accel': decision[0], 'why': why}) + '\n', encoding='utf-8')
            target_cache.publish(tmp, record)
            target_cache.prune('qemu-accel-', record)
    _ACCEL_MEMO[key] = decision
    return decision


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def tail(path: pathlib.Path, lines: int = 40) -> str:
    """Return the last LINES lines of a log file ('' when it does not exist)."""
    if not path.exists():
        return ''
    return '\n'.join(path.read_text(encoding='utf-8', errors='replace').splitlines()[-lines:])


@dataclasses.dataclass(frozen=True)
class PowerOff:
    """How a VM stopped: ``method`` is ``guest`` (it powered itself off), ``qmp-quit`` or ``kill``."""

    method: str
    seconds: float
    returncode: int | None
    detail: str = ''

    @property
    def clean(self) -> bool:
        """True when the guest shut down by itself and QEMU exited normally."""
        return self.method == 'guest' and self.returncode == 0


class QemuVM:  # pylint: disable=too-many-instance-attributes
    """One test VM: a fresh qcow2 overlay on the cached base disk, booted by QEMU.

    All its files (overlay, console log, QEMU's own log, QMP socket, inventory) live in
    ``workdir``. Use it as a context manager, or call ``cleanup()`` yourself.
    """

    def __init__(self, workdir: pathlib.Path, memory_mb: int = 1024, cpus: int = 2, base: BaseDisk | None = None,
                 backing: pathlib.Path | None = None) -> None:
        self.workdir = pathlib.Path(workdir)
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.base = base or build()
        # the raw disk the overlay sits on: the cached base, or e.g. a deprovisioned copy of it (a clone's image)
        self.backing = backing or self.base.disk
        self.overlay = self.workdir / 'overlay.qcow2'
        self.console_log = self.workdir / 'console.log'
        self.qemu_log = self.workdir / 'qemu.log'
        self.accel, self.accel_why = choose_accel(self.base.kernel)
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None
        self._qmp_dir: pathlib.Path | None = None

    # -- lifecycle -------------------------------------------------------------------

    @property
    def qmp_socket(self) -> pathlib.Path:
        """Path of QEMU's QMP socket (kept short: unix socket paths are limited to 107 bytes)."""
        if self._qmp_dir is None:
            candidate = self.workdir / 'qmp.sock'
            self._qmp_dir = self.workdir if len(str(candidate)) < 100 else pathlib.Path(tempfile.mkdtemp(prefix='imageprep-qmp-'))
        return self._qmp_dir / 'qmp.sock'

    def command(self) -> list[str]:
        """Return the QEMU command line for this VM."""
        return [
            QEMU, '-name', 'imageprep-test', '-nodefaults', '-no-user-config', '-display', 'none',
            *ACCEL_ARGS[self.accel], '-m', str(self.memory_mb), '-smp', str(self.cpus),
            '-kernel', str(self.base.kernel), '-initrd', str(self.base.initrd), '-append', KERNEL_APPEND,
            '-drive', f'file={self.overlay},format=qcow2,if=virtio',
            '-netdev', f'user,id=net0,hostfwd=tcp:127.0.0.1:{self.port}-:22',
            '-device', 'virtio-net-pci,netdev=net0',
            '-device', 'virtio-rng-pci',
            '-serial', f'file:{self.console_log}',
            '-qmp', f'unix:{self.qmp_socket},server=on,wait=off',
        ]

    def start(self, attempts: int = 3) -> QemuVM:
        """Create the overlay and start QEMU; return once QEMU answers on QMP (not SSH)."""
        if self.process is not None:
            raise QemuVMError('this VM was already started')
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.overlay.unlink(missing_ok=True)
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', str(self.backing), str(self.overlay)],
                       check=True)
        for attempt in range(1, attempts + 1):
            self.port = free_port()
            self.qmp_socket.unlink(missing_ok=True)
            self.console_log.unlink(missing_ok=True)
            with open(self.qemu_log, 'w', encoding='utf-8') as log:
                # own session: a Ctrl-C meant for the tests must not kill QEMU before a clean poweroff;
                # no `with`: the VM outlives this method
                # pylint: disable-next=consider-using-with
                self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)
            self.started_at = time.monotonic()
            if self._wait_for_qmp(30.0):
                return self
            # another process may have taken the port between free_port() and QEMU's bind: try another
            port_taken = 'host forwarding' in self.qemu_log.read_text(encoding='utf-8', errors='replace')
            if not port_taken or attempt == attempts:
                break
        raise QemuVMError(f'QEMU did not start (exit {self.process.returncode}):\n{tail(self.qemu_log)}')

    def _wait_for_qmp(self, timeout: float) -> bool:
        """Wait until QEMU answers on QMP; False when it exited first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if self.qmp_socket.exists():
                with contextlib.suppress(OSError, ValueError):
                    self.qmp('query-status')
                    return True
            time.sleep(0.2)
        self.process.kill()
        self.process.wait()
        return False

    def running(self) -> bool:
        """True while the QEMU process is alive."""
        return self.process is not None and self.process.poll() is None

    def qmp(self, command: str, arguments: dict[str, t.Any] | None = None, timeout: float = 10.0) -> t.Any:
        """Run one QMP command and return its ``return`` value (events are skipped)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self.qmp_socket))
            stream = sock.makefile('rw', encoding='utf-8')
            json.loads(stream.readline())  # greeting
            for execute, args in (('qmp_capabilities', None), (command, arguments)):
                message: dict[str, t.Any] = {'execute': execute}
                if args:
                    message['arguments'] = args
                stream.write(json.dumps(message) + '\n')
                stream.flush()
                while True:
                    line = stream.readline()
                    if not line:
                        if execute == 'quit':
                            return {}
                        raise QemuVMError(f'QMP connection closed during {execute}')
                    reply = json.loads(line)
                    if 'return' in reply:
                        break
                    if 'error' in reply:
                        raise QemuVMError(f'QMP {execute} failed: {reply["error"]}')
            return reply['return']

    def _failure(self, message: str) -> QemuVMError:
        """Return an error carrying MESSAGE and the tails of the console and QEMU logs."""
        return QemuVMError(f'{message}\n--- console ({self.console_log}) ---\n{tail(self.console_log)}'
                           f'\n--- qemu ({self.qemu_log}) ---\n{tail(self.qemu_log, 10)}')

    # -- SSH -------------------------------------------------------------------------

    def ssh_command(self, command: str | t.Sequence[str] = (), connect_timeout: int = 10) -> list[str]:
        """Return the ssh command line that runs COMMAND (a string or argv) as root in the guest."""
        if self.port is None:
            raise QemuVMError('the VM has not been started')
        remote = command if isinstance(command, str) else shlex.join(command)
        argv = ['ssh', '-F', '/dev/null', *SSH_OPTIONS, '-o', 'BatchMode=yes', '-o', f'ConnectTimeout={connect_timeout}',
                '-i', str(self.base.private_key), '-p', str(self.port), 'root@127.0.0.1']
        return argv + ['--', remote] if remote else argv

    def ssh(self, command: str | t.Sequence[str], timeout: float = 120.0, check: bool = False) -> subprocess.CompletedProcess:
        """Run COMMAND in the guest over SSH; return the CompletedProcess (text output)."""
        try:
            return subprocess.run(self.ssh_command(command), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout, check=check)
        except subprocess.TimeoutExpired as exc:
            raise QemuVMError(f'ssh {command!r} did not finish within {timeout:.0f}s') from exc

    def wait_for_ssh(self, timeout: float = 300.0) -> float:
        """Wait until root can log in over SSH; return seconds since start. Bounded by TIMEOUT."""
        def gone() -> t.Optional[str]:
            if self.running():
                return None
            return f'QEMU exited (code {self.process.returncode if self.process else None}) before SSH answered'
        poll_ssh(self.ssh_command, gone, timeout, self._failure)
        return time.monotonic() - self.started_at

    # -- Ansible ---------------------------------------------------------------------

    def inventory_vars(self) -> dict[str, t.Any]:
        """Return the host variables Ansible needs to reach this VM over SSH."""
        return ssh_inventory_vars(self.port, self.base.private_key)

    def write_inventory(self, path: pathlib.Path | None = None, host: str = 'vm') -> pathlib.Path:
        """Write a YAML (JSON syntax) inventory with this VM as HOST; return its path."""
        path = pathlib.Path(path) if path else self.workdir / 'inventory.yml'
        path.write_text(json.dumps({'all': {'hosts': {host: self.inventory_vars()}}}, indent=2) + '\n', encoding='utf-8')
        return path

    # -- stopping --------------------------------------------------------------------

    def _wait_exit(self, timeout: float) -> bool:
        """Wait up to TIMEOUT seconds for QEMU to exit; True when it did."""
        try:
            self.process.wait(timeout=max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False

    def poweroff(self, timeout: float = 120.0) -> PowerOff:
        """Power the guest off from inside and wait for QEMU to exit, bounded by TIMEOUT.

        Falls back to QMP ``quit`` and then to killing QEMU; the result says which one ended it.
        """
        if not self.running():
            raise QemuVMError('the VM is not running')
        start = time.monotonic()
        # the SSH session may die with the guest (exit 255): only QEMU's exit counts
        with contextlib.suppress(QemuVMError):
            self.ssh('systemctl poweroff', timeout=min(30.0, timeout))
        if self._wait_exit(timeout - (time.monotonic() - start)):
            return PowerOff('guest', time.monotonic() - start, self.process.returncode)
        detail = f'the guest did not power off within {timeout:.0f}s'
        with contextlib.suppress(OSError, ValueError, QemuVMError):
            self.qmp('quit')
        if self._wait_exit(10.0):
            return PowerOff('qmp-quit', time.monotonic() - start, self.process.returncode, detail)
        self.process.kill()
        self.process.wait()
        return PowerOff('kill', time.monotonic() - start, self.process.returncode, detail + '; QMP quit did not stop QEMU')

    def cleanup(self) -> None:
        """Kill QEMU if it still runs and remove the overlay and the QMP socket."""
        if self.running():
            self.process.kill()
        if self.process is not None:
            self.process.wait()
        self.overlay.unlink(missing_ok=True)
        if self._qmp_dir is not None:
            self.qmp_socket.unlink(missing_ok=True)
            if self._qmp_dir != self.workdir:
                shutil.rmtree(self._qmp_dir, ignore_errors=True)

    def __enter__(self) -> QemuVM:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()


def _interrupt(signum: int, _frame: object) -> None:
    """Turn SIGTERM into KeyboardInterrupt, so ``boot`` powers its VM off either way."""
    raise KeyboardInterrupt(f'signal {signum}')


def _boot(workdir: pathlib.Path | None) -> None:
    """Boot one VM interactively: print how to reach it, power it off on Ctrl-C or SIGTERM."""
    signal.signal(signal.SIGTERM, _interrupt)
    directory = workdir or pathlib.Path(tempfile.mkdtemp(prefix='imageprep-vm-'))
    with QemuVM(directory) as vm:
        vm.start()
        print(f'accelerator: {vm.accel} ({vm.accel_why})')
        print(f'console log: {vm.console_log}')
        print(f'ssh ready after {vm.wait_for_ssh():.1f}s')
        print(f'inventory:   {vm.write_inventory()}')
        print('ssh:         ' + shlex.join(vm.ssh_command()))
        print('Ctrl-C or SIGTERM powers it off', flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            vm.process.wait()
        if vm.running():
            result = vm.poweroff()
            print(f'stopped by {result.method} after {result.seconds:.1f}s {result.detail}'.rstrip())


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=['build', 'accel', 'boot'])
    parser.add_argument('workdir', nargs='?', type=pathlib.Path)
    args = parser.parse_args()
    try:
        if args.action == 'build':
            base = build()
            for name in ('disk', 'kernel', 'initrd', 'private_key', 'public_key'):
                print(f'{name}: {getattr(base, name)}')
        elif args.action == 'accel':
            accel, why = choose_accel()
            print(f'{accel}: {why}')
        else:
            _boot(args.workdir)
    except (QemuVMError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f'qemu_vm.py {args.action}: {exc}') from exc


if __name__ == '__main__':
    main()
