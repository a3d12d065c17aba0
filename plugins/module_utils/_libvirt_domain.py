# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""libvirt domains through ``virsh``: state and power, the disks a capture needs, and disk backups.

Uses ``virsh`` so the modules need no Python binding on the host. A backup is a set of external
qcow2 overlays: the files that were the domain's disks stay untouched as the backup while the
guest writes into the overlays; restoring points the domain back at those files, dropping the
backup commits the overlays into them. A JSON record per domain and backup says which files
belong to it, so a later run (or a run after an interrupted one) knows what to do.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import tempfile
import time
import typing as t
import urllib.parse
import xml.etree.ElementTree as ET

from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img

# run_command(args, **kwargs) -> (rc, stdout, stderr), as AnsibleModule.run_command
RunCommand = t.Callable[..., t.Tuple[int, str, str]]

SHUT_OFF = 'shut off'
PAUSED = 'paused'
IN_SHUTDOWN = 'in shutdown'
# states in which the guest's CPUs run (idle and blocked are what some drivers report instead of running)
RUNNING_STATES = ('running', 'idle', 'blocked')
# virsh translates states and messages: they are parsed, so virsh speaks English
VIRSH_ENVIRONMENT = {'LC_ALL': 'C', 'LANG': 'C'}
NOT_FOUND_MESSAGES = ('failed to get domain', 'Domain not found')
POLL_INTERVAL = 0.5
QEMU_NAMESPACE = 'http://libvirt.org/schemas/domain/qemu/1.0'

BACKUP_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,63}')
RECORD_VERSION = 1
PENDING = 'pending'
DONE = 'done'


class DomainError(Exception):
    """The domain cannot be read or changed; the message says why."""


class DomainNotFound(DomainError):
    """No domain of that name is defined."""


def run_virsh(run_command: RunCommand, uri: str, args: list[str]) -> str:
    """Run virsh against URI and return its stdout; raise DomainError on failure."""
    try:
        rc, out, err = run_command(['virsh', '-q', '-c', uri] + args, environ_update=VIRSH_ENVIRONMENT)
    except OSError as exc:
        raise DomainError(f'cannot run virsh (install libvirt-clients): {exc}') from exc
    if rc != 0:
        raise DomainError(f"virsh {args[0]} failed: {(err or out).strip()}")
    return out


def domain_state(run_command: RunCommand, uri: str, name: str) -> str:
    """Return the domain's state as virsh prints it ('running', 'shut off', 'paused', ...).

    Raise DomainNotFound when no domain of that name is defined.
    """
    try:
        out = run_virsh(run_command, uri, ['domstate', name])
    except DomainError as exc:
        if any(text in str(exc) for text in NOT_FOUND_MESSAGES):
            raise DomainNotFound(f'there is no libvirt domain named {name!r} on {uri} (`virsh list --all` lists them)') from exc
        raise
    return out.strip().splitlines()[0].strip()


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


# -- power ------------------------------------------------------------------------------


def power_action(state: str, wanted: str, method: str, force: bool) -> str:
    """Return what brings a domain in STATE to WANTED (V(running) or V(shutoff)).

    One of ``none``, ``start``, ``resume``, ``acpi`` (press the power button, then wait),
    ``wait`` (the guest is turning itself off) or ``destroy``. Raise DomainError when the state
    cannot be reached that way.
    """
    if wanted == 'running':
        if state in RUNNING_STATES:
            return 'none'
        if state == PAUSED:
            return 'resume'
        if state == SHUT_OFF:
            return 'start'
        raise DomainError(f'the domain is {state}; only a shut off domain can be started or a paused one resumed '
                          '(power it off first with state=shutoff)')
    if state == SHUT_OFF:
        return 'none'
    if method == 'destroy':
        return 'destroy'
    if state == IN_SHUTDOWN:
        return 'wait'
    if state in RUNNING_STATES:
        return method
    # paused, crashed, pmsuspended: the guest runs no code that could react
    if force:
        return 'destroy'
    raise DomainError(f'the domain is {state}: its guest cannot react to the power button or turn itself off; '
                      'resume it first (state=running), or use method=destroy or force=true')


def wait_for_state(run_command: RunCommand, uri: str, name: str, wanted: str, timeout: float,
                   clock: t.Callable[[], float] = time.monotonic, sleep: t.Callable[[float], None] = time.sleep,
                   interval: float = POLL_INTERVAL) -> t.Tuple[bool, str, float]:
    """Poll the domain's state until it is WANTED or TIMEOUT seconds passed; return (reached, last state, seconds)."""
    start = clock()
    while True:
        state = domain_state(run_command, uri, name)
        elapsed = clock() - start
        if state == wanted:
            return True, state, elapsed
        if elapsed >= timeout:
            return False, state, elapsed
        sleep(max(0.0, min(interval, timeout - elapsed)))


