# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""linux_residue_info with ``image:`` on real disk image files.

The planted Debian 12 guest root, in a GPT disk with an EFI system partition, as a qcow2
overlay on a qcow2 base: the audit of the image finds exactly what the audit of the root
directory finds, and the same identity. Whole-disk ext4 file systems (one whose journal needs
recovery) in raw, vpc, vhdx and vmdk; disks without a Linux root; images a running QEMU holds;
a caller without root privileges. Every time: the image files are byte for byte unchanged,
nothing is left mounted, no loop device is left, the temporary directory is empty.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import tempfile
import time
import typing as t

import ansible
import pytest

from conftest import MIB, PlantedDisk, gpt_disk, playbook
from module_runs import run_module
import plant_used_vm


def sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(4 * MIB), b''):
            digest.update(chunk)
    return digest.hexdigest()


def leftovers(scratch: pathlib.Path) -> list[str]:
    """Mounts below SCRATCH and loop devices on files below it: what an audit must never leave."""
    found = []
    with open('/proc/self/mountinfo', encoding='utf-8') as handle:
        found += [f'mount {line.split()[4]}' for line in handle if line.split()[4].startswith(str(scratch))]
    loops = subprocess.run(['losetup', '--list', '--noheadings', '--output', 'NAME,BACK-FILE'], capture_output=True, text=True,
                           check=True).stdout
    found += [f'loop {line}' for line in loops.splitlines() if str(scratch) in line]
    return found


class Audit(t.NamedTuple):
    result: dict[str, t.Any]
    tmpdir: pathlib.Path


def audit_image(image: pathlib.Path, scratch: pathlib.Path, **args: t.Any) -> Audit:
    """Run the module on IMAGE with a fresh tmpdir; prove the image unchanged and nothing left behind."""
    tmpdir = pathlib.Path(tempfile.mkdtemp(prefix='tmp-', dir=scratch))
    chain = [image] + ([pathlib.Path(args.pop('backing'))] if 'backing' in args else [])
    before = {p: sha256(p) for p in chain}
    result = run_module('linux_residue_info', dict(args, image=str(image), tmpdir=str(tmpdir)), scratch / 'runs')
    assert {p: sha256(p) for p in chain} == before, 'the image was written'
    assert leftovers(scratch) == []
    assert list(tmpdir.iterdir()) == [], 'temporary files were left'
    tmpdir.rmdir()
    return Audit(result, tmpdir)


def comparable(result: dict[str, t.Any]) -> dict[str, t.Any]:
    return {k: result[k] for k in ('clean', 'findings', 'counts', 'categories', 'os_family', 'distribution', 'identity')}


