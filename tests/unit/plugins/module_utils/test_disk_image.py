# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finding the Linux root in a disk image: partition tables read here against sfdisk's reading of the
same real files, what a region is taken for, and the clean-up of a real read-only mount."""
from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils import _disk_image as disk_image

MIB = 1024 * 1024


def run_command(args, **_kwargs):
    """The modules' run_command, as a real process."""
    completed = subprocess.run(args, capture_output=True, text=True, check=False)
    return completed.returncode, completed.stdout, completed.stderr


def partitioned(path: pathlib.Path, size_mib: int, script: str) -> pathlib.Path:
    """A sparse disk file of SIZE_MIB with the partition table sfdisk makes from SCRIPT."""
    with open(path, 'wb') as handle:
        handle.truncate(size_mib * MIB)
    subprocess.run(['sfdisk', '-q', '--no-reread', '--no-tell-kernel', str(path)], input=script, text=True, check=True,
                   capture_output=True)
    return path


def sfdisk_partitions(path: pathlib.Path) -> list[tuple[int, int, int]]:
    """(number, byte offset, byte size) of each partition as ``sfdisk --json`` reads PATH."""
    import json  # pylint: disable=import-outside-toplevel
    table = json.loads(subprocess.run(['sfdisk', '--json', str(path)], capture_output=True, text=True, check=True).stdout)
    sector = table['partitiontable'].get('sectorsize', 512)
    found = []
    for part in table['partitiontable']['partitions']:
        number = int(part['node'][len(str(path)):])
        found.append((number, part['start'] * sector, part['size'] * sector))
    return found


TABLES = {
    'gpt': ('label: gpt\nsize=8M, type=uefi\nsize=1M, type=21686148-6449-6E6F-744E-656564454649\n'
            'size=20M, type=linux\ntype=swap\n'),
    'gpt-gap': 'label: gpt\nstart=4096, size=8M, type=linux\nstart=40960, size=4M, type=linux\n',
    'mbr': 'label: dos\nsize=8M, type=ef\nsize=16M, type=83\n',
    'mbr-logical': 'label: dos\nsize=4M, type=83\ntype=5\nsize=6M, type=83\nsize=5M, type=82\nsize=3M, type=8e\n',
}


@pytest.mark.parametrize('name', sorted(TABLES))
def test_partition_tables_are_read_as_sfdisk_reads_them(tmp_path, name):
    disk = partitioned(tmp_path / 'disk.raw', 64, TABLES[name])
    label, partitions = disk_image.read_partitions(str(disk))
    assert label == name.split('-', maxsplit=1)[0]
    expected = [p for p in sfdisk_partitions(disk) if not (name == 'mbr-logical' and p[0] == 2)]  # 2: the extended container
    assert [(p.number, p.offset, p.size) for p in partitions] == expected


def test_partition_types_are_named(tmp_path):
    _label, gpt = disk_image.read_partitions(str(partitioned(tmp_path / 'gpt.raw', 64, TABLES['gpt'])))
    assert [p.type for p in gpt] == ['EFI system partition', 'BIOS boot partition',
                                     'Linux filesystem', 'Linux swap']
    _label, mbr = disk_image.read_partitions(str(partitioned(tmp_path / 'mbr.raw', 64, TABLES['mbr-logical'])))
    assert [p.type for p in mbr] == ['Linux', 'Linux', 'Linux swap', 'Linux LVM']
    assert [p.type in disk_image.NOT_A_ROOT_TYPES for p in gpt] == [True, True, False, True]


def test_a_file_system_on_the_whole_disk_is_one_region(tmp_path):
    ext4 = tmp_path / 'ext4.raw'
    subprocess.run(['mkfs.ext4', '-q', '-F', str(ext4), '16M'], check=True)
    assert disk_image.read_partitions(str(ext4)) == ('none', [disk_image.Partition(None, 0, 16 * MIB)])
    # a FAT boot sector ends in 55 AA like an MBR, but its "slots" are boot code
    fat = tmp_path / 'fat.raw'
    subprocess.run(['mkfs.vfat', '-C', str(fat), str(16 * 1024)], check=True, capture_output=True)
    assert disk_image.read_partitions(str(fat)) == ('none', [disk_image.Partition(None, 0, 16 * MIB)])


