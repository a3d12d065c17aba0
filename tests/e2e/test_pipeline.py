# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The golden-image pipeline (playbook imageprep.vm.linux_image) on two fresh demo VMs at once.

Both are firmware-booted (checked first: OVMF, GRUB, no -kernel) Debian 12 libvirt domains with a data disk, reached over SSH as the
provisioning account. `good` must become a verified VM image in the library; `bad` carries a
private key in /srv that the deprovisioning does not remove (only a person may), so its audit
fails: it must come back restored from its backup, running as before, and no image of it may
be registered. A second run for `good` with the same version changes nothing.

What the pipeline says about the clone it booted is checked against what this test reads
itself: the source VMs before the run (over SSH and ssh-keyscan), the cached disk they were
made from (the image build) and the captured image (offline, linux_residue_info).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import time
import typing as t
import xml.etree.ElementTree as ET

import demo_vm
import libvirt_host
from module_runs import run_module

SSH_TIMEOUT = 600.0
VERSION = '1.0.0'
MACHINE_ID = re.compile(r'^[0-9a-f]{32}$')
PLANTED_KEY = '/srv/app/deploy_key'
# the toolchain's, next to the Python running the tests (else the one on PATH)
ANSIBLE_PLAYBOOK = str(pathlib.Path(sys.executable).with_name('ansible-playbook')) \
    if pathlib.Path(sys.executable).with_name('ansible-playbook').exists() else 'ansible-playbook'


def host_keys(port: int) -> set[str]:
    """The base64 blobs of the host keys an sshd on 127.0.0.1:PORT offers (no login needed)."""
    scan = subprocess.run(['ssh-keyscan', '-T', '10', '-p', str(port), '127.0.0.1'], capture_output=True, text=True,
                          timeout=60, check=False)
    return {line.split()[2] for line in scan.stdout.splitlines() if len(line.split()) >= 3 and not line.startswith('#')}


def guest(vm: demo_vm.DemoVM, command: str) -> str:
    """Run COMMAND as root in the guest (sudo as the provisioning account); return its output."""
    run = vm.ssh(f'sudo -n sh -c {json.dumps(command)}')
    assert run.returncode == 0, f'{command}: {run.stderr}'
    return run.stdout


def identity(vm: demo_vm.DemoVM) -> dict[str, t.Any]:
    """The machine-id and the SSH host keys (base64 blobs) of a running guest, read from its files."""
    keys = guest(vm, 'cat /etc/ssh/ssh_host_*_key.pub')
    return {'machine_id': guest(vm, 'cat /etc/machine-id').strip(), 'keys': {line.split()[1] for line in keys.splitlines()}}


def wait_for_data_mount(vm: demo_vm.DemoVM) -> subprocess.CompletedProcess:
    """Return ``findmnt`` of /srv/data once the guest has mounted it (nofail: it may follow SSH by a moment)."""
    deadline = time.monotonic() + 60.0
    while True:
        found = vm.ssh(['findmnt', '-no', 'SOURCE,FSTYPE', demo_vm.DATA_MOUNT])
        if found.returncode == 0 or time.monotonic() > deadline:
            return found
        time.sleep(2.0)


