#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: local_image
short_description: Capture VM disks into, or register image files in, the local image library
version_added: 0.1.0
description:
  - Captures the disks of a powered-off VM (disk files, or a libvirt domain) into an image in the
    local image library on the hypervisor host, or registers an uploaded image file there.
  - The library is a directory of image files plus an SQLite catalogue. An image is a O(name)
    and a O(version); it is an B(OS image) (V(os), one OS disk) or a B(VM image) (V(vm), the
    OS disk plus every data disk, each with its LUN).
  - Writes are atomic. Files are written in the library's staging directory, flushed, renamed
    into place, and only then recorded in the catalogue in one transaction. A run that is killed
    leaves nothing visible, and the next run removes its leftovers (RV(cleaned)).
  - Runs on one library are serialised by a lock. A registered version is immutable. Capturing
    the same sources again (same files, unchanged since) reports no change without reading the
    disks; another source for an existing version is an error unless O(force=true).
  - Image files are written with mode V(0600); they hold whatever the guest held.
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
requirements:
  - C(qemu-img) on the host (Debian/Ubuntu package C(qemu-utils), RHEL/Fedora C(qemu-img)).
  - C(virsh) (package C(libvirt-clients)) for O(libvirt_domain).
attributes:
  check_mode:
    support: full
    details: Reports what would be captured (sources, sizes, target format) without writing anything.
  diff_mode:
    support: full
    details: Shows the catalogue record before and after.
  platform:
    platforms: posix
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
    details:
      - With O(version=auto), a capture of sources unchanged since the latest version reports no change.
options:
  name:
    description:
      - Image name. 1 to 80 letters, digits, V(.), V(_) and V(-), starting and ending with a
        letter or digit, without V(..) (the rule of Azure Compute Gallery image names).
    type: str
    required: true
  version:
    description:
      - V(MAJOR.MINOR.PATCH), or V(auto) for the next patch version after the highest
        registered one (V(1.0.0) for a new name).
      - With O(state=absent), a version to remove, or V(all).
      - Defaults to V(auto) with O(state=present). Required with O(state=absent).
    type: str
  state:
    description:
      - V(present) captures or registers; V(absent) removes O(version) (or V(all) versions) and its files.
    type: str
    choices: [present, absent]
    default: present
  library:
    description: Directory of the image library. Created (mode V(0700)) when missing.
    type: path
    default: /var/lib/imageprep/images
  disks:
    description:
      - Disk files to capture. The first is the OS disk; the others are data disks.
      - A disk on a backing chain (a qcow2 overlay on a base image) is captured whole, flattened
        into one disk; a write to any file of the chain makes it a new source.
      - An item is a path, or a dictionary with the keys C(path) and C(lun). Data disks are
        numbered 0, 1, ... in order when no item gives a LUN; when one does, every data disk must.
        LUNs are 0 to 63, as in Azure.
    type: list
    elements: raw
  libvirt_domain:
    description:
      - A libvirt domain whose disks to capture, read from its persistent definition. The first
        disk in boot order is the OS disk; the others get LUNs in order. CD-ROMs are ignored.
      - The domain must be shut off unless O(force=true). Firmware and architecture come from the domain.
    type: str
  libvirt_uri:
    description: libvirt connection URI for O(libvirt_domain).
    type: str
    default: qemu:///system
  file:
    description:
      - An uploaded image file to register (qcow2, raw, fixed or dynamic VHD, VHDX, VMDK). A
        fixed VHD is recognised by its footer even though C(qemu-img info) calls it raw.
      - A file with a backing file is refused; an upload must hold the whole disk.
    type: path
  checksum:
    description:
      - V(sha256:HEX) of O(file). It must match before anything is written or recorded.
    type: str
  format:
    description:
      - Format of the stored disks. V(vpc) is a B(fixed) VHD whose virtual size is a whole
        number of MiB (the disk is grown to the next MiB when needed), ready for Azure.
      - Defaults to V(qcow2) for captures and to the file's own format for O(file).
    type: str
    choices: [qcow2, raw, vpc, vhdx, vmdk]
  compression:
    description: Compression of qcow2 clusters. V(zstd) is about four times faster than V(zlib).
    type: str
    choices: [none, zlib, zstd]
    default: none
  kind:
    description:
      - V(os) for an OS image (one disk), V(vm) for a VM image (OS disk plus data disks).
      - Defaults to V(vm) when there are data disks, else V(os). V(os) with data disks is an error.
    type: str
    choices: [os, vm]
  os_type:
    description: Operating system of the image.
    type: str
    choices: [linux, windows]
    default: linux
  os_state:
    description: V(generalized) (identity removed, a parent of many VMs) or V(specialized) (a copy of one machine, such as a backup).
    type: str
    choices: [generalized, specialized]
    default: generalized
  firmware:
    description: Firmware the image boots with. Defaults to the domain's for O(libvirt_domain), else V(bios).
    type: str
    choices: [bios, uefi]
  architecture:
    description: CPU architecture. Defaults to the domain's for O(libvirt_domain), else V(x86_64).
    type: str
  description:
    description: Free text kept with the image; may change on a later run.
    type: str
    default: ''
  tags:
    description: Key/value tags kept with the image; may change on a later run.
    type: dict
    default: {}
  provenance:
    description:
      - Data about how the image was made, kept with it, such as the report of
        the Linux deprovisioning or Windows Sysprep report.
    type: dict
    default: {}
  force:
    description:
      - Capture disks a running VM holds (a crash-consistent copy; RV(image.crash_consistent) says so).
      - Replace an existing version captured from other sources or with other settings.
    type: bool
    default: false
  keep_versions:
    description:
      - After a capture, keep only this many versions of O(name) (the highest) and remove the others.
    type: int
