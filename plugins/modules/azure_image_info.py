#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: azure_image_info
short_description: List Azure image sources, managed images, gallery image versions and Marketplace images
version_added: 0.2.0
description:
  - Lists the image sources a VM can be created from in Azure, as plain data a playbook can use.
  - B(Managed images) (C(Microsoft.Compute/images)), the default, are all the images of the subscription,
    or those of O(resource_group), or the one named O(name).
  - B(Azure Compute Gallery) image definitions and their versions, with O(gallery). O(gallery_image) selects
    one definition, O(version) one version (V(latest) the highest one not excluded from latest). A gallery or
    image definition that does not exist is an error; a definition without versions gives no versions.
  - B(Marketplace) images, with O(marketplace). Each level of the catalogue is listed in turn, by how
    much of the image is given. A location alone lists its publishers; with a publisher, its offers; with
    an offer, its SKUs; with a SKU, its versions; with a version (or V(latest)), the image itself.
  - Only what is asked for is returned (see RETURN).
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - imageprep.vm.azure
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
options:
  resource_group:
    description:
      - Resource group of the managed images to list, or of O(gallery).
      - Without it (and without O(gallery) and O(marketplace)) every managed image of the subscription is listed.
      - A resource group that does not exist has no managed images.
    type: str
  name:
    description:
      - Name of the one managed image to return (in O(resource_group)). No image of that name gives an empty RV(images).
    type: str
  gallery:
    description:
      - Name of an Azure Compute Gallery in O(resource_group); lists its image definitions and their versions.
    type: str
  gallery_image:
    description: Only this image definition of O(gallery).
    type: str
  version:
    description:
      - Only this version (V(MAJOR.MINOR.PATCH)) of each listed image definition; none of that name gives no version.
      - V(latest) keeps the highest version of each definition that is not excluded from latest
        (C(publishingProfile.excludeFromLatest)), as Azure does for VMs created from C(latest).
    type: str
  replication_status:
    description:
      - Read each gallery image version with its replication status per region (one request per version).
    type: bool
    default: true
  marketplace:
    description:
      - Browse the Azure Marketplace catalogue of virtual machine images in one location.
      - A publisher, offer or SKU that the location does not have is an error; a version it does not have
        gives an empty RV(marketplace).
    type: dict
    suboptions:
      location:
        description: Azure region, for example V(westeurope).
        type: str
        required: true
      publisher:
        description: Publisher, for example V(Canonical) or V(Debian).
        type: str
      offer:
        description: Offer of O(marketplace.publisher), for example V(debian-12).
        type: str
      sku:
        description: SKU of O(marketplace.offer), for example V(12-gen2).
        type: str
      version:
        description:
          - Version of O(marketplace.sku); V(latest) picks the highest one.
        type: str
seealso:
  - name: Azure Compute Gallery
    description: Image definitions, versions and replication.
    link: https://learn.microsoft.com/azure/virtual-machines/shared-image-galleries
  - name: Find Azure Marketplace images
    description: Publishers, offers, SKUs and versions, and image URNs.
    link: https://learn.microsoft.com/azure/virtual-machines/linux/cli-ps-findimage
"""

EXAMPLES = r"""
- name: List the managed images of a resource group
  imageprep.vm.azure_image_info:
    resource_group: images-rg
  register: __managed

- name: Find the latest version of a gallery image, and where it has replicated
  imageprep.vm.azure_image_info:
    resource_group: images-rg
    gallery: golden
    gallery_image: debian12-web
    version: latest
  register: __latest

- name: Say whether it is ready in every region
  ansible.builtin.assert:
    that:
      - __latest.gallery_image_versions | length == 1
      - __latest.gallery_image_versions[0].replication_status.aggregated_state == 'Completed'

- name: Resolve the URN of the latest Debian 12 Marketplace image
  imageprep.vm.azure_image_info:
    marketplace:
      location: westeurope
      publisher: Debian
      offer: debian-12
      sku: 12-gen2
      version: latest
  register: __debian

- name: Use it
  ansible.builtin.debug:
    msg: "{{ __debian.marketplace[0].urn }}"
