# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ARM test server answers like the published examples and Azure's documented protocols.

Each served example's request is sent as published (placeholders filled in) and the answer's shape (its JSON
key paths) is compared with the example's response, both ways: what the server adds must be listed here
with the OpenAPI definition that allows it, and what it leaves out must be listed with the reason. Every
answer the server gives is also checked against the OpenAPI response schema (``arm.response_problems``,
asserted empty when each test ends).
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
import typing as t

import pytest
import requests

import arm_openapi
from arm_server import ArmServer, fill_placeholders

RG = 'myResourceGroup'
API_COMPUTE, API_GALLERY, API_DISK = '2024-11-01', '2024-03-03', '2025-01-02'
COMPUTE_EXAMPLES = 'ComputeRP/stable/2024-11-01/examples'
GALLERY_EXAMPLES = 'GalleryRP/stable/2024-03-03/examples/galleryExamples'
TARGETS = pathlib.Path(__file__).resolve().parents[1] / 'targets'


@pytest.fixture(scope='module')
def examples() -> pathlib.Path:
    """The published examples; a missing directory is a failure, not a skip."""
    try:
        return arm_openapi.examples_dir()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture()
def arm(examples: pathlib.Path, tmp_path: pathlib.Path) -> t.Iterator[ArmServer]:
    with ArmServer(examples, tmp_path / 'arm') as server:
        yield server
        # every answer conforms to the published response schema of its operation
        assert server.response_problems == []


class Client:
    """requests against the server with a token from its client-credentials endpoint."""

    def __init__(self, arm: ArmServer) -> None:
        self.arm = arm
        self.http = requests.Session()
        self.http.trust_env = False  # REQUESTS_CA_BUNDLE in the environment would win over verify
        self.http.verify = arm.ca_file
        answer = self.http.post(f'{arm.url}/{arm.tenant_id}/oauth2/v2.0/token',
                                data={'grant_type': 'client_credentials', 'client_id': arm.client_id,
                                      'client_secret': arm.secret, 'scope': f'{arm.url}/.default'})
        assert answer.status_code == 200, answer.text
        self.http.headers['Authorization'] = f"Bearer {answer.json()['access_token']}"

    def id(self, *type_names: str, rg: str = RG) -> str:
        assert len(type_names) % 2 == 0, 'types and names alternate'
        path = f'/subscriptions/{self.arm.subscription_id}/resourceGroups/{rg}/providers/Microsoft.Compute'
        for kind, name in zip(type_names[::2], type_names[1::2]):
            path += f'/{kind}/{name}'
        return path

    def call(self, method: str, path: str, api: str | None, body: t.Any = None, **query: str) -> requests.Response:
        params = dict(query, **({'api-version': api} if api else {}))
        url = path if path.startswith('https://') else self.arm.url + path
        return self.http.request(method, url, params=params, json=body)

    def poll(self, response: requests.Response, limit: int = 10) -> list[dict[str, t.Any]]:
        """Follow Azure-AsyncOperation until the operation ends; return every status document."""
        documents = []
        for _poll in range(limit):
            status = self.http.get(response.headers['Azure-AsyncOperation'])
            assert status.status_code == 200, status.text
            documents.append(status.json())
            if documents[-1]['status'] != 'InProgress':
                return documents
        return documents


@pytest.fixture()
def client(arm: ArmServer) -> Client:
    return Client(arm)


def fill(arm: ArmServer, body: t.Any, **names: str) -> t.Any:
    return fill_placeholders(body, {'subscription-id': arm.subscription_id, 'subscriptionId': arm.subscription_id,
                                    'resourceGroup': RG, **names})


def extra_paths(body: t.Any, *examples_bodies: t.Any) -> set[str]:
    return set(arm_openapi.shape_problems(body, *examples_bodies))


def response(examples: pathlib.Path, relpath: str, status: int = 200) -> t.Any:
    return arm_openapi.example_response(examples, relpath, status)


# ---------------------------------------------------------------------------------------------------
# the examples directory and the request checks

