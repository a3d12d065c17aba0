# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""libvirt_backup: arguments are checked before any domain or file is touched (runs against libvirt are in the libvirt_vm target)."""
from __future__ import annotations

import json

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.imageprep.vm.plugins.modules import libvirt_backup


def run_module(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            libvirt_backup.main()
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('args, message', [
    ({'name': '../escape'}, "backup name '../escape' is not valid"),
    ({'name': 'a b'}, 'is not valid'),
    ({'state_dir': 'relative/dir'}, 'must be an absolute path'),
    ({'overlay_dir': '/nonexistent/overlays'}, 'overlay_dir /nonexistent/overlays is not an existing directory'),
    ({'state': 'snapshot'}, 'value of state must be one of: present, restored, absent'),
])
def test_bad_arguments_fail_clearly_and_write_nothing(args, message, capsys, tmp_path):
    state_dir = tmp_path / 'state'
    result = run_module(dict({'domain': 'web01', 'state': 'present', 'state_dir': str(state_dir)}, **args), capsys)
    assert result['failed'] and message in result['msg'], result
    assert not state_dir.exists()
