#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: libvirt_clone
short_description: Boot a throw-away libvirt clone of an image's disks, or remove it
version_added: 0.1.0
description:
  - Boots a throw-away clone of an image as a libvirt domain, to verify the image (it comes up,
    it has a new identity, it passes an audit), and removes it afterwards.
  - The image files are never written. Each gets a qcow2 overlay in O(workdir) that the clone
    boots from; the first image is the OS disk (C(vda)), the others are data disks (C(vdb), ...).
  - The definition is copied from a O(template) domain (firmware and loader, machine, memory,
    vCPUs, CPU, features, clock, controllers, video, TPM) without what would make the clone meet
    its source. Removed are the UUID, the generation id (a new one is made), SMBIOS serial numbers,
    every disk and NIC (with its MAC address), graphics (and the SPICE channels that need
    them), host devices, shared directories and memory, lock leases, the serial console, the
    boot order, the NVRAM file path (the clone gets a fresh variable store from the template file,
    or libvirt's default for its loader) and user-mode NICs passed to QEMU in
    C(<qemu:commandline>). Without a template the clone is a minimal x86_64 domain (machine C(pc)).
  - The clone's serial console is logged to C(console.log) in O(workdir).
  - With O(ssh_port), the clone gets one NIC, on QEMU's user-mode network with C(restrict=on). It
    reaches no real network, and nothing reaches it except the host's C(127.0.0.1:ssh_port),
    forwarded to the guest's port 22. A clone never meets its source on the network.
    libvirt 9.0 forwards ports of user-mode NICs only with passt, so the NIC is passed to QEMU
    through C(<qemu:commandline>).
  - Every clone carries a mark in its C(<metadata>) (C(<imageprep:clone>), namespace
    C(https://imageprep.vm/clone/1)) that records its images, overlays and settings. A domain
    without the mark is never managed or removed. A clone that exists with other settings
    or images is an error; remove it first (O(state=absent)).
  - A run that fails part way (the definition refused, the start failed) removes the domain, the
    overlays and the work directory it made. When the start fails, the error carries the tail of
    libvirt's QEMU log for the domain.
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
requirements:
  - C(virsh) (Debian/Ubuntu package C(libvirt-clients), RHEL/Fedora C(libvirt-client)) and a libvirt
    daemon with the QEMU driver on the host the module runs on.
  - C(qemu-img) (Debian/Ubuntu package C(qemu-utils), RHEL/Fedora C(qemu-img)).
  - For O(firmware=uefi), OVMF with its firmware descriptors (Debian/Ubuntu package C(ovmf),
    RHEL/Fedora C(edk2-ovmf)).
attributes:
  check_mode:
    support: full
    details: Reports the definition it would use (RV(xml)) and the overlays it would make, without making anything.
  diff_mode:
    support: full
    details: Shows the clone (images, overlays, port, state) before and after.
  platform:
    platforms: posix
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
    details:
      - A clone that exists, runs, and boots from the overlays on the same images is left alone.
        A clone that is shut off or paused is started or resumed (a change), on the overlays it already has.
options:
  name:
    description:
      - Name of the clone's domain. 1 to 64 letters, digits, V(.), V(_) and V(-), starting with a
        letter or digit.
    type: str
    required: true
  state:
    description:
      - V(running) defines the clone (persistent) and starts it.
      - V(absent) stops the clone at once (no guest shutdown, the clone is thrown away), undefines it
        with its UEFI variable store, and removes its overlays.
    type: str
    choices: [running, absent]
    default: running
  disks:
    description:
      - Image files to boot the clone from, as absolute paths. The first is the OS disk (C(vda)); the others
        are data disks (C(vdb), C(vdc), ...). Their formats are detected (qcow2, raw, VHD, VHDX, VMDK).
      - The files are only read. An image that a running VM writes to is refused.
      - Required with O(state=running).
    type: list
    elements: path
  template:
    description:
      - An existing domain whose definition the clone copies, without its identity, disks, NICs
        and graphics (see the description). It may be running. Its persistent definition is used.
    type: str
  ssh_port:
    description:
      - A port on the host's C(127.0.0.1) forwarded to the clone's port 22, on an isolated
        user-mode NIC. It must be free. Without it the clone has no NIC.
    type: int
  workdir:
    description:
      - Directory of the clone's overlays (V(vda.qcow2), ...) and console log. Made when missing.
        Defaults to C(/var/lib/imageprep/clones/NAME).
      - O(state=absent) removes the overlays and the console log, and the directory when it is
        then empty; nothing else in it is touched.
    type: path
  uri:
    description: libvirt connection URI of the local hypervisor.
    type: str
    default: qemu:///system
  memory_mib:
    description: Memory of the clone in MiB. Defaults to the template's, or 1024 without a template.
    type: int
  vcpus:
    description: Virtual CPUs of the clone. Defaults to the template's, or 1 without a template.
    type: int
  firmware:
    description:
      - Firmware of a clone without a template. V(uefi) lets libvirt choose OVMF from the
        firmware descriptors installed with it, without Secure Boot, with a fresh variable store.
      - Defaults to V(bios). With O(template), the firmware is the template's.
    type: str
    choices: [bios, uefi]
  domain_type:
    description:
      - libvirt domain type. V(kvm) needs a working KVM; V(qemu) runs under TCG (emulation). Under
        V(qemu), a template's C(host-passthrough) or C(host-model) CPU becomes QEMU's C(maximum) model.
      - Defaults to the template's, or V(qemu) without a template.
    type: str
    choices: [qemu, kvm]
  run_as_root:
    description:
      - V(true) runs the clone's QEMU as root and makes libvirt relabel no file (C(<seclabel
        type='static' model='dac' relabel='no'>)). The images may then sit in root-only directories,
        such as the local image library, and their owner never changes.
      - V(false) keeps the template's security labels, or libvirt's default, so QEMU runs as libvirt's
        unprivileged user. libvirt then changes the owner of the overlays and the images while the
        clone runs, and every directory on their paths must be searchable by that user.
    type: bool
    default: true
  keep_logs:
    description:
      - With O(state=absent), keep the clone's console log in O(workdir), and a copy of libvirt's QEMU
        log for the domain next to it (V(qemu.log)), for a look after a failed verification.
    type: bool
    default: false
notes:
  - The module runs on the hypervisor host; O(uri) must be a local connection, because the overlays
    are local files.
  - The overlays and the UEFI variable store are the only files written. The clone's guest writes
    to its overlays.
  - A clone made by an interrupted run (killed between making its overlays and defining it) leaves
    its overlays in O(workdir). A new clone refuses to overwrite them; remove them by hand.
seealso:
  - module: imageprep.vm.local_image
"""

EXAMPLES = r"""
- name: Boot a throw-away clone of the new image, with the source VM's hardware
  imageprep.vm.libvirt_clone:
    name: verify-debian12-web
    disks: "{{ image.image.disks | map(attribute='path') | list }}"
    template: web01
    ssh_port: 22022
  register: clone

- name: Wait for its SSH server
  ansible.builtin.wait_for:
    host: 127.0.0.1
    port: "{{ clone.ssh_port }}"
    search_regex: OpenSSH
    timeout: 600

- name: Remove the clone, keeping its console log
  imageprep.vm.libvirt_clone:
    name: verify-debian12-web
    state: absent
    keep_logs: true

- name: A UEFI clone without a template, under TCG, with 2 GiB of memory
  imageprep.vm.libvirt_clone:
    name: verify-appliance
    disks: [/var/lib/imageprep/images/appliance/1.0.0-1/appliance-1.0.0-os.qcow2]
    firmware: uefi
    memory_mib: 2048
    domain_type: qemu
"""

RETURN = r"""
domain:
  description: Name of the clone's domain.
  returned: always
  type: str
  sample: verify-debian12-web
disks:
  description: The clone's disks, OS disk first (with O(state=absent), the disks it had).
  returned: always
  type: list
  elements: dict
  contains:
    target: {description: Guest device., type: str, sample: vda}
    image: {description: The image file the overlay is on (only read)., type: str}
    format: {description: Format the image is read as., type: str, sample: qcow2}
    overlay: {description: The qcow2 overlay the clone writes to., type: str, sample: /var/lib/imageprep/clones/verify-debian12-web/vda.qcow2}
ssh_port:
  description: Port on the host's 127.0.0.1 forwarded to the clone's port 22; null without a NIC.
  returned: always
  type: int
  sample: 22022
console_log:
  description: File with the clone's serial console output; with O(state=absent), null unless O(keep_logs=true) kept it.
  returned: always
  type: str
  sample: /var/lib/imageprep/clones/verify-debian12-web/console.log
xml:
  description:
    - The clone's definition as libvirt holds it (in check mode, the one that would be defined; with
      O(state=absent), the one removed). Empty when there is no clone.
  returned: always
  type: str
