# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""imageprep.vm.linux_image's plumbing on real libvirt and a real library, with no VM booted.

`done` names a version that is already in the library and a guest address nothing answers on:
its run must end in preflight with no change and no connection. `ghost` names a domain libvirt
does not know: it must fail in preflight, untouched, and the run must still print and write the
summary and fail with exit code 2.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

WORK = pathlib.Path(os.environ['PIPELINE_WORK'])
TARGETS = pathlib.Path(os.environ['IMAGEPREP_TEST_TARGETS'])
sys.path.insert(0, str(TARGETS))

from module_runs import run_module  # noqa: E402  pylint: disable=wrong-import-position


def test_a_made_version_is_left_alone_and_an_unknown_vm_fails_without_stopping_the_run():
    library = WORK / 'library'
    disk = WORK / 'os.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(disk), '16M'], check=True)
    made = run_module('local_image', {'library': str(library), 'name': 'web', 'version': '2.0.0', 'disks': [str(disk)]},
                      WORK / 'runs')
    assert made['changed'], made
    # 192.0.2.1 (TEST-NET-1) answers nothing: a connection attempt would fail the host
    inventory = {'all': {'hosts': {
        'done': {'ansible_host': '192.0.2.1', 'image_pipeline_image_name': 'web', 'image_pipeline_image_version': '2.0.0'},
        'ghost': {'ansible_host': '192.0.2.1', 'image_pipeline_domain': 'imageprep-no-such-domain-7f3a',
                  'image_pipeline_image_version': '1.0.0'},
    }, 'vars': {'image_pipeline_library': str(library), 'image_pipeline_log_dir': str(WORK / 'logs'),
                'image_pipeline_backup_state_dir': str(WORK / 'backups')}}}
    (WORK / 'inventory.json').write_text(json.dumps(inventory), encoding='utf-8')
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_HOME=str(WORK / 'ansible-home'), ANSIBLE_TIMEOUT='5')
    run = subprocess.run(['ansible-playbook', '-i', str(WORK / 'inventory.json'), 'imageprep.vm.linux_image'],
                         capture_output=True, text=True, env=env, timeout=600, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 2, output[-10000:]
    recap = {line.split()[0]: dict(re.findall(r'(\w+)=(\d+)', line)) for line in run.stdout.splitlines() if 'ok=' in line}
    assert recap['done']['changed'] == '0' and recap['done']['failed'] == '0' and recap['done']['unreachable'] == '0'
    assert recap['ghost']['failed'] == '1' and recap['ghost']['unreachable'] == '0'

    summary = {r['host']: r for r in json.loads((WORK / 'logs' / 'summary.json').read_text(encoding='utf-8'))}
    assert summary['done']['result'] == 'unchanged' and summary['done']['version'] == '2.0.0'
    assert list(summary['done']['timings']) == ['preflight']
    ghost = summary['ghost']
    assert (ghost['result'], ghost['stage'], ghost['restored']) == ('failed', 'preflight', False)
    assert 'imageprep-no-such-domain-7f3a' in ghost['error']
    assert 'the guest was not touched' in ghost['message']
    failure = json.loads((WORK / 'logs' / 'ghost' / 'failure.json').read_text(encoding='utf-8'))
    assert failure['result']['stage'] == 'preflight'
    # the table, one line per host, and the cause under it
    assert re.search(r'done\s+web\s+2\.0\.0\s+unchanged', output)
    assert re.search(r'ghost\s+ghost\s+-\s+failed in preflight', output)
    # nothing else was made: the library holds the one version, no backup was taken
    images = run_module('local_image_info', {'library': str(library)}, WORK / 'runs')['images']
    assert [(i['name'], i['version']) for i in images] == [('web', '2.0.0')]
    assert not (WORK / 'backups').exists()
