# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""azure_image_info as a real module process against the ARM test server.

The server is seeded once for this file (the module only reads): a generalized VM, managed images made
from it and from a blob through the server's REST API (more than a page of them, so the module must
follow nextLink), and a gallery whose versions are numbered so that sorting as text would give other
answers than sorting as versions.
"""
from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import requests

from arm_server import ArmServer
from module_runs import run_module

API_COMPUTE = '2024-11-01'
API_GALLERY = '2024-03-03'
VM_GROUP, GROUP_A, GROUP_B = 'vms', 'images-a', 'images-b'
VM_IMAGES = {GROUP_A: ['web-1', 'web-2', 'web-3'], GROUP_B: ['web-4']}
BLOB_IMAGE = (GROUP_B, 'from-blob', 'https://imagestore.blob.core.windows.net/vhds/web-os.vhd')
# version -> excluded from latest: as text 1.2.0 sorts last; as versions 1.11.0, which is excluded, then 1.10.0
VERSIONS = {'1.0.0': False, '1.2.0': False, '1.10.0': False, '1.11.0': True}
REGIONS = [{'name': 'westus', 'regionalReplicaCount': 1, 'storageAccountType': 'Standard_LRS'},
           {'name': 'eastus', 'regionalReplicaCount': 2, 'storageAccountType': 'Standard_ZRS'}]


class Rest:
    """Calls to the server the way any ARM client makes them: a token from its identity endpoint, then REST."""

    def __init__(self, arm):
        self.arm = arm
        self.headers = {}
        metadata = self.send('GET', f'{arm.url}/metadata/endpoints', params={'api-version': '2019-05-01'}).json()
        auth = metadata['authentication']
        token = self.send('POST', f"{auth['loginEndpoint'].rstrip('/')}/{arm.tenant_id}/oauth2/v2.0/token", data={
            'grant_type': 'client_credentials', 'client_id': arm.client_id, 'client_secret': arm.secret,
            'scope': auth['audiences'][0].rstrip('/') + '/.default'})
        token.raise_for_status()
        self.headers['Authorization'] = f"Bearer {token.json()['access_token']}"
        self.base = metadata['resourceManager'].rstrip('/')

    def send(self, method, url, **kwargs):
        # verify given per request: a REQUESTS_CA_BUNDLE in the environment would win over a default
        return requests.request(method, url, headers=self.headers, verify=self.arm.ca_file, timeout=30, **kwargs)

    def path(self, group, *type_names):
        path = f'/subscriptions/{self.arm.subscription_id}/resourceGroups/{group}/providers/Microsoft.Compute'
        for kind, name in zip(type_names[::2], type_names[1::2]):
            path += f'/{kind}/{name}'
        return path

    def put(self, path, api_version, body):
        """PUT and follow Azure-AsyncOperation to the end; return the resource."""
        answer = self.send('PUT', self.base + path, params={'api-version': api_version}, json=body)
        assert answer.status_code in (200, 201), answer.text
        self.follow(answer)
        final = self.get(path, api_version).json()
        assert final['properties']['provisioningState'].lower() in ('succeeded', 'created'), final
        return final

    def post(self, path, api_version):
        answer = self.send('POST', self.base + path, params={'api-version': api_version})
        assert answer.status_code in (200, 202), answer.text
        self.follow(answer)

    def follow(self, answer):
        """Wait for the long-running operation ANSWER started (Azure-AsyncOperation, else Location) to succeed."""
        operation = answer.headers.get('Azure-AsyncOperation')
        location = answer.headers.get('Location')
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if operation:
                status = self.send('GET', operation).json()['status']
                if status != 'InProgress':
                    assert status == 'Succeeded', status
                    return
            elif location:
                if self.send('GET', location).status_code != 202:
                    return
            else:
                return
            time.sleep(0.05)
        raise AssertionError(f'the operation of {answer.request.method} {answer.url} did not end')

    def get(self, path, api_version, **query):
        return self.send('GET', self.base + path, params=dict(query, **{'api-version': api_version}))


@pytest.fixture(scope='module')
def seeded(examples_dir, tmp_path_factory):
    """The ARM server with the VM, images and gallery this file reads; yields (arm, facts)."""
    with ArmServer(examples_dir, tmp_path_factory.mktemp('arm')) as arm:
        rest = Rest(arm)
        vm = arm.add_vm(VM_GROUP, 'web', os_type='Linux', hyper_v_generation='V2', data_disks=((0, 32), (1, 64)), os_disk_gb=30)
        vm_path = rest.path(VM_GROUP, 'virtualMachines', 'web')
        rest.post(vm_path + '/deallocate', API_COMPUTE)
        rest.post(vm_path + '/generalize', API_COMPUTE)
        for group in (GROUP_A, GROUP_B):
            arm.add_resource_group(group)
        for group, names in VM_IMAGES.items():
            for name in names:
                rest.put(rest.path(group, 'images', name), API_COMPUTE,
                         {'location': 'westus', 'properties': {'sourceVirtualMachine': {'id': vm['id']}}, 'tags': {'image': name}})
        group, name, blob = BLOB_IMAGE
        rest.put(rest.path(group, 'images', name), API_COMPUTE, {'location': 'westus', 'properties': {
            'hyperVGeneration': 'V1', 'storageProfile': {'osDisk': {'osType': 'Linux', 'osState': 'Generalized', 'blobUri': blob}}}})
        arm.add_gallery(GROUP_A, 'golden')
        arm.add_gallery_image(GROUP_A, 'golden', 'web', os_type='Linux', os_state='Generalized', hyper_v_generation='V2',
                              publisher='imageprep', offer='demo', sku='web')
        arm.add_gallery_image(GROUP_A, 'golden', 'empty', hyper_v_generation='V2')
        for version, excluded in VERSIONS.items():
            rest.put(rest.path(GROUP_A, 'galleries', 'golden', 'images', 'web', 'versions', version), API_GALLERY, {
                'location': 'westus', 'properties': {
                    'publishingProfile': {'targetRegions': REGIONS, 'excludeFromLatest': excluded},
                    'storageProfile': {'source': {'virtualMachineId': vm['id']}}}})
        assert not arm.problems, arm.problems
        yield arm, {'vm': vm, 'rest': rest}


def module_env(arm, home):
    """The module's environment: the server's credentials and CA, no other AZURE_* setting, an empty HOME."""
    env = {key: None for key in os.environ if key.startswith(('AZURE_', 'IDENTITY_', 'MSI_'))}
    env.update(arm.env(), HOME=str(home))
    return env


def traced(arm, args, tmp_path, env=None):
    """Run azure_image_info with ARGS; return its result and the requests it made."""
    home = tmp_path / 'home'
    home.mkdir(exist_ok=True)
    first = len(arm.requests)
    result = run_module('azure_image_info', args, tmp_path, env=env if env is not None else module_env(arm, home))
    return result, arm.requests[first:]


def run(arm, args, tmp_path, env=None):
    """Run azure_image_info with ARGS; return its result."""
    return traced(arm, args, tmp_path, env)[0]


def returned(result):
    """Return which of the module's lists RESULT holds."""
    return set(result) & {'images', 'gallery_images', 'gallery_image_versions', 'marketplace'}


