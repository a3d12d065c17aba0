#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Import the Debian 12 guest root as a local podman image that boots systemd, for Molecule.

The image is ``localhost/imageprep-debian12:<key>``. The key covers the root tarball's name
(which carries the root's own input key) and this script, so a new root or new import
options give a new tag, and an existing tag is reused as is. Older tags are removed.

Usage:
  podman_image.py build      import the image unless it exists; print its name
"""
from __future__ import annotations

import argparse
import pathlib
import shutil
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import debian_root  # noqa: E402  pylint: disable=wrong-import-position
import target_cache  # noqa: E402  pylint: disable=wrong-import-position

REPOSITORY = 'localhost/imageprep-debian12'
PROFILE = 'guest'
# systemd is PID 1, and stops cleanly on the signal it expects instead of SIGTERM.
CHANGES = [
    'CMD ["/sbin/init"]',
    'STOPSIGNAL SIGRTMIN+3',
]


def image_name(tarball: pathlib.Path) -> str:
    """Return the image name (repository and tag) for the root tarball TARBALL."""
    key = target_cache.input_key(pathlib.Path(__file__), tarball.name)
    return f'{REPOSITORY}:{key}'


def podman(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run podman with ARGS; return the completed process with its output as text (errors shown unless QUIET)."""
    if shutil.which('podman') is None:
        raise SystemExit('podman is not installed; run `make setup` (Debian packages podman and runc)')
    return subprocess.run(['podman', *args], check=check, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if quiet else None, text=True)


def image_exists(name: str) -> bool:
    """Return whether the local image NAME exists."""
    return podman('image', 'exists', name, check=False, quiet=True).returncode == 0


def stale_images(listed: list[str], current: str) -> list[str]:
    """Return the images in LISTED that are other tags of the repository of CURRENT (older roots left them)."""
    return [name for name in listed if name != current and name.startswith(REPOSITORY + ':')]


def build() -> str:
    """Import the guest root as a podman image unless that image exists; return its name."""
    tarball = debian_root.build(PROFILE)
    name = image_name(tarball)
    with target_cache.build_lock('podman-imageprep-debian12'):
        if not image_exists(name):
            command = ['import', '--quiet', '--message', f'imageprep.vm test target from {tarball.name}']
            for change in CHANGES:
                command += ['--change', change]
            # import stores the image under its final name only when it is complete
            podman(*command, str(tarball), name)
        listed = podman('images', '--noheading', '--format', '{{.Repository}}:{{.Tag}}', '--filter', f'reference={REPOSITORY}')
        for old in stale_images(listed.stdout.split(), name):
            # an image still used by a container stays; the next build removes it
            podman('rmi', old, check=False, quiet=True)
    return name


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=['build'])
    parser.parse_args()
    print(build())


if __name__ == '__main__':
    main()
