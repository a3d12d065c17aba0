# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The control-node guard of the linux_residue action."""
from __future__ import annotations

import pytest

from ansible_collections.imageprep.vm.plugins.action.linux_residue import control_node_problem

LOCAL = ('local', 'ansible.builtin.local', 'ansible.legacy.local')
REMOTE = ('ssh', 'ansible.builtin.ssh', 'paramiko_ssh', 'community.general.chroot', 'chroot', 'podman', 'winrm')
THIS_ROOT = ('/', '/.', '/./', None, '')
OTHER_ROOTS = ('/mnt/x', '/mnt/x/', '/srv/image-root', '/mnt/x/..')


@pytest.mark.parametrize('transport', LOCAL)
@pytest.mark.parametrize('root', THIS_ROOT)
@pytest.mark.parametrize('allowed', [False, 'no', 'false', None, 0])
def test_local_root_is_refused(transport, root, allowed):
    problem = control_node_problem(transport, root, allowed)
    assert problem is not None
    assert 'refusing to deprovision the control node' in problem and 'allow_control_node=true' in problem


@pytest.mark.parametrize('transport', LOCAL)
@pytest.mark.parametrize('root', THIS_ROOT)
@pytest.mark.parametrize('allowed', [True, 'yes', 'true', 'True', 1, 'on'])
def test_local_root_allowed_when_asked(transport, root, allowed):
    assert control_node_problem(transport, root, allowed) is None


@pytest.mark.parametrize('transport', LOCAL + REMOTE)
@pytest.mark.parametrize('root', OTHER_ROOTS)
def test_an_offline_root_is_never_the_control_node(transport, root):
    assert control_node_problem(transport, root, False) is None


@pytest.mark.parametrize('root', ['/mnt/..', '/../', '///', '/mnt/x/../..', '//'])
def test_a_path_that_normalises_to_slash_is_the_control_node(root):
    assert control_node_problem('local', root, False) is not None


def test_a_link_to_slash_is_the_control_node(tmp_path):
    # through a local connection the module runs here, where this path is /
    (tmp_path / 'host').symlink_to('/')
    assert control_node_problem('local', str(tmp_path / 'host'), False) is not None


@pytest.mark.parametrize('transport', REMOTE)
@pytest.mark.parametrize('root', THIS_ROOT)
def test_a_remote_root_is_the_target_not_the_control_node(transport, root):
    assert control_node_problem(transport, root, False) is None
