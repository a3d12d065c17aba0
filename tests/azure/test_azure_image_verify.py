# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""azure_image_verify against the ARM test server: a throw-away VM from an image, checked and deleted."""
from __future__ import annotations

import re

from module_runs import run_module

RG = 'images-rg'
PROOF = {'format': 'imageprep.vm.linux_deprovision/1', 'host': 'web1', 'time': '2026-12-06T04:00:00Z', 'check_mode': False,
         'audit': {'clean': True, 'findings': []}, 'final_pass_pending': False}
VM_FROM_GALLERY = 'ComputeRP/stable/2024-11-01/examples/virtualMachineExamples/VirtualMachine_Create_FromAGeneralizedSharedImage.json'


def make_version(arm, tmp_path):
    arm.add_vm(RG, 'web1', data_disks=((0, 32), (1, 64)))
    arm.add_gallery(RG, 'corp')
    made = run_module('azure_image', {'resource_group': RG, 'gallery': 'corp', 'gallery_image': 'web', 'virtual_machine': 'web1',
                                      'generalized_by': PROOF, 'definition': {'publisher': 'p', 'offer': 'o', 'sku': 's'}},
                      tmp_path / 'runs', env=arm.env())
    assert made['rc'] == 0, made
    return made['image']['id']


def verify(arm, tmp_path, image_id, **more):
    subnet = f'/subscriptions/{arm.subscription_id}/resourceGroups/net-rg/providers/Microsoft.Network/virtualNetworks/v/subnets/s'
    args = {'image_id': image_id, 'resource_group': RG, 'location': 'westus', 'subnet_id': subnet, 'name': 'verify1'}
    args.update(more)
    return run_module('azure_image_verify', args, tmp_path / 'runs', env=arm.env())


def test_a_version_boots_with_its_data_disks_and_the_vm_is_deleted(arm, tmp_path, examples_dir):
    from arm_openapi import example_request, shape_problems  # pylint: disable=import-outside-toplevel
    image_id = make_version(arm, tmp_path)
    checked = verify(arm, tmp_path, image_id)
    assert checked['rc'] == 0 and checked['problems'] == [], checked
    assert checked['provisioning_state'] == 'Succeeded' and checked['agent']['status'] == 'Ready'
    assert checked['data_disk_luns'] == [0, 1] and checked['power_state'] == 'running'
    assert checked['vm']['deleted'] is True
    assert arm.resource(checked['vm']['id']) is None
    (body,) = [r.body for r in arm.requests if r.method == 'PUT' and r.path.endswith('/virtualMachines/verify1')]
    # the published example creates the VM on an existing NIC; this one has Azure make the NIC with the VM
    # (networkInterfaceConfigurations, validated against the OpenAPI files) and delete it, and its disks, with it
    problems = shape_problems(body, example_request(examples_dir, VM_FROM_GALLERY))
    assert [p for p in problems if not re.match(r'(tags|properties\.(networkProfile|diagnosticsProfile|storageProfile\.dataDisks'
                                                r'|osProfile\.linuxConfiguration)|properties\.storageProfile\.osDisk\.deleteOption)', p)] == [], problems
    assert arm.problems == []


def test_a_vm_whose_agent_never_gets_ready_fails_and_is_still_deleted(arm, tmp_path):
    image_id = make_version(arm, tmp_path)
    arm.vm_agent_ready = False
    failed = verify(arm, tmp_path, image_id, timeout=3)
    assert failed['rc'] == 1 and 'the VM agent is not ready' in failed['msg'], failed
    assert failed['vm']['deleted'] is True and arm.resource(failed['vm']['id']) is None


def test_keep_on_failure_leaves_the_vm(arm, tmp_path):
    image_id = make_version(arm, tmp_path)
    arm.vm_agent_ready = False
    failed = verify(arm, tmp_path, image_id, timeout=3, keep_on_failure=True)
    assert failed['rc'] == 1 and failed['vm']['deleted'] is False, failed
    assert arm.resource(failed['vm']['id']) is not None


def test_check_mode_creates_nothing(arm, tmp_path):
    image_id = make_version(arm, tmp_path)
    seen = len(arm.requests)
    checked = verify(arm, tmp_path, image_id, _ansible_check_mode=True)
    assert checked['rc'] == 0 and 'would create the VM verify1' in checked['msg'], checked
    assert [r.method for r in arm.requests[seen:] if r.path.startswith('/subscriptions/')] == ['GET', 'GET']


def test_an_unknown_image_is_a_clear_error(arm, tmp_path):
    arm.add_resource_group(RG)
    missing = f'/subscriptions/{arm.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/images/nope'
    failed = verify(arm, tmp_path, missing)
    assert failed['rc'] == 1 and 'does not exist' in failed['msg'], failed
    bad = verify(arm, tmp_path, f'/subscriptions/{arm.subscription_id}/resourceGroups/{RG}/providers/Microsoft.Compute/disks/d')
    assert bad['rc'] == 1 and 'neither a managed image nor a gallery image version' in bad['msg'], bad
