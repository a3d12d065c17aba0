# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt_clone refuses bad input before it asks libvirt anything (the rest runs on real libvirt in integration)."""
from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.imageprep.vm.plugins.modules import libvirt_clone


def run_module(args, capsys):
    """Run main() with ARGS and return its JSON result."""
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            libvirt_clone.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('args, message', [
    ({'ssh_port': 0}, 'ssh_port 0 is out of range 1-65535'),
    ({'ssh_port': 65536}, 'ssh_port 65536 is out of range'),
    ({'ssh_port': 'ssh'}, "ssh_port"),
    ({'memory_mib': 0}, 'memory_mib must be 1 or more'),
    ({'vcpus': -1}, 'vcpus must be 1 or more'),
    ({'workdir': 'clones/v'}, 'must be an absolute path'),
    ({'template': 'web01', 'firmware': 'uefi'}, 'mutually exclusive'),
    ({'firmware': 'coreboot'}, 'value of firmware must be one of'),
    ({'disks': []}, 'disks is empty'),
    ({'disks': None}, 'state is running but all of the following are missing: disks'),
    ({'name': 'a/b'}, "name 'a/b' is not valid"),
    ({'name': '-x', 'state': 'absent'}, 'not valid'),
])
def test_bad_input_is_refused_with_a_clear_message(args, message, capsys, tmp_path):
    values = {'name': 'verify', 'disks': [str(tmp_path / 'os.qcow2')], 'workdir': str(tmp_path / 'w')}
    values.update(args)
    result = run_module({k: v for k, v in values.items() if v is not None}, capsys)
    assert result['failed'] and message in result['msg']
    assert not (tmp_path / 'w').exists()