def test_a_gpt_qcow2_with_a_backing_file_is_audited_like_its_root(planted_disk: PlantedDisk) -> None:
    disk = planted_disk
    directory = run_module('linux_residue_info', {'root': str(disk.root)}, disk.scratch / 'runs')
    assert not directory.get('failed'), directory
    started = time.monotonic()
    image = audit_image(disk.overlay, disk.scratch, backing=disk.base).result
    seconds = time.monotonic() - started
    assert not image.get('failed'), image
    assert image['image_root'] == {'partition': 2, 'offset': disk.root_offset, 'fstype': 'ext4', 'format': 'qcow2'}
    assert comparable(image) == comparable(directory)
    # what the planter put there is what the audit reports
    assert not image['clean'] and image['counts']['ssh_host_keys'] >= 6
    found = {(f['category'], f['path']) for f in image['findings']}
    assert ('hostname', '/etc/hostname') in found and ('machine_id', '/etc/machine-id') in found
    identity = image['identity']
    assert identity['hostname'] == plant_used_vm.HOSTNAME
    assert identity['machine_id'] == (disk.root / 'etc/machine-id').read_text().strip()
    assert {k['path'] for k in identity['ssh_host_keys']} == {f'/etc/ssh/{p.name}' for p in disk.root.glob('etc/ssh/ssh_host_*_key.pub')}
    for key in identity['ssh_host_keys']:
        printed = subprocess.run(['ssh-keygen', '-l', '-f', str(disk.root / key['path'].lstrip('/'))], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
        assert key['fingerprint'] == printed
    assert {plant_used_vm.PROVISIONED_USER, plant_used_vm.PRODUCTION_USER} <= {a['name'] for a in identity['accounts']}
    print(f'audit of the {disk.overlay.stat().st_size // MIB} MiB overlay chain ({disk.base.stat().st_size // MIB} MiB base): {seconds:.1f} s')


def test_the_raw_gpt_disk_is_read_in_place(planted_disk: PlantedDisk) -> None:
    disk = planted_disk
    image = audit_image(disk.raw, disk.scratch).result
    assert not image.get('failed'), image
    assert image['image_root'] == {'partition': 2, 'offset': disk.root_offset, 'fstype': 'ext4', 'format': 'raw'}
    assert image['identity']['hostname'] == plant_used_vm.HOSTNAME


def test_a_playbook_audits_an_image_in_check_mode_and_with_the_remote_tmp(planted_disk: PlantedDisk) -> None:
    disk = planted_disk
    results = disk.scratch / 'playbook-results.json'
    before = sha256(disk.base)
    playbook('-i', 'localhost,', '-c', 'local', '-e', 'ansible_python_interpreter=/usr/bin/python3',
             '-e', f'__image={disk.base}', '-e', f'__results={results}', 'audit_image.yml')
    audit = json.loads(results.read_text(encoding='utf-8'))['audit']
    assert audit['identity']['hostname'] == plant_used_vm.HOSTNAME
    assert sha256(disk.base) == before
    assert leftovers(disk.scratch) == []
    # the flattened copy went to the module's remote tmp, which Ansible removed
    with open('/proc/self/mountinfo', encoding='utf-8') as handle:
        assert not [line for line in handle if 'imageprep-image-' in line]


def small_root(tree: pathlib.Path) -> pathlib.Path:
    """A small Linux root with identity: os-release, accounts, machine-id, hostname, an SSH host key."""
    (tree / 'etc/ssh').mkdir(parents=True)
    (tree / 'usr/lib').mkdir(parents=True)
    (tree / 'usr/lib/os-release').write_text('ID=debian\nVERSION_ID="12"\n')
    (tree / 'etc/os-release').symlink_to('../usr/lib/os-release')
    (tree / 'etc/passwd').write_text('root:x:0:0:root:/root:/bin/bash\nclone:x:1000:1000::/home/clone:/bin/bash\n'
                                     'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n')
    (tree / 'etc/machine-id').write_text('')
    (tree / 'etc/hostname').write_text('localhost\n')
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', str(tree / 'etc/ssh/ssh_host_ed25519_key')], check=True)
    return tree


@pytest.fixture(scope='module')
def whole_disk(planted_disk: PlantedDisk) -> pathlib.Path:
    """A raw whole-disk ext4 file system of a small root, flagged as needing journal recovery
    (what a VM switched off without a shutdown leaves)."""
    tree = small_root(planted_disk.scratch / 'small-root')
    image = planted_disk.scratch / 'whole.raw'
    subprocess.run(['mkfs.ext4', '-q', '-F', '-d', str(tree), str(image), '32M'], check=True)
    subprocess.run(['debugfs', '-w', '-R', 'feature needs_recovery', str(image)], check=True, capture_output=True)
    dumpe2fs = subprocess.run(['dumpe2fs', '-h', str(image)], capture_output=True, text=True, check=True).stdout
    assert 'needs_recovery' in dumpe2fs, 'the journal does not need recovery: the noload mount is not tested'
    return image


def converted(whole_disk: pathlib.Path, name: str, fmt: str, *options: str) -> pathlib.Path:
    """WHOLE_DISK converted to FMT, as NAME next to it (made once)."""
    image = whole_disk.with_name(name)
    if not image.exists():
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', fmt, *options, str(whole_disk), str(image)], check=True)
    return image


@pytest.mark.parametrize('name, fmt, options, read_as', [
    ('whole.raw', 'raw', [], 'raw'),
    ('whole.qcow2', 'qcow2', [], 'qcow2'),
    # a fixed VHD is raw data with a footer: read in place
    ('whole-fixed.vhd', 'vpc', ['-o', 'subformat=fixed,force_size=on'], 'raw'),
    ('whole-dynamic.vhd', 'vpc', ['-o', 'subformat=dynamic'], 'vpc'),
    ('whole.vhdx', 'vhdx', [], 'vhdx'),
    ('whole.vmdk', 'vmdk', [], 'vmdk'),
])
def test_a_whole_disk_file_system_in_every_format(planted_disk: PlantedDisk, whole_disk: pathlib.Path, name: str, fmt: str,
                                                  options: list[str], read_as: str) -> None:
    image = whole_disk if fmt == 'raw' else converted(whole_disk, name, fmt, *options)
    result = audit_image(image, planted_disk.scratch).result
    assert not result.get('failed'), result
    assert result['image_root'] == {'partition': None, 'offset': 0, 'fstype': 'ext4', 'format': read_as}
    identity = result['identity']
    assert (identity['machine_id'], identity['hostname']) == ('', 'localhost')
    assert identity['accounts'] == [{'name': 'clone', 'uid': 1000, 'home': '/home/clone', 'shell': '/bin/bash'}]
    assert [k['type'] for k in identity['ssh_host_keys']] == ['ssh-ed25519']
    assert {(f['category'], f['path']) for f in result['findings']} == {
        ('ssh_host_keys', '/etc/ssh/ssh_host_ed25519_key'), ('ssh_host_keys', '/etc/ssh/ssh_host_ed25519_key.pub')}
    dumpe2fs = subprocess.run(['dumpe2fs', '-h', str(whole_disk)], capture_output=True, text=True, check=True).stdout
    assert 'needs_recovery' in dumpe2fs, 'the journal was replayed'


def test_a_disk_without_a_linux_root_is_refused_with_what_it_holds(planted_disk: PlantedDisk) -> None:
    scratch = planted_disk.scratch
    raw = scratch / 'no-root.raw'
    (scratch / 'data-tree/srv').mkdir(parents=True)
    gpt_disk(raw, scratch / 'data-tree', 16)
    image = scratch / 'no-root.qcow2'
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', str(raw), str(image)], check=True)
    result = audit_image(image, scratch).result
    assert result.get('failed'), result
    assert result['msg'] == (f'no Linux root file system found in {image}: partition 1 (EFI system partition, skipped); '
                             'partition 2 (Linux filesystem, ext4, no etc/os-release)')


def test_a_file_that_is_not_a_disk_image_is_refused(planted_disk: PlantedDisk) -> None:
    path = planted_disk.scratch / 'not-an-image.txt'
    path.write_bytes(b'not a disk image\n' * 4096)
    result = audit_image(path, planted_disk.scratch).result
    assert result.get('failed'), result
    assert result['msg'] == f'no Linux root file system found in {path}: the whole disk (no file system found) (is it a disk image?)'


def test_an_overlay_whose_backing_file_is_gone_is_refused(planted_disk: PlantedDisk) -> None:
    overlay = planted_disk.scratch / 'orphan.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-u', '-b', str(planted_disk.scratch / 'gone.qcow2'), '-F', 'qcow2',
                    str(overlay), '64M'], check=True)
    result = audit_image(overlay, planted_disk.scratch).result
    assert result.get('failed'), result
    assert result['msg'].startswith(f'qemu-img cannot read {overlay}: ') and 'gone.qcow2' in result['msg'], result['msg']


