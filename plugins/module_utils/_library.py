# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The local image library: a directory of image files and an SQLite catalogue in it.

Layout::

    LIBRARY/catalogue.sqlite        names, versions, disks, checksums, provenance
    LIBRARY/.lock                   flock: one writer at a time, readers share
    LIBRARY/.staging/               new images are written here first
    LIBRARY/NAME/VERSION-ID/        the files of one registered image version

An image becomes visible only when its catalogue row is committed, after its files were
written in ``.staging``, flushed, and renamed into place. A run killed at any point leaves at
most a staging directory or an image directory without a row; the next writer removes both
(:meth:`Library.recover`) before it does anything else.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import secrets
import shutil
import sqlite3
import typing as t

CATALOGUE = 'catalogue.sqlite'
LOCK_FILE = '.lock'
STAGING = '.staging'
SCHEMA_VERSION = 1

# Azure's rule for gallery image names, which our names follow so images can move there:
# 1-80 letters, digits, '.', '_' and '-', starting and ending with a letter or digit.
NAME_PATTERN = re.compile(r'^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9])?$')
NAME_RULE = ("1 to 80 letters, digits, '.', '_' and '-', starting and ending with a letter or digit, "
             "without '..'")
# MAJOR.MINOR.PATCH, each a decimal integer without leading zeros (as Azure gallery versions).
VERSION_PATTERN = re.compile(r'^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$')
FIRST_VERSION = '1.0.0'

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    v_major INTEGER NOT NULL,
    v_minor INTEGER NOT NULL,
    v_patch INTEGER NOT NULL,
    directory TEXT NOT NULL UNIQUE,
    os_type TEXT NOT NULL,
    os_state TEXT NOT NULL,
    kind TEXT NOT NULL,
    firmware TEXT NOT NULL,
    architecture TEXT NOT NULL,
    format TEXT NOT NULL,
    compression TEXT NOT NULL,
    description TEXT NOT NULL,
    tags TEXT NOT NULL,
    provenance TEXT NOT NULL,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    crash_consistent INTEGER NOT NULL,
    captured_at TEXT NOT NULL,
    captured_by TEXT NOT NULL,
    tool_versions TEXT NOT NULL,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS disks (
    image_id INTEGER NOT NULL REFERENCES images (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    role TEXT NOT NULL,
    lun INTEGER,
    file TEXT NOT NULL,
    format TEXT NOT NULL,
    virtual_size INTEGER NOT NULL,
    actual_size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    source TEXT NOT NULL,
    source_format TEXT NOT NULL,
    PRIMARY KEY (image_id, position)
);
"""


class LibraryError(Exception):
    """The library cannot do what was asked; the message says why."""


def name_problem(name: str) -> t.Optional[str]:
    """Return why NAME cannot name an image, or None when it can."""
    if not NAME_PATTERN.match(name or '') or '..' in name:
        return f'image name {name!r} is not valid: use {NAME_RULE}'
    return None


def parse_version(version: str) -> tuple[int, int, int]:
    """Return (major, minor, patch) of VERSION or raise LibraryError."""
    match = VERSION_PATTERN.match(version or '')
    if not match:
        raise LibraryError(f'version {version!r} is not valid: use MAJOR.MINOR.PATCH (e.g. 1.0.0), or auto')
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def next_version(existing: t.Iterable[str]) -> str:
    """Return the next patch version after the highest of EXISTING, or 1.0.0 for a new name."""
    versions = sorted(parse_version(v) for v in existing)
    if not versions:
        return FIRST_VERSION
    major, minor, patch = versions[-1]
    return f'{major}.{minor}.{patch + 1}'


def now_utc() -> str:
    """Return the current time as an ISO 8601 UTC timestamp."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace('+00:00', 'Z')


class Library:
    """One image library directory. Use as a context manager; take :meth:`lock` around changes."""

    def __init__(self, path: str, create: bool = True) -> None:
        if not os.path.isabs(path):
            raise LibraryError(f'library path {path!r} must be absolute')
        self.path = os.path.normpath(path)
        self.create = create
        self._db: t.Optional[sqlite3.Connection] = None
        self._lock_fd: t.Optional[int] = None

    # -- opening -------------------------------------------------------------------------
    def __enter__(self) -> 'Library':
        if not os.path.isdir(self.path):
            if not self.create:
                raise LibraryError(f'there is no image library at {self.path}')
            try:
                # exist_ok: another run may create it at the same moment
                os.makedirs(self.path, mode=0o700, exist_ok=True)
            except OSError as exc:
                raise LibraryError(f'cannot create the image library {self.path}: {exc.strerror}') from exc
        elif not self.create and not os.path.exists(os.path.join(self.path, CATALOGUE)):
            raise LibraryError(f'{self.path} is not an image library (no {CATALOGUE})')
        catalogue = os.path.join(self.path, CATALOGUE)
        try:
            new = not os.path.exists(catalogue)
            # Readers only need to read the lock file; writers create it.
            flags = (os.O_RDWR | os.O_CREAT) if self.create else os.O_RDONLY
            self._lock_fd = os.open(os.path.join(self.path, LOCK_FILE), flags, 0o600)
            self._db = sqlite3.connect(catalogue, timeout=60, isolation_level=None)
            if new:
                os.chmod(catalogue, 0o600)
        except (OSError, sqlite3.Error) as exc:
            raise LibraryError(f'cannot open the image library {self.path}: {exc}') from exc
        self._db.row_factory = sqlite3.Row
        self._db.execute('PRAGMA foreign_keys = ON')
        self._db.execute('PRAGMA synchronous = FULL')
        self._init_schema()
        return self

    def __exit__(self, *exc_info: t.Any) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @property
    def db(self) -> sqlite3.Connection:
        """The open catalogue connection."""
        if self._db is None:
            raise LibraryError('the library is not open')
        return self._db

    def _init_schema(self) -> None:
        if self.db.execute('PRAGMA user_version').fetchone()[0] == SCHEMA_VERSION:
            return  # the common case, and the only one a read-only user can open
        # DDL is transactional in SQLite: two first runs at once create the schema once.
        self.db.execute('BEGIN IMMEDIATE')
        try:
            version = self.db.execute('PRAGMA user_version').fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LibraryError(f'the catalogue of {self.path} has schema {version}, newer than this collection '
                                   f'understands ({SCHEMA_VERSION}); upgrade imageprep.vm')
            if version < SCHEMA_VERSION:
                for statement in _SCHEMA.split(';'):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f'PRAGMA user_version = {SCHEMA_VERSION}')
            self.db.execute('COMMIT')
        finally:
            if self.db.in_transaction:
                self.db.execute('ROLLBACK')

    @contextlib.contextmanager
    def lock(self, exclusive: bool) -> t.Iterator[None]:
        """Hold the library lock: exclusive for writers (one at a time), shared for readers."""
        if self._lock_fd is None:
            raise LibraryError('the library is not open')
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- recovery --------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Remove what killed runs left: staging directories and image directories without a row.

        Call with the exclusive lock held. Returns the paths removed.
        """
        removed = []
        staging = os.path.join(self.path, STAGING)
        if os.path.isdir(staging):
            for entry in sorted(os.listdir(staging)):
                target = os.path.join(staging, entry)
                remove_tree(target)
                removed.append(target)
        known = {row['directory'] for row in self.db.execute('SELECT directory FROM images')}
        for name in sorted(os.listdir(self.path)):
            name_dir = os.path.join(self.path, name)
            if name.startswith('.') or name == CATALOGUE or not os.path.isdir(name_dir) or name_problem(name):
                continue
            for entry in sorted(os.listdir(name_dir)):
                relative = f'{name}/{entry}'
                if relative not in known:
                    remove_tree(os.path.join(name_dir, entry))
                    removed.append(os.path.join(name_dir, entry))
            if not os.listdir(name_dir):
                os.rmdir(name_dir)
        return removed

    # -- queries ---------------------------------------------------------------------------
    def versions(self, name: str) -> list[str]:
        """Return the registered versions of NAME, lowest first."""
        rows = self.db.execute('SELECT version FROM images WHERE name = ? ORDER BY v_major, v_minor, v_patch', (name,))
        return [row['version'] for row in rows]

    def get(self, name: str, version: str) -> t.Optional[dict]:
        """Return the record of NAME at VERSION, or None."""
        row = self.db.execute('SELECT * FROM images WHERE name = ? AND version = ?', (name, version)).fetchone()
        return self._record(row) if row else None

    def find(self, name: t.Optional[str] = None, version: t.Optional[str] = None, os_state: t.Optional[str] = None,
             os_type: t.Optional[str] = None, tags: t.Optional[dict] = None) -> list[dict]:
        """Return the records that match every given filter; ``version='latest'`` keeps each name's highest."""
        clauses, params = [], []
        for column, value in (('name', name), ('os_state', os_state), ('os_type', os_type)):
            if value is not None:
                clauses.append(f'{column} = ?')
                params.append(value)
        if version not in (None, 'latest'):
            clauses.append('version = ?')
            params.append(version)
        where = ('WHERE ' + ' AND '.join(clauses)) if clauses else ''
        rows = self.db.execute(f'SELECT * FROM images {where} ORDER BY name, v_major, v_minor, v_patch', params).fetchall()
        records = [self._record(row) for row in rows]
        if tags:
            records = [r for r in records if all(r['tags'].get(k) == v for k, v in tags.items())]
        if version == 'latest':
            latest: dict[str, dict] = {}
            for record in records:
                latest[record['name']] = record
            records = list(latest.values())
        return records

    def _record(self, row: sqlite3.Row) -> dict:
        disks = self.db.execute('SELECT * FROM disks WHERE image_id = ? ORDER BY position', (row['id'],)).fetchall()
        directory = os.path.join(self.path, row['directory'])
        return {
            'name': row['name'],
            'version': row['version'],
            'os_type': row['os_type'],
            'os_state': row['os_state'],
            'kind': row['kind'],
            'firmware': row['firmware'],
            'architecture': row['architecture'],
            'format': row['format'],
            'compression': row['compression'],
            'description': row['description'],
            'tags': json.loads(row['tags']),
            'provenance': json.loads(row['provenance']),
            'source': json.loads(row['source']),
            'fingerprint': row['fingerprint'],
            'crash_consistent': bool(row['crash_consistent']),
            'captured_at': row['captured_at'],
            'captured_by': row['captured_by'],
            'tool_versions': json.loads(row['tool_versions']),
            'path': directory,
            'disks': [{
                'role': d['role'],
                'lun': d['lun'],
                'path': os.path.join(directory, d['file']),
                'format': d['format'],
                'virtual_size': d['virtual_size'],
                'actual_size': d['actual_size'],
                'sha256': d['sha256'],
                'source': d['source'],
                'source_format': d['source_format'],
            } for d in disks],
        }

    # -- changes (exclusive lock held) -----------------------------------------------------------
    def new_staging(self) -> str:
        """Return a new empty staging directory on the library's file system."""
        staging = os.path.join(self.path, STAGING)
        os.makedirs(staging, mode=0o700, exist_ok=True)
        path = os.path.join(staging, secrets.token_hex(6))
        os.mkdir(path, 0o700)
        return path

    def publish(self, staging_dir: str, record: dict) -> dict:
        """Move a finished staging directory into place and commit its row, replacing an older row.

        RECORD carries every field of :meth:`_record` except ``path``; each disk's ``file`` is
        its name inside STAGING_DIR. Returns the stored record.
        """
        major, minor, patch = parse_version(record['version'])
        name_dir = os.path.join(self.path, record['name'])
        os.makedirs(name_dir, mode=0o700, exist_ok=True)
        relative = f"{record['name']}/{record['version']}-{os.path.basename(staging_dir)}"
        for disk in record['disks']:
            os.chmod(os.path.join(staging_dir, disk['file']), 0o600)
            fsync_path(os.path.join(staging_dir, disk['file']))
        fsync_path(staging_dir)
        os.rename(staging_dir, os.path.join(self.path, relative))
        fsync_path(name_dir)
        old = self.db.execute('SELECT id, directory FROM images WHERE name = ? AND version = ?',
                              (record['name'], record['version'])).fetchone()
        try:
            self.db.execute('BEGIN IMMEDIATE')
            if old is not None:
                self.db.execute('DELETE FROM images WHERE id = ?', (old['id'],))
            cursor = self.db.execute(
                'INSERT INTO images (name, version, v_major, v_minor, v_patch, directory, os_type, os_state, kind, firmware,'
                ' architecture, format, compression, description, tags, provenance, source, fingerprint, crash_consistent,'
                ' captured_at, captured_by, tool_versions) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)',
                (record['name'], record['version'], major, minor, patch, relative, record['os_type'], record['os_state'],
                 record['kind'], record['firmware'], record['architecture'], record['format'], record['compression'],
                 record['description'], json.dumps(record['tags'], sort_keys=True), json.dumps(record['provenance'], sort_keys=True),
                 json.dumps(record['source'], sort_keys=True), record['fingerprint'], int(record['crash_consistent']),
                 record['captured_at'], record['captured_by'], json.dumps(record['tool_versions'], sort_keys=True)))
            for position, disk in enumerate(record['disks']):
                self.db.execute(
                    'INSERT INTO disks (image_id, position, role, lun, file, format, virtual_size, actual_size, sha256, source,'
                    ' source_format) VALUES (?,?,?,?,?,?,?,?,?,?,?)',
                    (cursor.lastrowid, position, disk['role'], disk['lun'], disk['file'], disk['format'], disk['virtual_size'],
                     disk['actual_size'], disk['sha256'], disk['source'], disk['source_format']))
            self.db.execute('COMMIT')
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute('ROLLBACK')
            remove_tree(os.path.join(self.path, relative))
            if not os.listdir(name_dir):
                os.rmdir(name_dir)
            if _is_disk_full(exc):
                raise LibraryError(f"no space left on the library file system while recording {record['name']} {record['version']} "
                                   f'in {self.path}; nothing was registered') from exc
            raise LibraryError(f'cannot record the image in {self.path}: {exc}') from exc
        if old is not None:
            remove_tree(os.path.join(self.path, old['directory']))
        stored = self.get(record['name'], record['version'])
        if stored is None:
            raise LibraryError(f"{record['name']} {record['version']} vanished from {self.path} right after it was recorded")
        return stored

    def update_metadata(self, name: str, version: str, description: str, tags: dict, provenance: dict) -> dict:
        """Change the fields of a version that may change after capture; return the stored record."""
        self.db.execute('BEGIN IMMEDIATE')
        self.db.execute('UPDATE images SET description = ?, tags = ?, provenance = ? WHERE name = ? AND version = ?',
                        (description, json.dumps(tags, sort_keys=True), json.dumps(provenance, sort_keys=True), name, version))
        self.db.execute('COMMIT')
        stored = self.get(name, version)
        if stored is None:
            raise LibraryError(f'{name} {version} is not in {self.path}')
        return stored

    def remove(self, name: str, version: str) -> t.Optional[dict]:
        """Remove one version: the row first (it stops being visible), then its files."""
        record = self.get(name, version)
        if record is None:
            return None
        self.db.execute('BEGIN IMMEDIATE')
        self.db.execute('DELETE FROM images WHERE name = ? AND version = ?', (name, version))
        self.db.execute('COMMIT')
        remove_tree(record['path'])
        name_dir = os.path.join(self.path, name)
        if os.path.isdir(name_dir) and not os.listdir(name_dir):
            os.rmdir(name_dir)
        return record


def _is_disk_full(exc: sqlite3.Error) -> bool:
    # sqlite_errorcode exists from Python 3.11; older hosts only have the message.
    code = getattr(exc, 'sqlite_errorcode', None)
    return code == getattr(sqlite3, 'SQLITE_FULL', 13) or 'database or disk is full' in str(exc)


def fsync_path(path: str) -> None:
    """Flush a file or directory to stable storage."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_tree(path: str) -> None:
    """Remove a file or directory tree if it exists."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
