# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A libvirt domain of a real daemon: refused while it runs; once shut off, captured as a VM image in boot order."""
from __future__ import annotations

import contextlib
import os
import pathlib
import subprocess
import sys
import typing as t
import xml.etree.ElementTree as ET

import pytest

from library_checks import assert_library_consistent, read_catalogue
from module_runs import MIB, capture, make_disk

TARGETS = pathlib.Path(os.environ.get('IMAGEPREP_TEST_TARGETS') or pathlib.Path(__file__).resolve().parents[3] / 'targets')
if str(TARGETS) not in sys.path:
    sys.path.insert(0, str(TARGETS))

import libvirt_host  # noqa: E402  pylint: disable=wrong-import-position

# the OS disk sits in the middle of the definition; only its <boot order='1'/> says it is the OS disk
OS_TARGET = 'vdb'


class Platform(t.NamedTuple):
    """What a domain is defined with, and what the image must record."""

    firmware: t.Optional[str]  # libvirt's <os firmware=...>; None: the default (SeaBIOS)
    architecture: str
    recorded_firmware: str


PLATFORMS = {
    'uefi x86_64': Platform('efi', 'x86_64', 'uefi'),
    'bios i686': Platform(None, 'i686', 'bios'),
}


@pytest.fixture(scope='module')
def libvirt_daemon() -> libvirt_host.DaemonStatus:
    """libvirt's system daemon, started by hand when it does not answer (no systemd here)."""
    return libvirt_host.ensure_daemon()


def redefine(domain: libvirt_host.LibvirtDomain, boot_target: str, firmware: t.Optional[str], architecture: str) -> None:
    """Define DOMAIN anew: BOOT_TARGET boots first (``<boot order='1'/>`` instead of ``<os><boot dev>``), with FIRMWARE and ARCHITECTURE."""
    root = ET.fromstring(libvirt_host.virsh('dumpxml', '--inactive', domain.name).stdout)
    os_element = root.find('os')
    for boot in os_element.findall('boot'):
        os_element.remove(boot)
    if firmware:
        os_element.set('firmware', firmware)
    os_element.find('type').set('arch', architecture)
    devices = root.find('devices')
    devices.remove(devices.find('emulator'))  # libvirt picks the emulator of the architecture
    for disk in devices.findall('disk'):
        if disk.find('target').get('dev') == boot_target:
            ET.SubElement(disk, 'boot', order='1')
    definition = domain.workdir / f'{domain.name}-boot-order.xml'
    definition.write_text(ET.tostring(root, encoding='unicode'), encoding='utf-8')
    libvirt_host.virsh('define', str(definition))


@contextlib.contextmanager
def defined_domain(workdir: pathlib.Path, disks: list[libvirt_host.DiskSpec], firmware: t.Optional[str],
                   architecture: str) -> t.Iterator[libvirt_host.LibvirtDomain]:
    """A defined (not started) domain on DISKS; destroyed and undefined, UEFI variables included, afterwards."""
    domain = libvirt_host.LibvirtDomain.define(None, disks, workdir)
    try:
        redefine(domain, OS_TARGET, firmware, architecture)
        yield domain
    finally:
        domain.cleanup()  # destroys, and undefines with --nvram (a UEFI domain's variables file)


@pytest.mark.parametrize('platform', list(PLATFORMS.values()), ids=list(PLATFORMS))
def test_libvirt_domain_is_captured_only_when_shut_off_with_its_disks_in_boot_order(platform, scratch, libvirt_daemon, request):
    request.node.user_properties.append(('daemon', f'virtlogd {libvirt_daemon.virtlogd}, libvirtd {libvirt_daemon.libvirtd}'))
    data_first = make_disk(scratch / 'data-first.raw', 'raw', 32 * MIB, [(0xd0, 1 * MIB, 1 * MIB)])
    os_disk = make_disk(scratch / 'os.qcow2', 'qcow2', 64 * MIB, [(0x05, 0, 2 * MIB)])
    data_last = make_disk(scratch / 'data-last.qcow2', 'qcow2', 32 * MIB, [(0xd1, 0, 1 * MIB)])
    library = scratch / 'library'
    runs = scratch / 'runs'
    disks = [libvirt_host.DiskSpec(data_first, 'raw', 'vda'), libvirt_host.DiskSpec(os_disk, 'qcow2', OS_TARGET),
             libvirt_host.DiskSpec(data_last, 'qcow2', 'vdc')]

    with defined_domain(scratch / 'domain', disks, platform.firmware, platform.architecture) as domain:
        arguments = {'name': 'appliance', 'library': str(library), 'libvirt_domain': domain.name}
        domain.start()
        assert domain.state() == 'running'
        refused = capture(runs, **arguments)
        assert refused['rc'] != 0 and refused.get('failed'), refused
        assert domain.name in refused['msg'] and 'is running' in refused['msg'], refused['msg']
        assert read_catalogue(library) == []

        assert domain.destroy()
        assert domain.state() == 'shut off'
        captured = capture(runs, **arguments)
        assert captured['rc'] == 0 and captured['changed'], captured
        image = captured['image']
        assert (image['kind'], image['firmware'], image['architecture']) == ('vm', platform.recorded_firmware, platform.architecture)
        assert [(disk['role'], disk['lun'], disk['source'], disk['source_format']) for disk in image['disks']] == [
            ('os', None, str(os_disk), 'qcow2'), ('data', 0, str(data_first), 'raw'), ('data', 1, str(data_last), 'qcow2')]
        assert image['source']['type'] == 'libvirt_domain' and image['source']['domain'] == domain.name
        assert image['crash_consistent'] is False
        for disk in image['disks']:
            same = subprocess.run(['qemu-img', 'compare', '-f', disk['source_format'], '-F', disk['format'], disk['source'], disk['path']],
                                  capture_output=True, text=True, check=False)
            assert same.returncode == 0, same.stdout + same.stderr

        again = capture(runs, **arguments)
        assert again['rc'] == 0 and not again['changed'], again
        assert again['image']['version'] == image['version']
    assert [(row['name'], row['version'], row['kind']) for row in assert_library_consistent(library)] == [('appliance', image['version'], 'vm')]
