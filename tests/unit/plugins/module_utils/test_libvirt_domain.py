# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt domains: which disk is the OS disk, LUNs, firmware, architecture; power decisions and the bounded
wait; the disks, overlays, definitions and records of a backup."""
from __future__ import annotations

import os
import pathlib
import xml.etree.ElementTree as ET

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
    def runner(args, environ_update=None):
        assert args[:4] == ['virsh', '-q', '-c', 'qemu:///system']
        assert environ_update['LC_ALL'] == 'C'
        return 1, '', "error: failed to get domain 'nope'"
    with pytest.raises(libvirt_domain.DomainNotFound, match="no libvirt domain named 'nope' on qemu:///system"):
        libvirt_domain.read_domain(runner, 'qemu:///system', 'nope')


# -- power ------------------------------------------------------------------------------
@pytest.mark.parametrize('state, wanted, method, force, action', [
    ('running', 'running', 'acpi', False, 'none'),
    ('idle', 'running', 'acpi', False, 'none'),
    ('paused', 'running', 'acpi', False, 'resume'),
    ('shut off', 'running', 'acpi', False, 'start'),
    ('shut off', 'shutoff', 'destroy', False, 'none'),
    ('running', 'shutoff', 'acpi', False, 'acpi'),
    ('running', 'shutoff', 'wait', False, 'wait'),
    ('running', 'shutoff', 'destroy', False, 'destroy'),
    ('in shutdown', 'shutoff', 'acpi', False, 'wait'),
    ('paused', 'shutoff', 'acpi', True, 'destroy'),
    ('crashed', 'shutoff', 'wait', True, 'destroy'),
    ('paused', 'shutoff', 'destroy', False, 'destroy'),
])
def test_power_action(state, wanted, method, force, action):
    assert libvirt_domain.power_action(state, wanted, method, force) == action


@pytest.mark.parametrize('state, wanted, method, message', [
    ('paused', 'shutoff', 'acpi', 'cannot react to the power button'),
    ('pmsuspended', 'shutoff', 'wait', 'resume it first'),
    ('in shutdown', 'running', 'acpi', 'only a shut off domain can be started'),
    ('crashed', 'running', 'acpi', 'power it off first'),
])
def test_power_action_refuses(state, wanted, method, message):
    with pytest.raises(libvirt_domain.DomainError, match=message):
        libvirt_domain.power_action(state, wanted, method, False)


class FakeClock:
    """A clock that moves only when the code sleeps."""

    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def states_runner(states):
    """A virsh that answers domstate with the next of STATES (the last one repeats)."""
    answers = list(states)

    def runner(args, environ_update=None):
        assert args[4] == 'domstate'
        return 0, (answers.pop(0) if len(answers) > 1 else answers[0]) + '\n', ''
    return runner


def test_wait_for_state_returns_when_reached():
    clock = FakeClock()
    reached, state, seconds = libvirt_domain.wait_for_state(states_runner(['running', 'in shutdown', 'shut off']), 'u', 'd',
                                                            'shut off', 10, clock=clock, sleep=clock.sleep)
    assert (reached, state, seconds) == (True, 'shut off', 1.0)


def test_wait_for_state_is_bounded():
    clock = FakeClock()
    reached, state, seconds = libvirt_domain.wait_for_state(states_runner(['running']), 'u', 'd', 'shut off', 3, clock=clock,
                                                            sleep=clock.sleep)
    assert (reached, state, seconds) == (False, 'running', 3.0)
    assert len(clock.sleeps) == 6


def test_timeout_message_says_how_long_and_what_state():
    message = libvirt_domain.timeout_message('web01', 'acpi', 30, 30.2, 'running')
    assert 'web01 was still running after 30 s' in message and 'ACPI power button' in message and 'force=true' in message
    assert 'power itself off' in libvirt_domain.timeout_message('web01', 'wait', 30, 30.0, 'running')


# -- backups ----------------------------------------------------------------------------
BACKUP_DOMAIN = """<domain type='qemu'>
  <name>web01</name>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/v/os.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/v/seed.iso'/><target dev='sda' bus='sata'/><readonly/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/v/data,1.raw'/><target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='disk'><source file='/v/ro.img'/><target dev='vdc' bus='virtio'/><readonly/></disk>
  </devices>
  <qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-no-reboot'/></qemu:commandline>