def test_managed_images_of_the_subscription_are_read_across_pages(seeded, tmp_path):
    arm, facts = seeded
    result, sent = traced(arm, {}, tmp_path)
    assert result['rc'] == 0 and result['changed'] is False, result
    assert returned(result) == {'images'}
    expected = sorted([(group, name) for group, names in VM_IMAGES.items() for name in names] + [BLOB_IMAGE[:2]])
    assert [(image['resource_group'], image['name']) for image in result['images']] == expected
    # more images than fit one page: the module followed nextLink
    pages = [request for request in sent if request.method == 'GET' and request.path.lower().endswith('/providers/microsoft.compute/images')]
    assert len(pages) >= 2, [(request.path, request.query) for request in sent]
    by_name = {image['name']: image for image in result['images']}
    captured = by_name['web-1']
    assert captured['source_virtual_machine'].lower() == facts['vm']['id'].lower()
    assert (captured['os_type'], captured['os_state'], captured['hyper_v_generation']) == ('Linux', 'Generalized', 'V2')
    assert captured['tags'] == {'image': 'web-1'}
    assert captured['id'].lower() == facts['rest'].path(GROUP_A, 'images', 'web-1').lower()
    assert [disk['lun'] for disk in captured['data_disks']] == [0, 1]
    blob = by_name[BLOB_IMAGE[1]]
    assert blob['os_disk']['source'] == BLOB_IMAGE[2] and blob['os_disk']['source_type'] == 'blob'
    assert blob['hyper_v_generation'] == 'V1' and blob['data_disks'] == []
    assert not arm.problems, arm.problems


def test_managed_images_of_a_group_and_by_name(seeded, tmp_path):
    arm = seeded[0]
    result = run(arm, {'resource_group': GROUP_A}, tmp_path)
    assert [image['name'] for image in result['images']] == VM_IMAGES[GROUP_A], result
    result, sent = traced(arm, {'resource_group': GROUP_B, 'name': BLOB_IMAGE[1]}, tmp_path)
    assert [image['name'] for image in result['images']] == [BLOB_IMAGE[1]], result
    assert [request.method for request in sent if '/images' in request.path.lower()] == ['GET']
    result = run(arm, {'resource_group': GROUP_B, 'name': 'no-such-image'}, tmp_path)
    assert result['rc'] == 0 and result['images'] == [], result


