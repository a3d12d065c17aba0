# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Used roots of every family, planted once per session, for the residue tests."""
from __future__ import annotations

import os
import typing as t

import pytest

import debian_root
import fixture_trees
import mount_table
import plant_used_vm


class UsedRoot(t.NamedTuple):
    """A planted root, its planter family and the planter's manifest."""

    root: str
    family: str
    manifest: list[dict[str, str]]


@pytest.fixture(scope='session')
def used_roots(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[t.Callable[[str], UsedRoot]]:
    """A function returning the used root of a family (debian: the real Debian 12 guest, planted by its own
    programs; rhel, suse, ubuntu, arch: fixture trees), built and planted on first use."""
    if os.geteuid() != 0:
        pytest.skip('used roots are extracted, chrooted into and planted as root; run the unit layer as root')
    base = tmp_path_factory.mktemp('used-roots')
    built: dict[str, UsedRoot] = {}

    def get(family: str) -> UsedRoot:
        if family not in built:
            root = base / family
            if family == 'debian':
                debian_root.copy('guest', root)
                manifest = plant_used_vm.plant(root, 'debian')
            else:
                manifest = fixture_trees.build_used(family, root)
            built[family] = UsedRoot(str(root), family, manifest)
        return built[family]

    try:
        yield get
    finally:
        mount_table.remove_scratch(base)
