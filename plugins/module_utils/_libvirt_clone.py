# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A throw-away clone of an image's disks as a libvirt domain: its XML, its mark, its overlays.

The clone boots from qcow2 overlays on the image files, so the images are only ever read. Its
definition is derived from a template domain (or is a minimal one), stripped of everything
that would make it meet its source: identity (UUID, generation id, MACs, serial numbers),
disks, NICs, graphics, host devices and shared directories. Its only NIC, when asked for, is
QEMU's user-mode network with one port of the host's loopback forwarded to the guest's SSH.

Every clone carries a mark in its ``<metadata>`` with what it was made from; a domain without
the mark is never managed or removed. The XML functions are pure; the few that run programs
take ``run_command(args) -> (rc, stdout, stderr)``, as ``AnsibleModule.run_command``.
"""
from __future__ import annotations

import errno
import io
import json
import os
import re
import socket
import typing as t
import xml.etree.ElementTree as ET

from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img

RunCommand = t.Callable[..., t.Tuple[int, str, str]]

MARK_NAMESPACE = 'https://imageprep.vm/clone/1'
MARK_PREFIX = 'imageprep'
MARK_TAG = f'{{{MARK_NAMESPACE}}}clone'
MARK_DISK_TAG = f'{{{MARK_NAMESPACE}}}disk'
QEMU_NAMESPACE = 'http://libvirt.org/schemas/domain/qemu/1.0'
QEMU_COMMANDLINE = f'{{{QEMU_NAMESPACE}}}commandline'
QEMU_ARG = f'{{{QEMU_NAMESPACE}}}arg'

# The clone's NIC: QEMU's own user-mode network, passed through <qemu:commandline> because
# libvirt 9.0 forwards ports of user-mode NICs only with passt. restrict=on: the guest reaches
# nothing outside (its forwarded SSH port still answers), so it never acts on a real network.
USER_NETDEV_ID = 'imageprep-net0'
# Root-bus slots the NIC may take, highest first: libvirt assigns its own devices from the
# lowest free slot. q35 keeps 0x1f for the ICH9 functions and 0x1e for libvirt's DMI-PCI bridge.
NIC_SLOTS_PC = tuple(range(0x1e, 0x02, -1))
NIC_SLOTS_Q35 = tuple(range(0x1d, 0x02, -1))

NAME_PATTERN = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')
CONSOLE_LOG = 'console.log'
QEMU_LOG_COPY = 'qemu.log'
# Where libvirt's QEMU driver keeps each domain's QEMU log (written through virtlogd).
SYSTEM_QEMU_LOG_DIR = '/var/log/libvirt/qemu'

# Devices a clone never takes from its template: its disks and NICs are its own, and the rest
# would share something with the source (host devices, host directories, shared memory, SPICE
# channels that need the removed graphics, lock leases).
REMOVED_DEVICES = ('disk', 'interface', 'graphics', 'hostdev', 'redirdev', 'smartcard', 'filesystem', 'shmem',
                   'lease', 'serial', 'console')
# Device types that only work with SPICE or VNC graphics.
GRAPHICS_BOUND_TYPES = ('spicevmc', 'spiceport', 'qemu-vdagent', 'dbus')
# SMBIOS entries that say which machine this is.
IDENTITY_SYSINFO_ENTRIES = ('uuid', 'serial')
# What `virsh undefine` must also drop for a clone (UEFI variables, saved state, snapshots).
UNDEFINE_OPTIONS = ('--nvram', '--managed-save', '--snapshots-metadata', '--checkpoints-metadata')

ET.register_namespace('qemu', QEMU_NAMESPACE)
ET.register_namespace(MARK_PREFIX, MARK_NAMESPACE)


class CloneError(Exception):
    """The clone cannot be made, checked or removed; the message says why."""


# -- names and plans -----------------------------------------------------------------------


def name_problem(name: str) -> t.Optional[str]:
    """Return why NAME cannot name a clone (it names a directory and a log file too), or None."""
    if not NAME_PATTERN.fullmatch(name or ''):
        return (f'name {name!r} is not valid: 1 to 64 letters, digits, ".", "_" and "-", '
                'starting with a letter or digit')
    return None


def virtio_target(index: int) -> str:
    """Return the virtio disk name of position INDEX: vda, vdb, ... vdz, vdaa, ..."""
    letters = ''
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord('a') + remainder) + letters
    return 'vd' + letters


def plan_disks(images: t.Sequence[dict], workdir: str) -> list[dict]:
    """Return ``[{target, image, format, overlay}]``: one overlay in WORKDIR per image ``{path, format}``."""
    return [{'target': virtio_target(index), 'image': image['path'], 'format': image['format'],
             'overlay': os.path.join(workdir, f'{virtio_target(index)}.qcow2')}
            for index, image in enumerate(images)]


def settings(params: dict) -> dict:
    """Return the options that make a clone what it is, as recorded in its mark and compared on re-runs."""
    return {key: params.get(key) for key in
            ('template', 'ssh_port', 'memory_mib', 'vcpus', 'firmware', 'domain_type', 'run_as_root', 'workdir')}


# -- the mark --------------------------------------------------------------------------------


def mark_element(wanted: dict, disks: t.Sequence[dict], console_log: str) -> ET.Element:
    """Return the ``<imageprep:clone>`` element recording SETTINGS (``settings()``), DISKS and the console log."""
    attributes = {'console_log': console_log}
    for key, value in wanted.items():
        if value is not None:
            attributes[key] = json.dumps(value) if isinstance(value, bool) else str(value)
    mark = ET.Element(MARK_TAG, attributes)
    for disk in disks:
        ET.SubElement(mark, MARK_DISK_TAG, {key: str(disk[key]) for key in ('target', 'image', 'format', 'overlay')})
    return mark


def parse_domain(text: str) -> ET.Element:
    """Return the root of a domain definition; raise CloneError when it is not one."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise CloneError(f'the domain definition is not valid XML: {exc}') from exc
    if root.tag != 'domain':
        raise CloneError(f'the definition is a <{root.tag}>, not a libvirt <domain>')
    # keep the prefixes of other tools' metadata (libosinfo, ...) rather than ns0, ns1
    for _event, (prefix, uri) in ET.iterparse(io.StringIO(text), events=('start-ns',)):
        if prefix and prefix not in ('qemu', MARK_PREFIX) and not re.fullmatch(r'ns\d+', prefix):
            ET.register_namespace(prefix, uri)
    return root


