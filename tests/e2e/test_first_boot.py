# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A VM deprovisioned by the linux_deprovision role boots clones with a new identity.

A running Debian 12 VM is deprovisioned over SSH and powers off (the final pass runs late in
its shutdown); its disk is then judged offline by linux_residue_info, and a clone booted from
that disk (an overlay, the disk itself is never written) must come up with its own SSH host
keys - sshd answers with keys no one had before - and its own machine-id.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
import subprocess
import tempfile
import time
import typing as t

import qemu_vm
from module_runs import run_module
from test_qemu_vm import POWEROFF_TIMEOUT, ansible_executable

HERE = pathlib.Path(__file__).resolve().parent
SSH_TIMEOUT = 300.0
MACHINE_ID = re.compile(r'^[0-9a-f]{32}$')


def host_keys(vm: qemu_vm.QemuVM) -> set[str]:
    """The base64 blobs of the host keys the VM's sshd offers, read with ssh-keyscan (no login needed)."""
    scan = subprocess.run(['ssh-keyscan', '-T', '10', '-p', str(vm.port), '127.0.0.1'], capture_output=True, text=True,
                          timeout=60, check=False)
    return {line.split()[2] for line in scan.stdout.splitlines() if len(line.split()) >= 3 and not line.startswith('#')}


def wait_for_host_keys(vm: qemu_vm.QemuVM, timeout: float) -> set[str]:
    """Poll ssh-keyscan until sshd answers with keys; bounded by TIMEOUT."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not vm.running():
            raise AssertionError(f'the clone stopped:\n{qemu_vm.tail(vm.console_log)}')
        keys = host_keys(vm)
        if keys:
            return keys
        time.sleep(2)
    raise AssertionError(f'sshd of the clone did not answer within {timeout:.0f}s:\n{qemu_vm.tail(vm.console_log)}')


@contextlib.contextmanager
def mounted_copy(overlay: pathlib.Path, raw: pathlib.Path) -> t.Iterator[pathlib.Path]:
    """The disk behind OVERLAY flattened to the raw file RAW and mounted read-only; unmounted afterwards."""
    subprocess.run(['qemu-img', 'convert', '-O', 'raw', str(overlay), str(raw)], check=True)
    point = pathlib.Path(tempfile.mkdtemp(prefix='imageprep-disk-'))
    subprocess.run(['mount', '-o', 'loop,ro', str(raw), str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(['umount', str(point)], check=True)
        point.rmdir()


def power_off_by_button(vm: qemu_vm.QemuVM, timeout: float) -> str:
    """Press the ACPI power button (the clone has no login for us) and wait for QEMU to exit."""
    vm.qmp('system_powerdown')
    with contextlib.suppress(subprocess.TimeoutExpired):
        vm.process.wait(timeout=timeout)
        return 'guest'
    vm.qmp('quit')
    vm.process.wait(timeout=30)
    return 'qmp-quit'


def test_a_deprovisioned_vm_boots_clones_with_a_new_identity(
        tmp_path: pathlib.Path, vm_base_disk: qemu_vm.BaseDisk, request) -> None:
    source = qemu_vm.QemuVM(tmp_path / 'source', base=vm_base_disk)
    image = tmp_path / 'image.raw'
    try:
        source.start()
        source.wait_for_ssh(SSH_TIMEOUT)
        keys_before = host_keys(source)
        id_before = source.ssh(['cat', '/etc/machine-id'], check=True).stdout.strip()
        assert keys_before and MACHINE_ID.match(id_before)

        inventory = source.write_inventory(tmp_path / 'inventory.yml')
        env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_HOME=str(tmp_path / 'ansible-home'))
        playbook = pathlib.Path(ansible_executable()).with_name('ansible-playbook')
        start = time.monotonic()
        run = subprocess.run([str(playbook), '-i', str(inventory), str(HERE / 'playbooks' / 'deprovision.yml'),
                              '-e', f'linux_deprovision_report_dir={tmp_path / "reports"}',
                              '-e', 'linux_deprovision_poweroff=true'],
                             capture_output=True, text=True, timeout=900, env=env, check=False)
        assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
        request.node.user_properties.append(('role', f'{time.monotonic() - start:.1f}s'))
        report = json.loads((tmp_path / 'reports' / 'vm.json').read_text(encoding='utf-8'))
        assert report['audit']['clean'] and report['final_pass_pending']

        # the role powered the VM off (new SSH logins fail once the host keys are gone): the
        # final pass runs late in that shutdown
        try:
            source.process.wait(timeout=POWEROFF_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f'the VM did not power off:\n{qemu_vm.tail(source.console_log)}') from None
        assert source.process.returncode == 0
        with mounted_copy(source.overlay, image) as root:
            judged = run_module('linux_residue_info', {'root': str(root)}, tmp_path / 'runs')
            assert judged['clean'], judged['findings']
            assert not judged['final_pass_pending']
            assert (root / 'etc/machine-id').read_text() == 'uninitialized\n'
            assert not list((root / 'etc/ssh').glob('ssh_host_*'))
            assert not (root / 'etc/systemd/system/imageprep-final-pass.service').exists()
            assert (root / 'etc/systemd/system/imageprep-firstboot-ssh-keys.service').exists()
            assert not (root / 'root/.ssh/authorized_keys').exists()
    finally:
        source.cleanup()

    clone = qemu_vm.QemuVM(tmp_path / 'clone', base=vm_base_disk, backing=image)
    try:
        clone.start()
        keys_after = wait_for_host_keys(clone, SSH_TIMEOUT)
        request.node.user_properties.append(('clone sshd', f'{time.monotonic() - clone.started_at:.1f}s after start'))
        assert keys_after and not keys_after & keys_before
        how = power_off_by_button(clone, POWEROFF_TIMEOUT)
        request.node.user_properties.append(('clone poweroff', how))
        with mounted_copy(clone.overlay, tmp_path / 'clone.raw') as root:
            id_after = (root / 'etc/machine-id').read_text().strip()
            assert MACHINE_ID.match(id_after) and id_after != id_before
            served = {(root / 'etc/ssh' / name).read_text().split()[1]
                      for name in os.listdir(root / 'etc/ssh') if name.endswith('_key.pub')}
            assert keys_after <= served
            # the first-boot unit ran once and removed itself
            assert not (root / 'etc/systemd/system/imageprep-firstboot-ssh-keys.service').exists()
    finally:
        clone.cleanup()
        image.unlink(missing_ok=True)
