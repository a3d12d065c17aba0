# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libvirt test host's decisions: domain XML, disk targets, domain type, test domain names."""
from __future__ import annotations

import os
import pathlib
import xml.etree.ElementTree as ET

import pytest

import libvirt_host

QEMU_NS = '{http://libvirt.org/schemas/domain/qemu/1.0}'


def render(**overrides) -> ET.Element:
    """Render a domain (two disks unless overridden) and parse the XML back."""
    options = {
        'name': 'imageprep-test-1-abcdef-vm',
        'disks': tuple(libvirt_host.disk_specs([{'path': '/images/os.qcow2'}, {'path': '/images/data.raw', 'format': 'raw'}])),
        'console_log': pathlib.Path('/scratch/console.log'),
    }
    options.update(overrides)
    return ET.fromstring(libvirt_host.render_domain_xml(libvirt_host.DomainSpec(**options)))


def test_domain_xml_has_virtio_disks_in_order():
    domain = render()
    assert domain.get('type') == 'qemu'
    assert domain.findtext('name') == 'imageprep-test-1-abcdef-vm'
    disks = [(disk.find('source').get('file'), disk.find('driver').get('type'), disk.find('target').get('dev'), disk.find('target').get('bus'))
             for disk in domain.findall('devices/disk')]
    assert disks == [('/images/os.qcow2', 'qcow2', 'vda', 'virtio'), ('/images/data.raw', 'raw', 'vdb', 'virtio')]
    assert all(disk.get('type') == 'file' and disk.get('device') == 'disk' for disk in domain.findall('devices/disk'))


def test_domain_xml_logs_the_console_and_has_no_graphics_nor_network():
    domain = render()
    serial = domain.find('devices/serial')
    assert serial.get('type') == 'file'
    assert serial.find('source').get('path') == '/scratch/console.log'
    for absent in ('devices/graphics', 'devices/video', 'devices/interface', f'{QEMU_NS}commandline'):
        assert domain.find(absent) is None, absent
    assert domain.find('features/acpi') is not None, 'virsh shutdown needs ACPI'


def test_domain_xml_runs_qemu_as_root_without_relabelling():
    seclabel = render().find('seclabel')
    assert (seclabel.get('type'), seclabel.get('model'), seclabel.get('relabel')) == ('static', 'dac', 'no')
    assert seclabel.findtext('label') == '+0:+0'


def test_domain_xml_memory_and_cpus():
    domain = render(memory_mib=512, vcpus=2)
    assert (domain.findtext('memory'), domain.find('memory').get('unit')) == ('512', 'MiB')
    assert domain.findtext('vcpu') == '2'


@pytest.mark.parametrize(('domain_type', 'cpu_mode'), [('qemu', 'maximum'), ('kvm', 'host-passthrough')])
def test_domain_xml_type_and_cpu(domain_type, cpu_mode):
    domain = render(domain_type=domain_type)
    assert domain.get('type') == domain_type
    assert domain.find('cpu').get('mode') == cpu_mode


def test_domain_xml_boots_a_kernel_directly():
    domain = render(kernel=pathlib.Path('/base/vmlinuz'), initrd=pathlib.Path('/base/initrd.img'), cmdline='root=/dev/vda console=ttyS0 rw')
    assert domain.findtext('os/kernel') == '/base/vmlinuz'
    assert domain.findtext('os/initrd') == '/base/initrd.img'
    assert domain.findtext('os/cmdline') == 'root=/dev/vda console=ttyS0 rw'
    assert domain.find('os/boot') is None


def test_domain_xml_without_kernel_boots_from_the_first_disk():
    domain = render()
    assert domain.find('os/kernel') is None
    assert domain.find('os/boot').get('dev') == 'hd'


def test_domain_xml_forwards_ssh_through_qemus_user_network():
    domain = render(ssh_port=40022)
    values = [arg.get('value') for arg in domain.findall(f'{QEMU_NS}commandline/{QEMU_NS}arg')]
    assert values[0] == '-netdev' and 'hostfwd=tcp:127.0.0.1:40022-:22' in values[1]
    assert values[2] == '-device' and values[3].startswith('virtio-net-pci,netdev=imageprep-net0')


@pytest.mark.parametrize(('overrides', 'message'), [
    ({'domain_type': 'xen'}, 'domain type'),
    ({'disks': ()}, 'at least one disk'),
    ({'initrd': pathlib.Path('/base/initrd.img')}, 'need a kernel'),
])
def test_domain_xml_refuses_bad_specs(overrides, message):
    with pytest.raises(libvirt_host.LibvirtHostError, match=message):
        render(**overrides)


@pytest.mark.parametrize(('index', 'target'), [(0, 'vda'), (1, 'vdb'), (25, 'vdz'), (26, 'vdaa'), (27, 'vdab')])
def test_virtio_target(index, target):
    assert libvirt_host.virtio_target(index) == target


