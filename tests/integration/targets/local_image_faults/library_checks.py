# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Checks of an image library that do not trust the modules: the catalogue is read with sqlite3
directly, files are hashed with a plain full read, and the library directory is walked.
"""
from __future__ import annotations

import contextlib
import hashlib
import pathlib
import sqlite3
import typing as t

CATALOGUE = 'catalogue.sqlite'
LOCK_FILE = '.lock'
STAGING = '.staging'
READ_CHUNK = 4 * 1024 * 1024


def _connect(library: pathlib.Path) -> sqlite3.Connection:
    connection = sqlite3.connect(library / CATALOGUE, timeout=60)
    connection.row_factory = sqlite3.Row
    return connection


def read_catalogue(library: pathlib.Path) -> list[dict[str, t.Any]]:
    """Return every image row with its disk rows (``disks``, in position order); [] without a catalogue."""
    if not (library / CATALOGUE).exists():
        return []
    with contextlib.closing(_connect(library)) as connection:
        images = []
        for row in connection.execute('SELECT * FROM images ORDER BY name, v_major, v_minor, v_patch'):
            image = dict(row)
            image['disks'] = [dict(d) for d in connection.execute('SELECT * FROM disks WHERE image_id = ? ORDER BY position', (row['id'],))]
            images.append(image)
        return images


def catalogue_health(library: pathlib.Path) -> tuple[str, list[tuple]]:
    """Return SQLite's ``PRAGMA integrity_check`` answer and the foreign key violations."""
    with contextlib.closing(_connect(library)) as connection:
        integrity = '; '.join(row[0] for row in connection.execute('PRAGMA integrity_check'))
        violations = [tuple(row) for row in connection.execute('PRAGMA foreign_key_check')]
    return integrity, violations


def file_sha256(path: pathlib.Path) -> str:
    """Return the sha256 of every byte of PATH (holes included), read start to end."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(READ_CHUNK), b''):
            digest.update(chunk)
    return digest.hexdigest()


def disk_paths(library: pathlib.Path, image: dict[str, t.Any]) -> list[pathlib.Path]:
    """Return the files an image row references."""
    return [library / image['directory'] / disk['file'] for disk in image['disks']]


def image_problems(library: pathlib.Path, image: dict[str, t.Any], hash_files: bool = True) -> list[str]:
    """Return what is wrong with one image row: no disks, a missing file, a file whose sha256 differs (when HASH_FILES)."""
    label = f"{image['name']} {image['version']}"
    if not image['disks']:
        return [f'{label}: a row without disks']
    problems = []
    for disk, path in zip(image['disks'], disk_paths(library, image)):
        if not path.is_file():
            problems.append(f'{label}: {path} is missing')
        elif hash_files and file_sha256(path) != disk['sha256']:
            problems.append(f"{label}: {path} does not have the recorded sha256 {disk['sha256']}")
    return problems


def leftovers(library: pathlib.Path, images: t.Optional[list[dict[str, t.Any]]] = None) -> set[str]:
    """Return what a killed run can leave: staging entries and image directories no row references."""
    images = read_catalogue(library) if images is None else images
    found = set()
    if (library / STAGING).is_dir():
        found.update(str(entry) for entry in (library / STAGING).iterdir())
    referenced = {str(library / image['directory']) for image in images}
    for name_dir in library.iterdir():
        if name_dir.is_dir() and not name_dir.name.startswith('.'):
            found.update(str(entry) for entry in name_dir.iterdir() if str(entry) not in referenced)
    return found


def unexpected_entries(library: pathlib.Path, images: t.Optional[list[dict[str, t.Any]]] = None) -> set[str]:
    """Return every path in the library that is neither the catalogue, the lock, the (empty) staging
    directory, nor a directory or file of a catalogue row: the library must hold exactly what the
    catalogue references.
    """
    images = read_catalogue(library) if images is None else images
    expected = {library / CATALOGUE, library / LOCK_FILE, library / STAGING}
    for image in images:
        expected.add(library / image['name'])
        expected.add(library / image['directory'])
        expected.update(disk_paths(library, image))
    return {str(path) for path in library.rglob('*') if path not in expected}


def assert_library_consistent(library: pathlib.Path, rehash: t.Optional[set[tuple[str, str]]] = None) -> list[dict[str, t.Any]]:
    """Assert the catalogue is sound, every row complete with the right hashes, and nothing else is there.

    REHASH limits hashing to those (name, version) pairs (the files of the others must exist);
    by default every file is hashed. Returns the rows.
    """
    integrity, violations = catalogue_health(library)
    assert integrity == 'ok', f'PRAGMA integrity_check: {integrity}'
    assert not violations, f'foreign key violations: {violations}'
    images = read_catalogue(library)
    problems = [problem for image in images
                for problem in image_problems(library, image, rehash is None or (image['name'], image['version']) in rehash)]
    assert not problems, '\n'.join(problems)
    stray = unexpected_entries(library, images)
    assert not stray, f'files the catalogue does not reference: {sorted(stray)}'
    return images
