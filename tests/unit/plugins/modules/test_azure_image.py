# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of azure_image: the generalization proof, versions, retention, disk sources, drift."""
from __future__ import annotations

import pytest

from ansible_collections.imageprep.vm.plugins.modules import azure_image as mod

LINUX_PROOF = {'format': 'imageprep.vm.linux_deprovision/1', 'host': 'web1', 'time': '2026-12-06T04:00:00Z', 'check_mode': False,
               'audit': {'clean': True, 'findings': []}, 'final_pass_pending': False}
WINDOWS_PROOF = {'format': 'imageprep.vm.windows_sysprep/1', 'host': 'win1', 'time': '2026-12-06T04:00:00Z', 'check_mode': False,
                 'outcome': 'generalized'}


def test_clean_reports_of_both_roles_are_proof():
    assert mod.proof_problems(LINUX_PROOF) == []
    assert mod.proof_problems(WINDOWS_PROOF) == []


@pytest.mark.parametrize('change, match', [
    ({'check_mode': True}, 'check-mode run'),
    ({'audit': {'clean': False, 'findings': [{'path': '/etc/ssh/ssh_host_rsa_key'}]}}, 'not clean \\(1 findings\\)'),
    ({'final_pass_pending': True}, 'final pass'),
    ({'format': 'something/1'}, 'not a report of'),
])
def test_a_linux_report_that_proves_nothing(change, match):
    problems = mod.proof_problems(dict(LINUX_PROOF, **change))
    assert problems and any(__import__('re').search(match, problem) for problem in problems)


@pytest.mark.parametrize('outcome', ['failed', 'check_mode', 'unknown'])
def test_a_windows_report_that_did_not_generalize(outcome):
    assert mod.proof_problems(dict(WINDOWS_PROOF, outcome=outcome))


def test_no_report_is_no_proof():
    assert mod.proof_problems(None) == ['no generalized_by report was given']


def test_the_proof_tag_fits_an_azure_tag():
    tag = mod.proof_tag(dict(LINUX_PROOF, host='h' * 400))
    assert tag.startswith('imageprep.vm.linux_deprovision/1 host=') and len(tag) == 256


@pytest.mark.parametrize('existing, expected', [([], '1.0.0'), (['1.0.0'], '1.0.1'), (['1.0.9', '1.0.10', '0.9.0'], '1.0.11'),
                                                (['2.1.0', 'latest', '1.9.9'], '2.1.1')])
def test_next_version(existing, expected):
    assert mod.next_version(existing) == expected


def test_retention_deletes_the_oldest_and_never_the_current():
    assert mod.versions_to_delete(['1.0.0', '1.0.2', '1.0.10', '1.0.1'], 2, '1.0.10') == ['1.0.0', '1.0.1']
    assert mod.versions_to_delete(['1.0.0', '1.0.1'], 1, '1.0.0') == ['1.0.1']
    assert mod.versions_to_delete(['1.0.0'], 3, '1.0.0') == []


def test_vm_status_from_an_instance_view():
    vm = {'id': '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1', 'location': 'West US',
          'properties': {'storageProfile': {'osDisk': {'osType': 'Linux', 'managedDisk': {'id': 'disk-os'}},
                                            'dataDisks': [{'lun': 1}, {'lun': 0}]},
                         'instanceView': {'hyperVGeneration': 'V2',
                                          'statuses': [{'code': 'ProvisioningState/succeeded'}, {'code': 'PowerState/deallocated'},
                                                       {'code': 'OSState/generalized'}]}}}
    status = mod.vm_status(vm)
    assert status['power_state'] == 'deallocated' and status['generalized'] is True
    assert (status['location'], status['os_type'], status['data_disk_luns']) == ('westus', 'linux', [0, 1])


@pytest.mark.parametrize('disk, expected', [
    ({'blob_uri': 'https://a.blob.core.windows.net/c/os.vhd'}, {'blobUri': 'https://a.blob.core.windows.net/c/os.vhd'}),
    ({'managed_disk': '/x/disks/d'}, {'managedDisk': {'id': '/x/disks/d'}}),
    ({'snapshot': '/x/snapshots/s'}, {'snapshot': {'id': '/x/snapshots/s'}}),
])
def test_disk_sources(disk, expected):
    assert mod.disk_source(disk) == expected


