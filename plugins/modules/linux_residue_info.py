#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: linux_residue_info
short_description: Audit a Linux system or an offline image root for machine identity, secrets and logs
version_added: 0.1.0
description:
  - The proof that an image is clean. Inspects the running system (O(root=/)) or an offline
    image root and returns what residue it finds, per category of the residue catalogue that
    M(imageprep.vm.linux_residue) removes, with the severity of each finding.
  - It does not only re-check the catalogue's own paths. It also looks by content and location
    - private keys and C(authorized_keys) anywhere outside packaged trees (a service account's home,
    C(/srv), C(/opt), C(/etc)), a machine id in C(/etc/machine-id) or a stored copy in
    C(/var/lib/dbus), journal directories named after an old machine id, host keys that
    C(sshd_config) names elsewhere, sudo rules for accounts that no longer exist, any history
    file in a home, any DHCP lease, any non-empty log.
  - Private keys outside home directories are only ever reported (category V(private_keys));
    the removal never guesses whether a service needs them.
  - While a final pass installed by M(imageprep.vm.linux_residue) is pending, the findings it
    will remove at shutdown are returned in RV(deferred_findings) and do not make the root unclean.
  - With O(image), it audits a disk image file offline (qcow2 with its backing chain, raw, vpc,
    vhdx, vmdk, any format C(qemu-img) reads) without writing to it. A raw image is read in
    place; any other format is first flattened into a sparse raw copy in O(tmpdir). The
    partition table (GPT or MBR) is read, each partition with a Linux file system is
    loop-mounted read-only without journal replay, and the one holding C(etc/os-release) is
    audited. Everything is unmounted and removed afterwards, also on errors.
  - It also returns the machine identity of the root (RV(identity)), to compare a source VM, its
    image and a clone booted from it.
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module changes nothing; it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
  idempotent:
    description: The module changes nothing.
    support: full
options:
  root:
    description:
      - The root to audit. V(/) is the running system; any other absolute path an offline image root.
      - Mutually exclusive with O(image).
    type: path
    default: /
  image:
    description:
      - A disk image file whose Linux root file system is audited, read-only, instead of O(root).
      - Needs root privileges (loop mounts), C(qemu-img) and C(blkid) on the host that runs the module.
      - A raw image used by a running VM is refused; so is any image whose lock a running QEMU holds.
    type: path
  tmpdir:
    description:
      - Where the flattened raw copy of a non-raw O(image) and the mount point are made; it needs
        room for the data the image holds (a raw copy is sparse).
      - Defaults to the module's remote temporary directory.
    type: path
  categories:
    description: Categories to audit. Empty means the categories that are on by default.
    type: list
    elements: str
    default: []
  exclude:
    description: Categories not to audit.
    type: list
    elements: str
    default: []
  keep_users:
    description: Accounts whose keys and histories are expected to stay (not findings).
    type: list
    elements: str
    default: []
  remove_users:
    description: Accounts that must be gone (their existence is a finding), in addition to the provisioning accounts.
    type: list
    elements: str
    default: []
notes:
  - Reading every home directory and C(/etc/shadow) needs root privileges (C(become=true)).
  - Partitions are found in the image's GPT or MBR (logical partitions included), or the whole
    disk holds one file system. LVM, LUKS and RAID members are reported, not opened. Only the
    root file system is audited; a separate C(/var) or C(/home) partition is not mounted into it.
seealso:
  - module: imageprep.vm.linux_residue
"""

EXAMPLES = r"""
- name: Audit the running VM
  imageprep.vm.linux_residue_info:
  become: true
  register: audit

- name: Fail when the image root is not clean
  ansible.builtin.assert:
    that: audit.clean
    fail_msg: "{{ audit.findings | map(attribute='path') | join(', ') }}"

- name: Audit the captured disk, mounted on the hypervisor host
  imageprep.vm.linux_residue_info:
    root: /mnt/image
  delegate_to: hypervisor.example.com

- name: Audit a captured image file offline, on the hypervisor host
  imageprep.vm.linux_residue_info:
    image: /var/lib/imageprep/library/web-1.0.0.qcow2
    tmpdir: /var/tmp
  become: true
  delegate_to: hypervisor.example.com
  register: image_audit

- name: The clone must not share the image's machine id and host keys
  ansible.builtin.assert:
    that:
      - clone_audit.identity.machine_id != image_audit.identity.machine_id
      - clone_audit.identity.ssh_host_keys | map(attribute='fingerprint')
        | intersect(image_audit.identity.ssh_host_keys | map(attribute='fingerprint')) | length == 0
"""

RETURN = r"""
clean:
  description: True when no residue was found (deferred findings excepted).
  returned: always
  type: bool
findings:
  description: Residue found, in catalogue order.
  returned: always
  type: list
  elements: dict
  contains:
    category:
      description: Catalogue category.
      type: str
    path:
      description: Path in the root.
      type: str
    severity:
      description: secret, identity or hygiene.
      type: str
    found:
      description: What was found there.
      type: str
  sample:
    - {category: machine_id, path: /etc/machine-id, severity: identity, found: machine id 4c1f...}
deferred_findings:
  description: Findings that the pending final pass removes at shutdown (same shape as RV(findings)).
  returned: always
  type: list
  elements: dict
counts:
  description: Number of findings per category (categories without findings are left out).
  returned: always
  type: dict
  sample: {logs: 3, user_ssh_keys: 1}
categories:
  description: The categories that were audited.
  returned: always
  type: list
  elements: str
