#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: azure_vhd_upload
short_description: Upload a disk image to Azure Blob Storage as the fixed VHD page blob Azure makes disks and images from
version_added: 0.2.0
description:
  - Uploads a local disk image (qcow2, raw, VHDX, VMDK or VHD, detected with C(qemu-img info)) to Azure
    Blob Storage as a B(page blob), in the form Azure requires to create a managed disk or image from it,
    a B(fixed VHD) whose virtual size is a whole number of MiB, followed by its 512-byte footer.
  - A source that is not such a VHD is converted with C(qemu-img convert -O vpc -o subformat=fixed,force_size=on)
    into a sparse work file in O(tmpdir), its virtual size rounded up to the next whole MiB; the result
    is checked (footer cookie, disk type, checksum, size) before anything is sent. The footer's timestamp and
    unique ID, which qemu-img takes from the clock and from chance, are made from the disk's data instead, so the
    same disk always gives the same VHD (and an interrupted upload can be resumed). The source is never modified.
    With O(convert=false) such a source is refused, with what is wrong and how to fix it.
  - Only the 512-byte pages that hold data are sent, since a page blob reads unwritten pages as zeros. The work
    file's data extents are found with C(SEEK_DATA)/C(SEEK_HOLE), pages that are all zeros are skipped, and
    the rest is sent in requests of at most 4 MiB, O(parallel) at a time, each with its MD5 checked by the
    service. The last page (the VHD footer) is always sent.
  - Resumable. The blob's metadata names the fixed VHD it holds (C(imageprep_sha256), C(imageprep_size)) and its
    state (C(imageprep_state), V(uploading) until the upload is complete and verified, then V(complete)). A run
    that finds an unfinished blob of the same VHD sends only the chunks the blob's page ranges do not hold yet.
    A blob of another VHD (or one this module did not write) is replaced only with O(force=true).
  - With O(verify=true) the blob is read back after the upload (its page ranges, in parallel) and its SHA-256
    compared with the file's. Ranges that differ are sent again once and the blob checked again; if it still
    differs the task fails, naming the ranges, and the blob keeps the state V(uploading). This check runs on every
    run, also when the blob is complete already, so a blob changed since is found and repaired.
  - The blob's C(Content-MD5) is set to the MD5 of the whole VHD, as Azure's own tools do for VHDs.
  - The credential is one of O(connection_string), O(storage_account_key) or O(sas_token); without
    any of them the module signs in to Microsoft Entra ID with the options of the Azure credentials
    (O(auth_source) and the others below), and the identity needs a data role on the container such as
    C(Storage Blob Data Contributor).
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - imageprep.vm.azure
  - ansible.builtin.action_common_attributes
requirements:
  - C(qemu-img) on the host running the module (Debian/Ubuntu package C(qemu-utils), RHEL/Fedora C(qemu-img)).
  - azure-storage-blob >= 12.20.0
attributes:
  check_mode:
    support: full
    details:
      - Reports whether the blob would be created, resumed, replaced or repaired, and the bytes and chunks that
        would be sent. To count them exactly a source that needs converting is converted into a work file,
        which is removed before the module returns; the blob is only read (with O(verify=true), read back).
  diff_mode:
    support: full
    details: Shows the blob's URL, size, SHA-256 and state before and after.
  platform:
    platforms: posix
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
    details:
      - A complete blob of the same VHD reports no change; with O(verify=true) it is read back first, and a
        blob changed since is repaired (a change).
