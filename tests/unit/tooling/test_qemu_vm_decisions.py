# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The QEMU test VM's decisions: which accelerator, which command line, how it is reached."""
from __future__ import annotations

import configparser
import pathlib

import pytest

import qemu_vm


@pytest.mark.parametrize(('value', 'expected'), [('', None), ('  ', None), ('kvm', 'kvm'), (' TCG ', 'tcg')])
def test_accel_override(value, expected):
    assert qemu_vm.accel_override(value) == expected


def test_accel_override_rejects_unknown_accelerators():
    with pytest.raises(qemu_vm.QemuVMError, match='kvm'):
        qemu_vm.accel_override('xen')


@pytest.mark.parametrize(('console', 'returncode', 'stderr', 'works', 'why'), [
    ('[ 0.0] Linux version 6.1\n[ 1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\n', 0, '', True, 'ran the guest kernel'),
    ('', None, '', False, 'no console output'),
    ('[ 0.0] Linux version 6.1\n', None, '', False, 'did not finish'),
    ('', -6, 'warning: x\nkvm.c:3183: kvm_buf_set_msrs: Assertion failed.\n', False, 'kvm_buf_set_msrs'),
    ('[ 0.0] Linux version 6.1\n', 1, '', False, 'no error output'),
])
def test_probe_verdict_needs_a_whole_kernel_boot(console, returncode, stderr, works, why):
    verdict = qemu_vm.probe_verdict(console, returncode, stderr, 3.0)
    assert verdict[0] is works
    assert why in verdict[1]


def test_choose_accel_override_skips_the_probe(monkeypatch):
    monkeypatch.setenv('IMAGEPREP_QEMU_ACCEL', 'kvm')
    monkeypatch.setattr(qemu_vm, 'probe_kvm', lambda kernel: pytest.fail('probed despite the override'))
    assert qemu_vm.choose_accel(pathlib.Path('/unused')) == ('kvm', 'set by IMAGEPREP_QEMU_ACCEL')


def test_choose_accel_without_usable_dev_kvm_is_tcg(monkeypatch):
    monkeypatch.delenv('IMAGEPREP_QEMU_ACCEL', raising=False)
    monkeypatch.setattr(qemu_vm.os, 'access', lambda path, mode: False)
    monkeypatch.setattr(qemu_vm, 'probe_kvm', lambda kernel: pytest.fail('probed without /dev/kvm'))
    assert qemu_vm.choose_accel(pathlib.Path('/unused'))[0] == 'tcg'


@pytest.mark.parametrize(('works', 'accel'), [(True, 'kvm'), (False, 'tcg')])
def test_choose_accel_probes_once_per_host(monkeypatch, tmp_path, works, accel):
    monkeypatch.setenv('IMAGEPREP_TEST_CACHE', str(tmp_path))
    monkeypatch.delenv('IMAGEPREP_QEMU_ACCEL', raising=False)
    monkeypatch.setattr(qemu_vm.os, 'access', lambda path, mode: True)
    monkeypatch.setattr(qemu_vm, '_qemu_version', lambda: f'QEMU emulator version test-{works}')
    memo = {}
    monkeypatch.setattr(qemu_vm, '_ACCEL_MEMO', memo)
    probes = []
    monkeypatch.setattr(qemu_vm, 'probe_kvm', lambda kernel: probes.append(kernel) or (works, 'probed'))
    assert qemu_vm.choose_accel(pathlib.Path('vmlinuz')) == (accel, 'probed')
    memo.clear()  # a new session: only the file in the cache directory remains
    assert qemu_vm.choose_accel(pathlib.Path('vmlinuz')) == (accel, 'probed (cached decision)')
    assert len(probes) == 1
    assert len(list(tmp_path.glob('qemu-accel-*.json'))) == 1


def test_disk_key_follows_the_root(monkeypatch, tmp_path):
    monkeypatch.setenv('IMAGEPREP_TEST_CACHE', str(tmp_path))
    monkeypatch.setattr(qemu_vm.debian_root, 'tarball_path', lambda profile: tmp_path / 'debian12-vm-1111111111111111.tar')
    one = qemu_vm.disk_path()
    monkeypatch.setattr(qemu_vm.debian_root, 'tarball_path', lambda profile: tmp_path / 'debian12-vm-2222222222222222.tar')
    assert qemu_vm.disk_path() != one
    assert one.parent == tmp_path and one.name.startswith('debian12-vmdisk-')


