# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""File operations confined to a Linux root: a live ``/`` or an offline image mounted elsewhere.

Paths are given as the guest sees them (``/etc/hostname``). Every symbolic link met on the way
is resolved *inside* the root, the way ``chroot`` would resolve it, so an absolute link in an
offline image (``/var/log -> /srv/log``) never leads to this machine's own files. The last
component of a path is never followed: deleting a link deletes the link, and truncating or
rewriting one is refused. Rewrites are atomic (a temporary file in the same directory, fsync,
rename) and keep mode, owner and group.

On a live root, files mounted over from elsewhere (the ``/etc/hostname`` a container runtime
binds in) and pseudo file systems (``/proc``, ``/sys``, ``tmpfs``) are not part of any image;
they are reported by :meth:`RootFS.foreign` and skipped by the callers.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import shutil
import stat
import tempfile
import typing as t

MAX_LINKS = 40
# File systems whose content never reaches a disk image.
PSEUDO_FILESYSTEMS = frozenset((
    'autofs', 'binfmt_misc', 'bpf', 'cgroup', 'cgroup2', 'configfs', 'debugfs', 'devpts', 'devtmpfs',
    'efivarfs', 'fusectl', 'hugetlbfs', 'mqueue', 'nsfs', 'proc', 'pstore', 'ramfs', 'rpc_pipefs',
    'securityfs', 'sysfs', 'tmpfs', 'tracefs',
))


class RootError(Exception):
    """A root that cannot be worked on, or a path that leaves it."""


def _unescape_mountinfo(field: str) -> str:
    """Undo the octal escapes (``\\040`` for a space) of /proc/self/mountinfo."""
    out, i = [], 0
    while i < len(field):
        if field[i] == '\\' and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return ''.join(out)


