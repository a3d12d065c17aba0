# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""azure_image_info: normalisation of Azure's published example bodies, and the module's decisions.

The example bodies come from the Azure REST API specification's examples, found through
IMAGEPREP_AZURE_REST_EXAMPLES. The module's runs against an ARM server are in tests/azure.
"""
from __future__ import annotations

import copy
import json
import os
import pathlib

import pytest

from ansible.module_utils.testing import patch_module_args

from ansible_collections.imageprep.vm.plugins.module_utils._azure import AzureError, Response
from ansible_collections.imageprep.vm.plugins.modules import azure_image_info as info

IMAGE_GET = 'ComputeRP/stable/2024-11-01/examples/imageExamples/Image_Get.json'
IMAGE_LIST = 'ComputeRP/stable/2024-11-01/examples/imageExamples/Image_ListByResourceGroup.json'
VERSION_GET_REPLICATION = 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImageVersion_Get_WithReplicationStatus.json'
VERSION_GET_VHD = 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImageVersion_Get_WithVhdAsSource.json'
VERSION_CREATE_VM = 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImageVersion_Create_WithVmAsSource.json'
VERSION_LIST = 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImageVersion_ListByGalleryImage.json'
GALLERY_IMAGE_GET = 'GalleryRP/stable/2024-03-03/examples/galleryExamples/GalleryImage_Get.json'
GALLERY_GET = 'GalleryRP/stable/2024-03-03/examples/galleryExamples/Gallery_Get.json'
SUBSCRIPTION = '3b9f6a1e-2c4d-4e8f-9a0b-1c2d3e4f5a6b'


@pytest.fixture(scope='module')
def examples():
    """Return a loader of example files: (relative path) -> parsed JSON."""
    root = os.environ.get('IMAGEPREP_AZURE_REST_EXAMPLES')
    if not root or not os.path.isdir(root):
        pytest.fail('IMAGEPREP_AZURE_REST_EXAMPLES must name the directory of the Azure REST API examples '
                    f'(make sets it); it is {root!r}')

    def load(relpath):
        path = pathlib.Path(root, relpath)
        if not path.is_file():
            pytest.fail(f'{relpath} is missing from {root}')
        return json.loads(path.read_text(encoding='utf-8'))
    return load


def response(example, status='200'):
    return copy.deepcopy(example['responses'][status]['body'])


# ---------------------------------------------------------------------------------------------------
# managed images

def test_image_from_the_published_get_example(examples):
    body = response(examples(IMAGE_GET))
    image = info.image_info(body)
    props = body['properties']
    os_disk = props['storageProfile']['osDisk']
    assert image['id'] == body['id'] and image['name'] == body['name'] and image['location'] == body['location']
    assert image['resource_group'] == examples(IMAGE_GET)['parameters']['resourceGroupName']
    assert (image['os_type'], image['os_state']) == (os_disk['osType'], os_disk['osState'])
    assert image['os_disk']['size_gb'] == os_disk['diskSizeGB']
    assert image['os_disk']['storage_account_type'] == os_disk['storageAccountType']
    # the example sets every kind of source; the managed disk wins, and the id gets the slash the example lacks
    assert image['os_disk']['source'] == '/' + os_disk['managedDisk']['id']
    assert image['os_disk']['source_type'] == 'managed_disk'
    assert [disk['lun'] for disk in image['data_disks']] == [disk['lun'] for disk in props['storageProfile']['dataDisks']]
    assert image['data_disks'][0]['size_gb'] is None  # the example's data disk gives no size
    assert image['provisioning_state'] == props['provisioningState']
    assert image['zone_resilient'] is props['storageProfile']['zoneResilient']
    assert image['tags'] == {} and image['source_virtual_machine'] is None and image['hyper_v_generation'] is None


def test_image_from_a_vm_with_data_disks_sorted_by_lun(examples):
    body = response(examples(IMAGE_GET))
    props = body['properties']
    vm = f'/subscriptions/{SUBSCRIPTION}/resourceGroups/vms/providers/Microsoft.Compute/virtualMachines/web'
    props['sourceVirtualMachine'] = {'id': vm}
    props['hyperVGeneration'] = 'V2'
    body['tags'] = {'role': 'web'}
    first = props['storageProfile']['dataDisks'][0]
    props['storageProfile']['dataDisks'] = [dict(first, lun=3, diskSizeGB=64), {'lun': 0, 'diskSizeGB': 32, 'blobUri': 'https://a/b.vhd'}]
    image = info.image_info(body)
    assert image['source_virtual_machine'] == vm and image['hyper_v_generation'] == 'V2' and image['tags'] == {'role': 'web'}
    assert [(disk['lun'], disk['size_gb'], disk['source_type']) for disk in image['data_disks']] == [
        (0, 32, 'blob'), (3, 64, 'managed_disk')]


@pytest.mark.parametrize('disk, expected', [
    ({'snapshot': {'id': '/s/x'}, 'blobUri': 'https://a/b.vhd'}, ('/s/x', 'snapshot')),
    ({'blobUri': 'https://a/b.vhd'}, ('https://a/b.vhd', 'blob')),
    ({'managedDisk': {'id': 'subscriptions/s/d'}}, ('/subscriptions/s/d', 'managed_disk')),
    ({}, (None, None)),
])
def test_image_disk_source(disk, expected):
    assert info.image_disk_source(disk) == expected


def test_every_listed_image_is_normalised(examples):
    body = response(examples(IMAGE_LIST))
    images = [info.image_info(item) for item in body['value']]
    assert [image['name'] for image in images] == [item['name'] for item in body['value']]
    assert all(image['os_disk']['size_gb'] is None for image in images)  # the list example gives no size


# ---------------------------------------------------------------------------------------------------
# gallery image definitions and versions

def definition(examples, gallery='myGalleryName', group='myResourceGroup'):
    return info.gallery_image_info(response(examples(GALLERY_IMAGE_GET)), gallery, group)


def test_gallery_image_from_the_published_get_example(examples):
    body = response(examples(GALLERY_IMAGE_GET))
    found = info.gallery_image_info(body, 'myGalleryName', 'myResourceGroup')
    props = body['properties']
    assert found['id'] == body['id'] and found['name'] == body['name'] and found['gallery'] == 'myGalleryName'
    assert (found['os_type'], found['os_state'], found['hyper_v_generation']) == (
        props['osType'], props['osState'], props['hyperVGeneration'])
    assert found['identifier'] == props['identifier'] and found['provisioning_state'] == props['provisioningState']


def test_version_with_replication_status(examples):
    example = examples(VERSION_GET_REPLICATION)
    body = response(example)
    parent = definition(examples)
    version = info.gallery_version_info(body, parent, with_replication=True)
    props = body['properties']
    publishing = props['publishingProfile']
    assert version['name'] == example['parameters']['galleryImageVersionName'] == body['name']
    assert (version['gallery'], version['gallery_image']) == (parent['gallery'], parent['name'])
    assert version['published_date'] == publishing['publishedDate'] and version['end_of_life_date'] is None
    assert version['exclude_from_latest'] is False
    assert [(region['name'], region['regional_replica_count'], region['storage_account_type'], region['exclude_from_latest'])
            for region in version['target_regions']] == [
        (region['name'], region['regionalReplicaCount'], region['storageAccountType'], region['excludeFromLatest'])
        for region in publishing['targetRegions']]
    storage = props['storageProfile']
    assert version['storage_profile']['source_id'] == storage['source']['id']
    assert version['storage_profile']['os_disk_image'] == {
        'size_gb': storage['osDiskImage']['sizeInGB'], 'host_caching': storage['osDiskImage']['hostCaching'], 'source': None}
    assert [(disk['lun'], disk['size_gb']) for disk in version['storage_profile']['data_disk_images']] == [
        (disk['lun'], disk['sizeInGB']) for disk in storage['dataDiskImages']]
    status = props['replicationStatus']
    assert version['replication_status']['aggregated_state'] == status['aggregatedState']
    assert version['replication_status']['summary'] == status['summary']
    assert (version['os_type'], version['os_state'], version['hyper_v_generation'], version['identifier']) == (
        parent['os_type'], parent['os_state'], parent['hyper_v_generation'], parent['identifier'])


def test_version_without_replication_status_has_no_such_key(examples):
    body = response(examples(VERSION_GET_REPLICATION))
    assert 'replication_status' not in info.gallery_version_info(body, definition(examples), with_replication=False)


def test_region_without_its_own_counts_takes_the_versions(examples):
    body = response(examples(VERSION_GET_REPLICATION))
    publishing = body['properties']['publishingProfile']
    publishing['replicaCount'] = 3
    publishing['targetRegions'] = [{'name': 'North Europe'}]
    publishing['excludeFromLatest'] = True
    publishing['endOfLifeDate'] = '2030-01-01T00:00:00Z'
    version = info.gallery_version_info(body, definition(examples), with_replication=False)
    assert version['target_regions'] == [{'name': 'North Europe', 'regional_replica_count': 3,
                                          'storage_account_type': publishing['storageAccountType'], 'exclude_from_latest': False}]
    assert version['exclude_from_latest'] is True and version['end_of_life_date'] == '2030-01-01T00:00:00Z'


def test_version_sources_from_a_vm_and_from_blobs(examples):
    vm_body = response(examples(VERSION_CREATE_VM), '200')
    vm_version = info.gallery_version_info(vm_body, definition(examples), with_replication=False)
    assert vm_version['storage_profile']['source_id'] == vm_body['properties']['storageProfile']['source']['virtualMachineId']
    vhd_body = response(examples(VERSION_GET_VHD))
    vhd_version = info.gallery_version_info(vhd_body, definition(examples), with_replication=False)
    storage = vhd_body['properties']['storageProfile']
    assert vhd_version['storage_profile']['source_id'] is None
    assert vhd_version['storage_profile']['os_disk_image']['source'] == storage['osDiskImage']['source']['uri']
    assert vhd_version['storage_profile']['data_disk_images'][0]['source'] == storage['dataDiskImages'][0]['source']['uri']


def test_listed_versions_are_normalised(examples):
    body = response(examples(VERSION_LIST))
    versions = [info.gallery_version_info(item, definition(examples), False) for item in body['value']]
    assert [version['name'] for version in versions] == [item['name'] for item in body['value']]


@pytest.mark.parametrize('names, expected', [
    (['1.0.0', '1.10.0', '1.9.0', '1.2.0'], ['1.0.0', '1.2.0', '1.9.0', '1.10.0']),
    (['2.0.0', '10.0.0', '9.99.99'], ['2.0.0', '9.99.99', '10.0.0']),
    (['22.04.202401010', '22.04.202312120', '20.04.202401010'], ['20.04.202401010', '22.04.202312120', '22.04.202401010']),
    (['1.0.0', '1.0.0-beta', '0.9.9'], ['0.9.9', '1.0.0', '1.0.0-beta']),
])
def test_versions_sort_numerically(names, expected):
    assert sorted(names, key=info.version_key) == expected


def versions_named(examples, spec):
    """Return version bodies (the list example's item) named and flagged by SPEC: [(name, excluded), ...]."""
    item = response(examples(VERSION_LIST))['value'][0]
    bodies = []
    for name, excluded in spec:
        body = copy.deepcopy(item)
        body['name'] = name
        body['properties']['publishingProfile']['excludeFromLatest'] = excluded
        bodies.append(body)
    return bodies


@pytest.mark.parametrize('spec, expected', [
    ([('1.0.0', False), ('1.10.0', False), ('1.9.0', False)], '1.10.0'),
    ([('1.0.0', False), ('1.10.0', True), ('1.9.0', False)], '1.9.0'),
    ([('1.0.0', True)], None),
    ([], None),
])
def test_latest_is_the_highest_not_excluded(examples, spec, expected):
    latest = info.latest_version(versions_named(examples, spec))
    assert (latest['name'] if latest else None) == expected


# ---------------------------------------------------------------------------------------------------
# Marketplace

@pytest.mark.parametrize('given, depth, tail', [
    ({}, 0, '/locations/westus/publishers'),
    ({'publisher': 'Debian'}, 1, '/publishers/Debian/artifacttypes/vmimage/offers'),
    ({'publisher': 'Debian', 'offer': 'debian-12'}, 2, '/offers/debian-12/skus'),
    ({'publisher': 'Debian', 'offer': 'debian-12', 'sku': '12'}, 3, '/skus/12/versions'),
    ({'publisher': 'Debian', 'offer': 'debian-12', 'sku': '12', 'version': '0.1'}, 4, '/skus/12/versions/0.1'),
])
def test_marketplace_levels_and_paths(given, depth, tail):
    marketplace = dict({'location': 'westus', 'publisher': None, 'offer': None, 'sku': None, 'version': None}, **given)
    assert info.marketplace_depth(marketplace) == depth
    path = info.marketplace_path(SUBSCRIPTION, marketplace, depth)
    assert path.startswith(f'/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/locations/westus/publishers')
    assert path.endswith(tail)


def test_marketplace_names_are_escaped():
    marketplace = {'location': 'west us', 'publisher': 'a/b', 'offer': None, 'sku': None, 'version': None}
    assert info.marketplace_path(SUBSCRIPTION, marketplace, 1).endswith('/locations/west%20us/publishers/a%2Fb/artifacttypes/vmimage/offers')


def test_marketplace_versions_sorted_with_urns():
    marketplace = {'location': 'westus', 'publisher': 'Canonical', 'offer': 'ubuntu-24_04-lts', 'sku': 'server', 'version': None}
    items = [{'name': name, 'location': 'westus', 'id': f'/x/{name}'} for name in ('24.04.202410010', '24.04.202409270', '24.04.202501140')]
    entries = info.marketplace_entries(items, marketplace, 3)
    assert [entry['version'] for entry in entries] == ['24.04.202409270', '24.04.202410010', '24.04.202501140']
    assert entries[0]['urn'] == 'Canonical:ubuntu-24_04-lts:server:24.04.202409270'
    assert entries[0]['id'] == '/x/24.04.202409270' and entries[0]['sku'] == 'server'


def test_marketplace_offers_have_no_urn():
    marketplace = {'location': 'westus', 'publisher': 'Debian', 'offer': None, 'sku': None, 'version': None}
    entries = info.marketplace_entries([{'name': 'debian-12'}, {'name': 'Debian-11'}], marketplace, 1)
    assert entries == [{'location': 'westus', 'publisher': 'Debian', 'offer': 'Debian-11', 'id': None},
                       {'location': 'westus', 'publisher': 'Debian', 'offer': 'debian-12', 'id': None}]


def test_marketplace_image_keeps_plan_and_deprecation():
    body = {'name': '0.20250101.1', 'id': '/x', 'location': 'westus', 'properties': {
        'plan': {'publisher': 'p', 'name': 'n', 'product': 'q'}, 'osDiskImage': {'operatingSystem': 'Linux'},
        'dataDiskImages': [{'lun': 2}], 'hyperVGeneration': 'V2', 'architecture': 'x64',
        'imageDeprecationStatus': {'imageState': 'ScheduledForDeprecation', 'scheduledDeprecationTime': '2030-01-01T00:00:00+00:00',
                                   'alternativeOption': {'type': 'Offer', 'value': 'debian-13'}}}}
    marketplace = {'location': 'westus', 'publisher': 'Debian', 'offer': 'debian-12', 'sku': '12-gen2', 'version': 'latest'}
    image = info.marketplace_image_info(body, marketplace)
    assert image['urn'] == 'Debian:debian-12:12-gen2:0.20250101.1' and image['version'] == '0.20250101.1'
    assert (image['os_type'], image['hyper_v_generation'], image['architecture']) == ('Linux', 'V2', 'x64')
    assert image['plan'] == body['properties']['plan'] and image['data_disk_images'] == [{'lun': 2}]
    assert image['image_deprecation_status']['image_state'] == 'ScheduledForDeprecation'
    del body['properties']['imageDeprecationStatus'], body['properties']['plan']
    image = info.marketplace_image_info(body, marketplace)
    assert 'image_deprecation_status' not in image and image['plan'] is None


# ---------------------------------------------------------------------------------------------------
# the manager, on a stand-in for ArmSession answering from the examples

class FakeArm:
    """Answers get/list/call from a dict of ARM paths (lower case) to bodies, as ArmSession does; records calls."""

    def __init__(self, resources):
        self.subscription_id = SUBSCRIPTION
        self.resources = {path.lower(): body for path, body in resources.items()}
        self.calls = []

    def get(self, path, api_version, query=None):
        self.calls.append(('get', path, query))
        return copy.deepcopy(self.resources.get(path.lower()))

    def list(self, path, api_version, query=None):
        self.calls.append(('list', path, query))
        return copy.deepcopy(self.resources.get(path.lower(), {'value': []})['value'])

    def call(self, method, path, api_version, allow=()):
        self.calls.append(('call', path, None))
        body = self.resources.get(path.lower())
        if body is None:
            return info_response(404, {'error': {'code': 'ResourceNotFound', 'message': f'{path} not found'}})
        return info_response(200, copy.deepcopy(body))


def info_response(status, body):
    return Response(status, {'x-ms-request-id': 'r1'}, body)


GROUP = f'/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Compute'
BASE_PARAMS = {'resource_group': None, 'name': None, 'gallery': None, 'gallery_image': None, 'version': None,
               'replication_status': True, 'marketplace': None}


@pytest.fixture
def gallery_arm(examples):
    """A gallery 'g' with definition 'web' (versions 1.2.0, 1.10.0 (excluded from latest), 1.9.0) and 'empty'."""
    definition_body = response(examples(GALLERY_IMAGE_GET))
    with_status = response(examples(VERSION_GET_REPLICATION))
    listed = response(examples(VERSION_LIST))['value'][0]
    resources = {f'{GROUP}/galleries/g': response(examples(GALLERY_GET)),
                 f'{GROUP}/galleries/g/images': {'value': [dict(definition_body, name='web'), dict(definition_body, name='empty')]},
                 f'{GROUP}/galleries/g/images/web': dict(definition_body, name='web'),
                 f'{GROUP}/galleries/g/images/empty': dict(definition_body, name='empty')}
    versions = []
    for name, excluded in (('1.2.0', False), ('1.10.0', True), ('1.9.0', False)):
        body = copy.deepcopy(listed)
        body['name'] = name
        body['properties']['publishingProfile']['excludeFromLatest'] = excluded
        versions.append(body)
        resources[f'{GROUP}/galleries/g/images/web/versions/{name}'] = dict(copy.deepcopy(with_status), name=name)
    resources[f'{GROUP}/galleries/g/images/web/versions'] = {'value': versions}
    return FakeArm(resources)


def test_gallery_lists_every_definition_and_its_versions_sorted(gallery_arm):
    result = info.AzureImageInfo(dict(BASE_PARAMS, resource_group='rg', gallery='g'), gallery_arm).run()
    assert set(result) == {'changed', 'gallery_images', 'gallery_image_versions'} and result['changed'] is False
    assert [item['name'] for item in result['gallery_images']] == ['empty', 'web']
    assert [(item['gallery_image'], item['name']) for item in result['gallery_image_versions']] == [
        ('web', '1.2.0'), ('web', '1.9.0'), ('web', '1.10.0')]
    # each version read again with its replication status, as the list operation has no $expand
    expanded = [call for call in gallery_arm.calls if call[2] == {'$expand': 'ReplicationStatus'}]
    assert len(expanded) == 3
    assert all(item['replication_status']['aggregated_state'] for item in result['gallery_image_versions'])


def test_gallery_latest_skips_excluded_versions(gallery_arm):
    params = dict(BASE_PARAMS, resource_group='rg', gallery='g', gallery_image='web', version='latest')
    result = info.AzureImageInfo(params, gallery_arm).run()
    assert [item['name'] for item in result['gallery_image_versions']] == ['1.9.0']


def test_gallery_without_replication_status_reads_only_the_lists(gallery_arm):
    params = dict(BASE_PARAMS, resource_group='rg', gallery='g', gallery_image='web', replication_status=False)
    result = info.AzureImageInfo(params, gallery_arm).run()
    assert [item['name'] for item in result['gallery_image_versions']] == ['1.2.0', '1.9.0', '1.10.0']
    assert not [call for call in gallery_arm.calls if call[2]]
    assert all('replication_status' not in item for item in result['gallery_image_versions'])


@pytest.mark.parametrize('gallery_image, version, expected', [
    ('web', '1.9.0', ['1.9.0']), ('web', '3.0.0', []), ('empty', None, []), ('empty', 'latest', []),
])
def test_gallery_version_selection(gallery_arm, gallery_image, version, expected):
    params = dict(BASE_PARAMS, resource_group='rg', gallery='g', gallery_image=gallery_image, version=version)
    result = info.AzureImageInfo(params, gallery_arm).run()
    assert [item['name'] for item in result['gallery_image_versions']] == expected
    assert [item['name'] for item in result['gallery_images']] == [gallery_image]


@pytest.mark.parametrize('params, message', [
    ({'gallery': 'nope'}, 'gallery nope not found in resource group rg (ResourceNotFound'),
    ({'gallery': 'g', 'gallery_image': 'nope'}, 'image definition nope not found in gallery g (resource group rg)'),
])
def test_unknown_gallery_or_definition_is_an_error(gallery_arm, params, message):
    with pytest.raises(AzureError, match=message.replace('(', r'\(').replace(')', r'\)')) as caught:
        info.AzureImageInfo(dict(BASE_PARAMS, resource_group='rg', **params), gallery_arm).run()
    assert caught.value.status == 404 and caught.value.code == 'ResourceNotFound'


def test_managed_images_by_name_group_and_subscription(examples):
    body = response(examples(IMAGE_GET))
    other = dict(response(examples(IMAGE_GET)), name='aaa', id=f'{GROUP}/images/aaa'.replace('/rg/', '/other/'))
    arm = FakeArm({f'{GROUP}/images/myImage': body,
                   f'{GROUP}/images': {'value': [body]},
                   f'/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/images': {'value': [body, other]}})
    by_name = info.AzureImageInfo(dict(BASE_PARAMS, resource_group='rg', name='myImage'), arm).run()
    assert set(by_name) == {'changed', 'images'} and [item['name'] for item in by_name['images']] == ['myImage']
    assert info.AzureImageInfo(dict(BASE_PARAMS, resource_group='rg', name='none'), arm).run()['images'] == []
    assert [item['name'] for item in info.AzureImageInfo(dict(BASE_PARAMS, resource_group='rg'), arm).run()['images']] == ['myImage']
    everything = info.AzureImageInfo(dict(BASE_PARAMS), arm).run()['images']
    assert [(item['resource_group'], item['name']) for item in everything] == [('myResourceGroup', 'myImage'), ('other', 'aaa')]


def marketplace_arm():
    base = f'/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/locations/westus/publishers'
    skus = f'{base}/Debian/artifacttypes/vmimage/offers/debian-12/skus'
    versions = ['0.20250101.1000', '0.20241201.900', '0.20250201.1100']
    return FakeArm({
        base: [{'name': 'Debian', 'location': 'westus', 'id': 'p1'}, {'name': 'Canonical', 'location': 'westus', 'id': 'p2'}],
        f'{skus}/12-gen2/versions': [{'name': name, 'location': 'westus', 'id': f'/v/{name}'} for name in versions],
        f'{skus}/12-gen2/versions/0.20250201.1100': {'name': '0.20250201.1100', 'location': 'westus', 'id': '/v/latest',
                                                     'properties': {'osDiskImage': {'operatingSystem': 'Linux'},
                                                                    'hyperVGeneration': 'V2', 'architecture': 'x64'}},
    })


def test_marketplace_lists_publishers_and_resolves_latest():
    arm = marketplace_arm()
    mp = {'location': 'westus', 'publisher': None, 'offer': None, 'sku': None, 'version': None}
    result = info.AzureImageInfo(dict(BASE_PARAMS, marketplace=mp), arm).run()
    assert set(result) == {'changed', 'marketplace'}
    assert [entry['publisher'] for entry in result['marketplace']] == ['Canonical', 'Debian']
    mp = dict(mp, publisher='Debian', offer='debian-12', sku='12-gen2', version='latest')
    image = info.AzureImageInfo(dict(BASE_PARAMS, marketplace=mp), arm).run()['marketplace']
    assert [entry['urn'] for entry in image] == ['Debian:debian-12:12-gen2:0.20250201.1100']
    assert image[0]['os_type'] == 'Linux'


def test_marketplace_unknown_publisher_is_an_error():
    mp = {'location': 'westus', 'publisher': 'Nobody', 'offer': None, 'sku': None, 'version': None}
    with pytest.raises(AzureError, match='Marketplace publisher Nobody not found in location westus'):
        info.AzureImageInfo(dict(BASE_PARAMS, marketplace=mp), marketplace_arm()).run()


def test_marketplace_unknown_version_is_empty():
    mp = {'location': 'westus', 'publisher': 'Debian', 'offer': 'debian-12', 'sku': '12-gen2', 'version': '9.9'}
    assert info.AzureImageInfo(dict(BASE_PARAMS, marketplace=mp), marketplace_arm()).run()['marketplace'] == []


# ---------------------------------------------------------------------------------------------------
# main(): arguments, errors

def run_module(args, capsys):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            info.main()
    return json.loads(capsys.readouterr().out)


class NoArm:
    def __init__(self, params):
        raise AssertionError('the arguments should have been refused before any Azure call')


@pytest.mark.parametrize('args, message', [
    ({'gallery': 'g'}, 'missing parameter(s) required by \'gallery\': resource_group'),
    ({'name': 'i'}, 'missing parameter(s) required by \'name\': resource_group'),
    ({'gallery_image': 'web', 'resource_group': 'rg'}, 'missing parameter(s) required by \'gallery_image\': gallery'),
    ({'version': 'latest', 'resource_group': 'rg'}, 'missing parameter(s) required by \'version\': gallery'),
    ({'gallery': 'g', 'name': 'i', 'resource_group': 'rg'}, 'mutually exclusive: gallery|name'),
    ({'marketplace': {'location': 'westus'}, 'gallery': 'g', 'resource_group': 'rg'}, 'mutually exclusive: marketplace|gallery'),
    ({'marketplace': {'publisher': 'Debian'}}, 'missing required arguments: location'),
    ({'marketplace': {'location': 'westus', 'sku': '12'}}, "missing parameter(s) required by 'sku': offer"),
    ({'replication_status': 'maybe', 'gallery': 'g', 'resource_group': 'rg'}, 'replication_status'),
])
def test_bad_arguments_fail_before_any_azure_call(args, message, capsys, monkeypatch):
    monkeypatch.setattr(info, 'ArmSession', NoArm)
    result = run_module(args, capsys)
    assert result['failed'] and message in result['msg'], result


def test_azure_errors_become_a_failure_with_their_data(capsys, monkeypatch):
    def failing(params):
        raise AzureError('GET /x: AuthorizationFailed: no access', status=403, code='AuthorizationFailed', request_id='r9')
    monkeypatch.setattr(info, 'ArmSession', failing)
    result = run_module({'resource_group': 'rg'}, capsys)
    assert result['failed'] and result['msg'] == 'GET /x: AuthorizationFailed: no access'
    assert result['azure_error'] == {'status': 403, 'code': 'AuthorizationFailed', 'request_id': 'r9'}


def test_missing_sdk_names_the_library_and_passes_the_import_traceback(monkeypatch):
    failures = []

    def fail_json(self, msg, **kwargs):
        failures.append(dict(kwargs, msg=msg))
        raise SystemExit(1)
    monkeypatch.setattr(info, 'AZURE_IMPORT_ERROR', 'Traceback: No module named azure.identity')
    monkeypatch.setattr(info, 'ArmSession', NoArm)
    monkeypatch.setattr(info.AnsibleModule, 'fail_json', fail_json)
    with patch_module_args({}):
        with pytest.raises(SystemExit):
            info.main()
    assert 'azure-identity' in failures[0]['msg']
    assert failures[0]['exception'] == 'Traceback: No module named azure.identity'


def test_check_mode_reads_like_a_normal_run(capsys, monkeypatch, gallery_arm):
    monkeypatch.setattr(info, 'ArmSession', lambda params: gallery_arm)
    result = run_module({'resource_group': 'rg', 'gallery': 'g', 'gallery_image': 'web', 'version': 'latest', '_ansible_check_mode': True},
                        capsys)
    assert result['changed'] is False and [item['name'] for item in result['gallery_image_versions']] == ['1.9.0']