notes:
  - The catalogue is C(catalogue.sqlite) in O(library). The files of one version live in
    C(NAME/VERSION-ID/) under O(library); their paths are in RV(image.disks).
seealso:
  - module: imageprep.vm.local_image_info
"""

EXAMPLES = r"""
- name: Capture a shut-off libvirt domain as a generalized VM image
  imageprep.vm.local_image:
    name: debian12-web
    version: auto
    libvirt_domain: web01
    provenance: "{{ linux_deprovision_report | default({}) }}"
    keep_versions: 3

- name: Capture disk files (OS disk and one data disk at LUN 0) as zstd-compressed qcow2
  imageprep.vm.local_image:
    name: db-template
    version: 2.1.0
    disks:
      - /var/lib/libvirt/images/db01.qcow2
      - path: /var/lib/libvirt/images/db01-data.qcow2
        lun: 0
    compression: zstd

- name: Keep a specialized backup before the guest is generalized
  imageprep.vm.local_image:
    name: web01-backup
    disks: [/var/lib/libvirt/images/web01.qcow2]
    os_state: specialized

- name: Register an uploaded VHD, checking it first
  imageprep.vm.local_image:
    name: vendor-appliance
    version: 1.0.0
    file: /srv/uploads/appliance.vhd
    checksum: sha256:9f2c0f4e1d0b5c2a1e3f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f70819
    format: vpc

- name: Remove every version of an image
  imageprep.vm.local_image:
    name: web01-backup
    version: all
    state: absent
"""

RETURN = r"""
image:
  description: The catalogue record of the image (after the change; in check mode, the one that would be written, without checksums).
  returned: state=present
  type: dict
  contains:
    name: {description: Image name., type: str, sample: debian12-web}
    version: {description: Image version., type: str, sample: 1.0.3}
    kind: {description: V(os) or V(vm)., type: str, sample: vm}
    os_type: {description: V(linux) or V(windows)., type: str}
    os_state: {description: V(generalized) or V(specialized)., type: str}
    firmware: {description: V(bios) or V(uefi)., type: str}
    architecture: {description: CPU architecture., type: str, sample: x86_64}
    format: {description: Format of the stored disks., type: str, sample: qcow2}
    compression: {description: qcow2 compression., type: str, sample: none}
    description: {description: Free text., type: str}
    tags: {description: Tags., type: dict}
    provenance: {description: How the image was made., type: dict}
    source:
      description:
        - Where the disks came from (C(type) is V(disks), V(libvirt_domain) or V(file)) and their paths.
        - C(backing_chains), when a disk is on a backing chain, lists for each such disk the files under it, nearest first.
      type: dict
    fingerprint: {description: Identity of the sources and settings; an unchanged re-run compares it without reading disks., type: str}
    crash_consistent: {description: True when a disk was copied while a running VM held it (O(force=true))., type: bool}
    captured_at: {description: UTC time of the capture., type: str, sample: '2026-11-29T15:20:00Z'}
    captured_by: {description: Host that captured it., type: str}
    tool_versions:
      description: Versions of qemu-img, SQLite and Python used.
      type: dict
    path: {description: Directory holding the image files., type: str}
    disks:
      description: The disks, OS disk first.
      type: list
      elements: dict
      contains:
        role: {description: V(os) or V(data)., type: str}
        lun: {description: LUN of a data disk; null for the OS disk., type: int}
        path: {description: The stored file., type: str}
        format: {description: Its format., type: str}
        virtual_size: {description: Virtual size in bytes., type: int}
        actual_size: {description: Bytes allocated on disk., type: int}
        sha256: {description: sha256 of the stored file., type: str}
        source: {description: The file it was captured from., type: str}
        source_format: {description: The format it was read as., type: str}
