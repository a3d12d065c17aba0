# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the tests of the test targets: a planted Debian guest root, shared by the session."""
from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import typing as t

import pytest

TARGETS = pathlib.Path(__file__).resolve().parents[1] / 'targets'
sys.path.insert(0, str(TARGETS))

import debian_root  # noqa: E402  pylint: disable=wrong-import-position
import plant_used_vm  # noqa: E402  pylint: disable=wrong-import-position
from scratch_roots import PlantedRoot, remove_root  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope='session', autouse=True)
def needs_root() -> None:
    """Roots are extracted, chrooted into and planted as root."""
    if os.geteuid() != 0:
        pytest.skip('the test targets are built and planted as root')


@pytest.fixture(scope='session')
def planted_guest(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[PlantedRoot]:
    """A fresh copy of the real Debian guest root, planted."""
    base = pathlib.Path(tempfile.mkdtemp(prefix='planted-guest-', dir=tmp_path_factory.getbasetemp()))
    root = base / 'root'
    host_before = {'hostname': socket.gethostname(),
                   'links': subprocess.run(['ip', '-o', 'link'], capture_output=True, text=True, check=True).stdout}
    try:
        debian_root.copy('guest', root)
        manifest = plant_used_vm.plant(root, 'debian')
        yield PlantedRoot(root, 'debian', manifest, host_before)
    finally:
        remove_root(base)


@pytest.fixture()
def guest_visudo(planted_guest: PlantedRoot) -> t.Callable[[pathlib.Path], subprocess.CompletedProcess]:
    """A function that checks a sudoers file with the Debian guest's own visudo (visudo -c -f)."""
    root = planted_guest.root

    def check(sudoers: pathlib.Path) -> subprocess.CompletedProcess:
        staging = root / 'run' / f'visudo-check-{os.getpid()}'
        shutil.copy2(sudoers, staging)
        try:
            return subprocess.run(['chroot', str(root), 'visudo', '-c', '-f', f'/run/{staging.name}'],
                                  capture_output=True, text=True, check=False)
        finally:
            staging.unlink(missing_ok=True)
    return check
