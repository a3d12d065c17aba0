# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The playbook imageprep.vm.azure_image, run for real with ansible-playbook against the ARM test server.

The source VMs are Azure VMs the server holds (web1, web2, web3, each with two data disks); the inside
of each is a real Debian root reached with the chroot connection, with residue planted the way a used
VM has it. The same inventory is run three times, in order: --check (nothing may change), a first run
(web1 is backed up, deprovisioned, captured and verified; web2's capture fails in Azure; web3's verify
VM cannot be made, so its new version must go), and a second run (nothing to do for web1; web2 and web3,
generalized in Azure by the first run, are refused before anything is touched). The upload path (a
local image, its disks sent to Azurite as VHDs) has a test of its own.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import types

import pytest

import debian_root
import plant_used_vm
from module_runs import make_disk, run_module
from tree_listing import listing

RG = 'images-rg'
GALLERY = 'corp'
TOKEN = re.compile(r'/oauth2/v2\.0/token$')
# the time one ansible-playbook run may take (a run takes 20-40 s here)
RUN_TIMEOUT = 600


def playbook(inventory: dict, workdir: pathlib.Path, env: dict, *options: str) -> types.SimpleNamespace:
    """Run imageprep.vm.azure_image on INVENTORY; return its exit code, output and PLAY RECAP counts per host."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'inventory.json').write_text(json.dumps(inventory), encoding='utf-8')
    run = subprocess.run(['ansible-playbook', '-i', str(workdir / 'inventory.json'), *options, 'imageprep.vm.azure_image'],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
                         env=dict(os.environ, ANSIBLE_NOCOLOR='1', ANSIBLE_HOME=str(workdir / 'ansible-home'), **env))
    (workdir / 'output.txt').write_text(run.stdout + run.stderr, encoding='utf-8')
    recap = {line.split()[0]: {key: int(value) for key, value in re.findall(r'(\w+)=(\d+)', line)}
             for line in run.stdout.split('PLAY RECAP')[-1].splitlines() if 'ok=' in line}
    return types.SimpleNamespace(rc=run.returncode, output=run.stdout + run.stderr, recap=recap)


def task_lines(output: str, task: str) -> list[str]:
    """The result lines of the task named TASK (e.g. ``changed: [web1 -> localhost]``), one per host."""
    match = re.search(r'TASK \[(?:[\w.]+ : )?' + re.escape(task) + r'\] \*+\n(.*?)\n\n', output, re.S)
    assert match, f'no task {task!r} in the output'
    return match.group(1).splitlines()


def changes(requests, since: int = 0) -> list[tuple[str, str]]:
    """The requests after SINCE that are not reads (the sign-in's token request aside)."""
    return [(r.method, r.path) for r in requests[since:] if r.method != 'GET' and not TOKEN.search(r.path)]


def summary(log_dir: pathlib.Path) -> dict[str, dict]:
    return {row['host']: row for row in json.loads((log_dir / 'summary.json').read_text(encoding='utf-8'))}


def statuses(arm, resource_id: str) -> set[str]:
    return {status['code'] for status in arm.instance_view(resource_id)['statuses']}


def gallery_path(arm, *names: str) -> str:
    path = f'/subscriptions/{arm.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/galleries/{GALLERY}'
    for kind, name in zip(('images', 'versions'), names):
        path += f'/{kind}/{name}'
    return path


def subnet(arm) -> str:
    return f'/subscriptions/{arm.subscription_id}/resourceGroups/net-rg/providers/Microsoft.Network/virtualNetworks/build/subnets/verify'


@pytest.fixture(scope='module')
def vm_runs(examples_dir, tmp_path_factory):  # pylint: disable=too-many-locals
    """Two Azure VMs with Debian insides, and the playbook run on them: --check, then twice for real."""
    from arm_server import ArmServer  # pylint: disable=import-outside-toplevel
    work = tmp_path_factory.mktemp('vm-pipeline')
    with ArmServer(examples_dir, work / 'arm') as arm:
        vms = {name: arm.add_vm(RG, name, data_disks=((0, 32), (1, 64))) for name in ('web1', 'web2', 'web3')}
        arm.add_gallery(RG, GALLERY)
        # web2's version is the one whose creation fails in Azure (its backup, in web2-backup, is made)
        arm.fail_operation('PUT', r'/galleries/corp/images/web2/versions/', code='InternalOperationError',
                           message='An internal execution error occurred. Please retry later.')
        roots = {}
        for name in vms:
            roots[name] = debian_root.copy('guest', work / f'root-{name}')
            plant_used_vm.plant(roots[name], 'debian')
        host_keys = sorted(str(p.relative_to(roots['web1'])) for p in (roots['web1'] / 'etc/ssh').glob('ssh_host_*_key'))
        log_dir = work / 'logs'
        inventory = {'all': {
            'hosts': {name: {'ansible_connection': 'community.general.chroot', 'ansible_host': str(root),
                             'ansible_python_interpreter': '/usr/bin/python3'} for name, root in roots.items()},
            'vars': {'azure_image_pipeline_resource_group': RG, 'azure_image_pipeline_gallery': GALLERY,
                     'azure_image_pipeline_verify_subnet_id': subnet(arm), 'azure_image_pipeline_log_dir': str(log_dir),
                     'linux_deprovision_confirm': True, 'linux_deprovision_report_dir': str(work / 'reports')}}}

        # web3's verify VM cannot be created (its resource group does not exist): the version is not verified
        inventory['all']['hosts']['web3']['azure_image_pipeline_verify_resource_group'] = 'no-such-rg'
        before = {name: listing(root) for name, root in roots.items()}
        check = playbook(inventory, work / 'check', arm.env(), '--check')
        after_check = {name: listing(root, skip=['/root/.ansible']) for name, root in roots.items()}
        check_requests = list(arm.requests)
        check_logs = log_dir.exists()

        first = playbook(inventory, work / 'first', arm.env())
        first_summary = summary(log_dir)
        first_failure = {name: json.loads((log_dir / name / 'failure.json').read_text(encoding='utf-8')) for name in ('web2', 'web3')}
        seen = len(arm.requests)
        second = playbook(inventory, work / 'second', arm.env())
        yield types.SimpleNamespace(arm=arm, vms=vms, roots=roots, host_keys=host_keys, log_dir=log_dir, before=before,
                                    check=check, after_check=after_check, check_requests=check_requests, check_logs=check_logs,
                                    first=first, first_summary=first_summary, first_failure=first_failure, seen=seen, second=second,
                                    second_summary=summary(log_dir))


def test_check_mode_changes_nothing(vm_runs):
    run = vm_runs.check
    assert run.rc == 0, run.output[-20000:]
    assert re.search(r'web1\s+web1\s+1\.0\.0\s+check\s', run.output), run.output[-5000:]  # the version it would make
    assert changes(vm_runs.check_requests) == []
    # what it would do was said: the backup would be taken, the residue would be removed
    assert 'changed: [web1 -> localhost]' in task_lines(run.output, 'Capture a specialized backup version of the running VM')
    assert 'changed: [web1]' in task_lines(run.output, 'Remove the residue')
    # the guests: only Ansible's own remote tmp of the account it ran as appeared
    assert vm_runs.after_check == vm_runs.before
    assert not vm_runs.check_logs


def test_the_first_run_backs_up_generalizes_captures_and_verifies(vm_runs):  # pylint: disable=too-many-locals
    arm, run = vm_runs.arm, vm_runs.first
    assert run.rc == 2, run.output[-20000:]  # web2 and web3 failed (next tests)
    assert run.recap['web1']['failed'] == 0 and run.recap['web1']['changed'] > 0, run.recap
    result = vm_runs.first_summary['web1']
    assert (result['result'], result['version'], result['stage']) == ('made', '1.0.0', 'finish'), result
    assert set(result['timings']) == {'preflight', 'backup', 'generalize', 'capture', 'verify', 'finish'}
    assert re.search(r'web1\s+web1\s+1\.0\.0\s+made\s', run.output)

    # the version: captured from the VM with both data disks, with the deprovisioning report as proof
    version = arm.resource(gallery_path(arm, 'web1', '1.0.0'))
    assert result['image_id'].lower() == version['id'].lower()
    props = version['properties']
    assert props['provisioningState'] == 'Succeeded'
    assert props['storageProfile']['source']['virtualMachineId'].lower() == vm_runs.vms['web1']['id'].lower()
    assert sorted(disk['lun'] for disk in props['storageProfile']['dataDiskImages']) == [0, 1]
    assert version['tags']['imageprep_generalized_by'].startswith('imageprep.vm.linux_deprovision/')
    definition = arm.resource(gallery_path(arm, 'web1'))['properties']
    assert (definition['osState'], definition['hyperVGeneration'], definition['identifier']['sku']) == ('Generalized', 'V2', 'web1')

    # the backup: a specialized version of the running VM, in web1-backup, taken before the VM was deallocated
    backup_definition = arm.resource(gallery_path(arm, 'web1-backup'))['properties']
    assert (backup_definition['osState'], backup_definition['identifier']['sku']) == ('Specialized', 'web1-backup')
    backup = arm.resource(gallery_path(arm, 'web1-backup', '1.0.0'))
    assert result['backup'].lower() == backup['id'].lower()
    assert backup['properties']['storageProfile']['source']['virtualMachineId'].lower() == vm_runs.vms['web1']['id'].lower()
    first_requests = arm.requests[:vm_runs.seen]
    order = [(r.method, r.path.lower()) for r in first_requests if r.method in ('PUT', 'POST')]
    web1 = vm_runs.vms['web1']['id'].lower()
    assert order.index(('PUT', gallery_path(arm, 'web1-backup', '1.0.0').lower())) < order.index(('POST', web1 + '/deallocate')) \
        < order.index(('POST', web1 + '/generalize')) < order.index(('PUT', gallery_path(arm, 'web1', '1.0.0').lower()))

    # the VM: deallocated and generalized in Azure
    assert {'PowerState/deallocated', 'OSState/generalized'} <= statuses(arm, vm_runs.vms['web1']['id'])

    # verify: a throw-away VM from the new version was created, then deleted
    verify_vms = f'/resourcegroups/{RG}/providers/microsoft.compute/virtualmachines/imageprep-verify-'
    created = [r for r in first_requests if r.method == 'PUT' and verify_vms in r.path.lower()]
    assert len(created) == 1, [r.path for r in first_requests if r.method == 'PUT']  # web2 never got that far, web3's is elsewhere
    assert created[0].body['properties']['storageProfile']['imageReference']['id'].lower() == version['id'].lower()
    assert ('DELETE', created[0].path) in [(r.method, r.path) for r in first_requests]
    assert arm.resource(created[0].path) is None
    assert result['verify']['vm']['deleted'] is True

    # the guest was deprovisioned inside: its SSH host keys are gone
    assert vm_runs.host_keys
    assert not list((vm_runs.roots['web1'] / 'etc/ssh').glob('ssh_host_*_key'))
    assert arm.problems == []


def test_a_failed_capture_leaves_no_version_and_says_where_the_backup_is(vm_runs):
    arm, run = vm_runs.arm, vm_runs.first
    assert run.recap['web2']['failed'] == 1 and run.recap['web2']['unreachable'] == 0, run.recap
    result = vm_runs.first_summary['web2']
    assert (result['result'], result['stage'], result['restored']) == ('failed', 'capture', False), result
    assert 'An internal execution error occurred' in result['error']
    assert re.search(r'web2\s+web2\s+1\.0\.0\s+failed in capture', run.output)
    # the backup is named as the way back; the version Azure failed to make is gone
    backup = arm.resource(gallery_path(arm, 'web2-backup', '1.0.0'))
    assert backup is not None and backup['id'].lower() in result['message'].lower()
    assert 'create a VM from the backup' in result['message']
    assert arm.resource(gallery_path(arm, 'web2', '1.0.0')) is None
    failure = vm_runs.first_failure['web2']
    assert failure['result']['stage'] == 'capture' and failure['failed_task'] == 'Capture the VM, or register the uploaded disks'
    assert 'InternalOperationError' in json.dumps(failure['failed_result'])
    assert not (vm_runs.log_dir / 'web1').exists()


def test_a_failed_verify_deletes_the_unverified_version(vm_runs):
    arm, run = vm_runs.arm, vm_runs.first
    assert run.recap['web3']['failed'] == 1, run.recap
    result = vm_runs.first_summary['web3']
    assert (result['result'], result['stage']) == ('failed', 'verify'), result
    assert 'no-such-rg' in result['error']
    # the version was made (the capture ran to its end), then deleted: no unverified image is left
    made = gallery_path(arm, 'web3', '1.0.0')
    assert ('PUT', made.lower()) in [(r.method, r.path.lower()) for r in arm.requests[:vm_runs.seen]]
    assert ('DELETE', made.lower()) in [(r.method, r.path.lower()) for r in arm.requests[:vm_runs.seen]]
    assert arm.resource(made) is None
    assert result['image_id'].lower() == made.lower() and 'this run made was deleted' in result['message']
    assert arm.resource(gallery_path(arm, 'web3-backup', '1.0.0')) is not None
    assert vm_runs.first_failure['web3']['result']['stage'] == 'verify'


def test_a_second_run_changes_nothing(vm_runs):
    arm, run = vm_runs.arm, vm_runs.second
    result = vm_runs.second_summary['web1']
    assert (result['result'], result['version']) == ('unchanged', '1.0.0'), result
    assert list(result['timings']) == ['preflight']
    assert run.recap['web1']['changed'] == 0 and run.recap['web1']['failed'] == 0, run.recap
    assert changes(arm.requests, vm_runs.seen) == []
    # web2 and web3, generalized in Azure by the failed runs, are refused before anything is touched
    for name in ('web2', 'web3'):
        refused = vm_runs.second_summary[name]
        assert (refused['result'], refused['stage']) == ('failed', 'preflight'), refused
        assert 'is generalized in Azure' in refused['error'] and 'the guest was not touched' in refused['message']
    assert run.rc == 2


def test_a_local_image_is_uploaded_registered_and_verified(examples_dir, tmp_path):  # pylint: disable=too-many-locals
    from arm_server import ArmServer  # pylint: disable=import-outside-toplevel
    from azurite import Azurite  # pylint: disable=import-outside-toplevel
    from azure.storage.blob import BlobServiceClient  # pylint: disable=import-outside-toplevel

    library = tmp_path / 'library'
    os_disk = make_disk(tmp_path / 'os.qcow2', 'qcow2', 24 * 2**20 + 4096, [(0x5a, 0, 2**20), (0x33, 20 * 2**20, 65536)])
    data_disk = make_disk(tmp_path / 'data.qcow2', 'qcow2', 8 * 2**20, [(0x77, 2**20, 512 * 1024)])
    proof = {'format': 'imageprep.vm.linux_deprovision/1', 'host': 'builder', 'time': '2026-12-06T04:00:00Z', 'check_mode': False,
             'audit': {'clean': True, 'findings': []}, 'final_pass_pending': False}
    made = run_module('local_image', {'library': str(library), 'name': 'appliance', 'version': '2.1.0', 'firmware': 'uefi',
                                      'disks': [str(os_disk), {'path': str(data_disk), 'lun': 3}],
                                      'provenance': {'generalize': proof}}, tmp_path / 'runs')
    assert made['changed'], made
    with ArmServer(examples_dir, tmp_path / 'arm') as arm, Azurite(tmp_path / 'azurite') as azurite:
        arm.add_gallery(RG, GALLERY)
        BlobServiceClient.from_connection_string(azurite.connection_string).create_container('vhds')
        log_dir = tmp_path / 'logs'
        inventory = {'all': {'hosts': {'appliance': {}}, 'vars': {
            'azure_image_pipeline_source': 'local', 'azure_image_pipeline_local_library': str(library),
            'azure_image_pipeline_resource_group': RG, 'azure_image_pipeline_gallery': GALLERY,
            'azure_image_pipeline_storage_account': azurite.account, 'azure_image_pipeline_storage_account_key': azurite.key,
            'azure_image_pipeline_storage_blob_endpoint': azurite.blob_endpoint, 'azure_image_pipeline_storage_container': 'vhds',
            'azure_image_pipeline_upload_tmpdir': str(tmp_path), 'azure_image_pipeline_verify_subnet_id': subnet(arm),
            'azure_image_pipeline_log_dir': str(log_dir),
            # the credentials and the cloud through the role's module_defaults, none in the environment
            'azure_image_pipeline_auth': {'client_id': arm.client_id, 'secret': arm.secret, 'tenant': arm.tenant_id,
                                          'subscription_id': arm.subscription_id, 'cloud_environment': arm.url}}}}
        env = {'REQUESTS_CA_BUNDLE': arm.ca_file}
        assert not [name for name in os.environ if name.startswith('AZURE_')]
        first = playbook(inventory, tmp_path / 'first', env)
        assert first.rc == 0, first.output[-20000:]
        result = summary(log_dir)['appliance']
        assert (result['result'], result['version']) == ('made', '1.0.0'), result
        assert set(result['timings']) == {'preflight', 'capture', 'verify', 'finish'}

        # the blobs: one fixed VHD per disk, a whole number of MiB plus the footer
        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client('vhds')
        blobs = {blob.name: blob.size for blob in container.list_blobs()}
        assert blobs == {'appliance-2.1.0-os.vhd': 25 * 2**20 + 512, 'appliance-2.1.0-lun3.vhd': 8 * 2**20 + 512}, blobs
        # the version: registered from those blobs (OS disk, data disk at its LUN), generalized with the image's provenance as proof
        version = arm.resource(gallery_path(arm, 'appliance', '1.0.0'))
        storage = version['properties']['storageProfile']
        assert storage['osDiskImage']['source']['uri'] == f'{azurite.blob_endpoint}/vhds/appliance-2.1.0-os.vhd'
        assert [(d['lun'], d['source']['uri']) for d in storage['dataDiskImages']] == \
            [(3, f'{azurite.blob_endpoint}/vhds/appliance-2.1.0-lun3.vhd')]
        assert storage['osDiskImage']['source']['storageAccountId'].endswith(f'/providers/Microsoft.Storage/storageAccounts/{azurite.account}')
        assert version['tags']['imageprep_generalized_by'].startswith('imageprep.vm.linux_deprovision/1 host=builder')
        definition = arm.resource(gallery_path(arm, 'appliance'))['properties']
        assert (definition['osState'], definition['hyperVGeneration']) == ('Generalized', 'V2')  # UEFI firmware: generation 2
        verify_vms = [r.path for r in arm.requests if r.method == 'PUT' and '/virtualmachines/imageprep-verify-' in r.path.lower()]
        assert len(verify_vms) == 1 and arm.resource(verify_vms[0]) is None
        assert arm.problems == []

        seen = len(arm.requests)
        second = playbook(inventory, tmp_path / 'second', env)
        assert second.rc == 0 and second.recap['appliance']['changed'] == 0, second.output[-20000:]
        assert summary(log_dir)['appliance']['result'] == 'unchanged'
        assert changes(arm.requests, seen) == []
        assert {blob.name: blob.size for blob in container.list_blobs()} == blobs


def test_settings_that_cannot_work_fail_in_preflight(tmp_path):
    """Verify without a subnet, and a backup without a gallery, fail before any connection or Azure request."""
    log_dir = tmp_path / 'logs'
    # 192.0.2.1 (TEST-NET-1) answers nothing: a connection attempt would make the host unreachable
    inventory = {'all': {'hosts': {
        'nosubnet': {'azure_image_pipeline_gallery': GALLERY, 'azure_image_pipeline_verify': True},
        'nogallery': {'azure_image_pipeline_verify': False},
    }, 'vars': {'ansible_host': '192.0.2.1', 'azure_image_pipeline_resource_group': RG, 'azure_image_pipeline_log_dir': str(log_dir)}}}
    run = playbook(inventory, tmp_path, {'ANSIBLE_TIMEOUT': '5'})
    assert run.rc == 2, run.output[-10000:]
    results = summary(log_dir)
    for name, cause in (('nosubnet', 'azure_image_pipeline_verify_subnet_id is empty'), ('nogallery', 'no gallery is set')):
        assert (results[name]['result'], results[name]['stage']) == ('failed', 'preflight'), results[name]
        assert cause in results[name]['error'] and 'the guest was not touched' in results[name]['message']
        assert run.recap[name]['unreachable'] == 0 and run.recap[name]['failed'] == 1, run.recap


def test_the_playbook_parses(tmp_path):
    (tmp_path / 'inventory.json').write_text('{"all": {"hosts": {"vm1": {}}}}', encoding='utf-8')
    run = subprocess.run(['ansible-playbook', '-i', str(tmp_path / 'inventory.json'), '--syntax-check', 'imageprep.vm.azure_image'],
                         capture_output=True, text=True, timeout=120, check=False,
                         env=dict(os.environ, ANSIBLE_HOME=str(tmp_path / 'ansible-home')))
    assert run.returncode == 0, run.stdout + run.stderr
