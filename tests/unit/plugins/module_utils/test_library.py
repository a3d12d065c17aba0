# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The image library on a real directory with a real SQLite catalogue."""
from __future__ import annotations

import os
import sqlite3

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils import _library as library_mod


@pytest.mark.parametrize('name', ['web', 'debian-12.7_web', 'A', 'a' * 80, '1x'])
def test_good_names(name):
    assert library_mod.name_problem(name) is None


@pytest.mark.parametrize('name', ['', '../x', 'a/b', 'a..b', '.hidden', 'x-', '-x', 'a' * 81, 'sp ace', 'ü', 'catalogue.sqlite/..'])
def test_bad_names(name):
    assert 'not valid' in library_mod.name_problem(name)


@pytest.mark.parametrize('version, parsed', [('1.0.0', (1, 0, 0)), ('0.0.1', (0, 0, 1)), ('10.20.300', (10, 20, 300))])
def test_versions(version, parsed):
    assert library_mod.parse_version(version) == parsed


@pytest.mark.parametrize('version', ['1.0', '01.0.0', 'v1.0.0', '1.0.0-rc1', 'auto', '', '1.0.0.0', '1234567890.0.0'])
def test_bad_versions(version):
    with pytest.raises(library_mod.LibraryError, match='MAJOR.MINOR.PATCH'):
        library_mod.parse_version(version)


@pytest.mark.parametrize('existing, following', [([], '1.0.0'), (['1.0.9', '1.0.10', '1.0.2'], '1.0.11'), (['2.0.0', '1.9.9'], '2.0.1')])
def test_next_version_is_numeric(existing, following):
    assert library_mod.next_version(existing) == following


def record(name='web', version='1.0.0', files=('web-os.qcow2',), **extra):
    """A record as the module builds it, for files already in a staging directory."""
    result = {
        'name': name, 'version': version, 'kind': 'os', 'os_type': 'linux', 'os_state': 'generalized', 'firmware': 'bios',
        'architecture': 'x86_64', 'format': 'qcow2', 'compression': 'none', 'description': '', 'tags': {'role': 'web'},
        'provenance': {}, 'source': {'type': 'disks'}, 'fingerprint': 'f1', 'crash_consistent': False,
        'captured_at': '2026-11-29T00:00:00Z', 'captured_by': 'host', 'tool_versions': {},
        'disks': [{'role': 'os' if i == 0 else 'data', 'lun': None if i == 0 else i - 1, 'file': f, 'format': 'qcow2',
                   'virtual_size': 1, 'actual_size': 1, 'sha256': 'x', 'source': '/s', 'source_format': 'raw'}
                  for i, f in enumerate(files)],
    }
    result.update(extra)
    return result


def publish(library, **kwargs):
    """Stage files for a record and publish it."""
    rec = record(**kwargs)
    staging = library.new_staging()
    for disk in rec['disks']:
        with open(os.path.join(staging, disk['file']), 'w', encoding='utf-8') as handle:
            handle.write('disk')
    return library.publish(staging, rec)


def files_under(path):
    """Every file below PATH, relative."""
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _dirs, fs in os.walk(path) for f in fs)


def test_publish_makes_files_private_and_the_row_visible(tmp_path):
    with library_mod.Library(str(tmp_path / 'lib')) as library, library.lock(exclusive=True):
        stored = publish(library)
        assert stored['disks'][0]['path'].startswith(str(tmp_path / 'lib' / 'web' / '1.0.0-'))
        assert oct(os.stat(stored['disks'][0]['path']).st_mode & 0o777) == '0o600'
        assert library.get('web', '1.0.0') == stored
        assert os.listdir(tmp_path / 'lib' / '.staging') == []
    assert oct(os.stat(tmp_path / 'lib').st_mode & 0o777) == '0o700'


def test_replacing_a_version_removes_the_old_files(tmp_path):
    with library_mod.Library(str(tmp_path / 'lib')) as library, library.lock(exclusive=True):
        first = publish(library)
        second = publish(library, fingerprint='f2')
        assert not os.path.exists(first['path'])
        assert os.path.exists(second['path'])
        assert library.versions('web') == ['1.0.0']


def test_recover_removes_staging_leftovers_and_directories_without_a_row(tmp_path):
    with library_mod.Library(str(tmp_path / 'lib')) as library, library.lock(exclusive=True):
        kept = publish(library)
        leftover = library.new_staging()
        open(os.path.join(leftover, 'half.qcow2'), 'w', encoding='utf-8').close()
        orphan = tmp_path / 'lib' / 'web' / '1.0.1-0123456789ab'  # renamed into place, killed before the row was committed
        orphan.mkdir()
        (orphan / 'web-1.0.1-os.qcow2').write_text('x')
        removed = library.recover()
        assert sorted(removed) == sorted([leftover, str(orphan)])
        assert files_under(tmp_path / 'lib' / 'web') == [os.path.relpath(kept['disks'][0]['path'], tmp_path / 'lib' / 'web')]


def test_remove_drops_the_row_then_the_files(tmp_path):
    with library_mod.Library(str(tmp_path / 'lib')) as library, library.lock(exclusive=True):
        stored = publish(library)
        assert library.remove('web', '1.0.0')['path'] == stored['path']
        assert library.get('web', '1.0.0') is None
        assert not (tmp_path / 'lib' / 'web').exists()
        assert library.remove('web', '1.0.0') is None


def test_find_filters(tmp_path):
    with library_mod.Library(str(tmp_path / 'lib')) as library, library.lock(exclusive=True):
        publish(library, version='1.0.0')
        publish(library, version='1.0.10')
        publish(library, version='1.0.9', os_state='specialized')
        publish(library, name='db', tags={'role': 'db'})
        assert [(r['name'], r['version']) for r in library.find(version='latest')] == [('db', '1.0.0'), ('web', '1.0.10')]
        assert [r['version'] for r in library.find(name='web')] == ['1.0.0', '1.0.9', '1.0.10']
        assert [r['version'] for r in library.find(os_state='specialized')] == ['1.0.9']
        assert [r['name'] for r in library.find(tags={'role': 'db'})] == ['db']


def test_a_newer_schema_is_refused(tmp_path):
    (tmp_path / 'lib').mkdir()
    with sqlite3.connect(tmp_path / 'lib' / library_mod.CATALOGUE) as db:
        db.execute(f'PRAGMA user_version = {library_mod.SCHEMA_VERSION + 1}')
    with pytest.raises(library_mod.LibraryError, match='newer than this collection'):
        with library_mod.Library(str(tmp_path / 'lib')):
            pass


def test_relative_library_path_is_refused():
    with pytest.raises(library_mod.LibraryError, match='absolute'):
        library_mod.Library('images')


def test_reader_does_not_create_a_library(tmp_path):
    with pytest.raises(library_mod.LibraryError, match='no image library'):
        with library_mod.Library(str(tmp_path / 'none'), create=False):
            pass
    assert not (tmp_path / 'none').exists()


def test_a_library_created_by_another_run_at_the_same_moment_is_used(tmp_path, monkeypatch):
    # The other run creates the directory between our check and our makedirs.
    path = tmp_path / 'lib'
    real_isdir = os.path.isdir

    def isdir_then_create(candidate):
        if str(candidate) == str(path) and not path.exists():
            path.mkdir()
            return False
        return real_isdir(candidate)
    monkeypatch.setattr(os.path, 'isdir', isdir_then_create)
    with library_mod.Library(str(path)) as library, library.lock(exclusive=True):
        assert library.versions('web') == []
