# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Read what a capture needs from a libvirt domain: its state, disks, firmware and architecture.

Uses ``virsh`` so the module needs no Python binding on the host.
"""
from __future__ import annotations

import typing as t
import xml.etree.ElementTree as ET

# run_command(args) -> (rc, stdout, stderr), as AnsibleModule.run_command
RunCommand = t.Callable[..., t.Tuple[int, str, str]]

SHUT_OFF = 'shut off'


class DomainError(Exception):
    """The domain cannot be read; the message says why."""


def run_virsh(run_command: RunCommand, uri: str, args: list[str]) -> str:
    """Run virsh against URI and return its stdout; raise DomainError on failure."""
    try:
        rc, out, err = run_command(['virsh', '-q', '-c', uri] + args)
    except OSError as exc:
        raise DomainError(f'cannot run virsh (install libvirt-clients): {exc}') from exc
    if rc != 0:
        raise DomainError(f"virsh {args[0]} failed: {(err or out).strip()}")
    return out


def domain_state(run_command: RunCommand, uri: str, name: str) -> str:
    """Return the domain's state as virsh prints it ('running', 'shut off', 'paused', ...)."""
    return run_virsh(run_command, uri, ['domstate', name]).strip().splitlines()[0].strip()


def parse_domain_xml(text: str) -> dict:
    """Return firmware, architecture and the file-backed disks of a domain definition.

    Disks come in boot order when ``<boot order>`` is set, otherwise in document order; the
    first is the OS disk and the others get LUNs 0, 1, ... in that order. CD-ROMs and floppies
    are not disks of the image.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise DomainError(f'the domain definition is not valid XML: {exc}') from exc
    os_element = root.find('os')
    firmware = 'bios'
    architecture = 'x86_64'
    if os_element is not None:
        loader = os_element.find('loader')
        if os_element.get('firmware') == 'efi' or (loader is not None and loader.get('type') == 'pflash'):
            firmware = 'uefi'
        type_element = os_element.find('type')
        if type_element is not None and type_element.get('arch'):
            architecture = type_element.get('arch')
    found = []
    for index, disk in enumerate(root.findall('./devices/disk')):
        if disk.get('device', 'disk') != 'disk':
            continue
        source = disk.find('source')
        path = None
        if source is not None:
            path = source.get('file') or source.get('dev')
        if not path:
            target = disk.find('target')
            dev = target.get('dev') if target is not None else '?'
            raise DomainError(f'disk {dev} of the domain has no file or block device source (network disks cannot be captured)')
        driver = disk.find('driver')
        boot = disk.find('boot')
        order = int(boot.get('order')) if boot is not None and boot.get('order', '').isdigit() else None
        target = disk.find('target')
        found.append({
            'path': path,
            'format': driver.get('type') if driver is not None else None,
            'target': target.get('dev') if target is not None else None,
            'boot_order': order,
            'index': index,
        })
    if not found:
        raise DomainError('the domain has no disks')
    found.sort(key=lambda d: (d['boot_order'] is None, d['boot_order'] or 0, d['index']))
    disks = []
    for position, disk in enumerate(found):
        disks.append({
            'path': disk['path'],
            'format': disk['format'],
            'target': disk['target'],
            'lun': None if position == 0 else position - 1,
        })
    return {'firmware': firmware, 'architecture': architecture, 'disks': disks}


def read_domain(run_command: RunCommand, uri: str, name: str) -> dict:
    """Return ``parse_domain_xml`` of the domain's persistent definition plus its ``state``."""
    state = domain_state(run_command, uri, name)
    info = parse_domain_xml(run_virsh(run_command, uri, ['dumpxml', '--inactive', name]))
    info['state'] = state
    return info


def capture_problem(info: dict) -> t.Optional[str]:
    """Return why a domain in INFO's state cannot be captured consistently, or None."""
    if info['state'] != SHUT_OFF:
        return f"the domain is {info['state']}; it must be shut off"
    return None
