# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The planter's formats and decisions: records, manifest checks, family detection."""
from __future__ import annotations

import re
import struct

import pytest

import fixture_trees
import plant_used_vm


def test_utmp_text_is_what_utmpdump_reads_back():
    text = plant_used_vm.utmp_text(plant_used_vm.wtmp_records(plant_used_vm.BASE_TIME, '6.1.0-28-cloud-amd64'))
    line = re.compile(r'^\[\d\] \[\d{5}\] \[.{4}\] \[.{8,}\] \[.{12,}\] \[.{20,}\] \[[0-9.]{1,15} *\] '
                      r'\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{6}\+00:00\]$')
    lines = text.splitlines()
    assert len(lines) == 6 and all(line.match(entry) for entry in lines), text


def test_lastlog_record_is_one_struct_lastlog():
    record = plant_used_vm.lastlog_record(plant_used_vm.BASE_TIME, 'pts/0', '203.0.113.10')
    assert len(record) == 292
    assert struct.unpack('<i', record[:4])[0] == plant_used_vm.BASE_TIME


def read_keytab(data):
    """(principal, realm, enctype, key length) of each entry of an MIT keytab."""
    assert data[:2] == b'\x05\x02'
    entries, offset = [], 2

    def counted(position):
        (length,) = struct.unpack('>H', data[position:position + 2])
        return data[position + 2:position + 2 + length], position + 2 + length
    while offset < len(data):
        (size,) = struct.unpack('>i', data[offset:offset + 4])
        end = offset + 4 + size
        (components,) = struct.unpack('>H', data[offset + 4:offset + 6])
        realm, position = counted(offset + 6)
        names = []
        for _index in range(components):
            name, position = counted(position)
            names.append(name.decode())
        position += 4 + 4 + 1  # name type, timestamp, 8-bit key version
        (enctype,) = struct.unpack('>H', data[position:position + 2])
        key, position = counted(position + 2)
        assert position + 4 == end  # the 32-bit key version closes the entry
        entries.append(('/'.join(names), realm.decode(), enctype, len(key)))
        offset = end
    return entries


def test_keytab_holds_an_aes256_and_an_aes128_key_per_principal():
    principals = ['host/web-prod-01.contoso.internal', 'WEB-PROD-01$']
    entries = read_keytab(plant_used_vm.keytab_bytes(principals, 'CONTOSO.INTERNAL', 2))
    assert entries == [(principal, 'CONTOSO.INTERNAL', enctype, length)
                       for principal in principals for enctype, length in ((18, 32), (17, 16))]


def test_rpm_lead_has_the_rpm_magic():
    lead = plant_used_vm.rpm_lead('nginx-1.20.1-14.el9_2.1.x86_64')
    assert len(lead) == 96 and lead[:4] == b'\xed\xab\xee\xdb'


def test_dhclient_lease_is_one_lease_block():
    text = plant_used_vm.dhclient_lease_text('eth0', plant_used_vm.BASE_TIME)
    assert text.startswith('lease {\n') and text.endswith('}\n')
    assert f'fixed-address {plant_used_vm.IP_ADDRESS};' in text


@pytest.mark.parametrize('kind, make, problem', [
    ('file', lambda p: p.write_text('x'), ''),
    ('file', lambda p: p.write_text(''), 'is empty'),
    ('file', lambda p: None, 'is not a regular file'),
    ('dir', lambda p: p.mkdir(), ''),
    ('dir', lambda p: p.write_text('x'), 'is not a directory'),
    ('symlink', lambda p: p.symlink_to('/nowhere'), ''),
    ('file', lambda p: p.symlink_to('/nowhere'), 'is a symlink'),
    ('content', lambda p: p.write_text('web-prod-01\n'), ''),
    ('content', lambda p: p.write_text('localhost\n'), 'does not contain'),
])
def test_entry_problem_checks_kind_and_content(tmp_path, kind, make, problem):
    make(tmp_path / 'item')
    entry = {'category': 'hostname', 'path': '/item', 'kind': kind, 'detail': 'web-prod-01'}
    found = plant_used_vm.entry_problem(tmp_path, entry)
    assert (problem in found) if problem else found == ''


def test_manifest_refuses_unknown_categories(tmp_path):
    (tmp_path / 'item').write_text('x')
    with pytest.raises(plant_used_vm.PlantError, match='unknown residue category'):
        plant_used_vm.Manifest(tmp_path).add('secrets', '/item', 'file', 'x')


@pytest.mark.parametrize('family', fixture_trees.FAMILIES)
def test_each_fixture_os_release_names_its_family(family):
    assert plant_used_vm.detect_family(fixture_trees.FIXTURES / family) == family


def test_an_unknown_os_release_needs_a_family(tmp_path):
    (tmp_path / 'etc').mkdir()
    (tmp_path / 'etc/os-release').write_text('ID=plan9\n')
    with pytest.raises(plant_used_vm.PlantError, match='--family'):
        plant_used_vm.detect_family(tmp_path)


@pytest.mark.parametrize('family', sorted(plant_used_vm.FAMILIES))
def test_family_layouts_use_absolute_paths(family):
    layout = plant_used_vm.FAMILIES[family]
    for path in (layout.dhclient_lease, layout.mail_dir, layout.cron_dir):
        assert path.startswith('/')