def test_an_empty_gpt_has_no_partitions(tmp_path):
    disk = partitioned(tmp_path / 'disk.raw', 16, 'label: gpt\n')
    assert disk_image.read_partitions(str(disk)) == ('gpt', [])


def test_a_gpt_header_that_lies_is_refused():
    header = bytearray(92)
    header[:8] = disk_image.GPT_SIGNATURE
    header[80:88] = (100000).to_bytes(4, 'little') + (128).to_bytes(4, 'little')
    with pytest.raises(disk_image.ImageRootError, match='implausible GPT header'):
        disk_image.parse_gpt(bytes(header), b'')


def test_logical_partitions_that_loop_end():
    # an EBR whose "next" link points back at itself must not loop forever
    sector = bytearray(512)
    sector[510:512] = disk_image.MBR_SIGNATURE
    sector[446 + 4] = 0x83
    sector[446 + 8:446 + 16] = (63).to_bytes(4, 'little') + (100).to_bytes(4, 'little')
    sector[462 + 4] = 0x05
    sector[462 + 8:462 + 16] = (0).to_bytes(4, 'little') + (200).to_bytes(4, 'little')
    found = disk_image._logical_partitions(lambda offset, length: bytes(sector), 2048)  # pylint: disable=protected-access
    assert found == [disk_image.Partition(5, (2048 + 63) * 512, 100 * 512, 'Linux')]


@pytest.mark.parametrize('fstype, options', [
    ('ext4', 'ro,noload,loop,offset=1048576,sizelimit=2097152'),
    ('ext2', 'ro,loop,offset=1048576,sizelimit=2097152'),
    ('xfs', 'ro,norecovery,loop,offset=1048576,sizelimit=2097152'),
    ('btrfs', 'ro,rescue=nologreplay,loop,offset=1048576,sizelimit=2097152'),
])
def test_mounts_never_replay_a_journal(fstype, options):
    assert disk_image.mount_options(fstype, disk_image.Partition(1, MIB, 2 * MIB)) == options


@pytest.mark.parametrize('candidate, text', [
    (disk_image.Candidate(disk_image.Partition(1, 0, 1, 'EFI system partition'), '', 'skipped'),
     'partition 1 (EFI system partition, skipped)'),
    (disk_image.Candidate(disk_image.Partition(None, 0, 1), '', ''), 'the whole disk (no file system found)'),
    (disk_image.Candidate(disk_image.Partition(3, 0, 1, 'Linux LVM'), 'LVM2_member', disk_image.UNSUPPORTED['LVM2_member']),
     'partition 3 (Linux LVM, LVM2_member, an LVM physical volume (no device-mapper on this host: not mounted))'),
    (disk_image.Candidate(disk_image.Partition(2, 0, 1, 'Linux'), 'ext4', 'no etc/os-release'), 'partition 2 (Linux, ext4, no etc/os-release)'),
])
def test_what_was_found_is_said(candidate, text):
    assert disk_image.describe_candidate(candidate) == text


