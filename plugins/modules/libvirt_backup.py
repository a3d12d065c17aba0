#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: libvirt_backup
short_description: Back up a libvirt domain's disks with qcow2 overlays, restore it from them, or drop them
version_added: 0.1.0
description:
  - Takes a restorable backup of every disk of a libvirt domain before its guest is changed (for
    example generalized), and brings the domain back to it when something fails, or drops it.
  - The backup is a set of external qcow2 overlays. The files that were the domain's disks become
    the backup and are no longer written; the guest continues on the overlays, one per disk, named
    C(<disk file stem>.<name>.qcow2) next to each disk (or in O(overlay_dir)). Disks are the
    writable C(device='disk') devices of the domain, each backed by a file; CD-ROMs, floppies and
    read-only disks are left alone. A domain with a writable disk that is not a file is refused.
  - O(state=present) on a running (or paused) domain takes an external disk-only snapshot of all
    disks at one instant (C(virsh snapshot-create-as --disk-only --atomic --no-metadata)); the guest
    keeps running. On a shut-off domain the overlays are created with C(qemu-img create) and the
    domain is defined anew on them. A record (JSON) in O(state_dir) lists the domain, the backup,
    when it was taken, the domain's state then and, per disk, the original file and format and the
    overlay.
  - O(state=restored) B(discards the domain's current state). It destroys the domain if it runs
    (no shutdown; whatever happened since the backup is thrown away), defines it anew on the
    original files (only the source file and driver type of those disks change), deletes the
    overlays and the record, and starts the domain when O(start=true), or when O(start) is not set
    and the domain was not shut off when the backup was taken.
  - O(state=absent) drops the backup and keeps the current state. The domain must be shut off;
    each overlay is committed into its original (C(qemu-img commit)), the domain is defined anew on
    the originals, and the overlays and the record are deleted.
  - Re-runs are safe. A backup that exists, with the domain on its overlays, is not taken again. A
    record whose disks the domain no longer uses (neither the overlays nor the originals) is an
    error, so a domain changed by hand is not overwritten. The record is written (as C(pending))
    before the overlays are made and marked C(done) after; a C(pending) record whose domain is still
    on its original files belongs to a run that died before its snapshot, and is removed with any
    overlay it names. A failure part way leaves no overlay and no record behind.
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
requirements:
  - C(virsh) on the host (Debian/Ubuntu package C(libvirt-clients), RHEL/Fedora C(libvirt-client)).
  - C(qemu-img) on the host (Debian/Ubuntu package C(qemu-utils), RHEL/Fedora C(qemu-img)).
attributes:
  check_mode:
    support: full
    details: Reports what it would do (RV(disks), RV(backup)) without touching the domain, files or record.
  diff_mode:
    support: full
    details: Shows the domain's disk sources and state before and after.
  platform:
    platforms: posix
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
options:
  domain:
    description: Name of the libvirt domain.
    type: str
    required: true
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
  name:
    description:
      - Name of the backup; part of the overlay file names. 1 to 64 letters, digits, V(.), V(_)
        and V(-), starting with a letter or digit.
    type: str
    default: imageprep-backup
  state:
    description:
      - V(present) takes the backup, V(restored) brings the domain back to it (discarding its
        current state), V(absent) drops it and keeps the current state.
    type: str
    choices: [present, restored, absent]
    required: true
  state_dir:
    description: Directory of the backup records (created with mode V(0700)).
    type: path
    default: /var/lib/imageprep/backups
  overlay_dir:
    description:
      - Directory for the overlays, instead of next to each disk. It must exist. Disks with the same
        file name would clash there, which is an error.
    type: path
  start:
    description:
      - With O(state=restored), start the domain afterwards (V(true)) or leave it shut off (V(false)).
      - Not set, the domain is started when it was not shut off at the time of the backup.
    type: bool
notes:
  - The overlays grow with everything the guest writes after the backup; keep room for that next to
    the disks (or in O(overlay_dir)).
  - Written for libvirt 9.0 (Debian 12) and later. libvirt before 9.9 cannot revert to an external
    snapshot itself, and a snapshot without metadata (C(--no-metadata)) is not one libvirt tracks;
    that is why the module restores by defining the domain anew on the original files, and keeps its
    own record.
  - A domain whose running disks differ from its persistent definition (disks hot-plugged without
    C(--config)) is refused.
  - Disks are matched by their target device (C(vda), C(sdb), ...); do not change the domain's disks
    while a backup exists.
seealso:
  - module: imageprep.vm.libvirt_power
  - module: imageprep.vm.local_image
"""

EXAMPLES = r"""
- name: Back up the running VM before it is generalized
  imageprep.vm.libvirt_backup:
    domain: web01
    state: present

- name: Generalize, capture, and restore the VM when anything fails
  block:
    - name: Generalize the guest
      ansible.builtin.include_role:
        name: imageprep.vm.linux_deprovision
  rescue:
    - name: Bring the VM back as it was before (its current state is discarded)
      imageprep.vm.libvirt_backup:
        domain: web01
        state: restored
      delegate_to: hypervisor01

- name: Keep the changes and drop the backup (the domain must be shut off)
  imageprep.vm.libvirt_backup:
    domain: web01
    state: absent

- name: A named backup with its overlays on another file system
  imageprep.vm.libvirt_backup:
    domain: db01
    name: before-upgrade
    overlay_dir: /srv/overlays
    state: present
"""

RETURN = r"""
domain:
  description: The domain.
  returned: always
  type: str
  sample: web01
backup:
  description:
    - The backup record (in check mode, the one that would be written); null when there is none,
      and after O(state=restored) or O(state=absent) the one that was removed.
  returned: always
  type: dict
  contains:
    domain: {description: The domain., type: str}
    uuid: {description: The domain's UUID when the backup was taken., type: str}
    name: {description: The backup name., type: str}
    status: {description: 'V(pending) while the overlays are being made, then V(done).', type: str}
    created: {description: UTC time of the backup., type: str, sample: '2026-11-29T15:20:00Z'}
    state_at_backup: {description: The domain's state when the backup was taken., type: str, sample: running}
    disks:
      description: The disks of the backup.
      type: list
      elements: dict
      contains:
        target: {description: Target device., type: str, sample: vda}
        original: {description: The file that was the disk and is the backup., type: str}
        original_format: {description: Its format., type: str, sample: qcow2}
        overlay: {description: The qcow2 overlay the guest writes into., type: str}
disks:
  description: What was done (or would be done) per disk; the record's disk entries with RV(disks[].action).
  returned: always
  type: list
  elements: dict
  contains:
    action:
      description:
        - V(snapshot) (overlay of a running domain), V(overlay) (overlay of a shut-off domain),
          V(unchanged), V(finished) (a pending record marked done), V(restored), V(committed),
          V(removed) (an unused overlay deleted).
      type: str
domain_state:
  description: The domain's state afterwards (in check mode, the state it would have).
  returned: always
  type: str
  sample: running
destroyed:
  description: True when O(state=restored) destroyed the running domain.
  returned: always
  type: bool
started:
  description: True when O(state=restored) started the domain.
  returned: always
  type: bool
record:
  description: Path of the backup record.
  returned: always
  type: str
msg:
  description: What was done or would be done, and why.
  returned: always
  type: str
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imageprep.vm.plugins.module_utils import _libvirt_domain as libvirt_mod
from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img


class LibvirtBackupError(Exception):
    """The backup cannot be taken, restored or dropped; the message says why."""


class LibvirtBackupManager:
    """Carries out one libvirt_backup task."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.check_mode = module.check_mode
        self.path = None
        self.discarded = set()
        self.result = {'changed': False, 'domain': self.params['domain'], 'backup': None, 'disks': [], 'destroyed': False,
                       'started': False, 'msg': ''}

    # -- virsh and the domain ------------------------------------------------------------
    def virsh(self, *args):
        """Run virsh against the task's URI."""
        return libvirt_mod.run_virsh(self.module.run_command, self.params['uri'], list(args))

    def state(self):
        """Return the domain's current state."""
        return libvirt_mod.domain_state(self.module.run_command, self.params['uri'], self.params['domain'])

    def definitions(self, state):
        """Return (persistent definition, disk sources of the persistent and the live definition)."""
        return libvirt_mod.definitions(self.module.run_command, self.params['uri'], self.params['domain'], state)

    # -- the task ------------------------------------------------------------------------
    def run(self):
        """Do the task and return the result dict."""
        params = self.params
        problem = libvirt_mod.backup_name_problem(params['name'])
        if problem:
            raise LibvirtBackupError(problem)
        if not os.path.isabs(params['state_dir']):
            raise LibvirtBackupError(f"state_dir {params['state_dir']!r} must be an absolute path")
        if params['overlay_dir'] and not os.path.isdir(params['overlay_dir']):
            raise LibvirtBackupError(f"overlay_dir {params['overlay_dir']} is not an existing directory")
        state = self.state()
        uuid = libvirt_mod.domain_uuid(self.module.run_command, params['uri'], params['domain'])
        self.path = libvirt_mod.record_path(params['state_dir'], params['domain'], params['name'])
        self.result['record'] = self.path
        record = libvirt_mod.read_record(self.path)
        if record is not None and (record['domain'], record['name']) != (params['domain'], params['name']):
            raise LibvirtBackupError(f"the record {self.path} is of backup {record['name']} of {record['domain']}, not of this one")
        if record is not None and record.get('uuid') not in (None, uuid):
            raise LibvirtBackupError(f"{params['domain']} was defined anew since backup {params['name']} was taken (UUID "
                                     f"{record['uuid']}, now {uuid}); check the domain and the record {self.path} by hand")
        inactive, sources = self.definitions(state)
        status = libvirt_mod.backup_status(record['disks'], sources) if record else None
        decision = libvirt_mod.backup_decision(params['state'], record, status)
        self.result['domain_state'] = state
        self.result['diff'] = {'before': {'disks': sources[-1], 'state': state}, 'after': {'disks': dict(sources[-1]), 'state': state}}
        if decision in ('nothing', 'unchanged'):
            self.result['backup'] = record
            self.result['disks'] = [dict(entry, action='unchanged') for entry in (record or {}).get('disks', [])]
            self.result['msg'] = (f"backup {params['name']} of {params['domain']} exists and the domain runs on its overlays"
                                  if record else f"{params['domain']} has no backup {params['name']}: nothing to do")
            return self.result
        self.result['changed'] = True
        if decision == 'finish':
            return self.finish(record)
        if decision == 'discard':
            self.discard(record)
            if params['state'] != 'present':
                return self.result
            state = self.state()
            inactive, sources = self.definitions(state)
        if decision in ('create', 'discard'):
            return self.create(state, uuid, inactive, sources)
        if decision == 'commit':
            return self.commit(record, state)
        return self.restore(record, state, decision)

    def _after(self, entries, key, state=None):
        """Set the predicted diff 'after': the entries' disks on KEY (overlay or original)."""
        for entry in entries:
            self.result['diff']['after']['disks'][entry['target']] = entry[key]
        if state is not None:
            self.result['diff']['after']['state'] = state
            self.result['domain_state'] = state

    def finish(self, record):
        """A pending record whose snapshot happened: mark it done."""
        record = dict(record, status=libvirt_mod.DONE)
        if not self.check_mode:
            libvirt_mod.write_record(self.path, record)
        self.result.update(backup=record, disks=[dict(e, action='finished') for e in record['disks']],
                           msg=f"{'would mark' if self.check_mode else 'marked'} backup {record['name']} done: the domain runs on its "
                               'overlays, but the run that took it ended before recording that')
        return self.result

    def discard(self, record):
        """A pending record whose snapshot never happened: remove the overlays it names (unused) and the record."""
        overlays = [entry['overlay'] for entry in record['disks']]
        if self.check_mode:
            removed = [path for path in overlays if os.path.lexists(path)]
        else:
            removed = libvirt_mod.remove_files(overlays)
            libvirt_mod.remove_record(self.path)
        self.discarded.update(overlays)
        self.result['disks'] = [dict(entry, action='removed') for entry in record['disks'] if entry['overlay'] in removed]
        self.result['backup'] = record
        self.result['msg'] = (f"{'would remove' if self.check_mode else 'removed'} the pending record of backup {record['name']} "
                              f"(its snapshot never happened: the domain is on its original files) and {len(removed)} unused overlay(s)")

    # -- state=present -------------------------------------------------------------------
    def create(self, state, uuid, inactive, sources):
        """Take the backup: record (pending), overlays, record (done)."""
        params = self.params
        disks, skipped = libvirt_mod.backup_disks(inactive)
        if state != libvirt_mod.SHUT_OFF:
            live = libvirt_mod.backup_disks(self.virsh('dumpxml', params['domain']))[0]
            if [(d['target'], d['path']) for d in live] != [(d['target'], d['path']) for d in disks]:
                raise LibvirtBackupError(f"the running domain's disks ({', '.join(d['target'] + '=' + d['path'] for d in live)}) differ "
                                         'from its persistent definition (hot-plugged disks?); make them agree first')
        for disk in disks:
            if not os.path.exists(disk['path']):
                raise LibvirtBackupError(f"disk {disk['target']} of {params['domain']}, {disk['path']}, does not exist")
            if not disk['format']:
                disk['format'] = libvirt_mod.detect_format(self.module.run_command, disk['path'])
        entries = libvirt_mod.plan_backup(disks, params['name'], params['overlay_dir'])
        for entry in entries:
            # in check mode, a discarded pending record's leftovers are still there
            if os.path.lexists(entry['overlay']) and entry['overlay'] not in self.discarded:
                raise LibvirtBackupError(f"the overlay {entry['overlay']} of disk {entry['target']} exists already (a leftover, or "
                                         'another backup of that name?); remove it or choose another name')
        live_snapshot = state != libvirt_mod.SHUT_OFF
        record = {'version': libvirt_mod.RECORD_VERSION, 'domain': params['domain'], 'uuid': uuid, 'name': params['name'],
                  'uri': params['uri'], 'status': libvirt_mod.PENDING, 'created': libvirt_mod.utc_now(), 'state_at_backup': state,
                  'disks': entries}
        action = 'snapshot' if live_snapshot else 'overlay'
        self.result['disks'] = [dict(entry, action=action) for entry in entries]
        self._after(entries, 'overlay')
        how = 'an external snapshot of the running domain' if live_snapshot else 'qemu-img overlays of the shut-off domain'
        if self.check_mode:
            self.result.update(backup=dict(record, status=libvirt_mod.DONE),
                               msg=f"would back up {len(entries)} disk(s) of {params['domain']} with {how}")
            return self.result
        libvirt_mod.write_record(self.path, record)
        try:
            if live_snapshot:
                self.virsh(*libvirt_mod.snapshot_args(params['domain'], params['name'], entries, skipped))
            else:
                for entry in entries:
                    libvirt_mod.create_overlay(self.module.run_command, entry)
                libvirt_mod.define(self.module.run_command, params['uri'], libvirt_mod.with_overlays(inactive, entries))
        except BaseException as exc:
            self._undo_create(record, exc)
            raise
        status = libvirt_mod.backup_status(entries, self.definitions(self.state())[1])
        if status != 'overlays':
            raise LibvirtBackupError(f"after the backup, {params['domain']} does not run on the overlays ({status}); the record "
                                     f'{self.path} stays pending: check the domain by hand')
        record['status'] = libvirt_mod.DONE
        libvirt_mod.write_record(self.path, record)
        self.result.update(backup=record, msg=f"backed up {len(entries)} disk(s) of {params['domain']} with {how}")
        return self.result

    def _undo_create(self, record, exc):
        """After a failed snapshot or define: remove the overlays (none existed before) and the record, unless the domain uses them."""
        try:
            status = libvirt_mod.backup_status(record['disks'], self.definitions(self.state())[1])
        except libvirt_mod.DomainError:
            return  # the domain cannot be read: keep the pending record, the next run sorts it out
        if status == 'originals':
            libvirt_mod.remove_files(entry['overlay'] for entry in record['disks'])
            libvirt_mod.remove_record(self.path)
            if isinstance(exc, Exception):
                exc.args = (f'{exc} (nothing was kept: no overlay, no record)',) + exc.args[1:]

    # -- state=restored ------------------------------------------------------------------
    def restore(self, record, state, decision):
        """Bring the domain back to the originals (RESTORE) or, already there (CLEANUP), remove what is left."""
        params = self.params
        entries = record['disks']
        if decision == 'restore':
            missing = [entry['original'] for entry in entries if not os.path.exists(entry['original'])]
            if missing:
                raise LibvirtBackupError(f"cannot restore {params['domain']}: the backup's file(s) {', '.join(missing)} are gone")
        start = params['start'] if params['start'] is not None else record['state_at_backup'] != libvirt_mod.SHUT_OFF
        destroy = decision == 'restore' and state != libvirt_mod.SHUT_OFF
        start = start and (destroy or state == libvirt_mod.SHUT_OFF)
        after = 'running' if start else (libvirt_mod.SHUT_OFF if destroy else state)
        self.result['disks'] = [dict(entry, action='restored' if decision == 'restore' else 'removed') for entry in entries]
        self.result.update(backup=record, destroyed=destroy, started=start)
        self._after(entries, 'original', after)
        steps = (['destroy the running domain (its current state is discarded)'] if destroy else []) + (
            ['define it on the original files'] if decision == 'restore' else []) + [
            'delete the overlays and the record'] + (['start it'] if start else [])
        if self.check_mode:
            self.result['msg'] = f"would restore backup {params['name']} of {params['domain']}: " + ', '.join(steps)
            return self.result
        if destroy:
            self.virsh('destroy', params['domain'])
        if decision == 'restore':
            inactive = self.virsh('dumpxml', '--inactive', params['domain'])
            libvirt_mod.define(self.module.run_command, params['uri'], libvirt_mod.with_originals(inactive, entries))
        libvirt_mod.remove_files(entry['overlay'] for entry in entries)
        libvirt_mod.remove_record(self.path)
        if start:
            self.virsh('start', params['domain'])
        self.result['domain_state'] = self.state()
        self.result['msg'] = f"restored backup {params['name']} of {params['domain']}: " + ', '.join(steps)
        return self.result

    # -- state=absent --------------------------------------------------------------------
    def commit(self, record, state):
        """Drop the backup, keeping the current state: commit each overlay into its original."""
        params = self.params
        if state != libvirt_mod.SHUT_OFF:
            raise LibvirtBackupError(f"{params['domain']} is {state}: dropping backup {params['name']} commits the overlays into the "
                                     'original files, which needs the domain shut off (imageprep.vm.libvirt_power state=shutoff)')
        entries = record['disks']
        self.result['disks'] = [dict(entry, action='committed') for entry in entries]
        self.result['backup'] = record
        self._after(entries, 'original')
        if self.check_mode:
            self.result['msg'] = f"would commit {len(entries)} overlay(s) of {params['domain']} into the original files and drop backup {params['name']}"
            return self.result
        for entry in entries:
            libvirt_mod.commit_overlay(self.module.run_command, entry)
        inactive = self.virsh('dumpxml', '--inactive', params['domain'])
        libvirt_mod.define(self.module.run_command, params['uri'], libvirt_mod.with_originals(inactive, entries))
        libvirt_mod.remove_files(entry['overlay'] for entry in entries)
        libvirt_mod.remove_record(self.path)
        self.result['msg'] = f"committed {len(entries)} overlay(s) of {params['domain']} into the original files and dropped backup {params['name']}"
        return self.result


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec={
            'domain': {'type': 'str', 'required': True},
            'uri': {'type': 'str', 'default': 'qemu:///system'},
            'name': {'type': 'str', 'default': 'imageprep-backup'},
            'state': {'type': 'str', 'choices': ['present', 'restored', 'absent'], 'required': True},
            'state_dir': {'type': 'path', 'default': '/var/lib/imageprep/backups'},
            'overlay_dir': {'type': 'path'},
            'start': {'type': 'bool'},
        },
        supports_check_mode=True,
    )
    for program, packages in (('virsh', 'libvirt-clients, RHEL/Fedora: libvirt-client'), ('qemu-img', 'qemu-utils, RHEL/Fedora: qemu-img')):
        if not module.get_bin_path(program):
            module.fail_json(msg=f'{program} is not installed on this host (Debian/Ubuntu: {packages})')
    try:
        result = LibvirtBackupManager(module).run()
    except (LibvirtBackupError, libvirt_mod.DomainError, qemu_img.DiskImageError) as exc:
        module.fail_json(msg=str(exc), domain=module.params['domain'])
    except OSError as exc:
        module.fail_json(msg=f'{type(exc).__name__}: {exc}', domain=module.params['domain'], exception=traceback.format_exc())
    if not module._diff:  # pylint: disable=protected-access
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
