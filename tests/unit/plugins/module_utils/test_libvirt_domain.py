# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading a libvirt domain definition: which disk is the OS disk, LUNs, firmware, architecture."""
from __future__ import annotations

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils import _libvirt_domain as libvirt_domain

DOMAIN = """<domain type='kvm'>
  <name>web01</name>
  <os firmware='{firmware}'><type arch='{arch}' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/v/data.raw'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/v/seed.iso'/><target dev='sda' bus='sata'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/v/os.qcow2'/><target dev='vda' bus='virtio'/>{boot}</disk>
    <disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg/logs'/><target dev='vdc' bus='virtio'/></disk>
  </devices>
</domain>"""


def test_boot_order_picks_the_os_disk_and_data_disks_keep_their_order():
    info = libvirt_domain.parse_domain_xml(DOMAIN.format(firmware='efi', arch='x86_64', boot="<boot order='1'/>"))
    assert [(d['path'], d['lun'], d['format']) for d in info['disks']] == [
        ('/v/os.qcow2', None, 'qcow2'), ('/v/data.raw', 0, 'raw'), ('/dev/vg/logs', 1, 'raw')]
    assert info['firmware'] == 'uefi'


def test_without_boot_order_the_first_disk_is_the_os_disk():
    info = libvirt_domain.parse_domain_xml(DOMAIN.format(firmware='bios', arch='aarch64', boot=''))
    assert info['disks'][0]['path'] == '/v/data.raw'
    assert info['architecture'] == 'aarch64'
    assert info['firmware'] == 'bios'


def test_pflash_loader_means_uefi():
    text = ("<domain><os><type arch='x86_64'>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader></os>"
            "<devices><disk device='disk'><source file='/v/a'/><target dev='vda'/></disk></devices></domain>")
    assert libvirt_domain.parse_domain_xml(text)['firmware'] == 'uefi'


@pytest.mark.parametrize('text, message', [
    ('<domain><devices/></domain>', 'no disks'),
    ("<domain><devices><disk type='network' device='disk'><source protocol='rbd' name='p/i'/><target dev='vda'/></disk></devices></domain>",
     'network disks'),
    ('<domain><devices>', 'not valid XML'),
])
def test_unusable_definitions(text, message):
    with pytest.raises(libvirt_domain.DomainError, match=message):
        libvirt_domain.parse_domain_xml(text)


@pytest.mark.parametrize('state, problem', [('shut off', False), ('running', True), ('paused', True), ('in shutdown', True)])
def test_only_a_shut_off_domain_is_consistent(state, problem):
    assert (libvirt_domain.capture_problem({'state': state}) is not None) is problem


def test_virsh_failure_is_reported():
    def runner(args):
        assert args[:4] == ['virsh', '-q', '-c', 'qemu:///system']
        return 1, '', "error: failed to get domain 'nope'"
    with pytest.raises(libvirt_domain.DomainError, match="failed to get domain 'nope'"):
        libvirt_domain.read_domain(runner, 'qemu:///system', 'nope')