def read_mark(text: str) -> t.Optional[dict]:
    """Return what a clone's mark records (``settings()`` keys, disks, console_log), or None without a mark."""
    mark = parse_domain(text).find(f'./metadata/{MARK_TAG}')
    if mark is None:
        return None
    recorded: dict[str, t.Any] = {'console_log': mark.get('console_log')}
    for key in settings({}):
        value = mark.get(key)
        if value is not None and key in ('ssh_port', 'memory_mib', 'vcpus'):
            value = int(value)
        elif value is not None and key == 'run_as_root':
            value = value == 'true'
        recorded[key] = value
    recorded['disks'] = [{key: disk.get(key) for key in ('target', 'image', 'format', 'overlay')}
                         for disk in mark.findall(MARK_DISK_TAG)]
    return recorded


def differences(recorded: dict, wanted: dict, images: t.Sequence[str]) -> list[str]:
    """Return how a clone's mark differs from the wanted settings and image paths (empty when it does not)."""
    found = [f'{key}: {recorded.get(key)!r} (wanted {value!r})' for key, value in wanted.items() if recorded.get(key) != value]
    recorded_images = [disk['image'] for disk in recorded.get('disks', [])]
    if recorded_images != list(images):
        found.append(f'images: {recorded_images} (wanted {list(images)})')
    return found


# -- the domain definition -----------------------------------------------------------------


def _element(parent: ET.Element, tag: str, text: t.Optional[str] = None, **attributes: str) -> ET.Element:
    """Append a child element with ATTRIBUTES and TEXT to PARENT; return it."""
    child = ET.SubElement(parent, tag, attributes)
    if text is not None:
        child.text = text
    return child


def _remove_all(parent: ET.Element, tag: str) -> int:
    """Remove PARENT's children named TAG; return how many."""
    doomed = parent.findall(tag)
    for child in doomed:
        parent.remove(child)
    return len(doomed)


def _child(parent: ET.Element, tag: str, index: t.Optional[int] = None) -> ET.Element:
    """Return PARENT's child TAG, made (at INDEX, or at the end) when missing."""
    found = parent.find(tag)
    if found is None:
        found = ET.Element(tag)
        if index is None:
            parent.append(found)
        else:
            parent.insert(index, found)
    return found