def test_gallery_versions_sorted_as_versions_with_replication_status(seeded, tmp_path):
    arm, facts = seeded
    result, sent = traced(arm, {'resource_group': GROUP_A, 'gallery': 'golden'}, tmp_path)
    assert result['rc'] == 0, result
    assert returned(result) == {'gallery_images', 'gallery_image_versions'}
    assert [item['name'] for item in result['gallery_images']] == ['empty', 'web']
    web = result['gallery_images'][1]
    assert web['identifier'] == {'publisher': 'imageprep', 'offer': 'demo', 'sku': 'web'} and web['hyper_v_generation'] == 'V2'
    versions = result['gallery_image_versions']
    assert [version['name'] for version in versions] == sorted(VERSIONS, key=lambda name: tuple(map(int, name.split('.'))))
    for version in versions:
        assert (version['gallery'], version['gallery_image'], version['os_type'], version['os_state']) == (
            'golden', 'web', 'Linux', 'Generalized')
        assert version['exclude_from_latest'] is VERSIONS[version['name']]
        assert [(region['name'], region['regional_replica_count'], region['storage_account_type']) for region in version['target_regions']] == [
            (region['name'], region['regionalReplicaCount'], region['storageAccountType']) for region in REGIONS]
        assert version['storage_profile']['source_id'].lower() == facts['vm']['id'].lower()
        assert version['published_date'] and version['provisioning_state'] == 'Succeeded'
        status = version['replication_status']
        assert status['aggregated_state'] in ('Unknown', 'InProgress', 'Completed', 'Failed'), status
        assert status['summary'] and all(entry['state'] in ('Unknown', 'Replicating', 'Completed', 'Failed') for entry in status['summary'])
        # the module's view is the server's own answer to a read with $expand=ReplicationStatus
        direct = facts['rest'].get(facts['rest'].path(GROUP_A, 'galleries', 'golden', 'images', 'web', 'versions', version['name']),
                                   API_GALLERY, **{'$expand': 'ReplicationStatus'}).json()
        assert status['aggregated_state'] == direct['properties']['replicationStatus']['aggregatedState']
    expanded = [request for request in sent if request.query.get('$expand') == 'ReplicationStatus']
    assert len(expanded) == len(VERSIONS)
    assert not arm.problems, arm.problems


def test_latest_skips_excluded_versions_and_compares_numbers(seeded, tmp_path):
    arm = seeded[0]
    args = {'resource_group': GROUP_A, 'gallery': 'golden', 'gallery_image': 'web', 'version': 'latest', 'replication_status': False}
    result, sent = traced(arm, args, tmp_path)
    assert [version['name'] for version in result['gallery_image_versions']] == ['1.10.0'], result
    assert 'replication_status' not in result['gallery_image_versions'][0]
    assert not [request for request in sent if request.query.get('$expand')]


@pytest.mark.parametrize('args, versions', [
    ({'gallery_image': 'web', 'version': '1.2.0'}, ['1.2.0']),
    ({'gallery_image': 'web', 'version': '9.9.9'}, []),
    ({'gallery_image': 'empty'}, []),
    ({'gallery_image': 'empty', 'version': 'latest'}, []),
])
def test_gallery_selection(seeded, tmp_path, args, versions):
    arm = seeded[0]
    result = run(arm, dict(args, resource_group=GROUP_A, gallery='golden'), tmp_path)
    assert result['rc'] == 0 and [version['name'] for version in result['gallery_image_versions']] == versions, result
    assert [item['name'] for item in result['gallery_images']] == [args['gallery_image']]


@pytest.mark.parametrize('args, message', [
    ({'resource_group': GROUP_A, 'gallery': 'nope'}, 'gallery nope not found in resource group images-a'),
    ({'resource_group': 'no-such-group', 'gallery': 'golden'}, 'gallery golden not found in resource group no-such-group'),
    ({'resource_group': GROUP_A, 'gallery': 'golden', 'gallery_image': 'nope'},
     'image definition nope not found in gallery golden (resource group images-a)'),
])
def test_unknown_gallery_or_definition_is_a_clear_error(seeded, tmp_path, args, message):
    arm = seeded[0]
    result = run(arm, args, tmp_path)
    assert result['rc'] == 1 and result['failed'], result
    assert result['msg'].startswith(message), result['msg']
    assert result['azure_error']['status'] == 404 and result['azure_error']['code'], result


