# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixture trees of RHEL, SUSE, Ubuntu and Arch, with production residue planted at each family's paths."""
from __future__ import annotations

import pathlib
import stat
import subprocess
import tempfile
import typing as t

import pytest

import fixture_trees
import residue_checks
from scratch_roots import PlantedRoot, remove_root

FAMILIES = ['rhel', 'suse', 'ubuntu', 'arch']
OS_RELEASE_IDS = {'rhel': 'ID="rhel"', 'suse': 'ID="sles"', 'ubuntu': 'ID=ubuntu', 'arch': 'ID=arch'}
# the network identity and registration files each family has (independent of the builder)
IDENTITY_FILES = {
    'rhel': {'/etc/sysconfig/network-scripts/ifcfg-eth0': ['HWADDR=00:0D:3A:4F:21:8C', 'UUID='],
             '/etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection': ['uuid=', 'mac-address=00:0D:3A:4F:21:8C']},
    'suse': {'/etc/sysconfig/network/ifcfg-eth0': ["LLADDR=00:0d:3a:4f:21:8c"]},
    'ubuntu': {'/etc/netplan/50-cloud-init.yaml': ['macaddress: 00:0d:3a:4f:21:8c', 'set-name: eth0']},
    'arch': {'/etc/systemd/network/10-cloud-init-eth0.network': ['MACAddress=00:0d:3a:4f:21:8c']},
}
REGISTRATION_FILES = {
    'rhel': ['/etc/pki/consumer/cert.pem', '/etc/pki/consumer/key.pem', '/etc/pki/entitlement/*.pem', '/etc/sysconfig/rhn/systemid',
             '/var/lib/yum/uuid', '/etc/insights-client/machine-id'],
    'suse': ['/etc/SUSEConnect', '/etc/zypp/credentials.d/SCCcredentials', '/var/lib/zypp/AnonymousUniqueId'],
    'ubuntu': ['/var/lib/ubuntu-advantage/private/machine-token.json'],
    'arch': [],
}


@pytest.fixture(scope='module', params=FAMILIES)
def used_tree(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[PlantedRoot]:
    """The family's fixture tree with production residue planted."""
    family = request.param
    base = pathlib.Path(tempfile.mkdtemp(prefix=f'fixture-{family}-', dir=tmp_path_factory.getbasetemp()))
    try:
        root = base / 'root'
        yield PlantedRoot(root, family, fixture_trees.build_used(family, root), {})
    finally:
        remove_root(base)


def test_every_manifest_entry_exists_with_its_kind(used_tree: PlantedRoot) -> None:
    assert len(used_tree.manifest) > 50
    assert residue_checks.manifest_entry_problems(used_tree.root, used_tree.manifest) == []


def test_every_foundation_category_is_present(used_tree: PlantedRoot) -> None:
    root, family = used_tree.root, used_tree.family
    residue_checks.assert_foundation_residue(root, family)


def test_os_release_is_the_published_one(used_tree: PlantedRoot) -> None:
    root, family = used_tree.root, used_tree.family
    os_release = root / 'etc/os-release'
    assert os_release.is_symlink() and str(os_release.readlink()) == '../usr/lib/os-release'
    assert OS_RELEASE_IDS[family] in (root / 'usr/lib/os-release').read_text(encoding='utf-8').splitlines()


def test_network_identity_files_carry_the_vm_identity(used_tree: PlantedRoot) -> None:
    root, family = used_tree.root, used_tree.family
    for path, needles in IDENTITY_FILES[family].items():
        text = residue_checks.non_empty_file(root, path).decode()
        for needle in needles:
            assert needle in text, (path, needle)
        if path.endswith('.nmconnection'):
            # NetworkManager ignores keyfiles readable by others
            assert stat.S_IMODE((root / path.lstrip('/')).stat().st_mode) == 0o600


def test_registration_files_are_present(used_tree: PlantedRoot) -> None:
    root, family = used_tree.root, used_tree.family
    for pattern in REGISTRATION_FILES[family]:
        assert residue_checks.globbed(root, pattern), pattern


@pytest.mark.parametrize('used_tree', ['rhel'], indirect=True)
def test_rhel_has_an_lvm_devices_file(used_tree: PlantedRoot) -> None:
    root = used_tree.root
    # RHEL 9 is the family that writes LVM's devices file by default
    assert 'PVID=' in residue_checks.non_empty_file(root, '/etc/lvm/devices/system.devices').decode()


@pytest.mark.parametrize('used_tree', ['rhel'], indirect=True)
def test_rhsm_consumer_certificate_is_real_x509(used_tree: PlantedRoot) -> None:
    root = used_tree.root
    subject = subprocess.run(['openssl', 'x509', '-noout', '-subject', '-in', str(root / 'etc/pki/consumer/cert.pem')],
                             capture_output=True, text=True, check=True).stdout
    assert fixture_trees.RHSM_CONSUMER_UUID in subject


def test_host_keys_are_real_keys(used_tree: PlantedRoot) -> None:
    root = used_tree.root
    for key in sorted((root / 'etc/ssh').glob('ssh_host_*_key*')):
        completed = subprocess.run(['ssh-keygen', '-l', '-f', str(key)], capture_output=True, text=True, check=False)
        assert completed.returncode == 0, (key, completed.stderr)


def test_guest_visudo_accepts_the_sudoers_files(used_tree: PlantedRoot, guest_visudo: t.Callable[[pathlib.Path], subprocess.CompletedProcess]) -> None:
    root = used_tree.root
    for name in ('90-cloud-init-users', 'waagent'):
        completed = guest_visudo(root / 'etc/sudoers.d' / name)
        assert completed.returncode == 0, completed.stdout + completed.stderr


def test_journal_files_are_readable(used_tree: PlantedRoot) -> None:
    root = used_tree.root
    journal = root / 'var/log/journal' / residue_checks.machine_id(root) / 'system.journal'
    messages = residue_checks.journal_messages(journal)
    assert any(residue_checks.PROVISIONED_USER in message for message in messages)


def test_ovf_env_names_the_provisioning_user(used_tree: PlantedRoot) -> None:
    assert residue_checks.ovf_user_name(used_tree.root) == residue_checks.PROVISIONED_USER