removed:
  description: Versions removed by O(state=absent) or O(keep_versions). A version replaced with O(force=true) is not listed; RV(msg) says it was replaced.
  returned: always
  type: list
  elements: str
  sample: [1.0.0, 1.0.1]
cleaned:
  description: Leftovers of killed runs that were removed from the library before this run changed it.
  returned: always
  type: list
  elements: str
msg:
  description: What was done or would be done, and why.
  returned: always
  type: str
"""

import concurrent.futures
import hashlib
import json
import os
import platform
import socket
import sqlite3
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imageprep.vm.plugins.module_utils import _library as library_mod
from ansible_collections.imageprep.vm.plugins.module_utils import _libvirt_domain as libvirt_mod
from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img

MAX_LUN = 63  # Azure's LUN range for data disks, so images can move there
IMMUTABLE_FIELDS = ('kind', 'os_type', 'os_state', 'firmware', 'architecture', 'format', 'compression', 'fingerprint')
MUTABLE_FIELDS = ('description', 'tags', 'provenance')


class LocalImageError(Exception):
    """The request cannot be carried out; the message says why."""


def parse_checksum(checksum):
    """Return the lower-case hex of a 'sha256:HEX' checksum, or raise LocalImageError."""
    algorithm, _sep, value = (checksum or '').partition(':')
    value = value.strip().lower()
    if algorithm.lower() != 'sha256' or len(value) != 64 or any(c not in '0123456789abcdef' for c in value):
        raise LocalImageError(f'checksum {checksum!r} is not valid: use sha256:<64 hex digits>')
    return value


def disk_items(disks):
    """Return [{path, lun, role}] for the O(disks) option, OS disk first; raise LocalImageError on bad items."""
    items = []
    for index, item in enumerate(disks):
        if isinstance(item, str):
            items.append({'path': item, 'lun': None, 'lun_given': False})
        elif isinstance(item, dict):
            unknown = set(item) - {'path', 'lun'}
            if unknown or 'path' not in item or not isinstance(item['path'], str):
                raise LocalImageError(f'disks[{index}] must be a path or a dictionary with path and lun, got {item!r}')
            lun = item.get('lun')
            if lun is not None:
                try:
                    lun = int(lun)
                except (TypeError, ValueError):
                    raise LocalImageError(f'disks[{index}].lun must be an integer, got {item.get("lun")!r}') from None
            items.append({'path': item['path'], 'lun': lun, 'lun_given': lun is not None})
        else:
            raise LocalImageError(f'disks[{index}] must be a path or a dictionary with path and lun, got {item!r}')
    if not items:
        raise LocalImageError('disks is empty: give at least the OS disk')
    if items[0]['lun_given']:
        raise LocalImageError('disks[0] is the OS disk and takes no lun')
    data = items[1:]
    if any(d['lun_given'] for d in data):
        missing = [str(i + 1) for i, d in enumerate(data) if not d['lun_given']]
        if missing:
            raise LocalImageError(f"data disk(s) disks[{', '.join(missing)}] have no lun while others set one: give every data disk a lun")
    else:
        for position, disk in enumerate(data):
            disk['lun'] = position
    luns = [d['lun'] for d in data]
    for lun in luns:
        if lun < 0 or lun > MAX_LUN:
            raise LocalImageError(f'lun {lun} is out of range 0-{MAX_LUN}')
    if len(set(luns)) != len(luns):
        raise LocalImageError(f'data disk luns must be unique, got {luns}')
    for position, disk in enumerate(items):
        disk['role'] = 'os' if position == 0 else 'data'
        del disk['lun_given']
    return items


def fingerprint(sources, settings):
    """Return a digest of the sources' identity (path, inode, size, times) and the settings.

    It changes when a disk or a file of its backing chain is written to (mtime/ctime) or
    replaced (inode), so an unchanged re-run is recognised without reading any disk.
    """
    state = []
    for source in sources:
        entry = [os.path.realpath(source['path']), source['lun']]
        for path in [source['path']] + source.get('chain', []):
            stat = os.stat(path)
            entry += [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]
        state.append(entry)
    text = json.dumps({'sources': state, 'settings': settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def decide(existing, planned, force):
    """Return (action, reason): 'unchanged', 'update' (mutable fields only), 'create' or 'replace'.

    Raise LocalImageError when an existing version would change without O(force).
    """
    if existing is None:
        return 'create', 'new version'
    differing = [f for f in IMMUTABLE_FIELDS if existing[f] != planned[f]]
    if differing:
        if not force:
            what = 'other sources' if 'fingerprint' in differing else ', '.join(f for f in differing)
            raise LocalImageError(
                f"{planned['name']} {planned['version']} is registered already, from {what}; a registered version is "
                'immutable: use another version (or version=auto), or force=true to replace it')
        return 'replace', 'replaced (force=true): ' + ', '.join(differing)
    if any(existing[f] != planned[f] for f in MUTABLE_FIELDS):
        return 'update', 'description, tags or provenance updated'
    return 'unchanged', 'the sources are unchanged since this version was captured'


def retention(versions, keep, protect):
    """Return the versions to remove so that the KEEP highest remain (PROTECT always stays)."""
    if keep is None:
        return []
    ordered = sorted(versions, key=library_mod.parse_version)
    doomed = ordered[:max(0, len(ordered) - keep)]
    return [v for v in doomed if v != protect]


class LocalImageManager:
    """Carries out one local_image task."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.result = {'changed': False, 'removed': [], 'cleaned': [], 'msg': ''}

    def run(self):
        """Do the task and return the result dict."""
        problem = library_mod.name_problem(self.params['name'])
        if problem:
            raise LocalImageError(problem)
        if self.params['state'] == 'absent':
            return self.absent()
        return self.present()

    # -- library access --------------------------------------------------------------------
    def open_library(self):
        """Open the library; in check mode a missing library is not created (None is returned)."""
        path = self.params['library']
        if self.module.check_mode and not os.path.exists(os.path.join(path, library_mod.CATALOGUE)):
            return None
        return library_mod.Library(path, create=True)

    # -- state=absent ----------------------------------------------------------------------------
    def absent(self):
        """Remove one version or all versions of the name."""
        version = self.params['version']
        if not version:
            raise LocalImageError('state=absent needs version: a version to remove, or all')
        if version != 'all':
            library_mod.parse_version(version)
        library = self.open_library()
        if library is None:
            self.result['msg'] = 'no library, nothing to remove'
            return self.result
        with library, library.lock(exclusive=not self.module.check_mode):
            if not self.module.check_mode:
                self.result['cleaned'] = library.recover()
            versions = library.versions(self.params['name']) if version == 'all' else (
                [version] if library.get(self.params['name'], version) else [])
            before = {v: library.get(self.params['name'], v) for v in versions}
            if not self.module.check_mode:
                for v in versions:
                    library.remove(self.params['name'], v)
        self.result['removed'] = versions
        self.result['changed'] = bool(versions)
        self.result['diff'] = {'before': before, 'after': {}}
        verb = 'would remove' if self.module.check_mode else 'removed'
        self.result['msg'] = f"{verb} {self.params['name']} {', '.join(versions)}" if versions else 'nothing to remove'
        return self.result

    # -- state=present ---------------------------------------------------------------------------
    def sources(self):
        """Return (source description, disks, defaults) for the chosen source, with qemu-img info of each disk."""
        params = self.params
        if not self.module.get_bin_path('qemu-img'):
            raise LocalImageError('qemu-img is not installed on this host (Debian/Ubuntu: qemu-utils, RHEL/Fedora: qemu-img)')
        if params['libvirt_domain'] and not self.module.get_bin_path('virsh'):
            raise LocalImageError('virsh is not installed on this host (Debian/Ubuntu: libvirt-clients, RHEL/Fedora: libvirt-client)')
        defaults = {'firmware': 'bios', 'architecture': 'x86_64'}
        if params['libvirt_domain']:
            domain = libvirt_mod.read_domain(self.module.run_command, params['libvirt_uri'], params['libvirt_domain'])
            in_use = libvirt_mod.capture_problem(domain)
            if in_use and not params['force']:
                raise LocalImageError(f"cannot capture libvirt domain {params['libvirt_domain']}: {in_use} "
                                      '(or set force=true for a crash-consistent copy)')
            disks = [{'path': d['path'], 'lun': d['lun'], 'role': 'os' if d['lun'] is None else 'data', 'format': d['format']}
                     for d in domain['disks']]
            defaults = {'firmware': domain['firmware'], 'architecture': domain['architecture']}
            source = {'type': 'libvirt_domain', 'domain': params['libvirt_domain'], 'uri': params['libvirt_uri'],
                      'domain_state': domain['state']}
        elif params['file']:
            disks = [{'path': params['file'], 'lun': None, 'role': 'os', 'format': None}]
            source = {'type': 'file'}
        else:
            disks = [dict(d, format=None) for d in disk_items(params['disks'])]
            source = {'type': 'disks'}
        for disk in disks:
            if not os.path.isabs(disk['path']):
                raise LocalImageError(f"{disk['path']} is a relative path; give disk paths as absolute paths")
            if not os.path.exists(disk['path']):
                raise LocalImageError(f"{disk['path']} does not exist")
            if os.path.isdir(disk['path']):
                raise LocalImageError(f"{disk['path']} is a directory, not a disk image")
            if not os.access(disk['path'], os.R_OK):
                raise LocalImageError(f"{disk['path']} is not readable by this user")
            disk['in_use'] = qemu_img.writer_holds_lock(disk['path'])
            if disk['in_use'] and not params['force']:
                raise LocalImageError(f"{disk['path']} is in use by a running VM (QEMU holds its write lock); shut the VM "
                                      'down, or set force=true for a crash-consistent copy')
            info = qemu_img.image_info(self.module.run_command, disk['path'], disk['format'], force_share=disk['in_use'],
                                       allow_backing=source['type'] != 'file')
            disk['format'] = info['detected-format']
            disk['chain'] = info['backing-chain']
            disk['virtual_size'] = info['virtual-size']
            disk['allocated'] = qemu_img.allocated_bytes(disk['path'])
        source['paths'] = [d['path'] for d in disks]
        if any(d['chain'] for d in disks):
            source['backing_chains'] = {d['path']: d['chain'] for d in disks if d['chain']}
        return source, disks, defaults

    def plan(self, source, disks, defaults, version):
        """Return the record this run would write (without checksums and sizes of the outputs)."""
        params = self.params
        out_format = params['format'] or (disks[0]['format'] if source['type'] == 'file' else 'qcow2')
        if params['compression'] != 'none' and out_format != 'qcow2':
            raise LocalImageError(f"compression={params['compression']} needs format=qcow2, not {out_format}")
        kind = params['kind'] or ('vm' if len(disks) > 1 else 'os')
        if kind == 'os' and len(disks) > 1:
            raise LocalImageError(f'kind=os holds one disk, but the source has {len(disks)}; use kind=vm to keep the data disks')
        settings = {'format': out_format, 'compression': params['compression'], 'checksum': params['checksum']}
        extension = qemu_img.FORMAT_EXTENSIONS[out_format]
        planned_disks = []
        for disk in disks:
            suffix = 'os' if disk['role'] == 'os' else f"lun{disk['lun']}"
            planned_disks.append({
                'role': disk['role'], 'lun': disk['lun'], 'file': f"{params['name']}-{version}-{suffix}.{extension}",
                'format': out_format, 'virtual_size': disk['virtual_size'], 'actual_size': None, 'sha256': None,
                'source': disk['path'], 'source_format': disk['format'],
            })
        crash_consistent = any(d['in_use'] for d in disks) or source.get('domain_state', libvirt_mod.SHUT_OFF) != libvirt_mod.SHUT_OFF
        return {
            'name': params['name'], 'version': version, 'kind': kind, 'os_type': params['os_type'],
            'os_state': params['os_state'], 'firmware': params['firmware'] or defaults['firmware'],
            'architecture': params['architecture'] or defaults['architecture'], 'format': out_format,
            'compression': params['compression'], 'description': params['description'], 'tags': params['tags'],
            'provenance': params['provenance'], 'source': source, 'fingerprint': fingerprint(disks, settings),
            'crash_consistent': crash_consistent, 'disks': planned_disks,
        }

    def present(self):
        """Capture or register, unless the version exists from the same sources."""
        params = self.params
        if params['version'] not in (None, 'auto'):
            library_mod.parse_version(params['version'])
        checksum = parse_checksum(params['checksum']) if params['checksum'] else None
        source, disks, defaults = self.sources()
        library = self.open_library()
        if library is None:
            return self.present_in(None, source, disks, defaults, checksum)
        with library, library.lock(exclusive=not self.module.check_mode):
            if not self.module.check_mode:
                self.result['cleaned'] = library.recover()
            return self.present_in(library, source, disks, defaults, checksum)

    def present_in(self, library, source, disks, defaults, checksum):
        """The decision and the capture, with the library lock held (LIBRARY None: no library yet, check mode)."""
        params = self.params
        versions = library.versions(params['name']) if library else []
        existing = None
        if params['version'] in (None, 'auto'):
            latest = library.get(params['name'], versions[-1]) if versions else None
            probe = self.plan(source, disks, defaults, versions[-1] if versions else library_mod.FIRST_VERSION)
            if latest is not None and latest['fingerprint'] == probe['fingerprint']:
                existing, version = latest, latest['version']
            else:
                version = library_mod.next_version(versions)
        else:
            version = params['version']
            existing = library.get(params['name'], version) if library else None
        planned = self.plan(source, disks, defaults, version)
        action, reason = decide(existing, planned, params['force'])
        doomed = retention(versions + ([] if version in versions else [version]), params['keep_versions'], version)
        self.result['diff'] = {'before': _comparable(existing) if existing else {}, 'after': _comparable(planned)}

        if action == 'unchanged' and not doomed:
            self.result.update(image=existing, msg=f"{params['name']} {version}: {reason}")
            return self.result
        if action in ('create', 'replace'):
            # Only for disks about to be read: an unchanged re-run reads no disk metadata either.
            for disk in disks:
                qemu_img.check_image(self.module.run_command, disk['path'], disk['format'])
        self.result['changed'] = True
        if self.module.check_mode:
            total = sum(d['allocated'] for d in disks)
            self.result.update(image=_public(planned, params['library']), removed=doomed,
                               msg=f"would {action if action != 'unchanged' else 'keep'} {params['name']} {version} "
                                   f"({reason}; {len(disks)} disk(s), {total} bytes allocated in the sources)"
                                   + (f"; would remove {', '.join(doomed)}" if doomed else ''))
            return self.result

        if action in ('create', 'replace'):
            if checksum is not None:
                actual = qemu_img.sha256_file(disks[0]['path'])
                if actual != checksum:
                    raise LocalImageError(f"{disks[0]['path']} has sha256 {actual}, not the expected {checksum}; nothing was registered")
            image = self.capture(library, planned, disks)
        elif action == 'update':
            image = library.update_metadata(existing['name'], existing['version'], planned['description'], planned['tags'],
                                            planned['provenance'])
        else:
            image = existing
        for old in doomed:
            library.remove(params['name'], old)
        self.result.update(image=image, removed=doomed, msg=f"{params['name']} {version}: {reason}"
                           + (f"; removed {', '.join(doomed)}" if doomed else ''))
        self.result['diff']['after'] = _comparable(image)
        return self.result

    def capture(self, library, planned, disks):
        """Convert every disk into a staging directory, hash it, then publish the image."""
        needed = sum(d['allocated'] for d in disks)
        stat = os.statvfs(library.path)
        free = stat.f_bavail * stat.f_frsize
        if needed > free:
            raise LocalImageError(f'the library file system has {free} bytes free, the sources hold {needed} bytes of data; '
                                  'nothing was written')
        staging = library.new_staging()
        # Hash each output while qemu-img converts the next disk, and flush the outputs while
        # the last one is hashed: the three are sequential per disk but independent across them.
        hashing = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        flushing = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            hashes = []
            for disk, target in zip(disks, planned['disks']):
                dest = os.path.join(staging, target['file'])
                qemu_img.convert(self.module.run_command, disk['path'], disk['format'], dest, target['format'],
                                 compression=planned['compression'], force_share=disk['in_use'], virtual_size=disk['virtual_size'])
                info = qemu_img.image_info(self.module.run_command, dest, target['format'])
                target['virtual_size'] = info['virtual-size']
                target['actual_size'] = qemu_img.allocated_bytes(dest)
                hashes.append((target, dest, hashing.submit(qemu_img.sha256_file, dest)))
            flushed = [flushing.submit(library_mod.fsync_path, dest) for _target, dest, _future in hashes]
            for target, _dest, future in hashes:
                target['sha256'] = future.result()
            for future in flushed:
                future.result()
            record = dict(planned, captured_at=library_mod.now_utc(), captured_by=socket.getfqdn(),
                          tool_versions={'qemu-img': qemu_img.qemu_img_version(self.module.run_command), 'sqlite': sqlite3.sqlite_version,
                                         'python': platform.python_version()})
            return library.publish(staging, record)
        except BaseException:
            # Also on KeyboardInterrupt/SystemExit: stop the workers, then leave no staging files behind.
            _stop(hashing)
            _stop(flushing)
            if os.path.exists(staging):
                library_mod.remove_tree(staging)
            raise
        finally:
            hashing.shutdown(wait=True)
            flushing.shutdown(wait=True)


