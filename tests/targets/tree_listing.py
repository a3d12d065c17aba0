# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a root file system holds, path by path, to prove what a change touched and what it left alone."""
from __future__ import annotations

import hashlib
import os
import pathlib
import stat
import typing as t


def listing(root: t.Union[str, pathlib.Path], skip: t.Sequence[str] = ()) -> dict[str, tuple]:
    """Every path of ROOT as the guest sees it (SKIP and what is below left out), with its type,
    mode, owner and content digest (regular files) or target (links): (S_IFMT, mode, uid, gid, content)."""
    root = str(root)
    entries: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        inner_dir = os.path.normpath('/' + os.path.relpath(dirpath, root))
        dirnames[:] = [d for d in dirnames if not covered(os.path.join(inner_dir, d), skip)]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            inner = os.path.join(inner_dir, name)
            if covered(inner, skip):
                continue
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                content = 'link:' + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                with open(path, 'rb') as handle:
                    content = hashlib.sha256(handle.read()).hexdigest()
            else:
                content = ''
            entries[inner] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, content)
    return entries


def covered(path: str, prefixes: t.Iterable[str]) -> bool:
    """Whether PATH is one of PREFIXES or lies below one."""
    return any(path == p or path.startswith(p.rstrip('/') + '/') for p in prefixes)