def demo_vm_is_ready(vm: demo_vm.DemoVM) -> None:
    """The demo VM booted through its firmware, is reached as the provisioning account, and sees its data disk."""
    # what libvirt runs: OVMF from flash with the domain's own variable store, no kernel of its own
    live = ET.fromstring(vm.dumpxml()).find('os')
    assert live.find('loader').text == str(libvirt_host.OVMF_CODE)
    assert (live.find('loader').get('type'), live.find('loader').get('readonly')) == ('pflash', 'yes')
    assert live.find('nvram').text == str(vm.nvram) and vm.nvram.exists()
    assert live.find('kernel') is None and live.find('initrd') is None
    console = vm.console_log.read_text(encoding='utf-8', errors='replace')
    for mark in ('BdsDxe: starting', demo_vm.GRUB_MARK, 'Linux version'):
        assert mark in console, f'{mark!r} not on the serial console:\n{console[-3000:]}'
    cmdline = vm.ssh(['cat', '/proc/cmdline'])
    assert f'root=UUID={demo_vm.ROOT_UUID}' in cmdline.stdout and 'BOOT_IMAGE=/vmlinuz' in cmdline.stdout, cmdline
    who = vm.ssh(['id', '-un'])
    assert (who.returncode, who.stdout.strip()) == (0, demo_vm.PROVISION_USER), who
    assert guest(vm, 'id -u').strip() == '0'
    mounted = wait_for_data_mount(vm)
    assert mounted.stdout.split() == ['/dev/vdb', 'ext4'], mounted
    assert guest(vm, f'cat {demo_vm.DATA_MOUNT}/{demo_vm.DATA_MARKER}') == demo_vm.DATA_MARKER_TEXT
    # cloud-init is installed, and without a datasource its generator keeps it off the boot
    assert vm.ssh(['dpkg-query', '-W', '-f=${Status}', 'cloud-init']).stdout == 'install ok installed'
    assert 'disabled' in vm.ssh(['cloud-init', 'status']).stdout
    assert guest(vm, 'test -e /root/.ssh/authorized_keys && echo present || echo absent').strip() == 'absent'


def playbook(inventory: pathlib.Path, extra: pathlib.Path, tmp_path: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    """Run the collection's linux_image playbook; return the finished process."""
    env = dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_HOME=str(tmp_path / 'ansible-home'), ANSIBLE_FORKS='5')
    command = [ANSIBLE_PLAYBOOK, '-i', str(inventory), '-e', f'@{extra}',
               *args, 'imageprep.vm.linux_image']
    return subprocess.run(command, capture_output=True, text=True, timeout=2400, env=env, check=False)


def recap(output: str, host: str) -> dict[str, int]:
    """The PLAY RECAP counters of HOST."""
    line = next(line for line in output.splitlines() if line.startswith(host + ' ') and 'ok=' in line)
    return {key: int(value) for key, value in re.findall(r'(\w+)=(\d+)', line)}


