# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A clone's definition derived from real template definitions (libvirt 9.0 dumps), its mark, its NIC."""
from __future__ import annotations

import json
import pathlib
import socket
import xml.etree.ElementTree as ET

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils import _libvirt_clone as clone

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'libvirt_clone'
UEFI_Q35 = (FIXTURES / 'template-uefi.xml').read_text(encoding='utf-8')
EFI_AUTO_KVM = (FIXTURES / 'template-efi-auto.xml').read_text(encoding='utf-8')
WORKDIR = '/var/lib/imageprep/clones/verify'
IMAGES = [{'path': '/srv/images/web-os.qcow2', 'format': 'qcow2'}, {'path': '/srv/images/web-data.raw', 'format': 'raw'}]
Q = '{http://libvirt.org/schemas/domain/qemu/1.0}'


def params(**overrides):
    """The module's options for a clone, with OVERRIDES."""
    values = {'template': 'web01', 'ssh_port': 22022, 'memory_mib': None, 'vcpus': None, 'firmware': None, 'domain_type': None,
              'run_as_root': True, 'workdir': WORKDIR}
    values.update(overrides)
    return values


def derive(template_xml, **overrides):
    """Return (clone XML text, its parsed root) for TEMPLATE_XML (None: no template)."""
    spec = {'name': 'verify', 'disks': clone.plan_disks(IMAGES, WORKDIR), 'console_log': f'{WORKDIR}/console.log',
            'settings': clone.settings(params(**overrides))}
    text = clone.clone_xml(spec, template_xml)
    return text, ET.fromstring(text)


def qemu_args(root):
    """The values of the domain's <qemu:arg> elements."""
    return [arg.get('value') for arg in root.iter(f'{Q}arg')]


def test_the_clone_of_a_uefi_q35_template_keeps_its_hardware_and_nothing_of_its_identity():
    text, root = derive(UEFI_Q35)
    assert root.findtext('name') == 'verify'
    assert root.find('uuid') is None
    assert root.find('genid') is not None and not (root.findtext('genid') or '').strip()  # libvirt makes a new one
    assert root.find('./os/type').get('machine') == 'pc-q35-7.2'
    assert root.findtext('./os/loader') == '/usr/share/OVMF/OVMF_CODE_4M.fd'
    nvram = root.find('./os/nvram')
    assert nvram.get('template') == '/usr/share/OVMF/OVMF_VARS_4M.fd' and not (nvram.text or '').strip()
    assert root.find('./os/boot') is None
    assert root.findtext('memory') == '524288' and root.findtext('vcpu') == '2'
    assert [entry.get('name') for entry in root.iter('entry')] == ['manufacturer']
    assert 'SRC-0001' not in text and '52:54:00:aa:bb:01' not in text
    for tag in ('interface', 'graphics', 'console', 'mac'):
        assert not list(root.iter(tag)), tag
    # the guest agent channel stays; the video card too (libvirt needs no graphics for it)
    assert root.find("./devices/channel[@type='unix']") is not None
    assert root.find('./devices/video') is not None
    # another tool's metadata keeps its prefix
    assert '<libosinfo:libosinfo' in text


def test_the_clone_boots_from_its_overlays_only():
    _text, root = derive(UEFI_Q35)
    disks = root.findall('./devices/disk')
    assert [(d.get('device'), d.find('source').get('file'), d.find('target').get('dev'), d.find('target').get('bus'),
             d.find('driver').get('type')) for d in disks] == [
        ('disk', f'{WORKDIR}/vda.qcow2', 'vda', 'virtio', 'qcow2'), ('disk', f'{WORKDIR}/vdb.qcow2', 'vdb', 'virtio', 'qcow2')]
    assert [b.get('order') for b in root.iter('boot')] == ['1']
    assert disks[0].find('boot') is not None
    serial = root.findall('./devices/serial')
    assert len(serial) == 1 and serial[0].get('type') == 'file' and serial[0].find('source').get('path') == f'{WORKDIR}/console.log'


def test_the_templates_user_mode_nic_is_replaced_by_the_isolated_one():
    _text, root = derive(UEFI_Q35, ssh_port=2201)
    assert qemu_args(root) == [
        '-global', 'kvm-pit.lost_tick_policy=discard',
        '-netdev', 'user,id=imageprep-net0,restrict=on,hostfwd=tcp:127.0.0.1:2201-:22',
        # q35: the root bus is pcie.0; 0x1e is kept for libvirt's DMI-PCI bridge
        '-device', 'virtio-net-pci,netdev=imageprep-net0,bus=pcie.0,addr=0x1d']


