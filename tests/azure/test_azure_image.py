# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""azure_image as a real module process against the ARM test server (Azure's published examples and protocol).

Each test seeds the server, runs the module, and checks the resources the server holds afterwards and
the requests the module sent: their bodies against the OpenAPI files (``arm.problems``) and against the
shapes of the official examples.
"""
from __future__ import annotations

import re

import pytest

from arm_openapi import example_request, shape_problems
from module_runs import run_module

RG = 'images-rg'
PROOF = {'format': 'imageprep.vm.linux_deprovision/1', 'host': 'web1', 'time': '2026-12-06T04:00:00Z', 'check_mode': False,
         'audit': {'clean': True, 'findings': []}, 'final_pass_pending': False}
DEFINITION = {'publisher': 'imageprep', 'offer': 'debian12', 'sku': 'web'}
VERSION_FROM_VM = 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImageVersion_Create_WithVmAsSource.json'


def run(arm, tmp_path, env=None, **args):
    """Run azure_image with ARGS, the server's credentials and cloud from the environment."""
    return run_module('azure_image', args, tmp_path / 'runs', env=dict(arm.env(), **(env or {})))


def changes(arm, since=0):
    """Return the (method, path) of the requests after SINCE that change something."""
    return [(request.method, request.path) for request in arm.requests[since:]
            if request.method in ('PUT', 'PATCH', 'POST', 'DELETE') and request.path.startswith('/subscriptions/')]


def bodies(arm, method, pattern):
    return [request.body for request in arm.requests if request.method == method and re.search(pattern, request.path)]


def assert_shaped_like(body, examples_dir, example, openapi_extras=()):
    """Assert BODY has only the key paths of the published EXAMPLE's request, besides OPENAPI_EXTRAS.

    The extras are properties the example does not show (tags, the Hyper-V generation); the server
    checks every request against the OpenAPI files, so they are valid there (``arm.problems``).
    """
    problems = shape_problems(body, example_request(examples_dir, example))
    assert [path for path in problems if not path.startswith(tuple(openapi_extras))] == [], problems


def statuses(arm, vm):
    return [status['code'] for status in arm.instance_view(vm['id'])['statuses']]


@pytest.fixture
def seeded(arm):
    vm = arm.add_vm(RG, 'web1', hyper_v_generation='V2', data_disks=((0, 32), (1, 64)))
    arm.add_gallery(RG, 'corp')
    return vm


def gallery_args(**more):
    args = {'resource_group': RG, 'gallery': 'corp', 'gallery_image': 'debian12-web', 'virtual_machine': 'web1',
            'definition': DEFINITION, 'generalized_by': PROOF}
    args.update(more)
    return args


def test_a_vm_with_data_disks_becomes_a_gallery_version_once(arm, seeded, tmp_path, examples_dir):
    args = gallery_args(target_regions=[{'name': 'West US', 'regional_replica_count': 2},
                                        {'name': 'eastus', 'storage_account_type': 'Standard_ZRS'}])
    first = run(arm, tmp_path, **args)
    assert first['rc'] == 0, first
    assert first['changed'] and first['version'] == '1.0.0'
    assert first['actions'] == ['create_definition', 'deallocate', 'generalize', 'create_version']
    image = first['image']
    assert image['data_disk_luns'] == [0, 1] and image['hyper_v_generation'] == 'V2' and image['os_state'] == 'generalized'
    assert [(r['name'], r['regional_replica_count'], r['storage_account_type']) for r in image['target_regions']] == \
        [('eastus', 1, 'Standard_ZRS'), ('westus', 2, 'Standard_LRS')]
    stored = arm.resource(image['id'])
    assert stored['properties']['provisioningState'] == 'Succeeded'
    assert stored['tags']['imageprep_generalized_by'].startswith('imageprep.vm.linux_deprovision/1 host=web1')
    assert {'PowerState/deallocated', 'OSState/generalized'} <= set(statuses(arm, seeded))
    # the requests: valid against the OpenAPI files, shaped like the published example
    assert arm.problems == []
    (version_body,) = bodies(arm, 'PUT', r'/versions/1\.0\.0$')
    assert_shaped_like(version_body, examples_dir, VERSION_FROM_VM, openapi_extras=('tags',))
    (definition_body,) = bodies(arm, 'PUT', r'/images/debian12-web$')
    assert_shaped_like(definition_body, examples_dir, 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImage_Create.json',
                       openapi_extras=('properties.architecture',))
    # the long-running operations were followed through their status documents
    assert any('/operations/' in request.path for request in arm.requests)

    seen = len(arm.requests)
    second = run(arm, tmp_path, **args)
    assert second['rc'] == 0 and not second['changed'] and second['actions'] == [], second
    assert second['version'] == '1.0.0'
    assert changes(arm, seen) == []


