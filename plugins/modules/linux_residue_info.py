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
    description: The root to audit. V(/) is the running system; any other absolute path an offline image root.
    type: path
    default: /
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
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imageprep.vm.plugins.module_utils import _residue as residue
from ansible_collections.imageprep.vm.plugins.module_utils._rootfs import RootError, RootFS


class LinuxResidueInfo:
    """Audit one root."""

    def __init__(self, module: AnsibleModule) -> None:
        params = module.params
        self.target = residue.Target(RootFS(params['root']))
        self.options = residue.Options(categories=tuple(params['categories']), exclude=tuple(params['exclude']),
                                       keep_users=tuple(params['keep_users']), remove_users=tuple(params['remove_users']))

    def run(self) -> dict:
        names = residue.select(self.options.categories, self.options.exclude)
        marker = residue.final_pass_marker(self.target.fs)
        findings, deferred = [], []
        for finding in residue.audit(self.target, self.options):
            entry = {'category': finding.category, 'path': finding.path,
                     'severity': residue.SEVERITY[finding.category], 'found': finding.found}
            if marker is not None and residue.deferred(finding, marker, self.target):
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
            'os_family': self.target.family,
            'distribution': self.target.distribution,
            'final_pass_pending': marker is not None,
        }


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec=residue.SELECTION_OPTIONS,
        supports_check_mode=True,
    )
    try:
        result = LinuxResidueInfo(module).run()
    except (residue.ResidueError, RootError) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f'{type(exc).__name__}: {exc}', exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