"""

RETURN = r"""
images:
  description:
    - The managed images, sorted by resource group and name.
  returned: when neither O(gallery) nor O(marketplace) is set
  type: list
  elements: dict
  contains:
    id:
      description: Resource ID of the image.
      type: str
    name:
      description: Image name.
      type: str
    resource_group:
      description: Resource group of the image.
      type: str
    location:
      description: Azure region of the image.
      type: str
    os_type:
      description: 'V(Linux) or V(Windows).'
      type: str
    os_state:
      description: 'V(Generalized) or V(Specialized).'
      type: str
    hyper_v_generation:
      description: 'V(V1) or V(V2).'
      type: str
    source_virtual_machine:
      description: 'Resource ID of the VM the image was captured from, or null.'
      type: str
    os_disk:
      description: The OS disk.
      type: dict
      contains:
        size_gb:
          description: 'Size in GiB, or null when Azure does not say.'
          type: int
        storage_account_type:
          description: 'Storage account type, for example V(Standard_LRS).'
          type: str
        source:
          description:
            - What the disk was made from, the first of a managed disk ID, a snapshot ID or a blob URI that is set.
          type: str
        source_type:
          description: 'V(managed_disk), V(snapshot), V(blob), or null.'
          type: str
    data_disks:
      description: The data disks, by LUN.
      type: list
      elements: dict
      contains:
        lun:
          description: Logical unit number.
          type: int
        size_gb:
          description: 'Size in GiB, or null.'
          type: int
        storage_account_type:
          description: Storage account type.
          type: str
        source:
          description: As for the OS disk.
          type: str
        source_type:
          description: As for the OS disk.
          type: str
    zone_resilient:
      description: Whether the image is zone resilient.
      type: bool
    provisioning_state:
      description: Provisioning state as Azure reports it.
      type: str
    tags:
      description: Resource tags.
      type: dict
  sample:
    - id: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/images-rg/providers/Microsoft.Compute/images/web-1
      name: web-1
      resource_group: images-rg
      location: westeurope
      os_type: Linux
      os_state: Generalized
      hyper_v_generation: V2
      source_virtual_machine: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/vms/providers/Microsoft.Compute/virtualMachines/web
      os_disk:
        size_gb: 30
        storage_account_type: Standard_LRS
        source: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/vms/providers/Microsoft.Compute/disks/web-os
        source_type: managed_disk
      data_disks: []
      zone_resilient: false
      provisioning_state: Succeeded
      tags: {}
gallery_images:
  description: The image definitions of O(gallery) (only O(gallery_image) when set), sorted by name.
  returned: when O(gallery) is set
  type: list
  elements: dict
  contains:
    id:
      description: Resource ID of the image definition.
      type: str
    name:
      description: Image definition name.
      type: str
    gallery:
      description: Gallery name.
      type: str
    resource_group:
      description: Resource group of the gallery.
      type: str
    location:
      description: Azure region.
      type: str
    description:
      description: 'Description, or null.'
      type: str
    os_type:
      description: 'V(Linux) or V(Windows).'
      type: str
    os_state:
      description: 'V(Generalized) or V(Specialized).'
      type: str
    hyper_v_generation:
      description: 'V(V1) or V(V2).'
      type: str
    architecture:
      description: 'V(x64) or V(Arm64), or null.'
      type: str
    identifier:
      description: Publisher, offer and SKU of the definition.
      type: dict
      contains:
        publisher:
          description: Publisher.
          type: str
        offer:
          description: Offer.
          type: str
        sku:
          description: SKU.
          type: str
    end_of_life_date:
      description: 'End of life date, or null.'
      type: str
    provisioning_state:
      description: Provisioning state.
      type: str
    tags:
      description: Resource tags.
      type: dict
