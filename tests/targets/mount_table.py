# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mounts below a test's scratch directory, and removing such a directory safely."""
from __future__ import annotations

import pathlib
import shutil
import subprocess


def mounts_under(path: pathlib.Path) -> list[str]:
    """Mount points at or below PATH in this process's mount namespace, deepest first."""
    prefix = str(path.resolve())
    found = []
    with open('/proc/self/mountinfo', encoding='utf-8') as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace('\\040', ' ')
            if point == prefix or point.startswith(prefix + '/'):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount(point: str) -> None:
    """Unmount POINT; when something still holds a file there, detach it lazily."""
    if subprocess.run(['umount', point], capture_output=True, check=False).returncode != 0:
        subprocess.run(['umount', '--lazy', point], capture_output=True, check=False)


def remove_scratch(path: pathlib.Path) -> None:
    """Unmount everything below PATH (deepest first), then delete it: never delete through a mount."""
    for point in mounts_under(path):
        unmount(point)
    shutil.rmtree(path, ignore_errors=True)
