# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Input-keyed cache for built test targets.

A target is rebuilt only when one of its inputs (the scripts that build it, package lists,
options) changes; the key is a sha256 over those inputs and is part of the file name, so an
old build is never mistaken for a new one. Builds are written under a temporary name and
renamed into place, so a killed build never leaves a file that looks finished.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pathlib
import shutil
import typing as t

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def cache_dir() -> pathlib.Path:
    """Return the cache directory (``IMAGEPREP_TEST_CACHE`` or ``<repo>/.cache/targets``)."""
    path = pathlib.Path(os.environ.get('IMAGEPREP_TEST_CACHE', REPO_ROOT / '.cache' / 'targets'))
    path.mkdir(parents=True, exist_ok=True)
    return path


def input_key(*inputs: t.Union[str, bytes, pathlib.Path]) -> str:
    """Return a short sha256 key over strings, bytes and the contents of files."""
    digest = hashlib.sha256()
    for item in inputs:
        if isinstance(item, pathlib.Path):
            data = item.read_bytes()
        elif isinstance(item, str):
            data = item.encode()
        else:
            data = item
        digest.update(len(data).to_bytes(8, 'big'))
        digest.update(data)
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def build_lock(name: str) -> t.Iterator[None]:
    """Serialise builds of one target between concurrent test runs."""
    lock_path = cache_dir() / f'.{name}.lock'
    with open(lock_path, 'w', encoding='utf-8') as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish(tmp_path: pathlib.Path, final_path: pathlib.Path) -> pathlib.Path:
    """Atomically move a finished build into place and return its final path."""
    if final_path.is_dir() and not final_path.is_symlink():
        shutil.rmtree(final_path)
    os.replace(tmp_path, final_path)
    return final_path


def prune(prefix: str, keep: pathlib.Path) -> None:
    """Remove older builds of the same target (same prefix, other key)."""
    for old in cache_dir().glob(prefix + '*'):
        if old == keep or old.name.startswith('.'):
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