def test_the_pipeline_makes_a_verified_image_and_restores_what_it_cannot_clean(tmp_path: pathlib.Path, request) -> None:
    libvirt_host.ensure_daemon()
    base = demo_vm.build()
    built = run_module('linux_residue_info', {'image': str(base.disk)}, tmp_path / 'runs')['identity']
    library = tmp_path / 'library'
    vms = {}
    try:
        for label in ('good', 'bad'):
            vms[label] = demo_vm.DemoVM.create(tmp_path / label, base, name=libvirt_host.unique_name(label))
        start = time.monotonic()
        for vm in vms.values():
            vm.start()
        for vm in vms.values():
            vm.wait_for_ssh(SSH_TIMEOUT)
        request.node.user_properties.append(('two demo VMs up', f'{time.monotonic() - start:.1f}s'))
        good, bad = vms['good'], vms['bad']
        demo_vm_is_ready(good)
        before = {label: identity(vm) for label, vm in vms.items()}
        guest(bad, f'mkdir -p /srv/app && ssh-keygen -q -t ed25519 -N "" -C deploy -f {PLANTED_KEY}')

        inventory = demo_vm.write_inventory(tmp_path / 'inventory.yml', good, bad)
        extra = tmp_path / 'vars.json'
        extra.write_text(json.dumps({
            'linux_deprovision_confirm': True,
            'linux_deprovision_remove_users': [demo_vm.PROVISION_USER],
            'image_pipeline_library': str(library),
            'image_pipeline_image_version': VERSION,
            'image_pipeline_backup_state_dir': str(tmp_path / 'backups'),
            'image_pipeline_verify_workdir': str(tmp_path / 'clones'),
            'image_pipeline_log_dir': str(tmp_path / 'logs'),
            'linux_deprovision_report_dir': str(tmp_path / 'reports'),
        }), encoding='utf-8')

        start = time.monotonic()
        first = playbook(inventory, extra, tmp_path)
        request.node.user_properties.append(('pipeline, two hosts', f'{time.monotonic() - start:.1f}s'))
        output = first.stdout + first.stderr
        assert first.returncode == 2, output[-20000:]
        assert recap(first.stdout, good.name)['failed'] == 0, output[-20000:]
        assert recap(first.stdout, bad.name)['failed'] == 1, output[-20000:]
        summary = {r['host']: r for r in json.loads((tmp_path / 'logs' / 'summary.json').read_text(encoding='utf-8'))}
        assert summary[good.name]['result'] == 'created', summary
        assert summary[bad.name]['result'] == 'failed' and summary[bad.name]['stage'] == 'generalize', summary
        assert summary[bad.name]['restored'] is True
        assert PLANTED_KEY in summary[bad.name]['error']
        # the summary table is printed with a line per host
        assert re.search(rf'{re.escape(good.name)}\s+{re.escape(good.name)}\s+{VERSION}\s+created', output), output[-5000:]
        assert re.search(rf'{re.escape(bad.name)}\s+{re.escape(bad.name)}\s+-\s+failed in generalize, VM restored', output)

        # good: a generalized VM image (OS disk + data disk) in the library, clean offline
        images = run_module('local_image_info', {'library': str(library), 'verify': True}, tmp_path / 'runs')['images']
        assert [(i['name'], i['version']) for i in images] == [(good.name, VERSION)], images
        image = images[0]
        assert (image['kind'], image['os_state'], image['firmware'], image['verified']) == ('vm', 'generalized', 'uefi', True)
        assert [d['role'] for d in image['disks']] == ['os', 'data']
        assert image['provenance']['generalize']['audit']['clean']
        audit = run_module('linux_residue_info', {'image': image['disks'][0]['path']}, tmp_path / 'runs')
        assert audit['clean'], audit['findings']
        assert audit['identity']['machine_id'] == 'uninitialized'
        assert audit['identity']['ssh_host_keys'] == []
        assert demo_vm.PROVISION_USER not in [a['name'] for a in audit['identity']['accounts']]
        report = pathlib.Path(image['path'], 'report.md').read_text(encoding='utf-8')
        assert f'# Image {good.name} {VERSION}' in report and 'Offline audit of the captured OS disk: clean' in report

        # the clone the pipeline booted: a new machine, unlike the source and the image build
        verify = summary[good.name]['verify']
        assert MACHINE_ID.match(verify['machine_id'])
        assert verify['machine_id'] not in (before['good']['machine_id'], built['machine_id'])
        served = set(verify['host_keys_served'])
        assert served and not served & before['good']['keys']
        assert not served & {k['public_key'] for k in built['ssh_host_keys']}
        assert served <= set(verify['host_keys_on_disk'])
        assert demo_vm.PROVISION_USER not in verify['accounts']
        assert good.state() == 'shut off'  # generalized, kept on its backup overlays
        assert not any(name.startswith('imageprep-verify-') for name in
                       libvirt_host.virsh('list', '--all', '--name').stdout.split()), 'a verify clone was left behind'

        # bad: restored from its backup and running again, as it was
        assert bad.state() == 'running'
        bad.wait_for_ssh(SSH_TIMEOUT)
        assert guest(bad, 'cat /etc/machine-id').strip() == before['bad']['machine_id']
        assert identity(bad) == before['bad']
        assert host_keys(bad.port) <= before['bad']['keys']
        assert guest(bad, f'test -s {PLANTED_KEY} && echo present').strip() == 'present'
        failure = json.loads((tmp_path / 'logs' / bad.name / 'failure.json').read_text(encoding='utf-8'))
        assert failure['result']['stage'] == 'generalize'

        # a second run for good with the same version: nothing to do, nothing changed
        start = time.monotonic()
        second = playbook(inventory, extra, tmp_path, '-e', f'imageprep_hosts={good.name}')
        request.node.user_properties.append(('second run', f'{time.monotonic() - start:.1f}s'))
        assert second.returncode == 0, (second.stdout + second.stderr)[-20000:]
        assert recap(second.stdout, good.name)['changed'] == 0, second.stdout[-5000:]
        assert [(i['name'], i['version']) for i in run_module(
            'local_image_info', {'library': str(library)}, tmp_path / 'runs')['images']] == [(good.name, VERSION)]
    finally:
        for vm in vms.values():
            vm.cleanup()