def test_without_ssh_port_the_clone_has_no_nic_at_all():
    _text, root = derive(UEFI_Q35, ssh_port=None)
    assert qemu_args(root) == ['-global', 'kvm-pit.lost_tick_policy=discard']
    _text, root = derive(EFI_AUTO_KVM, ssh_port=None)
    assert root.find(f'{Q}commandline') is None and root.find('./devices/interface') is None


def test_a_tcg_clone_of_a_host_cpu_template_gets_the_maximum_cpu_model():
    _text, root = derive(UEFI_Q35)  # the template itself is type qemu
    cpu = root.find('cpu')
    assert (cpu.get('mode'), cpu.get('migratable')) == ('maximum', None)
    assert cpu.find('topology').get('cores') == '2'
    _text, root = derive(EFI_AUTO_KVM)
    assert (root.get('type'), root.find('cpu').get('mode')) == ('kvm', 'host-passthrough')
    _text, root = derive(EFI_AUTO_KVM, domain_type='qemu')
    assert (root.get('type'), root.find('cpu').get('mode')) == ('qemu', 'maximum')


def test_spice_and_everything_that_needs_it_goes_with_the_graphics():
    text, root = derive(EFI_AUTO_KVM)
    assert 'spice' not in text
    assert root.find('./devices/redirdev') is None
    assert root.find("./devices/audio").get('type') == 'none'
    # the sound card still names an audio backend that exists
    assert root.find('./devices/sound/audio').get('id') == root.find('./devices/audio').get('id')
    assert root.find("./os").get('firmware') == 'efi'
    assert root.find("./os/firmware/feature").get('enabled') == 'no'
    # the template's console file is not the clone's
    assert '/var/lib/libvirt/images/console.log' not in text


def test_qemu_runs_as_root_without_relabelling_unless_asked_otherwise():
    _text, root = derive(EFI_AUTO_KVM)
    labels = root.findall('seclabel')
    assert [(s.get('type'), s.get('model'), s.get('relabel'), s.findtext('label')) for s in labels] == [
        ('static', 'dac', 'no', '+0:+0')]
    _text, root = derive(EFI_AUTO_KVM, run_as_root=False)
    assert [(s.get('type'), s.get('relabel')) for s in root.findall('seclabel')] == [('dynamic', 'yes')]


def test_memory_and_vcpus_override_the_template_and_keep_the_topology_consistent():
    _text, root = derive(UEFI_Q35, memory_mib=768, vcpus=3)
    assert (root.find('memory').get('unit'), root.findtext('memory')) == ('MiB', '768')
    assert root.findtext('currentMemory') == '768'
    assert root.findtext('vcpu') == '3'
    topology = root.find('./cpu/topology').attrib
    assert int(topology['sockets']) * int(topology['dies']) * int(topology['cores']) * int(topology['threads']) == 3


def test_the_mark_records_what_the_clone_was_made_from():
    text, _root = derive(UEFI_Q35, memory_mib=768)
    mark = clone.read_mark(text)
    assert mark['template'] == 'web01' and mark['ssh_port'] == 22022 and mark['memory_mib'] == 768 and mark['vcpus'] is None
    assert mark['run_as_root'] is True and mark['workdir'] == WORKDIR and mark['console_log'] == f'{WORKDIR}/console.log'
    assert mark['disks'] == clone.plan_disks(IMAGES, WORKDIR)
    assert not clone.differences(mark, clone.settings(params(memory_mib=768)), [i['path'] for i in IMAGES])


@pytest.mark.parametrize('change, images, expected', [
    ({'ssh_port': 2222}, None, 'ssh_port'),
    ({'template': 'other'}, None, 'template'),
    ({'memory_mib': 512}, None, 'memory_mib'),
    ({'run_as_root': False}, None, 'run_as_root'),
    ({}, ['/srv/images/web-os.qcow2'], 'images'),
    ({}, ['/srv/images/web-data.raw', '/srv/images/web-os.qcow2'], 'images'),
])
def test_a_clone_made_otherwise_differs(change, images, expected):
    text, _root = derive(UEFI_Q35)
    found = clone.differences(clone.read_mark(text), clone.settings(params(**change)), images or [i['path'] for i in IMAGES])
    assert len(found) == 1 and found[0].startswith(expected)


