# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The podman image of the guest root: its name, when it is imported and what is removed."""
from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

import podman_image


def test_image_name_follows_the_root():
    one = podman_image.image_name(pathlib.Path('/cache/debian12-guest-1111111111111111.tar'))
    two = podman_image.image_name(pathlib.Path('/cache/debian12-guest-2222222222222222.tar'))
    assert one != two
    assert one == podman_image.image_name(pathlib.Path('/elsewhere/debian12-guest-1111111111111111.tar'))


def test_image_name_is_a_local_podman_tag():
    repository, tag = podman_image.image_name(pathlib.Path('debian12-guest-1111111111111111.tar')).rsplit(':', 1)
    assert repository == 'localhost/imageprep-debian12'
    assert re.fullmatch(r'[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}', tag)


def test_image_boots_systemd():
    assert 'CMD ["/sbin/init"]' in podman_image.CHANGES


@pytest.mark.parametrize(('listed', 'stale'), [
    ([], []),
    (['localhost/imageprep-debian12:new'], []),
    (['localhost/imageprep-debian12:old', 'localhost/imageprep-debian12:new'], ['localhost/imageprep-debian12:old']),
    (['localhost/imageprep-debian12-other:old', 'localhost/other:old'], []),
])
def test_stale_images_are_the_other_tags_of_the_repository(listed, stale):
    assert podman_image.stale_images(listed, 'localhost/imageprep-debian12:new') == stale


@pytest.mark.parametrize(('exists', 'imported'), [(True, False), (False, True)])
def test_build_imports_only_a_missing_image(monkeypatch, tmp_path, exists, imported):
    monkeypatch.setenv('IMAGEPREP_TEST_CACHE', str(tmp_path))
    tarball = tmp_path / 'debian12-guest-1111111111111111.tar'
    monkeypatch.setattr(podman_image.debian_root, 'build', lambda profile: tarball)
    calls = []

    def fake_podman(*args, check=True, quiet=False):  # pylint: disable=unused-argument
        calls.append(args)
        returncode = 0 if exists or args[:2] != ('image', 'exists') else 1
        stdout = 'localhost/imageprep-debian12:old\n' if args[0] == 'images' else ''
        return subprocess.CompletedProcess(['podman', *args], returncode, stdout)

    monkeypatch.setattr(podman_image, 'podman', fake_podman)
    name = podman_image.build()
    imports = [call for call in calls if call[0] == 'import']
    assert bool(imports) == imported
    if imported:
        assert imports[0][-2:] == (str(tarball), name)
    assert ('rmi', 'localhost/imageprep-debian12:old') in calls