def test_drift_in_replication_is_updated_with_a_diff(arm, seeded, tmp_path):
    assert run(arm, tmp_path, **gallery_args())['rc'] == 0
    seen = len(arm.requests)
    changed = run(arm, tmp_path, _ansible_diff=True, **gallery_args(
        target_regions=[{'name': 'westus', 'regional_replica_count': 3}], end_of_life_date='2027-12-31T00:00:00Z'))
    assert changed['rc'] == 0 and changed['changed'] and changed['actions'] == ['update_version'], changed
    assert changed['diff']['before']['target_regions'][0]['regional_replica_count'] == 1
    assert changed['diff']['after']['target_regions'][0]['regional_replica_count'] == 3
    assert [method for method, _path in changes(arm, seen)] == ['PUT']
    stored = arm.resource(changed['image']['id'])['properties']['publishingProfile']
    assert stored['targetRegions'][0]['regionalReplicaCount'] == 3
    assert arm.problems == []


def test_an_immutable_change_is_an_error_and_changes_nothing(arm, seeded, tmp_path):
    arm.add_vm(RG, 'web2', data_disks=())
    assert run(arm, tmp_path, **gallery_args(version='1.0.0'))['rc'] == 0
    seen = len(arm.requests)
    other = run(arm, tmp_path, **gallery_args(version='1.0.0', virtual_machine='web2'))
    assert other['rc'] == 1 and 'exists with another source' in other['msg'] and 'Azure cannot change' in other['msg'], other
    assert changes(arm, seen) == []


def test_without_proof_the_vm_is_not_generalized(arm, seeded, tmp_path):
    refused = run(arm, tmp_path, **gallery_args(generalized_by=dict(PROOF, audit={'clean': False, 'findings': [{}]})))
    assert refused['rc'] == 1 and 'refusing to mark the VM' in refused['msg'] and 'not clean' in refused['msg'], refused
    assert changes(arm) == []
    forced = run(arm, tmp_path, **gallery_args(generalized_by=None, force=True))
    assert forced['rc'] == 0 and 'generalize' in forced['actions'], forced
    assert 'imageprep_generalized_by' not in (arm.resource(forced['image']['id']).get('tags') or {})


def test_a_generation_mismatch_is_found_before_the_vm_is_touched(arm, seeded, tmp_path):
    arm.add_gallery_image(RG, 'corp', 'gen1', hyper_v_generation='V1')
    refused = run(arm, tmp_path, **gallery_args(gallery_image='gen1', definition=None))
    assert refused['rc'] == 1 and 'Hyper-V generation is V1, the source is V2' in refused['msg'], refused
    assert changes(arm) == []


def test_an_unknown_gallery_is_a_clear_error(arm, seeded, tmp_path):
    refused = run(arm, tmp_path, **gallery_args(gallery='nope'))
    assert refused['rc'] == 1 and 'the gallery nope does not exist' in refused['msg'], refused
    assert changes(arm) == []


def test_check_mode_reads_and_says_what_it_would_do(arm, seeded, tmp_path):
    checked = run(arm, tmp_path, _ansible_check_mode=True, **gallery_args())
    assert checked['rc'] == 0 and checked['changed'], checked
    assert checked['msg'] == 'would create_definition, deallocate, generalize, create_version'
    assert changes(arm) == []


def test_a_failed_creation_leaves_no_version(arm, seeded, tmp_path):
    arm.fail_operation('PUT', r'/versions/', code='GalleryImageVersionCreationFailed', message='replication failed in westus')
    failed = run(arm, tmp_path, **gallery_args(version='2.0.0'))
    assert failed['rc'] == 1 and 'replication failed in westus' in failed['msg'], failed
    assert failed['azure_error']['code'] == 'GalleryImageVersionCreationFailed'
    version_id = seeded['id'].split('/providers/')[0] + '/providers/Microsoft.Compute/galleries/corp/images/debian12-web/versions/2.0.0'
    assert arm.resource(version_id) is None


