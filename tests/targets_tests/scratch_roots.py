# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scratch roots of the tests: what a planted root fixture yields, and removing roots (mounts first)."""
from __future__ import annotations

import pathlib
import shutil
import subprocess
import typing as t


class PlantedRoot(t.NamedTuple):
    """A planted root, its family, the planter's manifest, and facts about this machine from before planting."""

    root: pathlib.Path
    family: str
    manifest: list[dict[str, str]]
    host_before: dict[str, str]


def mounts_under(path: pathlib.Path) -> list[str]:
    """Mount points at or below PATH in this process's mount namespace."""
    prefix = str(path.resolve())
    found = []
    with open('/proc/self/mountinfo', encoding='utf-8') as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace('\\040', ' ')
            if point == prefix or point.startswith(prefix + '/'):
                found.append(point)
    return found


def remove_root(path: pathlib.Path) -> None:
    """Unmount anything left below PATH (deepest first), then delete it."""
    for point in sorted(mounts_under(path), key=len, reverse=True):
        subprocess.run(['umount', '-l', point], check=False)
    shutil.rmtree(path, ignore_errors=True)