def timeout_message(name: str, action: str, timeout: int, waited: float, state: str) -> str:
    """Return why a power-off did not finish, and what to do about it."""
    if action == 'acpi':
        what = 'after the ACPI power button was pressed; the guest ignores the button (no acpid or systemd-logind) or needs longer'
    else:
        what = 'while waiting for the guest to power itself off'
    return (f'{name} was still {state} after {waited:.0f} s (timeout={timeout}) {what}: raise timeout, '
            'or set force=true to power it off hard after the wait, or use method=destroy')


# -- disks of a backup ------------------------------------------------------------------


def backup_name_problem(name: str) -> t.Optional[str]:
    """Return why NAME cannot name a backup (it becomes part of file names), or None."""
    if not BACKUP_NAME.fullmatch(name or ''):
        return f'backup name {name!r} is not valid: use 1 to 64 letters, digits, dots, underscores and dashes, starting with a letter or digit'
    return None


def backup_disks(text: str) -> t.Tuple[list, list]:
    """Return (disks, skipped) of a domain definition, in document order.

    Disks are the writable ``device='disk'`` devices: ``{target, path, format}``. Skipped are
    the targets of CD-ROMs, floppies and read-only disks, which the guest cannot change. A
    writable disk that is not a file (a block device, a network disk, a volume) is refused.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise DomainError(f'the domain definition is not valid XML: {exc}') from exc
    disks, skipped = [], []
    for disk in root.findall('./devices/disk'):
        target_element = disk.find('target')
        target = target_element.get('dev') if target_element is not None else None
        if not target:
            raise DomainError('a disk of the domain has no target device')
        if disk.get('device', 'disk') != 'disk' or disk.find('readonly') is not None:
            skipped.append(target)
            continue
        source = disk.find('source')
        path = source.get('file') if source is not None and disk.get('type', 'file') == 'file' else None
        if not path:
            raise DomainError(f"disk {target} of the domain is a {disk.get('type', 'file')} disk without a file source: "
                              'only disks backed by files can be backed up with overlays')
        driver = disk.find('driver')
        disks.append({'target': target, 'path': path, 'format': driver.get('type') if driver is not None else None})
    if not disks:
        raise DomainError('the domain has no writable disk to back up')
    return disks, skipped


def overlay_path(disk_path: str, backup_name: str, overlay_dir: t.Optional[str] = None) -> str:
    """Return the overlay of a disk: ``<disk stem>.<backup name>.qcow2`` next to it, or in OVERLAY_DIR."""
    stem = os.path.splitext(os.path.basename(disk_path))[0]
    return os.path.join(overlay_dir or os.path.dirname(disk_path), f'{stem}.{backup_name}.qcow2')


def plan_backup(disks: list, backup_name: str, overlay_dir: t.Optional[str] = None) -> list:
    """Return the record's disk entries ``{target, original, original_format, overlay}``; raise on clashing overlays."""
    planned = []
    for disk in disks:
        planned.append({'target': disk['target'], 'original': disk['path'], 'original_format': disk['format'],
                        'overlay': overlay_path(disk['path'], backup_name, overlay_dir)})
    overlays = [entry['overlay'] for entry in planned]
    for entry in planned:
        if overlays.count(entry['overlay']) > 1:
            raise DomainError(f"two disks would get the same overlay {entry['overlay']} (disks with the same file name): "
                              'leave overlay_dir unset to keep each overlay next to its disk')
        if entry['overlay'] in [d['path'] for d in disks]:
            raise DomainError(f"the overlay {entry['overlay']} of disk {entry['target']} is a disk of the domain already")
    return planned


def diskspec_path(path: str) -> str:
    """Return PATH escaped for a virsh --diskspec value (a comma is written twice)."""
    return path.replace(',', ',,')


def snapshot_args(domain: str, backup_name: str, entries: list, skipped: list) -> list:
    """Return the virsh arguments of an external disk-only snapshot of every disk at one instant."""
    args = ['snapshot-create-as', domain, backup_name, '--disk-only', '--atomic', '--no-metadata']
    for entry in entries:
        args += ['--diskspec', f"{entry['target']},snapshot=external,file={diskspec_path(entry['overlay'])}"]
    for target in skipped:
        args += ['--diskspec', f'{target},snapshot=no']
    return args


