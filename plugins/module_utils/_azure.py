# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Azure Resource Manager access for the azure_* modules: credentials, clouds, one REST client, bounded waits.

The modules speak the ARM REST API at pinned API versions (the versions whose published examples and
OpenAPI files the tests check the requests against) through azure-core's HTTP pipeline, with
azure-identity's credentials. Credentials come from the same places azure.azcollection reads them:
module options, the ``AZURE_*`` environment variables, profiles in ``~/.azure/credentials``, the Azure
CLI's login, and a managed identity.

Long-running operations follow Azure's documented protocol: poll ``Azure-AsyncOperation`` (a status
document) or else ``Location`` (202 until done), sleep what ``Retry-After`` says, stop on ``Failed`` or
``Canceled`` with the service's error, and give up at a deadline with a message saying the operation
goes on in Azure. A re-run finds the resource still ``Creating`` and waits on it instead of starting
another operation (:meth:`ArmSession.wait_provisioned`).

Every failure leaves this file as :class:`AzureError`; only the modules' ``main()`` turns it into
``fail_json``.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import time
import traceback
import typing as t
import uuid
from urllib.parse import urlencode, urljoin, urlsplit, parse_qsl, urlunsplit

AZURE_IMPORT_ERROR = None
try:
    from azure.core import PipelineClient
    from azure.core.exceptions import AzureError as _SdkError, ClientAuthenticationError
    from azure.core.pipeline import policies as _policies
    from azure.core.rest import HttpRequest
    from azure import identity as _identity
except ImportError:  # the modules report it with missing_required_lib()
    AZURE_IMPORT_ERROR = traceback.format_exc()

API_COMPUTE = '2024-11-01'
API_GALLERY = '2024-03-03'
API_DISK = '2025-01-02'
API_METADATA = '2019-05-01'

# The Azure CLI's public client id: Azure's documented default for user/password sign-in.
CLI_CLIENT_ID = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'
GUID = re.compile(r'^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$')
# provisioning states after which nothing more happens to a resource
TERMINAL_STATES = frozenset(('succeeded', 'failed', 'canceled', 'created'))
# the poll interval when the service sends no Retry-After (Azure's clients use 30 s; ARM sends the header)
DEFAULT_POLL_SECONDS = 15.0
MIN_POLL_SECONDS = 0.2

AZURE_AUTH_SPEC: dict[str, dict[str, t.Any]] = dict(
    auth_source=dict(type='str', default='auto', choices=['auto', 'cli', 'credential_file', 'env', 'msi']),
    profile=dict(type='str'),
    subscription_id=dict(type='str'),
    client_id=dict(type='str'),
    secret=dict(type='str', no_log=True),
    tenant=dict(type='str'),
    ad_user=dict(type='str'),
    password=dict(type='str', no_log=True),
    cloud_environment=dict(type='str'),
    cert_validation_mode=dict(type='str', choices=['validate', 'ignore']),
)

# module option -> AZURE_* variable -> key in a ~/.azure/credentials profile (azure.azcollection's names)
CREDENTIAL_KEYS = (
    ('subscription_id', 'AZURE_SUBSCRIPTION_ID', 'subscription_id'),
    ('client_id', 'AZURE_CLIENT_ID', 'client_id'),
    ('secret', 'AZURE_SECRET', 'secret'),
    ('tenant', 'AZURE_TENANT', 'tenant'),
    ('ad_user', 'AZURE_AD_USER', 'ad_user'),
    ('password', 'AZURE_PASSWORD', 'password'),
    ('cloud_environment', 'AZURE_CLOUD_ENVIRONMENT', 'cloud_environment'),
    ('cert_validation_mode', 'AZURE_CERT_VALIDATION_MODE', 'cert_validation_mode'),
)