def test_a_domain_without_the_mark_is_not_a_clone():
    assert clone.read_mark(UEFI_Q35) is None
    foreign = UEFI_Q35.replace('https://imageprep.vm/clone/1', 'https://example.org/other')
    assert clone.read_mark(foreign) is None


def test_the_clone_of_a_clone_carries_one_mark():
    text, _root = derive(UEFI_Q35)
    _second_text, second = derive(text, ssh_port=3333)
    marks = second.findall('./metadata/{https://imageprep.vm/clone/1}clone')
    assert len(marks) == 1 and marks[0].get('ssh_port') == '3333'
    assert qemu_args(second).count('-netdev') == 1


@pytest.mark.parametrize('firmware, domain_type', [('bios', 'qemu'), ('uefi', 'qemu'), ('uefi', 'kvm')])
def test_without_a_template_the_clone_is_minimal(firmware, domain_type):
    _text, root = derive(None, template=None, firmware=firmware, domain_type=domain_type)
    assert root.get('type') == domain_type
    assert root.find('./os/type').get('machine') == 'pc'
    assert root.find('./os').get('firmware') == ('efi' if firmware == 'uefi' else None)
    assert (root.findtext('memory'), root.find('memory').get('unit'), root.findtext('vcpu')) == ('1024', 'MiB', '1')
    assert root.find('cpu').get('mode') == ('host-passthrough' if domain_type == 'kvm' else 'maximum')
    # pc: the root bus is pci.0 and slot 0x1e is free
    assert qemu_args(root)[-1] == 'virtio-net-pci,netdev=imageprep-net0,bus=pci.0,addr=0x1e'


def test_the_minimal_domain_defaults_to_qemu_bios():
    _text, root = derive(None, template=None)
    assert root.get('type') == 'qemu' and root.find('./os').get('firmware') is None


@pytest.mark.parametrize('values, removed', [
    (['-netdev', 'user,id=n1,hostfwd=tcp::2222-:22', '-device', 'e1000,netdev=n1', '-m', '1G'],
     ['-netdev', 'user,id=n1,hostfwd=tcp::2222-:22', '-device', 'e1000,netdev=n1']),
    (['-nic', 'user,model=virtio-net-pci', '-device', 'virtio-rng-pci'], ['-nic', 'user,model=virtio-net-pci']),
    (['-netdev', 'type=user,id=u', '-device', 'virtio-net-pci,netdev=u,addr=0x10'],
     ['-netdev', 'type=user,id=u', '-device', 'virtio-net-pci,netdev=u,addr=0x10']),
    # a tap NIC and its device are not a user-mode NIC
    (['-netdev', 'tap,id=t0', '-device', 'virtio-net-pci,netdev=t0'], []),
    # a device on another netdev id that merely starts alike stays
    (['-netdev', 'user,id=n', '-device', 'virtio-net-pci,netdev=n2'], ['-netdev', 'user,id=n']),
])
def test_user_mode_nics_are_stripped_from_qemu_commandline(values, removed):
    commandline = ET.Element(f'{Q}commandline')
    for value in values:
        ET.SubElement(commandline, f'{Q}arg', value=value)
    assert clone.strip_user_network(commandline) == removed
    assert [a.get('value') for a in commandline] == [v for v in values if v not in removed]


@pytest.mark.parametrize('machine, used, extra_args, slot', [
    ('pc-i440fx-7.2', [], [], 0x1e),
    ('pc-i440fx-7.2', [0x1e], [], 0x1d),
    ('pc', [], ['virtio-rng-pci,addr=0x1e'], 0x1d),
    ('pc-q35-7.2', [], [], 0x1d),
    ('q35', [0x1d, 0x1c], [], 0x1b),
])
def test_the_nic_takes_a_free_root_slot_from_the_top(machine, used, extra_args, slot):
    addresses = ''.join(f"<x><address type='pci' domain='0x0000' bus='0x00' slot='{s:#04x}' function='0x0'/></x>" for s in used)
    # a device on another bus at the same slot does not count
    addresses += "<x><address type='pci' domain='0x0000' bus='0x01' slot='0x1e' function='0x0'/></x>"
    args = ''.join(f"<qemu:arg value='{a}'/>" for a in extra_args)
    domain = ET.fromstring(f"<domain xmlns:qemu='{Q[1:-1]}'><os><type machine='{machine}'>hvm</type></os><devices>{addresses}</devices>"
                           f"<qemu:commandline>{args}</qemu:commandline></domain>")
    assert clone.free_root_slot(domain) == slot


