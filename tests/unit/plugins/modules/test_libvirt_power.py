# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt_power: arguments are checked before any domain is touched (runs against libvirt are in the libvirt_vm target)."""
from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.imageprep.vm.plugins.modules import libvirt_power


def run_module(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            libvirt_power.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('args, message', [
    ({'domain': 'web01', 'state': 'shutoff', 'timeout': 0}, 'timeout must be more than 0 seconds, not 0'),
    ({'domain': 'web01', 'state': 'shutoff', 'timeout': -5}, 'not -5'),
    ({'domain': 'web01', 'state': 'off'}, 'value of state must be one of: shutoff, running'),
    ({'domain': 'web01', 'state': 'shutoff', 'method': 'reboot'}, 'value of method must be one of: acpi, wait, destroy'),
    ({'state': 'running'}, 'missing required arguments: domain'),
])
def test_bad_arguments_fail_clearly(args, message, capsys):
    result = run_module(args, capsys)
    assert result['failed'] and message in result['msg'], result