def test_a_timed_out_creation_is_waited_for_by_the_next_run(arm, tmp_path):
    arm.add_vm(RG, 'web1', power_state='deallocated', generalized=True)
    arm.add_gallery(RG, 'corp')
    arm.add_gallery_image(RG, 'corp', 'debian12-web', publisher='imageprep', offer='debian12', sku='web')
    arm.lro_polls = 3
    arm.retry_after = 1
    late = run(arm, tmp_path, timeout=1, **gallery_args(version='3.0.0'))
    assert late['rc'] == 1 and 'goes on in Azure' in late['msg'], late
    puts = len(bodies(arm, 'PUT', r'/versions/3\.0\.0$'))
    waited = run(arm, tmp_path, timeout=60, **gallery_args(version='3.0.0'))
    assert waited['rc'] == 0 and waited['actions'][0] == 'wait', waited
    assert len(bodies(arm, 'PUT', r'/versions/3\.0\.0$')) == puts
    assert waited['image']['provisioning_state'] == 'Succeeded'


def test_a_timed_out_deallocation_is_waited_for_by_the_next_run(arm, seeded, tmp_path):
    arm.add_gallery_image(RG, 'corp', 'debian12-web', publisher='imageprep', offer='debian12', sku='web')
    arm.lro_polls = 3
    arm.retry_after = 1
    late = run(arm, tmp_path, timeout=1, **gallery_args())
    assert late['rc'] == 1 and 'deallocate' in late['msg'] and 'goes on in Azure' in late['msg'], late
    arm.lro_polls = 1
    arm.retry_after = 0
    waited = run(arm, tmp_path, timeout=60, **gallery_args())
    assert waited['rc'] == 0 and waited['actions'][0] == 'wait' and 'create_version' in waited['actions'], waited
    assert len(bodies(arm, 'POST', r'/deallocate$')) == 1


def test_a_managed_image_from_a_vm_and_a_tag_update(arm, seeded, tmp_path, examples_dir):
    args = {'resource_group': RG, 'name': 'web-image', 'virtual_machine': 'web1', 'generalized_by': PROOF}
    made = run(arm, tmp_path, **args)
    assert made['rc'] == 0 and made['actions'] == ['deallocate', 'generalize', 'create_image'], made
    assert made['image']['data_disk_luns'] == [0, 1]
    (body,) = bodies(arm, 'PUT', r'/images/web-image$')
    assert_shaped_like(body, examples_dir, 'ComputeRP/stable/2024-11-01/examples/imageExamples/Image_CreateFromAVM.json',
                       openapi_extras=('tags', 'properties.hyperVGeneration'))
    assert not run(arm, tmp_path, **args)['changed']
    tagged = run(arm, tmp_path, tags={'team': 'web'}, **args)
    assert tagged['rc'] == 0 and tagged['actions'] == ['update_tags'], tagged
    assert arm.resource(made['image']['id'])['tags']['team'] == 'web'
    assert arm.problems == []


def test_uploaded_vhds_become_a_managed_image_with_their_luns(arm, tmp_path, examples_dir):
    arm.add_resource_group(RG)
    blob = 'https://store1.blob.core.windows.net/vhds/'
    made = run(arm, tmp_path, resource_group=RG, name='appliance', location='westus', os_type='linux', force=True,
               os_disk={'blob_uri': blob + 'os.vhd'}, data_disks=[{'lun': 0, 'blob_uri': blob + 'data0.vhd'}])
    assert made['rc'] == 0 and made['actions'] == ['create_image'], made
    assert made['image']['data_disk_luns'] == [0] and made['image']['os_disk_source'] == blob + 'os.vhd'
    (body,) = bodies(arm, 'PUT', r'/images/appliance$')
    assert_shaped_like(body, examples_dir, 'ComputeRP/stable/2024-11-01/examples/imageExamples/Image_Create_DataDiskFromABlobIncluded.json',
                       openapi_extras=('properties.hyperVGeneration', 'properties.storageProfile.osDisk.storageAccountType',
                                       'properties.storageProfile.dataDisks[].storageAccountType'))
    assert arm.problems == []