os_family:
  description: The family the catalogue used.
  returned: always
  type: str
distribution:
  description: C(ID) of the root's os-release.
  returned: always
  type: str
final_pass_pending:
  description: Whether a final pass is installed and will run at shutdown.
  returned: always
  type: bool
identity:
  description: The machine identity of the audited root, to compare a source VM, its image and a clone.
  returned: always
  type: dict
  contains:
    machine_id:
      description:
        - Content of C(/etc/machine-id), stripped; an empty string when the file is empty, null when it is missing.
        - V(uninitialized) means systemd generates a new one at the next boot.
      type: str
    hostname:
      description: Content of C(/etc/hostname), stripped; an empty string when empty, null when missing.
      type: str
    ssh_host_keys:
      description: The SSH host public keys in C(/etc/ssh/ssh_host_*_key.pub), by path.
      type: list
      elements: dict
      contains:
        path:
          description: Path of the public key file in the root.
          type: str
        type:
          description: Key type as the file names it (V(ssh-ed25519), V(ecdsa-sha2-nistp256), V(ssh-rsa)).
          type: str
        public_key:
          description: The base64 key blob.
          type: str
        fingerprint:
          description: The SHA256 fingerprint as C(ssh-keygen -l) prints it.
          type: str
      sample:
        - path: /etc/ssh/ssh_host_ed25519_key.pub
          type: ssh-ed25519
          public_key: AAAAC3NzaC1lZDI1NTE5AAAAIFqXkz2Hd0kTlVgFQ8bRZ1pN4n8Wv3oL6y0Jm5rS7tQx
          fingerprint: SHA256:7Vb0YxZ1wWkq3Fq6n8s9Qk2mJcB3hXcV0oT4mR2aLs8
    accounts:
      description:
        - Regular accounts in C(/etc/passwd), in file order - UID from C(UID_MIN) of C(/etc/login.defs)
          (default 1000) up to 59999, C(nobody) left out.
      type: list
      elements: dict
      contains:
        name:
          description: Account name.
          type: str
        uid:
          description: User id.
          type: int
        home:
          description: Home directory.
          type: str
        shell:
          description: Login shell.
          type: str
      sample:
        - {name: produser, uid: 1001, home: /home/produser, shell: /bin/bash}
image_root:
  description: Where the audited root was found in O(image).
  returned: when O(image) is given
  type: dict
  contains:
    partition:
      description: Partition number (GPT entry, or MBR slot with logical partitions from 5); null for a whole-disk file system.
      type: int
    offset:
      description: Byte offset of the file system in the disk.
      type: int
    fstype:
      description: File system type (V(ext4), V(xfs), V(btrfs), ...).
      type: str
    format:
      description: The image's format as C(qemu-img) reads it.
      type: str
  sample: {partition: 2, offset: 9437184, fstype: ext4, format: qcow2}
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imageprep.vm.plugins.module_utils import _disk_image as disk_image
from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img
from ansible_collections.imageprep.vm.plugins.module_utils import _residue as residue
from ansible_collections.imageprep.vm.plugins.module_utils._machine_identity import machine_identity
from ansible_collections.imageprep.vm.plugins.module_utils._rootfs import RootError, RootFS


class LinuxResidueInfo:
    """Audit one root: a directory, or the root file system inside a disk image."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        params = module.params
        self.options = residue.Options(categories=tuple(params['categories']), exclude=tuple(params['exclude']),
                                       keep_users=tuple(params['keep_users']), remove_users=tuple(params['remove_users']))

    def run(self) -> dict:
        params = self.module.params
        if params['image'] is None:
            return self.audit(RootFS(params['root']))
        # the options are checked before anything is mounted
        residue.select(self.options.categories, self.options.exclude)
        tmpdir = params['tmpdir'] or self.module.tmpdir
        with disk_image.image_root(params['image'], self.module.run_command, tmpdir) as mounted:
            result = self.audit(RootFS(mounted.path))
            result['image_root'] = mounted.describe()
        return result

    def audit(self, fs: RootFS) -> dict:
        """The audit result of the root FS."""
        target = residue.Target(fs)
        names = residue.select(self.options.categories, self.options.exclude)
        marker = residue.final_pass_marker(target.fs)
        findings, deferred = [], []
        for finding in residue.audit(target, self.options):
            entry = {'category': finding.category, 'path': finding.path,
                     'severity': residue.SEVERITY[finding.category], 'found': finding.found}
            if marker is not None and residue.deferred(finding, marker, target):
                deferred.append(entry)
            else:
                findings.append(entry)
        counts: dict = {}
        for entry in findings:
            counts[entry['category']] = counts.get(entry['category'], 0) + 1
        return {
            'changed': False,
            'clean': not findings,
            'findings': findings,
            'deferred_findings': deferred,
            'counts': counts,
            'categories': names,
            'os_family': target.family,
            'distribution': target.distribution,
            'final_pass_pending': marker is not None,
            'identity': machine_identity(target.fs),
        }


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec=dict(residue.SELECTION_OPTIONS, image={'type': 'path'}, tmpdir={'type': 'path'}),
        mutually_exclusive=[('root', 'image')],
        required_by={'tmpdir': 'image'},
        supports_check_mode=True,
    )
    try:
        result = LinuxResidueInfo(module).run()
    except (residue.ResidueError, RootError, disk_image.ImageRootError, qemu_img.DiskImageError) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f'{type(exc).__name__}: {exc}', exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
