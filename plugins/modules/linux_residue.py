#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: linux_residue
short_description: Remove what makes a Linux system one machine, so that it can become an image
version_added: 0.1.0
description:
  - Removes the residue of a used Linux VM (machine identity, secrets, logs, agent state) in one
    pass, category by category, from the residue catalogue of this collection. The categories,
    their paths per OS family and how each is reset are listed in the collection's
    C(docs/linux-deprovisioning.md).
  - Works on the running system (O(root=/)) or on an offline image root mounted elsewhere
    (O(root=/mnt/image)). Every path is resolved inside the root, so a link in the image never
    leads to the files of the machine running the module.
  - Vendor tools run first, while the state they read is still there - C(cloud-init clean) with
    every flag the installed version has, C(waagent -force -deprovision) (keeping
    C(/etc/resolv.conf)), C(subscription-manager), C(SUSEConnect). On an offline root they run
    inside it with C(chroot), never the copies of this machine.
  - Provisioning accounts are found in the agents' own state (waagent's C(ovf-env.xml),
    cloud-init's sudoers file and instance data) before anything removes it.
  - The account running the play can be removed safely with O(defer_users) and O(final_pass);
    a one-shot unit removes it late in shutdown, together with the logs the system keeps writing
    until then, and removes itself.
  - Through a local connection the module refuses O(root=/) (that would deprovision the
    control node) unless O(allow_control_node=true).
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
    details: The action plugin guards the control node, then runs the module on the target.
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: Lists every item it would remove or reset, and runs no tool.
  diff_mode:
    support: full
    details: Before and after are the paths present per category.
  platform:
    platforms: posix
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: partial
    details: O(zero_free_space=true) fills and trims the free space on every run.
options:
  root:
    description:
      - The root file system to clean. V(/) is the running system; any other absolute path is an
        offline image root (mounted disk, extracted tree).
    type: path
    default: /
  state:
    description: V(absent) removes the residue; the only state.
    type: str
    choices: [absent]
    default: absent
  categories:
    description:
      - Categories to clean. Empty means every category that is on by default (all except
        V(cron_spool) and V(root_password)).
    type: list
    elements: str
    default: []
  exclude:
    description: Categories to leave alone.
    type: list
    elements: str
    default: []
  keep_users:
    description: Accounts whose SSH keys and histories are kept and that are never removed.
    type: list
    elements: str
    default: []
  remove_users:
    description:
      - Accounts to remove with their home, spools, group entries and sudo rules, in addition to
        the provisioning accounts the agents' state names. Root and system accounts (UID < 1000) are refused.
    type: list
    elements: str
    default: []
  defer_users:
    description:
      - Accounts the play itself uses. On a live system their keys and histories and, when they
        are to be removed, the accounts are removed by the final pass at shutdown instead of now
        (needs O(final_pass=true)); on an offline root they are handled at once.
    type: list
    elements: str
    default: []
  final_pass:
    description:
      - On a live system, install a one-shot systemd unit whose stop step runs late in shutdown,
        after SSH, cron, the agents, login accounting and the journal flush have stopped. It
        removes the deferred accounts, truncates the logs written since, removes the journal
        files, the account-database backups, the random seed saved at shutdown, C(~/.ansible)
        and what is in C(/tmp), then removes itself. The O(categories) that the running
        system keeps writing (V(logs)) are then left to it.
      - Ignored on an offline root and in a chroot (nothing shuts down there).
    type: bool
    default: false
  zero_free_space:
    description:
      - After the cleanup, fill the free space of every file system of the root with zeros, then
        discard it (FITRIM), so deleted secrets do not survive in the disk and the image compresses.
    type: bool
    default: false
  allow_control_node:
    description: Allow O(root=/) through a local connection (deprovisions the control node).
    type: bool
    default: false
notes:
  - Needs root privileges (C(become=true)).
  - Check mode lists the items; diff mode shows the paths per category before and after.
  - The role C(imageprep.vm.linux_deprovision) puts this module in order with the agents, the
    first-boot identity, the audit and the power-off, per distribution.
seealso:
  - module: imageprep.vm.linux_residue_info
"""

EXAMPLES = r"""
- name: Remove the residue of the running VM (default categories)
  imageprep.vm.linux_residue:
  become: true