def test_blkid_names_the_file_system_of_a_region(tmp_path):
    disk = partitioned(tmp_path / 'disk.raw', 48, 'label: gpt\nsize=8M, type=uefi\nsize=16M, type=linux\nsize=8M, type=linux\n')
    _label, (esp, root, empty) = disk_image.read_partitions(str(disk))
    subprocess.run(['mkfs.ext4', '-q', '-F', '-E', f'offset={root.offset}', str(disk), f'{root.size // 1024}k'], check=True)
    subprocess.run(['mkfs.vfat', '--offset', str(esp.offset // 512), str(disk), str(esp.size // 1024)], check=True, capture_output=True)
    assert [disk_image.probe_fstype(run_command, str(disk), p) for p in (esp, root, empty)] == ['vfat', 'ext4', '']


@pytest.mark.parametrize('make, message', [
    (lambda p: None, 'does not exist'),
    (lambda p: p.mkdir(), 'is a directory'),
    (lambda p: p.write_bytes(b'x' * 100), 'only 100 bytes long'),
])
def test_what_is_not_an_image_file_is_refused_first(tmp_path, make, message):
    make(tmp_path / 'image')
    calls = []
    with pytest.raises(disk_image.ImageRootError, match=message):
        with disk_image.image_root(str(tmp_path / 'image'), lambda *a, **k: calls.append(a) or (0, '', ''), str(tmp_path)):
            pass
    assert calls == []


def mounts_below(path: pathlib.Path) -> list[str]:
    with open('/proc/self/mountinfo', encoding='utf-8') as handle:
        return [line.split()[4] for line in handle if line.split()[4].startswith(str(path))]


@pytest.fixture
def gpt_with_root(tmp_path) -> pathlib.Path:
    """A raw GPT disk: an empty ESP, a FAT partition, an ext4 partition without os-release, the ext4 root."""
    tree = tmp_path / 'tree'
    (tree / 'etc').mkdir(parents=True)
    (tree / 'etc/os-release').write_text('ID=debian\n')
    (tree / 'etc/hostname').write_text('web-prod-01\n')
    table = 'label: gpt\nsize=8M, type=uefi\nsize=8M, type=linux\nsize=8M, type=linux\nsize=16M, type=linux\n'
    disk = partitioned(tmp_path / 'disk.raw', 64, table)
    _label, (esp, fat, data, root) = disk_image.read_partitions(str(disk))
    subprocess.run(['mkfs.vfat', '--offset', str(esp.offset // 512), str(disk), str(esp.size // 1024)], check=True, capture_output=True)
    subprocess.run(['mkfs.vfat', '--offset', str(fat.offset // 512), str(disk), str(fat.size // 1024)], check=True, capture_output=True)
    subprocess.run(['mkfs.ext4', '-q', '-F', '-E', f'offset={data.offset}', str(disk), f'{data.size // 1024}k'], check=True)
    subprocess.run(['mkfs.ext4', '-q', '-F', '-E', f'offset={root.offset}', '-d', str(tree), str(disk), f'{root.size // 1024}k'],
                   check=True)
    return disk


@pytest.mark.skipif(os.geteuid() != 0, reason='loop mounts need root')
def test_the_root_is_found_and_everything_is_removed_even_on_an_exception(tmp_path, gpt_with_root):
    work = tmp_path / 'work'
    work.mkdir()
    before = gpt_with_root.read_bytes()
    with pytest.raises(RuntimeError, match='in the middle'):
        with disk_image.image_root(str(gpt_with_root), run_command, str(work)) as root:
            assert root.describe() == {'partition': 4, 'offset': 25 * MIB, 'fstype': 'ext4', 'format': 'raw'}
            assert pathlib.Path(root.path, 'etc/hostname').read_text() == 'web-prod-01\n'
            assert mounts_below(work) == [root.path]
            raise RuntimeError('in the middle')
    assert mounts_below(work) == [] and list(work.iterdir()) == []
    assert subprocess.run(['losetup', '-j', str(gpt_with_root)], capture_output=True, text=True, check=True).stdout == ''
    assert gpt_with_root.read_bytes() == before


@pytest.mark.skipif(os.geteuid() != 0, reason='loop mounts need root')
def test_without_a_root_every_region_is_listed(tmp_path, gpt_with_root):
    work = tmp_path / 'work'
    work.mkdir()
    # a zeroed root partition: nothing is found there
    with open(gpt_with_root, 'r+b') as handle:
        handle.seek(25 * MIB)
        handle.write(bytes(16 * MIB))
    subprocess.run(['qemu-img', 'convert', '-O', 'qcow2', str(gpt_with_root), str(tmp_path / 'disk.qcow2')], check=True)
    for image, fmt in ((gpt_with_root, 'raw'), (tmp_path / 'disk.qcow2', 'qcow2')):
        with pytest.raises(disk_image.ImageRootError) as caught:
            with disk_image.image_root(str(image), run_command, str(work)):
                pass
        message = str(caught.value)
        assert message == (f'no Linux root file system found in {image}: partition 1 (EFI system partition, skipped); '
                           'partition 2 (Linux filesystem, vfat); partition 3 (Linux filesystem, ext4, no etc/os-release); '
                           'partition 4 (Linux filesystem, no file system found)'), fmt
        assert mounts_below(work) == [] and list(work.iterdir()) == []