def test_disk_specs_keep_given_targets_and_make_paths_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    specs = libvirt_host.disk_specs([libvirt_host.DiskSpec(pathlib.Path('os.qcow2')), {'path': 'data.vmdk', 'format': 'vmdk', 'target_dev': 'vdc'}])
    assert specs == [libvirt_host.DiskSpec(tmp_path / 'os.qcow2', 'qcow2', 'vda'), libvirt_host.DiskSpec(tmp_path / 'data.vmdk', 'vmdk', 'vdc')]


@pytest.mark.parametrize(('disks', 'message'), [
    ([{'path': 'a', 'format': 'iso'}], 'format must be one of'),
    ([{'path': 'a', 'target_dev': 'sda'}], 'virtio disk name'),
    ([{'path': 'a'}, {'path': 'b', 'target_dev': 'vda'}], 'used twice'),
    ([{'format': 'raw'}], 'no path'),
    ([{'path': 'a', 'bus': 'sata'}], 'unknown keys'),
])
def test_disk_specs_refuse_bad_disks(disks, message):
    with pytest.raises(libvirt_host.LibvirtHostError, match=message):
        libvirt_host.disk_specs(disks)


def test_choose_domain_type_without_kernel_is_qemu(monkeypatch):
    monkeypatch.delenv('IMAGEPREP_QEMU_ACCEL', raising=False)
    monkeypatch.setattr(libvirt_host.qemu_vm, 'choose_accel', lambda kernel: pytest.fail('probed without a kernel'))
    assert libvirt_host.choose_domain_type(None)[0] == 'qemu'


@pytest.mark.parametrize(('accel', 'domain_type'), [('kvm', 'kvm'), ('tcg', 'qemu')])
def test_choose_domain_type_follows_the_kvm_probe(monkeypatch, accel, domain_type):
    monkeypatch.delenv('IMAGEPREP_QEMU_ACCEL', raising=False)
    monkeypatch.setattr(libvirt_host.qemu_vm, 'choose_accel', lambda kernel: (accel, 'probed'))
    assert libvirt_host.choose_domain_type(pathlib.Path('vmlinuz')) == (domain_type, 'probed')


def test_choose_domain_type_honours_the_override(monkeypatch):
    monkeypatch.setenv('IMAGEPREP_QEMU_ACCEL', 'kvm')
    assert libvirt_host.choose_domain_type(None) == ('kvm', 'set by IMAGEPREP_QEMU_ACCEL')


def test_unique_names_carry_the_pid_and_differ():
    first, second = libvirt_host.unique_name('capture'), libvirt_host.unique_name('capture')
    assert first != second
    assert first.startswith(f'imageprep-test-{os.getpid()}-') and first.endswith('-capture')
    assert libvirt_host.owner_pid(first) == os.getpid()


def test_unique_name_refuses_odd_labels():
    with pytest.raises(libvirt_host.LibvirtHostError, match='label'):
        libvirt_host.unique_name('has space')


@pytest.mark.parametrize(('name', 'include_unowned', 'stale'), [
    ('imageprep-test-111-abc123-vm', False, True),
    ('imageprep-test-222-abc123-vm', False, False),
    ('imageprep-test-handmade', False, False),
    ('imageprep-test-handmade', True, True),
    ('someone-elses-vm', True, False),
])
def test_is_stale_only_for_dead_owners(name, include_unowned, stale):
    assert libvirt_host.is_stale(name, lambda pid: pid == 222, include_unowned) is stale


@pytest.mark.parametrize(('mode', 'gid', 'needs'), [(0o20600, 0, True), (0o20660, 0, True), (0o20600, 107, True), (0o20660, 107, False),
                                                    (0o20666, 107, False)])
def test_kvm_device_needs_group(mode, gid, needs):
    assert libvirt_host.kvm_device_needs_group(mode, gid, 107) is needs


def test_log_since_reads_only_new_lines(tmp_path):
    log = tmp_path / 'libvirtd.log'
    log.write_text('old error\n', encoding='utf-8')
    offset = libvirt_host.log_size(log)
    with open(log, 'a', encoding='utf-8') as handle:
        handle.write('new error\n')
    assert libvirt_host.log_since(log, offset) == 'new error'
    assert libvirt_host.log_since(tmp_path / 'missing.log', 0) == ''


def test_domain_xml_boots_uefi_firmware_with_its_own_variable_store():
    domain = render(firmware=libvirt_host.UefiFirmware(pathlib.Path('/scratch/nvram.fd')))
    loader = domain.find('os/loader')
    assert loader.text == '/usr/share/OVMF/OVMF_CODE_4M.fd'
    assert (loader.get('type'), loader.get('readonly')) == ('pflash', 'yes')
    nvram = domain.find('os/nvram')
    assert (nvram.text, nvram.get('template')) == ('/scratch/nvram.fd', '/usr/share/OVMF/OVMF_VARS_4M.fd')
    assert domain.find('os/kernel') is None
    assert domain.find('os/boot').get('dev') == 'hd'


def test_domain_xml_without_firmware_has_no_loader():
    domain = render()
    assert domain.find('os/loader') is None and domain.find('os/nvram') is None
