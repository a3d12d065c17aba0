# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
name: sysprep_diagnose
short_description: Explain a failed Sysprep run from its Panther logs
version_added: 0.1.0
description:
  - Reads the Sysprep logs fetched from a Windows host after a failed run and returns the cause and
    the fix of the first known failure signature they contain.
  - Known signatures are a Store (Appx) package installed for a user but not provisioned for all
    users (named in RV(_value.package)), BitLocker on the OS volume, the licensing rearm limit, an
    installation left in an invalid state by an earlier failed run, the servicing check failing
    (pending updates), Microsoft Defender for Endpoint blocking generalize, and any other Sysprep
    provider DLL failing (named in the cause).
  - When no signature matches, RV(_value.known) is V(false), RV(_value.cause) is V(unknown), and
    RV(_value.evidence) holds the log lines that report errors or failures.
options:
  _input:
    description:
      - The fetched logs, a dictionary of log file name to log text, for example the contents of
        C(setupact.log) and C(setuperr.log) from C(%WINDIR%\System32\Sysprep\Panther) and
        C(%WINDIR%\Panther). Any subset is accepted; the names are not interpreted.
      - Lines that appear in several logs count once.
    type: dict
    required: true
author:
  - imageprep.vm developers (@imageprep)
"""

EXAMPLES = r"""
- name: Read the Sysprep logs
  ansible.windows.win_shell: Get-Content -Raw -LiteralPath "$env:WINDIR\System32\Sysprep\Panther\{{ item }}"
  loop:
    - setupact.log
    - setuperr.log
  register: __sysprep_logs
  failed_when: false

- name: Explain the failure
  ansible.builtin.fail:
    msg: "Sysprep failed: {{ __diagnosis.cause }} Fix: {{ __diagnosis.fix }}"
  vars:
    __diagnosis: >-
      {{ dict(__sysprep_logs.results | map(attribute='item')
              | zip(__sysprep_logs.results | map(attribute='stdout', default='')))
         | imageprep.vm.sysprep_diagnose }}

- name: The blocking Appx package, by name
  ansible.builtin.debug:
    msg: "{{ ({'setupact.log': setupact_text} | imageprep.vm.sysprep_diagnose).package }}"
"""

RETURN = r"""
_value:
  description: The diagnosis.
  type: dict
  contains:
    known:
      description: Whether a known signature matched.
      type: bool
    cause:
      description: What made Sysprep fail; V(unknown) when no signature matched.
      type: str
    fix:
      description: How to fix it.
      type: str
    signature:
      description:
        - The id of the matched signature, or V(unknown).
        - One of V(appx_not_provisioned), V(bitlocker), V(rearm_limit), V(invalid_state),
          V(pending_servicing), V(defender_for_endpoint), V(provider_failed), V(unknown).
      type: str
    package:
      description: The name of the blocking Appx package when that is the cause, else V(null).
      type: str
    evidence:
      description: The log lines the diagnosis rests on, at most 20, most recent last.
      type: list
      elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.imageprep.vm.plugins.module_utils._sysprep_logs import SysprepLogError, diagnose


def sysprep_diagnose(logs):
    """The cause and the fix of a failed Sysprep run, from its Panther logs."""
    try:
        return diagnose(logs)
    except SysprepLogError as e:
        raise AnsibleFilterError('sysprep_diagnose: %s' % e) from e


class FilterModule:
    """Sysprep log diagnosis."""

    def filters(self):
        return {'sysprep_diagnose': sysprep_diagnose}
