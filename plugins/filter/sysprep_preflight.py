# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: sysprep_preflight
short_description: Decide whether Sysprep may generalize a Windows guest, from its pre-flight facts
version_added: 0.1.0
description:
  - Takes the facts that C(Get-SysprepPreflight.ps1) of the P(imageprep.vm.windows_sysprep#role) role
    gathers on the guest in one round trip, and returns the blockers, each with its fix, the warnings,
    and whether the VM is already generalized.
  - "The checks, by name: V(image_state) (Microsoft's Windows Setup states; an image already in
    C(IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE) or C(IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT) is reported as
    already generalized, not as a blocker), V(pending_reboot), V(bitlocker) (every volume must be fully
    decrypted), V(server_roles) (the roles that Microsoft's \"Sysprep Support for Server Roles\" marks
    unsupported), V(appx) (packages installed for a user but not provisioned for all users),
    V(azure_agent), V(cdrom) (on Azure only), V(domain) (a warning), V(sysprep_running), V(rearm) (a warning)."
author:
  - imageprep.vm developers (@imageprep)
options:
  _input:
    description:
      - The facts, as the JSON object the script prints or that text itself.
    type: raw
    required: true
  ignore_checks:
    description:
      - Names of checks whose findings are dropped; those that found something are listed in RV(_value.ignored).
      - An unknown name is an error that lists the known names.
    type: list
    elements: str
    default: []
  platform:
    description:
      - Where the image will run. V(azure) adds the Azure checks (DVD-ROM driver enabled, guest agent installed).
    type: str
    choices: [generic, azure]
    default: generic
  skip_rearm:
    description:
      - The answer file sets C(SkipRearm); a rearm count of 0 is then no concern.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Gather the pre-flight facts
  ansible.windows.win_powershell:
    script: "{{ lookup('ansible.builtin.file', 'Get-SysprepPreflight.ps1') }}"
  changed_when: false
  register: __preflight_facts

- name: Decide
  ansible.builtin.set_fact:
    __preflight: "{{ __preflight_facts.output[0] | imageprep.vm.sysprep_preflight(ignore_checks=['domain'], platform='azure') }}"

- name: Fail with every blocker and its fix
  ansible.builtin.fail:
    msg: "{{ __preflight.blockers | map(attribute='message') | zip(__preflight.blockers | map(attribute='fix')) }}"
  when: not __preflight.already_generalized and not __preflight.ok
"""

RETURN = r"""
_value:
  description: The decision.
  type: dict
  contains:
    already_generalized:
      description: The image state is a generalized one; Sysprep must not run again.
      type: bool
    image_state:
      description: The image state decided on (the registry's, else State.ini's), or V(unknown).
      type: str
      sample: IMAGE_STATE_COMPLETE
    blockers:
      description:
        - What stops Sysprep, one entry per check, each with the fix.
        - They are computed also when RV(_value.already_generalized) is true; a role runs nothing then.
      type: list
      elements: dict
      contains:
        check:
          description: The check's name.
          type: str
        message:
          description: What was found.
          type: str
        fix:
          description: How to fix it.
          type: str
    warnings:
      description: Findings that do not stop Sysprep (check, message).
      type: list
      elements: dict
    ignored:
      description: The checks named in O(ignore_checks) that found something.
      type: list
      elements: str
    appx_to_remove:
      description: Full names of the Appx packages installed for a user but not provisioned for all users.
      type: list
      elements: str
    ok:
      description: No blockers are left.
      type: bool
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.imageprep.vm.plugins.module_utils._sysprep import PreflightError, preflight


def sysprep_preflight(facts, ignore_checks=None, platform='generic', skip_rearm=False):
    """The filter: :func:`preflight` with its errors as filter errors."""
    try:
        return preflight(facts, [] if ignore_checks is None else ignore_checks, platform, skip_rearm=bool(skip_rearm))
    except PreflightError as exc:
        raise AnsibleFilterError(f'sysprep_preflight: {to_native(exc)}') from exc


class FilterModule:
    """The Sysprep pre-flight filter."""

    def filters(self):
        return {'sysprep_preflight': sysprep_preflight}
