# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cached Debian disk boots as a libvirt domain, sees its data disk, answers SSH and shuts down when asked."""
from __future__ import annotations

import subprocess
import time

import libvirt_host

# bound for one boot under TCG on a busy 2-core host (measured: SSH after 45-70 s)
SSH_TIMEOUT = 300.0
# systemd-logind handles the ACPI button in 3-6 s; the bound only stops a hung guest from hanging the suite
SHUTDOWN_TIMEOUT = 120.0


def test_debian_domain_boots_sees_its_data_disk_and_shuts_down(vm_base_disk, tmp_path, request):
    daemon = libvirt_host.ensure_daemon()
    request.node.user_properties.append(('daemon', f'virtlogd {daemon.virtlogd}, libvirtd {daemon.libvirtd}'))
    data_disk = tmp_path / 'data.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(data_disk), '64M'], check=True)
    with libvirt_host.DebianDomain.create(tmp_path / 'domain', base=vm_base_disk, data_disks=[{'path': data_disk}]) as domain:
        request.node.user_properties.append(('domain type', f'{domain.domain_type} ({domain.domain_type_why})'))
        assert domain.block_devices() == {'vda': str(domain.overlay), 'vdb': str(data_disk)}
        start = time.monotonic()
        domain.start()
        request.node.user_properties.append(('start', f'{time.monotonic() - start:.2f}s'))
        request.node.user_properties.append(('ssh ready', f'{domain.wait_for_ssh(SSH_TIMEOUT):.1f}s after start'))

        init = domain.ssh(['cat', '/proc/1/comm'])
        assert init.returncode == 0, init.stderr
        assert init.stdout.strip() == 'systemd'
        size = domain.ssh(['lsblk', '-bdno', 'SIZE', '/dev/vdb'])
        assert size.stdout.strip() == str(64 * 1024 * 1024), size

        start = time.monotonic()
        assert domain.shutdown(SHUTDOWN_TIMEOUT, destroy_after_timeout=False) == 'guest'
        request.node.user_properties.append(('shutdown', f'{time.monotonic() - start:.1f}s'))
        assert domain.state() == 'shut off'
    assert not domain.exists()
    assert not domain.overlay.exists()
