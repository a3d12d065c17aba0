#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: libvirt_power
short_description: Power a libvirt domain off (bounded wait) or on
version_added: 0.1.0
description:
  - Brings a libvirt domain to O(state=shutoff) or O(state=running) and reports what it did.
  - A power-off waits until libvirt reports the domain C(shut off), for at most O(timeout)
    seconds. By default it presses the ACPI power button (C(virsh shutdown --mode acpi)); with
    O(method=wait) it only waits, for a guest that is turning itself off (such as one powered
    off by a timer of the P(imageprep.vm.linux_deprovision#role) role); O(method=destroy) powers
    it off at once, as pulling the plug does.
  - When the guest is not off within O(timeout), the task fails and says how long it waited and
    the state it saw, or, with O(force=true), the domain is destroyed and RV(forced) says so.
  - O(state=running) starts a shut-off domain or resumes a paused one. Waiting for the guest's
    services (such as SSH) is the playbook's job.
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
requirements:
  - C(virsh) on the host (Debian/Ubuntu package C(libvirt-clients), RHEL/Fedora C(libvirt-client)).
attributes:
  check_mode:
    support: full
    details: Reports what it would do (RV(method)) and the state it would reach, without touching the domain.
  diff_mode:
    support: full
    details: Shows the domain state before and after.
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
  state:
    description:
      - V(shutoff) powers the domain off and waits until libvirt reports it shut off.
      - V(running) starts a shut-off domain or resumes a paused one.
    type: str
    choices: [shutoff, running]
    required: true
  method:
    description:
      - How O(state=shutoff) powers the domain off.
      - V(acpi) presses the ACPI power button, then waits. The guest needs something that handles
        the button (systemd-logind, acpid; on Windows the power button policy).
      - V(wait) asks nothing and waits for a guest that is turning itself off.
      - V(destroy) stops the domain at once, without the guest's shutdown (unwritten data in the
        guest is lost).
      - A paused or crashed guest cannot react to the button or turn itself off; V(acpi) and
        V(wait) fail at once on it unless O(force=true).
    type: str
    choices: [acpi, wait, destroy]
    default: acpi
  timeout:
    description: Seconds to wait for the domain to be shut off (V(acpi) and V(wait)). More than 0.
    type: int
    default: 300
  force:
    description:
      - When the domain is not shut off within O(timeout) (or cannot react, being paused), destroy it
        instead of failing. RV(forced) and RV(method=destroy) say so.
    type: bool
    default: false
notes:
  - States are read with C(virsh domstate), polled twice a second.
  - Works with libvirt 9.0 (Debian 12) and later; any hypervisor driver virsh speaks to.
seealso:
  - module: imageprep.vm.libvirt_backup
  - module: imageprep.vm.local_image
"""

EXAMPLES = r"""
- name: Power the VM off with the ACPI button, hard after 5 minutes
  imageprep.vm.libvirt_power:
    domain: web01
    state: shutoff
    timeout: 300
    force: true

- name: Wait for a guest that powers itself off after deprovisioning
  imageprep.vm.libvirt_power:
    domain: web01
    state: shutoff
    method: wait
    timeout: 600

- name: Pull the plug
  imageprep.vm.libvirt_power:
    domain: scratch-vm
    state: shutoff
    method: destroy

- name: Start it again
  imageprep.vm.libvirt_power:
    domain: web01
    state: running
"""

RETURN = r"""
domain:
  description: The domain.
  returned: always
  type: str
  sample: web01
state:
  description: The domain's state afterwards, as virsh prints it (in check mode, the state it would reach).
  returned: always
  type: str
  sample: shut off
previous_state:
  description: The domain's state before.
  returned: always
  type: str
  sample: running
method:
  description:
    - What happened (in check mode, what would happen). V(none) (already there), V(acpi) (it
      powered off after the power button), V(guest) (it turned itself off), V(destroy), V(start)
      or V(resume).
  returned: always
  type: str
  sample: acpi
forced:
  description: True when the domain was destroyed because of O(force=true).
  returned: always
  type: bool
seconds:
  description: Seconds the task took to change the state (0 when nothing was done).
  returned: always
  type: float
  sample: 4.6
msg:
  description: What was done or would be done.
  returned: always
  type: str
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imageprep.vm.plugins.module_utils import _libvirt_domain as libvirt_mod

# what a power action is called in RV(method) when it worked; a failure is reported separately
REACHED_STATE = {'start': 'running', 'resume': 'running', 'destroy': libvirt_mod.SHUT_OFF, 'acpi': libvirt_mod.SHUT_OFF,
                 'wait': libvirt_mod.SHUT_OFF, 'none': None}
DESCRIPTIONS = {
    'none': 'nothing to do',
    'start': 'start the domain',
    'resume': 'resume the paused domain',
    'destroy': 'power the domain off at once (destroy)',
    'acpi': 'press the ACPI power button and wait up to {timeout} s',
    'wait': 'wait up to {timeout} s for the guest to power itself off',
}


class LibvirtPowerError(Exception):
    """The domain cannot be brought to the requested state; the message says why."""


class LibvirtPowerManager:
    """Carries out one libvirt_power task."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.forced_because = None

    def virsh(self, *args):
        """Run virsh against the task's URI."""
        return libvirt_mod.run_virsh(self.module.run_command, self.params['uri'], list(args))

    def state(self):
        """Return the domain's current state."""
        return libvirt_mod.domain_state(self.module.run_command, self.params['uri'], self.params['domain'])

    def run(self):
        """Do the task and return the result dict."""
        params = self.params
        previous = self.state()
        action = libvirt_mod.power_action(previous, params['state'], params['method'], params['force'])
        forced = action == 'destroy' and params['method'] != 'destroy'
        result = {'changed': action != 'none', 'domain': params['domain'], 'previous_state': previous, 'state': previous,
                  'method': action, 'forced': forced, 'seconds': 0.0}
        description = DESCRIPTIONS[action].format(timeout=params['timeout'])
        if self.module.check_mode or action == 'none':
            result['state'] = REACHED_STATE[action] or previous
            if action == 'none':
                result['msg'] = f"{params['domain']} is {previous} already"
            else:
                result['msg'] = f"would {description} ({params['domain']} is {previous})"
            result['method'] = 'guest' if action == 'wait' else action
            return self._with_diff(result)
        if forced:
            self.forced_because = f'a {previous} guest cannot power itself off'
        start = time.monotonic()
        result['method'] = self.apply(action, result)
        result['seconds'] = round(time.monotonic() - start, 1)
        result['state'] = self.state()
        result['msg'] = f"{params['domain']}: {previous} -> {result['state']} ({result['method']})"
        if self.forced_because:
            result['msg'] += f'; destroyed because force=true: {self.forced_because}'
        return self._with_diff(result)

    def apply(self, action, result):
        """Carry out ACTION; return what happened (see RV(method))."""
        if action in ('start', 'resume'):
            self.virsh(action, self.params['domain'])
            return action
        if action == 'destroy':
            return self.destroy()
        if action == 'acpi':
            try:
                self.virsh('shutdown', '--mode', 'acpi', self.params['domain'])
            except libvirt_mod.DomainError:
                # it may have gone off on its own between the state read and the button
                if self.state() != libvirt_mod.SHUT_OFF:
                    raise
                return 'guest'
        reached, state, waited = libvirt_mod.wait_for_state(self.module.run_command, self.params['uri'], self.params['domain'],
                                                            libvirt_mod.SHUT_OFF, self.params['timeout'])
        if reached:
            return 'acpi' if action == 'acpi' else 'guest'
        message = libvirt_mod.timeout_message(self.params['domain'], action, self.params['timeout'], waited, state)
        if not self.params['force']:
            raise LibvirtPowerError(message)
        result['forced'] = True
        self.forced_because = message
        return self.destroy()

    def destroy(self):
        """Destroy the domain; return V(destroy), or V(guest) when it went off by itself meanwhile."""
        try:
            self.virsh('destroy', self.params['domain'])
        except libvirt_mod.DomainError:
            if self.state() != libvirt_mod.SHUT_OFF:
                raise
            return 'guest'
        return 'destroy'

    def _with_diff(self, result):
        result['diff'] = {'before': {'state': result['previous_state']}, 'after': {'state': result['state']}}
        return result


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec={
            'domain': {'type': 'str', 'required': True},
            'uri': {'type': 'str', 'default': 'qemu:///system'},
            'state': {'type': 'str', 'choices': ['shutoff', 'running'], 'required': True},
            'method': {'type': 'str', 'choices': ['acpi', 'wait', 'destroy'], 'default': 'acpi'},
            'timeout': {'type': 'int', 'default': 300},
            'force': {'type': 'bool', 'default': False},
        },
        supports_check_mode=True,
    )
    if module.params['timeout'] <= 0:
        module.fail_json(msg=f"timeout must be more than 0 seconds, not {module.params['timeout']}")
    if not module.get_bin_path('virsh'):
        module.fail_json(msg='virsh is not installed on this host (Debian/Ubuntu: libvirt-clients, RHEL/Fedora: libvirt-client)')
    try:
        result = LibvirtPowerManager(module).run()
    except (LibvirtPowerError, libvirt_mod.DomainError) as exc:
        module.fail_json(msg=str(exc), domain=module.params['domain'])
    if not module._diff:  # pylint: disable=protected-access
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
