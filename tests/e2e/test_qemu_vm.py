# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The QEMU test VM is a real Debian 12 machine that Ansible reaches over SSH and that powers itself off."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

# a clean shutdown takes 3-6 s under TCG; the bound only stops a hung guest from hanging the suite
POWEROFF_TIMEOUT = 120.0


def ansible_executable() -> str:
    """Return the toolchain's ansible (next to the Python running the tests), else the one on PATH."""
    sibling = pathlib.Path(sys.executable).parent / 'ansible'
    found = str(sibling) if sibling.exists() else shutil.which('ansible')
    assert found, 'ansible is not installed next to this Python nor on PATH'
    return found


def gather_facts(vm, tmp_path: pathlib.Path) -> dict:
    """Run ansible.builtin.setup against VM through an inventory file; return its ansible_facts."""
    inventory = vm.write_inventory(tmp_path / 'inventory.yml')
    # machine-readable results: the json callback (ansible.posix, shipped with the toolchain's ansible)
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_HOME=str(tmp_path / 'ansible-home'),
               ANSIBLE_LOAD_CALLBACK_PLUGINS='1', ANSIBLE_STDOUT_CALLBACK='ansible.posix.json')
    result = subprocess.run(
        [ansible_executable(), 'vm', '-i', str(inventory), '-m', 'ansible.builtin.setup', '-a', 'gather_subset=min'],
        capture_output=True, text=True, timeout=300, env=env, check=False)
    assert result.returncode == 0, f'ansible setup failed:\n{result.stdout}\n{result.stderr}'
    raw = json.loads(result.stdout)['plays'][0]['tasks'][0]['hosts']['vm']['ansible_facts']
    # setup returns ansible_-prefixed names; plays see them unprefixed in ansible_facts
    return {name.removeprefix('ansible_'): value for name, value in raw.items()}


def test_vm_boots_debian12_answers_ansible_and_powers_itself_off(booted_vm, tmp_path, request):
    vm = booted_vm
    hello = vm.ssh(['cat', '/proc/1/comm'])
    assert hello.returncode == 0, hello.stderr
    assert hello.stdout.strip() == 'systemd'

    start = time.monotonic()
    facts = gather_facts(vm, tmp_path)
    request.node.user_properties.append(('ansible setup', f'{time.monotonic() - start:.1f}s'))
    assert facts['distribution'] == 'Debian'
    assert facts['distribution_major_version'] == '12'
    assert facts['service_mgr'] == 'systemd'

    result = vm.poweroff(POWEROFF_TIMEOUT)
    request.node.user_properties.append(('poweroff', f'{result.method} in {result.seconds:.1f}s, QEMU exit {result.returncode}'))
    assert result.method == 'guest', result.detail
    assert result.returncode == 0
    assert result.seconds < POWEROFF_TIMEOUT
    assert not vm.running()
