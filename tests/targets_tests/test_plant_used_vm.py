# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planter makes a fresh, real Debian guest root look like a VM used in production."""
from __future__ import annotations

import socket
import subprocess

import pytest

import residue_checks
from mount_table import mounts_under
from scratch_roots import PlantedRoot


def test_every_manifest_entry_exists_with_its_kind(planted_guest: PlantedRoot) -> None:
    assert len(planted_guest.manifest) > 50
    assert residue_checks.manifest_entry_problems(planted_guest.root, planted_guest.manifest) == []


def test_every_foundation_category_is_present(planted_guest: PlantedRoot) -> None:
    residue_checks.assert_foundation_residue(planted_guest.root, 'debian')


def test_the_manifest_names_every_category_it_planted(planted_guest: PlantedRoot) -> None:
    categories = {entry['category'] for entry in planted_guest.manifest}
    expected = residue_checks.KNOWN_CATEGORIES - {'lvm_devices', 'registration', 'root_password'}
    assert expected <= categories


def test_planting_left_nothing_on_this_machine(planted_guest: PlantedRoot) -> None:
    assert mounts_under(planted_guest.root) == []
    assert socket.gethostname() == planted_guest.host_before['hostname']
    links = subprocess.run(['ip', '-o', 'link'], capture_output=True, text=True, check=True).stdout
    assert links == planted_guest.host_before['links']


@pytest.mark.parametrize('key_type', ['rsa', 'ecdsa', 'ed25519'])
def test_host_keys_are_real_keys(planted_guest: PlantedRoot, key_type: str) -> None:
    root = planted_guest.root
    for suffix in ('', '.pub'):
        completed = subprocess.run(['ssh-keygen', '-l', '-f', str(root / f'etc/ssh/ssh_host_{key_type}_key{suffix}')],
                                   capture_output=True, text=True, check=False)
        assert completed.returncode == 0, completed.stderr
        assert key_type.upper() in completed.stdout


@pytest.mark.parametrize('sudoers', ['/etc/sudoers.d/90-cloud-init-users', '/etc/sudoers.d/waagent'])
def test_guest_visudo_accepts_the_provisioning_sudoers_files(planted_guest: PlantedRoot, sudoers: str) -> None:
    root = planted_guest.root
    completed = subprocess.run(['chroot', str(root), 'visudo', '-c', '-f', sudoers], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    completed = subprocess.run(['chroot', str(root), 'visudo', '-c'], capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_ovf_env_names_the_provisioning_user(planted_guest: PlantedRoot) -> None:
    assert residue_checks.ovf_user_name(planted_guest.root) == residue_checks.PROVISIONED_USER


def test_journal_files_are_readable_and_hold_the_planted_entries(planted_guest: PlantedRoot) -> None:
    root = planted_guest.root
    journal_dir = root / 'var/log/journal' / residue_checks.machine_id(root)
    messages = residue_checks.journal_messages(journal_dir / 'system.journal')
    assert any(message.startswith(f'Accepted publickey for {residue_checks.PROVISIONED_USER}') for message in messages)
    user_journals = sorted(journal_dir.glob('user-*.journal'))
    assert user_journals and residue_checks.journal_messages(user_journals[0])


def test_login_records_are_real_wtmp_and_lastlog(planted_guest: PlantedRoot) -> None:
    root = planted_guest.root
    last = subprocess.run(['last', '-f', str(root / 'var/log/wtmp')], capture_output=True, text=True, check=True).stdout
    assert residue_checks.PRODUCTION_USER in last and 'reboot' in last
    lastlog = subprocess.run(['chroot', str(root), 'lastlog', '-u', residue_checks.PROVISIONED_USER],
                             capture_output=True, text=True, check=True).stdout
    assert '203.0.113.10' in lastlog


def test_leases_come_from_the_real_clients(planted_guest: PlantedRoot) -> None:
    root = planted_guest.root
    # dhclient records the DUID it derived; networkd its client id: neither is in a hand-written file
    assert b'default-duid' in (root / 'var/lib/dhcp/dhclient.eth0.leases').read_bytes()
    networkd = (root / 'run/systemd/netif/leases/2').read_text(encoding='utf-8')
    assert 'CLIENTID=' in networkd and 'ADDRESS=10.1.0.4' in networkd


def test_cloud_init_ran_and_pickled_its_datasource(planted_guest: PlantedRoot) -> None:
    root = planted_guest.root
    instance = root / 'var/lib/cloud/instances' / (root / 'var/lib/cloud/data/instance-id').read_text(encoding='utf-8').strip()
    assert (instance / 'obj.pkl').read_bytes()[:1] == b'\x80'
    assert 'Cloud-init v.' in (root / 'var/log/cloud-init-output.log').read_text(encoding='utf-8')
