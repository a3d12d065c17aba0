# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of the Azure access layer: where credentials come from, clouds, IDs, errors, operation states."""
from __future__ import annotations

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils import _azure as azure

SUB = '6b2a1f3e-9c4d-4e8f-a1b2-c3d4e5f60718'
NO_PARAMS = {key: None for key in azure.AZURE_AUTH_SPEC}
NO_PARAMS['auth_source'] = 'auto'


def params(**values):
    merged = dict(NO_PARAMS)
    merged.update(values)
    return merged


def write_credentials(home, text):
    (home / '.azure').mkdir(parents=True, exist_ok=True)
    (home / '.azure' / 'credentials').write_text(text)


@pytest.mark.parametrize('value', ['not-a-guid', '', '6b2a1f3e9c4d4e8fa1b2c3d4e5f60718', SUB + 'x', '{' + SUB + '}'])
def test_a_subscription_id_must_be_a_guid(value):
    with pytest.raises(azure.AzureError, match='is not an Azure subscription ID'):
        azure.check_subscription_id(value)


def test_a_subscription_id_is_lower_cased():
    assert azure.check_subscription_id(SUB.upper()) == SUB


def test_module_options_win_over_the_environment(tmp_path):
    env = {'AZURE_CLIENT_ID': 'env-client', 'AZURE_SECRET': 'env-secret', 'AZURE_TENANT': 'env-tenant'}
    found = azure.resolve_settings(params(client_id='opt', secret='s', tenant='t', subscription_id=SUB), env, str(tmp_path))
    assert (found['source'], found['client_id'], found['secret'], found['tenant']) == ('params', 'opt', 's', 't')


def test_the_environment_is_read_when_no_option_names_a_credential(tmp_path):
    env = {'AZURE_CLIENT_ID': 'c', 'AZURE_SECRET': 's', 'AZURE_TENANT': 't', 'AZURE_SUBSCRIPTION_ID': SUB,
           'AZURE_CLOUD_ENVIRONMENT': 'AzureChinaCloud'}
    found = azure.resolve_settings(params(), env, str(tmp_path))
    assert found['source'] == 'env'
    assert (found['client_id'], found['subscription_id'], found['cloud_environment']) == ('c', SUB, 'AzureChinaCloud')
    assert azure.credential_kind(found) == 'service_principal'


def test_a_subscription_option_applies_to_credentials_from_the_environment(tmp_path):
    env = {'AZURE_CLIENT_ID': 'c', 'AZURE_SECRET': 's', 'AZURE_TENANT': 't', 'AZURE_SUBSCRIPTION_ID': 'other'}
    found = azure.resolve_settings(params(subscription_id=SUB), env, str(tmp_path))
    assert (found['source'], found['subscription_id']) == ('env', SUB)


def test_the_default_profile_of_the_credential_file(tmp_path):
    write_credentials(tmp_path, f'[default]\nsubscription_id={SUB}\nclient_id=fc\nsecret=fs\ntenant=ft\n\n[prod]\nclient_id=pc\n')
    found = azure.resolve_settings(params(), {}, str(tmp_path))
    assert (found['source'], found['client_id'], found['subscription_id']) == ('credential_file', 'fc', SUB)


def test_a_named_profile(tmp_path):
    write_credentials(tmp_path, '[default]\nclient_id=fc\n\n[prod]\nclient_id=pc\nsecret=ps\ntenant=pt\n')
    found = azure.resolve_settings(params(), {'AZURE_PROFILE': 'prod'}, str(tmp_path))
    assert (found['source'], found['client_id']) == ('credential_file', 'pc')


def test_an_unknown_profile_names_the_profiles_there(tmp_path):
    write_credentials(tmp_path, '[default]\nclient_id=fc\n')
    with pytest.raises(azure.AzureError, match=r"profile 'prod' is not in .*profiles there: default"):
        azure.resolve_settings(params(profile='prod'), {}, str(tmp_path))


def test_the_cli_is_used_when_it_is_installed_and_nothing_else_is_set(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'az').write_text('#!/bin/sh\n')
    (bin_dir / 'az').chmod(0o755)
    found = azure.resolve_settings(params(), {'PATH': str(bin_dir)}, str(tmp_path))
    assert azure.credential_kind(found) == 'cli'


def test_a_managed_identity_is_used_on_a_host_that_has_one(tmp_path):
    found = azure.resolve_settings(params(), {'PATH': str(tmp_path), 'IDENTITY_ENDPOINT': 'http://169.254.169.254/x'}, str(tmp_path))
    assert azure.credential_kind(found) == 'msi'


def test_no_credentials_anywhere_is_a_clear_error(tmp_path):
    with pytest.raises(azure.AzureError, match='no Azure credentials found.*az login'):
        azure.resolve_settings(params(), {'PATH': str(tmp_path)}, str(tmp_path))