KNOWN_CLOUDS = {
    'azurecloud': dict(name='AzureCloud', resource_manager='https://management.azure.com/',
                       login_endpoint='https://login.microsoftonline.com/', audience='https://management.azure.com/',
                       storage_suffix='core.windows.net'),
    'azurechinacloud': dict(name='AzureChinaCloud', resource_manager='https://management.chinacloudapi.cn/',
                            login_endpoint='https://login.chinacloudapi.cn/', audience='https://management.chinacloudapi.cn/',
                            storage_suffix='core.chinacloudapi.cn'),
    'azureusgovernment': dict(name='AzureUSGovernment', resource_manager='https://management.usgovcloudapi.net/',
                              login_endpoint='https://login.microsoftonline.us/', audience='https://management.usgovcloudapi.net/',
                              storage_suffix='core.usgovcloudapi.net'),
}


class AzureError(Exception):
    """An Azure call failed, or the module's Azure settings cannot work; says what and, where known, why."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None,
                 details: t.Any = None, request_id: str | None = None, operation: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details
        self.request_id = request_id
        self.operation = operation

    def to_result(self) -> dict[str, t.Any]:
        """Return the error as data for fail_json."""
        error = {'status': self.status, 'code': self.code, 'request_id': self.request_id}
        if self.details:
            error['details'] = self.details
        if self.operation:
            error['operation'] = self.operation
        return {'azure_error': error}


class AzureTimeout(AzureError):
    """A long-running operation did not end before the deadline; it goes on in Azure."""


class Cloud(t.NamedTuple):
    name: str
    resource_manager: str
    login_endpoint: str
    audience: str
    storage_suffix: str

    @property
    def scope(self) -> str:
        return self.audience.rstrip('/') + '/.default'

    @property
    def public(self) -> bool:
        return self.name in ('AzureCloud', 'AzureChinaCloud', 'AzureUSGovernment')


# ---------------------------------------------------------------------------------------------------
# decisions (pure)

def check_subscription_id(value: str) -> str:
    """Return VALUE when it is a subscription id (a GUID), else raise with what one looks like."""
    if not GUID.match(value or ''):
        raise AzureError(f"subscription_id {value!r} is not an Azure subscription ID: it must be a GUID such as "
                         "'00000000-0000-0000-0000-000000000000' (see 'az account list --query [].id')")
    return value.lower()


def read_credential_file(home: str, profile: str | None) -> dict[str, str]:
    """Return the keys of PROFILE (or 'default') in ~/.azure/credentials, or {} when there is no such file."""
    path = os.path.join(home, '.azure', 'credentials')
    if not os.path.exists(path):
        if profile:
            raise AzureError(f'profile {profile!r} was asked for, but {path} does not exist')
        return {}
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding='utf-8')
    except configparser.Error as exc:
        raise AzureError(f'{path} cannot be read as an INI file: {exc}') from exc
    section = profile or 'default'
    if not parser.has_section(section):
        if profile:
            raise AzureError(f'profile {profile!r} is not in {path} (profiles there: {", ".join(parser.sections()) or "none"})')
        return {}
    return dict(parser.items(section))


def resolve_settings(params: dict[str, t.Any], env: t.Mapping[str, str], home: str) -> dict[str, t.Any]:
    """Decide where the credentials come from and what they are; return {'source', keys of CREDENTIAL_KEYS}.

    The order is azure.azcollection's: with ``auth_source: auto``, module options when any credential
    option is set, else the ``AZURE_*`` variables when any is set, else the profile of ``~/.azure/credentials``,
    else the Azure CLI's login when ``az`` is installed, else a managed identity when the host has one.
    ``profile`` (option or ``AZURE_PROFILE``) always means the credential file.
    """
    source = params.get('auth_source') or 'auto'
    profile = params.get('profile') or env.get('AZURE_PROFILE')
    from_params = {key: params.get(key) for key, *_names in CREDENTIAL_KEYS if params.get(key)}
    from_env = {key: env[var] for key, var, _file_key in CREDENTIAL_KEYS if env.get(var)}
    credential_keys = ('client_id', 'secret', 'ad_user', 'password', 'tenant')

    def merged(base: dict[str, t.Any], origin: str) -> dict[str, t.Any]:
        # options that are not credentials (cloud, subscription) still apply whatever the source
        settings = dict(base)
        for key, value in from_params.items():
            if key not in credential_keys or origin == 'params':
                settings[key] = value
        settings['source'] = origin
        return settings

    if source == 'auto':
        if profile:
            source = 'credential_file'
        elif any(key in from_params for key in credential_keys):
            return merged(from_params, 'params')
        elif any(key in from_env for key in credential_keys):
            source = 'env'
        elif read_credential_file(home, None):
            source = 'credential_file'
        elif shutil.which('az', path=env.get('PATH')):
            source = 'cli'
        elif env.get('IDENTITY_ENDPOINT') or env.get('MSI_ENDPOINT'):
            source = 'msi'
        else:
            raise AzureError('no Azure credentials found: set client_id, secret and tenant (module options or '
                             'AZURE_CLIENT_ID, AZURE_SECRET, AZURE_TENANT), a profile in ~/.azure/credentials, '
                             "log in with 'az login', or run on a host with a managed identity (auth_source: msi)")
    if source == 'env':
        return merged(from_env, 'env')
    if source == 'credential_file':
        keys = {key: value for key, value in read_credential_file(home, profile).items() if value}
        if not keys:
            raise AzureError(f"auth_source is credential_file, but {os.path.join(home, '.azure', 'credentials')} "
                             "has no [default] profile")
        return merged(keys, 'credential_file')
    base = {key: value for key, value in from_env.items() if key in ('subscription_id', 'cloud_environment', 'client_id')}
    return merged(base, source)


def credential_kind(settings: dict[str, t.Any]) -> str:
    """Return which azure-identity credential SETTINGS make: service_principal, user, cli or msi."""
    source = settings['source']
    if source in ('cli', 'msi'):
        return source
    if settings.get('client_id') and settings.get('secret'):
        if not settings.get('tenant'):
            raise AzureError(f'a service principal needs a tenant as well as client_id and secret (from {source})')
        return 'service_principal'
    if settings.get('ad_user') and settings.get('password'):
        return 'user'
    raise AzureError(f'the credentials from {source} are incomplete: give client_id, secret and tenant '
                     '(a service principal) or ad_user and password')


def known_cloud(name: str) -> Cloud | None:
    """Return the endpoints of a named public cloud, or None when NAME is not one."""
    found = KNOWN_CLOUDS.get((name or 'AzureCloud').replace('_', '').lower())
    return Cloud(**found) if found else None


def cloud_from_metadata(url: str, document: t.Any) -> Cloud:
    """Return the endpoints an ARM metadata document (api-version 2019-05-01 and later) gives for URL."""
    if isinstance(document, list):  # 2022-09-01 and later list every cloud; take the one URL serves
        document = next((item for item in document
                         if str(item.get('resourceManager', '')).rstrip('/') == url.rstrip('/')), document[0] if document else {})
    try:
        auth = document['authentication']
        return Cloud(name=document.get('name') or url, resource_manager=document.get('resourceManager') or url,
                     login_endpoint=auth['loginEndpoint'], audience=auth['audiences'][0],
                     storage_suffix=(document.get('suffixes') or {}).get('storage', ''))
    except (KeyError, IndexError, TypeError) as exc:
        raise AzureError(f'{url} answered its metadata endpoint without {exc}: is it an Azure Resource Manager endpoint?') from exc


def with_query(url: str, **query: str) -> str:
    """Return URL with QUERY set (replacing keys it had)."""
    parts = urlsplit(url)
    merged = dict(parse_qsl(parts.query, keep_blank_values=True))
    merged.update(query)
    return urlunsplit(parts._replace(query=urlencode(merged, safe="$'(),:/")))


def resource_id(subscription_id: str, resource_group: str, *type_names: str, provider: str = 'Microsoft.Compute') -> str:
    """Return the ARM id of a resource: TYPE_NAMES alternate type and name (``'galleries', 'g', 'images', 'i'``)."""
    path = f'/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/{provider}'
    for kind, name in zip(type_names[::2], type_names[1::2]):
        path += f'/{kind}/{name}'
    return path


def parse_resource_id(value: str) -> dict[str, t.Any]:
    """Split an ARM resource id into subscription, resource_group, provider and [(type, name), ...]."""
    parts = [part for part in (value or '').split('/') if part]
    lowered = [part.lower() for part in parts]
    if len(parts) < 2 or lowered[0] != 'subscriptions':
        raise AzureError(f'{value!r} is not an Azure resource ID (/subscriptions/<id>/resourceGroups/<group>/providers/...)')
    found: dict[str, t.Any] = {'subscription_id': parts[1], 'resource_group': None, 'provider': None, 'types': []}
    rest = parts[2:]
    if len(rest) >= 2 and rest[0].lower() == 'resourcegroups':
        found['resource_group'] = rest[1]
        rest = rest[2:]
    if len(rest) >= 2 and rest[0].lower() == 'providers':
        found['provider'] = rest[1]
        rest = rest[2:]
        if len(rest) % 2:
            raise AzureError(f'{value!r} is not an Azure resource ID: a resource type has no name')
        found['types'] = list(zip(rest[::2], rest[1::2]))
    return found


def error_from_body(status: int, body: t.Any, request_id: str | None, what: str) -> AzureError:
    """Return the AzureError for an ARM error response (``{"error": {"code", "message", "details"}}``)."""
    error = body.get('error') if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get('code')
        message = error.get('message') or code or f'HTTP {status}'
        details = error.get('details')
        detail_text = '; '.join(f"{item.get('code')}: {item.get('message')}" for item in details or [] if isinstance(item, dict))
        return AzureError(f'{what}: {code}: {message}' + (f' ({detail_text})' if detail_text else ''),
                          status=status, code=code, details=details, request_id=request_id)
    if isinstance(error, str):  # the identity platform's form
        return AzureError(f"{what}: {error}: {body.get('error_description', '')}".rstrip(': '), status=status, code=error,
                          request_id=request_id)
    return AzureError(f'{what}: HTTP {status}', status=status, request_id=request_id)


def operation_state(document: t.Any) -> str:
    """Return the lower-case status of an Azure-AsyncOperation document or a resource's provisioningState."""
    if not isinstance(document, dict):
        return ''
    if 'status' in document:
        return str(document['status']).lower()
    return str((document.get('properties') or {}).get('provisioningState', '')).lower()