def test_a_full_root_bus_is_an_error():
    addresses = ''.join(f"<address type='pci' bus='0x00' slot='{s:#04x}'/>" for s in range(0x20))
    with pytest.raises(clone.CloneError, match='no free slot'):
        clone.free_root_slot(ET.fromstring(f'<domain><devices>{addresses}</devices></domain>'))


@pytest.mark.parametrize('text, message', [('<domain><name>x', 'not valid XML'), ('<network/>', 'not a libvirt <domain>')])
def test_a_template_that_is_not_a_domain_is_refused(text, message):
    with pytest.raises(clone.CloneError, match=message):
        derive(text)


@pytest.mark.parametrize('name, ok', [('verify-web01', True), ('a', True), ('v1.2_x', True), ('a' * 64, True), ('a' * 65, False),
                                      ('', False), ('-x', False), ('.x', False), ('a/b', False), ('a b', False)])
def test_names(name, ok):
    assert (clone.name_problem(name) is None) is ok


def test_virtio_targets_and_overlays():
    assert [clone.virtio_target(i) for i in (0, 1, 25, 26, 27)] == ['vda', 'vdb', 'vdz', 'vdaa', 'vdab']
    assert clone.plan_disks(IMAGES[:1], '/w') == [{'target': 'vda', 'image': IMAGES[0]['path'], 'format': 'qcow2',
                                                   'overlay': '/w/vda.qcow2'}]


def test_image_format_comes_from_qemu_img():
    calls = []

    def runner(args):
        calls.append(args)
        return 0, json.dumps({'format': 'vmdk', 'virtual-size': 1}), ''
    assert clone.image_format(runner, __file__) == 'vmdk'
    assert calls == [['qemu-img', 'info', '--output=json', __file__]]


def test_a_listening_port_is_in_use_and_a_closed_one_is_not():
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen()
        port = server.getsockname()[1]
        assert clone.port_in_use(port)
    assert not clone.port_in_use(port)


def test_image_problems(tmp_path):
    image = tmp_path / 'os.raw'
    image.write_bytes(b'\0' * 4096)
    assert clone.image_problem(str(image)) is None
    assert 'relative' in clone.image_problem('os.raw')
    assert 'does not exist' in clone.image_problem(str(tmp_path / 'missing.raw'))
    assert 'is a directory' in clone.image_problem(str(tmp_path))


def test_log_tail_shows_only_what_this_start_wrote(tmp_path):
    log = tmp_path / 'qemu.log'
    log.write_text('old 1\nold 2\n', encoding='utf-8')
    offset = clone.file_size(str(log))
    with open(log, 'a', encoding='utf-8') as handle:
        handle.write('new 1\nnew 2\n')
    assert clone.log_tail(str(log), offset=offset) == 'new 1\nnew 2'
    assert clone.log_tail(str(log), lines=1) == 'new 2'
    assert clone.log_tail(str(tmp_path / 'none.log')) == ''
    assert clone.file_size(str(tmp_path / 'none.log')) == 0


def test_log_tail_leaves_out_the_qemu_command_line(tmp_path):
    # the shape of libvirt's QEMU log for a start that failed (libvirt 9.0)
    log = tmp_path / 'qemu.log'
    log.write_text(
        '2026-11-29 20:35:50.301+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.22\n'
        'LC_ALL=C \\\n'
        '/usr/bin/qemu-system-x86_64 \\\n'
        '-name guest=v,debug-threads=on \\\n'
        '-msg timestamp=on\n'
        "2026-11-29T20:35:50.392597Z qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory\n"
        '2026-11-29 20:35:52.399+0000: shutting down, reason=failed\n', encoding='utf-8')
    assert clone.log_tail(str(log)).splitlines() == [
        '2026-11-29 20:35:50.301+0000: starting up libvirt version: 9.0.0, qemu version: 7.2.22',
        "2026-11-29T20:35:50.392597Z qemu-system-x86_64: cannot set up guest memory 'pc.ram': Cannot allocate memory",
        '2026-11-29 20:35:52.399+0000: shutting down, reason=failed']


@pytest.mark.parametrize('uri, expected', [('qemu:///system', '/var/log/libvirt/qemu/v.log'),
                                           ('qemu:///session', '/home/u/.cache/libvirt/qemu/log/v.log')])
def test_qemu_log_path(uri, expected, monkeypatch):
    monkeypatch.setenv('XDG_CACHE_HOME', '/home/u/.cache')
    assert clone.qemu_log_path(uri, 'v') == expected