def minimal_domain(domain_type: str, firmware: str) -> ET.Element:
    """Return a minimal x86_64 domain (machine pc) for a clone without a template."""
    domain = ET.Element('domain', {'type': domain_type})
    _element(domain, 'name')
    _element(domain, 'memory', '1024', unit='MiB')
    _element(domain, 'vcpu', '1')
    os_element = _element(domain, 'os', firmware='efi') if firmware == 'uefi' else _element(domain, 'os')
    _element(os_element, 'type', 'hvm', arch='x86_64', machine='pc')
    if firmware == 'uefi':
        # libvirt picks OVMF (code and a fresh variable store) from the firmware descriptors
        # QEMU's packages install; Secure Boot would need q35 and SMM
        _element(_element(os_element, 'firmware'), 'feature', enabled='no', name='secure-boot')
    features = _element(domain, 'features')
    _element(features, 'acpi')
    _element(features, 'apic')
    _element(domain, 'cpu', mode='host-passthrough' if domain_type == 'kvm' else 'maximum', check='none')
    _element(domain, 'on_poweroff', 'destroy')
    _element(domain, 'on_reboot', 'restart')
    _element(domain, 'on_crash', 'destroy')
    devices = _element(domain, 'devices')
    _element(devices, 'controller', type='usb', model='none')
    _element(devices, 'memballoon', model='none')
    rng = _element(devices, 'rng', model='virtio')
    _element(rng, 'backend', '/dev/urandom', model='random')
    return domain


def strip_template(domain: ET.Element, domain_type: t.Optional[str]) -> ET.Element:
    """Remove from a template's definition (in place) all that a clone must not share; return it.

    Kept: firmware and loader, machine, memory, vCPUs, CPU, features, clock, controllers, input,
    video, TPM, RNG, watchdog. Removed: UUID, generation id (a new one is made), SMBIOS serial
    numbers, every disk, NIC (and MAC), graphics, serial console, host device, shared directory
    and memory, the NVRAM file path (a fresh store from the template file), the boot order, any
    user-mode NIC passed to QEMU directly, and a previous clone mark.
    """
    if domain_type:
        domain.set('type', domain_type)
    _remove_all(domain, 'uuid')
    genid = domain.find('genid')
    if genid is not None:
        genid.text = None  # an empty <genid/> makes libvirt generate a new one: Windows sees it is a copy
    metadata = domain.find('metadata')
    if metadata is not None:
        _remove_all(metadata, MARK_TAG)
    for system in domain.findall('./sysinfo/*'):
        for entry in system.findall('entry'):
            if entry.get('name') in IDENTITY_SYSINFO_ENTRIES:
                system.remove(entry)
    cpu = domain.find('cpu')
    if cpu is not None and domain.get('type') == 'qemu' and cpu.get('mode') in ('host-passthrough', 'host-model'):
        # the host's CPU exists only for KVM; under TCG the nearest is QEMU's maximum model
        for key in ('migratable', 'match'):
            cpu.attrib.pop(key, None)
        cpu.set('mode', 'maximum')
        cpu.set('check', 'none')
        for child in list(cpu):
            if child.tag not in ('topology', 'numa', 'cache'):
                cpu.remove(child)
    os_element = domain.find('os')
    if os_element is not None:
        _remove_all(os_element, 'boot')
        nvram = os_element.find('nvram')
        if nvram is not None:
            if nvram.get('template'):
                nvram.text = None
                for child in list(nvram):
                    nvram.remove(child)
            else:
                os_element.remove(nvram)
    devices = domain.find('devices')
    if devices is not None:
        for tag in REMOVED_DEVICES:
            _remove_all(devices, tag)
        for device in list(devices):
            if device.get('type') in GRAPHICS_BOUND_TYPES:
                devices.remove(device)
            elif device.tag == 'audio' and device.get('type') in ('spice', 'vnc', 'dbus'):
                device.set('type', 'none')
                for child in list(device):
                    device.remove(child)
            elif device.tag == 'channel' and device.get('type') == 'unix':
                _remove_all(device, 'source')  # libvirt makes a socket of the clone's own
            elif device.tag == 'vsock':
                _remove_all(device, 'cid')
                _element(device, 'cid', auto='yes')
            _remove_all(device, 'boot')
    commandline = domain.find(QEMU_COMMANDLINE)
    if commandline is not None:
        strip_user_network(commandline)
        if len(commandline) == 0:
            domain.remove(commandline)
    return domain


def strip_user_network(commandline: ET.Element) -> list[str]:
    """Remove QEMU user-mode NICs (``-netdev user,...`` with the ``-device`` using it, ``-nic user``) in place.

    Returns the argument values removed.
    """
    args = commandline.findall(QEMU_ARG)
    values = [arg.get('value', '') for arg in args]
    doomed: set[int] = set()
    netdev_ids = set()
    for index, value in enumerate(values[:-1]):
        following = values[index + 1]
        if value == '-netdev' and following.split(',')[0] in ('user', 'type=user'):
            doomed.update((index, index + 1))
            netdev_ids.update(option.split('=', 1)[1] for option in following.split(',') if option.startswith('id='))
        elif value == '-nic' and following.split(',')[0] == 'user':
            doomed.update((index, index + 1))
    for index, value in enumerate(values[:-1]):
        if value == '-device' and any(f'netdev={netdev_id}' in values[index + 1].split(',') for netdev_id in netdev_ids):
            doomed.update((index, index + 1))
    for index in sorted(doomed):
        commandline.remove(args[index])
    return [values[index] for index in sorted(doomed)]


