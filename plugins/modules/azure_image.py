#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: azure_image
short_description: Capture an Azure VM, or register uploaded disks, as a managed image or an Azure Compute Gallery image version
version_added: 0.2.0
description:
  - Makes an image in Azure from O(virtual_machine) (capture) or from disks (O(os_disk) and
    O(data_disks) as VHD blobs, managed disks or snapshots), as a B(managed image) (O(name)) or as a
    B(gallery image version) (O(gallery), O(gallery_image), O(version)). A VM image keeps every data disk
    with its LUN; the module checks that the image Azure made has them all.
  - Capturing a generalized image deallocates the VM, marks it generalized in Azure and captures it. Azure's
    generalized flag is only a flag; this module sets it only with proof that the guest was generalized
    (O(generalized_by), the report of the M(imageprep.vm.linux_residue) based C(linux_deprovision) role or of
    the C(windows_sysprep) role), or with O(force=true). A VM Azure already marks generalized needs no proof.
  - A specialized capture (O(os_state=specialized), for instance the backup before Sysprep) is not generalized;
    a running VM is captured only with O(allow_running=true) (crash-consistent) and is otherwise deallocated
    when O(deallocate=true).
  - Everything is checked before anything changes (the VM, its power and OS state, its Hyper-V generation
    against the gallery image definition, the gallery, and the immutable properties of an existing image).
  - An existing image made from the same source is left alone (a second run reports no change, without
    deallocating or generalizing the VM again); a change to a property Azure cannot change on it fails with
    the properties named. Target regions, replica counts, storage type, O(exclude_from_latest),
    O(end_of_life_date) and tags of a gallery image version, and tags of a managed image, are updated in place.
  - An image whose creation failed is deleted before the module fails, so no half-made image is left; one
    still being created (an earlier run that timed out or was interrupted) is waited for, not created again.
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - imageprep.vm.azure
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the VM, the gallery and the existing image, runs every check, and says what it would do; sends no change.
  diff_mode:
    support: full
    details: Before and after of the image's normalised description.
  platform:
    platforms: posix
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
options:
  resource_group:
    description: Resource group of the managed image or of the gallery.
    type: str
    required: true
  name:
    description: Name of the managed image to make. Mutually exclusive with O(gallery).
    type: str
  gallery:
    description: Azure Compute Gallery to make an image version in (it must exist).
    type: str
  gallery_image:
    description: Image definition in O(gallery). It is created when missing only if O(definition) is given.
    type: str
  version:
    description:
      - Version of the gallery image version, C(MAJOR.MINOR.PATCH).
      - V(auto) reuses the version already made from the same source, or else takes the next patch version
        after the highest one (V(1.0.0) for the first).
    type: str
    default: auto
  definition:
    description:
      - The gallery image definition to create when O(gallery_image) does not exist. Its OS state is O(os_state),
        its OS type and Hyper-V generation those of the source.
    type: dict
    suboptions:
      publisher: {description: Publisher of the image identifier., type: str, required: true}
      offer: {description: Offer of the image identifier., type: str, required: true}
      sku: {description: SKU of the image identifier., type: str, required: true}
      description: {description: Description of the definition., type: str}
      architecture: {description: CPU architecture., type: str, choices: [x64, Arm64], default: x64}
  virtual_machine:
    description: Name (in O(vm_resource_group)) or resource ID of the VM to capture. Mutually exclusive with O(os_disk).
    type: str
  vm_resource_group:
    description: Resource group of O(virtual_machine) when it is a name. Default O(resource_group).
    type: str
  os_disk:
    description: The OS disk to register, when the image is not captured from a VM. Give one of its sources.
    type: dict
    suboptions:
      blob_uri: {description: URI of a fixed VHD page blob (see M(imageprep.vm.azure_vhd_upload))., type: str}
      storage_account: {description: Resource ID of the storage account holding O(os_disk.blob_uri) (gallery versions need it)., type: str}
      managed_disk: {description: Resource ID of a managed disk., type: str}
      snapshot: {description: Resource ID of a snapshot., type: str}
  data_disks:
    description: Data disks registered with O(os_disk), each with its LUN and one source.
    type: list
    elements: dict
    default: []
    suboptions:
      lun: {description: Logical unit number of the disk., type: int, required: true}
      blob_uri: {description: URI of a fixed VHD page blob., type: str}
      storage_account: {description: Resource ID of the storage account holding the blob., type: str}
      managed_disk: {description: Resource ID of a managed disk., type: str}
      snapshot: {description: Resource ID of a snapshot., type: str}
  os_type:
    description: OS type, needed with O(os_disk) (a VM's own is read from it).
    type: str
    choices: [linux, windows]
  os_state:
    description: Whether the image is generalized (the parent of many VMs) or specialized (a copy of one machine).
    type: str
    choices: [generalized, specialized]
    default: generalized
  hyper_v_generation:
    description:
      - Hyper-V generation of the image. With a VM it is read from the VM and this, when given, must match.
        With disks the default is V(V2).
    type: str
    choices: [V1, V2]
  generalized_by:
    description:
      - Proof that the guest was generalized, the report fact of the role that did it
        (C(linux_deprovision_report) or C(windows_sysprep_report)). It must come from a real run (not check mode)
        that ended clean. Its host, time and format are recorded in the image's tags.
    type: dict
  force:
    description: Generalize the VM in Azure without O(generalized_by). The guest's identity goes into every VM made from the image.
    type: bool
    default: false
  deallocate:
    description: Deallocate a running VM before capturing it. With V(false) a running VM is refused.
    type: bool
    default: true
  allow_running:
    description: Capture a specialized image of a running VM (crash-consistent) instead of deallocating it.
    type: bool
    default: false
  location:
    description: Region of the image. Default the region of the VM, or of the gallery.
    type: str
  target_regions:
    description: Regions a gallery image version is replicated to. Default the gallery's region with O(replica_count) replicas.
    type: list
    elements: dict
    suboptions:
      name: {description: Region name., type: str, required: true}
      regional_replica_count: {description: Replicas in the region., type: int}
      storage_account_type: {description: Storage of the replicas., type: str, choices: [Standard_LRS, Standard_ZRS, Premium_LRS]}
      exclude_from_latest: {description: Leave this region's replica out of C(latest)., type: bool}
  replica_count:
    description: Default replicas per target region.
    type: int
    default: 1
  storage_account_type:
    description: Default storage of the replicas, or of the managed image.
    type: str
    choices: [Standard_LRS, Standard_ZRS, Premium_LRS]
    default: Standard_LRS
  exclude_from_latest:
    description: Leave the gallery image version out of C(latest).
    type: bool
    default: false
  end_of_life_date:
    description: End-of-life date of the gallery image version (ISO 8601, for example V(2027-12-31T00:00:00Z)).
    type: str
  zone_resilient:
    description: Make the managed image zone-resilient.
    type: bool
    default: false
  tags:
    description: Tags of the image (the module adds C(imageprep_generalized_by) with the proof).
    type: dict
    default: {}
  keep_versions:
    description: After making a gallery image version, delete the oldest versions so that this many are left (never the new one).
    type: int
  state:
    description: V(absent) deletes the managed image, or the gallery image version O(version) (which must be given).
    type: str
    choices: [present, absent]
    default: present
  timeout:
    description: Seconds to wait for each long-running operation (deallocate, create, delete).
    type: int
    default: 3600
seealso:
  - module: imageprep.vm.azure_image_info
  - module: imageprep.vm.azure_vhd_upload
  - module: imageprep.vm.local_image
"""

EXAMPLES = r"""
- name: Capture a deprovisioned VM into a gallery image version, with its data disks
  imageprep.vm.azure_image:
    resource_group: images-rg
    gallery: corp_gallery
    gallery_image: debian12-web
    version: auto
    virtual_machine: web-builder
    generalized_by: "{{ hostvars['web-builder'].linux_deprovision_report }}"
    definition:
      publisher: corp
      offer: debian12
      sku: web
    target_regions:
      - name: westeurope
        regional_replica_count: 2
      - name: northeurope
        storage_account_type: Standard_ZRS
    keep_versions: 5
  register: __version

- name: Capture a managed image
  imageprep.vm.azure_image:
    resource_group: images-rg
    name: debian12-web-20261206
    virtual_machine: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/build-rg/providers/Microsoft.Compute/virtualMachines/web-builder
    generalized_by: "{{ linux_deprovision_report }}"

- name: Register uploaded VHDs as a managed image
  imageprep.vm.azure_image:
    resource_group: images-rg
    name: appliance-1.4
    location: westeurope
    os_type: linux
    hyper_v_generation: V2
    force: true
    os_disk:
      blob_uri: "{{ __os_vhd.url }}"
    data_disks:
      - lun: 0
        blob_uri: "{{ __data_vhd.url }}"

- name: Keep a specialized copy of a VM before Sysprep runs in it
  imageprep.vm.azure_image:
    resource_group: images-rg
    gallery: corp_gallery
    gallery_image: win2022-backup
    os_state: specialized
    allow_running: true
    virtual_machine: win-builder
    definition:
      publisher: corp
      offer: backups
      sku: win-builder

- name: Remove a version
  imageprep.vm.azure_image:
    resource_group: images-rg
    gallery: corp_gallery
    gallery_image: debian12-web
    version: 1.0.3
    state: absent
"""

RETURN = r"""
image:
  description: The image as Azure has it after the run, normalised; empty after O(state=absent).
  returned: always
  type: dict
  contains:
    id: {description: Resource ID., type: str}
    kind: {description: V(managed_image) or V(gallery_image_version)., type: str}
    name: {description: Managed image name or version., type: str}
    location: {description: Region., type: str}
    os_type: {description: V(linux) or V(windows)., type: str}
    os_state: {description: V(generalized) or V(specialized)., type: str}
    hyper_v_generation: {description: V(V1) or V(V2)., type: str}
    source: {description: "Resource ID of the source VM, or the OS disk's source.", type: str}
    os_disk_source: {description: "Source of the OS disk (blob URI, disk or snapshot ID) when registered from disks.", type: str}
    data_disk_luns: {description: LUNs of the data disks the image holds., type: list, elements: int}
    target_regions: {description: "Gallery version only, each with name, regional_replica_count and storage_account_type.", type: list, elements: dict}
    exclude_from_latest: {description: Gallery version only., type: bool}
    end_of_life_date: {description: Gallery version only., type: str}
    tags: {description: Tags., type: dict}
    provisioning_state: {description: Azure's provisioning state., type: str}
  sample:
    id: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/images-rg/providers/Microsoft.Compute/galleries/corp/images/web/versions/1.0.4
    kind: gallery_image_version
    name: 1.0.4
    location: westeurope
    os_type: linux
    os_state: generalized
    hyper_v_generation: V2
    data_disk_luns: [0, 1]
version:
  description: The gallery image version made or found (O(version=auto) resolved).
  returned: with O(gallery)
  type: str
  sample: 1.0.4
subscription_id:
  description: The subscription the module worked in (from the options, the environment, the credential file or the Azure CLI).
  returned: always
  type: str
actions:
  description: What the run did (or, in check mode, would do), in order.
  returned: always
  type: list
  elements: str
  sample: [deallocate, generalize, create_definition, create_version]
deleted_versions:
  description: Versions deleted by O(keep_versions).
  returned: with O(gallery)
  type: list
  elements: str
vm:
  description: The captured VM's power and OS state before the run, and its Hyper-V generation.
  returned: when O(virtual_machine) is given
  type: dict
  sample: {id: /subscriptions/.../virtualMachines/web-builder, power_state: running, generalized: false, hyper_v_generation: V2, data_disk_luns: [0, 1]}
azure_error:
  description: On failure from Azure, the HTTP status, error code, request ID, details and the operation URL.
  returned: failure
  type: dict
"""

import re
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.imageprep.vm.plugins.module_utils import _azure as azure

SEMVER = re.compile(r'^\d+\.\d+\.\d+$')
PROOF_FORMATS = ('imageprep.vm.linux_deprovision/', 'imageprep.vm.windows_sysprep/')
WINDOWS_GENERALIZED = ('generalized', 'sysprep_shutdown', 'already_generalized')
# a gallery image version's properties Azure lets an update change
VERSION_MUTABLE = ('target_regions', 'exclude_from_latest', 'end_of_life_date', 'tags')


class AzureImageError(Exception):
    """The module's own refusals: bad combinations and checks that failed before anything changed."""


# ---------------------------------------------------------------------------------------------------
# decisions

def proof_problems(report: dict | None) -> list[str]:
    """Return why REPORT does not prove the guest was generalized ([] when it does)."""
    if not report:
        return ['no generalized_by report was given']
    problems = []
    fmt = str(report.get('format', ''))
    if not fmt.startswith(PROOF_FORMATS):
        problems.append(f'generalized_by has format {fmt!r}, not a report of the linux_deprovision or windows_sysprep role')
        return problems
    if report.get('check_mode') in (True, 'true', 'True'):
        problems.append('the report is from a check-mode run, which generalized nothing')
    if fmt.startswith('imageprep.vm.linux_deprovision/'):
        audit = report.get('audit') or {}
        if audit.get('clean') not in (True, 'true', 'True'):
            problems.append(f"the report's audit is not clean ({len(audit.get('findings') or [])} findings)")
        if report.get('final_pass_pending') in (True, 'true', 'True'):
            problems.append("the report says the final pass (deferred provisioning accounts) has not run")
    elif report.get('outcome') not in WINDOWS_GENERALIZED:
        problems.append(f"the report's Sysprep outcome is {report.get('outcome')!r}, not generalized")
    return problems


def proof_tag(report: dict) -> str:
    """Return the provenance tag value of a proof (format, host and time; Azure tag values hold 256 characters)."""
    return f"{report.get('format')} host={report.get('host')} time={report.get('time')}"[:256]


def version_key(version: str) -> tuple[int, ...]:
    """Return a sort key of a MAJOR.MINOR.PATCH version."""
    return tuple(int(part) for part in version.split('.'))


def next_version(existing: list[str]) -> str:
    """Return the patch version after the highest of EXISTING, or 1.0.0."""
    versions = sorted((v for v in existing if SEMVER.match(v)), key=version_key)
    if not versions:
        return '1.0.0'
    major, minor, patch = version_key(versions[-1])
    return f'{major}.{minor}.{patch + 1}'


def versions_to_delete(existing: list[str], keep: int, current: str) -> list[str]:
    """Return the oldest versions to delete so that KEEP are left, never CURRENT."""
    ordered = sorted((v for v in existing if SEMVER.match(v)), key=version_key)
    surplus = len(ordered) - keep
    return [v for v in ordered if v != current][:max(surplus, 0)]


def region(name: str | None) -> str:
    """Return a region name in Azure's short form (``West US`` -> ``westus``)."""
    return (name or '').replace(' ', '').lower()


def same_id(left: str | None, right: str | None) -> bool:
    """Return whether two resource IDs (or URIs) name the same thing (case and leading slash aside)."""
    return bool(left) and bool(right) and left.strip('/').lower() == right.strip('/').lower()


def vm_status(vm: dict) -> dict:
    """Return the power state, generalized flag, Hyper-V generation and data disk LUNs of a VM with its instance view."""
    props = vm.get('properties') or {}
    view = props.get('instanceView') or {}
    codes = [str(status.get('code', '')) for status in view.get('statuses') or []]
    power = next((code.split('/', 1)[1] for code in codes if code.startswith('PowerState/')), 'unknown')
    storage = props.get('storageProfile') or {}
    return {
        'id': vm.get('id'),
        'location': region(vm.get('location')),
        'power_state': power,
        'generalized': 'OSState/generalized' in codes,
        'hyper_v_generation': view.get('hyperVGeneration'),
        'os_type': str((storage.get('osDisk') or {}).get('osType', '')).lower() or None,
        'os_disk': ((storage.get('osDisk') or {}).get('managedDisk') or {}).get('id'),
        'data_disk_luns': sorted(int(disk['lun']) for disk in storage.get('dataDisks') or []),
    }


def vm_settled(vm: dict) -> bool:
    """Return whether no operation runs on VM (read with its instance view): not updating, not between power states."""
    return azure.operation_state(vm) not in ('updating', 'creating', 'deleting') and \
        vm_status(vm)['power_state'] not in ('deallocating', 'stopping', 'starting')


def disk_source(disk: dict) -> dict:
    """Return the REST source of a disk option: {blobUri}, {managedDisk: {id}} or {snapshot: {id}}."""
    sources = [key for key in ('blob_uri', 'managed_disk', 'snapshot') if disk.get(key)]
    if len(sources) != 1:
        raise AzureImageError(f"a disk needs exactly one of blob_uri, managed_disk, snapshot (got {sources or 'none'})")
    if disk.get('blob_uri'):
        return {'blobUri': disk['blob_uri']}
    key = 'managedDisk' if disk.get('managed_disk') else 'snapshot'
    return {key: {'id': disk.get('managed_disk') or disk.get('snapshot')}}


def gallery_disk_source(disk: dict) -> dict:
    """Return the gallery version source of a disk option: {id} or {storageAccountId, uri}."""
    disk_source(disk)  # exactly one source
    if disk.get('blob_uri'):
        if not disk.get('storage_account'):
            raise AzureImageError(f"a gallery image version from the VHD {disk['blob_uri']} needs storage_account (its storage account's resource ID)")
        return {'storageAccountId': disk['storage_account'], 'uri': disk['blob_uri']}
    return {'id': disk.get('managed_disk') or disk.get('snapshot')}


def source_of(source: dict) -> str | None:
    """Return the one string naming a disk source in any of its REST shapes."""
    for key in ('blobUri', 'uri', 'virtualMachineId'):
        if source.get(key):
            return source[key]
    for key in ('managedDisk', 'snapshot', 'source'):
        if isinstance(source.get(key), dict):
            found = source_of(source[key])
            if found:
                return found
    return source.get('id')


def normalise_image(body: dict | None) -> dict:
    """Return the comparable description of a managed image."""
    if not body:
        return {}
    props = body.get('properties') or {}
    storage = props.get('storageProfile') or {}
    os_disk = storage.get('osDisk') or {}
    return {
        'id': body.get('id'), 'kind': 'managed_image', 'name': body.get('name'), 'location': region(body.get('location')),
        'os_type': str(os_disk.get('osType', '')).lower() or None, 'os_state': str(os_disk.get('osState', '')).lower() or None,
        'hyper_v_generation': props.get('hyperVGeneration'),
        'source': ((props.get('sourceVirtualMachine') or {}).get('id')) or source_of(os_disk),
        'os_disk_source': source_of(os_disk),
        'data_disk_luns': sorted(int(disk['lun']) for disk in storage.get('dataDisks') or []),
        'data_disk_sources': {int(disk['lun']): source_of(disk) for disk in storage.get('dataDisks') or []},
        'zone_resilient': bool(storage.get('zoneResilient')),
        'tags': body.get('tags') or {}, 'provisioning_state': props.get('provisioningState'),
    }


def normalise_version(body: dict | None, definition: dict | None) -> dict:
    """Return the comparable description of a gallery image version."""
    if not body:
        return {}
    props = body.get('properties') or {}
    publishing = props.get('publishingProfile') or {}
    storage = props.get('storageProfile') or {}
    definition_props = (definition or {}).get('properties') or {}
    os_image = storage.get('osDiskImage') or {}
    return {
        'id': body.get('id'), 'kind': 'gallery_image_version', 'name': body.get('name'), 'location': region(body.get('location')),
        'os_type': str(definition_props.get('osType', '')).lower() or None,
        'os_state': str(definition_props.get('osState', '')).lower() or None,
        'hyper_v_generation': definition_props.get('hyperVGeneration'),
        'source': source_of(storage.get('source') or {}) or source_of(os_image.get('source') or {}),
        'os_disk_source': source_of(os_image.get('source') or {}),
        'data_disk_luns': sorted(int(disk['lun']) for disk in storage.get('dataDiskImages') or []),
        'target_regions': sorted(({'name': region(item.get('name')), 'regional_replica_count': item.get('regionalReplicaCount'),
                                   'storage_account_type': item.get('storageAccountType'),
                                   'exclude_from_latest': bool(item.get('excludeFromLatest'))}
                                  for item in publishing.get('targetRegions') or []), key=lambda item: item['name']),
        'exclude_from_latest': bool(publishing.get('excludeFromLatest')),
        'end_of_life_date': publishing.get('endOfLifeDate'),
        'tags': body.get('tags') or {}, 'provisioning_state': props.get('provisioningState'),
    }


def same_time(left: str | None, right: str | None) -> bool:
    """Return whether two ISO 8601 times are the same instant as Azure writes them back (Z vs +00:00, fractions)."""
    def canonical(value: str | None) -> str:
        text = (value or '').replace('+00:00', 'Z')
        return re.sub(r'\.0+Z$', 'Z', text)
    return canonical(left) == canonical(right)


def changed_properties(current: dict, desired: dict, keys: tuple[str, ...]) -> list[str]:
    """Return which KEYS differ between the CURRENT and DESIRED descriptions (keys DESIRED leaves None are not compared)."""
    changed = []
    for key in keys:
        want = desired.get(key)
        if want is None:
            continue
        have = current.get(key)
        if key in ('source', 'os_disk_source'):
            if not same_id(have, want):
                changed.append(key)
        elif key == 'end_of_life_date':
            if not same_time(have, want):
                changed.append(key)
        elif key == 'data_disk_sources':
            if set(have or {}) != set(want) or any(not same_id((have or {}).get(lun), src) for lun, src in want.items()):
                changed.append(key)
        elif have != want:
            changed.append(key)
    return changed


def refuse_immutable_change(what: str, current: dict, desired: dict, immutable: tuple[str, ...], advice: str) -> None:
    """Raise, naming each property and its two values, when DESIRED changes a property Azure cannot change on WHAT."""
    changed = changed_properties(current, desired, immutable)
    if changed:
        values = ', '.join(f'{key}: {current.get(key)!r} -> {desired.get(key)!r}' for key in changed)
        raise AzureImageError(f"{what} exists with another {', '.join(changed)} ({values}); Azure cannot change that: {advice}")


# ---------------------------------------------------------------------------------------------------
# the manager

class AzureImageManager:
    """Decides and does one azure_image task."""

    def __init__(self, module: AnsibleModule, session: azure.ArmSession) -> None:
        self.module = module
        self.params = module.params
        self.arm = session
        self.timeout = float(self.params['timeout'])
        self.actions: list[str] = []
        self.kept_proof: str | None = None
        self.result: dict = {'changed': False, 'actions': self.actions, 'image': {}, 'subscription_id': session.subscription_id}

    # --- paths

    def _id(self, *type_names: str, resource_group: str | None = None) -> str:
        return azure.resource_id(self.arm.subscription_id, resource_group or self.params['resource_group'], *type_names)

    def _gallery_path(self, *more: str) -> str:
        return self._id('galleries', self.params['gallery'], *more)

    def _vm_id(self) -> str:
        value = self.params['virtual_machine']
        if value.startswith('/subscriptions/'):
            parsed = azure.parse_resource_id(value)
            if [kind.lower() for kind, _name in parsed['types']] != ['virtualmachines']:
                raise AzureImageError(f'virtual_machine {value!r} is not the ID of a virtual machine')
            return value
        return self._id('virtualMachines', value, resource_group=self.params['vm_resource_group'])

    # --- run

    def run(self) -> dict:
        if self.params['gallery']:
            return self._run_gallery()
        return self._run_managed_image()

    def _do(self, action: str) -> bool:
        """Record ACTION; return whether to carry it out (not in check mode)."""
        self.actions.append(action)
        self.result['changed'] = True
        return not self.module.check_mode

    # --- the source VM

    def _read_vm(self) -> dict | None:
        if not self.params['virtual_machine']:
            return None
        path = self._vm_id()
        vm = self.arm.get(path, azure.API_COMPUTE, query={'$expand': 'instanceView'})
        if vm is None:
            raise AzureImageError(f'virtual machine {path} does not exist')
        if not vm_settled(vm):
            # an operation runs on the VM (an earlier run's deallocate that timed out): wait for it, then read it again
            self.actions.append('wait')
            vm = self.arm.wait_until(path, azure.API_COMPUTE, vm_settled, self.timeout, query={'$expand': 'instanceView'})
        status = vm_status(vm)
        if not status['hyper_v_generation'] and status['os_disk']:
            disk = self.arm.get(status['os_disk'], azure.API_DISK) or {}
            status['hyper_v_generation'] = (disk.get('properties') or {}).get('hyperVGeneration')
        status['hyper_v_generation'] = status['hyper_v_generation'] or 'V1'  # Azure's default for disks that say nothing
        wanted = self.params['hyper_v_generation']
        if wanted and wanted != status['hyper_v_generation']:
            raise AzureImageError(f"hyper_v_generation is {wanted}, but the VM {vm.get('name')} is Hyper-V generation "
                                  f"{status['hyper_v_generation']}")
        self.result['vm'] = {key: status[key] for key in ('id', 'power_state', 'generalized', 'hyper_v_generation', 'data_disk_luns')}
        return status

    def _check_vm(self, vm: dict | None) -> None:
        """Refuse what must not be done to the VM, before anything changes."""
        if vm is None:
            return
        generalized = self.params['os_state'] == 'generalized'
        if generalized and not vm['generalized'] and not self.params['force']:
            problems = proof_problems(self.params['generalized_by'])
            if problems:
                raise AzureImageError(f"refusing to mark the VM {vm['id']} generalized: {'; '.join(problems)}. Generalize the guest "
                                      'with the linux_deprovision or windows_sysprep role and pass its report as generalized_by, '
                                      'or set force=true if the guest was generalized another way')
        if not generalized and vm['generalized']:
            raise AzureImageError(f"the VM {vm['id']} is generalized in Azure; it cannot give a specialized image")
        running = vm['power_state'] not in ('deallocated', 'stopped')
        if running and not self.params['deallocate'] and not (not generalized and self.params['allow_running']):
            raise AzureImageError(f"the VM {vm['id']} is {vm['power_state']}: refusing to capture a running VM (set deallocate=true"
                                  + (', or allow_running=true for a crash-consistent specialized capture' if not generalized else '') + ')')

    def _prepare_vm(self, vm: dict | None) -> None:
        """Deallocate and generalize the VM as the capture needs."""
        if vm is None:
            return
        generalized = self.params['os_state'] == 'generalized'
        # a VM the guest shut down is 'stopped' but still allocated (and billed): deallocate it too
        allocated = vm['power_state'] != 'deallocated'
        if allocated and self.params['deallocate'] and (generalized or not self.params['allow_running']) and self._do('deallocate'):
            self.arm.post(vm['id'] + '/deallocate', azure.API_COMPUTE, timeout=self.timeout)
        if generalized and not vm['generalized'] and self._do('generalize'):
            self.arm.post(vm['id'] + '/generalize', azure.API_COMPUTE, timeout=self.timeout)

    def _tags(self) -> dict:
        tags = dict(self.params['tags'])
        if self.params['generalized_by'] and self.params['os_state'] == 'generalized':
            tags['imageprep_generalized_by'] = proof_tag(self.params['generalized_by'])
        elif self.kept_proof:  # a run without proof keeps the proof an earlier run recorded
            tags['imageprep_generalized_by'] = self.kept_proof
        return tags

    def _keep_proof(self, current: dict) -> None:
        self.kept_proof = (current.get('tags') or {}).get('imageprep_generalized_by')

    # --- disks registered without a VM

    def _check_disks(self) -> None:
        if not self.params['os_type']:
            raise AzureImageError('os_type is required when the image is registered from disks')
        luns = [disk['lun'] for disk in self.params['data_disks']]
        if len(set(luns)) != len(luns):
            raise AzureImageError(f'data_disks has a LUN twice: {sorted(luns)}')
        if self.params['os_state'] == 'generalized' and not self.params['force']:
            problems = proof_problems(self.params['generalized_by'])
            if problems:
                raise AzureImageError(f"refusing to register disks as a generalized image: {'; '.join(problems)}. Pass the report of "
                                      'the role that generalized them as generalized_by, or set force=true')

    # --- managed images

    def _run_managed_image(self) -> dict:
        path = self._id('images', self.params['name'])
        current_body = self.arm.get(path, azure.API_COMPUTE)
        current = normalise_image(current_body)
        self._keep_proof(current)
        if self.params['state'] == 'absent':
            return self._absent(path, azure.API_COMPUTE, current, 'delete_image')
        vm = self._read_vm()
        if vm is None:
            self._check_disks()
        location = region(self.params['location'] or (vm or {}).get('location') or (current or {}).get('location'))
        if not location:
            raise AzureImageError('location is required when the image is registered from disks')
        desired = self._desired_image(vm, location)
        if current and current.get('provisioning_state', '').lower() in ('creating', 'updating'):
            self.actions.append('wait')
            current_body = self.arm.wait_provisioned(path, azure.API_COMPUTE, self.timeout)
            current = normalise_image(current_body)
        if current and str(current.get('provisioning_state')).lower() in ('failed', 'canceled'):
            if self._do('delete_failed_image'):
                self.arm.delete(path, azure.API_COMPUTE, self.timeout)
            current = {}
        if current:
            return self._update_image(path, current, desired)
        self._check_vm(vm)
        self._prepare_vm(vm)
        body = self._image_body(vm, location)
        after = dict(desired, id=path, kind='managed_image', name=self.params['name'], provisioning_state='Succeeded')
        if self._do('create_image'):
            created = self._create(path, azure.API_COMPUTE, body)
            after = normalise_image(created)
            self._check_data_disks(vm, after, path, azure.API_COMPUTE)
        return self._finish(current, after)

    def _desired_image(self, vm: dict | None, location: str) -> dict:
        desired = {'location': location, 'os_state': self.params['os_state'], 'zone_resilient': self.params['zone_resilient'],
                   'tags': self._tags()}
        if vm:
            desired.update(source=vm['id'], hyper_v_generation=vm['hyper_v_generation'])
        else:
            desired.update(os_type=self.params['os_type'], hyper_v_generation=self.params['hyper_v_generation'] or 'V2',
                           os_disk_source=source_of(disk_source(self.params['os_disk'])),
                           data_disk_sources={disk['lun']: source_of(disk_source(disk)) for disk in self.params['data_disks']})
        return desired

    def _image_body(self, vm: dict | None, location: str) -> dict:
        if vm:
            properties = {'sourceVirtualMachine': {'id': vm['id']}, 'hyperVGeneration': vm['hyper_v_generation']}
        else:
            os_disk = dict(disk_source(self.params['os_disk']), osType=self.params['os_type'].title(),
                           osState=self.params['os_state'].title(), storageAccountType=self.params['storage_account_type'])
            data = [dict(disk_source(disk), lun=disk['lun'], storageAccountType=self.params['storage_account_type'])
                    for disk in self.params['data_disks']]
            storage = {'osDisk': os_disk, 'zoneResilient': self.params['zone_resilient']}
            if data:
                storage['dataDisks'] = data
            properties = {'storageProfile': storage, 'hyperVGeneration': self.params['hyper_v_generation'] or 'V2'}
        body = {'location': location, 'properties': properties}
        if self._tags():
            body['tags'] = self._tags()
        return body

    def _update_image(self, path: str, current: dict, desired: dict) -> dict:
        refuse_immutable_change(f"the managed image {self.params['name']}", current, desired,
                                ('location', 'source', 'os_disk_source', 'data_disk_sources', 'os_type', 'os_state', 'hyper_v_generation'),
                                'delete it (state=absent) or choose another name')
        after = dict(current)
        if desired['tags'] != current['tags']:
            after['tags'] = desired['tags']
            if self._do('update_tags'):
                after = normalise_image(self.arm.patch(path, azure.API_COMPUTE, {'tags': desired['tags']}, self.timeout))
        return self._finish(current, after)

    # --- gallery image versions

    def _run_gallery(self) -> dict:
        gallery = self.arm.get(self._gallery_path(), azure.API_GALLERY)
        if gallery is None:
            raise AzureImageError(f"the gallery {self.params['gallery']} does not exist in the resource group {self.params['resource_group']} "
                                  f'of subscription {self.arm.subscription_id}')
        definition_path = self._gallery_path('images', self.params['gallery_image'])
        definition = self.arm.get(definition_path, azure.API_GALLERY)
        if definition and azure.operation_state(definition) in ('creating', 'updating'):  # an earlier run timed out making it
            self.actions.append('wait')
            definition = self.arm.wait_provisioned(definition_path, azure.API_GALLERY, self.timeout)
        versions_path = definition_path + '/versions'
        existing = self.arm.list(versions_path, azure.API_GALLERY) if definition else []
        if self.params['state'] == 'absent':
            if self.params['version'] == 'auto':
                raise AzureImageError('state=absent needs the version to delete (not auto)')
            path = f"{versions_path}/{self.params['version']}"
            body = next((item for item in existing if item.get('name') == self.params['version']), None)
            return self._absent(path, azure.API_GALLERY, normalise_version(body, definition), 'delete_version')
        vm = self._read_vm()
        if vm is None:
            self._check_disks()
        os_type = (vm or {}).get('os_type') or self.params['os_type']
        generation = (vm or {}).get('hyper_v_generation') or self.params['hyper_v_generation'] or 'V2'
        self._check_definition(definition, os_type, generation)
        location = region(self.params['location'] or gallery.get('location'))
        desired = self._desired_version(vm, location)
        version, current_body = self._pick_version(existing, desired)
        self.result['version'] = version
        path = f'{versions_path}/{version}'
        if current_body and str(normalise_version(current_body, definition)['provisioning_state']).lower() in ('creating', 'updating'):
            self.actions.append('wait')
            current_body = self.arm.wait_provisioned(path, azure.API_GALLERY, self.timeout)
        current = normalise_version(current_body, definition)
        self._keep_proof(current)
        desired['tags'] = self._tags()
        if current and str(current.get('provisioning_state')).lower() in ('failed', 'canceled'):
            if self._do('delete_failed_version'):
                self.arm.delete(path, azure.API_GALLERY, self.timeout)
            current = {}
        body = self._version_body(vm, location)
        if current:
            refuse_immutable_change(f'the gallery image version {version}', current, desired, ('source', 'os_disk_source', 'location'),
                                    'use version=auto or a new version, or delete it first')
            after = dict(current)
            drift = changed_properties(current, desired, VERSION_MUTABLE)
            if drift:
                after.update({key: desired[key] for key in drift})
                if self._do('update_version'):
                    after = normalise_version(self.arm.put(path, azure.API_GALLERY, body, self.timeout), definition)
        else:
            self._check_vm(vm)
            if definition is None and self._do('create_definition'):
                definition = self.arm.put(definition_path, azure.API_GALLERY, self._definition_body(os_type, generation, location),
                                          self.timeout)
            self._prepare_vm(vm)
            after = dict(desired, id=path, kind='gallery_image_version', name=version, provisioning_state='Succeeded',
                         os_type=os_type, os_state=self.params['os_state'], hyper_v_generation=generation)
            if self._do('create_version'):
                after = normalise_version(self._create(path, azure.API_GALLERY, body), definition)
                self._check_data_disks(vm, after, path, azure.API_GALLERY)
        self.result['deleted_versions'] = self._retention(existing, version, versions_path)
        return self._finish(current, after)

    def _check_definition(self, definition: dict | None, os_type: str | None, generation: str) -> None:
        """Refuse a source that does not fit the image definition (or a missing definition without one to create)."""
        name = self.params['gallery_image']
        if definition is None:
            if not self.params['definition']:
                raise AzureImageError(f"the gallery image definition {name} does not exist in the gallery {self.params['gallery']}; "
                                      'give definition (publisher, offer, sku) to create it')
            return
        props = definition.get('properties') or {}
        problems = []
        if str(props.get('osState', '')).lower() != self.params['os_state']:
            problems.append(f"its OS state is {props.get('osState')}, the image is {self.params['os_state']}")
        if os_type and str(props.get('osType', '')).lower() != os_type:
            problems.append(f"its OS type is {props.get('osType')}, the source is {os_type}")
        if (props.get('hyperVGeneration') or 'V1') != generation:
            problems.append(f"its Hyper-V generation is {props.get('hyperVGeneration') or 'V1'}, the source is {generation}")
        wanted = self.params['definition']
        if wanted:
            identifier = props.get('identifier') or {}
            for key in ('publisher', 'offer', 'sku'):
                if str(identifier.get(key, '')) != wanted[key]:
                    problems.append(f"its {key} is {identifier.get(key)!r}, definition asks {wanted[key]!r}")
        if problems:
            raise AzureImageError(f"the gallery image definition {name} does not fit: {'; '.join(problems)}. Azure cannot change "
                                  'these on a definition: use another gallery_image')

    def _definition_body(self, os_type: str | None, generation: str, location: str) -> dict:
        wanted = self.params['definition']
        properties = {'osType': (os_type or 'linux').title(), 'osState': self.params['os_state'].title(), 'hyperVGeneration': generation,
                      'identifier': {key: wanted[key] for key in ('publisher', 'offer', 'sku')}, 'architecture': wanted['architecture']}
        if wanted.get('description'):
            properties['description'] = wanted['description']
        return {'location': location, 'properties': properties}

    def _target_regions(self, location: str) -> list[dict]:
        regions = self.params['target_regions'] or [{'name': location}]
        return sorted(({'name': region(item['name']),
                        'regional_replica_count': item.get('regional_replica_count') or self.params['replica_count'],
                        'storage_account_type': item.get('storage_account_type') or self.params['storage_account_type'],
                        'exclude_from_latest': bool(item.get('exclude_from_latest'))} for item in regions), key=lambda item: item['name'])

    def _desired_version(self, vm: dict | None, location: str) -> dict:
        desired = {'location': location, 'target_regions': self._target_regions(location),
                   'exclude_from_latest': self.params['exclude_from_latest'], 'end_of_life_date': self.params['end_of_life_date'],
                   'tags': self._tags()}
        if vm:
            desired['source'] = vm['id']
        else:
            desired['os_disk_source'] = source_of(gallery_disk_source(self.params['os_disk']))
        return desired

    def _version_body(self, vm: dict | None, location: str) -> dict:
        publishing = {'targetRegions': [{'name': item['name'], 'regionalReplicaCount': item['regional_replica_count'],
                                         'storageAccountType': item['storage_account_type'], 'excludeFromLatest': item['exclude_from_latest']}
                                        for item in self._target_regions(location)]}
        # a PUT replaces the version's profile: what is left out takes Azure's default (false, no end of life)
        if self.params['exclude_from_latest']:
            publishing['excludeFromLatest'] = True
        if self.params['end_of_life_date']:
            publishing['endOfLifeDate'] = self.params['end_of_life_date']
        if vm:
            storage = {'source': {'virtualMachineId': vm['id']}}
        else:
            storage = {'osDiskImage': {'source': gallery_disk_source(self.params['os_disk'])}}
            if self.params['data_disks']:
                storage['dataDiskImages'] = [{'lun': disk['lun'], 'source': gallery_disk_source(disk)} for disk in self.params['data_disks']]
        body = {'location': location, 'properties': {'publishingProfile': publishing, 'storageProfile': storage}}
        if self._tags():
            body['tags'] = self._tags()
        return body

    def _pick_version(self, existing: list[dict], desired: dict) -> tuple[str, dict | None]:
        """Return the version to make or keep: the given one, or for auto the one from the same source, or the next."""
        by_name = {item.get('name'): item for item in existing}
        wanted = self.params['version']
        if wanted != 'auto':
            if not SEMVER.match(wanted):
                raise AzureImageError(f'version {wanted!r} is not MAJOR.MINOR.PATCH (or auto)')
            return wanted, by_name.get(wanted)
        source = desired.get('source') or desired.get('os_disk_source')
        for item in sorted(existing, key=lambda item: version_key(item['name']) if SEMVER.match(item.get('name', '')) else (0,), reverse=True):
            normalised = normalise_version(item, None)
            if same_id(normalised['source'], source) or same_id(normalised['os_disk_source'], source):
                return item['name'], item
        return next_version(list(by_name)), None

    def _retention(self, existing: list[dict], current: str, versions_path: str) -> list[str]:
        keep = self.params['keep_versions']
        if not keep:
            return []
        names = {item.get('name') for item in existing} | {current}
        doomed = versions_to_delete(sorted(names), keep, current)
        for name in doomed:
            if self._do(f'delete_version {name}'):
                self.arm.delete(f'{versions_path}/{name}', azure.API_GALLERY, self.timeout)
        return doomed

    # --- shared steps

    def _create(self, path: str, api_version: str, body: dict) -> dict:
        """PUT a new image; on failure delete what Azure left (a Failed or half-made resource) and re-raise."""
        try:
            return self.arm.put(path, api_version, body, self.timeout)
        except azure.AzureTimeout:
            raise  # still being created in Azure: a re-run waits for it
        except azure.AzureError:
            try:
                if self.arm.get(path, api_version) is not None:
                    self.arm.delete(path, api_version, self.timeout)
                    self.actions.append('delete_failed')
            except azure.AzureError:
                pass  # the creation's error is the one to report
            raise

    def _check_data_disks(self, vm: dict | None, after: dict, path: str, api_version: str) -> None:
        """Fail (and delete the image) when Azure left out a data disk the source has."""
        expected = vm['data_disk_luns'] if vm else sorted(disk['lun'] for disk in self.params['data_disks'])
        if after.get('data_disk_luns') != expected:
            self.arm.delete(path, api_version, self.timeout)
            self.actions.append('delete_incomplete')
            raise AzureImageError(f"Azure made the image with data disks at LUNs {after.get('data_disk_luns')}, the source has {expected}; "
                                  'the image was deleted')

    def _absent(self, path: str, api_version: str, current: dict, action: str) -> dict:
        if current and self._do(action):
            self.arm.delete(path, api_version, self.timeout)
        return self._finish(current, {})

    def _finish(self, before: dict, after: dict) -> dict:
        public = {key: value for key, value in after.items() if key != 'data_disk_sources'}
        self.result['image'] = public
        if self.module._diff:
            self.result['diff'] = {'before': {key: value for key, value in before.items() if key != 'data_disk_sources'}, 'after': public}
        if self.module.check_mode and self.result['changed']:
            self.result['msg'] = f"would {', '.join(self.actions)}"
        return self.result


def main():
    """Module entry point."""
    disk_options = dict(blob_uri=dict(type='str'), storage_account=dict(type='str'), managed_disk=dict(type='str'), snapshot=dict(type='str'))
    argument_spec = dict(
        resource_group=dict(type='str', required=True),
        name=dict(type='str'),
        gallery=dict(type='str'),
        gallery_image=dict(type='str'),
        version=dict(type='str', default='auto'),
        definition=dict(type='dict', options=dict(publisher=dict(type='str', required=True), offer=dict(type='str', required=True),
                                                  sku=dict(type='str', required=True), description=dict(type='str'),
                                                  architecture=dict(type='str', choices=['x64', 'Arm64'], default='x64'))),
        virtual_machine=dict(type='str'),
        vm_resource_group=dict(type='str'),
        os_disk=dict(type='dict', options=disk_options),
        data_disks=dict(type='list', elements='dict', default=[], options=dict(lun=dict(type='int', required=True), **disk_options)),
        os_type=dict(type='str', choices=['linux', 'windows']),
        os_state=dict(type='str', choices=['generalized', 'specialized'], default='generalized'),
        hyper_v_generation=dict(type='str', choices=['V1', 'V2']),
        generalized_by=dict(type='dict'),
        force=dict(type='bool', default=False),
        deallocate=dict(type='bool', default=True),
        allow_running=dict(type='bool', default=False),
        location=dict(type='str'),
        target_regions=dict(type='list', elements='dict', options=dict(
            name=dict(type='str', required=True), regional_replica_count=dict(type='int'),
            storage_account_type=dict(type='str', choices=['Standard_LRS', 'Standard_ZRS', 'Premium_LRS']),
            exclude_from_latest=dict(type='bool'))),
        replica_count=dict(type='int', default=1),
        storage_account_type=dict(type='str', choices=['Standard_LRS', 'Standard_ZRS', 'Premium_LRS'], default='Standard_LRS'),
        exclude_from_latest=dict(type='bool', default=False),
        end_of_life_date=dict(type='str'),
        zone_resilient=dict(type='bool', default=False),
        tags=dict(type='dict', default={}),
        keep_versions=dict(type='int'),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        timeout=dict(type='int', default=3600),
        **azure.AZURE_AUTH_SPEC,
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[('name', 'gallery'), ('virtual_machine', 'os_disk')],
        required_one_of=[('name', 'gallery')],
        required_together=[('gallery', 'gallery_image')],
        required_if=[('state', 'present', ('virtual_machine', 'os_disk'), True)],
        required_by={'keep_versions': 'gallery', 'target_regions': 'gallery', 'definition': 'gallery'},
        supports_check_mode=True,
    )
    if azure.AZURE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('azure-identity and azure-core'), exception=azure.AZURE_IMPORT_ERROR)
    for option in ('replica_count', 'keep_versions', 'timeout'):
        if module.params[option] is not None and module.params[option] < 1:
            module.fail_json(msg=f'{option} must be 1 or more')
    if module.params['data_disks'] and not module.params['os_disk']:
        module.fail_json(msg='data_disks are registered with os_disk; a VM capture takes the VM\'s own data disks')
    if module.params['vm_resource_group'] is None:
        module.params['vm_resource_group'] = module.params['resource_group']
    try:
        session = azure.ArmSession(module.params)
        result = AzureImageManager(module, session).run()
    except AzureImageError as exc:
        module.fail_json(msg=str(exc))
    except azure.AzureError as exc:
        module.fail_json(msg=exc.message, exception=traceback.format_exc(), **exc.to_result())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
