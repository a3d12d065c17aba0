# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Action of imageprep.vm.linux_residue: refuse to deprovision the control node, then run the module."""
from __future__ import annotations

import os

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

LOCAL_CONNECTIONS = ('local', 'ansible.builtin.local', 'ansible.legacy.local')


def control_node_problem(transport: str, root: object, allowed: object) -> str | None:
    """Why the task must not run (None when it may): the running root of the control node, not allowed."""
    if transport not in LOCAL_CONNECTIONS or boolean(allowed, strict=False):
        return None
    # the connection is local, so the target's paths are this machine's: // and links to / are /
    if os.path.realpath(str(root or '/')) != '/':
        return None
    return ('refusing to deprovision the control node: the connection is local and root is /. '
            'Point root at an offline image root, run against the VM over SSH, or set '
            'allow_control_node=true if this machine really is the image template.')


class ActionModule(ActionBase):
    """Guard, then run imageprep.vm.linux_residue on the target."""

    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = self._task.args
        problem = control_node_problem(self._connection.transport, args.get('root', '/'),
                                       args.get('allow_control_node', False))
        if problem:
            result.update(failed=True, changed=False, msg=problem)
            return result
        result.update(self._execute_module(module_name='imageprep.vm.linux_residue', module_args=args,
                                           task_vars=task_vars))
        return result
