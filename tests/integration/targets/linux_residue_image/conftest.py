# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures: a planted Debian 12 guest root and the disk images made from it, built once per run."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import typing as t

import pytest

HERE = pathlib.Path(__file__).resolve().parent
TARGETS = pathlib.Path(os.environ.get('IMAGEPREP_TEST_TARGETS') or HERE.parents[2] / 'targets')
if str(TARGETS) not in sys.path:
    sys.path.insert(0, str(TARGETS))

import debian_root  # noqa: E402  pylint: disable=wrong-import-position
import mount_table  # noqa: E402  pylint: disable=wrong-import-position
import plant_used_vm  # noqa: E402  pylint: disable=wrong-import-position

MIB = 1024 * 1024
ESP_MIB = 32


class PlantedDisk(t.NamedTuple):
    """A planted root, and the GPT disk holding it: raw, qcow2 base, qcow2 overlay on that base."""

    scratch: pathlib.Path
    root: pathlib.Path
    manifest: list[dict[str, str]]
    raw: pathlib.Path
    base: pathlib.Path
    overlay: pathlib.Path
    root_offset: int


def gpt_disk(path: pathlib.Path, tree: t.Optional[pathlib.Path], root_mib: int) -> int:
    """A raw GPT disk at PATH: an EFI system partition (FAT, made with ``mkfs.vfat -C``) and a Linux
    partition holding an ext4 file system made from TREE (left empty when TREE is None).
    Returns the byte offset of the Linux partition."""
    esp_offset, root_offset = MIB, (1 + ESP_MIB) * MIB
    with open(path, 'wb') as handle:
        handle.truncate(root_offset + root_mib * MIB + MIB)
    subprocess.run(['sfdisk', '-q', str(path)], input=f'label: gpt\nsize={ESP_MIB}M, type=uefi\nsize={root_mib}M, type=linux\n',
                   text=True, check=True, capture_output=True)
    esp = path.with_suffix('.esp')
    subprocess.run(['mkfs.vfat', '-C', str(esp), str(ESP_MIB * 1024)], check=True, capture_output=True)
    subprocess.run(['dd', f'if={esp}', f'of={path}', 'bs=1M', f'seek={esp_offset // MIB}', 'conv=notrunc,sparse', 'status=none'],
                   check=True)
    esp.unlink()
    if tree is not None:
        subprocess.run(['mkfs.ext4', '-q', '-F', '-E', f'offset={root_offset}', '-d', str(tree), str(path), f'{root_mib}M'],
                       check=True)
    return root_offset


@pytest.fixture(scope='session')
def planted_disk() -> t.Iterator[PlantedDisk]:
    """The real Debian guest root planted like a used VM, as a GPT disk with an ESP, in raw and qcow2 (with a backing file)."""
    assert os.geteuid() == 0, 'the root is extracted and planted, and images are loop-mounted, as root (alias needs/root)'
    scratch = pathlib.Path(tempfile.mkdtemp(prefix='linux-residue-image-'))
    try:
        root = scratch / 'root'
        debian_root.copy('guest', root)
        manifest = plant_used_vm.plant(root, 'debian')
        used = int(subprocess.run(['du', '-sb', str(root)], capture_output=True, text=True, check=True).stdout.split()[0])
        raw = scratch / 'disk.raw'
        root_offset = gpt_disk(raw, root, used // MIB + 256)
        base = scratch / 'base.qcow2'
        subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', str(raw), str(base)], check=True)
        overlay = scratch / 'overlay.qcow2'
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', str(base), '-F', 'qcow2', str(overlay)], check=True)
        yield PlantedDisk(scratch, root, manifest, raw, base, overlay, root_offset)
    finally:
        mount_table.remove_scratch(scratch)


def playbook(*args: str) -> subprocess.CompletedProcess:
    """Run ansible-playbook in this directory with ARGS; fail the test with its output unless it succeeds."""
    env = dict(os.environ, ANSIBLE_LOCALHOST_WARNING='false', ANSIBLE_INVENTORY_UNPARSED_WARNING='false',
               ANSIBLE_DEPRECATION_WARNINGS='false')
    completed = subprocess.run(['ansible-playbook', *args], cwd=HERE, capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise AssertionError(f'ansible-playbook {" ".join(args)} failed:\n{completed.stdout[-20000:]}\n{completed.stderr[-5000:]}')
    return completed