def disk_sources(text: str) -> dict:
    """Return ``{target: source file}`` of the disk devices of a domain definition (None for non-file sources)."""
    root = ET.fromstring(text)
    sources = {}
    for disk in root.findall('./devices/disk'):
        target, source = disk.find('target'), disk.find('source')
        if target is not None and target.get('dev'):
            sources[target.get('dev')] = source.get('file') if source is not None else None
    return sources


def backup_status(entries: list, definitions: list) -> str:
    """Say which files the domain uses compared with a backup's ENTRIES, in every one of DEFINITIONS.

    DEFINITIONS are ``disk_sources()`` of the persistent definition (and the live one when the
    domain runs). ``overlays``: every disk is its overlay; ``originals``: every disk is its
    original; ``changed``: anything else (a disk removed, replaced, or only some overlays used).
    """
    seen = set()
    for sources in definitions:
        for entry in entries:
            current = sources.get(entry['target'])
            if current == entry['overlay']:
                seen.add('overlays')
            elif current == entry['original']:
                seen.add('originals')
            else:
                seen.add('changed')
    return seen.pop() if len(seen) == 1 else 'changed'


def backup_decision(state: str, record: t.Optional[dict], status: t.Optional[str]) -> str:
    """Return what a run with STATE (present, restored, absent) does, given the record and ``backup_status``.

    ``nothing``, ``create``, ``discard`` (a pending record whose snapshot never happened: remove
    what it names, then for present ``create``), ``finish`` (the snapshot happened: mark the
    record done), ``unchanged``, ``restore``, ``commit``, ``cleanup`` (the domain is on its
    originals already: remove the overlays and the record). Raise DomainError when the domain
    does not match the record.
    """
    if record is None:
        return 'create' if state == 'present' else 'nothing'
    where = f"backup {record['name']} of {record['domain']}"
    if status == 'changed':
        raise DomainError(f'{where}: the domain uses neither the overlays nor the original files that the backup record '
                          'lists; someone changed its disks since the backup. Check the domain and the record '
                          f"({', '.join(e['overlay'] for e in record['disks'])}) by hand")
    if record['status'] == PENDING and status == 'originals':
        return 'discard'
    if state == 'present':
        if status == 'overlays':
            return 'finish' if record['status'] == PENDING else 'unchanged'
        raise DomainError(f'{where} exists, but the domain runs on the original files, not on the overlays: someone '
                          'changed its disks since the backup; use state=restored or state=absent to drop the record')
    if status == 'originals':
        return 'cleanup'
    return 'restore' if state == 'restored' else 'commit'


# -- definitions with other disk sources ------------------------------------------------


def _disk_element(root: ET.Element, target: str) -> ET.Element:
    for disk in root.findall('./devices/disk'):
        target_element = disk.find('target')
        if target_element is not None and target_element.get('dev') == target:
            return disk
    raise DomainError(f'the domain has no disk {target}')


def _set_source(disk: ET.Element, path: str, fmt: t.Optional[str]) -> None:
    disk.set('type', 'file')
    source = disk.find('source')
    if source is None:
        source = ET.SubElement(disk, 'source')
    for attribute in list(source.attrib):
        if attribute != 'file':
            del source.attrib[attribute]
    source.set('file', path)
    driver = disk.find('driver')
    if fmt:
        if driver is None:
            driver = ET.SubElement(disk, 'driver', name='qemu')
        driver.set('type', fmt)


def _serialise(root: ET.Element) -> str:
    ET.register_namespace('qemu', QEMU_NAMESPACE)
    return ET.tostring(root, encoding='unicode')


def with_overlays(text: str, entries: list) -> str:
    """Return the definition TEXT with each entry's disk on its overlay, the original as its backing store."""
    root = ET.fromstring(text)
    for entry in entries:
        disk = _disk_element(root, entry['target'])
        old_chain = disk.find('backingStore')
        if old_chain is not None:
            disk.remove(old_chain)
        _set_source(disk, entry['overlay'], 'qcow2')
        # what libvirt itself writes after an external snapshot: the old source becomes the backing store
        chain = ET.Element('backingStore', type='file')
        if entry['original_format']:
            ET.SubElement(chain, 'format', type=entry['original_format'])
        ET.SubElement(chain, 'source', file=entry['original'])
        if old_chain is not None and len(old_chain):
            chain.append(old_chain)
        disk.insert(list(disk).index(disk.find('source')) + 1, chain)
    return _serialise(root)