def root_bus(domain: ET.Element) -> str:
    """Return the name QEMU gives the machine's root PCI bus: ``pcie.0`` on q35, ``pci.0`` on pc."""
    type_element = domain.find('./os/type')
    machine = type_element.get('machine', 'pc') if type_element is not None else 'pc'
    return 'pcie.0' if 'q35' in machine else 'pci.0'


def free_root_slot(domain: ET.Element) -> int:
    """Return a slot of the root PCI bus that no device of DOMAIN uses, the highest allowed first."""
    used = set()
    for address in domain.iter('address'):
        if address.get('type') == 'pci' and int(address.get('bus', '0'), 0) == 0 and int(address.get('domain', '0'), 0) == 0:
            used.add(int(address.get('slot', '0'), 0))
    for arg in domain.iter(QEMU_ARG):
        match = re.search(r'(?:^|,)addr=(0x[0-9a-fA-F]+|\d+)', arg.get('value', ''))
        if match:
            used.add(int(match.group(1).split('.')[0], 0))
    candidates = NIC_SLOTS_Q35 if root_bus(domain) == 'pcie.0' else NIC_SLOTS_PC
    for slot in candidates:
        if slot not in used:
            return slot
    raise CloneError('no free slot on the root PCI bus for the clone\'s NIC')


def user_network_args(ssh_port: int, bus: str, slot: int) -> list[str]:
    """Return QEMU's arguments for an isolated user-mode NIC with 127.0.0.1:SSH_PORT forwarded to the guest's port 22."""
    return ['-netdev', f'user,id={USER_NETDEV_ID},restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22',
            '-device', f'virtio-net-pci,netdev={USER_NETDEV_ID},bus={bus},addr={slot:#04x}']


def clone_xml(spec: dict, template_xml: t.Optional[str] = None) -> str:
    """Return the clone's domain XML.

    SPEC: ``name``, ``disks`` (``plan_disks()``), ``console_log``, ``settings`` (``settings()``: template,
    ssh_port, memory_mib, vcpus, firmware, domain_type, run_as_root, workdir). TEMPLATE_XML: the
    template's definition (``virsh dumpxml --inactive``), or None for a minimal domain.
    """
    wanted = spec['settings']
    if template_xml is None:
        domain = minimal_domain(wanted['domain_type'] or 'qemu', wanted['firmware'] or 'bios')
    else:
        domain = strip_template(parse_domain(template_xml), wanted['domain_type'])
    _child(domain, 'name', 0).text = spec['name']
    position = list(domain).index(domain.find('name')) + 1
    if domain.find('genid') is not None:
        position = list(domain).index(domain.find('genid')) + 1
    _child(domain, 'metadata', position).append(mark_element(wanted, spec['disks'], spec['console_log']))

    if wanted['memory_mib']:
        for tag in ('memory', 'currentMemory'):
            element = _child(domain, tag)
            element.attrib.clear()
            element.set('unit', 'MiB')
            element.text = str(wanted['memory_mib'])
    if wanted['vcpus']:
        vcpu = _child(domain, 'vcpu')
        vcpu.attrib.pop('current', None)
        vcpu.text = str(wanted['vcpus'])
        _remove_all(domain, 'vcpus')
        topology = domain.find('./cpu/topology')
        if topology is not None:
            product = 1
            for key in ('sockets', 'dies', 'clusters', 'cores', 'threads'):
                product *= int(topology.get(key, '1'))
            if product != wanted['vcpus']:
                for key in ('dies', 'clusters', 'cores', 'threads'):
                    if key in topology.attrib:
                        topology.set(key, '1')
                topology.set('sockets', str(wanted['vcpus']))

    devices = _child(domain, 'devices')
    position = 1 if devices.find('emulator') is not None else 0
    for offset, disk in enumerate(spec['disks']):
        element = ET.Element('disk', {'type': 'file', 'device': 'disk'})
        _element(element, 'driver', name='qemu', type='qcow2')
        _element(element, 'source', file=disk['overlay'])
        _element(element, 'target', dev=disk['target'], bus='virtio')
        if offset == 0:
            _element(element, 'boot', order='1')
        devices.insert(position + offset, element)
    serial = _element(devices, 'serial', type='file')
    _element(serial, 'source', path=spec['console_log'])
    _element(serial, 'target', port='0')

    if wanted['run_as_root']:
        # QEMU as root and no file relabelled: the images may sit in root-only directories (the
        # local image library is 0700) and libvirt never changes their owner, not even for a while
        _remove_all(domain, 'seclabel')
        seclabel = _element(domain, 'seclabel', type='static', model='dac', relabel='no')
        _element(seclabel, 'label', '+0:+0')
    if wanted['ssh_port']:
        commandline = domain.find(QEMU_COMMANDLINE)
        if commandline is None:
            commandline = _element(domain, QEMU_COMMANDLINE)
        for value in user_network_args(wanted['ssh_port'], root_bus(domain), free_root_slot(domain)):
            _element(commandline, QEMU_ARG, value=value)
    if hasattr(ET, 'indent'):
        ET.indent(domain)
    return ET.tostring(domain, encoding='unicode') + '\n'


