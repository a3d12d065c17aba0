# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A small Azure Resource Manager for the tests: the Compute resources the azure_* modules use, over TLS.

It answers from published facts, not from what the modules send:

- bodies are built from the response bodies of the official REST API examples (Azure/azure-rest-api-specs,
  in ``$IMAGEPREP_AZURE_REST_EXAMPLES``; Disk/Snapshot and Marketplace shapes in ``fixtures/azure/``, which
  name their sources), with names, ids and states of the resources the tests create;
- long-running operations follow Azure's documented protocol (*Track asynchronous Azure operations*):
  201/202 with ``Azure-AsyncOperation`` (a status document: InProgress, Succeeded, Failed, Canceled),
  ``Location`` (202 while running, then 200 or 204) and ``Retry-After``;
- sign-in is the Microsoft identity platform's client-credentials flow (v2.0 token endpoint, OpenID
  configuration), cloud endpoints come from ARM's metadata endpoint (``/metadata/endpoints``), errors have
  ARM's shape (``{"error": {"code", "message"}}``, ``x-ms-request-id``);
- every request body is checked against the published OpenAPI files (:mod:`arm_openapi`); what does not
  conform is listed in :attr:`ArmServer.problems`.

Use::

    with ArmServer(examples_dir, workdir) as arm:
        arm.add_vm('rg', 'vm1')
        run the module with arm.env() in its environment

or ``python arm_server.py --examples DIR --workdir DIR``, which prints one JSON line (url, ca_file, ids,
secret) and serves until it is killed.
"""
from __future__ import annotations

import argparse
import base64
import copy
import dataclasses
import datetime
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import pathlib
import re
import secrets
import signal
import ssl
import sys
import threading
import time
import traceback
import typing as t
import uuid
from urllib.parse import parse_qsl, urlsplit, unquote

import arm_openapi

API_COMPUTE = '2024-11-01'
API_GALLERY = '2024-03-03'
API_DISK = '2025-01-02'
# the resource-type segment after providers/Microsoft.Compute -> (canonical name, api-version)
COMPUTE_TYPES = {
    'virtualmachines': ('virtualMachines', API_COMPUTE),
    'images': ('images', API_COMPUTE),
    'disks': ('disks', API_DISK),
    'snapshots': ('snapshots', API_DISK),
    'galleries': ('galleries', API_GALLERY),
}
# list operations answer this many items per page, so that clients must follow nextLink
PAGE_SIZE = 2
TOKEN_SECONDS = 3600
STORAGE_AUDIENCE = 'https://storage.azure.com'
FIXTURES = pathlib.Path(__file__).resolve().parent / 'fixtures' / 'azure'
EXAMPLES = {
    'vm_get': 'ComputeRP/stable/2024-11-01/examples/virtualMachineExamples/VirtualMachine_Get.json',
    'vm_instance_view': 'ComputeRP/stable/2024-11-01/examples/virtualMachineExamples/VirtualMachine_Get_InstanceView.json',
    'vm_create': 'ComputeRP/stable/2024-11-01/examples/virtualMachineExamples/VirtualMachine_Create_FromAGeneralizedSharedImage.json',
    'image_create': 'ComputeRP/stable/2024-11-01/examples/imageExamples/Image_CreateFromAVM.json',
    'gallery_get': 'GalleryRP/stable/2024-03-03/examples/galleryExamples/Gallery_Get.json',
    'gallery_image_get': 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImage_Get.json',
    'version_get': 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImageVersion_Get_WithReplicationStatus.json',
}
VERSION_NAME = re.compile(r'^(\d+)\.(\d+)\.(\d+)$')
API_VERSION_FORM = re.compile(r'^\d{4}-\d{2}-\d{2}(-preview)?$')
RESERVED_SCOPES = {'openid', 'profile', 'offline_access'}


class Request(t.NamedTuple):
    """One request the server answered (``path`` without the query; ``headers`` with lower-case names)."""
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: t.Any
    status: int


class Response(t.NamedTuple):
    status: int
    body: t.Any = None
    headers: dict[str, str] = {}


class ArmError(Exception):
    """An error answer in ARM's shape; ``oauth`` errors use the identity platform's shape instead."""

    def __init__(self, status: int, code: str, message: str, target: str | None = None,
                 headers: dict[str, str] | None = None, oauth: dict[str, t.Any] | None = None) -> None:
        super().__init__(f'{status} {code}: {message}')
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.headers = headers or {}
        self.oauth = oauth

    def response(self) -> Response:
        if self.oauth is not None:
            return Response(self.status, self.oauth, self.headers)
        error = {'code': self.code, 'message': self.message}
        if self.target:
            error['target'] = self.target
        return Response(self.status, {'error': error}, self.headers)


class Rule(t.NamedTuple):
    kind: str               # 'fail', 'hang' or 'error'
    method: str
    pattern: re.Pattern[str]
    status: int
    code: str
    message: str


@dataclasses.dataclass
class Entry:
    """A stored resource: its body as GET answers it, and what the server keeps beside it."""
    id: str
    kind: str
    body: dict[str, t.Any]
    state: dict[str, t.Any] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        return key_of(self.id)

    @property
    def provisioning(self) -> str:
        return self.body.get('properties', {}).get('provisioningState', '')

    @provisioning.setter
    def provisioning(self, value: str) -> None:
        self.body.setdefault('properties', {})['provisioningState'] = value


@dataclasses.dataclass
class Operation:
    """A long-running operation and what happens when it ends."""
    id: str
    method: str
    path: str
    location: str
    api_version: str
    resource_key: str | None
    finish: t.Callable[[], t.Any]
    fail: t.Callable[[dict[str, t.Any]], None]
    polls_left: int
    hang: bool
    failure: dict[str, t.Any] | None
    start_time: str
    status: str = 'InProgress'
    end_time: str | None = None
    result: t.Any = None
    error: dict[str, t.Any] | None = None


# ---------------------------------------------------------------------------------------------------
# small pure functions

def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def key_of(resource_id: str) -> str:
    """Return the lookup key of an ARM id: leading slash, lower case (ARM ids are case-insensitive)."""
    return '/' + resource_id.strip('/').lower()


def region(name: str) -> str:
    """Return the programmatic name of a region ('West US' -> 'westus')."""
    return re.sub(r'\s+', '', name or '').lower()


def version_key(name: str) -> tuple[t.Any, ...]:
    return tuple((0, int(part), '') if part.isdigit() else (1, 0, part) for part in re.split(r'[.\-]', name))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def fill_placeholders(value: t.Any, known: dict[str, str]) -> t.Any:
    """Replace the examples' ``{placeholder}`` strings: KNOWN names first, others by a plain lower-case word."""
    if isinstance(value, dict):
        return {key: fill_placeholders(item, known) for key, item in value.items()}
    if isinstance(value, list):
        return [fill_placeholders(item, known) for item in value]
    if isinstance(value, str) and '{' in value:
        return re.sub(r'\{([^{}]+)\}', lambda match: known.get(match.group(1), re.sub(r'[^0-9a-z]', '', match.group(1).lower())), value)
    return value