- name: Clean an offline image root, but keep the user crontabs and the app account's keys
  imageprep.vm.linux_residue:
    root: /mnt/image
    exclude: [package_caches]
    keep_users: [app]
  delegate_to: hypervisor.example.com

- name: Remove the account running the play at shutdown, with the logs written until then
  imageprep.vm.linux_residue:
    remove_users: [packer]
    defer_users: [packer]
    final_pass: true
  become: true
"""

RETURN = r"""
removed:
  description: Per category, what was removed or reset (in check mode, what would be).
  returned: always
  type: dict
  sample:
    ssh_host_keys:
      - {path: /etc/ssh/ssh_host_ed25519_key, action: delete}
    machine_id:
      - {path: /etc/machine-id, action: first_boot}
tools:
  description: Vendor tools that ran, with their exit codes.
  returned: always
  type: list
  elements: dict
  sample: [{command: cloud-init clean --logs --seed --machine-id, rc: '0'}]
tools_not_run:
  description:
    - Vendor tools that could not be executed in the root (for example an image of another
      architecture); their categories were reset by files only.
    - Not named C(skipped), which Ansible reserves for a task that did not run.
  returned: always
  type: list
  elements: dict
  sample: [{category: cloud_init_state, reason: "chroot /mnt/image cloud-init clean --help could not run (rc 126): ..."}]
deferred:
  description: Accounts left to the final pass at shutdown.
  returned: always
  type: list
  elements: str
final_pass:
  description: Whether a final pass is installed and pending on the root.
  returned: always
  type: bool
os_family:
  description: The family the catalogue used (debian, redhat, suse, archlinux or generic).
  returned: always
  type: str
distribution:
  description: C(ID) of the root's os-release.
  returned: always
  type: str
zeroed:
  description: Bytes of free space filled with zeros and discarded, per mount point.
  returned: when O(zero_free_space=true)
  type: dict