@pytest.mark.parametrize('values, match', [
    ({'client_id': 'c', 'secret': 's'}, 'needs a tenant'),
    ({'client_id': 'c'}, 'incomplete'),
    ({'ad_user': 'u'}, 'incomplete'),
])
def test_incomplete_credentials_are_a_clear_error(tmp_path, values, match):
    found = azure.resolve_settings(params(**values), {}, str(tmp_path))
    with pytest.raises(azure.AzureError, match=match):
        azure.credential_kind(found)


def test_user_and_password():
    assert azure.credential_kind({'source': 'params', 'ad_user': 'u', 'password': 'p'}) == 'user'


@pytest.mark.parametrize('name, manager', [
    (None, 'https://management.azure.com/'),
    ('AzureCloud', 'https://management.azure.com/'),
    ('azure_china_cloud', 'https://management.chinacloudapi.cn/'),
    ('AzureUSGovernment', 'https://management.usgovcloudapi.net/'),
])
def test_known_clouds(name, manager):
    assert azure.known_cloud(name).resource_manager == manager


def test_an_unknown_cloud_name_is_not_known():
    assert azure.known_cloud('AzureGermanCloud') is None


def test_cloud_from_a_metadata_document():
    document = {'name': 'AzureStack', 'resourceManager': 'https://management.local.azurestack.external/',
                'authentication': {'loginEndpoint': 'https://adfs.local.azurestack.external/adfs',
                                   'audiences': ['https://management.adfs.azurestack.local/4de154de']},
                'suffixes': {'storage': 'local.azurestack.external'}}
    cloud = azure.cloud_from_metadata('https://management.local.azurestack.external', document)
    assert cloud.scope == 'https://management.adfs.azurestack.local/4de154de/.default'
    assert (cloud.storage_suffix, cloud.public) == ('local.azurestack.external', False)


def test_cloud_from_a_list_of_clouds_takes_the_one_the_url_serves():
    documents = [{'name': 'A', 'resourceManager': 'https://a/', 'authentication': {'loginEndpoint': 'https://la/', 'audiences': ['https://a/']}},
                 {'name': 'B', 'resourceManager': 'https://b/', 'authentication': {'loginEndpoint': 'https://lb/', 'audiences': ['https://b/']}}]
    assert azure.cloud_from_metadata('https://b', documents).name == 'B'


def test_a_metadata_document_without_authentication_is_an_error():
    with pytest.raises(azure.AzureError, match='is it an Azure Resource Manager endpoint'):
        azure.cloud_from_metadata('https://example.org', {'name': 'x'})


def test_resource_ids_round_trip():
    value = azure.resource_id(SUB, 'rg', 'galleries', 'g', 'images', 'i', 'versions', '1.0.0')
    assert value == f'/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/i/versions/1.0.0'
    parsed = azure.parse_resource_id(value)
    assert parsed['resource_group'] == 'rg'
    assert parsed['types'] == [('galleries', 'g'), ('images', 'i'), ('versions', '1.0.0')]


def test_ids_without_a_leading_slash_parse_as_azure_writes_them():
    parsed = azure.parse_resource_id(f'subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/snapshots/s1')
    assert parsed['types'] == [('snapshots', 's1')]


@pytest.mark.parametrize('value', ['/resourceGroups/rg', 'vm1', f'/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/images'])
def test_bad_resource_ids(value):
    with pytest.raises(azure.AzureError):
        azure.parse_resource_id(value)


def test_an_arm_error_keeps_code_message_and_details():
    body = {'error': {'code': 'PropertyChangeNotAllowed', 'message': "Changing property 'osState' is not allowed.",
                      'details': [{'code': 'Inner', 'message': 'more'}]}}
    error = azure.error_from_body(409, body, 'req-1', 'PUT /x')
    assert error.code == 'PropertyChangeNotAllowed' and error.status == 409 and error.request_id == 'req-1'
    assert 'Inner: more' in error.message
    assert error.to_result()['azure_error']['code'] == 'PropertyChangeNotAllowed'


def test_an_identity_platform_error():
    error = azure.error_from_body(401, {'error': 'invalid_client', 'error_description': 'AADSTS7000215: Invalid client secret.'}, None, 'token')
    assert error.code == 'invalid_client' and 'AADSTS7000215' in error.message


@pytest.mark.parametrize('document, state', [
    ({'status': 'InProgress'}, 'inprogress'),
    ({'status': 'Succeeded'}, 'succeeded'),
    ({'properties': {'provisioningState': 'Creating'}}, 'creating'),
    ({'properties': {}}, ''),
    (None, ''),
])
def test_operation_state(document, state):
    assert azure.operation_state(document) == state