removed:
  description: Files removed by O(state=absent) (overlays, console log).
  returned: always
  type: list
  elements: str
msg:
  description: What was done or would be done, and why.
  returned: always
  type: str
"""

import os
import shutil
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imageprep.vm.plugins.module_utils import _libvirt_clone as clone_mod
from ansible_collections.imageprep.vm.plugins.module_utils import _libvirt_domain as libvirt_mod
from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img

DEFAULT_CLONES_DIR = '/var/lib/imageprep/clones'
MAX_PORT = 65535


class LibvirtCloneManager:
    """Carries out one libvirt_clone task."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.name = self.params['name']
        self.workdir = self.params['workdir'] or os.path.join(DEFAULT_CLONES_DIR, self.name)
        self.wanted = clone_mod.settings(dict(self.params, workdir=self.workdir))
        self.result = {'changed': False, 'domain': self.name, 'disks': [], 'ssh_port': None, 'console_log': None,
                       'xml': '', 'removed': [], 'msg': ''}

    def virsh(self, args):
        """Run virsh on O(uri) and return its output; raise DomainError on failure."""
        return libvirt_mod.run_virsh(self.module.run_command, self.params['uri'], args)

    def run(self):
        """Do the task and return the result dict."""
        problem = clone_mod.name_problem(self.name)
        if problem:
            raise clone_mod.CloneError(problem)
        if not self.module.get_bin_path('virsh'):
            raise clone_mod.CloneError('virsh is not installed on this host (Debian/Ubuntu: libvirt-clients, RHEL/Fedora: libvirt-client)')
        xml = mark = None
        if self.name in clone_mod.domain_names(self.virsh):
            xml = self.virsh(['dumpxml', '--inactive', self.name])
            mark = clone_mod.read_mark(xml)
            if mark is None:
                raise clone_mod.CloneError(
                    f'domain {self.name} exists and was not made by imageprep.vm.libvirt_clone (its metadata has no '
                    f'imageprep:clone mark); refusing to manage or remove it: choose another name')
        if self.params['state'] == 'absent':
            return self.absent(xml, mark)
        if mark is not None:
            return self.existing(xml, mark)
        return self.create()

    # -- what the diff and the result show -------------------------------------------------
    def info(self, disks, console_log, ssh_port, state):
        """The normalised view of a clone that the diff compares."""
        return {'domain': self.name, 'state': state, 'disks': disks, 'ssh_port': ssh_port, 'console_log': console_log}

    def state(self):
        """The domain's state as virsh prints it."""
        return libvirt_mod.domain_state(self.module.run_command, self.params['uri'], self.name)

    # -- state=running, the clone exists -----------------------------------------------------
    def existing(self, xml, mark):
        """Leave a running clone alone, start or resume a stopped one; refuse one made otherwise."""
        found = clone_mod.differences(mark, self.wanted, self.params['disks'])
        if found:
            raise clone_mod.CloneError(f"domain {self.name} is a clone made with other settings ({'; '.join(found)}); "
                                       'remove it first (state=absent) to make a new one')
        overlays = [disk['overlay'] for disk in mark['disks']]
        try:
            current = [disk['path'] for disk in libvirt_mod.parse_domain_xml(xml)['disks']]
        except libvirt_mod.DomainError as exc:
            raise clone_mod.CloneError(f'domain {self.name} no longer has the disks it was made with: {exc}; remove it first (state=absent)') from exc
        if sorted(current) != sorted(overlays):
            raise clone_mod.CloneError(f'domain {self.name} no longer boots from its overlays {overlays} but from {current}; '
                                       'remove it first (state=absent)')
        for disk in mark['disks']:
            if not os.path.exists(disk['overlay']):
                raise clone_mod.CloneError(f"the overlay {disk['overlay']} of domain {self.name} is gone; remove the clone (state=absent)")
            backing = clone_mod.overlay_backing(self.module.run_command, disk['overlay'])
            if backing != disk['image']:
                raise clone_mod.CloneError(f"the overlay {disk['overlay']} of domain {self.name} is on {backing}, not on "
                                           f"{disk['image']}; remove the clone (state=absent)")
        state = self.state()
        self.result.update(disks=mark['disks'], ssh_port=mark['ssh_port'], console_log=mark['console_log'], xml=xml)
        before = self.info(mark['disks'], mark['console_log'], mark['ssh_port'], state)
        self.result['diff'] = {'before': before, 'after': dict(before, state='running')}
        if state == 'running':
            self.result['msg'] = f'{self.name} runs on overlays of the same images'
            return self.result
        if state not in ('shut off', 'crashed', 'paused'):
            raise clone_mod.CloneError(f'domain {self.name} is {state}; wait until it is running or shut off, or remove it (state=absent)')
        self.result['changed'] = True
        verb = 'resume' if state == 'paused' else 'start'
        if self.module.check_mode:
            self.result['msg'] = f'would {verb} {self.name} (it is {state}) on the overlays it has'
            return self.result
        if verb == 'resume':
            self.virsh(['resume', self.name])
        else:
            self.check_port()
            self.start(undo=None)
        self.result['msg'] = f"{verb}{'d' if verb == 'resume' else 'ed'} {self.name} (it was {state}) on the overlays it has"
        return self.result

    # -- state=running, a new clone -----------------------------------------------------------
    def create(self):
        """Make the overlays, define the clone and start it; undo what was made on failure."""
        params = self.params
        if params['template'] == self.name:
            raise clone_mod.CloneError('template and name are the same domain: a clone needs a name of its own')
        if not self.module.get_bin_path('qemu-img'):
            raise clone_mod.CloneError('qemu-img is not installed on this host (Debian/Ubuntu: qemu-utils, RHEL/Fedora: qemu-img)')
        images = []
        for path in params['disks']:
            problem = clone_mod.image_problem(path)
            if problem:
                raise clone_mod.CloneError(problem)
            images.append({'path': path, 'format': clone_mod.image_format(self.module.run_command, path)})
        disks = clone_mod.plan_disks(images, self.workdir)
        for disk in disks:
            if os.path.lexists(disk['overlay']):
                raise clone_mod.CloneError(f"{disk['overlay']} exists already (another clone uses {self.workdir}, or an interrupted run "
                                           'left it); remove it or choose another workdir')
        self.check_port()
        template_xml = None
        if params['template']:
            try:
                template_xml = self.virsh(['dumpxml', '--inactive', params['template']])
            except libvirt_mod.DomainError as exc:
                raise clone_mod.CloneError(f"cannot read the template domain {params['template']}: {exc}") from exc
        console_log = os.path.join(self.workdir, clone_mod.CONSOLE_LOG)
        xml = clone_mod.clone_xml({'name': self.name, 'disks': disks, 'console_log': console_log, 'settings': self.wanted},
                                  template_xml)
        self.result.update(changed=True, disks=disks, ssh_port=params['ssh_port'], console_log=console_log, xml=xml)
        self.result['diff'] = {'before': {}, 'after': self.info(disks, console_log, params['ssh_port'], 'running')}
        if self.module.check_mode:
            self.result['msg'] = f'would make {len(disks)} overlay(s) in {self.workdir}, define {self.name} and start it'
            return self.result

        made = {'dirs': [], 'files': [], 'defined': False}
        try:
            made['dirs'] = self.make_dirs(self.workdir)
            for disk in disks:
                made['files'].append(disk['overlay'])
                clone_mod.create_overlay(self.module.run_command, disk['image'], disk['format'], disk['overlay'])
            self.define(xml)
            made['defined'] = True
        except BaseException:
            self.undo(made)
            raise
        self.start(undo=made)
        self.result['xml'] = self.virsh(['dumpxml', '--inactive', self.name])
        self.result['msg'] = f'defined {self.name} on {len(disks)} overlay(s) in {self.workdir} and started it'
        return self.result

    def make_dirs(self, path):
        """Make PATH and its missing parents; return the directories made, deepest last."""
        missing = []
        while not os.path.isdir(path):
            missing.append(path)
            path = os.path.dirname(path)
        mode = 0o700 if self.params['run_as_root'] else 0o711
        for directory in reversed(missing):
            os.mkdir(directory, mode)
        return list(reversed(missing))

    def define(self, xml):
        """Define the domain from XML (written to a file in the work directory for virsh)."""
        handle, path = tempfile.mkstemp(prefix='.define-', suffix='.xml', dir=self.workdir)
        try:
            with os.fdopen(handle, 'w', encoding='utf-8') as output:
                output.write(xml)
            try:
                self.virsh(['define', path])
            except libvirt_mod.DomainError as exc:
                raise clone_mod.CloneError(f'libvirt refused the definition of {self.name}: {exc}') from exc
        finally:
            os.unlink(path)

    def check_port(self):
        """Refuse a forwarded port that something already listens on."""
        port = self.params['ssh_port']
        if port and clone_mod.port_in_use(port):
            raise clone_mod.CloneError(f'port {port} on 127.0.0.1 is in use already; choose a free ssh_port')

    def start(self, undo):
        """Start the domain; on failure undo UNDO (what this run made) and raise with QEMU's log tail."""
        log = clone_mod.qemu_log_path(self.params['uri'], self.name)
        offset = clone_mod.file_size(log)
        try:
            self.virsh(['start', self.name])
        except libvirt_mod.DomainError as exc:
            tail = clone_mod.log_tail(log, offset=offset) or '(nothing new in it)'
            if undo is not None:
                self.undo(undo)
            removed = '; the domain, its overlays and its work directory were removed' if undo is not None else ''
            raise clone_mod.CloneError(f'{self.name} did not start: {exc}{removed}\n--- QEMU log ({log}) ---\n{tail}') from exc

    def undo(self, made):
        """Remove what a failed run made: the definition, the overlays, the console log, the directories."""
        if made['defined']:
            try:
                self.virsh(['undefine', self.name] + list(clone_mod.UNDEFINE_OPTIONS))
            except libvirt_mod.DomainError as exc:
                self.module.warn(f'could not undefine {self.name} after the failure: {exc}')
        for path in made['files'] + [os.path.join(self.workdir, clone_mod.CONSOLE_LOG)]:
            if os.path.lexists(path):
                os.unlink(path)
        for directory in reversed(made['dirs']):
            try:
                os.rmdir(directory)
            except OSError:
                break

    # -- state=absent ------------------------------------------------------------------------------
    def absent(self, xml, mark):
        """Stop and undefine a clone, remove its overlays (and its logs unless kept)."""
        if mark is None:
            self.result['msg'] = f'no domain {self.name}, nothing to remove'
            self.result['diff'] = {'before': {}, 'after': {}}
            return self.result
        state = self.state()
        keep = self.params['keep_logs']
        self.result.update(changed=True, disks=mark['disks'], ssh_port=mark['ssh_port'], xml=xml,
                           console_log=mark['console_log'] if keep else None)
        self.result['diff'] = {'before': self.info(mark['disks'], mark['console_log'], mark['ssh_port'], state), 'after': {}}
        doomed = [disk['overlay'] for disk in mark['disks']] + ([] if keep else [mark['console_log']])
        if self.module.check_mode:
            self.result['removed'] = [path for path in doomed if os.path.lexists(path)]
            self.result['msg'] = f'would stop ({state}) and undefine {self.name} and remove its overlays'
            return self.result
        if state != 'shut off':
            self.virsh(['destroy', self.name])
        self.virsh(['undefine', self.name] + list(clone_mod.UNDEFINE_OPTIONS))
        workdir = mark['workdir'] or os.path.dirname(mark['console_log'])
        if keep and os.path.isdir(workdir):
            log = clone_mod.qemu_log_path(self.params['uri'], self.name)
            if os.path.exists(log):
                shutil.copyfile(log, os.path.join(workdir, clone_mod.QEMU_LOG_COPY))
        for path in doomed:
            if os.path.lexists(path):
                os.unlink(path)
                self.result['removed'].append(path)
        if os.path.isdir(workdir) and not os.listdir(workdir):
            os.rmdir(workdir)
        self.result['msg'] = f"stopped ({state}) and undefined {self.name}, removed {len(self.result['removed'])} file(s)"
        return self.result


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec={
            'name': {'type': 'str', 'required': True},
            'state': {'type': 'str', 'choices': ['running', 'absent'], 'default': 'running'},
            'disks': {'type': 'list', 'elements': 'path'},
            'template': {'type': 'str'},
            'ssh_port': {'type': 'int'},
            'workdir': {'type': 'path'},
            'uri': {'type': 'str', 'default': 'qemu:///system'},
            'memory_mib': {'type': 'int'},
            'vcpus': {'type': 'int'},
            'firmware': {'type': 'str', 'choices': ['bios', 'uefi']},
            'domain_type': {'type': 'str', 'choices': ['qemu', 'kvm']},
            'run_as_root': {'type': 'bool', 'default': True},
            'keep_logs': {'type': 'bool', 'default': False},
        },
        mutually_exclusive=[('template', 'firmware')],
        required_if=[('state', 'running', ('disks',))],
        supports_check_mode=True,
    )
    params = module.params
    if params['state'] == 'running' and not params['disks']:
        module.fail_json(msg='disks is empty: give at least the image of the OS disk')
    if params['ssh_port'] is not None and not 1 <= params['ssh_port'] <= MAX_PORT:
        module.fail_json(msg=f"ssh_port {params['ssh_port']} is out of range 1-{MAX_PORT}")
    for option in ('memory_mib', 'vcpus'):
        if params[option] is not None and params[option] < 1:
            module.fail_json(msg=f'{option} must be 1 or more, not {params[option]}')
    if params['workdir'] and not os.path.isabs(params['workdir']):
        module.fail_json(msg=f"workdir {params['workdir']!r} must be an absolute path")
    # virsh's states are parsed
    module.run_command_environ_update = {'LC_ALL': 'C'}
    try:
        result = LibvirtCloneManager(module).run()
    except (clone_mod.CloneError, libvirt_mod.DomainError, qemu_img.DiskImageError) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f'{type(exc).__name__}: {exc}', exception=traceback.format_exc())
    if not module._diff:  # pylint: disable=protected-access
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