"""

import errno
import fcntl
import os
import struct
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imageprep.vm.plugins.module_utils import _residue as residue
from ansible_collections.imageprep.vm.plugins.module_utils._rootfs import RootError, RootFS

FITRIM = 0xC0185879


def is_running_system(fs: RootFS) -> bool:
    """Whether ROOT is the root of a system whose PID 1 runs in it (not a chroot, not an offline image)."""
    if not fs.live:
        return False
    try:
        return os.stat('/proc/1/root') == os.stat('/') and os.path.isdir('/run/systemd/system')
    except OSError:
        return False


class LinuxResidue:
    """Plan, then reset, the residue of one root."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.fs = RootFS(params['root'])
        if not os.access(self.fs.host('/etc'), os.W_OK) and not module.check_mode:
            raise residue.ResidueError(f'cannot write to {self.fs.path}/etc: run with root privileges (become: true)')
        self.target = residue.Target(self.fs)
        self.running = is_running_system(self.fs)
        self.final_pass = bool(params['final_pass']) and self.running
        self.options = residue.Options(
            categories=tuple(params['categories']), exclude=tuple(params['exclude']),
            keep_users=tuple(params['keep_users']), remove_users=tuple(params['remove_users']),
            defer_users=tuple(params['defer_users']) if self.running else (), final_pass=self.final_pass)
        both = sorted(set(params['keep_users']) & set(params['remove_users']))
        if both:
            raise residue.ResidueError(f"{', '.join(both)} cannot be in both keep_users and remove_users")
        if params['defer_users'] and self.running and not params['final_pass']:
            raise residue.ResidueError('defer_users needs final_pass=true on a running system: '
                                       'the final pass is what removes the deferred accounts')

    def run(self) -> dict:
        items = residue.plan(self.target, self.options)
        deferred_users = [i.detail.split(':')[0] for i in items if i.action == 'defer']
        final_files = {}
        if self.final_pass:
            accounts_removed = [a.name for a in residue.accounts_to_remove(
                self.target, self.options.remove_users, self.options.keep_users)]
            final_files = residue.final_pass_files(
                self.target, self.options.defer_users, [u for u in accounts_removed if u in self.options.defer_users])
        final_changes = [path for path, data in final_files.items() if self.fs.read_bytes(path) != data]
        if final_files and not self.fs.exists(residue.FINAL_PASS_WANTS):
            final_changes.append(residue.FINAL_PASS_WANTS)
        changed = bool([i for i in items if i.action != 'defer']) or bool(final_changes)
        result = {
            'changed': changed,
            'removed': group(items),
            'tools': [],
            'tools_not_run': [],
            'deferred': deferred_users,
            'final_pass': bool(final_files) or residue.final_pass_marker(self.fs) is not None,
            'os_family': self.target.family,
            'distribution': self.target.distribution,
        }
        if self.module._diff:
            before = {}
            for item in items:
                before.setdefault(item.category, []).append(item.path)
            after = {k: [] for k in before}
            if final_changes:
                after['final_pass'] = sorted(final_changes)
                before['final_pass'] = []
            result['diff'] = {'before': before, 'after': after}
        if self.module.check_mode:
            result['msg'] = f'{len(items)} item(s) would be removed or reset' if changed else 'no residue to remove'
            return result
        done = residue.apply(self.target, self.options, items, self.module.run_command, self.running)
        result['tools'] = done['tools']
        result['tools_not_run'] = done['skipped']
        result['removed'] = group(done['items'])
        if final_files:
            self.install_final_pass(final_files)
        if self.module.params['zero_free_space']:
            result['zeroed'] = self.zero_free_space()
            result['changed'] = True
        return result

    def install_final_pass(self, files: dict) -> None:
        """Write the final pass's unit, script and marker, enable it and start it (its stop step is the pass)."""
        for path, data in files.items():
            self.fs.makedirs(os.path.dirname(path))
            self.fs.write(path, data, mode=0o755 if path == residue.FINAL_PASS_SCRIPT else 0o644)
        self.fs.makedirs(os.path.dirname(residue.FINAL_PASS_WANTS))
        if not self.fs.exists(residue.FINAL_PASS_WANTS):
            self.fs.symlink(residue.FINAL_PASS_UNIT, residue.FINAL_PASS_WANTS)
        for argv in (['systemctl', 'daemon-reload'], ['systemctl', 'start', os.path.basename(residue.FINAL_PASS_UNIT)]):
            rc, out, err = self.module.run_command(argv)
            if rc != 0:
                raise residue.ResidueError(f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()}")

    def zero_free_space(self) -> dict:
        """Fill each file system of the root with zeros until it is full, remove the file, discard the free blocks."""
        points = ['/'] + [p for p in self.fs.mount_points() if not self.fs.foreign(p) and self.fs.is_dir(p)]
        zeroed, done_devices = {}, set()
        for point in points:
            host = self.fs.host(point.rstrip('/') + '/.') if point != '/' else self.fs.path
            device = os.stat(host).st_dev
            if device in done_devices:
                continue
            done_devices.add(device)
            zeroed[point] = fill_with_zeros(host)
            trim(host)
        return zeroed


def fill_with_zeros(directory: str) -> int:
    """Write zeros into a file in DIRECTORY until the file system is full; remove it; return the bytes written."""
    path = os.path.join(directory, f'.imageprep-zero-{os.getpid()}')
    block = b'\0' * (1 << 20)
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        while True:
            try:
                written += os.write(fd, block)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                    break
                raise
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(path)
    return written


def trim(directory: str) -> None:
    """Discard the free blocks of DIRECTORY's file system (FITRIM); file systems without discard are left as they are."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, FITRIM, struct.pack('QQQ', 0, 2 ** 64 - 1, 0))
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EPERM):
            raise
    finally:
        os.close(fd)


def group(items: list) -> dict:
    """Items as {category: [{path, action}]}."""
    grouped: dict = {}
    for item in items:
        entry = {'path': item.path, 'action': item.action}
        if item.detail and item.action not in ('delete',):
            entry['detail'] = item.detail
        grouped.setdefault(item.category, []).append(entry)
    return grouped


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec=dict(
            residue.SELECTION_OPTIONS,
            state={'type': 'str', 'choices': ['absent'], 'default': 'absent'},
            defer_users={'type': 'list', 'elements': 'str', 'default': []},
            final_pass={'type': 'bool', 'default': False, 'no_log': False},
            zero_free_space={'type': 'bool', 'default': False},
            allow_control_node={'type': 'bool', 'default': False},
        ),
        supports_check_mode=True,
    )
    try:
        result = LinuxResidue(module).run()
    except (residue.ResidueError, RootError) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f'{type(exc).__name__}: {exc}', exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