@pytest.mark.parametrize('headers, seconds', [({'Retry-After': '7'}, 7.0), ({'retry-after': '0'}, 0.0), ({}, 3.0),
                                              ({'Retry-After': 'Wed, 21 Oct 2026 07:28:00 GMT'}, 3.0)])
def test_retry_after(headers, seconds):
    assert azure.retry_after(headers, 3.0) == seconds


def test_with_query_replaces_the_api_version():
    url = azure.with_query('https://h/op/1?api-version=2022-01-03&monitor=true', **{'api-version': '2024-03-03'})
    assert 'api-version=2024-03-03' in url and 'monitor=true' in url and '2022-01-03' not in url


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def session_with(responses, clock):
    """An ArmSession whose requests are answered from RESPONSES in order (the protocol's shapes)."""
    session = azure.ArmSession.__new__(azure.ArmSession)
    session.cloud = azure.known_cloud('AzureCloud')
    session.poll_seconds = 30.0
    session.clock = clock.clock
    session.sleep = clock.sleep
    session.settings = {'source': 'params'}
    session.sent = []

    def send(method, url, body=None, what=''):
        session.sent.append((method, url))
        return responses.pop(0)
    session._send = send
    return session


def test_an_async_operation_is_polled_after_what_retry_after_says_then_the_resource_is_read():
    clock = FakeClock()
    responses = [
        azure.Response(200, {'Retry-After': '2'}, {'status': 'InProgress'}),
        azure.Response(200, {}, {'status': 'Succeeded'}),
        azure.Response(200, {}, {'name': 'img', 'properties': {'provisioningState': 'Succeeded'}}),
    ]
    session = session_with(responses, clock)
    started = azure.Response(201, {'Azure-AsyncOperation': 'https://h/op/1', 'Retry-After': '5'}, {'properties': {'provisioningState': 'Creating'}})
    final = session.wait('PUT', '/subscriptions/s/x', '2024-11-01', started, deadline=100)
    assert final['name'] == 'img'
    assert clock.sleeps == [5.0, 2.0]
    assert [url.split('?')[0] for _method, url in session.sent] == ['https://h/op/1', 'https://h/op/1', 'https://management.azure.com/subscriptions/s/x']


def test_a_failed_operation_raises_the_services_error():
    clock = FakeClock()
    session = session_with([azure.Response(200, {}, {'status': 'Failed', 'error': {'code': 'OSProvisioningTimedOut', 'message': 'late'}})], clock)
    started = azure.Response(202, {'Azure-AsyncOperation': 'https://h/op/2', 'Retry-After': '1'}, None)
    with pytest.raises(azure.AzureError, match='operation failed: OSProvisioningTimedOut: late') as caught:
        session.wait('POST', '/subscriptions/s/vm/deallocate', '2024-11-01', started, deadline=100)
    assert caught.value.operation == 'https://h/op/2'


def test_a_location_operation_ends_when_the_location_stops_answering_202():
    clock = FakeClock()
    session = session_with([azure.Response(202, {'Retry-After': '1'}, None), azure.Response(200, {}, {'result': 1})], clock)
    started = azure.Response(202, {'Location': 'https://h/loc/3', 'Retry-After': '1'}, None)
    assert session.wait('POST', '/subscriptions/s/vm/capture', '2024-11-01', started, deadline=100) == {'result': 1}


def test_an_operation_past_the_deadline_times_out_saying_it_goes_on():
    clock = FakeClock()
    session = session_with([azure.Response(200, {'Retry-After': '10'}, {'status': 'InProgress'})] * 20, clock)
    started = azure.Response(201, {'Azure-AsyncOperation': 'https://h/op/4', 'Retry-After': '10'}, None)
    with pytest.raises(azure.AzureTimeout, match='goes on in Azure. Run the task again'):
        session.wait('PUT', '/subscriptions/s/x', '2024-11-01', started, deadline=25)
    assert clock.now == 25


def test_the_cli_subscription_is_the_default_one_of_its_profile(tmp_path):
    profile = {'subscriptions': [{'id': 'other', 'isDefault': False}, {'id': SUB, 'isDefault': True}]}
    (tmp_path / '.azure').mkdir()
    # the CLI writes the file with a byte order mark
    (tmp_path / '.azure' / 'azureProfile.json').write_bytes(b'\xef\xbb\xbf' + __import__('json').dumps(profile).encode())
    assert azure.ArmSession._cli_subscription({}, str(tmp_path)) == SUB


def test_a_cli_without_a_profile_says_to_log_in(tmp_path):
    with pytest.raises(azure.AzureError, match="run 'az login' or set subscription_id"):
        azure.ArmSession._cli_subscription({'AZURE_CONFIG_DIR': str(tmp_path / 'none')}, str(tmp_path))