def _stop(executor):
    """Stop an executor, dropping work not yet started (cancel_futures exists from Python 3.9)."""
    try:
        executor.shutdown(wait=True, cancel_futures=True)
    except TypeError:
        executor.shutdown(wait=True)


def _comparable(record):
    """The fields of a record that a diff shows (no paths that change with every capture)."""
    if not record:
        return {}
    keep = ('name', 'version', 'kind', 'os_type', 'os_state', 'firmware', 'architecture', 'format', 'compression',
            'description', 'tags', 'provenance', 'source', 'fingerprint', 'crash_consistent')
    result = {k: record[k] for k in keep}
    result['disks'] = [{k: d[k] for k in ('role', 'lun', 'format', 'virtual_size', 'sha256', 'source')} for d in record['disks']]
    return result


def _public(planned, library_path):
    """A planned record shaped like a stored one (check mode)."""
    record = dict(planned, captured_at=None, captured_by=socket.getfqdn(), tool_versions={},
                  path=os.path.join(library_path, planned['name'], planned['version'] + '-<id>'))
    record['disks'] = [dict(d, path=os.path.join(record['path'], d.pop('file'))) for d in [dict(x) for x in planned['disks']]]
    return record


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec={
            'name': {'type': 'str', 'required': True},
            'version': {'type': 'str'},
            'state': {'type': 'str', 'choices': ['present', 'absent'], 'default': 'present'},
            'library': {'type': 'path', 'default': '/var/lib/imageprep/images'},
            'disks': {'type': 'list', 'elements': 'raw'},
            'libvirt_domain': {'type': 'str'},
            'libvirt_uri': {'type': 'str', 'default': 'qemu:///system'},
            'file': {'type': 'path'},
            'checksum': {'type': 'str', 'no_log': False},
            'format': {'type': 'str', 'choices': ['qcow2', 'raw', 'vpc', 'vhdx', 'vmdk']},
            'compression': {'type': 'str', 'choices': ['none', 'zlib', 'zstd'], 'default': 'none'},
            'kind': {'type': 'str', 'choices': ['os', 'vm']},
            'os_type': {'type': 'str', 'choices': ['linux', 'windows'], 'default': 'linux'},
            'os_state': {'type': 'str', 'choices': ['generalized', 'specialized'], 'default': 'generalized'},
            'firmware': {'type': 'str', 'choices': ['bios', 'uefi']},
            'architecture': {'type': 'str'},
            'description': {'type': 'str', 'default': ''},
            'tags': {'type': 'dict', 'default': {}},
            'provenance': {'type': 'dict', 'default': {}},
            'force': {'type': 'bool', 'default': False},
            'keep_versions': {'type': 'int'},
        },
        mutually_exclusive=[('disks', 'libvirt_domain', 'file')],
        required_if=[('state', 'present', ('disks', 'libvirt_domain', 'file'), True),
                     ('state', 'absent', ('version',))],
        required_by={'checksum': 'file'},
        supports_check_mode=True,
    )
    if module.params['keep_versions'] is not None and module.params['keep_versions'] < 1:
        module.fail_json(msg='keep_versions must be 1 or more')
    if module.params['library'] and not os.path.isabs(module.params['library']):
        module.fail_json(msg=f"library {module.params['library']!r} must be an absolute path")
    try:
        result = LocalImageManager(module).run()
    except (LocalImageError, library_mod.LibraryError, qemu_img.DiskImageError, libvirt_mod.DomainError) as exc:
        module.fail_json(msg=str(exc))
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg=f'{type(exc).__name__}: {exc}', exception=traceback.format_exc())
    if not module._diff:  # pylint: disable=protected-access
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