# -- the host ------------------------------------------------------------------------------


def domain_names(run_virsh: t.Callable[[list], str]) -> list[str]:
    """Return the names of all domains (``virsh list --all --name``)."""
    return [line.strip() for line in run_virsh(['list', '--all', '--name']).splitlines() if line.strip()]


def image_format(run_command: RunCommand, path: str) -> str:
    """Return the format QEMU must read image PATH as (a fixed VHD is vpc, though qemu-img calls it raw)."""
    footer = qemu_img.read_vhd_footer(path)
    if footer is not None:
        problem = qemu_img.vhd_problem(footer)
        if problem:
            raise CloneError(f'{path}: {problem}')
        return 'vpc'
    info = json.loads(qemu_img.run_qemu_img(run_command, ['info', '--output=json', path]))
    return info['format']


def image_problem(path: str) -> t.Optional[str]:
    """Return why PATH cannot back a clone's disk, or None."""
    if not os.path.isabs(path):
        return f'{path} is a relative path; give image paths as absolute paths'
    if not os.path.exists(path):
        return f'{path} does not exist'
    if os.path.isdir(path):
        return f'{path} is a directory, not a disk image'
    if not os.access(path, os.R_OK):
        return f'{path} is not readable by this user'
    if qemu_img.writer_holds_lock(path):
        return f'{path} is in use by a running VM (QEMU holds its write lock); a clone needs an image nobody writes'
    return None


def create_overlay(run_command: RunCommand, image: str, image_format_name: str, overlay: str) -> None:
    """Create the qcow2 OVERLAY on IMAGE (opened read-only by qemu-img, never written)."""
    qemu_img.run_qemu_img(run_command, ['create', '-q', '-f', 'qcow2', '-F', image_format_name, '-b', image, overlay])


def overlay_backing(run_command: RunCommand, overlay: str) -> t.Optional[str]:
    """Return the backing file an overlay names (read while a running clone holds it), or None."""
    info = json.loads(qemu_img.run_qemu_img(run_command, ['info', '--output=json', '--force-share', overlay]))
    return info.get('full-backing-filename') or info.get('backing-filename')


def port_in_use(port: int, host: str = '127.0.0.1') -> bool:
    """True when something listens on HOST:PORT already (QEMU would then refuse to start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as QEMU's user-mode network binds it: connections in TIME_WAIT do not block the port
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def qemu_log_path(uri: str, name: str) -> str:
    """Return where libvirt keeps the QEMU log of domain NAME on the local connection URI."""
    if uri.startswith('qemu:///session'):
        cache = os.environ.get('XDG_CACHE_HOME') or os.path.expanduser('~/.cache')
        return os.path.join(cache, 'libvirt', 'qemu', 'log', f'{name}.log')
    return os.path.join(SYSTEM_QEMU_LOG_DIR, f'{name}.log')


def log_tail(path: str, lines: int = 15, offset: int = 0) -> str:
    """Return the last LINES lines of PATH written after OFFSET ('' when there is none).

    QEMU's command line, which libvirt logs one argument a line with continuation backslashes
    before every start, is left out: the messages that say why QEMU stopped come after it.
    """
    try:
        with open(path, 'rb') as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(offset if offset <= handle.tell() else 0)
            text = handle.read().decode('utf-8', errors='replace')
    except OSError:
        return ''
    kept = []
    continued = False
    for line in text.splitlines():
        in_command_line = continued or line.endswith('\\')
        continued = line.endswith('\\')
        if not in_command_line:
            kept.append(line)
    return '\n'.join(kept[-lines:])


def file_size(path: str) -> int:
    """Return PATH's size, 0 when it does not exist (where this start's log lines begin)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