def read_mounts(mountinfo: str = '/proc/self/mountinfo') -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount of this process, empty when unknown."""
    try:
        with open(mountinfo, encoding='utf-8', errors='surrogateescape') as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        before, _sep, after = line.partition(' - ')
        fields = before.split()
        if len(fields) < 5 or not after:
            continue
        mounts.append((_unescape_mountinfo(fields[4]), after.split()[0]))
    return mounts


def _copy_security_label(source: str, dest: str) -> None:
    """Give DEST the SELinux label of SOURCE (a replaced /etc/shadow keeps shadow_t); no label, nothing to do."""
    try:
        label = os.getxattr(source, 'security.selinux', follow_symlinks=False)
    except OSError:
        return
    try:
        os.setxattr(dest, 'security.selinux', label, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
            raise


class RootFS:
    """A Linux root at PATH on this machine, with root-confined path resolution."""

    def __init__(self, path: str, mounts: t.Optional[list[tuple[str, str]]] = None) -> None:
        if not os.path.isabs(path):
            raise RootError(f'root must be an absolute path, got {path!r}')
        real = os.path.realpath(path)
        if not os.path.isdir(real):
            raise RootError(f'root {path} is not a directory')
        self.path = real
        self.live = real == '/'
        mounts = read_mounts() if mounts is None else mounts
        self._pseudo = []
        self._mount_points = set()
        for point, fstype in mounts:
            inner = self.inner(point)
            if inner is None or inner == '/':
                continue
            self._mount_points.add(inner)
            if fstype in PSEUDO_FILESYSTEMS:
                self._pseudo.append(inner)

    # -- paths -------------------------------------------------------------------------
    def inner(self, host_path: str) -> t.Optional[str]:
        """The guest path of HOST_PATH, or None when it is outside the root."""
        host_path = os.path.normpath(host_path)
        if self.path == '/':
            return host_path
        if host_path == self.path:
            return '/'
        if host_path.startswith(self.path + '/'):
            return host_path[len(self.path):]
        return None

    def host(self, path: str, follow: bool = False) -> str:
        """The path on this machine of the guest PATH, resolving links inside the root (the last
        component only when FOLLOW)."""
        if not path.startswith('/'):
            raise RootError(f'{path!r} is not an absolute path in the root')
        parts = [p for p in path.split('/') if p]
        resolved: list[str] = []
        links = 0
        while parts:
            part = parts.pop(0)
            if part == '.':
                continue
            if part == '..':
                if resolved:
                    resolved.pop()
                continue
            candidate = os.path.join(self.path, *resolved, part)
            if (parts or follow) and os.path.islink(candidate):
                links += 1
                if links > MAX_LINKS:
                    raise RootError(f'too many levels of symbolic links in {path}')
                target = os.readlink(candidate)
                if target.startswith('/'):
                    resolved = []
                parts = [p for p in target.split('/') if p] + parts
                continue
            resolved.append(part)
        return os.path.join(self.path, *resolved)

    def foreign(self, path: str) -> t.Optional[str]:
        """Why the guest PATH is not part of the root's own files (None when it is)."""
        for pseudo in self._pseudo:
            if path == pseudo or path.startswith(pseudo.rstrip('/') + '/'):
                return f'on a {pseudo} pseudo file system, not in the image'
        if path in self._mount_points and not os.path.isdir(self.host(path)):
            return 'a file mounted over from outside the root, not in the image'
        return None

    def mount_points(self) -> list[str]:
        """Guest paths where another file system is mounted below the root, sorted."""
        return sorted(self._mount_points)

    # -- reading -----------------------------------------------------------------------
    def lstat(self, path: str) -> t.Optional[os.stat_result]:
        """lstat of the guest PATH, None when missing."""
        try:
            return os.lstat(self.host(path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def is_file(self, path: str) -> bool:
        """Whether PATH is a regular file (not a link)."""
        st = self.lstat(path)
        return st is not None and stat.S_ISREG(st.st_mode)

    def is_dir(self, path: str) -> bool:
        """Whether PATH is a directory (a link to one counts when it resolves inside the root)."""
        try:
            return os.path.isdir(self.host(path.rstrip('/') + '/.'))
        except RootError:
            return False

    def exists(self, path: str) -> bool:
        """Whether PATH exists (a dangling link exists)."""
        return self.lstat(path) is not None

    def read_bytes(self, path: str, limit: int = 1 << 24, follow: bool = False) -> t.Optional[bytes]:
        """The first LIMIT bytes of the regular file PATH (a link to one when FOLLOW), None when it is not one."""
        try:
            fd = os.open(self.host(path, follow), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (OSError, RootError):
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            chunks, left = [], limit
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b''.join(chunks)
        finally:
            os.close(fd)

    def read_text(self, path: str, follow: bool = False) -> t.Optional[str]:
        """The content of the regular file PATH as text, None when it is not one."""
        data = self.read_bytes(path, follow=follow)
        return None if data is None else data.decode('utf-8', errors='surrogateescape')

    def listdir(self, path: str) -> list[str]:
        """Names in the directory PATH (sorted), empty when it is not a directory."""
        try:
            return sorted(os.listdir(self.host(path.rstrip('/') + '/.')))
        except (OSError, RootError):
            return []

    def glob(self, pattern: str) -> list[str]:
        """Guest paths matching PATTERN (fnmatch per component; ``**`` matches any depth), sorted."""
        parts = [p for p in pattern.split('/') if p]
        found: list[str] = []
        self._glob('/', parts, found)
        return sorted(set(found))

    def _glob(self, base: str, parts: list[str], found: list[str]) -> None:
        if not parts:
            if self.exists(base):
                found.append(base)
            return
        head, rest = parts[0], parts[1:]
        if head == '**':
            self._glob(base, rest, found)
            for name in self.listdir(base):
                child = os.path.join(base, name)
                if self.is_dir(child) and not os.path.islink(self.host(child)):
                    self._glob(child, parts, found)
            return
        if not any(c in head for c in '*?['):
            child = os.path.join(base, head)
            if rest:
                if self.is_dir(child):
                    self._glob(child, rest, found)
            elif self.exists(child):
                found.append(child)
            return
        for name in self.listdir(base):
            if name.startswith('.') and not head.startswith('.'):
                continue
            if fnmatch.fnmatchcase(name, head):
                child = os.path.join(base, name)
                if rest:
                    if self.is_dir(child):
                        self._glob(child, rest, found)
                else:
                    found.append(child)

    def walk(self, top: str, prune: t.Sequence[str] = ()) -> t.Iterator[tuple[str, list[str], list[str]]]:
        """Like os.walk of the guest directory TOP, top-down, never following links below TOP and
        never entering PRUNE or foreign trees."""
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                host = self.path if directory == '/' else self.host(directory.rstrip('/') + '/.')
                entries = list(os.scandir(host))
            except (OSError, RootError):
                continue
            dirs, files = [], []
            for entry in entries:
                child = os.path.join(directory, entry.name)
                if entry.is_dir(follow_symlinks=False):
                    if child not in prune and not self.foreign(child):
                        dirs.append(entry.name)
                else:
                    files.append(entry.name)
            dirs.sort()
            yield directory, dirs, sorted(files)
            stack.extend(os.path.join(directory, name) for name in reversed(dirs))

    # -- changing ----------------------------------------------------------------------
    def delete(self, path: str) -> None:
        """Remove PATH: a file or link is unlinked, a directory removed with what it holds."""
        host = self.host(path)
        st = self.lstat(path)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(host)
        else:
            os.unlink(host)

    def empty_dir(self, path: str) -> None:
        """Remove everything inside the directory PATH, keeping it."""
        for name in self.listdir(path):
            self.delete(os.path.join(path, name))

    def truncate(self, path: str) -> None:
        """Truncate the regular file PATH to zero bytes (never through a link)."""
        fd = os.open(self.host(path), os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise RootError(f'{path} is not a regular file')
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        """Atomically replace (or create) the regular file PATH with DATA, keeping its mode and owner."""
        host = self.host(path)
        st = self.lstat(path)
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise RootError(f'{path} is not a regular file; refusing to replace it')
        directory = os.path.dirname(host)
        fd, tmp = tempfile.mkstemp(prefix='.imageprep-', dir=directory)
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if st is not None:
                # chown clears set-user-ID and set-group-ID bits: chmod after it
                os.chown(tmp, st.st_uid, st.st_gid)
                os.chmod(tmp, stat.S_IMODE(st.st_mode))
                _copy_security_label(host, tmp)
            else:
                os.chmod(tmp, mode)
            try:
                os.rename(tmp, host)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                # a bind-mounted file cannot be renamed over; write it in place
                with open(host, 'r+b') as handle:
                    handle.truncate(0)
                    handle.write(data)
                os.unlink(tmp)
        except BaseException:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def symlink(self, target: str, path: str) -> None:
        """Make PATH a symbolic link to TARGET, replacing what is there."""
        host = self.host(path)
        tmp = os.path.join(os.path.dirname(host), f'.imageprep-link-{os.getpid()}')
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(target, tmp)
        os.rename(tmp, host)

    def makedirs(self, path: str, mode: int = 0o755) -> None:
        """Create the directory PATH and its parents inside the root."""
        os.makedirs(self.host(path), mode=mode, exist_ok=True)