options:
  src:
    description:
      - The disk image to upload (qcow2, raw, fixed or dynamic VHD, VHDX, VMDK); a qcow2 on a backing chain is
        uploaded flattened. Required with O(state=present).
      - A disk that a running VM holds (QEMU's write lock) is refused.
    type: path
  storage_account:
    description:
      - Name of the storage account. Required unless O(connection_string) or O(blob_endpoint) names it.
    type: str
  container:
    description: Name of the blob container. It must exist.
    type: str
    required: true
  blob:
    description:
      - Name of the blob. Defaults to the file name of O(src) with its extension replaced by C(.vhd).
      - Required with O(state=absent) when O(src) is not given.
    type: str
  blob_endpoint:
    description:
      - URL of the Blob service, for an endpoint that is not C(https://STORAGE_ACCOUNT.blob.STORAGE_SUFFIX)
        (the storage suffix of O(cloud_environment)), such as the storage emulator Azurite,
        V(http://127.0.0.1:10000/devstoreaccount1).
    type: str
  storage_account_key:
    description: An access key of the storage account (Shared Key authorisation). Needs O(storage_account).
    type: str
  sas_token:
    description:
      - A shared access signature for the container or the blob, with the permissions read, create, write and
        (for O(state=absent)) delete. A leading V(?) is ignored.
    type: str
  connection_string:
    description: A connection string of the storage account (C(DefaultEndpointsProtocol=...;AccountName=...;AccountKey=...)).
    type: str
  tmpdir:
    description:
      - Directory for the work file a conversion writes (sparse, as large as the fixed VHD's data).
      - Defaults to the temporary directory of the host (C(TMPDIR), else C(/tmp)).
      - The work file is removed when the module ends, also when it fails. A run that was killed leaves it behind;
        the next run removes such leftovers (RV(cleaned)).
    type: path
  convert:
    description:
      - Whether a source that is not a fixed VHD of a whole number of MiB may be converted into one.
        With V(false) such a source is refused.
    type: bool
    default: true
  force:
    description:
      - Replace a blob that holds another VHD (or that this module did not write).
    type: bool
    default: false
  parallel:
    description: How many requests run at a time, 1 to 64.
    type: int
    default: 8
  verify:
    description: Read the blob back after the upload and compare its SHA-256 with the VHD's.
    type: bool
    default: true
  state:
    description:
      - V(present) uploads; V(absent) deletes the blob (with its snapshots).
    type: str
    choices: [present, absent]
    default: present
notes:
  - Two runs uploading to the same blob at the same time are not serialised; give each upload its own blob.
  - Zero runs shorter than 64 KiB between data are sent with the data rather than split into another request.
seealso:
  - name: Prepare a VHD for Azure (Linux)
    description: Azure's requirements for uploaded VHDs (fixed format, whole number of MiB).
    link: https://learn.microsoft.com/azure/virtual-machines/linux/create-upload-generic
  - module: imageprep.vm.local_image
"""

EXAMPLES = r"""
- name: Upload a captured qcow2 disk as a fixed VHD (signed in with the Azure CLI's login)
  imageprep.vm.azure_vhd_upload:
    src: /var/lib/imageprep/images/debian12-web/1.0.3-7/debian12-web-1.0.3-os.qcow2
    storage_account: imagesweu
    container: vhds
    blob: debian12-web-1.0.3-os.vhd
    auth_source: cli
    subscription_id: 00000000-0000-0000-0000-000000000000
  register: uploaded

- name: Upload with an account key, 16 requests at a time
  imageprep.vm.azure_vhd_upload:
    src: /srv/images/appliance.vmdk
    storage_account: imagesweu
    storage_account_key: "{{ vault_images_storage_key }}"
    container: vhds
    parallel: 16

- name: Upload an Azure-ready VHD only as it is (fail instead of converting anything)
  imageprep.vm.azure_vhd_upload:
    src: /srv/images/ready.vhd
    container: vhds
    connection_string: "{{ vault_images_connection_string }}"
    convert: false

- name: Upload to the storage emulator Azurite
  imageprep.vm.azure_vhd_upload:
    src: /tmp/disk.qcow2
    storage_account: devstoreaccount1
    storage_account_key: "{{ azurite_key }}"
    blob_endpoint: http://127.0.0.1:10000/devstoreaccount1
    container: vhds

- name: Remove the blob
  imageprep.vm.azure_vhd_upload:
    storage_account: imagesweu
    sas_token: "{{ vault_vhds_sas }}"
    container: vhds
    blob: appliance.vhd
    state: absent
"""

RETURN = r"""
url:
  description: URL of the blob, without a SAS token.
  returned: always
  type: str
  sample: https://imagesweu.blob.core.windows.net/vhds/debian12-web-1.0.3-os.vhd
size:
  description: Size of the fixed VHD (and of the page blob) in bytes, RV(virtual_size) plus the 512-byte footer.
  returned: state=present
  type: int
  sample: 10737418752
virtual_size:
  description: Virtual size of the disk in the VHD, a whole number of MiB (the source's, rounded up).
  returned: state=present
  type: int
  sample: 10737418240
sha256:
  description: SHA-256 of the fixed VHD, as kept in the blob's metadata C(imageprep_sha256).
  returned: state=present
  type: str
md5:
  description: MD5 of the fixed VHD, base64, as set as the blob's C(Content-MD5).
  returned: state=present
  type: str
  sample: 1B2M2Y8AsgTpgAmY7PhCfg==
bytes_total:
  description: Size of the fixed VHD in bytes.
  returned: state=present
  type: int
bytes_sent:
  description:
    - Bytes sent by this run (data uploads, also of repaired ranges). In check mode, the bytes that would be sent.
  returned: state=present
  type: int
bytes_skipped_zero:
  description: Bytes of the VHD never sent because they are zeros (holes and zero pages).
  returned: state=present
  type: int
bytes_already_uploaded:
  description: Bytes of data the blob held already from an earlier run (a resumed or complete upload).
  returned: state=present
  type: int
chunks_sent:
  description: Requests that wrote pages (or cleared them, when repairing). In check mode, the ones that would be sent.
  returned: state=present
  type: int
resumed:
  description: Whether an unfinished upload of the same VHD was continued.
  returned: state=present
  type: bool
converted:
  description: Whether the source was converted into a fixed VHD (V(false) when it was one already).
  returned: state=present
  type: bool
source_format:
  description: Format of O(src) as C(qemu-img) reads it (V(vpc) is a VHD).
  returned: state=present
  type: str
  sample: qcow2
cleaned:
  description:
    - Work directories of earlier runs that were killed before they could remove them, removed from O(tmpdir) by this run.
  returned: state=present
  type: list
  elements: str
verify:
  description: The read-back check (O(verify=true)); V(null) without it and in check mode when nothing was read back.
  returned: state=present
  type: dict
  contains:
    sha256: {description: SHA-256 of the blob's content as read back., type: str}
    match: {description: Whether the blob equals the VHD., type: bool}
    repaired:
      description: Ranges that differed and were sent again (or cleared); in check mode, the ones that differ.
      type: list
      elements: dict
      contains:
        offset: {description: First byte., type: int}
        length: {description: Length in bytes., type: int}
msg:
  description: What was done or would be done, and why.
  returned: always
  type: str
"""

import base64
import os
import re
import shutil
import tempfile
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.imageprep.vm.plugins.module_utils import _page_blob as page_blob
from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img
from ansible_collections.imageprep.vm.plugins.module_utils import _vhd as vhd
from ansible_collections.imageprep.vm.plugins.module_utils._azure import AZURE_AUTH_SPEC, ArmSession, AzureError, known_cloud

META_SHA256 = 'imageprep_sha256'
META_SIZE = 'imageprep_size'
META_STATE = 'imageprep_state'
UPLOADING = 'uploading'
COMPLETE = 'complete'
MAX_PARALLEL = 64
# a work directory is named after the process that made it, so a later run can tell a killed run's leftovers
WORK_PREFIX = 'azure-vhd-upload-'
WORK_DIR = re.compile(re.escape(WORK_PREFIX) + r'(\d+)-')


class VhdUploadError(Exception):
    """The upload cannot be carried out; the message says why. DETAILS go into the failure result."""

    def __init__(self, message, **details):
        super().__init__(message)
        self.details = details


def default_blob_name(src):
    """Return the blob name for SRC: its file name with the extension replaced by .vhd."""
    stem, _ext = os.path.splitext(os.path.basename(src))
    return (stem or os.path.basename(src)) + '.vhd'


def credential_source(params):
    """Return which credential the options give: connection_string, storage_account_key, sas_token or azure_ad."""
    for key in ('connection_string', 'storage_account_key', 'sas_token'):
        if params.get(key):
            return key
    return 'azure_ad'


def account_url(params, storage_suffix):
    """Return the Blob service URL: O(blob_endpoint), else https://ACCOUNT.blob.SUFFIX."""
    if params.get('blob_endpoint'):
        return params['blob_endpoint'].rstrip('/')
    if not params.get('storage_account'):
        raise VhdUploadError('give storage_account (or blob_endpoint, or connection_string)')
    if not storage_suffix:
        raise VhdUploadError(f"the storage suffix of cloud_environment {params.get('cloud_environment')!r} is not known; "
                             'give blob_endpoint')
    return f"https://{params['storage_account']}.blob.{storage_suffix}"


def blob_record(url, props):
    """The diff view of a blob: {url, size, sha256, state} ({} when there is no blob)."""
    if props is None:
        return {}
    metadata = props['metadata']
    return {'url': url, 'size': props['size'], 'sha256': metadata.get(META_SHA256), 'state': metadata.get(META_STATE)}


def decide(props, size, sha256, force):
    """Return (action, reason) for a VHD of SIZE and SHA256 and the blob's PROPS (None: no blob).

    Actions: 'create', 'resume' (unfinished upload of the same VHD), 'complete' (done already) and
    'replace' (another VHD, with FORCE). Raise VhdUploadError for another VHD without FORCE.
    """
    if props is None:
        return 'create', 'new blob'
    metadata = props['metadata']
    mine = props['blob_type'] == 'PageBlob' and metadata.get(META_SHA256) and metadata.get(META_STATE) in (UPLOADING, COMPLETE)
    if mine and props['size'] == size and metadata.get(META_SIZE) == str(size) and metadata[META_SHA256] == sha256:
        if metadata[META_STATE] == COMPLETE:
            return 'complete', 'the blob holds this VHD already'
        return 'resume', 'an unfinished upload of this VHD is continued'
    if mine:
        what = f"another VHD ({props['size']} bytes, sha256 {metadata[META_SHA256]}, {metadata[META_STATE]})"
    elif props['blob_type'] != 'PageBlob':
        what = f"a {props['blob_type']} of {props['size']} bytes, not a page blob"
    else:
        what = f"a page blob of {props['size']} bytes that this module did not upload (no {META_SHA256} metadata)"
    if not force:
        raise VhdUploadError(f'the blob holds {what}, not this VHD ({size} bytes, sha256 {sha256}); '
                             'nothing was changed: set force: true to replace it, or choose another blob name')
    return 'replace', f'replaced {what} (force=true)'


def stale_work_dirs(names, alive):
    """Return the NAMES that are work directories of runs whose process is gone (killed before their clean-up)."""
    stale = []
    for name in names:
        match = WORK_DIR.match(name)
        if match and not alive(int(match.group(1))):
            stale.append(name)
    return sorted(stale)


def process_alive(pid):
    """Return True when process PID exists (or cannot be told apart from one that does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def format_ranges(ranges, most=10):
    """Return RANGES as text for a message, the first MOST of them."""
    text = ', '.join(f'{start}-{end - 1}' for start, end in ranges[:most])
    return text + (f' and {len(ranges) - most} more' if len(ranges) > most else '')


def range_dicts(ranges):
    return [{'offset': start, 'length': end - start} for start, end in ranges]


class VhdUploadManager:
    """Carries out one azure_vhd_upload task."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.result = {'changed': False, 'msg': ''}
        if self.params['state'] == 'present':
            self.result['cleaned'] = []

    def run(self):
        """Do the task and return the result dict."""
        if self.params['state'] == 'absent':
            return self.absent()
        return self.present()

    # -- the blob ------------------------------------------------------------------------------
    def open_blob(self):
        """Return the PageBlob the options name, signed in with the credential they give."""
        params = self.params
        name = params['blob'] or default_blob_name(params['src'])
        source = credential_source(params)
        connections = params['parallel'] + 2
        verify = params.get('cert_validation_mode') != 'ignore'
        if source == 'connection_string':
            client = page_blob.blob_client(params['container'], name, connection_string=params['connection_string'],
                                           connections=connections, verify=verify)
            return page_blob.PageBlob(client, params['parallel'])
        credential = None
        if source == 'azure_ad':
            session = ArmSession(params, need_subscription=False)
            credential = session.credential
            page_blob.sign_in(credential)
            suffix = session.cloud.storage_suffix
            verify = session.verify
        else:
            cloud = known_cloud(params.get('cloud_environment') or 'AzureCloud')
            suffix = cloud.storage_suffix if cloud else None
            if source == 'storage_account_key':
                credential = {'account_name': params['storage_account'], 'account_key': params['storage_account_key']}
        client = page_blob.blob_client(params['container'], name, account_url=account_url(params, suffix), credential=credential,
                                       sas_token=params['sas_token'], connections=connections, verify=verify)
        return page_blob.PageBlob(client, params['parallel'])

    # -- state=absent ----------------------------------------------------------------------------
    def absent(self):
        """Delete the blob."""
        blob = self.open_blob()
        props = blob.properties()
        self.result.update(url=blob.url, diff={'before': blob_record(blob.url, props), 'after': {}})
        if props is None:
            self.result['msg'] = 'no such blob, nothing to delete'
            return self.result
        self.result['changed'] = True
        if self.module.check_mode:
            self.result['msg'] = f'would delete {blob.url}'
            return self.result
        blob.delete()
        self.result['msg'] = f'deleted {blob.url}'
        return self.result

    # -- state=present ---------------------------------------------------------------------------
    def inspect_source(self):
        """Return (source format, virtual size, action 'upload'|'convert') of O(src); raise when it cannot be used."""
        src = self.params['src']
        if not self.module.get_bin_path('qemu-img'):
            raise VhdUploadError('qemu-img is not installed on this host (Debian/Ubuntu: qemu-utils, RHEL/Fedora: qemu-img)')
        if not os.path.isfile(src):
            raise VhdUploadError(f'{src} does not exist' if not os.path.exists(src) else f'{src} is not a regular file')
        if not os.access(src, os.R_OK):
            raise VhdUploadError(f'{src} is not readable by this user')
        if qemu_img.writer_holds_lock(src):
            raise VhdUploadError(f'{src} is in use by a running VM (QEMU holds its write lock); shut the VM down first')
        info = qemu_img.image_info(self.module.run_command, src, allow_backing=True)
        source_format = info['detected-format']
        problem = None
        if source_format == 'vpc':
            file_size, footer = vhd.read_footer(src)
            problem = vhd.fixed_vhd_problem(footer, file_size)
        action = vhd.source_action(src, source_format, problem, self.params['convert'])
        return source_format, info['virtual-size'], action

    def convert(self, workdir, source_format, virtual_size):
        """Convert O(src) into a fixed VHD in WORKDIR, check it and return its path."""
        src = self.params['src']
        qemu_img.check_image(self.module.run_command, src, source_format)
        stat = os.statvfs(workdir)
        free = stat.f_bavail * stat.f_frsize
        needed = qemu_img.allocated_bytes(src)
        if needed > free:
            raise VhdUploadError(f'{workdir} has {free} bytes free, the source holds {needed} bytes of data; '
                                 'give tmpdir on a larger file system')
        path = os.path.join(workdir, 'disk.vhd')
        try:
            qemu_img.convert(self.module.run_command, src, source_format, path, 'vpc', virtual_size=virtual_size)
        except qemu_img.DiskImageError as exc:
            if 'no space left' in str(exc).lower():
                raise VhdUploadError(f'no space left in {workdir} while converting {src}; give tmpdir on a larger file system') from exc
            raise
        vhd.check_converted(path, virtual_size)
        return path

    def present(self):
        """Upload O(src), converting it first when needed; the work file goes on every exit path."""
        params = self.params
        if not params['src']:
            raise VhdUploadError('state=present needs src')
        tmpdir = params['tmpdir'] or tempfile.gettempdir()
        if not os.path.isdir(tmpdir):
            raise VhdUploadError(f'tmpdir {tmpdir} is not a directory')
        source_format, source_virtual_size, source_action = self.inspect_source()
        blob = self.open_blob()
        props = blob.properties()  # before converting: wrong credentials or a missing container fail fast
        if not self.module.check_mode:
            for name in stale_work_dirs(os.listdir(tmpdir), process_alive):
                shutil.rmtree(os.path.join(tmpdir, name), ignore_errors=True)
                self.result['cleaned'].append(os.path.join(tmpdir, name))
        workdir = None
        try:
            if source_action == 'convert':
                workdir = tempfile.mkdtemp(prefix=f'{WORK_PREFIX}{os.getpid()}-', dir=tmpdir)
                path = self.convert(workdir, source_format, source_virtual_size)
            else:
                path = params['src']
            return self.upload(blob, props, path, source_format, source_action == 'convert')
        finally:
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)

    def upload(self, blob, props, path, source_format, converted):
        """Send the fixed VHD at PATH to BLOB (whose properties are PROPS), verify it and mark it complete."""
        params = self.params
        check_mode = self.module.check_mode
        if converted:
            footer = vhd.last_bytes(path)[1]
            scan = page_blob.scan_file(path, last_page=lambda data_sha256: vhd.stable_footer(footer, data_sha256))
        else:
            scan = page_blob.scan_file(path)
        chunks = page_blob.plan_chunks(scan.runs)
        planned_bytes = sum(chunk.length for chunk in chunks)
        action, reason = decide(props, scan.size, scan.sha256, params['force'])
        if action in ('resume', 'complete'):
            todo = page_blob.uncovered(chunks, blob.page_ranges()) if action == 'resume' else []
        else:
            todo = chunks
        already = planned_bytes - sum(chunk.length for chunk in todo)
        md5 = base64.b64encode(scan.md5).decode('ascii')
        self.result.update(
            url=blob.url, size=scan.size, virtual_size=scan.size - vhd.FOOTER_SIZE, sha256=scan.sha256, md5=md5,
            bytes_total=scan.size, bytes_sent=0, bytes_skipped_zero=scan.size - planned_bytes, bytes_already_uploaded=already,
            chunks_sent=0, resumed=action == 'resume', converted=converted, source_format=source_format, verify=None)
        after = {'url': blob.url, 'size': scan.size, 'sha256': scan.sha256, 'state': COMPLETE}
        self.result['diff'] = {'before': blob_record(blob.url, props), 'after': after}
        metadata = dict(props['metadata'] if props and action in ('resume', 'complete') else {})
        metadata.update({META_SHA256: scan.sha256, META_SIZE: str(scan.size), META_STATE: UPLOADING})
        conversion = f'converted from {source_format}' if converted else 'a fixed VHD already'

        if check_mode:
            return self.predict(blob, props, path, scan, action, reason, todo, conversion)

        if action in ('create', 'replace'):
            blob.create(scan.size, metadata)
        sent = blob.upload(path, todo)
        self.result.update(bytes_sent=sent, chunks_sent=len(todo))
        repaired = []
        if params['verify']:
            repaired = self.verify(blob, path, scan, mark_uploading=metadata if action == 'complete' else None)
        changed = action != 'complete' or bool(repaired)
        if changed or props['content_md5'] != scan.md5:
            # Content-MD5 first: a blob marked complete has it
            blob.set_content_md5(scan.md5, props['content_type'] if props and action != 'replace' else None)
            blob.set_metadata(dict(metadata, **{META_STATE: COMPLETE}))
            changed = True
        self.result['changed'] = changed
        if not changed:
            self.result['msg'] = f'{blob.url}: {reason}' + ('; read back and verified' if params['verify'] else '')
        elif repaired:
            self.result['msg'] = (f'{blob.url}: {len(repaired)} range(s) differed from the VHD ({format_ranges(repaired)}) '
                                  'and were sent again; verified')
        else:
            self.result['msg'] = (f'{blob.url}: {reason}; sent {self.result["bytes_sent"]} of {scan.size} bytes in '
                                  f'{self.result["chunks_sent"]} chunk(s), {self.result["bytes_skipped_zero"]} zero bytes '
                                  f'skipped ({conversion})' + ('; verified' if params['verify'] else ''))
        return self.result

    def verify(self, blob, path, scan, mark_uploading):
        """Read the blob back; send differing ranges again once; raise when it still differs. Return the ranges repaired.

        MARK_UPLOADING (metadata) is set on the blob before it is repaired, when it was marked complete.
        """
        remote, differing = blob.read_back(path, scan.size, scan.runs)
        repaired = []
        if differing:
            if mark_uploading is not None:
                blob.set_metadata(mark_uploading)  # nothing may take it for good while it is repaired
            sent, fixed = blob.repair(path, differing)
            self.result['bytes_sent'] += sent
            self.result['chunks_sent'] += len(fixed)
            repaired = differing
            remote, differing = blob.read_back(path, scan.size, scan.runs)
        self.result['verify'] = {'sha256': remote, 'match': not differing and remote == scan.sha256, 'repaired': range_dicts(repaired)}
        if differing or remote != scan.sha256:
            raise VhdUploadError(
                f'{blob.url} still differs from the VHD after the differing ranges were sent again: bytes '
                f'{format_ranges(differing)} (blob sha256 {remote}, VHD {scan.sha256}); the blob keeps the state '
                f'{UPLOADING}, so nothing takes it for a good image', differing_ranges=range_dicts(differing),
                verify=self.result['verify'])
        return repaired

    def predict(self, blob, props, path, scan, action, reason, todo, conversion):
        """Check mode: say what would be sent (reading the blob back when it is complete and O(verify=true))."""
        would_send = sum(chunk.length for chunk in todo)
        self.result.update(bytes_sent=would_send, chunks_sent=len(todo))
        differing = []
        if action == 'complete' and self.params['verify']:
            remote, differing = blob.read_back(path, scan.size, scan.runs)
            self.result['verify'] = {'sha256': remote, 'match': not differing and remote == scan.sha256,
                                     'repaired': range_dicts(differing)}
            chunks = page_blob.split(differing)
            self.result.update(bytes_sent=sum(chunk.length for chunk in chunks), chunks_sent=len(chunks))
        stale = action == 'complete' and props['content_md5'] != scan.md5
        self.result['changed'] = action != 'complete' or bool(differing) or stale
        if action == 'complete' and not self.result['changed']:
            self.result['msg'] = f'{blob.url}: {reason}' + ('; read back and verified' if self.params['verify'] else '')
        elif differing:
            self.result['msg'] = f'{blob.url}: would send again {len(differing)} range(s) that differ ({format_ranges(differing)})'
        else:
            verb = {'create': 'would create', 'replace': 'would replace', 'resume': 'would resume',
                    'complete': 'would set the Content-MD5 of'}[action]
            self.result['msg'] = (f'{verb} {blob.url} ({reason}): would send {self.result["bytes_sent"]} of {scan.size} bytes '
                                  f'in {self.result["chunks_sent"]} chunk(s), {self.result["bytes_skipped_zero"]} zero bytes '
                                  f'skipped ({conversion})')
        return self.result


def main():
    """Module entry point."""
    argument_spec = {
        'src': {'type': 'path'},
        'storage_account': {'type': 'str'},
        'container': {'type': 'str', 'required': True},
        'blob': {'type': 'str'},
        'blob_endpoint': {'type': 'str'},
        'storage_account_key': {'type': 'str', 'no_log': True},
        'sas_token': {'type': 'str', 'no_log': True},
        'connection_string': {'type': 'str', 'no_log': True},
        'tmpdir': {'type': 'path'},
        'convert': {'type': 'bool', 'default': True},
        'force': {'type': 'bool', 'default': False},
        'parallel': {'type': 'int', 'default': 8},
        'verify': {'type': 'bool', 'default': True},
        'state': {'type': 'str', 'choices': ['present', 'absent'], 'default': 'present'},
    }
    argument_spec.update(AZURE_AUTH_SPEC)
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[('storage_account_key', 'sas_token', 'connection_string'),
                            ('connection_string', 'storage_account'), ('connection_string', 'blob_endpoint')],
        required_one_of=[('storage_account', 'blob_endpoint', 'connection_string')],
        required_if=[('state', 'present', ('src',)),
                     ('state', 'absent', ('src', 'blob'), True)],
        required_by={'storage_account_key': 'storage_account'},
        supports_check_mode=True,
    )
    if page_blob.STORAGE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('azure-storage-blob'), exception=page_blob.STORAGE_IMPORT_ERROR)
    if not 1 <= module.params['parallel'] <= MAX_PARALLEL:
        module.fail_json(msg=f"parallel must be 1 to {MAX_PARALLEL}, not {module.params['parallel']}")
    try:
        result = VhdUploadManager(module).run()
    except VhdUploadError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    except AzureError as exc:
        module.fail_json(msg=exc.message, **exc.to_result())
    except page_blob.PageBlobError as exc:
        module.fail_json(msg=str(exc), azure_error={'status': exc.status, 'code': exc.code})
    except (vhd.VhdError, qemu_img.DiskImageError) as exc:
        module.fail_json(msg=str(exc))
    except OSError as exc:
        module.fail_json(msg=f'{type(exc).__name__}: {exc}', exception=traceback.format_exc())
    if not module._diff:  # pylint: disable=protected-access
        result.pop('diff', None)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