def test_examples_directory_must_be_named(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    monkeypatch.delenv('IMAGEPREP_AZURE_REST_EXAMPLES', raising=False)
    with pytest.raises(RuntimeError, match='IMAGEPREP_AZURE_REST_EXAMPLES is not set'):
        ArmServer(None, tmp_path)
    with pytest.raises(RuntimeError, match='does not hold the Azure REST API examples'):
        arm_openapi.examples_dir(tmp_path)


def test_example_request_is_the_body_parameter(examples: pathlib.Path) -> None:
    body = arm_openapi.example_request(examples, 'Image_CreateFromAVM.json')
    raw = json.loads((examples / COMPUTE_EXAMPLES / 'imageExamples/Image_CreateFromAVM.json').read_text())
    assert body == raw['parameters']['parameters']
    with pytest.raises(ValueError, match='not one request body'):
        arm_openapi.example_request(examples, 'VirtualMachine_Generalize.json')


def test_shape_problems_names_the_outermost_new_keys() -> None:
    example = {'a': {'b': 1}, 'list': [{'x': 1}]}
    assert arm_openapi.shape_problems({'a': {'b': 2}, 'list': [{'x': 2}, {'x': 3}]}, example) == []
    assert arm_openapi.shape_problems({'a': {'b': 2, 'c': {'d': 1}}, 'list': [{'y': 1}], 'z': 1}, example) == ['a.c', 'list[].y', 'z']
    assert arm_openapi.shape_problems({'a': {'c': 1}, 'z': 1}, example, {'z': 0}) == ['a.c']


def test_every_published_request_example_conforms(examples: pathlib.Path) -> None:
    """The checker finds nothing in the examples' own requests, except what the examples get wrong upstream."""
    openapi = arm_openapi.OpenApi(examples)
    found = {}
    for operation in openapi.operations:
        for reference in operation.spec.get('x-ms-examples', {}).values():
            path = examples / os.path.normpath(os.path.join(os.path.dirname(operation.file), reference['$ref']))
            if not path.exists():
                continue
            parameters = json.loads(path.read_text())['parameters']
            url = operation.template
            for name, value in parameters.items():
                url = url.replace('{' + name + '}', str(value))
            bodies = [value for value in parameters.values() if isinstance(value, dict)]
            found[path.name] = openapi.request_problems(operation.method, url, bodies[0] if bodies else None)
    assert len(found) >= 25
    # two 2024-03-03 examples send a property that only later api-versions define
    quirk = ['galleryImageVersion.properties.safetyProfile.blockDeletionBeforeEndOfLife: unknown property (the schema defines '
             'allowDeletionOfReplicatedLocations, policyViolations, reportedForPolicyViolation)']
    assert {name: problems for name, problems in found.items() if problems} == {
        'GalleryImageVersion_Create_WithSnapshotsAsSource.json': quirk, 'GalleryImageVersion_Create_WithVHD.json': quirk}


@pytest.mark.parametrize('change, problem', [
    (lambda body: body['properties'].update(provisioningState='Succeeded'), 'parameters.properties.provisioningState: readOnly property sent'),
    (lambda body: body['properties'].update(sourceVm={'id': 'x'}), 'parameters.properties.sourceVm: unknown property'),
    (lambda body: body['properties']['storageProfile']['osDisk'].update(osType='Solaris'),
     "parameters.properties.storageProfile.osDisk.osType: 'Solaris' is not one of ['Windows', 'Linux'] (OperatingSystemTypes)"),
    (lambda body: body['properties']['storageProfile'].update(zoneResilient='yes'),
     "parameters.properties.storageProfile.zoneResilient: expected boolean, got string 'yes'"),
    (lambda body: body['properties']['storageProfile']['osDisk'].pop('osState'),
     'parameters.properties.storageProfile.osDisk.osState: required property missing'),
    (lambda body: body['properties']['storageProfile'].update(dataDisks=[{'blobUri': 'https://a.blob.core.windows.net/c/d.vhd'}]),
     'parameters.properties.storageProfile.dataDisks[0].lun: required property missing'),
])
def test_request_checks_catch_bad_bodies(arm: ArmServer, client: Client, examples: pathlib.Path,
                                         change: t.Callable[[dict[str, t.Any]], None], problem: str) -> None:
    body = arm_openapi.example_request(examples, 'Image_CreateFromABlob.json')
    change(body)
    path = client.id('images', 'bad')
    client.call('PUT', path, API_COMPUTE, body)
    assert len(arm.problems) == 1
    assert arm.problems[0].startswith(f'PUT {path}: {problem}')


def test_a_published_request_leaves_no_problem(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_resource_group(RG)
    answer = client.call('PUT', client.id('images', 'good'), API_COMPUTE, arm_openapi.example_request(examples, 'Image_CreateFromABlob.json'))
    assert answer.status_code == 201
    assert arm.problems == []


# ---------------------------------------------------------------------------------------------------
# sign-in, metadata, authentication, errors

def test_metadata_endpoint_has_the_documented_form(arm: ArmServer) -> None:
    document = requests.get(f'{arm.url}/metadata/endpoints', params={'api-version': '2019-05-01'}, verify=arm.ca_file, timeout=10).json()
    assert document['resourceManager'] == arm.url + '/'
    assert document['authentication'] == {'loginEndpoint': arm.url + '/', 'audiences': [arm.url + '/'], 'tenant': 'common',
                                          'identityProvider': 'AAD'}
    assert document['suffixes']['storage'] == 'core.windows.net'
    assert document['name']
    listed = requests.get(f'{arm.url}/metadata/endpoints', params={'api-version': '2022-09-01'}, verify=arm.ca_file, timeout=10).json()
    assert listed == [document]


def test_azure_identity_signs_in_and_arm_accepts_its_token(arm: ArmServer) -> None:
    from azure.identity import ClientSecretCredential
    credential = ClientSecretCredential(arm.tenant_id, arm.client_id, arm.secret, authority=arm.url,
                                        disable_instance_discovery=True, connection_verify=arm.ca_file)
    token = credential.get_token(f'{arm.url}/.default')
    assert token.expires_on > time.time() + 3000
    answer = requests.get(f'{arm.url}/subscriptions/{arm.subscription_id}', params={'api-version': '2022-12-01'},
                          headers={'Authorization': f'Bearer {token.token}'}, verify=arm.ca_file, timeout=10)
    assert answer.status_code == 200
    assert answer.json()['subscriptionId'] == arm.subscription_id
    token_requests = [item for item in arm.requests if item.path.endswith('/oauth2/v2.0/token')]
    assert [(item.body['grant_type'], item.body['client_id'], item.body['scope']) for item in token_requests] == [
        ('client_credentials', arm.client_id, f'{arm.url}/.default')]


def test_wrong_secret_is_refused_as_the_identity_platform_does(arm: ArmServer) -> None:
    from azure.core.exceptions import ClientAuthenticationError
    from azure.identity import ClientSecretCredential
    credential = ClientSecretCredential(arm.tenant_id, arm.client_id, 'not-the-secret', authority=arm.url,
                                        disable_instance_discovery=True, connection_verify=arm.ca_file)
    with pytest.raises(ClientAuthenticationError, match='AADSTS7000215'):
        credential.get_token(f'{arm.url}/.default')
    answer = requests.post(f'{arm.url}/{arm.tenant_id}/oauth2/v2.0/token', verify=arm.ca_file, timeout=10,
                           data={'grant_type': 'client_credentials', 'client_id': arm.client_id, 'client_secret': 'x',
                                 'scope': f'{arm.url}/.default'})
    assert answer.status_code == 401
    assert answer.json()['error'] == 'invalid_client'
    assert answer.json()['error_description'].startswith('AADSTS7000215: Invalid client secret provided.')


@pytest.mark.parametrize('form, status, error', [
    ({'client_id': 'other'}, 400, 'unauthorized_client'),
    ({'scope': 'https://graph.example/.default'}, 400, 'invalid_resource'),
    ({'scope': 'user.read'}, 400, 'invalid_scope'),
    ({'grant_type': 'password'}, 400, 'unsupported_grant_type'),
])
def test_token_endpoint_refusals(arm: ArmServer, form: dict[str, str], status: int, error: str) -> None:
    data = {'grant_type': 'client_credentials', 'client_id': arm.client_id, 'client_secret': arm.secret, 'scope': f'{arm.url}/.default'}
    answer = requests.post(f'{arm.url}/{arm.tenant_id}/oauth2/v2.0/token', data={**data, **form}, verify=arm.ca_file, timeout=10)
    assert (answer.status_code, answer.json()['error']) == (status, error)


def test_openid_configuration_names_the_token_endpoint(arm: ArmServer) -> None:
    document = requests.get(f'{arm.url}/{arm.tenant_id}/v2.0/.well-known/openid-configuration', verify=arm.ca_file, timeout=10).json()
    assert document['token_endpoint'] == f'{arm.url}/{arm.tenant_id}/oauth2/v2.0/token'
    assert document['authorization_endpoint'] == f'{arm.url}/{arm.tenant_id}/oauth2/v2.0/authorize'
    unknown = requests.get(f'{arm.url}/other-tenant/v2.0/.well-known/openid-configuration', verify=arm.ca_file, timeout=10)
    assert unknown.status_code == 400
    assert 'AADSTS90002' in unknown.json()['error_description']


def test_arm_calls_need_a_token_it_issued(arm: ArmServer, client: Client) -> None:
    url = f'{arm.url}/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/images'
    bare = requests.get(url, params={'api-version': API_COMPUTE}, verify=arm.ca_file, timeout=10)
    assert bare.status_code == 401
    assert bare.json()['error']['code'] == 'AuthenticationFailed'
    assert bare.headers['WWW-Authenticate'].startswith('Bearer authorization_uri=')
    assert bare.headers['x-ms-request-id']
    forged = requests.get(url, params={'api-version': API_COMPUTE}, headers={'Authorization': 'Bearer e30.e30.x'}, verify=arm.ca_file, timeout=10)
    assert (forged.status_code, forged.json()['error']['code']) == (401, 'InvalidAuthenticationToken')
    storage = requests.post(f'{arm.url}/{arm.tenant_id}/oauth2/v2.0/token', verify=arm.ca_file, timeout=10,
                            data={'grant_type': 'client_credentials', 'client_id': arm.client_id, 'client_secret': arm.secret,
                                  'scope': 'https://storage.azure.com/.default'}).json()['access_token']
    wrong = requests.get(url, params={'api-version': API_COMPUTE}, headers={'Authorization': f'Bearer {storage}'}, verify=arm.ca_file, timeout=10)
    assert (wrong.status_code, wrong.json()['error']['code']) == (401, 'InvalidAuthenticationTokenAudience')
    assert client.call('GET', '/subscriptions/' + arm.subscription_id + '/providers/Microsoft.Compute/images', API_COMPUTE).status_code == 200
    arm.expire_tokens()
    expired = client.call('GET', '/subscriptions/' + arm.subscription_id + '/providers/Microsoft.Compute/images', API_COMPUTE)
    assert (expired.status_code, expired.json()['error']['code']) == (401, 'ExpiredAuthenticationToken')


def test_unknown_subscription_and_resource_group(arm: ArmServer, client: Client) -> None:
    other = client.call('GET', '/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.Compute/images', API_COMPUTE)
    assert (other.status_code, other.json()['error']['code']) == (404, 'SubscriptionNotFound')
    group = client.call('GET', client.id('images', 'x', rg='nogroup'), API_COMPUTE)
    assert (group.status_code, group.json()['error']['code']) == (404, 'ResourceGroupNotFound')
    arm.add_resource_group(RG)
    missing = client.call('GET', client.id('images', 'x'), API_COMPUTE)
    assert (missing.status_code, missing.json()['error']['code']) == (404, 'ResourceNotFound')
    assert missing.json()['error']['message'].startswith("The Resource 'Microsoft.Compute/images/x' under resource group 'myResourceGroup'")


@pytest.mark.parametrize('api, code', [(API_GALLERY, 'NoRegisteredProviderFound'), ('latest', 'InvalidApiVersionParameter'),
                                       (None, 'MissingApiVersionParameter')])
def test_api_version_is_checked(arm: ArmServer, client: Client, api: str | None, code: str) -> None:
    arm.add_vm(RG, 'vm1')
    answer = client.call('GET', client.id('virtualMachines', 'vm1'), api)
    assert (answer.status_code, answer.json()['error']['code']) == (400, code)
    assert client.call('GET', client.id('virtualMachines', 'vm1'), API_COMPUTE).status_code == 200


def test_a_fault_of_the_server_is_an_answer_and_a_problem(arm: ArmServer, client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(query: dict[str, str]) -> t.NoReturn:
        raise KeyError('boom')
    monkeypatch.setattr(arm, '_metadata', broken)
    answer = requests.get(f'{arm.url}/metadata/endpoints', params={'api-version': '2019-05-01'}, verify=arm.ca_file, timeout=10)
    assert (answer.status_code, answer.json()['error']['code']) == (500, 'InternalServerError')
    assert len(arm.problems) == 1 and "KeyError: 'boom'" in arm.problems[0]


def test_error_next_answers_one_request(arm: ArmServer, client: Client) -> None:
    arm.add_vm(RG, 'vm1')
    arm.error_next('GET', r'/virtualMachines/vm1$', 429, 'TooManyRequests', 'Slow down.')
    first = client.call('GET', client.id('virtualMachines', 'vm1'), API_COMPUTE)
    assert first.status_code == 429
    assert first.json() == {'error': {'code': 'TooManyRequests', 'message': 'Slow down.'}}
    assert client.call('GET', client.id('virtualMachines', 'vm1'), API_COMPUTE).status_code == 200


# ---------------------------------------------------------------------------------------------------
# virtual machines

VM_EXAMPLES = f'{COMPUTE_EXAMPLES}/virtualMachineExamples'


def test_vm_get_has_the_example_shape(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_vm(RG, 'myVM', os_type='Windows', hyper_v_generation='V1')
    body = client.call('GET', client.id('virtualMachines', 'myVM'), API_COMPUTE).json()
    example = response(examples, f'{VM_EXAMPLES}/VirtualMachine_Get.json')
    assert extra_paths(body, example) == set()
    # availability set, proximity group, gallery applications, user data (without $expand), extensions and
    # the scale set are not modelled; etag is not sent
    assert extra_paths(example, body) == {'etag', 'managedBy', 'resources', 'properties.availabilitySet', 'properties.applicationProfile',
                                          'properties.proximityPlacementGroup', 'properties.userData', 'properties.diagnosticsProfile',
                                          'properties.extensionsTimeBudget'}
    linux = arm.add_vm(RG, 'linuxVM')
    assert extra_paths(linux, example, response(examples, f'{VM_EXAMPLES}/VirtualMachine_Create_FromACustomImage.json', 201)) == set()


def test_vm_instance_view_has_the_example_shape_and_the_power_state(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_vm(RG, 'myVM', hyper_v_generation='V2')
    view = client.call('GET', client.id('virtualMachines', 'myVM', ) + '/instanceView', API_COMPUTE).json()
    example = response(examples, f'{VM_EXAMPLES}/VirtualMachine_Get_InstanceView.json')
    assert extra_paths(view, example) == set()
    assert extra_paths(example, view) == {'bootDiagnostics', 'extensions', 'patchStatus', 'isVMInStandbyPool',
                                          'vmAgent.extensionHandlers[].type', 'vmAgent.extensionHandlers[].typeHandlerVersion',
                                          'vmAgent.extensionHandlers[].status'}
    assert [status['code'] for status in view['statuses']] == ['ProvisioningState/succeeded', 'PowerState/running']
    assert view['vmAgent']['statuses'][0]['displayStatus'] == 'Ready'
    assert view['hyperVGeneration'] == 'V2'
    expanded = client.call('GET', client.id('virtualMachines', 'myVM'), API_COMPUTE, **{'$expand': 'instanceView'}).json()
    assert expanded['properties']['instanceView']['statuses'][1]['code'] == 'PowerState/running'
    seeded_view = arm.instance_view(client.id('virtualMachines', 'myVM'))
    assert [status['code'] for status in seeded_view['statuses']] == ['ProvisioningState/succeeded', 'PowerState/running']
    assert arm.instance_view(client.id('virtualMachines', 'none')) is None


def test_deallocate_is_a_long_running_operation_with_location(arm: ArmServer, client: Client) -> None:
    arm.add_vm(RG, 'myVM')
    arm.retry_after = 7
    arm.lro_polls = 2
    vm = client.id('virtualMachines', 'myVM')
    started = client.call('POST', vm + '/deallocate', API_COMPUTE)
    assert started.status_code == 202
    assert started.headers['Retry-After'] == '7'
    assert started.content == b''
    assert started.headers['Azure-AsyncOperation'].startswith(
        f'{arm.url}/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/locations/westus/operations/')
    views = []
    location = started.headers['Location']
    codes = []
    for _poll in range(4):
        polled = client.http.get(location)
        codes.append(polled.status_code)
        views.append(client.call('GET', vm + '/instanceView', API_COMPUTE).json()['statuses'][1]['code'])
        if polled.status_code != 202:
            break
        assert polled.headers['Retry-After'] == '7'
        location = polled.headers['Location']
    # resource GETs count as polls too: poll, GET, poll ends it
    assert codes == [202, 200]
    assert views == ['PowerState/deallocating', 'PowerState/deallocated']
    status = client.http.get(started.headers['Azure-AsyncOperation']).json()
    assert status['status'] == 'Succeeded'
    assert set(status) == {'name', 'status', 'startTime', 'endTime'}


def test_generalize_needs_a_stopped_vm(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_vm(RG, 'myVM')
    vm = client.id('virtualMachines', 'myVM')
    refused = client.call('POST', vm + '/generalize', API_COMPUTE)
    assert (refused.status_code, refused.json()['error']['code']) == (409, 'OperationNotAllowed')
    client.poll(client.call('POST', vm + '/powerOff', API_COMPUTE))
    done = client.call('POST', vm + '/generalize', API_COMPUTE)
    # VirtualMachine_Generalize.json: 200 without a body
    assert (done.status_code, done.content) == (200, b'')
    assert list(json.loads((examples / VM_EXAMPLES / 'VirtualMachine_Generalize.json').read_text())['responses']) == ['200']
    codes = [status['code'] for status in client.call('GET', vm + '/instanceView', API_COMPUTE).json()['statuses']]
    assert codes == ['ProvisioningState/succeeded', 'PowerState/stopped', 'OSState/generalized']
    start = client.call('POST', vm + '/start', API_COMPUTE)
    assert (start.status_code, start.json()['error']['code']) == (409, 'OperationNotAllowed')


def _shared_image(arm: ArmServer, client: Client) -> None:
    """mySharedGallery/mySharedImage with version 1.0.0 captured from a generalized VM with two data disks."""
    arm.add_vm(RG, 'sourceVM', hyper_v_generation='V2', power_state='deallocated', generalized=True)
    arm.add_gallery(RG, 'mySharedGallery')
    arm.add_gallery_image(RG, 'mySharedGallery', 'mySharedImage', hyper_v_generation='V2')
    arm.add_gallery_image_version(RG, 'mySharedGallery', 'mySharedImage', '1.0.0', client.id('virtualMachines', 'sourceVM'))


@pytest.mark.parametrize('name', ['VirtualMachine_Create_FromAGeneralizedSharedImage.json', 'VirtualMachine_Create_FromACustomImage.json'])
def test_vm_create_from_an_image(arm: ArmServer, client: Client, examples: pathlib.Path, name: str) -> None:
    _shared_image(arm, client)
    arm.add_image(RG, 'myCustomImage', 'sourceVM')
    body = fill(arm, arm_openapi.example_request(examples, name), **{'existing-custom-image-name': 'myCustomImage',
                                                                     'your-password': 'Pa55w.rd-Pa55w.rd'})
    vm = client.id('virtualMachines', 'myVM')
    created = client.call('PUT', vm, API_COMPUTE, body)
    assert created.status_code == 201
    assert 'Azure-AsyncOperation' in created.headers
    assert created.json()['properties']['provisioningState'] == 'Creating'
    example = response(examples, f'{VM_EXAMPLES}/{name}', 201)
    get_example = response(examples, f'{VM_EXAMPLES}/VirtualMachine_Get.json')
    # the managed disks' ids, the creation time and the data disks are in VirtualMachine_Get's shape
    assert extra_paths(created.json(), example) == {'properties.timeCreated', 'properties.storageProfile.osDisk.managedDisk.id',
                                                    'properties.storageProfile.dataDisks[].lun', 'properties.storageProfile.dataDisks[].name',
                                                    'properties.storageProfile.dataDisks[].createOption',
                                                    'properties.storageProfile.dataDisks[].caching',
                                                    'properties.storageProfile.dataDisks[].managedDisk',
                                                    'properties.storageProfile.dataDisks[].diskSizeGB'}
    assert extra_paths(created.json(), example, get_example) == set()
    assert extra_paths(example, created.json()) == set()
    assert 'adminPassword' not in json.dumps(created.json())
    assert [document['status'] for document in client.poll(created)] == ['InProgress', 'Succeeded']
    got = client.call('GET', vm, API_COMPUTE, **{'$expand': 'instanceView'}).json()
    assert got['properties']['provisioningState'] == 'Succeeded'
    view = got['properties']['instanceView']
    assert view['vmAgent']['statuses'][0]['displayStatus'] == 'Ready'
    assert [status['code'] for status in view['statuses']] == ['ProvisioningState/succeeded', 'PowerState/running']
    # the data disks of the image (luns 0 and 1 of sourceVM) came with it, as managed disks
    disks = got['properties']['storageProfile']['dataDisks']
    assert [(disk['lun'], disk['diskSizeGB'], disk['createOption']) for disk in disks] == [(0, 32, 'FromImage'), (1, 64, 'FromImage')]
    assert all(arm.resource(disk['managedDisk']['id'])['managedBy'] == vm for disk in disks)


def test_vm_create_refuses_missing_images_and_profiles(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    _shared_image(arm, client)
    body = fill(arm, arm_openapi.example_request(examples, 'VirtualMachine_Create_FromACustomImage.json'),
                **{'existing-custom-image-name': 'noSuchImage'})
    missing = client.call('PUT', client.id('virtualMachines', 'myVM'), API_COMPUTE, body)
    assert (missing.status_code, missing.json()['error']['code']) == (404, 'NotFound')
    body = fill(arm, arm_openapi.example_request(examples, 'VirtualMachine_Create_FromAGeneralizedSharedImage.json'))
    del body['properties']['osProfile']
    no_profile = client.call('PUT', client.id('virtualMachines', 'myVM'), API_COMPUTE, body)
    assert (no_profile.status_code, no_profile.json()['error']['code']) == (400, 'InvalidParameter')
    assert arm.resource(client.id('virtualMachines', 'myVM')) is None


def test_vm_agent_not_ready_knob(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    _shared_image(arm, client)
    arm.vm_agent_ready = False
    vm = client.id('virtualMachines', 'myVM')
    client.poll(client.call('PUT', vm, API_COMPUTE, fill(arm, arm_openapi.example_request(
        examples, 'VirtualMachine_Create_FromAGeneralizedSharedImage.json'))))
    vm_agent = client.call('GET', vm + '/instanceView', API_COMPUTE).json()['vmAgent']
    assert vm_agent['statuses'][0]['displayStatus'] == 'Not Ready'


def test_vm_delete_is_long_running_and_leaves_the_disks(arm: ArmServer, client: Client) -> None:
    body = arm.add_vm(RG, 'myVM')
    vm = client.id('virtualMachines', 'myVM')
    started = client.call('DELETE', vm, API_COMPUTE)
    assert started.status_code == 202
    assert {'Location', 'Azure-AsyncOperation', 'Retry-After'} <= set(started.headers)
    assert client.call('GET', vm, API_COMPUTE).json()['properties']['provisioningState'] == 'Deleting'
    assert client.http.get(started.headers['Location']).status_code == 204
    assert client.call('GET', vm, API_COMPUTE).status_code == 404
    assert client.call('DELETE', vm, API_COMPUTE).status_code == 204
    os_disk = arm.resource(body['properties']['storageProfile']['osDisk']['managedDisk']['id'])
    assert 'managedBy' not in os_disk
    assert os_disk['properties']['diskState'] == 'Unattached'


# ---------------------------------------------------------------------------------------------------
# managed images

IMAGE_EXAMPLES = f'{COMPUTE_EXAMPLES}/imageExamples'
IMAGE_CREATES = ['Image_CreateFromAVM.json', 'Image_CreateFromABlob.json', 'Image_CreateFromAManagedDisk.json', 'Image_CreateFromASnapshot.json',
                 'Image_Create_DataDiskFromABlobIncluded.json', 'Image_Create_DataDiskFromAManagedDiskIncluded.json']


def _image_sources(arm: ArmServer, client: Client) -> None:
    """What the Image_Create* examples refer to: myVM (generalized), myManagedDisk(2), mySnapshot."""
    arm.add_vm(RG, 'myVM', hyper_v_generation='V1', power_state='deallocated', generalized=True, data_disks=())
    arm.add_disk(RG, 'myManagedDisk', 30, os_type='Linux', hyper_v_generation='V1')
    arm.add_disk(RG, 'myManagedDisk2', 64)
    snapshot = client.call('PUT', client.id('snapshots', 'mySnapshot'), API_DISK,
                           {'location': 'westus', 'properties': {'creationData': {'createOption': 'Copy',
                                                                                  'sourceResourceId': client.id('disks', 'myManagedDisk')}}})
    assert snapshot.status_code == 202
    client.poll(snapshot)


@pytest.mark.parametrize('name', IMAGE_CREATES)
def test_image_create_answers_like_the_example(arm: ArmServer, client: Client, examples: pathlib.Path, name: str) -> None:
    _image_sources(arm, client)
    image = client.id('images', 'myImage')
    created = client.call('PUT', image, API_COMPUTE, fill(arm, arm_openapi.example_request(examples, name)))
    assert created.status_code == 201, created.text
    assert arm.problems == []
    assert 'Azure-AsyncOperation' in created.headers
    example = response(examples, f'{IMAGE_EXAMPLES}/{name}', 201)
    # sizes and storage account types are in Image_Get's shape; hyperVGeneration and the data disks' caching
    # and sizes are ImageProperties / ImageDisk properties of image.json (the response check covers them)
    extra = extra_paths(created.json(), example, response(examples, f'{IMAGE_EXAMPLES}/Image_Get.json'))
    assert extra <= {'properties.hyperVGeneration', 'properties.storageProfile.dataDisks[].caching',
                     'properties.storageProfile.dataDisks[].diskSizeGB'}
    assert 'properties.hyperVGeneration' in extra
    assert extra_paths(example, created.json()) == set()
    assert created.json()['properties']['provisioningState'] == 'Creating'
    # a client that re-attaches polls the resource: Creating, then Succeeded
    states = [client.call('GET', image, API_COMPUTE).json()['properties']['provisioningState'] for _poll in range(2)]
    assert states == ['Creating', 'Succeeded']
    assert client.poll(created)[-1]['status'] == 'Succeeded'


def test_image_from_a_vm_takes_its_disks(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    vm = arm.add_vm(RG, 'myVM', hyper_v_generation='V2', data_disks=((0, 32), (3, 128)), os_disk_gb=40, power_state='deallocated')
    body = fill(arm, arm_openapi.example_request(examples, 'Image_CreateFromAVM.json'))
    refused = client.call('PUT', client.id('images', 'myImage'), API_COMPUTE, body)
    assert (refused.status_code, refused.json()['error']['code']) == (409, 'OperationNotAllowed')
    client.call('POST', client.id('virtualMachines', 'myVM') + '/generalize', API_COMPUTE)
    created = client.call('PUT', client.id('images', 'myImage'), API_COMPUTE, body)
    client.poll(created)
    storage = client.call('GET', client.id('images', 'myImage'), API_COMPUTE).json()['properties']['storageProfile']
    assert storage['osDisk']['managedDisk']['id'] == vm['properties']['storageProfile']['osDisk']['managedDisk']['id']
    assert (storage['osDisk']['osState'], storage['osDisk']['diskSizeGB']) == ('Generalized', 40)
    assert [(disk['lun'], disk['diskSizeGB']) for disk in storage['dataDisks']] == [(0, 32), (3, 128)]
    missing = client.call('PUT', client.id('images', 'other'), API_COMPUTE,
                          {'location': 'westus', 'properties': {'sourceVirtualMachine': {'id': client.id('virtualMachines', 'none')}}})
    assert missing.status_code == 404


def test_image_update_changes_tags_only(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_vm(RG, 'myVM', hyper_v_generation='V1', power_state='deallocated', generalized=True)
    arm.add_image(RG, 'myImage', 'myVM')
    image = client.id('images', 'myImage')
    updated = client.call('PATCH', image, API_COMPUTE, fill(arm, arm_openapi.example_request(examples, 'Image_Update.json')))
    assert updated.status_code == 200
    assert updated.json()['tags'] == {'department': 'HR'}
    assert extra_paths(updated.json(), response(examples, f'{IMAGE_EXAMPLES}/Image_Update.json')) <= {
        'properties.sourceVirtualMachine', 'properties.hyperVGeneration', 'properties.storageProfile.osDisk.caching',
        'properties.storageProfile.dataDisks[].caching', 'properties.storageProfile.dataDisks[].diskSizeGB'}
    change = client.call('PATCH', image, API_COMPUTE, {'properties': {'hyperVGeneration': 'V2'}})
    assert (change.status_code, change.json()['error']['code']) == (409, 'PropertyChangeNotAllowed')


def test_image_lists_page_with_next_link(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_vm(RG, 'myVM', power_state='deallocated', generalized=True)
    arm.add_vm('otherGroup', 'otherVM', power_state='deallocated', generalized=True)
    for index in range(5):
        arm.add_image(RG, f'image{index}', 'myVM')
    arm.add_image('otherGroup', 'elsewhere', 'otherVM')
    example = response(examples, f'{IMAGE_EXAMPLES}/Image_ListByResourceGroup.json')
    for path, expected in ((client.id() + '/images', {f'image{index}' for index in range(5)}),
                           (f'/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/images',
                            {f'image{index}' for index in range(5)} | {'elsewhere'})):
        page = client.call('GET', path, API_COMPUTE).json()
        pages, names = 1, [item['name'] for item in page['value']]
        assert len(page['value']) == 2
        assert extra_paths(page, example) <= {'value[].properties.sourceVirtualMachine', 'value[].properties.hyperVGeneration',
                                              'value[].properties.storageProfile.osDisk.caching',
                                              'value[].properties.storageProfile.osDisk.diskSizeGB',
                                              'value[].properties.storageProfile.dataDisks[].caching',
                                              'value[].properties.storageProfile.dataDisks[].diskSizeGB',
                                              'value[].properties.storageProfile.zoneResilient', 'value[].tags'}
        while 'nextLink' in page:
            page = client.http.get(page['nextLink']).json()
            pages += 1
            names += [item['name'] for item in page['value']]
        assert sorted(names) == sorted(expected)
        assert pages == (len(expected) + 1) // 2


def test_image_delete(arm: ArmServer, client: Client) -> None:
    arm.add_vm(RG, 'myVM', power_state='deallocated', generalized=True)
    arm.add_image(RG, 'myImage', 'myVM')
    started = client.call('DELETE', client.id('images', 'myImage'), API_COMPUTE)
    assert started.status_code == 202
    assert [document['status'] for document in client.poll(started)] == ['InProgress', 'Succeeded']
    assert client.call('GET', client.id('images', 'myImage'), API_COMPUTE).status_code == 404


# ---------------------------------------------------------------------------------------------------
# long-running operations: failures, hangs

def test_failed_operation_reports_the_error_and_leaves_the_resource_failed(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_resource_group(RG)
    arm.fail_operation('PUT', r'/images/myImage$', code='InternalOperationError', message='Disk copy failed.')
    image = client.id('images', 'myImage')
    created = client.call('PUT', image, API_COMPUTE, arm_openapi.example_request(examples, 'Image_CreateFromABlob.json'))
    assert created.status_code == 201
    documents = client.poll(created)
    assert [document['status'] for document in documents] == ['InProgress', 'Failed']
    assert documents[-1]['error'] == {'code': 'InternalOperationError', 'message': 'Disk copy failed.'}
    assert client.call('GET', image, API_COMPUTE).json()['properties']['provisioningState'] == 'Failed'


def test_failed_post_through_location(arm: ArmServer, client: Client) -> None:
    arm.add_vm(RG, 'myVM')
    arm.lro_polls = 0
    arm.fail_operation('POST', r'/deallocate$', code='VMAgentStatusCommunicationError', message='No contact with the VM agent.')
    started = client.call('POST', client.id('virtualMachines', 'myVM') + '/deallocate', API_COMPUTE)
    ended = client.http.get(started.headers['Location'])
    assert ended.status_code == 409
    assert ended.json()['error']['code'] == 'VMAgentStatusCommunicationError'
    assert client.call('GET', client.id('virtualMachines', 'myVM') + '/instanceView', API_COMPUTE).json()['statuses'][1]['code'] == 'PowerState/running'


def test_hung_operation_stays_in_progress(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_resource_group(RG)
    arm.hang_operation('PUT', r'/images/')
    image = client.id('images', 'myImage')
    created = client.call('PUT', image, API_COMPUTE, arm_openapi.example_request(examples, 'Image_CreateFromABlob.json'))
    assert [document['status'] for document in client.poll(created, limit=5)] == ['InProgress'] * 5
    assert client.call('GET', image, API_COMPUTE).json()['properties']['provisioningState'] == 'Creating'
    busy = client.call('DELETE', image, API_COMPUTE)
    assert (busy.status_code, busy.json()['error']['code']) == (409, 'Conflict')


# ---------------------------------------------------------------------------------------------------
# galleries

def test_gallery_and_definition_create_answer_like_the_examples(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_resource_group(RG)
    gallery = client.id('galleries', 'myGalleryName')
    created = client.call('PUT', gallery, API_GALLERY, arm_openapi.example_request(examples, 'Gallery_Create.json'))
    assert created.status_code == 201
    example = response(examples, f'{GALLERY_EXAMPLES}/Gallery_Create.json', 201)
    # the examples leave out 'type', which every ARM resource has (Resource in common-types)
    assert extra_paths(created.json(), example) == {'type'}
    assert extra_paths(example, created.json()) == set()
    assert created.json()['properties']['identifier']['uniqueName'] == f'{arm.subscription_id}-MYGALLERYNAME'
    client.poll(created)
    assert extra_paths(client.call('GET', gallery, API_GALLERY).json(), response(examples, f'{GALLERY_EXAMPLES}/Gallery_Get.json')) == {'type'}
    definition = client.id('galleries', 'myGalleryName', 'images', 'myGalleryImageName')
    created = client.call('PUT', definition, API_GALLERY, arm_openapi.example_request(examples, 'GalleryImage_Create.json'))
    assert created.status_code == 201
    example = response(examples, f'{GALLERY_EXAMPLES}/GalleryImage_Create.json', 201)
    assert extra_paths(created.json(), example) == {'type'}
    assert extra_paths(example, created.json()) == set()
    client.poll(created)
    got = client.call('GET', definition, API_GALLERY).json()
    assert extra_paths(got, response(examples, f'{GALLERY_EXAMPLES}/GalleryImage_Get.json')) == {'type'}
    assert got['properties']['provisioningState'] == 'Succeeded'
    assert arm.problems == []


def test_gallery_image_immutable_properties(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_gallery(RG, 'myGalleryName')
    definition = client.id('galleries', 'myGalleryName', 'images', 'myGalleryImageName')
    body = arm_openapi.example_request(examples, 'GalleryImage_Create.json')
    client.poll(client.call('PUT', definition, API_GALLERY, body))
    same = client.call('PUT', definition, API_GALLERY, dict(body, tags={'a': 'b'}))
    assert same.status_code == 200
    client.poll(same)
    for name in ('second', 'third'):
        arm.add_gallery_image(RG, 'myGalleryName', name)
    listed = client.call('GET', client.id('galleries', 'myGalleryName') + '/images', API_GALLERY).json()
    listed_names = [item['name'] for item in listed['value']]
    listed_names += [item['name'] for item in client.http.get(listed['nextLink']).json()['value']]
    assert sorted(listed_names) == ['myGalleryImageName', 'second', 'third']
    assert extra_paths(listed['value'][0], response(examples, f'{GALLERY_EXAMPLES}/GalleryImage_Get.json')) == {'type', 'tags'}
    body['properties']['osState'] = 'Specialized'
    changed = client.call('PUT', definition, API_GALLERY, body)
    assert changed.status_code == 409
    assert changed.json()['error']['code'] == 'PropertyChangeNotAllowed'
    assert changed.json()['error']['message'] == "Changing property 'galleryImage.properties.osState' is not allowed."


def test_nested_resources_need_their_parents(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    arm.add_resource_group(RG)
    orphan = client.call('PUT', client.id('galleries', 'none', 'images', 'x'), API_GALLERY,
                         arm_openapi.example_request(examples, 'GalleryImage_Create.json'))
    assert (orphan.status_code, orphan.json()['error']['code']) == (404, 'ParentResourceNotFound')
    arm.add_gallery(RG, 'myGalleryName')
    versions = client.call('GET', client.id('galleries', 'myGalleryName', 'images', 'none') + '/versions', API_GALLERY)
    assert (versions.status_code, versions.json()['error']['code']) == (404, 'ParentResourceNotFound')
    assert "Parent resource 'myGalleryName/none' not found." in versions.json()['error']['message']


VERSION_CREATES = ['GalleryImageVersion_Create.json', 'GalleryImageVersion_Create_WithVmAsSource.json',
                   'GalleryImageVersion_Create_WithSnapshotsAsSource.json', 'GalleryImageVersion_Create_WithVHD.json']


def _version_sources(arm: ArmServer, client: Client, examples: pathlib.Path) -> str:
    """The definition of GalleryImage_Create.json (Windows, V1, Generalized) and the sources the versions name."""
    arm.add_vm(RG, 'myVM', os_type='Windows', hyper_v_generation='V1', power_state='deallocated', generalized=True)
    arm.add_image(RG, 'myImage', 'myVM')
    arm.add_disk(RG, 'myDataDisk', 100)
    arm.add_disk(RG, 'myOsDisk', 127, os_type='Windows', hyper_v_generation='V1')
    client.poll(client.call('PUT', client.id('snapshots', 'myOsSnapshot'), API_DISK, {
        'location': 'westus', 'properties': {'creationData': {'createOption': 'Copy', 'sourceResourceId': client.id('disks', 'myOsDisk')}}}))
    arm.add_gallery(RG, 'myGalleryName')
    definition = client.id('galleries', 'myGalleryName', 'images', 'myGalleryImageName')
    client.poll(client.call('PUT', definition, API_GALLERY, arm_openapi.example_request(examples, 'GalleryImage_Create.json')))
    return definition


@pytest.mark.parametrize('name', VERSION_CREATES)
def test_version_create_answers_like_the_example(arm: ArmServer, client: Client, examples: pathlib.Path, name: str) -> None:
    definition = _version_sources(arm, client, examples)
    body = fill(arm, arm_openapi.example_request(examples, name), vmName='myVM', imageName='myImage', osSnapshotName='myOsSnapshot',
                dataDiskName='myDataDisk')
    version = definition + '/versions/1.0.0'
    created = client.call('PUT', version, API_GALLERY, body)
    assert created.status_code == 201, created.text
    assert 'Azure-AsyncOperation' in created.headers
    example = response(examples, f'{GALLERY_EXAMPLES}/{name}', 201)
    # excludeFromLatest of the whole version is GalleryArtifactPublishingProfileBase's (gallery.json); 'type' as above
    assert extra_paths(created.json(), example) == {'type', 'properties.publishingProfile.excludeFromLatest'}
    # the examples' policy-violation report is not modelled; blockDeletionBeforeEndOfLife is not in the 2024-03-03 schema
    assert extra_paths(example, created.json()) <= {'properties.safetyProfile.policyViolations',
                                                    'properties.safetyProfile.blockDeletionBeforeEndOfLife'}
    assert created.json()['properties']['provisioningState'] == 'Creating'
    replicating = client.call('GET', version, API_GALLERY, **{'$expand': 'ReplicationStatus'}).json()['properties']['replicationStatus']
    assert replicating['aggregatedState'] == 'InProgress'
    client.poll(created)
    got = client.call('GET', version, API_GALLERY, **{'$expand': 'ReplicationStatus'}).json()
    with_status = response(examples, f'{GALLERY_EXAMPLES}/GalleryImageVersion_Get_WithReplicationStatus.json')
    with_vhd = response(examples, f'{GALLERY_EXAMPLES}/GalleryImageVersion_Get_WithVhdAsSource.json')
    assert extra_paths(got, with_status, with_vhd, example) == {'type', 'properties.publishingProfile.excludeFromLatest'}
    status = got['properties']['replicationStatus']
    assert status['aggregatedState'] == 'Completed'
    assert [(item['region'], item['state'], item['progress']) for item in status['summary']] == [
        (target['name'], 'Completed', 100) for target in body['properties']['publishingProfile']['targetRegions']]
    published = got['properties']['publishingProfile']
    assert published['publishedDate'] and published['replicaCount'] == 1 and published['storageAccountType'] == 'Standard_LRS'
    assert 'replicationStatus' not in client.call('GET', version, API_GALLERY).json()['properties']


def test_version_from_a_vm_lists_its_disks(arm: ArmServer, client: Client) -> None:
    vm = arm.add_vm(RG, 'myVM', data_disks=((0, 16), (2, 48)), os_disk_gb=64, power_state='deallocated', generalized=True)
    arm.add_gallery(RG, 'gallery')
    arm.add_gallery_image(RG, 'gallery', 'linux')
    version = arm.add_gallery_image_version(RG, 'gallery', 'linux', '1.2.3', vm['id'], target_regions=['westus', 'eastus'],
                                            end_of_life_date='2030-01-01T00:00:00Z')
    storage = version['properties']['storageProfile']
    assert storage['source'] == {'virtualMachineId': vm['id']}
    assert storage['osDiskImage']['sizeInGB'] == 64
    assert [(disk['lun'], disk['sizeInGB']) for disk in storage['dataDiskImages']] == [(0, 16), (2, 48)]
    assert version['properties']['publishingProfile']['endOfLifeDate'] == '2030-01-01T00:00:00Z'


def test_version_source_must_fit_the_definition(arm: ArmServer, client: Client) -> None:
    arm.add_vm(RG, 'running', hyper_v_generation='V2')
    arm.add_vm(RG, 'gen1', hyper_v_generation='V1', power_state='deallocated', generalized=True)
    arm.add_gallery(RG, 'gallery')
    arm.add_gallery_image(RG, 'gallery', 'linux', hyper_v_generation='V2')
    versions = client.id('galleries', 'gallery', 'images', 'linux') + '/versions'
    for vm, status, code in (('running', 409, 'OperationNotAllowed'), ('gen1', 400, 'InvalidParameter')):
        answer = client.call('PUT', versions + '/1.0.0', API_GALLERY, {'location': 'westus', 'properties': {
            'publishingProfile': {}, 'storageProfile': {'source': {'virtualMachineId': client.id('virtualMachines', vm)}}}})
        assert (answer.status_code, answer.json()['error']['code']) == (status, code), answer.text
    bad_name = client.call('PUT', versions + '/1.0', API_GALLERY, {'location': 'westus', 'properties': {'storageProfile': {}}})
    assert (bad_name.status_code, bad_name.json()['error']['code']) == (400, 'InvalidParameter')


def test_version_update_allows_only_the_publishing_changes(arm: ArmServer, client: Client) -> None:
    vm = arm.add_vm(RG, 'myVM', power_state='deallocated', generalized=True)
    other = arm.add_vm(RG, 'otherVM', power_state='deallocated', generalized=True)
    arm.add_gallery(RG, 'gallery')
    arm.add_gallery_image(RG, 'gallery', 'linux')
    version = client.id('galleries', 'gallery', 'images', 'linux', 'versions', '1.0.0')
    body = {'location': 'westus', 'properties': {'publishingProfile': {'targetRegions': [{'name': 'westus'}]},
                                                 'storageProfile': {'source': {'virtualMachineId': vm['id']}}}}
    client.poll(client.call('PUT', version, API_GALLERY, body))
    body['properties']['publishingProfile'] = {'targetRegions': [{'name': 'westus'}, {'name': 'northeurope', 'regionalReplicaCount': 3}],
                                               'excludeFromLatest': True, 'endOfLifeDate': '2031-01-01T00:00:00Z'}
    body['tags'] = {'stage': 'retired'}
    updated = client.call('PUT', version, API_GALLERY, body)
    assert updated.status_code == 200
    client.poll(updated)
    profile = client.call('GET', version, API_GALLERY).json()['properties']['publishingProfile']
    assert [target['name'] for target in profile['targetRegions']] == ['westus', 'northeurope']
    assert profile['excludeFromLatest'] is True
    body['properties']['storageProfile']['source']['virtualMachineId'] = other['id']
    changed = client.call('PUT', version, API_GALLERY, body)
    assert (changed.status_code, changed.json()['error']['code']) == (409, 'PropertyChangeNotAllowed')
    assert changed.json()['error']['message'] == (
        "Changing property 'galleryImageVersion.properties.storageProfile.source.virtualMachineId' is not allowed.")


def test_versions_list_and_delete(arm: ArmServer, client: Client, examples: pathlib.Path) -> None:
    vm = arm.add_vm(RG, 'myVM', power_state='deallocated', generalized=True)
    arm.add_gallery(RG, 'gallery')
    arm.add_gallery_image(RG, 'gallery', 'linux')
    for name in ('1.0.10', '1.0.2', '1.0.9'):
        arm.add_gallery_image_version(RG, 'gallery', 'linux', name, vm['id'])
    versions = client.id('galleries', 'gallery', 'images', 'linux') + '/versions'
    page = client.call('GET', versions, API_GALLERY).json()
    example = response(examples, f'{GALLERY_EXAMPLES}/GalleryImageVersion_ListByGalleryImage.json')
    # source.virtualMachineId: the source of these versions is a VM, as in GalleryImageVersion_Create_WithVmAsSource.json
    assert extra_paths(page, example) == {'value[].type', 'value[].properties.publishingProfile.excludeFromLatest',
                                          'value[].properties.storageProfile.source.virtualMachineId'}
    names = [item['name'] for item in page['value']]
    names += [item['name'] for item in client.http.get(page['nextLink']).json()['value']]
    assert names == ['1.0.2', '1.0.9', '1.0.10']
    started = client.call('DELETE', versions + '/1.0.9', API_GALLERY)
    assert started.status_code == 202
    assert {'Location', 'Azure-AsyncOperation'} <= set(started.headers)
    client.poll(started)
    assert client.call('GET', versions + '/1.0.9', API_GALLERY).status_code == 404
    blocked = client.call('DELETE', client.id('galleries', 'gallery', 'images', 'linux'), API_GALLERY)
    assert (blocked.status_code, blocked.json()['error']['code']) == (409, 'CannotDeleteResource')


# ---------------------------------------------------------------------------------------------------
# disks and snapshots

def test_disk_and_snapshot_have_the_diskrp_shapes(arm: ArmServer, client: Client) -> None:
    templates = json.loads((TARGETS / 'fixtures/azure/diskrp.json').read_text())
    vm = arm.add_vm(RG, 'myVM', os_type='Windows', hyper_v_generation='V1')
    disk_id = vm['properties']['storageProfile']['osDisk']['managedDisk']['id']
    disk = client.call('GET', disk_id, API_DISK).json()
    # diskState: DiskProperties of the 2025-01-02 DiskRP API (not in Disk_Get.json)
    assert extra_paths(disk, templates['disk']) == {'properties.diskState'}
    assert extra_paths(templates['disk'], disk) == set()
    assert (disk['managedBy'], disk['properties']['osType'], disk['properties']['diskState']) == (vm['id'], 'Windows', 'Attached')
    refused = client.call('DELETE', disk_id, API_DISK)
    assert (refused.status_code, refused.json()['error']['code']) == (409, 'OperationNotAllowed')
    request = fill(arm, templates['snapshot_copy_request'])
    request['properties']['creationData']['sourceResourceId'] = disk_id.lstrip('/')
    snapshot_id = client.id('snapshots', 'mySnapshot2')
    created = client.call('PUT', snapshot_id, API_DISK, request)
    assert created.status_code == 202
    assert created.json()['properties']['provisioningState'] == 'Updating'
    assert {'Location', 'Azure-AsyncOperation'} <= set(created.headers)
    client.poll(created)
    snapshot = client.call('GET', snapshot_id, API_DISK).json()
    assert extra_paths(snapshot, templates['snapshot']) == set()
    assert (snapshot['properties']['diskSizeGB'], snapshot['properties']['provisioningState']) == (30, 'Succeeded')
    gone = client.call('DELETE', snapshot_id, API_DISK)
    assert gone.status_code == 202
    assert client.http.get(gone.headers['Location']).status_code == 202
    assert client.http.get(gone.headers['Location']).status_code == 204
    assert client.call('GET', snapshot_id, API_DISK).status_code == 404


# ---------------------------------------------------------------------------------------------------
# Marketplace

def test_marketplace_levels(arm: ArmServer, client: Client) -> None:
    base = f'/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/locations/westus/publishers'
    publishers = client.call('GET', base, API_COMPUTE).json()
    assert {'Canonical', 'Debian'} <= {item['name'] for item in publishers}
    assert all(set(item) == {'name', 'location', 'id'} for item in publishers)
    offers = client.call('GET', f'{base}/Debian/artifacttypes/vmimage/offers', API_COMPUTE).json()
    assert [item['name'] for item in offers] == ['debian-12']
    skus = client.call('GET', f'{base}/debian/artifacttypes/vmimage/offers/debian-12/skus', API_COMPUTE).json()
    assert [item['name'] for item in skus] == ['12', '12-gen2']
    path = f'{base}/Debian/artifacttypes/vmimage/offers/debian-12/skus/12-gen2/versions'
    versions = client.call('GET', path, API_COMPUTE).json()
    assert [item['name'] for item in versions] == ['0.20240211.1654', '0.20240415.1718', '0.20240507.1740']
    assert versions[0]['id'] == (f'/Subscriptions/{arm.subscription_id}/Providers/Microsoft.Compute/Locations/westus/Publishers/Debian'
                                 '/ArtifactTypes/VMImage/Offers/debian-12/Skus/12-gen2/Versions/0.20240211.1654')
    newest = client.call('GET', path, API_COMPUTE, **{'$top': '1', '$orderby': 'name desc'}).json()
    assert [item['name'] for item in newest] == ['0.20240507.1740']
    image = client.call('GET', f'{path}/0.20240507.1740', API_COMPUTE).json()
    assert set(image) == {'properties', 'name', 'location', 'id'}
    assert image['properties']['hyperVGeneration'] == 'V2'
    assert image['properties']['osDiskImage'] == {'operatingSystem': 'Linux'}
    assert client.call('GET', f'{base}/Nobody/artifacttypes/vmimage/offers', API_COMPUTE).status_code == 404
    assert client.call('GET', f'{path}/0.1.2', API_COMPUTE).status_code == 404


def test_marketplace_fixture_names_its_source() -> None:
    for name in ('marketplace.json', 'diskrp.json'):
        source = json.loads((TARGETS / 'fixtures/azure' / name).read_text())['_source']
        assert source['repository'] == 'Azure/azure-rest-api-specs'
        assert all(len(commit) == 40 for commit in source['files'].values())


# ---------------------------------------------------------------------------------------------------
# the command line

def test_command_line_serves_until_killed(examples: pathlib.Path, tmp_path: pathlib.Path) -> None:
    process = subprocess.Popen([sys.executable, str(TARGETS / 'arm_server.py'), '--examples', str(examples), '--workdir', str(tmp_path)],
                               stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(process.stdout.readline())
        assert set(info) == {'url', 'ca_file', 'subscription_id', 'tenant_id', 'client_id', 'secret'}
        answer = requests.get(f"{info['url']}/metadata/endpoints", params={'api-version': '2019-05-01'}, verify=info['ca_file'], timeout=10)
        assert answer.json()['resourceManager'] == info['url'] + '/'
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