def with_originals(text: str, entries: list) -> str:
    """Return the definition TEXT with each entry's disk back on its original file.

    Only the disk's source file and driver type change; the backing store that names the
    original is replaced by the original's own (libvirt detects the chain again at start).
    """
    root = ET.fromstring(text)
    for entry in entries:
        disk = _disk_element(root, entry['target'])
        chain = disk.find('backingStore')
        below = None
        if chain is not None:
            source = chain.find('source')
            if source is not None and source.get('file') == entry['original']:
                below = chain.find('backingStore')
            position = list(disk).index(chain)
            disk.remove(chain)
            if below is not None and len(below):
                disk.insert(position, below)
        _set_source(disk, entry['original'], entry['original_format'])
    return _serialise(root)


def define(run_command: RunCommand, uri: str, text: str) -> None:
    """Define (or redefine) a domain from the XML TEXT."""
    with tempfile.NamedTemporaryFile('w', prefix='imageprep-domain-', suffix='.xml', encoding='utf-8') as handle:
        handle.write(text)
        handle.flush()
        run_virsh(run_command, uri, ['define', handle.name])


def domain_uuid(run_command: RunCommand, uri: str, name: str) -> str:
    """Return the domain's UUID."""
    return run_virsh(run_command, uri, ['domuuid', name]).strip()


def definitions(run_command: RunCommand, uri: str, name: str, state: str) -> t.Tuple[str, list]:
    """Return (persistent definition, [disk_sources() of it and, unless shut off, of the live one])."""
    inactive = run_virsh(run_command, uri, ['dumpxml', '--inactive', name])
    found = [disk_sources(inactive)]
    if state != SHUT_OFF:
        found.append(disk_sources(run_virsh(run_command, uri, ['dumpxml', name])))
    return inactive, found


# -- overlay files ------------------------------------------------------------------------


def create_overlay(run_command: RunCommand, entry: dict) -> None:
    """Create the qcow2 overlay of a shut-off domain's disk (mode 0600, as libvirt makes them)."""
    args = ['create', '-q', '-f', 'qcow2', '-b', entry['original']]
    if entry['original_format']:
        args += ['-F', entry['original_format']]
    qemu_img.run_qemu_img(run_command, args + [entry['overlay']])
    os.chmod(entry['overlay'], 0o600)


def commit_overlay(run_command: RunCommand, entry: dict) -> None:
    """Write the overlay's changes into its original (the overlay is deleted afterwards, so it is not emptied)."""
    qemu_img.run_qemu_img(run_command, ['commit', '-q', '-f', 'qcow2', '-d', entry['overlay']])


def detect_format(run_command: RunCommand, path: str) -> str:
    """Return the format qemu-img detects for a disk whose definition names none."""
    info = json.loads(qemu_img.run_qemu_img(run_command, ['info', '--output=json', '--force-share', path]))
    return info['format']


def remove_files(paths: t.Iterable[str]) -> list:
    """Remove the files that exist among PATHS; return those removed."""
    removed = []
    for path in paths:
        if os.path.lexists(path):
            os.unlink(path)
            removed.append(path)
    return removed


# -- the backup record ------------------------------------------------------------------


def utc_now() -> str:
    """Return the current time as an ISO 8601 UTC timestamp (seconds)."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace('+00:00', 'Z')


def record_path(state_dir: str, domain: str, backup_name: str) -> str:
    """Return the record file of a backup: ``<domain, %-quoted>@<backup name>.json`` in STATE_DIR."""
    return os.path.join(state_dir, f"{urllib.parse.quote(domain, safe='')}@{backup_name}.json")


def read_record(path: str) -> t.Optional[dict]:
    """Return the record at PATH, None when there is none; raise DomainError when it is damaged."""
    try:
        with open(path, encoding='utf-8') as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DomainError(f'the backup record {path} cannot be read ({exc}); check the domain disks and remove it by hand') from exc
    keys = {'domain', 'name', 'status', 'created', 'state_at_backup', 'disks'}
    if not isinstance(record, dict) or not keys <= set(record) or record['status'] not in (PENDING, DONE) or not all(
            isinstance(d, dict) and {'target', 'original', 'original_format', 'overlay'} <= set(d) for d in record['disks']):
        raise DomainError(f'the backup record {path} is not one this module wrote (keys missing); check it by hand')
    return record


def write_record(path: str, record: dict) -> None:
    """Write RECORD to PATH atomically: a flushed temporary file renamed over it, and the directory flushed."""
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix='.record-', dir=directory)
    try:
        with os.fdopen(handle, 'w', encoding='utf-8') as stream:
            json.dump(record, stream, indent=2, sort_keys=True)
            stream.write('\n')
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        remove_files([temporary])
        raise
    _fsync_directory(directory)


def remove_record(path: str) -> bool:
    """Remove the record at PATH (and flush its directory); True when there was one."""
    if not remove_files([path]):
        return False
    _fsync_directory(os.path.dirname(path))
    return True


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