def retry_after(headers: t.Mapping[str, str], default: float) -> float:
    """Return the seconds Retry-After asks for (a number of seconds), or DEFAULT."""
    value = headers.get('Retry-After') or headers.get('retry-after')
    try:
        return max(float(value), 0.0) if value is not None else default
    except ValueError:  # an HTTP date: rare from ARM, take the default
        return default


# ---------------------------------------------------------------------------------------------------
# the session

class Response(t.NamedTuple):
    status: int
    headers: dict[str, str]
    body: t.Any


class ArmSession:
    """Credentials, cloud endpoints and a REST client for one subscription, as one module run needs them."""

    def __init__(self, params: dict[str, t.Any], env: t.Mapping[str, str] | None = None, home: str | None = None,
                 poll_seconds: float = DEFAULT_POLL_SECONDS, clock: t.Callable[[], float] = time.monotonic,
                 sleep: t.Callable[[float], None] = time.sleep, need_subscription: bool = True) -> None:
        if AZURE_IMPORT_ERROR:
            raise AzureError('the Azure SDK (azure-identity, azure-core) is not installed on the controller')
        env = os.environ if env is None else env
        self.settings = resolve_settings(params, env, home or os.path.expanduser('~'))
        self.kind = credential_kind(self.settings)
        self.verify = self.settings.get('cert_validation_mode', 'validate') != 'ignore'
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.sleep = sleep
        # metadata discovery runs before there is a token: a client without credentials first
        self.client = PipelineClient(base_url='https://management.azure.com/', policies=self._policies(None, ''))
        self.cloud = self._cloud(self.settings.get('cloud_environment') or 'AzureCloud')
        self.credential = self._credential()
        self.client = PipelineClient(base_url=self.cloud.resource_manager, policies=self._policies(self.credential, self.cloud.scope))
        subscription = self.settings.get('subscription_id')
        if not subscription and self.kind == 'cli' and need_subscription:
            subscription = self._cli_subscription(env, home or os.path.expanduser('~'))
        if not subscription and not need_subscription:  # a storage sign-in needs only the credential
            self.subscription_id = ''
            return
        if not subscription:
            raise AzureError(f'no subscription_id: set the option or AZURE_SUBSCRIPTION_ID (credentials from {self.settings["source"]})')
        self.subscription_id = check_subscription_id(subscription)

    # --- set-up

    @staticmethod
    def _policies(credential: t.Any, scope: str) -> list[t.Any]:
        policies = [_policies.HeadersPolicy(), _policies.UserAgentPolicy(base_user_agent='imageprep.vm'),
                    _policies.RetryPolicy(retry_total=4, retry_backoff_factor=1.0)]
        if credential is not None:
            policies.append(_policies.BearerTokenCredentialPolicy(credential, scope))
        policies.append(_policies.NetworkTraceLoggingPolicy())
        return policies

    def _cloud(self, name: str) -> Cloud:
        found = known_cloud(name)
        if found:
            return found
        if not name.lower().startswith('https://'):
            raise AzureError(f"cloud_environment {name!r} is neither a known cloud (AzureCloud, AzureChinaCloud, "
                             "AzureUSGovernment) nor an https URL of an Azure Resource Manager endpoint (Azure Stack)")
        url = name.rstrip('/') + '/'
        response = self._send('GET', with_query(urljoin(url, 'metadata/endpoints'), **{'api-version': API_METADATA}),
                              what=f'reading the metadata of {url}')
        if response.status != 200:
            raise error_from_body(response.status, response.body, None, f'reading the metadata of {url}')
        return cloud_from_metadata(url, response.body)

    def _credential(self) -> t.Any:
        settings = self.settings
        options: dict[str, t.Any] = {'connection_verify': self.verify}
        if not self.cloud.public or self.cloud.name != 'AzureCloud':
            options['authority'] = self.cloud.login_endpoint
        if not self.cloud.public:
            options['disable_instance_discovery'] = True
        if self.kind == 'service_principal':
            return _identity.ClientSecretCredential(settings['tenant'], settings['client_id'], settings['secret'], **options)
        if self.kind == 'user':
            return _identity.UsernamePasswordCredential(settings.get('client_id') or CLI_CLIENT_ID, settings['ad_user'],
                                                        settings['password'], tenant_id=settings.get('tenant') or 'organizations',
                                                        **options)
        if self.kind == 'cli':
            return _identity.AzureCliCredential(tenant_id=settings.get('tenant'))
        return _identity.ManagedIdentityCredential(client_id=settings.get('client_id'))

    @staticmethod
    def _cli_subscription(env: t.Mapping[str, str], home: str) -> str:
        """Return the Azure CLI's default subscription, from its profile (azureProfile.json in AZURE_CONFIG_DIR or ~/.azure)."""
        path = os.path.join(env.get('AZURE_CONFIG_DIR') or os.path.join(home, '.azure'), 'azureProfile.json')
        try:
            with open(path, encoding='utf-8-sig') as handle:  # the CLI writes it with a byte order mark
                profile = json.load(handle)
        except (OSError, ValueError) as exc:
            raise AzureError(f"the Azure CLI's profile {path} cannot be read ({exc}); run 'az login' or set subscription_id") from exc
        default = next((item for item in profile.get('subscriptions') or [] if item.get('isDefault')), None)
        if not default:
            raise AzureError(f"the Azure CLI's profile {path} has no default subscription; run 'az account set' or set subscription_id")
        return str(default.get('id', ''))

    # --- requests

    def _send(self, method: str, url: str, body: t.Any = None, what: str = '') -> Response:
        request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
        request.headers['x-ms-client-request-id'] = str(uuid.uuid4())
        try:
            response = self.client.send_request(request, connection_verify=self.verify)
            response.read()
        except ClientAuthenticationError as exc:
            raise AzureError(f'{what}: Azure did not accept the credentials from {self.settings["source"]}: {exc.message}') from exc
        except _SdkError as exc:
            raise AzureError(f'{what}: {exc.message}') from exc
        text = response.text()
        try:
            parsed = json.loads(text) if text else None
        except ValueError:
            parsed = {'error': {'code': 'NotJson', 'message': text[:500]}} if response.status_code >= 400 else None
        return Response(response.status_code, dict(response.headers), parsed)

    def url(self, path: str, api_version: str, query: dict[str, str] | None = None) -> str:
        base = path if path.startswith('https://') else urljoin(self.cloud.resource_manager, path.lstrip('/'))
        return with_query(base, **{'api-version': api_version}, **(query or {}))

    def call(self, method: str, path: str, api_version: str, body: t.Any = None,
             query: dict[str, str] | None = None, allow: tuple[int, ...] = ()) -> Response:
        """Send one request; raise AzureError for an error status that is not in ALLOW."""
        what = f'{method} {path}'
        response = self._send(method, self.url(path, api_version, query), body, what)
        if response.status >= 400 and response.status not in allow:
            raise error_from_body(response.status, response.body, response.headers.get('x-ms-request-id'), what)
        return response

    def get(self, path: str, api_version: str, query: dict[str, str] | None = None) -> dict[str, t.Any] | None:
        """Return the resource at PATH, or None when it does not exist."""
        response = self.call('GET', path, api_version, query=query, allow=(404,))
        return None if response.status == 404 else response.body

    def list(self, path: str, api_version: str, query: dict[str, str] | None = None) -> list[dict[str, t.Any]]:
        """Return every item of a list operation, following nextLink; [] when the parent does not exist."""
        items: list[dict[str, t.Any]] = []
        response = self.call('GET', path, api_version, query=query, allow=(404,))
        while response.status != 404:
            body = response.body or {}
            items.extend(body.get('value', []) if isinstance(body, dict) else body)
            next_link = body.get('nextLink') if isinstance(body, dict) else None
            if not next_link:
                break
            response = self._send('GET', next_link, what=f'GET {path} (next page)')
            if response.status >= 400:
                raise error_from_body(response.status, response.body, response.headers.get('x-ms-request-id'), f'GET {path}')
        return items

    def put(self, path: str, api_version: str, body: dict[str, t.Any], timeout: float) -> dict[str, t.Any]:
        """Create or update the resource at PATH and wait until it is provisioned; return it."""
        deadline = self.clock() + timeout
        response = self.call('PUT', path, api_version, body)
        return self.wait('PUT', path, api_version, response, deadline)

    def patch(self, path: str, api_version: str, body: dict[str, t.Any], timeout: float) -> dict[str, t.Any]:
        """Update properties of the resource at PATH and wait until it is provisioned; return it."""
        deadline = self.clock() + timeout
        response = self.call('PATCH', path, api_version, body)
        return self.wait('PATCH', path, api_version, response, deadline)

    def post(self, path: str, api_version: str, body: t.Any = None, timeout: float = 600) -> t.Any:
        """Run an action (``.../deallocate``) and wait for its end; return its result document, if any."""
        deadline = self.clock() + timeout
        response = self.call('POST', path, api_version, body)
        return self.wait('POST', path, api_version, response, deadline)

    def delete(self, path: str, api_version: str, timeout: float) -> bool:
        """Delete the resource at PATH and wait until it is gone; False when it did not exist."""
        deadline = self.clock() + timeout
        response = self.call('DELETE', path, api_version, allow=(404,))
        if response.status in (204, 404):  # ARM answers 204 to a DELETE of a resource that does not exist
            return False
        if response.status == 200:
            return True
        self.wait('DELETE', path, api_version, response, deadline)
        return True

    # --- long-running operations

    def wait(self, method: str, path: str, api_version: str, response: Response, deadline: float) -> t.Any:
        """Follow the long-running operation RESPONSE started, until it ends or DEADLINE passes."""
        headers = {key.lower(): value for key, value in response.headers.items()}
        async_url = headers.get('azure-asyncoperation')
        location = headers.get('location')
        interval = retry_after(headers, self.poll_seconds)
        what = f'{method} {path}'
        if response.status not in (201, 202) and not async_url and (
                method not in ('PUT', 'PATCH') or operation_state(response.body) in TERMINAL_STATES | {''}):
            return self._final(method, path, api_version, response.body)
        if async_url:
            while True:
                self._pause(interval, deadline, what, async_url)
                status = self._send('GET', async_url, what=f'{what} (operation status)')
                if status.status >= 400:
                    raise error_from_body(status.status, status.body, status.headers.get('x-ms-request-id'), f'{what} (operation status)')
                state = operation_state(status.body)
                if state == 'succeeded':
                    break
                if state in ('failed', 'canceled'):
                    raise self._operation_error(what, state, status.body, async_url)
                interval = retry_after(status.headers, self.poll_seconds)
            if method == 'POST' and location:
                final = self._send('GET', location, what=f'{what} (result)')
                return final.body if final.status == 200 else None
            return self._final(method, path, api_version, response.body)
        if location:
            while True:
                self._pause(interval, deadline, what, location)
                status = self._send('GET', location, what=f'{what} (operation)')
                if status.status == 202:
                    interval = retry_after(status.headers, self.poll_seconds)
                    continue
                if status.status >= 400:
                    raise error_from_body(status.status, status.body, status.headers.get('x-ms-request-id'), what)
                if method in ('PUT', 'PATCH'):
                    return self._final(method, path, api_version, status.body)
                return status.body
        if method in ('PUT', 'PATCH'):
            return self.wait_provisioned(path, api_version, deadline - self.clock(), interval)
        return response.body

    def wait_provisioned(self, path: str, api_version: str, timeout: float,
                         interval: float | None = None) -> dict[str, t.Any]:
        """Poll the resource at PATH until its provisioningState is terminal (re-attach to a running operation)."""
        body = self.wait_until(path, api_version, lambda body: operation_state(body) in TERMINAL_STATES or not operation_state(body),
                               timeout, interval=interval)
        state = operation_state(body)
        if state in ('failed', 'canceled'):
            raise AzureError(f'waiting for {path}: provisioning ended {state}', code=f'Provisioning{state.title()}',
                             details=(body.get('properties') or {}).get('provisioningError'))
        return body

    def wait_until(self, path: str, api_version: str, done: t.Callable[[dict[str, t.Any]], bool], timeout: float,
                   query: dict[str, str] | None = None, interval: float | None = None) -> dict[str, t.Any]:
        """Poll the resource at PATH until DONE(resource) holds; return it. Raise AzureTimeout at the deadline."""
        deadline = self.clock() + timeout
        what = f'waiting for {path}'
        polls = 0
        while True:
            body = self.get(path, api_version, query=query)
            if body is None:
                raise AzureError(f'{what}: the resource is gone (deleted while it was being changed?)', status=404)
            if done(body):
                return body
            # a resource's GET carries no Retry-After: poll after 1, 2, 4 ... seconds, up to the usual interval
            self._pause(interval if interval is not None else min(self.poll_seconds, 2.0 ** polls), deadline, what, path)
            polls += 1

    def _final(self, method: str, path: str, api_version: str, body: t.Any) -> t.Any:
        if method in ('PUT', 'PATCH'):
            final = self.get(path, api_version)
            if final is None:
                raise AzureError(f'{method} {path}: the operation succeeded but the resource is not there')
            if operation_state(final) in ('failed', 'canceled'):
                raise AzureError(f'{method} {path}: provisioning ended {operation_state(final)}')
            return final
        return body

    def _pause(self, interval: float, deadline: float, what: str, operation: str) -> None:
        remaining = deadline - self.clock()
        if remaining <= 0:
            raise AzureTimeout(f'{what}: not finished within the timeout; the operation goes on in Azure. Run the task '
                               'again to wait for it (the module finds it and waits instead of starting another), or '
                               'raise the timeout', code='Timeout', operation=operation)
        self.sleep(min(max(interval, MIN_POLL_SECONDS), remaining))

    @staticmethod
    def _operation_error(what: str, state: str, body: t.Any, url: str) -> AzureError:
        error = (body or {}).get('error') or {}
        code = error.get('code') or f'Operation{state.title()}'
        message = error.get('message') or f'the operation ended {state}'
        details = error.get('details')
        detail_text = '; '.join(f"{item.get('code')}: {item.get('message')}" for item in details or [] if isinstance(item, dict))
        return AzureError(f'{what}: operation {state}: {code}: {message}' + (f' ({detail_text})' if detail_text else ''),
                          code=code, details=details, operation=url)
