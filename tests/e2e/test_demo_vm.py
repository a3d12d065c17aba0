# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo VM boots through its UEFI firmware, is reached as the provisioning account, sees its data disk and shuts down."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import demo_vm
import libvirt_host

# bound for one boot under TCG on a busy 2-core host (measured: SSH 55-80 s after start, OVMF and GRUB included)
SSH_TIMEOUT = 300.0
# systemd-logind handles the ACPI button in a few seconds; the bound only stops a hung guest from hanging the suite
SHUTDOWN_TIMEOUT = 120.0
# /srv/data is mounted with nofail, so it may follow SSH by a moment
MOUNT_TIMEOUT = 60.0


def ansible_executable() -> str:
    """Return the toolchain's ansible (next to the Python running the tests), else the one on PATH."""
    sibling = pathlib.Path(sys.executable).parent / 'ansible'
    found = str(sibling) if sibling.exists() else shutil.which('ansible')
    assert found, 'ansible is not installed next to this Python nor on PATH'
    return found


def wait_for_data_mount(vm: demo_vm.DemoVM) -> subprocess.CompletedProcess:
    """Return ``findmnt`` of /srv/data once the guest has mounted it (bounded)."""
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while True:
        found = vm.ssh(['findmnt', '-no', 'SOURCE,FSTYPE', demo_vm.DATA_MOUNT])
        if found.returncode == 0 or time.monotonic() > deadline:
            return found
        time.sleep(2.0)


def test_demo_vm_boots_through_its_firmware_and_is_ready_for_the_pipeline(tmp_path, request):
    daemon = libvirt_host.ensure_daemon()
    request.node.user_properties.append(('daemon', f'virtlogd {daemon.virtlogd}, libvirtd {daemon.libvirtd}'))
    cold = not demo_vm.disk_path().exists()
    start = time.monotonic()
    base = demo_vm.build()
    request.node.user_properties.append(('base disk', f'{time.monotonic() - start:.1f}s ({"built" if cold else "cached"})'))

    with demo_vm.DemoVM.create(tmp_path / 'demo', base, name=libvirt_host.unique_name('demo')) as vm:
        request.node.user_properties.append(('domain type', f'{vm.domain_type} ({vm.domain_type_why})'))
        assert vm.block_devices() == {'vda': str(vm.os_disk), 'vdb': str(vm.data_disk)}
        start = time.monotonic()
        vm.start()
        request.node.user_properties.append(('ssh ready', f'{vm.wait_for_ssh(SSH_TIMEOUT):.1f}s after start'))

        # what libvirt runs: OVMF from flash with the domain's own variable store, no kernel of its own
        live = ET.fromstring(vm.dumpxml()).find('os')
        assert live.find('loader').text == str(libvirt_host.OVMF_CODE)
        assert (live.find('loader').get('type'), live.find('loader').get('readonly')) == ('pflash', 'yes')
        assert live.find('nvram').text == str(vm.nvram) and vm.nvram.exists()
        assert live.find('kernel') is None and live.find('initrd') is None
        console = vm.console_log.read_text(encoding='utf-8', errors='replace')
        for mark in ('BdsDxe: starting', demo_vm.GRUB_MARK, 'Linux version'):
            assert mark in console, f'{mark!r} not on the serial console:\n{console[-3000:]}'
        cmdline = vm.ssh(['cat', '/proc/cmdline'])
        assert f'root=UUID={demo_vm.ROOT_UUID}' in cmdline.stdout and 'BOOT_IMAGE=/vmlinuz' in cmdline.stdout, cmdline

        who = vm.ssh(['id', '-un'])
        assert (who.returncode, who.stdout.strip()) == (0, 'provision'), who
        become = vm.ssh('sudo -n true && sudo -n id -u')
        assert (become.returncode, become.stdout.strip()) == (0, '0'), become
        mounted = wait_for_data_mount(vm)
        assert mounted.stdout.split() == ['/dev/vdb', 'ext4'], mounted
        marker = vm.ssh(['cat', f'{demo_vm.DATA_MOUNT}/{demo_vm.DATA_MARKER}'])
        assert marker.stdout == demo_vm.DATA_MARKER_TEXT, marker
        # cloud-init is installed, and without a datasource its generator keeps it off the boot
        installed = vm.ssh(['dpkg-query', '-W', '-f=${Status}', 'cloud-init'])
        assert installed.stdout == 'install ok installed', installed
        assert 'disabled' in vm.ssh(['cloud-init', 'status']).stdout
        root_keys = vm.ssh(['sudo', '-n', 'test', '-e', '/root/.ssh/authorized_keys'])
        assert root_keys.returncode == 1, f'root has an authorized_keys file: {root_keys}'

        # the inventory is what the pipeline gets: Ansible logs in as provision and becomes root
        inventory = demo_vm.write_inventory(tmp_path / 'inventory.yml', vm)
        env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_HOME=str(tmp_path / 'ansible-home'), ANSIBLE_LOAD_CALLBACK_PLUGINS='1',
                   ANSIBLE_STDOUT_CALLBACK='ansible.posix.json')
        start = time.monotonic()
        result = subprocess.run([ansible_executable(), 'all', '-i', str(inventory), '-m', 'ansible.builtin.command', '-a', 'id -u'],
                                capture_output=True, text=True, env=env, timeout=180, check=False)
        request.node.user_properties.append(('ansible command with become', f'{time.monotonic() - start:.1f}s'))
        assert result.returncode == 0, f'{result.stdout}\n{result.stderr}'
        assert json.loads(result.stdout)['plays'][0]['tasks'][0]['hosts'][vm.name]['stdout'] == '0'

        start = time.monotonic()
        assert vm.shutdown(SHUTDOWN_TIMEOUT, destroy_after_timeout=False) == 'guest'
        request.node.user_properties.append(('shutdown', f'{time.monotonic() - start:.1f}s'))
        assert vm.state() == 'shut off'
    assert not vm.exists()
    assert not any(path.exists() for path in demo_vm.instance_files(vm.workdir, vm.name))
    assert base.disk.exists()