@pytest.mark.parametrize('disk', [{}, {'blob_uri': 'u', 'snapshot': 's'}])
def test_a_disk_needs_exactly_one_source(disk):
    with pytest.raises(mod.AzureImageError, match='exactly one'):
        mod.disk_source(disk)


def test_a_gallery_version_from_a_vhd_needs_its_storage_account():
    with pytest.raises(mod.AzureImageError, match='needs storage_account'):
        mod.gallery_disk_source({'blob_uri': 'https://a/c/os.vhd'})
    assert mod.gallery_disk_source({'blob_uri': 'https://a/c/os.vhd', 'storage_account': '/sa'}) == {'storageAccountId': '/sa', 'uri': 'https://a/c/os.vhd'}


def test_ids_compare_without_case_and_leading_slash():
    assert mod.same_id('/subscriptions/S/resourceGroups/RG/x', 'subscriptions/s/resourcegroups/rg/x')
    assert not mod.same_id(None, None)


def test_changed_properties_compare_ids_times_and_leave_unset_wishes_alone():
    current = {'source': '/subscriptions/S/vm', 'end_of_life_date': '2027-01-01T00:00:00+00:00', 'tags': {'a': '1'}, 'location': 'westus'}
    desired = {'source': 'subscriptions/s/VM', 'end_of_life_date': '2027-01-01T00:00:00Z', 'tags': {'a': '2'}, 'location': None}
    assert mod.changed_properties(current, desired, ('source', 'end_of_life_date', 'tags', 'location')) == ['tags']


# azure_image_verify's decisions

def test_verify_knows_which_api_serves_an_image():
    from ansible_collections.imageprep.vm.plugins.modules import azure_image_verify as verify
    base = '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/'
    assert verify.image_api(base + 'images/i') == '2024-11-01'
    assert verify.image_api(base + 'galleries/g/images/i/versions/1.0.0') == '2024-03-03'
    with pytest.raises(verify.VerifyError):
        verify.image_api(base + 'disks/d')


def test_verify_gives_a_specialized_image_no_os_profile_and_a_generalized_linux_one_a_key():
    from ansible_collections.imageprep.vm.plugins.modules import azure_image_verify as verify
    params = {'image_id': '/x', 'vm_size': 'Standard_B2s', 'subnet_id': '/subnet', 'admin_username': 'u', 'ssh_public_key': 'ssh-ed25519 AAA',
              'location': 'westus'}
    special = verify.vm_body(params, {'os_type': 'linux', 'os_state': 'specialized', 'data_disk_luns': [0]}, 'vm1', None)
    assert 'osProfile' not in special['properties']
    assert special['properties']['storageProfile']['dataDisks'] == [{'lun': 0, 'createOption': 'FromImage', 'deleteOption': 'Delete'}]
    general = verify.vm_body(params, {'os_type': 'linux', 'os_state': 'generalized', 'data_disk_luns': []}, 'vm1', None)
    keys = general['properties']['osProfile']['linuxConfiguration']['ssh']['publicKeys']
    assert keys == [{'path': '/home/u/.ssh/authorized_keys', 'keyData': 'ssh-ed25519 AAA'}]


def test_verify_problems():
    from ansible_collections.imageprep.vm.plugins.modules import azure_image_verify as verify
    vm = {'properties': {'provisioningState': 'Succeeded', 'storageProfile': {'dataDisks': [{'lun': 0}]},
                         'instanceView': {'statuses': [{'code': 'PowerState/running'}],
                                          'vmAgent': {'vmAgentVersion': '2.7', 'statuses': [{'displayStatus': 'Not Ready'}]}}}}
    problems, seen = verify.verify_problems(vm, {'data_disk_luns': [0, 1]}, wait_for_agent=True)
    assert seen['agent'] == {'version': '2.7', 'status': 'Not Ready'}
    assert problems == ['the VM agent is not ready (Not Ready)', 'the VM has data disks at LUNs [0], the image [0, 1]']