def flatten(value: t.Any, prefix: str = '') -> dict[str, t.Any]:
    """Return {json path: leaf value} of VALUE (ids compared case-insensitively, without the leading slash)."""
    found: dict[str, t.Any] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            found.update(flatten(item, f'{prefix}.{key}' if prefix else key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.update(flatten(item, f'{prefix}[{index}]'))
    elif isinstance(value, str) and value.lower().lstrip('/').startswith('subscriptions/'):
        found[prefix] = key_of(value)
    else:
        found[prefix] = value
    return found


def changed_paths(new: t.Any, olds: t.Iterable[t.Any], allowed: t.Iterable[str] = ()) -> list[str]:
    """Return the paths set in NEW with another value than in OLDS (merged), except those under ALLOWED prefixes."""
    before: dict[str, t.Any] = {}
    for old in olds:
        before.update(flatten(old))
    allowed = tuple(allowed)
    changed = []
    for path, value in flatten(new).items():
        if any(path == prefix or path.startswith(prefix + '.') or path.startswith(prefix + '[') for prefix in allowed):
            continue
        if path not in before:
            changed.append(path)
        elif path == 'location' and isinstance(value, str) and isinstance(before[path], str):
            if region(value) != region(before[path]):
                changed.append(path)
        elif before[path] != value:
            changed.append(path)
    return changed


def make_certificates(workdir: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """Write a fresh CA and a server certificate it signed (SAN IP:127.0.0.1, DNS:localhost); return the paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    start = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    end = start + datetime.timedelta(days=7)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f'imageprep ARM test CA {uuid.uuid4().hex[:8]}')])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'localhost')]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address('127.0.0.1')), x509.DNSName('localhost')]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = workdir / 'arm-ca.pem', workdir / 'arm-server.pem', workdir / 'arm-server-key.pem'
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_file.chmod(0o600)
    return ca_file, cert_file, key_file


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    arm: ArmServer

    def handle_error(self, request: t.Any, client_address: t.Any) -> None:
        """Clients that drop the connection or fail the TLS handshake are not the server's problem."""


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    server_version = 'imageprep-arm-test'
    timeout = 60
    # one write per answer (flushed after each request), without Nagle's delay: else every answer waits ~40 ms
    wbufsize = -1
    disable_nagle_algorithm = True
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.connection.do_handshake()  # in this thread, not in the accepting one

    def _answer(self) -> None:
        length = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(length) if length else b''
        headers = {key.lower(): value for key, value in self.headers.items()}
        response = self.server.arm.serve(self.command, self.path, headers, raw)
        data = b''
        if response.body is not None and response.status != 204:
            data = json.dumps(response.body).encode('utf-8')
        self.send_response(response.status)
        for key, value in response.headers.items():
            self.send_header(key, value)
        if data:
            self.send_header('Content-Type', 'application/json; charset=utf-8')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if data and self.command != 'HEAD':
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: t.Any) -> None:  # pylint: disable=redefined-builtin
        """Requests are kept in ArmServer.requests instead."""


class ArmServer:
    """An Azure Resource Manager test server on https://127.0.0.1:<free port> (see the module docstring).

    Attributes: ``url``, ``ca_file`` (the CA that signed the server's certificate), ``subscription_id``,
    ``tenant_id``, ``client_id``, ``secret``; ``requests`` (every :class:`Request` answered), ``problems``
    (request bodies that do not conform to the OpenAPI files, requests the server does not serve, faults of
    the server), ``response_problems`` (its own answers that do not conform: should stay empty).

    Seeding (at once, no operation to wait for): :meth:`add_resource_group`, :meth:`add_vm`, :meth:`add_disk`,
    :meth:`add_gallery`, :meth:`add_gallery_image`, :meth:`add_image`, :meth:`add_gallery_image_version`;
    :meth:`resource` reads a stored body, :meth:`instance_view` a VM's instance view.

    Behaviour: ``lro_polls`` (status polls answered InProgress before an operation ends; a GET of the
    resource counts as a poll), ``retry_after`` (the Retry-After header), ``page_size`` (items per list page),
    ``vm_agent_ready`` (whether VMs created from now on report their VM agent Ready), :meth:`fail_operation`,
    :meth:`hang_operation`, :meth:`error_next`, :meth:`expire_tokens`.
    """

    def __init__(self, examples_dir: str | os.PathLike[str] | None, workdir: str | os.PathLike[str],
                 page_size: int = PAGE_SIZE, storage_suffix: str = 'core.windows.net') -> None:
        self.examples_dir = arm_openapi.examples_dir(examples_dir)
        self.workdir = pathlib.Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.openapi = arm_openapi.OpenApi(self.examples_dir)
        self.examples = {name: arm_openapi.load_example(self.examples_dir, path) for name, path in EXAMPLES.items()}
        with open(FIXTURES / 'diskrp.json', encoding='utf-8') as handle:
            self.diskrp = json.load(handle)
        with open(FIXTURES / 'marketplace.json', encoding='utf-8') as handle:
            self.marketplace = json.load(handle)
        self.subscription_id = str(uuid.uuid4())
        self.tenant_id = str(uuid.uuid4())
        self.client_id = str(uuid.uuid4())
        self.secret = secrets.token_urlsafe(24)
        self.storage_suffix = storage_suffix
        self.page_size = page_size
        self.requests: list[Request] = []
        self.problems: list[str] = []
        self.response_problems: list[str] = []
        # behaviour knobs
        self.lro_polls = 1
        self.retry_after = 0
        self.vm_agent_ready = True
        self.url = ''
        self.ca_file = ''
        self._lock = threading.RLock()
        self._resources: dict[str, Entry] = {}
        self._groups: dict[str, dict[str, t.Any]] = {}
        self._operations: dict[str, Operation] = {}
        self._pending: dict[str, str] = {}
        self._rules: list[Rule] = []
        self._tokens: dict[str, dict[str, t.Any]] = {}
        self._signing_key = secrets.token_bytes(32)
        self._sp_object_id = str(uuid.uuid4())
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifetime

    def start(self) -> ArmServer:
        ca_file, cert_file, key_file = make_certificates(self.workdir)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        httpd = _HttpServer(('127.0.0.1', 0), _Handler)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        httpd.arm = self
        self._httpd = httpd
        self.url = f'https://127.0.0.1:{httpd.server_address[1]}'
        self.ca_file = str(ca_file)
        # a short poll interval: shutdown() waits for it
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={'poll_interval': 0.05}, name='arm-test-server', daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> ArmServer:
        return self.start()

    def __exit__(self, *exc: t.Any) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Return the environment that points Azure clients (and the collection's modules) at this server."""
        return {
            'REQUESTS_CA_BUNDLE': self.ca_file,
            'AZURE_CLIENT_ID': self.client_id,
            'AZURE_SECRET': self.secret,
            'AZURE_TENANT': self.tenant_id,
            'AZURE_SUBSCRIPTION_ID': self.subscription_id,
            'AZURE_CLOUD_ENVIRONMENT': self.url,
        }

    # --- behaviour knobs

    def fail_operation(self, method: str, path_regex: str, code: str = 'InternalOperationError',
                       message: str = 'An internal execution error occurred. Please retry later.', status: int | None = None) -> None:
        """Make the next long-running operation of METHOD on a path matching PATH_REGEX end Failed with CODE.

        STATUS is what the Location URL answers for it (default 500 for internal errors, else 409).
        """
        status = status or (500 if code.lower().startswith('internal') else 409)
        with self._lock:
            self._rules.append(Rule('fail', method.upper(), re.compile(path_regex, re.IGNORECASE), status, code, message))

    def hang_operation(self, method: str, path_regex: str) -> None:
        """Make the next long-running operation of METHOD on a path matching PATH_REGEX stay InProgress."""
        with self._lock:
            self._rules.append(Rule('hang', method.upper(), re.compile(path_regex, re.IGNORECASE), 0, '', ''))

    def error_next(self, method: str, path_regex: str, status: int, code: str, message: str) -> None:
        """Answer the next METHOD request on a path matching PATH_REGEX with this ARM error."""
        with self._lock:
            self._rules.append(Rule('error', method.upper(), re.compile(path_regex, re.IGNORECASE), status, code, message))

    def expire_tokens(self) -> None:
        """Make every token issued so far expired (clients must sign in again)."""
        with self._lock:
            for claims in self._tokens.values():
                claims['exp'] = int(time.time()) - 1

    def _take_rule(self, kind: str, method: str, path: str) -> Rule | None:
        for rule in self._rules:
            if rule.kind == kind and rule.method == method and rule.pattern.search(path):
                self._rules.remove(rule)
                return rule
        return None

    # --- seeding

    def resource(self, resource_id: str) -> dict[str, t.Any] | None:
        """Return (a copy of) the stored body of RESOURCE_ID, or None."""
        with self._lock:
            entry = self._resources.get(key_of(resource_id))
            return copy.deepcopy(entry.body) if entry else None

    def instance_view(self, vm_id: str) -> dict[str, t.Any] | None:
        """Return the instance view of the VM VM_ID as GET .../instanceView answers it (without counting as a poll), or None."""
        with self._lock:
            entry = self._resources.get(key_of(vm_id))
            return self._instance_view(entry) if entry is not None and entry.kind == 'vm' else None

    def add_resource_group(self, name: str, location: str = 'westus') -> dict[str, t.Any]:
        with self._lock:
            group = self._groups.get(name.lower())
            if group is None:
                group = {'id': f'/subscriptions/{self.subscription_id}/resourceGroups/{name}', 'name': name,
                         'type': 'Microsoft.Resources/resourceGroups', 'location': region(location),
                         'properties': {'provisioningState': 'Succeeded'}}
                self._groups[name.lower()] = group
            return copy.deepcopy(group)

    def add_vm(self, rg: str, name: str, location: str = 'westus', os_type: str = 'Linux', hyper_v_generation: str = 'V2',
               data_disks: t.Iterable[tuple[int, int]] = ((0, 32), (1, 64)), power_state: str = 'running',
               os_disk_gb: int = 30, generalized: bool = False) -> dict[str, t.Any]:
        """Create a VM from a Marketplace image, with its managed OS and data disks; return its body."""
        if power_state not in ('running', 'stopped', 'deallocated'):
            raise ValueError(f'power_state {power_state!r}: use running, stopped or deallocated')
        with self._lock:
            self.add_resource_group(rg, location)
            group = self._groups[rg.lower()]['name']
            sku = self._marketplace_default(os_type, hyper_v_generation)
            vm_id = self._compute_id(group, 'virtualMachines', name)
            suffix = uuid.uuid4().hex
            os_disk = self._new_disk(group, f'{name}_OsDisk_1_{suffix}', location, os_disk_gb, os_type=os_type,
                                     generation=hyper_v_generation, managed_by=vm_id,
                                     creation={'createOption': 'FromImage', 'imageReference': {'id': sku['version_id']}})
            disks = []
            for lun, size in data_disks:
                disk = self._new_disk(group, f'{name}_DataDisk_{lun}', location, size, managed_by=vm_id,
                                      creation={'createOption': 'Empty'})
                disks.append({'lun': lun, 'name': disk.body['name'], 'createOption': 'Empty', 'caching': 'None',
                              'managedDisk': {'storageAccountType': 'Premium_LRS', 'id': disk.id}, 'diskSizeGB': size})
            template = self.examples['vm_get']['responses']['200']['body']
            properties = {
                'vmId': str(uuid.uuid4()),
                'hardwareProfile': copy.deepcopy(template['properties']['hardwareProfile']),
                'storageProfile': {
                    'imageReference': {'publisher': sku['publisher'], 'offer': sku['offer'], 'sku': sku['sku'], 'version': 'latest'},
                    'osDisk': {'osType': os_type, 'name': os_disk.body['name'], 'createOption': 'FromImage', 'caching': 'ReadWrite',
                               'managedDisk': {'storageAccountType': 'Premium_LRS', 'id': os_disk.id}, 'diskSizeGB': os_disk_gb},
                    'dataDisks': disks,
                },
                'osProfile': self._os_profile(os_type, {'computerName': name, 'adminUsername': 'azureuser'}),
                'networkProfile': {'networkInterfaces': [{'id': f'/subscriptions/{self.subscription_id}/resourceGroups/{group}'
                                                          f'/providers/Microsoft.Network/networkInterfaces/{name}-nic'}]},
                'provisioningState': 'Succeeded',
                'timeCreated': now_iso(),
            }
            body = {'name': name, 'id': vm_id, 'type': template['type'], 'location': region(location), 'tags': {}, 'properties': properties}
            entry = Entry(vm_id, 'vm', body, {'power': power_state, 'generalized': generalized, 'agent_ready': True,
                                              'os_type': os_type, 'generation': hyper_v_generation,
                                              'os_name': sku['osName'], 'os_version': sku['osVersion']})
            self._resources[entry.key] = entry
            return copy.deepcopy(body)

    def add_disk(self, rg: str, name: str, size_gb: int = 32, location: str = 'westus', os_type: str | None = None,
                 hyper_v_generation: str | None = None, sku: str = 'Premium_LRS') -> dict[str, t.Any]:
        """Create an unattached managed disk (an OS disk when OS_TYPE is given); return its body."""
        with self._lock:
            group = self._seed_group(rg, location)
            if self._find(self._compute_id(group, 'disks', name)):
                raise ValueError(f'disk {name} exists in {group}')
            return copy.deepcopy(self._new_disk(group, name, location, size_gb, os_type=os_type, generation=hyper_v_generation, sku=sku).body)

    def add_gallery(self, rg: str, name: str, location: str = 'westus', description: str | None = None) -> dict[str, t.Any]:
        body: dict[str, t.Any] = {'location': location, 'properties': {}}
        if description:
            body['properties']['description'] = description
        return self._seed('PUT', self._compute_id(self._seed_group(rg, location), 'galleries', name), API_GALLERY, body)

    def add_gallery_image(self, rg: str, gallery: str, name: str, os_type: str = 'Linux', os_state: str = 'Generalized',
                          hyper_v_generation: str = 'V2', publisher: str = 'imageprep', offer: str = 'demo', sku: str | None = None,
                          location: str = 'westus') -> dict[str, t.Any]:
        body = {'location': location, 'properties': {'osType': os_type, 'osState': os_state, 'hyperVGeneration': hyper_v_generation,
                                                     'identifier': {'publisher': publisher, 'offer': offer, 'sku': sku or name}}}
        path = self._compute_id(self._seed_group(rg, location), 'galleries', gallery, 'images', name)
        return self._seed('PUT', path, API_GALLERY, body)

    def add_image(self, rg: str, name: str, source_vm: str, location: str = 'westus', tags: dict[str, str] | None = None) -> dict[str, t.Any]:
        """Create a managed image from the (generalized) VM SOURCE_VM (a name in RG, or an id)."""
        group = self._seed_group(rg, location)
        vm_id = source_vm if source_vm.startswith('/') else self._compute_id(group, 'virtualMachines', source_vm)
        body: dict[str, t.Any] = {'location': location, 'properties': {'sourceVirtualMachine': {'id': vm_id}}}
        if tags:
            body['tags'] = tags
        return self._seed('PUT', self._compute_id(group, 'images', name), API_COMPUTE, body)

    def add_gallery_image_version(self, rg: str, gallery: str, image: str, version: str, source_id: str,
                                  target_regions: t.Iterable[str] | None = None, exclude_from_latest: bool = False,
                                  end_of_life_date: str | None = None, location: str = 'westus') -> dict[str, t.Any]:
        """Create a gallery image version from SOURCE_ID: a VM (virtualMachineId) or a managed image (source.id)."""
        group = self._seed_group(rg, location)
        source = {'virtualMachineId': source_id} if '/virtualmachines/' in source_id.lower() else {'id': source_id}
        publishing: dict[str, t.Any] = {'targetRegions': [{'name': name} for name in (target_regions or [location])],
                                        'excludeFromLatest': exclude_from_latest}
        if end_of_life_date:
            publishing['endOfLifeDate'] = end_of_life_date
        body = {'location': location, 'properties': {'publishingProfile': publishing, 'storageProfile': {'source': source}}}
        return self._seed('PUT', self._compute_id(group, 'galleries', gallery, 'images', image, 'versions', version), API_GALLERY, body)

    def _seed_group(self, rg: str, location: str) -> str:
        return self.add_resource_group(rg, location)['name']

    def _seed(self, method: str, path: str, api_version: str, body: dict[str, t.Any]) -> dict[str, t.Any]:
        """Run a request as the server would answer it, end its operation at once, and return the resource."""
        with self._lock:
            try:
                response = self._arm(method, path, {'api-version': api_version}, body, trusted=True)
            except ArmError as exc:
                raise ValueError(f'seeding {path}: {exc}') from exc
            entry = self._resources.get(key_of(path))
            if entry is None:
                raise ValueError(f'seeding {path} created nothing ({response.status})')
            operation = self._operations.get(self._pending.get(entry.key, ''))
            if operation is not None:
                saved, operation.polls_left, operation.hang = operation.polls_left, 0, False
                self._advance(operation)
                operation.polls_left = saved
            return copy.deepcopy(entry.body)

    # --- the HTTP entry point

    def serve(self, method: str, raw_path: str, headers: dict[str, str], raw: bytes) -> Response:
        """Answer one HTTP request (called from the handler threads)."""
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        body: t.Any = None
        response: Response | None = None
        if raw:
            if 'x-www-form-urlencoded' in headers.get('content-type', ''):
                body = dict(parse_qsl(raw.decode('utf-8', 'replace'), keep_blank_values=True))
            else:
                try:
                    body = json.loads(raw)
                except ValueError as exc:
                    response = ArmError(400, 'InvalidRequestContent', f'The request content was invalid and could not be deserialized: {exc}').response()
        with self._lock:
            if response is None:
                try:
                    response = self._route(method, path, query, headers, body)
                except ArmError as exc:
                    response = exc.response()
                except Exception as exc:  # pylint: disable=broad-exception-caught
                    # a fault of this server, not of the client: answer as ARM does and let the tests see it
                    self.problems.append(f'{method} {path}: the ARM test server failed: {traceback.format_exc()}')
                    response = ArmError(500, 'InternalServerError', f'The ARM test server failed: {exc!r}').response()
            request_id = str(uuid.uuid4())
            extra = {'x-ms-request-id': request_id, 'x-ms-correlation-request-id': headers.get('x-ms-correlation-request-id', request_id)}
            if 'x-ms-client-request-id' in headers:
                extra['x-ms-client-request-id'] = headers['x-ms-client-request-id']
            response = response._replace(headers={**response.headers, **extra})
            self.requests.append(Request(method, path, query, headers, body, response.status))
            if path.lower().startswith('/subscriptions/') and response.status < 400 and response.body is not None:
                self.response_problems.extend(f'{method} {path} -> {response.status}: {problem}'
                                              for problem in self.openapi.response_problems(method, path, response.status, response.body))
        return response

    def _route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: t.Any) -> Response:
        low = path.lower().rstrip('/')
        if low == '/metadata/endpoints' and method == 'GET':
            return self._metadata(query)
        match = re.match(r'^/([^/]+)/v2\.0/\.well-known/openid-configuration$', low)
        if match and method == 'GET':
            return self._openid_configuration(path.split('/')[1])
        match = re.match(r'^/([^/]+)/oauth2/v2\.0/token$', low)
        if match and method == 'POST':
            return self._token(path.split('/')[1], body if isinstance(body, dict) else {})
        if re.match(r'^/[^/]+/discovery/instance$', low) and method == 'GET':
            return self._instance_discovery()
        if low.startswith('/subscriptions/'):
            self._authenticate(headers)
            return self._arm(method, path, query, body)
        return self._unserved(method, path, 'NotFound', 404)

    def _unserved(self, method: str, path: str, code: str = 'InvalidResourceType', status: int = 400) -> Response:
        self.problems.append(f'{method} {path}: not served by the ARM test server')
        raise ArmError(status, code, f"The request '{method} {path}' is not served by this Azure Resource Manager test server.")

    # --- identity platform and metadata

    def _metadata(self, query: dict[str, str]) -> Response:
        base = self.url + '/'
        document = {
            'portalEndpoint': base,
            'authentication': {'loginEndpoint': base, 'audiences': [base], 'tenant': 'common', 'identityProvider': 'AAD'},
            'graphAudience': base,
            'graphEndpoint': base,
            'microsoftGraphResourceId': base,
            'resourceManager': base,
            'suffixes': {'storage': self.storage_suffix, 'keyVaultDns': 'vault.azure.net', 'acrLoginServer': 'azurecr.io'},
            'name': 'ImageprepArmTest',
        }
        # 2022-09-01 and later answer a list of clouds; earlier versions one object
        if query.get('api-version', '') >= '2022-09-01':
            return Response(200, [document])
        return Response(200, document)

    def _check_tenant(self, tenant: str) -> None:
        if tenant.lower() != self.tenant_id:
            raise self._oauth_error(400, 'invalid_tenant' if tenant else 'invalid_request', 90002,
                                    f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
                                    'signing into the correct cloud.')

    def _openid_configuration(self, tenant: str) -> Response:
        self._check_tenant(tenant)
        base = f'{self.url}/{self.tenant_id}'
        return Response(200, {
            'token_endpoint': f'{base}/oauth2/v2.0/token',
            'token_endpoint_auth_methods_supported': ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
            'jwks_uri': f'{base}/discovery/v2.0/keys',
            'response_modes_supported': ['query', 'fragment', 'form_post'],
            'subject_types_supported': ['pairwise'],
            'id_token_signing_alg_values_supported': ['RS256'],
            'response_types_supported': ['code', 'id_token', 'code id_token', 'id_token token'],
            'scopes_supported': ['openid', 'profile', 'email', 'offline_access'],
            'issuer': f'{base}/v2.0',
            'request_uri_parameter_supported': False,
            'userinfo_endpoint': f'{self.url}/oidc/userinfo',
            'authorization_endpoint': f'{base}/oauth2/v2.0/authorize',
            'device_authorization_endpoint': f'{base}/oauth2/v2.0/devicecode',
            'http_logout_supported': True,
            'frontchannel_logout_supported': True,
            'end_session_endpoint': f'{base}/oauth2/v2.0/logout',
            'claims_supported': ['sub', 'iss', 'aud', 'exp', 'iat', 'auth_time', 'acr', 'nonce', 'tid', 'ver', 'oid'],
            'tenant_region_scope': None,
            'cloud_instance_name': urlsplit(self.url).netloc,
            'cloud_graph_host_name': urlsplit(self.url).netloc,
            'msgraph_host': urlsplit(self.url).netloc,
            'rbac_url': self.url,
        })

    def _instance_discovery(self) -> Response:
        host = urlsplit(self.url).netloc
        return Response(200, {'tenant_discovery_endpoint': f'{self.url}/{self.tenant_id}/v2.0/.well-known/openid-configuration',
                              'api-version': '1.1', 'metadata': [{'preferred_network': host, 'preferred_cache': host, 'aliases': [host]}]})

    def _oauth_error(self, status: int, error: str, number: int, text: str) -> ArmError:
        trace, correlation, stamp = str(uuid.uuid4()), str(uuid.uuid4()), datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%SZ')
        return ArmError(status, error, text, oauth={
            'error': error,
            'error_description': f'AADSTS{number}: {text} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {stamp}',
            'error_codes': [number], 'timestamp': stamp, 'trace_id': trace, 'correlation_id': correlation,
            'error_uri': f'{self.url}/error?code={number}'})

    def _token(self, tenant: str, form: dict[str, str]) -> Response:
        """The v2.0 token endpoint, client-credentials grant with a client secret.

        (The password grant is not served: MSAL's home-realm discovery before it asks https://<host>/common/userrealm/
        without the authority's port, so it cannot reach a server on another port than 443.)
        """
        self._check_tenant(tenant)
        for name in ('grant_type', 'client_id', 'scope'):
            if not form.get(name):
                raise self._oauth_error(400, 'invalid_request', 900144, f"The request body must contain the following parameter: '{name}'.")
        if form['grant_type'] != 'client_credentials':
            raise self._oauth_error(400, 'unsupported_grant_type', 70003, f"The app requested an unsupported grant type '{form['grant_type']}'.")
        if form['client_id'].lower() != self.client_id:
            raise self._oauth_error(400, 'unauthorized_client', 700016,
                                    f"Application with identifier '{form['client_id']}' was not found in the directory '{self.tenant_id}'. "
                                    'This can happen if the application has not been installed by the administrator of the tenant '
                                    'or consented to by any user in the tenant.')
        if 'client_secret' not in form:
            raise self._oauth_error(401, 'invalid_client', 7000216,
                                    "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.")
        if not hmac.compare_digest(form['client_secret'].encode(), self.secret.encode()):
            raise self._oauth_error(401, 'invalid_client', 7000215,
                                    'Invalid client secret provided. Ensure the secret being sent in the request is the client secret '
                                    f"value, not the client secret ID, for a secret added to app '{self.client_id}'.")
        audience = self._audience(form['scope'])
        claims = {'appid': self.client_id, 'appidacr': '1', 'idtyp': 'app', 'oid': self._sp_object_id, 'sub': self._sp_object_id}
        return Response(200, {'token_type': 'Bearer', 'expires_in': TOKEN_SECONDS - 1, 'ext_expires_in': TOKEN_SECONDS - 1,
                              'access_token': self._issue(audience, claims)})

    def _audience(self, scope: str) -> str:
        """Return the audience of the one resource SCOPE asks for (<resource>/.default): ARM, or Azure Storage."""
        scopes = [item for item in scope.split() if item not in RESERVED_SCOPES]
        if len(scopes) != 1 or not scopes[0].endswith('/.default'):
            raise self._oauth_error(400, 'invalid_scope', 1002012,
                                    f"The provided value for scope {scope} is not valid. Client credential flows must have a scope "
                                    'value with /.default suffixed to the resource identifier (application ID URI).')
        resource = scopes[0][:-len('/.default')].rstrip('/')
        if resource == self.url:
            return self.url + '/'
        if resource == STORAGE_AUDIENCE:
            return STORAGE_AUDIENCE
        raise self._oauth_error(400, 'invalid_resource', 500011,
                                f"The resource principal named {resource} was not found in the tenant named {self.tenant_id}. This can "
                                'happen if the application has not been installed by the administrator of the tenant or consented '
                                'to by any user in the tenant.')

    def _jwt(self, claims: dict[str, t.Any]) -> str:
        header = b64url(json.dumps({'typ': 'JWT', 'alg': 'HS256'}).encode())
        payload = b64url(json.dumps(claims).encode())
        signature = b64url(hmac.new(self._signing_key, f'{header}.{payload}'.encode(), hashlib.sha256).digest())
        return f'{header}.{payload}.{signature}'

    def _issue(self, audience: str, identity: dict[str, t.Any]) -> str:
        """Issue an access token (a v1.0 JWT, as Azure issues for ARM) for AUDIENCE; ARM accepts only those it issued."""
        issued = int(time.time())
        claims = {'aud': audience, 'iss': f'https://sts.windows.net/{self.tenant_id}/', 'iat': issued, 'nbf': issued,
                  'exp': issued + TOKEN_SECONDS, **identity, 'tid': self.tenant_id, 'ver': '1.0'}
        token = self._jwt(claims)
        self._tokens[token] = claims
        return token

    def _authenticate(self, headers: dict[str, str]) -> None:
        challenge = {'WWW-Authenticate': f'Bearer authorization_uri="{self.url}/{self.tenant_id}", error="invalid_token", '
                                         'error_description="The authentication failed because of missing \'Authorization\' header."'}
        value = headers.get('authorization')
        if not value:
            raise ArmError(401, 'AuthenticationFailed', "Authentication failed. The 'Authorization' header is missing.", headers=challenge)
        scheme, _sep, token = value.partition(' ')
        if scheme.lower() != 'bearer' or not token.strip():
            raise ArmError(401, 'AuthenticationFailed', "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                           headers=challenge)
        claims = self._tokens.get(token.strip())
        if claims is None:
            raise ArmError(401, 'InvalidAuthenticationToken', 'The access token is invalid.', headers=challenge)
        if claims['exp'] <= time.time():
            expiry = datetime.datetime.fromtimestamp(claims['exp'], datetime.timezone.utc).strftime('%m/%d/%Y %H:%M:%S')
            current = datetime.datetime.now(datetime.timezone.utc).strftime('%m/%d/%Y %H:%M:%S')
            raise ArmError(401, 'ExpiredAuthenticationToken',
                           f"The access token expiry UTC time '{expiry}' is earlier than current UTC time '{current}'.", headers=challenge)
        if claims['aud'] != self.url + '/':
            raise ArmError(401, 'InvalidAuthenticationTokenAudience',
                           f"The access token has been obtained for wrong audience or resource '{claims['aud']}'. It should exactly match "
                           f"with one of the allowed audiences '{self.url}/'.", headers=challenge)

    # --- ARM

    def _arm(self, method: str, path: str, query: dict[str, str], body: t.Any, trusted: bool = False) -> Response:
        segments = [part for part in path.split('/') if part]
        lower = [part.lower() for part in segments]
        if len(segments) < 2:
            return self._unserved(method, path)
        if lower[1] != self.subscription_id:
            raise ArmError(404, 'SubscriptionNotFound', f"The subscription '{segments[1]}' could not be found.")
        if not trusted:
            rule = self._take_rule('error', method, path)
            if rule:
                raise ArmError(rule.status, rule.code, rule.message)
            if method in ('PUT', 'PATCH', 'POST') and body is not None:
                self.problems.extend(f'{method} {path}: {problem}' for problem in self.openapi.request_problems(method, path, body))
        rest, low = segments[2:], lower[2:]
        if not rest:
            if method != 'GET':
                return self._unserved(method, path)
            self._check_api(query, None, 'subscriptions')
            return Response(200, {'id': f'/subscriptions/{self.subscription_id}', 'subscriptionId': self.subscription_id,
                                  'tenantId': self.tenant_id, 'displayName': 'imageprep ARM test', 'state': 'Enabled'})
        if low[0] == 'resourcegroups' and len(rest) == 2:
            return self._resource_group(method, rest[1], query, body)
        if low[0] == 'resourcegroups' and len(rest) >= 4 and low[2] == 'providers' and low[3] == 'microsoft.compute':
            group = self._groups.get(low[1])
            if group is None:
                known = COMPUTE_TYPES.get(low[4]) if len(low) > 4 else None
                self._check_api(query, known[1] if known else None, path)
                raise ArmError(404, 'ResourceGroupNotFound', f"Resource group '{rest[1]}' could not be found.")
            return self._compute(method, path, query, body, group['name'], rest[4:])
        if low[:2] == ['providers', 'microsoft.compute']:
            return self._compute_subscription(method, path, query, rest[2:])
        return self._unserved(method, path)

    def _check_api(self, query: dict[str, str], expected: str | tuple[str, ...] | None, what: str) -> str:
        version = query.get('api-version')
        if version is None:
            raise ArmError(400, 'MissingApiVersionParameter', 'The api-version query parameter (?api-version=) is required for all requests.')
        allowed = (expected,) if isinstance(expected, str) else tuple(expected or ())
        if not API_VERSION_FORM.match(version):
            raise ArmError(400, 'InvalidApiVersionParameter',
                           f"The api-version '{version}' is invalid. The supported versions are '{', '.join(allowed)}'.")
        if allowed and version not in allowed:
            raise ArmError(400, 'NoRegisteredProviderFound',
                           f"No registered resource provider found for API version '{version}' for the request '{what}'. "
                           f"The supported api-versions are '{', '.join(allowed)}'.")
        return version

    def _resource_group(self, method: str, name: str, query: dict[str, str], body: t.Any) -> Response:
        self._check_api(query, None, 'resourceGroups')
        group = self._groups.get(name.lower())
        if method in ('GET', 'HEAD'):
            if group is None:
                if method == 'HEAD':
                    return Response(404)
                raise ArmError(404, 'ResourceGroupNotFound', f"Resource group '{name}' could not be found.")
            return Response(204) if method == 'HEAD' else Response(200, copy.deepcopy(group))
        if method == 'PUT':
            location = (body or {}).get('location')
            if not location:
                raise ArmError(400, 'LocationRequired', 'The location property is required for this definition.')
            created = group is None
            group = self.add_resource_group(name, location)
            if (body or {}).get('tags') is not None:
                self._groups[name.lower()]['tags'] = dict(body['tags'])
            return Response(201 if created else 200, copy.deepcopy(self._groups[name.lower()]))
        return self._unserved(method, f'/subscriptions/{self.subscription_id}/resourcegroups/{name}')

    def _compute_id(self, group: str, *type_names: str) -> str:
        path = f'/subscriptions/{self.subscription_id}/resourceGroups/{group}/providers/Microsoft.Compute'
        for kind, name in zip(type_names[::2], type_names[1::2]):
            path += f'/{kind}/{name}'
        return path

    def _compute(self, method: str, path: str, query: dict[str, str], body: t.Any, group: str, rest: list[str]) -> Response:
        low = [part.lower() for part in rest]
        if not rest or low[0] not in COMPUTE_TYPES:
            self._check_api(query, None, path)
            return self._unserved(method, path)
        kind, api = COMPUTE_TYPES[low[0]]
        self._check_api(query, api, f'Microsoft.Compute/{kind}')
        if len(rest) == 1:
            if method != 'GET':
                return self._unserved(method, path)
            prefix = key_of(self._compute_id(group)) + f'/{low[0]}/'
            found = [entry for entry in self._resources.values() if entry.key.startswith(prefix) and entry.key.count('/') == prefix.count('/')]
            return self._list(path, query, api, found)
        resource_id = self._compute_id(group, kind, rest[1])
        if kind == 'virtualMachines':
            return self._vm(method, path, query, body, group, rest[1], resource_id, low[2:])
        if len(rest) != 2 and kind != 'galleries':
            return self._unserved(method, path)
        if kind == 'disks':
            return self._disk(method, path, query, resource_id)
        if kind == 'snapshots':
            return self._snapshot(method, path, query, body, group, resource_id)
        if kind == 'images':
            return self._image(method, path, query, body, group, resource_id)
        return self._gallery_tree(method, path, query, body, group, rest[1:])

    def _compute_subscription(self, method: str, path: str, query: dict[str, str], rest: list[str]) -> Response:
        low = [part.lower() for part in rest]
        if len(rest) == 1 and low[0] in COMPUTE_TYPES and method == 'GET':
            kind, api = COMPUTE_TYPES[low[0]]
            self._check_api(query, api, f'Microsoft.Compute/{kind}')
            # /subscriptions/{s}/resourcegroups/{g}/providers/microsoft.compute/{type}/{name}: top-level resources only
            found = [entry for entry in self._resources.values() if entry.key.split('/')[-2] == low[0] and entry.key.count('/') == 8]
            return self._list(path, query, api, found)
        if len(rest) == 4 and low[0] == 'locations' and low[2] == 'operations' and method == 'GET':
            self._check_api(query, (API_COMPUTE, API_GALLERY, API_DISK), 'Microsoft.Compute/locations/operations')
            return self._operation_status(rest[3], query)
        if len(rest) >= 3 and low[0] == 'locations' and low[2] == 'publishers' and method == 'GET':
            self._check_api(query, API_COMPUTE, 'Microsoft.Compute/locations/publishers')
            return self._marketplace(path, rest[1], rest[3:], low[3:], query)
        self._check_api(query, None, path)
        return self._unserved(method, path)

    def _list(self, path: str, query: dict[str, str], api: str, entries: list[Entry]) -> Response:
        token = query.get('$skiptoken', '0')
        if not token.isdigit():
            raise ArmError(400, 'InvalidSkipToken', f"The skip token '{token}' is invalid.")
        start = int(token)
        page = entries[start:start + self.page_size]
        body: dict[str, t.Any] = {'value': [self._view(entry, {}) for entry in page]}
        if start + self.page_size < len(entries):
            body['nextLink'] = f'{self.url}{path}?api-version={api}&$skiptoken={start + self.page_size}'
        return Response(200, body)

    def _find(self, resource_id: str) -> Entry | None:
        return self._resources.get(key_of(resource_id))

    def _not_found(self, group: str, type_path: str) -> ArmError:
        return ArmError(404, 'ResourceNotFound', f"The Resource 'Microsoft.Compute/{type_path}' under resource group '{group}' was not found. "
                        'For more details please go to https://aka.ms/ARMResourceNotFoundFix')

    def _get(self, entry: Entry | None, group: str, type_path: str, query: dict[str, str]) -> Response:
        if entry is None:
            raise self._not_found(group, type_path)
        self._poll_resource(entry)
        return Response(200, self._view(entry, query))

    def _require_location(self, body: t.Any) -> str:
        if not isinstance(body, dict):
            raise ArmError(400, 'InvalidRequestContent', 'The request content was invalid: a JSON object is required.')
        if not body.get('location'):
            raise ArmError(400, 'LocationRequired', 'The location property is required for this definition.')
        return body['location']

    def _busy(self, entry: Entry) -> None:
        operation_id = self._pending.get(entry.key)
        if operation_id and self._operations[operation_id].status == 'InProgress':
            raise ArmError(409, 'Conflict', f"The operation cannot be performed because another operation ({operation_id}) on resource "
                           f"'{entry.id}' is in progress. Retry after it has finished.")

    def _referenced(self, resource_id: str, kinds: t.Iterable[str], what: str) -> Entry:
        entry = self._find(resource_id or '')
        if entry is None or entry.kind not in kinds:
            raise ArmError(404, 'NotFound', f"The {what} '{resource_id}' was not found.", target=what)
        if entry.provisioning.lower() not in ('succeeded', ''):
            raise ArmError(409, 'Conflict', f"The {what} '{resource_id}' is {entry.provisioning}, not Succeeded.", target=what)
        return entry

    # --- long-running operations

    def _start(self, method: str, path: str, location: str, api: str, entry: Entry | None, finish: t.Callable[[], t.Any],
               fail: t.Callable[[dict[str, t.Any]], None], status: int, body: t.Any = None, location_header: bool = True) -> Response:
        hang = self._take_rule('hang', method, path)
        failing = self._take_rule('fail', method, path)
        operation = Operation(id=str(uuid.uuid4()), method=method, path=path, location=region(location) or 'westus', api_version=api,
                              resource_key=entry.key if entry else None, finish=finish, fail=fail, polls_left=max(self.lro_polls, 0),
                              hang=hang is not None, start_time=now_iso(),
                              failure={'code': failing.code, 'message': failing.message, 'status': failing.status} if failing else None)
        self._operations[operation.id] = operation
        if entry is not None:
            self._pending[entry.key] = operation.id
        status_url = f'{self.url}/subscriptions/{self.subscription_id}/providers/Microsoft.Compute/locations/{operation.location}/operations/{operation.id}'
        headers = {'Azure-AsyncOperation': f'{status_url}?api-version={api}', 'Retry-After': str(self.retry_after)}
        if location_header:
            headers['Location'] = f'{status_url}?monitor=true&api-version={api}'
        if entry is not None and body is None and method in ('PUT', 'PATCH'):
            body = self._view(entry, {})
        return Response(status, body, headers)

    def _advance(self, operation: Operation) -> None:
        """One poll: count it, and end the operation once it has been polled lro_polls times."""
        if operation.status != 'InProgress' or operation.hang:
            return
        if operation.polls_left > 0:
            operation.polls_left -= 1
            return
        operation.end_time = now_iso()
        if operation.resource_key and self._pending.get(operation.resource_key) == operation.id:
            del self._pending[operation.resource_key]
        if operation.failure:
            operation.status = 'Failed'
            operation.error = {'code': operation.failure['code'], 'message': operation.failure['message']}
            operation.fail(operation.error)
        else:
            operation.status = 'Succeeded'
            operation.result = operation.finish()

    def _poll_resource(self, entry: Entry) -> None:
        """A GET of a resource whose operation runs counts as a poll, so clients may wait on the resource itself."""
        operation_id = self._pending.get(entry.key)
        if operation_id:
            self._advance(self._operations[operation_id])

    def _operation_status(self, operation_id: str, query: dict[str, str]) -> Response:
        operation = self._operations.get(operation_id.lower())
        if operation is None:
            raise ArmError(404, 'OperationNotFound', f"The operation '{operation_id}' was not found.")
        self._advance(operation)
        retry = {'Retry-After': str(self.retry_after)}
        if query.get('monitor', '').lower() == 'true':  # the Location URL
            if operation.status == 'InProgress':
                url = f'{self.url}/subscriptions/{self.subscription_id}/providers/Microsoft.Compute/locations/{operation.location}/operations/{operation.id}'
                return Response(202, None, {**retry, 'Location': f'{url}?monitor=true&api-version={operation.api_version}'})
            if operation.status == 'Failed':
                failure = operation.failure or {}
                raise ArmError(failure.get('status', 500), failure.get('code', 'OperationFailed'), failure.get('message', 'The operation failed.'))
            if operation.method == 'DELETE':
                return Response(204)
            if operation.method in ('PUT', 'PATCH'):
                entry = self._resources.get(operation.resource_key or '')
                return Response(200, self._view(entry, {}) if entry else None)
            return Response(200, operation.result)
        document: dict[str, t.Any] = {'startTime': operation.start_time, 'status': operation.status, 'name': operation.id}
        if operation.end_time:
            document['endTime'] = operation.end_time
        if operation.error:
            document['error'] = dict(operation.error)
        return Response(200, document, retry if operation.status == 'InProgress' else {})

    # --- views

    def _view(self, entry: Entry, query: dict[str, str]) -> dict[str, t.Any]:
        body = copy.deepcopy(entry.body)
        expand = query.get('$expand', '').lower()
        if entry.kind == 'vm':
            if 'instanceview' in expand:
                body['properties']['instanceView'] = self._instance_view(entry)
            if 'userdata' not in expand:
                body['properties'].pop('userData', None)
        if entry.kind == 'version' and 'replicationstatus' in expand:
            body['properties']['replicationStatus'] = self._replication_status(entry)
        return body

    def _instance_view(self, entry: Entry) -> dict[str, t.Any]:
        """The instance view, from VirtualMachine_Get_InstanceView.json's statuses and the VM's state."""
        template = self.examples['vm_instance_view']['responses']['200']['body']
        state, properties = entry.state, entry.body['properties']
        stamp = now_iso()
        view: dict[str, t.Any] = {'platformUpdateDomain': 0, 'platformFaultDomain': 0}
        if state['power'] == 'running':
            view['computerName'] = properties.get('osProfile', {}).get('computerName', entry.body['name'])
            view['osName'] = state.get('os_name', '')
            view['osVersion'] = state.get('os_version', '')
            vm_agent = copy.deepcopy(template['vmAgent'])
            vm_agent['extensionHandlers'] = []
            if state.get('agent_ready'):
                vm_agent['statuses'][0]['time'] = stamp
            else:
                vm_agent['statuses'] = [{'code': 'ProvisioningState/Unavailable', 'level': 'Warning', 'displayStatus': 'Not Ready',
                                         'message': 'VM status blob is found but not yet populated.', 'time': stamp}]
            view['vmAgent'] = vm_agent
        disk_status = template['disks'][0]['statuses'][0]
        storage = properties.get('storageProfile', {})
        view['disks'] = [{'name': disk.get('name', ''), 'statuses': [dict(disk_status, time=stamp)]}
                         for disk in [storage.get('osDisk', {})] + storage.get('dataDisks', [])]
        view['hyperVGeneration'] = state.get('generation', 'V1')
        provisioning = entry.provisioning or 'Succeeded'
        statuses = [dict(template['statuses'][0], code=f'ProvisioningState/{provisioning.lower()}',
                         displayStatus='Provisioning succeeded' if provisioning == 'Succeeded' else provisioning, time=stamp),
                    dict(template['statuses'][1], code=f"PowerState/{state['power']}", displayStatus=f"VM {state['power']}")]
        if provisioning == 'Failed':
            statuses[0]['level'] = 'Error'
            statuses[0]['displayStatus'] = 'Provisioning failed'
        if state.get('generalized'):
            statuses.append({'code': 'OSState/generalized', 'level': 'Info', 'displayStatus': 'VM generalized'})
        view['statuses'] = statuses
        return view

    def _replication_status(self, entry: Entry) -> dict[str, t.Any]:
        """replicationStatus as in GalleryImageVersion_Get_WithReplicationStatus.json, from the version's state."""
        state = {'Succeeded': ('Completed', 100), 'Failed': ('Failed', 0)}.get(entry.provisioning, ('Replicating', 50))
        aggregated = {'Completed': 'Completed', 'Failed': 'Failed'}.get(state[0], 'InProgress')
        regions = entry.body['properties']['publishingProfile']['targetRegions']
        return {'aggregatedState': aggregated,
                'summary': [{'region': item['name'], 'state': state[0], 'details': '', 'progress': state[1]} for item in regions]}

    # --- disks and snapshots

    def _new_disk(self, group: str, name: str, location: str, size: int, os_type: str | None = None, generation: str | None = None,
                  managed_by: str | None = None, creation: dict[str, t.Any] | None = None, sku: str = 'Premium_LRS') -> Entry:
        template = self.diskrp['disk']
        disk_id = self._compute_id(group, 'disks', name)
        properties: dict[str, t.Any] = {}
        if os_type:
            properties['osType'] = os_type
            properties['hyperVGeneration'] = generation or 'V1'
        properties.update({'creationData': creation or {'createOption': 'Empty'}, 'diskSizeGB': size,
                           'encryption': copy.deepcopy(template['properties']['encryption']), 'timeCreated': now_iso(),
                           'provisioningState': 'Succeeded', 'diskState': 'Attached' if managed_by else 'Unattached'})
        body: dict[str, t.Any] = {}
        if managed_by:
            body['managedBy'] = managed_by
        body.update({'sku': {'name': sku}, 'properties': properties, 'type': template['type'], 'location': region(location), 'tags': {},
                     'id': disk_id, 'name': name})
        entry = Entry(disk_id, 'disk', body, {'unique_id': str(uuid.uuid4())})
        self._resources[entry.key] = entry
        return entry

    def _disk(self, method: str, path: str, query: dict[str, str], resource_id: str) -> Response:
        entry = self._find(resource_id)
        group, name = resource_id.split('/')[4], resource_id.split('/')[-1]
        if method == 'GET':
            return self._get(entry, group, f'disks/{name}', query)
        if method == 'DELETE':
            if entry is None:
                return Response(204)
            self._busy(entry)
            if entry.body.get('managedBy'):
                raise ArmError(409, 'OperationNotAllowed', f"Disk {name} is attached to VM {entry.body['managedBy']}.")
            return self._delete(path, entry, API_DISK)
        return self._unserved(method, path)

    def _delete(self, path: str, entry: Entry, api: str) -> Response:
        entry.provisioning = 'Deleting'

        def finish() -> None:
            self._resources.pop(entry.key, None)

        def fail(error: dict[str, t.Any]) -> None:
            entry.provisioning = 'Failed'

        return self._start('DELETE', path, entry.body.get('location', ''), api, entry, finish, fail, 202)

    def _snapshot(self, method: str, path: str, query: dict[str, str], body: t.Any, group: str, resource_id: str) -> Response:
        entry = self._find(resource_id)
        name = resource_id.split('/')[-1]
        if method == 'GET':
            return self._get(entry, group, f'snapshots/{name}', query)
        if method == 'DELETE':
            if entry is None:
                return Response(204)
            self._busy(entry)
            return self._delete(path, entry, API_DISK)
        if method != 'PUT':
            return self._unserved(method, path)
        location = self._require_location(body)
        properties = body.get('properties') or {}
        creation = properties.get('creationData') or {}
        if entry is not None:
            self._busy(entry)
            changed = changed_paths({'creationData': creation}, [{'creationData': entry.state['request']}])
            if changed:
                raise ArmError(409, 'PropertyChangeNotAllowed', f"Changing property '{changed[0].split('.')[-1]}' is not allowed.",
                               target=changed[0])
            if 'tags' in body:
                entry.body['tags'] = dict(body['tags'] or {})
            entry.provisioning = 'Updating'
            return self._start('PUT', path, location, API_DISK, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 200)
        option = creation.get('createOption')
        template = self.diskrp['snapshot']
        out: dict[str, t.Any] = {}
        if option == 'Copy':
            source = self._referenced(creation.get('sourceResourceId', ''), ('disk', 'snapshot'), 'sourceResourceId')
            source_properties = source.body['properties']
            for field in ('osType', 'hyperVGeneration'):
                if field in source_properties:
                    out[field] = source_properties[field]
            out['creationData'] = {'createOption': 'Copy', 'sourceResourceId': creation['sourceResourceId'],
                                   'sourceUniqueId': source.state.get('unique_id', str(uuid.uuid4()))}
            out['diskSizeGB'] = source_properties.get('diskSizeGB')
        elif option == 'Import' and creation.get('sourceUri'):
            for field in ('osType', 'hyperVGeneration'):
                if field in properties:
                    out[field] = properties[field]
            out['creationData'] = dict(creation)
            if properties.get('diskSizeGB'):
                out['diskSizeGB'] = properties['diskSizeGB']
        else:
            raise ArmError(400, 'InvalidParameter', f"The value '{option}' of createOption is not supported here: use Copy with "
                           'sourceResourceId, or Import with sourceUri.', target='creationData.createOption')
        if 'incremental' in properties:
            out['incremental'] = properties['incremental']
        out.update({'encryption': copy.deepcopy(template['properties']['encryption']), 'timeCreated': now_iso(), 'provisioningState': 'Updating'})
        snapshot: dict[str, t.Any] = {'properties': out, 'type': template['type'], 'location': location, 'tags': dict(body.get('tags') or {}),
                                      'id': resource_id, 'name': name}
        if body.get('sku'):
            snapshot['sku'] = dict(body['sku'])
        entry = Entry(resource_id, 'snapshot', snapshot, {'request': creation, 'unique_id': str(uuid.uuid4())})
        self._resources[entry.key] = entry
        return self._start('PUT', path, location, API_DISK, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 202)

    def _succeed(self, entry: Entry) -> None:
        entry.provisioning = 'Succeeded'

    def _failed(self, entry: Entry) -> None:
        entry.provisioning = 'Failed'

    # --- virtual machines

    def _os_profile(self, os_type: str, requested: dict[str, t.Any]) -> dict[str, t.Any]:
        """osProfile as GET answers it: no password, the OS's configuration block."""
        profile = {key: copy.deepcopy(value) for key, value in requested.items()
                   if key in ('computerName', 'adminUsername', 'linuxConfiguration', 'windowsConfiguration')}
        profile['secrets'] = copy.deepcopy(requested.get('secrets', []))
        if os_type == 'Linux':
            profile.pop('windowsConfiguration', None)
            profile.setdefault('linuxConfiguration', {}).setdefault('disablePasswordAuthentication', 'adminPassword' not in requested)
        else:
            profile.pop('linuxConfiguration', None)
            template = self.examples['vm_get']['responses']['200']['body']['properties']['osProfile']['windowsConfiguration']
            profile.setdefault('windowsConfiguration', copy.deepcopy(template))
        return profile

    def _vm(self, method: str, path: str, query: dict[str, str], body: t.Any, group: str, name: str, resource_id: str,
            action: list[str]) -> Response:
        entry = self._find(resource_id)
        if not action:
            if method == 'GET':
                return self._get(entry, group, f'virtualMachines/{name}', query)
            if method == 'PUT':
                return self._vm_put(path, group, name, resource_id, body, entry)
            if method == 'DELETE':
                if entry is None:
                    return Response(204)
                self._busy(entry)
                return self._vm_delete(path, entry)
            return self._unserved(method, path)
        if len(action) != 1:
            return self._unserved(method, path)
        verb = action[0]
        if verb == 'instanceview' and method == 'GET':
            if entry is None:
                raise self._not_found(group, f'virtualMachines/{name}')
            self._poll_resource(entry)
            return Response(200, self._instance_view(entry))
        if method != 'POST' or verb not in ('deallocate', 'poweroff', 'start', 'generalize'):
            return self._unserved(method, path)
        if entry is None:
            raise self._not_found(group, f'virtualMachines/{name}')
        self._busy(entry)
        state = entry.state
        if verb == 'generalize':
            if state['power'] == 'running':
                raise ArmError(409, 'OperationNotAllowed', f"Operation 'generalize' is not allowed on VM '{name}' since the VM is running. "
                               'Please power off or deallocate the VM and retry the operation.')
            state['generalized'] = True
            return Response(200)
        if verb == 'start' and state.get('generalized'):
            raise ArmError(409, 'OperationNotAllowed', f"Operation 'start' is not allowed on VM '{name}' since the VM is generalized.")
        transitions = {'deallocate': ('deallocating', 'deallocated'), 'poweroff': ('stopping', 'stopped'), 'start': ('starting', 'running')}
        during, after = transitions[verb]
        before = state['power']
        if verb == 'poweroff' and before == 'deallocated':  # already off and released: nothing to stop
            during = after = before
        state['power'] = during

        def finish() -> None:
            state['power'] = after

        def fail(error: dict[str, t.Any]) -> None:
            state['power'] = before
            entry.provisioning = 'Failed'

        return self._start('POST', path, entry.body['location'], API_COMPUTE, entry, finish, fail, 202)

    def _vm_delete(self, path: str, entry: Entry) -> Response:
        entry.provisioning = 'Deleting'
        storage = entry.body['properties'].get('storageProfile', {})

        def finish() -> None:
            self._resources.pop(entry.key, None)
            for disk in [storage.get('osDisk', {})] + storage.get('dataDisks', []):
                disk_entry = self._find((disk.get('managedDisk') or {}).get('id', ''))
                if disk_entry is None:
                    continue
                if disk.get('deleteOption') == 'Delete':
                    self._resources.pop(disk_entry.key, None)
                else:
                    disk_entry.body.pop('managedBy', None)
                    disk_entry.body['properties']['diskState'] = 'Unattached'

        def fail(error: dict[str, t.Any]) -> None:
            entry.provisioning = 'Failed'

        return self._start('DELETE', path, entry.body['location'], API_COMPUTE, entry, finish, fail, 202)

    def _vm_spec(self, vm: Entry) -> dict[str, t.Any]:
        """What a capture of VM holds: OS type, generation, the disks with their sizes and caching."""
        storage = vm.body['properties']['storageProfile']
        os_disk = storage['osDisk']
        return {'os_type': vm.state['os_type'], 'os_state': 'Generalized' if vm.state.get('generalized') else 'Specialized',
                'generation': vm.state['generation'], 'os_name': vm.state.get('os_name'), 'os_version': vm.state.get('os_version'),
                'os_disk': {'size': os_disk.get('diskSizeGB'), 'caching': os_disk.get('caching', 'ReadWrite'),
                            'id': (os_disk.get('managedDisk') or {}).get('id'),
                            'storage': (os_disk.get('managedDisk') or {}).get('storageAccountType', 'Premium_LRS')},
                'data_disks': [{'lun': disk['lun'], 'size': disk.get('diskSizeGB'), 'caching': disk.get('caching', 'None'),
                                'id': (disk.get('managedDisk') or {}).get('id'),
                                'storage': (disk.get('managedDisk') or {}).get('storageAccountType', 'Premium_LRS')}
                               for disk in storage.get('dataDisks', [])]}

    def _reference_spec(self, reference: dict[str, t.Any], location: str) -> tuple[dict[str, t.Any], str]:
        """Return (spec, source id for the disk's creationData) of an imageReference; 404 when it names nothing."""
        if reference.get('id'):
            ref_id = reference['id']
            entry = self._find(ref_id)
            if entry is not None and entry.kind == 'image' and entry.provisioning == 'Succeeded':
                return entry.state['spec'], entry.id
            if entry is not None and entry.kind == 'galleryImage':
                versions = [item for item in self._versions_of(entry) if item.provisioning == 'Succeeded'
                            and not item.body['properties']['publishingProfile'].get('excludeFromLatest')]
                if versions:
                    latest = max(versions, key=lambda item: version_key(item.body['name']))
                    return self._version_spec(latest), latest.id
                raise ArmError(404, 'NotFound', f"The gallery image '{ref_id}' has no version that can be used as the latest.",
                               target='imageReference')
            if entry is not None and entry.kind == 'version' and entry.provisioning == 'Succeeded':
                return self._version_spec(entry), entry.id
            raise ArmError(404, 'NotFound', f"The Image '{ref_id}' cannot be found.", target='imageReference')
        if reference.get('publisher'):
            sku = self._marketplace_sku(reference.get('publisher', ''), reference.get('offer', ''), reference.get('sku', ''))
            versions = sorted(sku['versions'], key=version_key) if sku else []
            wanted = reference.get('version') or 'latest'
            version = versions[-1] if versions and wanted == 'latest' else next((item for item in versions if item == wanted), None)
            if not sku or not version:
                raise ArmError(404, 'PlatformImageNotFound', f"The platform image '{reference.get('publisher')}:{reference.get('offer')}:"
                               f"{reference.get('sku')}:{wanted}' is not available.", target='imageReference')
            spec = {'os_type': sku['operatingSystem'], 'os_state': 'Generalized', 'generation': sku['hyperVGeneration'],
                    'os_name': sku['osName'], 'os_version': sku['osVersion'],
                    'os_disk': {'size': 30 if sku['operatingSystem'] == 'Linux' else 127, 'caching': 'ReadWrite', 'id': None},
                    'data_disks': []}
            return spec, self._marketplace_id(region(location), sku['publisher_name'], sku['offer_name'], sku['name'], version)
        raise ArmError(400, 'InvalidParameter', "Required parameter 'imageReference' is missing (null).", target='imageReference')

    def _vm_put(self, path: str, group: str, name: str, resource_id: str, body: t.Any, entry: Entry | None) -> Response:
        location = self._require_location(body)
        properties = body.get('properties') or {}
        storage = properties.get('storageProfile') or {}
        reference = storage.get('imageReference')
        if entry is not None:
            self._busy(entry)
            old = entry.body['properties']['storageProfile'].get('imageReference')
            if reference is not None and flatten(reference) != flatten(old):
                raise ArmError(409, 'PropertyChangeNotAllowed', "Changing property 'imageReference' is not allowed.", target='imageReference')
            if 'tags' in body:
                entry.body['tags'] = dict(body['tags'] or {})
            entry.provisioning = 'Updating'
            return self._start('PUT', path, location, API_COMPUTE, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 200,
                               location_header=False)
        network = properties.get('networkProfile') or {}
        if not network.get('networkInterfaces') and not network.get('networkInterfaceConfigurations'):
            raise ArmError(400, 'InvalidParameter', "Required parameter 'networkProfile' is missing (null).", target='networkProfile')
        spec, source_id = self._reference_spec(reference or {}, location)
        os_profile = properties.get('osProfile')
        if spec['os_state'] == 'Specialized' and os_profile:
            raise ArmError(400, 'InvalidParameter', "Parameter 'osProfile' is not allowed.", target='osProfile')
        if spec['os_state'] == 'Generalized':
            if not os_profile:
                raise ArmError(400, 'InvalidParameter', "Required parameter 'osProfile' is missing (null).", target='osProfile')
            if not os_profile.get('adminUsername'):
                raise ArmError(400, 'InvalidParameter', "Required parameter 'adminUsername' is missing (null).", target='adminUsername')
        requested_os = storage.get('osDisk') or {}
        managed = requested_os.get('managedDisk') or {}
        os_size = max(requested_os.get('diskSizeGB') or 0, spec['os_disk'].get('size') or 30)
        os_name = requested_os.get('name') or f'{name}_OsDisk_1_{uuid.uuid4().hex}'
        account = managed.get('storageAccountType', 'Premium_LRS')
        os_disk = self._new_disk(group, os_name, location, os_size, os_type=spec['os_type'], generation=spec['generation'],
                                 managed_by=resource_id, creation={'createOption': 'FromImage', 'imageReference': {'id': source_id}}, sku=account)
        out_os = {'name': os_name, 'diskSizeGB': os_size, 'managedDisk': {'storageAccountType': account, 'id': os_disk.id},
                  'caching': requested_os.get('caching', 'ReadWrite'), 'createOption': 'FromImage', 'osType': spec['os_type']}
        if requested_os.get('deleteOption'):
            out_os['deleteOption'] = requested_os['deleteOption']
        requested_data = {disk.get('lun'): disk for disk in storage.get('dataDisks') or []}
        data_disks = []
        for image_disk in spec['data_disks']:
            wanted = requested_data.pop(image_disk['lun'], {})
            data_disks.append(self._vm_data_disk(group, name, location, resource_id, image_disk['lun'],
                                                 max(wanted.get('diskSizeGB') or 0, image_disk.get('size') or 1), wanted, 'FromImage'))
        for lun, wanted in sorted(requested_data.items(), key=lambda item: item[0] or 0):
            option = wanted.get('createOption', 'Empty')
            if option == 'Attach':
                disk = self._referenced((wanted.get('managedDisk') or {}).get('id', ''), ('disk',), 'managedDisk')
                if disk.body.get('managedBy'):
                    raise ArmError(409, 'OperationNotAllowed', f"Disk {disk.body['name']} is attached to VM {disk.body['managedBy']}.")
                disk.body['managedBy'] = resource_id
                disk.body['properties']['diskState'] = 'Attached'
                data_disks.append({'lun': lun, 'name': disk.body['name'], 'createOption': 'Attach', 'caching': wanted.get('caching', 'None'),
                                   'managedDisk': {'storageAccountType': disk.body['sku']['name'], 'id': disk.id},
                                   'diskSizeGB': disk.body['properties']['diskSizeGB']})
            elif option == 'Empty' and wanted.get('diskSizeGB'):
                data_disks.append(self._vm_data_disk(group, name, location, resource_id, lun, wanted['diskSizeGB'], wanted, 'Empty'))
            else:
                raise ArmError(400, 'InvalidParameter', f'Data disk lun {lun}: the image has no disk at this lun; give createOption Empty '
                               'with diskSizeGB, or Attach with managedDisk.id.', target=f'dataDisks[{lun}]')
        template = self.examples['vm_create']['responses']['201']['body']
        out: dict[str, t.Any] = {
            'id': resource_id, 'type': template['type'],
            'properties': {
                'osProfile': self._os_profile(spec['os_type'], os_profile or {'computerName': name}),
                'networkProfile': copy.deepcopy(network),
                'storageProfile': {'imageReference': copy.deepcopy(reference), 'osDisk': out_os, 'dataDisks': data_disks},
                'vmId': str(uuid.uuid4()),
                'hardwareProfile': copy.deepcopy(properties.get('hardwareProfile') or template['properties']['hardwareProfile']),
                'provisioningState': 'Creating',
                'timeCreated': now_iso(),
            },
            'name': name, 'location': location,
        }
        if not os_profile:
            del out['properties']['osProfile']
        if body.get('tags'):
            out['tags'] = dict(body['tags'])
        if properties.get('userData'):
            out['properties']['userData'] = properties['userData']
        entry = Entry(resource_id, 'vm', out, {'power': 'starting', 'generalized': False, 'agent_ready': False, 'os_type': spec['os_type'],
                                               'generation': spec['generation'], 'os_name': spec.get('os_name'),
                                               'os_version': spec.get('os_version')})
        self._resources[entry.key] = entry
        agent_ready = self.vm_agent_ready

        def finish() -> None:
            entry.provisioning = 'Succeeded'
            entry.state.update(power='running', agent_ready=agent_ready)

        def fail(error: dict[str, t.Any]) -> None:
            entry.provisioning = 'Failed'
            entry.state.update(power='running', agent_ready=False)

        return self._start('PUT', path, location, API_COMPUTE, entry, finish, fail, 201, location_header=False)

    def _vm_data_disk(self, group: str, vm_name: str, location: str, vm_id: str, lun: int, size: int, wanted: dict[str, t.Any],
                      option: str) -> dict[str, t.Any]:
        managed = wanted.get('managedDisk') or {}
        account = managed.get('storageAccountType', 'Premium_LRS')
        disk_name = wanted.get('name') or f'{vm_name}_lun_{lun}_{uuid.uuid4().hex[:12]}'
        disk = self._new_disk(group, disk_name, location, size, managed_by=vm_id, creation={'createOption': option}, sku=account)
        out = {'lun': lun, 'name': disk_name, 'createOption': option, 'caching': wanted.get('caching', 'None'),
               'managedDisk': {'storageAccountType': account, 'id': disk.id}, 'diskSizeGB': size}
        if wanted.get('deleteOption'):
            out['deleteOption'] = wanted['deleteOption']
        return out

    # --- managed images

    def _image(self, method: str, path: str, query: dict[str, str], body: t.Any, group: str, resource_id: str) -> Response:
        entry = self._find(resource_id)
        name = resource_id.split('/')[-1]
        if method == 'GET':
            return self._get(entry, group, f'images/{name}', query)
        if method == 'DELETE':
            if entry is None:
                return Response(204)
            self._busy(entry)
            return self._delete(path, entry, API_COMPUTE)
        if method == 'PATCH':
            if entry is None:
                raise self._not_found(group, f'images/{name}')
            self._busy(entry)
            self._image_unchanged(entry, body or {})
            if 'tags' in (body or {}):
                entry.body['tags'] = dict(body['tags'] or {})
            return Response(200, self._view(entry, {}))
        if method == 'PUT':
            return self._image_put(path, group, name, resource_id, body, entry)
        return self._unserved(method, path)

    def _image_unchanged(self, entry: Entry, body: dict[str, t.Any]) -> None:
        """Images are immutable but for tags (ImageUpdate: 'Only tags may be updated')."""
        changed = changed_paths(body.get('properties') or {}, [entry.body['properties'], entry.state['request']])
        if changed:
            raise ArmError(409, 'PropertyChangeNotAllowed', f"Changing property '{changed[0]}' is not allowed.", target=changed[0])

    def _image_put(self, path: str, group: str, name: str, resource_id: str, body: t.Any, entry: Entry | None) -> Response:
        location = self._require_location(body)
        properties = body.get('properties') or {}
        if entry is not None:
            self._busy(entry)
            self._image_unchanged(entry, body)
            if 'tags' in body:
                entry.body['tags'] = dict(body['tags'] or {})
            entry.provisioning = 'Updating'
            return self._start('PUT', path, location, API_COMPUTE, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 200,
                               location_header=False)
        storage = properties.get('storageProfile') or {}
        vm_id = (properties.get('sourceVirtualMachine') or {}).get('id')
        generation = properties.get('hyperVGeneration')
        if vm_id:
            vm = self._referenced(vm_id, ('vm',), 'sourceVirtualMachine')
            if not vm.state.get('generalized'):
                raise ArmError(409, 'OperationNotAllowed', f"The VM '{vm.body['name']}' is not generalized: an image can be created only from "
                               'a generalized VM. Generalize it (POST .../generalize) and retry.', target='sourceVirtualMachine')
            spec = self._vm_spec(vm)
            if generation and generation != spec['generation']:
                raise ArmError(400, 'InvalidParameter', f"The hyperVGeneration '{generation}' does not match the hyperVGeneration "
                               f"'{spec['generation']}' of the source virtual machine.", target='hyperVGeneration')
            os_disk = spec['os_disk']
            out_storage: dict[str, t.Any] = {
                'osDisk': {'osType': spec['os_type'], 'osState': 'Generalized', 'managedDisk': {'id': os_disk['id']}, 'caching': os_disk['caching'],
                           'diskSizeGB': os_disk['size'], 'storageAccountType': os_disk['storage']},
                'dataDisks': [{'lun': disk['lun'], 'managedDisk': {'id': disk['id']}, 'caching': disk['caching'], 'diskSizeGB': disk['size'],
                               'storageAccountType': disk['storage']} for disk in spec['data_disks']],
                'zoneResilient': bool(storage.get('zoneResilient', False)),
            }
        else:
            spec, out_storage = self._image_disks(storage, generation)
        out_properties: dict[str, t.Any] = {}
        if vm_id:
            out_properties['sourceVirtualMachine'] = {'id': vm_id}
        out_properties.update({'storageProfile': out_storage, 'provisioningState': 'Creating', 'hyperVGeneration': spec['generation']})
        out: dict[str, t.Any] = {'properties': out_properties, 'type': self.examples['image_create']['responses']['201']['body']['type'],
                                 'location': location, 'id': resource_id, 'name': name}
        if body.get('tags'):
            out['tags'] = dict(body['tags'])
        entry = Entry(resource_id, 'image', out, {'request': copy.deepcopy(properties), 'spec': spec})
        self._resources[entry.key] = entry
        return self._start('PUT', path, location, API_COMPUTE, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 201,
                           location_header=False)

    def _disk_source(self, disk: dict[str, t.Any], what: str) -> dict[str, t.Any]:
        """Size and source of one image disk given as managedDisk, snapshot or blobUri."""
        given = [key for key in ('managedDisk', 'snapshot', 'blobUri') if disk.get(key)]
        if len(given) != 1:
            raise ArmError(400, 'InvalidParameter', f'{what}: give exactly one of managedDisk, snapshot, blobUri.', target=what)
        if given[0] == 'blobUri':
            if not str(disk['blobUri']).startswith(('https://', 'http://')):
                raise ArmError(400, 'InvalidParameter', f"{what}.blobUri '{disk['blobUri']}' is not a URI.", target=f'{what}.blobUri')
            return {'size': disk.get('diskSizeGB'), 'generation': None, 'id': None}
        source = self._referenced(disk[given[0]].get('id', ''), ('disk',) if given[0] == 'managedDisk' else ('snapshot',), f'{what}.{given[0]}')
        return {'size': disk.get('diskSizeGB') or source.body['properties'].get('diskSizeGB'),
                'generation': source.body['properties'].get('hyperVGeneration'), 'id': source.id}

    def _image_disks(self, storage: dict[str, t.Any], generation: str | None) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
        os_disk = storage.get('osDisk')
        if not os_disk:
            raise ArmError(400, 'InvalidParameter', 'Either sourceVirtualMachine or storageProfile.osDisk must be given.', target='storageProfile')
        for field in ('osType', 'osState'):
            if not os_disk.get(field):
                raise ArmError(400, 'InvalidParameter', f"Required parameter 'osDisk.{field}' is missing (null).", target=f'osDisk.{field}')
        os_source = self._disk_source(os_disk, 'osDisk')
        out_os = dict(os_disk, caching=os_disk.get('caching', 'ReadWrite'))
        if os_source['size']:
            out_os['diskSizeGB'] = os_source['size']
        data_out, data_spec = [], []
        for index, disk in enumerate(storage.get('dataDisks') or []):
            source = self._disk_source(disk, f'dataDisks[{index}]')
            item = dict(disk)
            if source['size']:
                item['diskSizeGB'] = source['size']
            data_out.append(item)
            data_spec.append({'lun': disk.get('lun'), 'size': source['size'], 'caching': disk.get('caching', 'None'), 'id': source['id'],
                              'storage': disk.get('storageAccountType', 'Standard_LRS')})
        spec = {'os_type': os_disk['osType'], 'os_state': os_disk['osState'], 'generation': generation or os_source['generation'] or 'V1',
                'os_name': None, 'os_version': None,
                'os_disk': {'size': os_source['size'], 'caching': out_os['caching'], 'id': os_source['id'],
                            'storage': os_disk.get('storageAccountType', 'Standard_LRS')},
                'data_disks': data_spec}
        return spec, {'osDisk': out_os, 'dataDisks': data_out, 'zoneResilient': bool(storage.get('zoneResilient', False))}

    # --- galleries

    def _gallery_tree(self, method: str, path: str, query: dict[str, str], body: t.Any, group: str, rest: list[str]) -> Response:
        low = [part.lower() for part in rest]
        gallery_id = self._compute_id(group, 'galleries', rest[0])
        gallery = self._find(gallery_id)
        if len(rest) == 1:
            return self._gallery(method, path, query, body, group, rest[0], gallery_id, gallery)
        if low[1] != 'images' or len(rest) > 5 or (len(rest) >= 4 and low[3] != 'versions'):
            return self._unserved(method, path)
        if gallery is None:
            if method == 'DELETE' and len(rest) in (3, 5):
                return Response(204)
            raise ArmError(404, 'ParentResourceNotFound', 'Can not perform requested operation on nested resource. '
                           f"Parent resource '{rest[0]}' not found.")
        if len(rest) == 2:
            if method != 'GET':
                return self._unserved(method, path)
            return self._list(path, query, API_GALLERY, self._children(gallery, 'galleryImage'))
        image_id = f'{gallery.id}/images/{rest[2]}'
        image = self._find(image_id)
        if len(rest) == 3:
            return self._gallery_image(method, path, query, body, group, gallery, rest[2], image_id, image)
        if image is None:
            if method == 'DELETE' and len(rest) == 5:
                return Response(204)
            raise ArmError(404, 'ParentResourceNotFound', 'Can not perform requested operation on nested resource. '
                           f"Parent resource '{rest[0]}/{rest[2]}' not found.")
        if len(rest) == 4:
            if method != 'GET':
                return self._unserved(method, path)
            return self._list(path, query, API_GALLERY, sorted(self._versions_of(image), key=lambda item: version_key(item.body['name'])))
        version_id = f'{image.id}/versions/{rest[4]}'
        return self._version(method, path, query, body, group, image, rest[4], version_id, self._find(version_id))

    def _children(self, parent: Entry, kind: str) -> list[Entry]:
        prefix = parent.key + '/'
        return [entry for entry in self._resources.values()
                if entry.kind == kind and entry.key.startswith(prefix) and entry.key.count('/') == prefix.count('/') + 1]

    def _versions_of(self, image: Entry) -> list[Entry]:
        return self._children(image, 'version')

    def _nested_delete(self, path: str, entry: Entry | None, children: list[Entry]) -> Response:
        if entry is None:
            return Response(204)
        self._busy(entry)
        if children:
            raise ArmError(409, 'CannotDeleteResource', 'Can not delete resource before nested resources are deleted.')
        return self._delete(path, entry, API_GALLERY)

    def _gallery(self, method: str, path: str, query: dict[str, str], body: t.Any, group: str, name: str, resource_id: str,
                 entry: Entry | None) -> Response:
        if method == 'GET':
            return self._get(entry, group, f'galleries/{name}', query)
        if method == 'DELETE':
            return self._nested_delete(path, entry, self._children(entry, 'galleryImage') if entry else [])
        if method != 'PUT':
            return self._unserved(method, path)
        location = self._require_location(body)
        properties = body.get('properties') or {}
        if entry is not None:
            self._busy(entry)
            if 'description' in properties:
                entry.body['properties']['description'] = properties['description']
            if 'tags' in body:
                entry.body['tags'] = dict(body['tags'] or {})
            entry.provisioning = 'Updating'
            return self._start('PUT', path, location, API_GALLERY, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 200,
                               location_header=False)
        out_properties: dict[str, t.Any] = {}
        if properties.get('description'):
            out_properties['description'] = properties['description']
        out_properties.update({'identifier': {'uniqueName': f'{self.subscription_id}-{name.upper()}'}, 'provisioningState': 'Creating'})
        out: dict[str, t.Any] = {'id': resource_id, 'type': 'Microsoft.Compute/galleries', 'properties': out_properties,
                                 'location': location, 'name': name}
        if body.get('tags'):
            out['tags'] = dict(body['tags'])
        entry = Entry(resource_id, 'gallery', out)
        self._resources[entry.key] = entry
        return self._start('PUT', path, location, API_GALLERY, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 201,
                           location_header=False)

    def _gallery_image(self, method: str, path: str, query: dict[str, str], body: t.Any, group: str, gallery: Entry, name: str,
                       resource_id: str, entry: Entry | None) -> Response:
        if method == 'GET':
            return self._get(entry, group, f"galleries/{gallery.body['name']}/images/{name}", query)
        if method == 'DELETE':
            return self._nested_delete(path, entry, self._versions_of(entry) if entry else [])
        if method != 'PUT':
            return self._unserved(method, path)
        location = self._require_location(body)
        properties = dict(body.get('properties') or {})
        properties.pop('provisioningState', None)
        properties.setdefault('hyperVGeneration', 'V1')
        if entry is not None:
            self._busy(entry)
            old = entry.body['properties']
            for field in ('osType', 'osState', 'hyperVGeneration', 'identifier.publisher', 'identifier.offer', 'identifier.sku'):
                head, _sep, tail = field.partition('.')
                new_value = (properties.get(head) or {}).get(tail) if tail else properties.get(head)
                old_value = (old.get(head) or {}).get(tail) if tail else old.get(head)
                if new_value is not None and new_value != old_value:
                    raise ArmError(409, 'PropertyChangeNotAllowed', f"Changing property 'galleryImage.properties.{field}' is not allowed.",
                                   target=f'galleryImage.properties.{field}')
            entry.body['properties'] = {**old, **properties, 'provisioningState': 'Updating'}
            if 'tags' in body:
                entry.body['tags'] = dict(body['tags'] or {})
            return self._start('PUT', path, location, API_GALLERY, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 200,
                               location_header=False)
        for field in ('osType', 'osState', 'identifier'):
            if not properties.get(field):
                raise ArmError(400, 'InvalidParameter', f"Required parameter 'galleryImage.properties.{field}' is missing (null).",
                               target=f'galleryImage.properties.{field}')
        out: dict[str, t.Any] = {'id': resource_id, 'type': 'Microsoft.Compute/galleries/images',
                                 'properties': {**properties, 'provisioningState': 'Creating'}, 'location': location, 'name': name}
        if body.get('tags'):
            out['tags'] = dict(body['tags'])
        entry = Entry(resource_id, 'galleryImage', out)
        self._resources[entry.key] = entry
        return self._start('PUT', path, location, API_GALLERY, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 201,
                           location_header=False)

    def _version_spec(self, version: Entry) -> dict[str, t.Any]:
        image = self._resources[version.key.rsplit('/versions/', 1)[0]]
        spec = dict(version.state['spec'])
        spec.update(os_type=image.body['properties']['osType'], os_state=image.body['properties']['osState'],
                    generation=image.body['properties'].get('hyperVGeneration', 'V1'))
        return spec

    def _version_source(self, image: Entry, storage: dict[str, t.Any]) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
        """Return (spec, storageProfile as answered) for a version of the definition IMAGE made from STORAGE."""
        definition = image.body['properties']
        source = storage.get('source') or {}
        os_image = storage.get('osDiskImage') or {}
        data_images = storage.get('dataDiskImages') or []
        if source.get('virtualMachineId') or source.get('id'):
            if source.get('virtualMachineId'):
                vm = self._referenced(source['virtualMachineId'], ('vm',), 'storageProfile.source.virtualMachineId')
                spec = self._vm_spec(vm)
                what = f"virtual machine '{vm.body['name']}'"
                if definition['osState'] == 'Generalized' and spec['os_state'] != 'Generalized':
                    raise ArmError(409, 'OperationNotAllowed', f"The {what} is not generalized, but the gallery image definition "
                                   f"'{image.body['name']}' is Generalized: generalize the VM first.", target='storageProfile.source')
            else:
                managed = self._referenced(source['id'], ('image',), 'storageProfile.source.id')
                spec = managed.state['spec']
                what = f"image '{managed.body['name']}'"
            if spec['os_state'] != definition['osState']:
                raise ArmError(400, 'InvalidParameter', f"The OS state of the source {what} ({spec['os_state']}) does not match the OS state "
                               f"of the gallery image definition ({definition['osState']}).", target='storageProfile.source')
            if spec['generation'] != definition.get('hyperVGeneration', 'V1'):
                raise ArmError(400, 'InvalidParameter', f"The source {what} is of hyperVGeneration {spec['generation']}, but the gallery "
                               f"image definition '{image.body['name']}' is {definition.get('hyperVGeneration', 'V1')}.",
                               target='storageProfile.source')
            if spec['os_type'] != definition['osType']:
                raise ArmError(400, 'InvalidParameter', f"The source {what} has OS type {spec['os_type']}, but the gallery image definition "
                               f"'{image.body['name']}' has {definition['osType']}.", target='storageProfile.source')
            requested = {disk.get('lun'): disk for disk in data_images}
            os_out: dict[str, t.Any] = {'sizeInGB': spec['os_disk']['size'],
                                        'hostCaching': os_image.get('hostCaching') or spec['os_disk'].get('caching') or 'ReadOnly'}
            data_out = [{'lun': disk['lun'], 'sizeInGB': disk['size'],
                         'hostCaching': (requested.get(disk['lun']) or {}).get('hostCaching') or disk.get('caching') or 'None'}
                        for disk in spec['data_disks']]
            return spec, {'source': dict(source), 'osDiskImage': os_out, 'dataDiskImages': data_out}
        if not (os_image.get('source') or {}):
            raise ArmError(400, 'InvalidParameter', 'The gallery image version has no source: give storageProfile.source (virtualMachineId '
                           'or id) or storageProfile.osDiskImage.source.', target='storageProfile')

        def disk_image(item: dict[str, t.Any], what: str) -> tuple[dict[str, t.Any], int | None]:
            given = item.get('source') or {}
            out = {'source': dict(given), 'hostCaching': item.get('hostCaching') or ('ReadOnly' if what == 'osDiskImage' else 'None')}
            if given.get('id'):
                found = self._referenced(given['id'], ('disk', 'snapshot'), f'storageProfile.{what}.source.id')
                size = found.body['properties'].get('diskSizeGB')
                out['sizeInGB'] = size
                return out, size
            if given.get('uri') and given.get('storageAccountId'):
                return out, None
            raise ArmError(400, 'InvalidParameter', f'storageProfile.{what}.source needs id, or uri and storageAccountId.',
                           target=f'storageProfile.{what}.source')

        os_out, os_size = disk_image(os_image, 'osDiskImage')
        data_out, data_spec = [], []
        for index, item in enumerate(data_images):
            out, size = disk_image(item, f'dataDiskImages[{index}]')
            out = {'source': out['source'], 'lun': item.get('lun'), **{key: value for key, value in out.items() if key != 'source'}}
            data_out.append(out)
            data_spec.append({'lun': item.get('lun'), 'size': size, 'caching': out['hostCaching'], 'id': None})
        spec = {'os_type': definition['osType'], 'os_state': definition['osState'], 'generation': definition.get('hyperVGeneration', 'V1'),
                'os_name': None, 'os_version': None, 'os_disk': {'size': os_size, 'caching': os_out['hostCaching'], 'id': None},
                'data_disks': data_spec}
        result: dict[str, t.Any] = {'osDiskImage': os_out}
        if data_images:
            result['dataDiskImages'] = data_out
        return spec, result

    def _version(self, method: str, path: str, query: dict[str, str], body: t.Any, group: str, image: Entry, name: str,
                 resource_id: str, entry: Entry | None) -> Response:
        gallery_name = image.key.split('/')[-3]
        if method == 'GET':
            return self._get(entry, group, f"galleries/{gallery_name}/images/{image.body['name']}/versions/{name}", query)
        if method == 'DELETE':
            return self._nested_delete(path, entry, [])
        if method != 'PUT':
            return self._unserved(method, path)
        match = VERSION_NAME.match(name)
        if not match or any(int(part) > 2 ** 31 - 1 for part in match.groups()):
            raise ArmError(400, 'InvalidParameter', f"The gallery image version name '{name}' is invalid. It must be made of three numbers "
                           'within the 32-bit integer range: MajorVersion.MinorVersion.Patch.', target='galleryImageVersionName')
        location = self._require_location(body)
        properties = body.get('properties') or {}
        publishing = properties.get('publishingProfile') or {}
        if entry is not None:
            self._busy(entry)
            changed = changed_paths(body, [entry.state['request']],
                                    ('tags', 'properties.publishingProfile.targetRegions', 'properties.publishingProfile.replicaCount',
                                     'properties.publishingProfile.excludeFromLatest', 'properties.publishingProfile.endOfLifeDate'))
            if changed:
                raise ArmError(409, 'PropertyChangeNotAllowed', f"Changing property 'galleryImageVersion.{changed[0]}' is not allowed.",
                               target=f'galleryImageVersion.{changed[0]}')
            entry.body['properties']['publishingProfile'] = self._publishing_profile(location, publishing,
                                                                                     entry.body['properties']['publishingProfile']['publishedDate'])
            if 'tags' in body:
                entry.body['tags'] = dict(body['tags'] or {})
            entry.state['request'] = copy.deepcopy(body)
            entry.provisioning = 'Updating'
            return self._start('PUT', path, location, API_GALLERY, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 200,
                               location_header=False)
        if image.provisioning != 'Succeeded':
            raise ArmError(409, 'Conflict', f"The gallery image '{image.id}' is {image.provisioning}, not Succeeded.")
        if not properties.get('storageProfile'):
            raise ArmError(400, 'InvalidParameter', "Required parameter 'galleryImageVersion.properties.storageProfile' is missing (null).",
                           target='galleryImageVersion.properties.storageProfile')
        spec, storage = self._version_source(image, properties['storageProfile'])
        out_publishing = self._publishing_profile(location, publishing, now_iso())
        safety = properties.get('safetyProfile') or {}
        out: dict[str, t.Any] = {
            'id': resource_id, 'type': 'Microsoft.Compute/galleries/images/versions',
            'properties': {'publishingProfile': out_publishing, 'storageProfile': storage,
                           'safetyProfile': {'allowDeletionOfReplicatedLocations': safety.get('allowDeletionOfReplicatedLocations', True),
                                             'reportedForPolicyViolation': False},
                           'provisioningState': 'Creating'},
            'location': location, 'name': name,
        }
        if body.get('tags'):
            out['tags'] = dict(body['tags'])
        entry = Entry(resource_id, 'version', out, {'request': copy.deepcopy(body), 'spec': spec})
        self._resources[entry.key] = entry
        return self._start('PUT', path, location, API_GALLERY, entry, lambda: self._succeed(entry), lambda error: self._failed(entry), 201,
                           location_header=False)

    @staticmethod
    def _publishing_profile(location: str, publishing: dict[str, t.Any], published: str) -> dict[str, t.Any]:
        replicas = publishing.get('replicaCount', 1)
        account = publishing.get('storageAccountType', 'Standard_LRS')
        regions = []
        for target in publishing.get('targetRegions') or [{'name': location}]:
            item = {'name': target.get('name'), 'regionalReplicaCount': target.get('regionalReplicaCount', replicas),
                    'storageAccountType': target.get('storageAccountType', account)}
            if target.get('encryption'):
                item['encryption'] = copy.deepcopy(target['encryption'])
            item['excludeFromLatest'] = target.get('excludeFromLatest', False)
            regions.append(item)
        if region(location) not in {region(item['name'] or '') for item in regions}:
            raise ArmError(400, 'InvalidParameter', f"The target regions must include the region of the gallery image version ('{location}').",
                           target='publishingProfile.targetRegions')
        out: dict[str, t.Any] = {'targetRegions': regions, 'replicaCount': replicas, 'excludeFromLatest': publishing.get('excludeFromLatest', False)}
        if publishing.get('endOfLifeDate'):
            out['endOfLifeDate'] = publishing['endOfLifeDate']
        out.update({'publishedDate': published, 'storageAccountType': account})
        return out

    # --- Marketplace

    def _marketplace_sku(self, publisher: str, offer: str, sku: str) -> dict[str, t.Any] | None:
        for item in self.marketplace['publishers']:
            if item['name'].lower() != publisher.lower():
                continue
            for offer_item in item['offers']:
                if offer_item['name'].lower() != offer.lower():
                    continue
                for sku_item in offer_item['skus']:
                    if sku_item['name'].lower() == sku.lower():
                        return dict(sku_item, publisher_name=item['name'], offer_name=offer_item['name'])
        return None

    def _marketplace_default(self, os_type: str, generation: str) -> dict[str, t.Any]:
        for item in self.marketplace['publishers']:
            for offer in item['offers']:
                for sku in offer['skus']:
                    if sku['operatingSystem'] == os_type and sku['hyperVGeneration'] == generation and sku['architecture'] == 'x64':
                        version = max(sku['versions'], key=version_key)
                        return dict(sku, publisher=item['name'], offer=offer['name'], sku=sku['name'],
                                    version_id=self._marketplace_id('westus', item['name'], offer['name'], sku['name'], version))
        raise ValueError(f'the Marketplace catalogue has no {os_type} {generation} image')

    def _marketplace_id(self, location: str, publisher: str, offer: str | None = None, sku: str | None = None,
                        version: str | None = None) -> str:
        path = f'/Subscriptions/{self.subscription_id}/Providers/Microsoft.Compute/Locations/{location}/Publishers/{publisher}'
        if offer is not None:
            path += f'/ArtifactTypes/VMImage/Offers/{offer}'
        if sku is not None:
            path += f'/Skus/{sku}'
        if version is not None:
            path += f'/Versions/{version}'
        return path

    def _marketplace(self, path: str, location: str, rest: list[str], low: list[str], query: dict[str, str]) -> Response:
        """VirtualMachineImages_ListPublishers, _ListOffers, _ListSkus, _List and _Get (virtualMachineImage.json)."""
        not_found = ArmError(404, 'NotFound', 'Artifact: VMImage was not found.')

        def item(name: str, resource_id: str) -> dict[str, str]:
            return {'name': name, 'location': location, 'id': resource_id}

        publishers = self.marketplace['publishers']
        if not rest:
            return Response(200, [item(entry['name'], self._marketplace_id(location, entry['name'])) for entry in publishers])
        if len(rest) < 4 or low[1:4] != ['artifacttypes', 'vmimage', 'offers']:
            return self._unserved('GET', path)
        publisher = next((entry for entry in publishers if entry['name'].lower() == low[0]), None)
        if publisher is None:
            raise not_found
        if len(rest) == 4:
            return Response(200, [item(offer['name'], self._marketplace_id(location, publisher['name'], offer['name']))
                                  for offer in publisher['offers']])
        offer = next((entry for entry in publisher['offers'] if entry['name'].lower() == low[4]), None)
        if offer is None or len(rest) < 6 or low[5] != 'skus':
            raise not_found
        if len(rest) == 6:
            return Response(200, [item(sku['name'], self._marketplace_id(location, publisher['name'], offer['name'], sku['name']))
                                  for sku in offer['skus']])
        sku = next((entry for entry in offer['skus'] if entry['name'].lower() == low[6]), None)
        if sku is None or len(rest) < 8 or low[7] != 'versions' or len(rest) > 9:
            raise not_found
        versions = sorted(sku['versions'], key=version_key)
        if len(rest) == 8:
            if query.get('$orderby', '').lower() == 'name desc':
                versions.reverse()
            top = query.get('$top')
            if top:
                if not top.isdigit():
                    raise ArmError(400, 'InvalidParameter', f"The value '{top}' of $top is not an integer.", target='$top')
                versions = versions[:int(top)]
            return Response(200, [item(version, self._marketplace_id(location, publisher['name'], offer['name'], sku['name'], version))
                                  for version in versions])
        version = next((entry for entry in versions if entry == rest[8]), None)
        if version is None:
            raise not_found
        properties = copy.deepcopy(self.marketplace['image_properties'])
        properties['osDiskImage']['operatingSystem'] = sku['operatingSystem']
        properties['hyperVGeneration'] = sku['hyperVGeneration']
        properties['architecture'] = sku['architecture']
        return Response(200, {'properties': properties, **item(version, self._marketplace_id(location, publisher['name'], offer['name'],
                                                                                             sku['name'], version))})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Serve the Azure Resource Manager test server until killed.')
    parser.add_argument('--examples', default=os.environ.get('IMAGEPREP_AZURE_REST_EXAMPLES'),
                        help='the Azure REST API examples directory (default: $IMAGEPREP_AZURE_REST_EXAMPLES)')
    parser.add_argument('--workdir', required=True, help='where the certificates are written')
    parser.add_argument('--lro-polls', type=int, default=1, help='status polls answered InProgress before an operation ends')
    parser.add_argument('--retry-after', type=int, default=0, help='the Retry-After header value, in seconds')
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with ArmServer(args.examples, args.workdir) as arm:
        arm.lro_polls, arm.retry_after = args.lro_polls, args.retry_after
        print(json.dumps({'url': arm.url, 'ca_file': arm.ca_file, 'subscription_id': arm.subscription_id, 'tenant_id': arm.tenant_id,
                          'client_id': arm.client_id, 'secret': arm.secret}), flush=True)
        stop.wait()
    return 0


if __name__ == '__main__':
    sys.exit(main())
