# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures: a fresh planted Debian 12 guest root per test, and running the playbooks and modules."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import typing as t

import pytest

HERE = pathlib.Path(__file__).resolve().parent
TARGETS = pathlib.Path(os.environ.get('IMAGEPREP_TEST_TARGETS') or HERE.parents[2] / 'targets')
if str(TARGETS) not in sys.path:
    sys.path.insert(0, str(TARGETS))

import debian_root  # noqa: E402  pylint: disable=wrong-import-position
import mount_table  # noqa: E402  pylint: disable=wrong-import-position
import plant_used_vm  # noqa: E402  pylint: disable=wrong-import-position


class Planted(t.NamedTuple):
    """A planted root in a scratch directory, and the planter's manifest."""

    scratch: pathlib.Path
    root: pathlib.Path
    manifest: list[dict[str, str]]


def _planted_root() -> t.Iterator[Planted]:
    assert os.geteuid() == 0, 'the root is extracted, planted and chrooted into as root (alias needs/root)'
    scratch = pathlib.Path(tempfile.mkdtemp(prefix='linux-residue-'))
    try:
        root = scratch / 'root'
        debian_root.copy('guest', root)
        manifest = plant_used_vm.plant(root, 'debian')
        yield Planted(scratch, root, manifest)
    finally:
        mount_table.remove_scratch(scratch)


@pytest.fixture
def planted() -> t.Iterator[Planted]:
    """A fresh copy of the real Debian guest root, planted like a used VM; removed afterwards."""
    yield from _planted_root()


@pytest.fixture(scope='module')
def planted_untouched() -> t.Iterator[Planted]:
    """One planted root shared by the tests that prove a refused run changes nothing (each checks that)."""
    yield from _planted_root()


def playbook(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ansible-playbook in this directory with ARGS; fail the test with its output unless it succeeds."""
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_DEPRECATION_WARNINGS='false')
    completed = subprocess.run(['ansible-playbook', *args], cwd=HERE, capture_output=True, text=True, env=env, check=False)
    if check and completed.returncode != 0:
        raise AssertionError(f'ansible-playbook {" ".join(args)} failed:\n{completed.stdout[-20000:]}\n{completed.stderr[-5000:]}')
    return completed


def read_results(path: pathlib.Path) -> dict[str, t.Any]:
    """The results a playbook handed over (a JSON file)."""
    return json.loads(path.read_text(encoding='utf-8'))