gallery_image_versions:
  description:
    - The versions of the listed image definitions, by definition name and then by version number
      (numerically, V(1.10.0) after V(1.9.0)).
  returned: when O(gallery) is set
  type: list
  elements: dict
  contains:
    id:
      description: Resource ID of the version.
      type: str
    name:
      description: 'The version, V(MAJOR.MINOR.PATCH).'
      type: str
    gallery:
      description: Gallery name.
      type: str
    gallery_image:
      description: Image definition name.
      type: str
    resource_group:
      description: Resource group of the gallery.
      type: str
    location:
      description: Azure region of the version.
      type: str
    provisioning_state:
      description: Provisioning state.
      type: str
    published_date:
      description: 'When the version was published (ISO 8601), or null.'
      type: str
    end_of_life_date:
      description: 'End of life date, or null.'
      type: str
    exclude_from_latest:
      description: Whether the version is excluded from V(latest).
      type: bool
    target_regions:
      description: Regions the version is replicated to.
      type: list
      elements: dict
      contains:
        name:
          description: Region name.
          type: str
        regional_replica_count:
          description: Replicas in the region (the version's replica count when the region sets none).
          type: int
        storage_account_type:
          description: Storage account type in the region (the version's when the region sets none).
          type: str
        exclude_from_latest:
          description: Whether the version is excluded from V(latest) in this region.
          type: bool
    storage_profile:
      description: What the version was made from, and its disks.
      type: dict
      contains:
        source_id:
          description: 'Resource ID of the VM or managed image the version was made from, or null.'
          type: str
        os_disk_image:
          description: The OS disk.
          type: dict
          contains:
            size_gb:
              description: 'Size in GiB, or null.'
              type: int
            host_caching:
              description: Host caching.
              type: str
            source:
              description: 'ID of the source disk or snapshot, or URI of the source blob, or null.'
              type: str
        data_disk_images:
          description: The data disks, by LUN.
          type: list
          elements: dict
          contains:
            lun:
              description: Logical unit number.
              type: int
            size_gb:
              description: 'Size in GiB, or null.'
              type: int
            host_caching:
              description: Host caching.
              type: str
            source:
              description: As for the OS disk.
              type: str
    replication_status:
      description: Replication state, overall and per region.
      returned: when O(replication_status=true)
      type: dict
      contains:
        aggregated_state:
          description: 'V(Unknown), V(InProgress), V(Completed) or V(Failed).'
          type: str
        summary:
          description: One entry per region.
          type: list
          elements: dict
          contains:
            region:
              description: Region.
              type: str
            state:
              description: 'V(Unknown), V(Replicating), V(Completed) or V(Failed).'
              type: str
            details:
              description: Details Azure gives.
              type: str
            progress:
              description: Per cent done.
              type: int
    os_type:
      description: The definition's OS type.
      type: str
    os_state:
      description: The definition's OS state.
      type: str
    hyper_v_generation:
      description: The definition's Hyper-V generation.
      type: str
    identifier:
      description: "The definition's publisher, offer and SKU."
      type: dict
    tags:
      description: Resource tags.
      type: dict
  sample:
    - id: "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/images-rg/providers/Microsoft.Compute/\
        galleries/golden/images/debian12-web/versions/1.0.2"
      name: 1.0.2
      gallery: golden
      gallery_image: debian12-web
      resource_group: images-rg
      location: westeurope
      provisioning_state: Succeeded
      published_date: '2025-01-01T00:00:00Z'
      end_of_life_date: null
      exclude_from_latest: false
      target_regions:
        - {name: westeurope, regional_replica_count: 1, storage_account_type: Standard_LRS, exclude_from_latest: false}
      storage_profile:
        source_id: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/vms/providers/Microsoft.Compute/virtualMachines/web
        os_disk_image: {size_gb: 30, host_caching: ReadWrite, source: null}
        data_disk_images: []
      replication_status:
        aggregated_state: Completed
        summary:
          - {region: westeurope, state: Completed, details: '', progress: 100}
      os_type: Linux
      os_state: Generalized
      hyper_v_generation: V2
      identifier: {publisher: imageprep, offer: web, sku: debian12}
      tags: {}
marketplace:
  description:
    - The entries of the Marketplace level asked for, sorted by name (versions numerically).
    - Each entry has C(location), C(id) and the names known at its level (C(publisher), C(offer), C(sku), C(version)).
    - Versions, and the image, have C(urn) (V(publisher:offer:sku:version)).
    - The image (a version given, or V(latest)) also has C(os_type), C(hyper_v_generation), C(architecture),
      C(plan) (C(publisher), C(name), C(product), or null when the image needs no purchase plan),
      C(data_disk_images) (C(lun) of each), and C(image_deprecation_status) (C(image_state),
      C(scheduled_deprecation_time), C(alternative_option)) when Azure gives one.
  returned: when O(marketplace) is set
  type: list
  elements: dict
  sample:
    - location: westeurope
      publisher: Debian
      offer: debian-12
      sku: 12-gen2
      version: 0.20250101.1000
      urn: Debian:debian-12:12-gen2:0.20250101.1000
      id: "/Subscriptions/00000000-0000-0000-0000-000000000000/Providers/Microsoft.Compute/Locations/westeurope/\
        Publishers/Debian/ArtifactTypes/VMImage/Offers/debian-12/Skus/12-gen2/Versions/0.20250101.1000"
      os_type: Linux
      hyper_v_generation: V2
      architecture: x64
      plan: null
      data_disk_images: []
"""

import re
import typing as t
from urllib.parse import quote

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.imageprep.vm.plugins.module_utils._azure import (
    API_COMPUTE, API_GALLERY, AZURE_AUTH_SPEC, AZURE_IMPORT_ERROR, ArmSession, AzureError, parse_resource_id)

MARKETPLACE_LEVELS = ('publisher', 'offer', 'sku', 'version')


# ---------------------------------------------------------------------------------------------------
# decisions and normalisation (pure)

def version_key(name: str) -> tuple[tuple[int, t.Any], ...]:
    """Sort key of a dotted version: numeric parts numerically (1.10.0 after 1.9.0), other parts after them."""
    return tuple((0, int(part)) if part.isdigit() else (1, part.lower()) for part in re.split(r'[.\-]', str(name)))


def resource_id_text(value: t.Any) -> str | None:
    """Return an ARM resource id with its leading slash (some Azure answers omit it), or None."""
    if not value:
        return None
    text = str(value)
    return text if text.startswith('/') or '://' in text else '/' + text


def sub_id(reference: t.Any) -> str | None:
    """Return the id of a SubResource ({"id": ...}), or None."""
    return resource_id_text(reference.get('id')) if isinstance(reference, dict) else None


def resource_group_of(value: str | None) -> str | None:
    """Return the resource group named in resource id VALUE, or None when it names none."""
    try:
        return parse_resource_id(value or '')['resource_group']
    except AzureError:
        return None


def image_disk_source(disk: dict[str, t.Any]) -> tuple[str | None, str | None]:
    """Return (source, source_type) of a managed image disk: its managed disk, snapshot or blob."""
    for key, kind in (('managedDisk', 'managed_disk'), ('snapshot', 'snapshot')):
        found = sub_id(disk.get(key))
        if found:
            return found, kind
    if disk.get('blobUri'):
        return disk['blobUri'], 'blob'
    return None, None


def image_disk_info(disk: dict[str, t.Any]) -> dict[str, t.Any]:
    """Return the normalised form of one disk of a managed image."""
    source, source_type = image_disk_source(disk)
    return {'size_gb': disk.get('diskSizeGB'), 'storage_account_type': disk.get('storageAccountType'),
            'source': source, 'source_type': source_type}


def image_info(body: dict[str, t.Any]) -> dict[str, t.Any]:
    """Return a managed image (an Images_Get / Images_List item) as plain data."""
    props = body.get('properties') or {}
    storage = props.get('storageProfile') or {}
    os_disk = storage.get('osDisk') or {}
    data_disks = sorted(storage.get('dataDisks') or [], key=lambda disk: disk.get('lun', 0))
    image_id = resource_id_text(body.get('id'))
    return {
        'id': image_id,
        'name': body.get('name'),
        'resource_group': resource_group_of(image_id),
        'location': body.get('location'),
        'os_type': os_disk.get('osType'),
        'os_state': os_disk.get('osState'),
        'hyper_v_generation': props.get('hyperVGeneration'),
        'source_virtual_machine': sub_id(props.get('sourceVirtualMachine')),
        'os_disk': image_disk_info(os_disk),
        'data_disks': [dict(lun=disk.get('lun'), **image_disk_info(disk)) for disk in data_disks],
        'zone_resilient': bool(storage.get('zoneResilient')),
        'provisioning_state': props.get('provisioningState'),
        'tags': body.get('tags') or {},
    }


def identifier_info(props: dict[str, t.Any]) -> dict[str, t.Any]:
    """Return the publisher/offer/sku identifier of a gallery image definition."""
    identifier = props.get('identifier') or {}
    return {key: identifier.get(key) for key in ('publisher', 'offer', 'sku')}


def gallery_image_info(body: dict[str, t.Any], gallery: str, resource_group: str) -> dict[str, t.Any]:
    """Return a gallery image definition (GalleryImages_Get / _ListByGallery item) as plain data."""
    props = body.get('properties') or {}
    return {
        'id': resource_id_text(body.get('id')),
        'name': body.get('name'),
        'gallery': gallery,
        'resource_group': resource_group,
        'location': body.get('location'),
        'description': props.get('description'),
        'os_type': props.get('osType'),
        'os_state': props.get('osState'),
        'hyper_v_generation': props.get('hyperVGeneration'),
        'architecture': props.get('architecture'),
        'identifier': identifier_info(props),
        'end_of_life_date': props.get('endOfLifeDate'),
        'provisioning_state': props.get('provisioningState'),
        'tags': body.get('tags') or {},
    }


def gallery_disk_source(disk: dict[str, t.Any]) -> str | None:
    """Return the source of a gallery disk image: a disk or snapshot id, or a blob URI."""
    source = disk.get('source') or {}
    return resource_id_text(source.get('id')) or source.get('uri')


def gallery_disk_info(disk: dict[str, t.Any]) -> dict[str, t.Any]:
    """Return the normalised form of one disk image of a gallery image version."""
    return {'size_gb': disk.get('sizeInGB'), 'host_caching': disk.get('hostCaching'), 'source': gallery_disk_source(disk)}


def replication_info(status: t.Any) -> dict[str, t.Any]:
    """Return a version's replicationStatus ($expand=ReplicationStatus) as plain data."""
    status = status if isinstance(status, dict) else {}
    return {
        'aggregated_state': status.get('aggregatedState'),
        'summary': [{'region': item.get('region'), 'state': item.get('state'), 'details': item.get('details'),
                     'progress': item.get('progress')} for item in status.get('summary') or []],
    }


def gallery_version_info(body: dict[str, t.Any], definition: dict[str, t.Any], with_replication: bool) -> dict[str, t.Any]:
    """Return a gallery image version as plain data, with the facts of its DEFINITION (gallery_image_info)."""
    props = body.get('properties') or {}
    publishing = props.get('publishingProfile') or {}
    storage = props.get('storageProfile') or {}
    source = storage.get('source') or {}
    # Azure applies the version's replicaCount and storageAccountType to regions that set none
    regions = [{
        'name': region.get('name'),
        'regional_replica_count': region.get('regionalReplicaCount', publishing.get('replicaCount')),
        'storage_account_type': region.get('storageAccountType', publishing.get('storageAccountType')),
        'exclude_from_latest': bool(region.get('excludeFromLatest', False)),
    } for region in publishing.get('targetRegions') or []]
    data_disks = sorted(storage.get('dataDiskImages') or [], key=lambda disk: disk.get('lun', 0))
    info = {
        'id': resource_id_text(body.get('id')),
        'name': body.get('name'),
        'gallery': definition['gallery'],
        'gallery_image': definition['name'],
        'resource_group': definition['resource_group'],
        'location': body.get('location'),
        'provisioning_state': props.get('provisioningState'),
        'published_date': publishing.get('publishedDate'),
        'end_of_life_date': publishing.get('endOfLifeDate'),
        'exclude_from_latest': bool(publishing.get('excludeFromLatest', False)),
        'target_regions': regions,
        'storage_profile': {
            'source_id': resource_id_text(source.get('virtualMachineId') or source.get('id') or source.get('communityGalleryImageId')),
            'os_disk_image': gallery_disk_info(storage.get('osDiskImage') or {}),
            'data_disk_images': [dict(lun=disk.get('lun'), **gallery_disk_info(disk)) for disk in data_disks],
        },
        'os_type': definition['os_type'],
        'os_state': definition['os_state'],
        'hyper_v_generation': definition['hyper_v_generation'],
        'identifier': definition['identifier'],
        'tags': body.get('tags') or {},
    }
    if with_replication:
        info['replication_status'] = replication_info(props.get('replicationStatus'))
    return info


def excluded_from_latest(body: dict[str, t.Any]) -> bool:
    """Return whether a gallery image version body is excluded from 'latest'."""
    return bool(((body.get('properties') or {}).get('publishingProfile') or {}).get('excludeFromLatest'))


def latest_version(bodies: list[dict[str, t.Any]]) -> dict[str, t.Any] | None:
    """Return the version body with the highest version number not excluded from latest, or None."""
    eligible = [body for body in bodies if not excluded_from_latest(body)]
    return max(eligible, key=lambda body: version_key(body.get('name', '')), default=None)


def marketplace_depth(marketplace: dict[str, t.Any]) -> int:
    """Return how many of publisher, offer, sku and version MARKETPLACE gives (each needs the one before).

    0 asks for the publishers, 1 for the offers, 2 for the SKUs, 3 for the versions, 4 for one image.
    """
    depth = 0
    while depth < len(MARKETPLACE_LEVELS) and marketplace.get(MARKETPLACE_LEVELS[depth]):
        depth += 1
    return depth


def segment(name: str) -> str:
    """Return NAME escaped as one URL path segment."""
    return quote(str(name), safe='')


def marketplace_path(subscription_id: str, marketplace: dict[str, t.Any], depth: int) -> str:
    """Return the ARM path that lists the Marketplace level below the first DEPTH names of MARKETPLACE.

    Depth 0 lists publishers, 1 offers, 2 SKUs, 3 versions; 4 is one version's image.
    """
    path = f"/subscriptions/{subscription_id}/providers/Microsoft.Compute/locations/{segment(marketplace['location'])}/publishers"
    if depth >= 1:
        path += f"/{segment(marketplace['publisher'])}/artifacttypes/vmimage/offers"
    if depth >= 2:
        path += f"/{segment(marketplace['offer'])}/skus"
    if depth >= 3:
        path += f"/{segment(marketplace['sku'])}/versions"
    if depth >= 4:
        path += f"/{segment(marketplace['version'])}"
    return path


def marketplace_names(marketplace: dict[str, t.Any], depth: int) -> dict[str, t.Any]:
    """Return location and the first DEPTH names of MARKETPLACE."""
    names = {'location': marketplace['location']}
    for key in MARKETPLACE_LEVELS[:depth]:
        names[key] = marketplace[key]
    return names


def urn(names: dict[str, t.Any]) -> str:
    """Return the Marketplace URN publisher:offer:sku:version of NAMES."""
    return ':'.join(str(names[key]) for key in MARKETPLACE_LEVELS)


def marketplace_entries(items: list[dict[str, t.Any]], marketplace: dict[str, t.Any], depth: int) -> list[dict[str, t.Any]]:
    """Return the entries of one Marketplace level (the list at DEPTH), sorted; versions carry their URN."""
    key = MARKETPLACE_LEVELS[depth]
    entries = []
    for item in items:
        entry = dict(marketplace_names(marketplace, depth), **{key: item.get('name')})
        if key == 'version':
            entry['urn'] = urn(entry)
        entry['id'] = item.get('id')
        entries.append(entry)
    if key == 'version':
        return sorted(entries, key=lambda entry: version_key(entry['version']))
    return sorted(entries, key=lambda entry: str(entry[key]).lower())


def marketplace_image_info(body: dict[str, t.Any], marketplace: dict[str, t.Any]) -> dict[str, t.Any]:
    """Return a Marketplace image (VirtualMachineImages_Get) as plain data."""
    props = body.get('properties') or {}
    entry = marketplace_names(marketplace, 4)
    entry['version'] = body.get('name') or marketplace['version']
    plan = props.get('plan')
    entry.update({
        'urn': urn(entry),
        'id': body.get('id'),
        'os_type': (props.get('osDiskImage') or {}).get('operatingSystem'),
        'hyper_v_generation': props.get('hyperVGeneration'),
        'architecture': props.get('architecture'),
        'plan': {key: plan.get(key) for key in ('publisher', 'name', 'product')} if isinstance(plan, dict) else None,
        'data_disk_images': [{'lun': disk.get('lun')} for disk in props.get('dataDiskImages') or []],
    })
    status = props.get('imageDeprecationStatus')
    if isinstance(status, dict):
        entry['image_deprecation_status'] = {
            'image_state': status.get('imageState'),
            'scheduled_deprecation_time': status.get('scheduledDeprecationTime'),
            'alternative_option': status.get('alternativeOption'),
        }
    return entry


def not_found_error(what: str, body: t.Any, request_id: str | None = None) -> AzureError:
    """Return the error for a 404 answer about WHAT, with the code and message Azure gave."""
    error = (body or {}).get('error') if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get('code') or 'NotFound'
    detail = f" ({code}: {error['message']})" if error.get('message') else f' ({code})'
    return AzureError(f'{what}{detail}', status=404, code=code, request_id=request_id)


# ---------------------------------------------------------------------------------------------------
# the manager

class AzureImageInfo:
    """Carries out one azure_image_info task."""

    def __init__(self, params: dict[str, t.Any], arm: t.Any) -> None:
        """PARAMS are the module's; ARM is the ArmSession to read through."""
        self.params = params
        self.arm = arm

    def run(self) -> dict[str, t.Any]:
        """Return the result dict."""
        params = self.params
        if params['marketplace']:
            return {'changed': False, 'marketplace': self.marketplace(params['marketplace'])}
        if params['gallery']:
            definitions, versions = self.gallery(params['resource_group'], params['gallery'])
            return {'changed': False, 'gallery_images': definitions, 'gallery_image_versions': versions}
        return {'changed': False, 'images': self.images()}

    # --- managed images

    def images(self) -> list[dict[str, t.Any]]:
        arm, params = self.arm, self.params
        group = params['resource_group']
        if params['name']:
            body = arm.get(self.compute_id(group, 'images', params['name']), API_COMPUTE)
            bodies = [body] if body else []
        elif group:
            bodies = arm.list(f'/subscriptions/{arm.subscription_id}/resourceGroups/{segment(group)}'
                              '/providers/Microsoft.Compute/images', API_COMPUTE)
        else:
            bodies = arm.list(f'/subscriptions/{arm.subscription_id}/providers/Microsoft.Compute/images', API_COMPUTE)
        found = [image_info(body) for body in bodies]
        return sorted(found, key=lambda image: (str(image['resource_group']).lower(), str(image['name']).lower()))

    # --- galleries

    def compute_id(self, group: str, *type_names: str) -> str:
        path = f'/subscriptions/{self.arm.subscription_id}/resourceGroups/{segment(group)}/providers/Microsoft.Compute'
        for kind, name in zip(type_names[::2], type_names[1::2]):
            path += f'/{kind}/{segment(name)}'
        return path

    def must_get(self, path: str, what: str) -> dict[str, t.Any]:
        """Return the resource at PATH; raise a clear error naming WHAT when it does not exist."""
        response = self.arm.call('GET', path, API_GALLERY, allow=(404,))
        if response.status == 404:
            raise not_found_error(what, response.body, response.headers.get('x-ms-request-id'))
        return response.body

    def gallery(self, group: str, gallery: str) -> tuple[list[dict[str, t.Any]], list[dict[str, t.Any]]]:
        params, arm = self.params, self.arm
        gallery_path = self.compute_id(group, 'galleries', gallery)
        self.must_get(gallery_path, f'gallery {gallery} not found in resource group {group}')
        if params['gallery_image']:
            bodies = [self.must_get(f"{gallery_path}/images/{segment(params['gallery_image'])}",
                                    f"image definition {params['gallery_image']} not found in gallery {gallery} "
                                    f"(resource group {group})")]
        else:
            bodies = arm.list(f'{gallery_path}/images', API_GALLERY)
        definitions = sorted((gallery_image_info(body, gallery, group) for body in bodies), key=lambda item: str(item['name']).lower())
        versions = []
        for definition in definitions:
            versions.extend(self.versions(f"{gallery_path}/images/{segment(definition['name'])}", definition))
        return definitions, versions

    def versions(self, image_path: str, definition: dict[str, t.Any]) -> list[dict[str, t.Any]]:
        """Return the selected versions of one image definition, sorted by version number."""
        arm = self.arm
        wanted = self.params['version']
        with_replication = self.params['replication_status']
        expand = {'$expand': 'ReplicationStatus'} if with_replication else None
        if wanted and wanted != 'latest':
            body = arm.get(f'{image_path}/versions/{segment(wanted)}', API_GALLERY, query=expand)
            bodies = [body] if body else []
        else:
            bodies = arm.list(f'{image_path}/versions', API_GALLERY)
            if wanted == 'latest':
                latest = latest_version(bodies)
                bodies = [latest] if latest else []
            if with_replication:  # the list operation has no $expand: read each version with its status
                bodies = [arm.get(f"{image_path}/versions/{segment(body['name'])}", API_GALLERY, query=expand) for body in bodies]
                bodies = [body for body in bodies if body]  # deleted since the list
        found = [gallery_version_info(body, definition, with_replication) for body in bodies]
        return sorted(found, key=lambda item: version_key(item['name'] or ''))

    # --- Marketplace

    def marketplace(self, marketplace: dict[str, t.Any]) -> list[dict[str, t.Any]]:
        arm = self.arm
        depth = marketplace_depth(marketplace)
        if depth < 4:
            return marketplace_entries(self.marketplace_list(marketplace, depth), marketplace, depth)
        if marketplace['version'] == 'latest':
            versions = marketplace_entries(self.marketplace_list(marketplace, 3), marketplace, 3)
            if not versions:
                return []
            marketplace = dict(marketplace, version=versions[-1]['version'])
        body = arm.get(marketplace_path(arm.subscription_id, marketplace, 4), API_COMPUTE)
        return [marketplace_image_info(body, marketplace)] if body else []

    def marketplace_list(self, marketplace: dict[str, t.Any], depth: int) -> list[dict[str, t.Any]]:
        """Return the items of the Marketplace list at DEPTH; raise a clear error when its parent does not exist."""
        response = self.arm.call('GET', marketplace_path(self.arm.subscription_id, marketplace, depth), API_COMPUTE, allow=(404,))
        if response.status == 404:
            names = marketplace_names(marketplace, depth)
            what = ' '.join(f'{key} {names[key]}' for key in MARKETPLACE_LEVELS if key in names)
            raise not_found_error(f"Marketplace {what} not found in location {marketplace['location']}", response.body,
                                  response.headers.get('x-ms-request-id'))
        body = response.body
        return body.get('value', []) if isinstance(body, dict) else list(body or [])


def main() -> None:
    """Module entry point."""
    module = AnsibleModule(
        argument_spec=dict(
            AZURE_AUTH_SPEC,
            resource_group=dict(type='str'),
            name=dict(type='str'),
            gallery=dict(type='str'),
            gallery_image=dict(type='str'),
            version=dict(type='str'),
            replication_status=dict(type='bool', default=True),
            marketplace=dict(type='dict', options=dict(
                location=dict(type='str', required=True),
                publisher=dict(type='str'),
                offer=dict(type='str'),
                sku=dict(type='str'),
                version=dict(type='str'),
            ), required_by=dict(offer='publisher', sku='offer', version='sku')),
        ),
        mutually_exclusive=[('marketplace', 'gallery'), ('marketplace', 'name'), ('marketplace', 'resource_group'),
                            ('gallery', 'name')],
        required_by=dict(name='resource_group', gallery='resource_group', gallery_image='gallery', version='gallery'),
        supports_check_mode=True,
    )
    if AZURE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('azure-identity'), exception=AZURE_IMPORT_ERROR)
    try:
        result = AzureImageInfo(module.params, ArmSession(module.params)).run()
    except AzureError as err:
        module.fail_json(msg=err.message, **err.to_result())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
