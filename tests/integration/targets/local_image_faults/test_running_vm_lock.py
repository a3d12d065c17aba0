# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A disk a running (paused) QEMU holds is refused unless forced; forced, the copy says it is crash-consistent."""
from __future__ import annotations

import subprocess

import pytest

from library_checks import assert_library_consistent, read_catalogue
from module_runs import MIB, capture, make_disk

LOCK_ERROR = 'Failed to get shared "write" lock'


@pytest.mark.parametrize('fmt', ['qcow2', 'raw'])
def test_capture_refuses_a_disk_a_running_vm_holds_unless_forced(fmt, scratch, paused_qemu):
    disk = make_disk(scratch / f'held.{fmt}', fmt, 64 * MIB, [(0x3c, 0, 4 * MIB), (0x3d, 40 * MIB, 1 * MIB)])
    library = scratch / 'library'
    runs = scratch / 'runs'
    vm = paused_qemu(disk, fmt)

    # the lock is real: qemu-img cannot read the disk ...
    probe = subprocess.run(['qemu-img', 'convert', '-f', fmt, '-O', 'raw', str(disk), str(scratch / 'probe.raw')],
                           capture_output=True, text=True, check=False)
    assert probe.returncode != 0 and LOCK_ERROR in probe.stderr, probe.stderr
    # ... while `qemu-img info` does not notice it on a raw disk (so the module must look at the lock itself)
    info = subprocess.run(['qemu-img', 'info', '-f', fmt, str(disk)], capture_output=True, text=True, check=False)
    assert (info.returncode == 0) is (fmt == 'raw'), info.stderr

    refused = capture(runs, name='held', library=str(library), disks=[str(disk)])
    assert refused['rc'] != 0 and refused.get('failed'), refused
    assert 'running VM' in refused['msg'] and 'force' in refused['msg'], refused['msg']
    assert read_catalogue(library) == []
    assert not (library / 'held').exists()

    forced = capture(runs, name='held', library=str(library), disks=[str(disk)], force=True)
    assert forced['rc'] == 0 and forced['changed'], forced
    assert forced['image']['crash_consistent'] is True
    assert vm.running()
    stored = forced['image']['disks'][0]['path']
    same = subprocess.run(['qemu-img', 'compare', '-U', '-f', fmt, '-F', 'qcow2', str(disk), stored], capture_output=True, text=True, check=False)
    assert same.returncode == 0, same.stdout + same.stderr
    assert_library_consistent(library)

    # once the VM is gone the same disk is captured without force, and that copy is consistent
    vm.stop()
    after = capture(runs, name='held', version='2.0.0', library=str(library), disks=[str(disk)])
    assert after['rc'] == 0 and after['changed'], after
    assert after['image']['crash_consistent'] is False
    assert [(image['version'], bool(image['crash_consistent'])) for image in assert_library_consistent(library)] == [
        ('1.0.0', True), ('2.0.0', False)]
