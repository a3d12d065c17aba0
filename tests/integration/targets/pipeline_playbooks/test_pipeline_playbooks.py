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


def test_check_mode_changes_nothing(tmp_path):  # pylint: disable=too-many-locals
    """--check on a VM whose guest is a real Debian root (reached through chroot) and whose domain runs on a blank disk.

    Preflight reads the domain's state and the guest's identity, the backup says what it would
    snapshot, the deprovisioning role lists what it would remove, and the run stops there:
    nothing in the guest, the domain, the library or the backups changes.
    """
    import debian_root  # pylint: disable=import-outside-toplevel
    import libvirt_host  # pylint: disable=import-outside-toplevel
    import plant_used_vm  # pylint: disable=import-outside-toplevel
    from tree_listing import listing  # pylint: disable=import-outside-toplevel

    root = tmp_path / 'root'
    debian_root.copy('guest', root)
    plant_used_vm.plant(root, 'debian')
    guest_before = listing(root)
    disk = tmp_path / 'os.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(disk), '16M'], check=True)
    with libvirt_host.LibvirtDomain.define(libvirt_host.unique_name('check'), [{'path': disk}], tmp_path / 'domain',
                                           domain_type='qemu') as domain:
        domain.start()
        inventory = {'all': {'hosts': {'template': {
            'ansible_connection': 'community.general.chroot', 'ansible_host': str(root),
            'ansible_python_interpreter': '/usr/bin/python3',
            'image_pipeline_domain': domain.name, 'image_pipeline_image_version': '1.0.0',
            'image_pipeline_library': str(tmp_path / 'library'), 'image_pipeline_log_dir': str(tmp_path / 'logs'),
            'image_pipeline_backup_state_dir': str(tmp_path / 'backups'),
            'linux_deprovision_confirm': True, 'linux_deprovision_report_dir': str(tmp_path / 'reports'),
        }}}}
        (tmp_path / 'inventory.json').write_text(json.dumps(inventory), encoding='utf-8')
        env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_HOME=str(tmp_path / 'ansible-home'))
        run = subprocess.run(['ansible-playbook', '--check', '-i', str(tmp_path / 'inventory.json'), 'imageprep.vm.linux_image'],
                             capture_output=True, text=True, env=env, timeout=900, check=False)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output[-20000:]
        assert re.search(r'template\s+template\s+-\s+check\s', output), output[-5000:]
        # what it would do was said: the snapshot would be taken, the residue would be removed
        assert re.search(r'Back up the disks of the source VM\] \*+\nchanged: \[template -> localhost\]', output), output[-20000:]
        assert re.search(r'linux_deprovision : Remove the residue\] \*+\nchanged: \[template\]', output), output[-20000:]
        assert domain.state() == 'running'
        assert domain.block_devices() == {'vda': str(disk)}
    # Ansible's own remote tmp in the account it ran as is all that appeared
    assert listing(root, skip=['/root/.ansible']) == guest_before
    for made in ('library', 'backups', 'logs', 'reports'):
        assert not (tmp_path / made).exists(), made
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ansible-home', 'domain', 'inventory.json', 'os.qcow2', 'root']
