# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Debian root recipes: what each profile holds and when a cached root is reused."""
from __future__ import annotations

import pathlib

import pytest

import debian_root


@pytest.mark.parametrize('package', ['openssh-server', 'python3', 'cloud-init', 'waagent', 'isc-dhcp-client', 'sudo', 'systemd-sysv'])
@pytest.mark.parametrize('profile', ['guest', 'vm'])
def test_every_profile_holds_the_agents_a_cloud_vm_runs(profile, package):
    assert package in debian_root.PROFILES[profile]


def test_vm_profile_can_boot():
    assert {'linux-image-amd64', 'udev', 'initramfs-tools'} <= set(debian_root.PROFILES['vm'])


def test_tarball_name_follows_the_recipe(monkeypatch, tmp_path):
    monkeypatch.setenv('IMAGEPREP_TEST_CACHE', str(tmp_path))
    guest = debian_root.tarball_path('guest')
    monkeypatch.setitem(debian_root.PROFILES, 'guest', debian_root.PROFILES['guest'] + ['vim'])
    assert debian_root.tarball_path('guest') != guest
    assert debian_root.tarball_path('guest').parent == tmp_path


def test_recipe_does_not_depend_on_the_output_path():
    one = debian_root.mmdebstrap_command('guest', pathlib.Path('/a/x.tar'))
    two = debian_root.mmdebstrap_command('guest', pathlib.Path('/b/y.tar'))
    assert one[:-1] == two[:-1]
    assert '--format=tar' in one and one[-2] == debian_root.SUITE


def test_copy_refuses_a_non_empty_destination(tmp_path, monkeypatch):
    monkeypatch.setattr(debian_root, 'build', lambda profile: tmp_path / 'unused.tar')
    (tmp_path / 'dest').mkdir()
    (tmp_path / 'dest' / 'keep').write_text('x')
    with pytest.raises(SystemExit, match='not empty'):
        debian_root.copy('guest', tmp_path / 'dest')
    assert (tmp_path / 'dest' / 'keep').read_text() == 'x'