</domain>"""


def test_backup_disks_are_the_writable_file_disks():
    disks, skipped = libvirt_domain.backup_disks(BACKUP_DOMAIN)
    assert disks == [{'target': 'vda', 'path': '/v/os.qcow2', 'format': 'qcow2'}, {'target': 'vdb', 'path': '/v/data,1.raw', 'format': 'raw'}]
    assert skipped == ['sda', 'vdc']


@pytest.mark.parametrize('disk, message', [
    ("<disk type='block' device='disk'><source dev='/dev/vg/x'/><target dev='vda'/></disk>", 'block disk without a file source'),
    ("<disk type='network' device='disk'><source protocol='rbd' name='p/i'/><target dev='vda'/></disk>", 'network disk'),
    ("<disk type='file' device='cdrom'><target dev='sda'/></disk>", 'no writable disk'),
    ("<disk type='file' device='disk'><source file='/v/a'/></disk>", 'no target'),
])
def test_backup_disks_refused(disk, message):
    with pytest.raises(libvirt_domain.DomainError, match=message):
        libvirt_domain.backup_disks(f'<domain><devices>{disk}</devices></domain>')


@pytest.mark.parametrize('name, ok', [
    ('imageprep-backup', True), ('before.upgrade_2', True), ('a' * 64, True), ('a' * 65, False), ('.hidden', False),
    ('a/b', False), ('', False), ('x y', False), ('-x', False),
])
def test_backup_names(name, ok):
    assert (libvirt_domain.backup_name_problem(name) is None) is ok


def test_overlays_sit_next_to_the_disks_or_in_the_overlay_dir():
    disks = libvirt_domain.backup_disks(BACKUP_DOMAIN)[0]
    assert [e['overlay'] for e in libvirt_domain.plan_backup(disks, 'b1')] == ['/v/os.b1.qcow2', '/v/data,1.b1.qcow2']
    assert [e['overlay'] for e in libvirt_domain.plan_backup(disks, 'b1', '/o')] == ['/o/os.b1.qcow2', '/o/data,1.b1.qcow2']


def test_overlays_must_not_clash():
    disks = [{'target': 'vda', 'path': '/a/disk.qcow2', 'format': 'qcow2'}, {'target': 'vdb', 'path': '/b/disk.raw', 'format': 'raw'}]
    assert len(libvirt_domain.plan_backup(disks, 'x')) == 2
    with pytest.raises(libvirt_domain.DomainError, match='same overlay /o/disk.x.qcow2'):
        libvirt_domain.plan_backup(disks, 'x', '/o')
    with pytest.raises(libvirt_domain.DomainError, match='is a disk of the domain already'):
        libvirt_domain.plan_backup([{'target': 'vda', 'path': '/a/d.qcow2', 'format': 'qcow2'},
                                    {'target': 'vdb', 'path': '/a/d.x.qcow2', 'format': 'qcow2'}], 'x')


def test_snapshot_takes_every_disk_at_once_and_escapes_commas():
    entries = libvirt_domain.plan_backup(libvirt_domain.backup_disks(BACKUP_DOMAIN)[0], 'b1')
    assert libvirt_domain.snapshot_args('web01', 'b1', entries, ['sda', 'vdc']) == [
        'snapshot-create-as', 'web01', 'b1', '--disk-only', '--atomic', '--no-metadata',
        '--diskspec', 'vda,snapshot=external,file=/v/os.b1.qcow2', '--diskspec', 'vdb,snapshot=external,file=/v/data,,1.b1.qcow2',
        '--diskspec', 'sda,snapshot=no', '--diskspec', 'vdc,snapshot=no']


ENTRIES = [{'target': 'vda', 'original': '/v/os.qcow2', 'original_format': 'qcow2', 'overlay': '/v/os.b.qcow2'},
           {'target': 'vdb', 'original': '/v/d.raw', 'original_format': 'raw', 'overlay': '/v/d.b.qcow2'}]


@pytest.mark.parametrize('definitions, status', [
    ([{'vda': '/v/os.b.qcow2', 'vdb': '/v/d.b.qcow2', 'sda': None}], 'overlays'),
    ([{'vda': '/v/os.qcow2', 'vdb': '/v/d.raw'}], 'originals'),
    ([{'vda': '/v/os.b.qcow2', 'vdb': '/v/d.raw'}], 'changed'),
    ([{'vda': '/v/os.b.qcow2'}], 'changed'),
    ([{'vda': '/v/os.qcow2', 'vdb': '/v/d.raw'}, {'vda': '/v/os.b.qcow2', 'vdb': '/v/d.b.qcow2'}], 'changed'),
    ([{'vda': '/v/os.b.qcow2', 'vdb': '/v/d.b.qcow2'}] * 2, 'overlays'),
])
def test_backup_status(definitions, status):
    assert libvirt_domain.backup_status(ENTRIES, definitions) == status


RECORD = {'domain': 'web01', 'name': 'b', 'disks': ENTRIES}


@pytest.mark.parametrize('state, record_status, status, decision', [
    ('present', None, None, 'create'),
    ('restored', None, None, 'nothing'),
    ('absent', None, None, 'nothing'),
    ('present', 'done', 'overlays', 'unchanged'),
    ('present', 'pending', 'overlays', 'finish'),
    ('present', 'pending', 'originals', 'discard'),
    ('restored', 'pending', 'originals', 'discard'),
    ('absent', 'pending', 'originals', 'discard'),
    ('restored', 'pending', 'overlays', 'restore'),
    ('restored', 'done', 'overlays', 'restore'),
    ('absent', 'done', 'overlays', 'commit'),
    ('restored', 'done', 'originals', 'cleanup'),
    ('absent', 'done', 'originals', 'cleanup'),
])
def test_backup_decision(state, record_status, status, decision):
    record = dict(RECORD, status=record_status) if record_status else None
    assert libvirt_domain.backup_decision(state, record, status) == decision


@pytest.mark.parametrize('state, record_status, status, message', [
    ('present', 'done', 'originals', 'runs on the original files'),
    ('present', 'done', 'changed', 'someone changed its disks'),
    ('restored', 'done', 'changed', 'someone changed its disks'),
    ('absent', 'pending', 'changed', 'neither the overlays nor the original files'),
])
def test_backup_decision_refuses_a_changed_domain(state, record_status, status, message):
    with pytest.raises(libvirt_domain.DomainError, match=message):
        libvirt_domain.backup_decision(state, dict(RECORD, status=record_status), status)


def _disks(text):
    root = ET.fromstring(text)
    return {d.find('target').get('dev'): ET.tostring(d, encoding='unicode') for d in root.findall('./devices/disk')}


def test_overlays_then_originals_give_back_the_definition():
    entries = libvirt_domain.plan_backup(libvirt_domain.backup_disks(BACKUP_DOMAIN)[0], 'b1')
    on_overlays = libvirt_domain.with_overlays(BACKUP_DOMAIN, entries)
    assert libvirt_domain.disk_sources(on_overlays) == {'vda': '/v/os.b1.qcow2', 'sda': '/v/seed.iso', 'vdb': '/v/data,1.b1.qcow2',
                                                        'vdc': '/v/ro.img'}
    vdb = ET.fromstring(_disks(on_overlays)['vdb'])
    assert vdb.find('driver').get('type') == 'qcow2'
    assert (vdb.find('backingStore/format').get('type'), vdb.find('backingStore/source').get('file')) == ('raw', '/v/data,1.raw')
    back = libvirt_domain.with_originals(on_overlays, entries)
    assert _disks(back) == _disks(BACKUP_DOMAIN)
    assert 'qemu:commandline' in back and "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'" in back.replace('"', "'")


def test_originals_keep_their_own_backing_chain():
    """A disk that was an overlay itself keeps the chain below its original; libvirt's own snapshot XML is undone."""
    after_snapshot = """<domain><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='/v/os.b.qcow2' index='3'/>
      <backingStore type='file'><format type='qcow2'/><source file='/v/os.qcow2'/>
        <backingStore type='file'><format type='raw'/><source file='/v/base.raw'/></backingStore></backingStore>
      <target dev='vda' bus='virtio'/></disk></devices></domain>"""
    back = ET.fromstring(libvirt_domain.with_originals(after_snapshot, ENTRIES[:1]))
    disk = back.find('./devices/disk')
    assert disk.find('source').attrib == {'file': '/v/os.qcow2'}
    assert disk.find('driver').get('type') == 'qcow2'
    assert [s.get('file') for s in disk.iter('source')] == ['/v/os.qcow2', '/v/base.raw']


def test_record_round_trip_and_names(tmp_path):
    path = libvirt_domain.record_path(str(tmp_path / 'state'), 'web/01@x', 'b')
    assert pathlib.Path(path).name == 'web%2F01%40x@b.json'
    assert libvirt_domain.read_record(path) is None
    record = dict(RECORD, status='pending', created='2026-11-29T15:20:00Z', state_at_backup='running')
    libvirt_domain.write_record(path, record)
    assert libvirt_domain.read_record(path) == record
    assert oct(os.stat(tmp_path / 'state').st_mode & 0o777) == '0o700'
    assert [p.name for p in (tmp_path / 'state').iterdir()] == [pathlib.Path(path).name]
    assert libvirt_domain.remove_record(path) and not libvirt_domain.remove_record(path)


@pytest.mark.parametrize('content, message', [('{', 'cannot be read'), ('{"domain": "x"}', 'keys missing'), ('[]', 'keys missing')])
def test_damaged_records_are_reported(tmp_path, content, message):
    path = tmp_path / 'r.json'
    path.write_text(content, encoding='utf-8')
    with pytest.raises(libvirt_domain.DomainError, match=message):
        libvirt_domain.read_record(str(path))
