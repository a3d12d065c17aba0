# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scratch roots of the tests: what a planted root fixture yields, and removing roots (mounts first)."""
from __future__ import annotations

import pathlib
import typing as t

import mount_table


class PlantedRoot(t.NamedTuple):
    """A planted root, its family, the planter's manifest, and facts about this machine from before planting."""

    root: pathlib.Path
    family: str
    manifest: list[dict[str, str]]
    host_before: dict[str, str]


# Removing a root unmounts what the planter may have left mounted below it first.
remove_root = mount_table.remove_scratch