@pytest.mark.parametrize('fmt', ['raw', 'qcow2'])
def test_an_image_a_running_qemu_holds_is_refused(whole_disk: pathlib.Path, planted_disk: PlantedDisk, fmt: str) -> None:
    image = whole_disk if fmt == 'raw' else converted(whole_disk, 'whole.qcow2', fmt)
    # qemu-io holds the image open for writing, with QEMU's locks, until its stdin closes
    with subprocess.Popen(['qemu-io', '-f', fmt, str(image)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL) as holder:
        try:
            time.sleep(0.5)
            assert holder.poll() is None
            result = audit_image(image, planted_disk.scratch).result
        finally:
            holder.communicate(b'quit\n', timeout=30)
    assert result.get('failed') and 'is in use by a running VM' in result['msg'], result


def test_without_root_privileges_nothing_is_mounted(planted_disk: PlantedDisk, whole_disk: pathlib.Path) -> None:
    scratch = planted_disk.scratch
    os.chmod(scratch, 0o755)
    args = scratch / 'unprivileged-args.json'
    args.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': {'image': str(whole_disk), 'tmpdir': tempfile.gettempdir()}}), encoding='utf-8')
    os.chmod(args, 0o644)
    completed = subprocess.run(
        ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '/usr/bin/python3', '-m',
         'ansible_collections.imageprep.vm.plugins.modules.linux_residue_info', str(args)],
        capture_output=True, text=True, check=False,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([os.environ['ANSIBLE_COLLECTIONS_PATH'].split(os.pathsep)[0],
                                                         os.path.dirname(os.path.dirname(ansible.__file__))])))
    assert completed.returncode != 0
    assert 'needs root privileges' in json.loads(completed.stdout)['msg'], completed.stdout + completed.stderr
    assert leftovers(scratch) == []