def test_network_file_asks_dhcp_on_every_ethernet_name():
    parser = configparser.ConfigParser()
    parser.read_string(qemu_vm.NETWORK_FILE)
    assert parser['Match']['Name'].split() == ['en*', 'eth*']
    assert parser['Network']['DHCP'] == 'yes'


def test_fstab_mounts_the_virtio_disk_as_root():
    entries = [line.split() for line in qemu_vm.FSTAB.splitlines() if line and not line.startswith('#')]
    assert entries == [['/dev/vda', '/', 'ext4', 'defaults', '0', '1']]


@pytest.fixture
def vm(monkeypatch, tmp_path):
    monkeypatch.setenv('IMAGEPREP_QEMU_ACCEL', 'tcg')
    machine = qemu_vm.QemuVM(tmp_path / 'vmdir', base=qemu_vm.BaseDisk(tmp_path / 'base'))
    machine.port = 40022
    return machine


def option(command, name):
    return [command[i + 1] for i, item in enumerate(command) if item == name]


def test_command_boots_the_overlay_not_the_base(vm, tmp_path):
    command = vm.command()
    assert option(command, '-drive') == [f'file={tmp_path}/vmdir/overlay.qcow2,format=qcow2,if=virtio']
    assert str(vm.base.disk) not in ' '.join(command)
    assert option(command, '-kernel') == [str(tmp_path / 'base' / 'vmlinuz')]
    assert option(command, '-initrd') == [str(tmp_path / 'base' / 'initrd.img')]
    assert option(command, '-append') == ['root=/dev/vda console=ttyS0 rw']


def test_command_forwards_ssh_on_loopback_only(vm):
    netdev = option(vm.command(), '-netdev')
    assert netdev == ['user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22']


def test_command_uses_the_chosen_accelerator_headless_with_logs(vm):
    command = vm.command()
    assert option(command, '-accel') == ['tcg,thread=multi'] and option(command, '-cpu') == ['max']
    assert option(command, '-display') == ['none']
    assert option(command, '-serial') == [f'file:{vm.console_log}']
    assert option(command, '-qmp') == [f'unix:{vm.qmp_socket},server=on,wait=off']


def test_qmp_socket_path_fits_a_unix_socket(monkeypatch, tmp_path):
    monkeypatch.setenv('IMAGEPREP_QEMU_ACCEL', 'tcg')
    deep = tmp_path / ('d' * 120)
    machine = qemu_vm.QemuVM(deep, base=qemu_vm.BaseDisk(tmp_path / 'base'))
    try:
        assert len(str(machine.qmp_socket)) < 108
    finally:
        machine.cleanup()
    assert not machine.qmp_socket.parent.exists()


def test_ssh_logs_in_as_root_with_the_test_key_and_no_known_hosts(vm):
    command = vm.ssh_command(['cat', '/etc/os-release'])
    assert command[0] == 'ssh' and command[-3:] == ['root@127.0.0.1', '--', 'cat /etc/os-release']
    assert option(command, '-i') == [str(vm.base.private_key)] and option(command, '-p') == ['40022']
    assert {'StrictHostKeyChecking=no', 'UserKnownHostsFile=/dev/null', 'BatchMode=yes'} <= set(option(command, '-o'))


def test_inventory_reaches_the_forwarded_port(vm):
    host_vars = vm.inventory_vars()
    assert host_vars['ansible_host'] == '127.0.0.1' and host_vars['ansible_port'] == 40022
    assert host_vars['ansible_user'] == 'root'
    assert host_vars['ansible_ssh_private_key_file'] == str(vm.base.private_key)
    assert 'UserKnownHostsFile=/dev/null' in host_vars['ansible_ssh_common_args']
    assert host_vars['ansible_python_interpreter'] == '/usr/bin/python3'


@pytest.mark.parametrize(('method', 'returncode', 'clean'), [('guest', 0, True), ('guest', 1, False), ('qmp-quit', 0, False), ('kill', -9, False)])
def test_only_a_guest_poweroff_is_clean(method, returncode, clean):
    assert qemu_vm.PowerOff(method, 1.0, returncode).clean is clean
