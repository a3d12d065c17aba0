# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the end-to-end tests: whole QEMU VMs booted from the cached Debian 12 disk."""
from __future__ import annotations

import pathlib
import sys
import typing as t

import pytest

TARGETS = pathlib.Path(__file__).resolve().parents[1] / 'targets'
if str(TARGETS) not in sys.path:
    sys.path.insert(0, str(TARGETS))

import measurement_summary  # noqa: E402  pylint: disable=wrong-import-position
import qemu_vm  # noqa: E402  pylint: disable=wrong-import-position

# bound for one boot under TCG on a busy 2-core host (measured: SSH after about 40 s)
SSH_TIMEOUT = 300.0


@pytest.fixture(scope='session')
def vm_base_disk() -> qemu_vm.BaseDisk:
    """The cached base disk (built on first use)."""
    return qemu_vm.build()


@pytest.fixture
def booted_vm(tmp_path: pathlib.Path, vm_base_disk: qemu_vm.BaseDisk, request: pytest.FixtureRequest) -> t.Iterator[qemu_vm.QemuVM]:
    """A VM on a fresh overlay, started and answering on SSH; killed and removed afterwards."""
    vm = qemu_vm.QemuVM(tmp_path / 'vm', base=vm_base_disk)
    try:
        vm.start()
        request.node.user_properties.append(('accelerator', f'{vm.accel} ({vm.accel_why})'))
        seconds = vm.wait_for_ssh(SSH_TIMEOUT)
        request.node.user_properties.append(('ssh ready', f'{seconds:.1f}s after start'))
        yield vm
    finally:
        vm.cleanup()


# They show when a host or a change makes VMs slow.
pytest_runtest_logreport, pytest_terminal_summary = measurement_summary.hooks('VM measurements')