def test_managed_disks_become_a_gallery_version(arm, tmp_path, examples_dir):
    arm.add_gallery(RG, 'corp')
    os_disk = arm.add_disk(RG, 'os', size_gb=30, os_type='Linux')
    data_disk = arm.add_disk(RG, 'd1', size_gb=64)
    made = run(arm, tmp_path, resource_group=RG, gallery='corp', gallery_image='from-disks', definition=DEFINITION, os_type='linux',
               os_state='specialized', os_disk={'managed_disk': os_disk['id']}, data_disks=[{'lun': 1, 'managed_disk': data_disk['id']}])
    assert made['rc'] == 0 and made['actions'] == ['create_definition', 'create_version'], made
    assert made['image']['data_disk_luns'] == [1] and made['image']['os_disk_source'].endswith('/disks/os')
    # a disk is a source of the same shape as the example's snapshots ({"source": {"id": ...}})
    (body,) = bodies(arm, 'PUT', r'/versions/1\.0\.0$')
    assert_shaped_like(body, examples_dir, 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImageVersion_Create_WithSnapshotsAsSource.json')
    assert arm.problems == []


def test_retention_and_absent(arm, seeded, tmp_path):
    for number, vm in enumerate(('a', 'b', 'c')):
        arm.add_vm(RG, vm, data_disks=())
        made = run(arm, tmp_path, keep_versions=2, **gallery_args(virtual_machine=vm))
        assert made['rc'] == 0 and made['version'] == f'1.0.{number}', made
    assert made['deleted_versions'] == ['1.0.0']
    gone = run(arm, tmp_path, **gallery_args(version='1.0.2', state='absent'))
    assert gone['rc'] == 0 and gone['changed'] and gone['image'] == {}, gone
    again = run(arm, tmp_path, **gallery_args(version='1.0.2', state='absent'))
    assert again['rc'] == 0 and not again['changed']


def test_a_specialized_copy_of_a_running_vm(arm, seeded, tmp_path):
    refused = run(arm, tmp_path, **gallery_args(gallery_image='backup', os_state='specialized', generalized_by=None, deallocate=False))
    assert refused['rc'] == 1 and 'refusing to capture a running VM' in refused['msg'], refused
    copied = run(arm, tmp_path, **gallery_args(gallery_image='backup', os_state='specialized', generalized_by=None, allow_running=True))
    assert copied['rc'] == 0 and copied['actions'] == ['create_definition', 'create_version'], copied
    assert copied['image']['os_state'] == 'specialized'
    assert 'PowerState/running' in statuses(arm, seeded) and 'OSState/generalized' not in statuses(arm, seeded)


@pytest.mark.parametrize('env, match', [
    ({'AZURE_SUBSCRIPTION_ID': 'my-subscription'}, "subscription_id 'my-subscription' is not an Azure subscription ID"),
    ({'AZURE_SECRET': 'wrong'}, 'did not accept the credentials'),
])
def test_bad_credentials_are_clear_errors(arm, seeded, tmp_path, env, match):
    failed = run(arm, tmp_path, env=env, **gallery_args())
    assert failed['rc'] == 1 and re.search(match, failed['msg']), failed
    assert changes(arm) == []


def test_no_credentials_at_all(arm, seeded, tmp_path):
    env = {key: None for key in ('AZURE_CLIENT_ID', 'AZURE_SECRET', 'AZURE_TENANT', 'AZURE_SUBSCRIPTION_ID', 'AZURE_PROFILE')}
    env.update(HOME=str(tmp_path / 'empty-home'), PATH='/usr/bin:/bin')
    failed = run(arm, tmp_path, env=env, **gallery_args())
    assert failed['rc'] == 1 and 'no Azure credentials found' in failed['msg'], failed
    assert arm.requests == []


def test_a_run_without_proof_keeps_the_recorded_one(arm, seeded, tmp_path):
    assert run(arm, tmp_path, **gallery_args())['rc'] == 0
    # the VM is generalized in Azure now: a later run needs no proof, and must not drop the recorded one
    again = run(arm, tmp_path, **gallery_args(generalized_by=None, tags={'team': 'web'}))
    assert again['rc'] == 0 and again['actions'] == ['update_version'], again
    tags = arm.resource(again['image']['id'])['tags']
    assert tags['team'] == 'web' and tags['imageprep_generalized_by'].startswith('imageprep.vm.linux_deprovision/1')
    assert again['subscription_id'] == arm.subscription_id


def test_a_vm_the_guest_shut_down_is_deallocated(arm, tmp_path):
    vm = arm.add_vm(RG, 'web1', power_state='stopped', data_disks=())
    arm.add_gallery(RG, 'corp')
    made = run(arm, tmp_path, **gallery_args())
    assert made['rc'] == 0 and made['actions'] == ['create_definition', 'deallocate', 'generalize', 'create_version'], made
    assert 'PowerState/deallocated' in statuses(arm, vm)
