# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo VM's recipe: partition table, boot loader configuration, fstab, sudoers, names and inventory."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import demo_vm

MIB_SECTORS = 2048


def test_partition_script_makes_a_gpt_that_sfdisk_reads_back(tmp_path):
    if shutil.which('sfdisk') is None:
        pytest.skip('sfdisk (Debian package fdisk) is not installed')
    disk = tmp_path / 'disk.raw'
    with open(disk, 'wb') as handle:
        handle.truncate(demo_vm.DISK_MIB * demo_vm.MIB)
    subprocess.run(['sfdisk', '--quiet', '--no-reread', '--no-tell-kernel', str(disk)], input=demo_vm.partition_script(), text=True,
                   check=True)
    table = json.loads(subprocess.run(['sfdisk', '--json', str(disk)], capture_output=True, text=True, check=True).stdout)['partitiontable']
    assert (table['label'], table['id']) == ('gpt', demo_vm.DISK_GUID)
    esp, root = table['partitions']
    assert (esp['start'], esp['size'], esp['type'], esp['name']) == (MIB_SECTORS, 64 * MIB_SECTORS, demo_vm.ESP_TYPE, 'EFI system partition')
    assert (root['start'], root['type'], root['uuid']) == (65 * MIB_SECTORS, demo_vm.LINUX_TYPE, demo_vm.ROOT_PART_GUID)
    # the root ends before the backup GPT, on a MiB boundary
    assert root['start'] + root['size'] <= table['lastlba'] + 1
    assert (root['start'] + root['size']) % MIB_SECTORS == 0


def test_grub_config_finds_the_root_by_uuid_and_boots_debians_links_at_once():
    config = demo_vm.grub_config()
    assert f'search --no-floppy --fs-uuid --set=root {demo_vm.ROOT_UUID}' in config
    assert f'linux /vmlinuz root=UUID={demo_vm.ROOT_UUID} ro console=ttyS0' in config
    assert 'initrd /initrd.img' in config
    assert 'set timeout=0' in config
    assert demo_vm.GRUB_MARK in config


def test_fstab_mounts_root_and_esp_by_uuid_and_the_data_disk_by_label_without_blocking_the_boot():
    entries = [line.split() for line in demo_vm.fstab().splitlines() if line and not line.startswith('#')]
    assert entries[0][:3] == [f'UUID={demo_vm.ROOT_UUID}', '/', 'ext4']
    assert entries[1][:3] == ['UUID=1D2E-3F4A', '/boot/efi', 'vfat'] and 'nofail' in entries[1][3].split(',')
    assert entries[2][:3] == ['LABEL=imageprep-data', '/srv/data', 'ext4'] and 'nofail' in entries[2][3].split(',')


@pytest.mark.parametrize(('volume_id', 'spelled'), [('1D2E3F4A', '1D2E-3F4A'), ('00000000', '0000-0000')])
def test_fat_uuid(volume_id, spelled):
    assert demo_vm.fat_uuid(volume_id) == spelled


@pytest.mark.parametrize('volume_id', ['1d2e3f4a', '1D2E-3F4A', '1D2E3F'])
def test_fat_uuid_refuses_other_spellings(volume_id):
    with pytest.raises(demo_vm.DemoVMError, match='volume id'):
        demo_vm.fat_uuid(volume_id)


def test_sudoers_dropin_gives_the_account_passwordless_root():
    assert demo_vm.sudoers_dropin('provision').splitlines()[-1] == 'provision ALL=(ALL) NOPASSWD:ALL'


@pytest.mark.parametrize(('name', 'count', 'names'), [
    ('imageprep-demo', 1, ['imageprep-demo']),
    ('imageprep-demo', 3, ['imageprep-demo-1', 'imageprep-demo-2', 'imageprep-demo-3']),
])
def test_instance_names(name, count, names):
    assert demo_vm.instance_names(name, count) == names


@pytest.mark.parametrize(('name', 'count', 'message'), [('imageprep-demo', 0, 'at least 1'), ('has space', 1, 'domain name'),
                                                        ('-dash-first', 1, 'domain name')])
def test_instance_names_refuse(name, count, message):
    with pytest.raises(demo_vm.DemoVMError, match=message):
        demo_vm.instance_names(name, count)


def test_variant_names_differ_and_do_not_prefix_each_other():
    names = [demo_vm.variant_name(cloud_init, plant) for cloud_init in (True, False) for plant in (True, False)]
    assert len(set(names)) == 4
    # the cache prunes by prefix: no variant's prefix may catch another variant's builds
    assert not any(a != b and b.startswith(a + '-') for a in names for b in names)


def test_without_paths_under_drops_the_directory_and_its_contents_only():
    manifest = [{'path': '/var/lib/cloud/seed/nocloud'}, {'path': '/var/lib/cloud/seed/nocloud/meta-data'},
                {'path': '/var/lib/cloud/seed/nocloud-net'}, {'path': '/var/lib/cloud/instance'}]
    assert demo_vm.without_paths_under(manifest, '/var/lib/cloud/seed/nocloud') == manifest[2:]


def test_inventory_document_lists_every_host_under_all():
    document = json.loads(demo_vm.inventory_document({'imageprep-demo-1': {'ansible_port': 40022}, 'imageprep-demo-2': {'ansible_port': 40023}}))
    assert document == {'all': {'hosts': {'imageprep-demo-1': {'ansible_port': 40022}, 'imageprep-demo-2': {'ansible_port': 40023}}}}


def test_demo_vm_inventory_vars_log_in_as_provision_and_name_the_domain(tmp_path):
    base = demo_vm.DemoDisk(tmp_path / 'cache')
    vm = demo_vm.DemoVM(tmp_path / 'vm', base, name='imageprep-demo')
    vm.port = 40022
    host = vm.inventory_vars()
    assert (host['ansible_host'], host['ansible_port'], host['ansible_user']) == ('127.0.0.1', 40022, 'provision')
    assert host['ansible_ssh_private_key_file'] == str(base.private_key)
    # become is the play's: a host variable would follow the tasks delegated to the hypervisor
    assert 'ansible_become' not in host
    assert host['image_pipeline_domain'] == 'imageprep-demo'
    assert 'StrictHostKeyChecking=no' in host['ansible_ssh_common_args']
    command = vm.ssh_command(['id', '-un'])
    assert 'provision@127.0.0.1' in command and command[command.index('-i') + 1] == str(base.private_key)


def test_progress_lines_carry_the_total_and_the_step_time():
    lines = []
    progress = demo_vm.Progress(lines.append)
    with progress.step('start'):
        pass
    assert lines[0].endswith('] start ...') and lines[1].endswith('start: done (0.0s)')
    assert demo_vm.progress_line(62.25, 'ssh', 61.0) == '[  62.2s] ssh (61.0s)'