def test_marketplace_levels_down_to_the_latest_image(seeded, tmp_path):
    arm, facts = seeded
    location = 'westus'
    mp = {'location': location}
    levels = ['publisher', 'offer', 'sku']
    for key in levels:
        result = run(arm, {'marketplace': mp}, tmp_path)
        assert result['rc'] == 0 and returned(result) == {'marketplace'}, result
        entries = result['marketplace']
        assert entries and all(entry['location'] == location and entry[key] for entry in entries), entries
        names = [entry[key] for entry in entries]
        assert names == sorted(names, key=str.lower)
        mp = dict(mp, **{key: names[0]})
    # the versions, as the server lists them, sorted as versions
    result = run(arm, {'marketplace': mp}, tmp_path)
    versions = [entry['version'] for entry in result['marketplace']]
    listed = facts['rest'].get(
        f"/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/locations/{location}/publishers/"
        f"{mp['publisher']}/artifacttypes/vmimage/offers/{mp['offer']}/skus/{mp['sku']}/versions", API_COMPUTE).json()
    assert sorted(versions) == sorted(item['name'] for item in listed) and versions
    assert versions == sorted(versions, key=lambda name: tuple(int(part) if part.isdigit() else part for part in name.split('.')))
    assert [entry['urn'] for entry in result['marketplace']] == [f"{mp['publisher']}:{mp['offer']}:{mp['sku']}:{name}" for name in versions]
    latest = run(arm, {'marketplace': dict(mp, version='latest')}, tmp_path)
    assert [entry['version'] for entry in latest['marketplace']] == [versions[-1]], latest
    image = latest['marketplace'][0]
    assert image['urn'] == f"{mp['publisher']}:{mp['offer']}:{mp['sku']}:{versions[-1]}"
    assert image['os_type'] in ('Linux', 'Windows') and 'plan' in image and 'hyper_v_generation' in image
    exact = run(arm, {'marketplace': dict(mp, version=versions[0])}, tmp_path)
    assert [entry['urn'] for entry in exact['marketplace']] == [result['marketplace'][0]['urn']], exact
    assert not arm.problems, arm.problems


def test_marketplace_unknown_publisher_is_a_clear_error(seeded, tmp_path):
    arm = seeded[0]
    result = run(arm, {'marketplace': {'location': 'westus', 'publisher': 'NoSuchPublisher'}}, tmp_path)
    assert result['rc'] == 1 and 'Marketplace publisher NoSuchPublisher not found in location westus' in result['msg'], result


def test_missing_credentials_are_a_clear_error(seeded, tmp_path):
    arm = seeded[0]
    home = tmp_path / 'empty-home'
    home.mkdir()
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    assert shutil.which('az', path=str(bin_dir)) is None
    env = {key: None for key in os.environ if key.startswith(('AZURE_', 'IDENTITY_', 'MSI_'))}
    env.update(HOME=str(home), PATH=str(bin_dir), REQUESTS_CA_BUNDLE=arm.ca_file)
    first = len(arm.requests)
    result = run(arm, {'resource_group': GROUP_A}, tmp_path, env=env)
    assert result['rc'] == 1 and result['msg'].startswith('no Azure credentials found'), result
    assert 'AZURE_CLIENT_ID' in result['msg'] and 'az login' in result['msg']
    assert len(arm.requests) == first  # nothing was asked of Azure


@pytest.mark.parametrize('where', ['env', 'option'])
def test_a_subscription_that_is_no_guid_is_a_clear_error(seeded, tmp_path, where):
    arm = seeded[0]
    home = tmp_path / 'home'
    home.mkdir()
    env = module_env(arm, home)
    args = {'resource_group': GROUP_A}
    if where == 'env':
        env['AZURE_SUBSCRIPTION_ID'] = 'my-subscription'
    else:
        args['subscription_id'] = 'my-subscription'
    result, sent = traced(arm, args, tmp_path, env=env)
    assert result['rc'] == 1 and "subscription_id 'my-subscription' is not an Azure subscription ID" in result['msg'], result
    assert not [request for request in sent if '/subscriptions/' in request.path.lower()]


def test_check_mode_reads_the_same(seeded, tmp_path):
    arm = seeded[0]
    args = {'resource_group': GROUP_A, 'gallery': 'golden', 'gallery_image': 'web', 'version': 'latest'}
    normal = run(arm, args, tmp_path)
    checked, sent = traced(arm, dict(args, _ansible_check_mode=True), tmp_path)
    assert checked['rc'] == 0 and checked['changed'] is False
    assert json.dumps(checked['gallery_image_versions'], sort_keys=True) == json.dumps(normal['gallery_image_versions'], sort_keys=True)
    assert {request.method for request in sent} <= {'GET', 'POST'}  # POST: the token request only
    assert all(request.method == 'GET' for request in sent if '/subscriptions/' in request.path.lower())
