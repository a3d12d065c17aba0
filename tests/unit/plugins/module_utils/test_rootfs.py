# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""File operations confined to a root, on real directories, links and a canary outside the root."""
from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils._rootfs import RootError, RootFS, read_mounts

CANARY = b'this machine\'s own file: never touched\n'


def put(base, path: str, data: bytes = b'x\n', mode: int = 0o644) -> str:
    host = os.path.join(str(base), path.lstrip('/'))
    os.makedirs(os.path.dirname(host), exist_ok=True)
    with open(host, 'wb') as handle:
        handle.write(data)
    os.chmod(host, mode)
    return host


def link(base, path: str, target: str) -> str:
    host = os.path.join(str(base), path.lstrip('/'))
    os.makedirs(os.path.dirname(host), exist_ok=True)
    os.symlink(target, host)
    return host


@pytest.fixture()
def escape(tmp_path):
    """A root whose /var/log is an absolute link to the host path of a canary directory outside the root."""
    outside = tmp_path / 'outside'
    canary = put(outside, '/syslog', CANARY)
    put(outside, '/old/rotated.1', CANARY)
    root = tmp_path / 'root'
    root.mkdir()
    link(root, '/var/log', str(outside))
    # what the link means inside the root: ROOT + the link's target
    put(root, str(outside) + '/syslog', b'guest log\n')
    put(root, str(outside) + '/old/rotated.1', b'guest rotated log\n')
    return str(root), str(outside), canary


def test_absolute_link_resolves_inside_the_root(escape):
    root, outside, _canary = escape
    fs = RootFS(root, mounts=[])
    assert fs.host('/var/log/syslog') == root + outside + '/syslog'
    assert fs.read_bytes('/var/log/syslog') == b'guest log\n'
    assert fs.listdir('/var/log') == ['old', 'syslog']
    assert fs.glob('/var/log/*') == ['/var/log/old', '/var/log/syslog']


@pytest.mark.parametrize('operation', ['delete', 'delete_dir', 'empty_dir', 'truncate', 'write', 'write_new', 'symlink', 'makedirs'])
def test_operations_never_touch_the_canary_outside(escape, operation):
    root, outside, canary = escape
    fs = RootFS(root, mounts=[])
    if operation == 'delete':
        fs.delete('/var/log/syslog')
        assert not os.path.lexists(root + outside + '/syslog')
    elif operation == 'delete_dir':
        fs.delete('/var/log/old')
        assert not os.path.lexists(root + outside + '/old')
    elif operation == 'empty_dir':
        fs.empty_dir('/var/log')
        assert os.listdir(root + outside) == []
    elif operation == 'truncate':
        fs.truncate('/var/log/syslog')
        assert os.path.getsize(root + outside + '/syslog') == 0
    elif operation == 'write':
        fs.write('/var/log/syslog', b'new\n')
        with open(root + outside + '/syslog', 'rb') as handle:
            assert handle.read() == b'new\n'
    elif operation == 'write_new':
        fs.write('/var/log/new', b'new\n')
        assert os.path.isfile(root + outside + '/new')
    elif operation == 'symlink':
        fs.symlink('/etc/machine-id', '/var/log/syslog')
        assert os.readlink(root + outside + '/syslog') == '/etc/machine-id'
    elif operation == 'makedirs':
        fs.makedirs('/var/log/journal/abc')
        assert os.path.isdir(root + outside + '/journal/abc')
    with open(canary, 'rb') as handle:
        assert handle.read() == CANARY
    assert sorted(os.listdir(outside)) == ['old', 'syslog']
    with open(os.path.join(outside, 'old/rotated.1'), 'rb') as handle:
        assert handle.read() == CANARY


@pytest.mark.parametrize('target', ['/outside', '../../outside', '../../../../../../../../outside', '/../../outside'])
def test_links_up_and_out_stay_in_the_root(tmp_path, target):
    root = tmp_path / 'root'
    link(root, '/var/log', target)
    fs = RootFS(str(root), mounts=[])
    assert fs.host('/var/log/syslog') == f'{root}/outside/syslog'


@pytest.mark.parametrize('path, expected', [
    ('/../../../etc/passwd', '/etc/passwd'),
    ('/etc/../../../../etc/shadow', '/etc/shadow'),
    ('/var/./log/../../..', ''),
    ('//etc//hostname', '/etc/hostname'),
])
def test_dot_dot_cannot_escape(tmp_path, path, expected):
    fs = RootFS(str(tmp_path), mounts=[])
    assert fs.host(path) == os.path.join(str(tmp_path), *[p for p in expected.split('/') if p])


@pytest.mark.parametrize('links, path', [
    ({'/a': '/b', '/b': '/a'}, '/a/x'),
    ({'/a': 'a'}, '/a/x'),
    ({'/a': '/a/b'}, '/a/x'),
    ({'/etc/x': '../etc/x'}, '/etc/x/y'),
])
def test_link_loops_are_root_errors(tmp_path, links, path):
    for name, target in links.items():
        link(tmp_path, name, target)
    fs = RootFS(str(tmp_path), mounts=[])
    with pytest.raises(RootError, match='too many levels of symbolic links'):
        fs.host(path)
    assert fs.read_bytes(path) is None
    assert not fs.is_dir(path)


def test_relative_path_is_refused(tmp_path):
    with pytest.raises(RootError, match='not an absolute path'):
        RootFS(str(tmp_path), mounts=[]).host('etc/passwd')


@pytest.mark.parametrize('make, message', [
    (lambda p: 'relative/root', 'must be an absolute path'),
    (lambda p: str(p / 'missing'), 'is not a directory'),
    (lambda p: put(p, '/file'), 'is not a directory'),
])
def test_bad_roots(tmp_path, make, message):
    with pytest.raises(RootError, match=message):
        RootFS(make(tmp_path), mounts=[])


# -- the last component is never followed ------------------------------------------------
@pytest.fixture()
def linked(tmp_path):
    """A root with /etc/real (a file), /etc/link -> /etc/real and /etc/dirlink -> /etc/dir (a directory with a file)."""
    put(tmp_path, '/etc/real', b'real\n', 0o640)
    put(tmp_path, '/etc/dir/inside', b'inside\n')
    link(tmp_path, '/etc/link', '/etc/real')
    link(tmp_path, '/etc/dirlink', '/etc/dir')
    return RootFS(str(tmp_path), mounts=[]), tmp_path


@pytest.mark.parametrize('path', ['/etc/link', '/etc/dirlink'])
def test_delete_of_a_link_removes_the_link_only(linked, path):
    fs, base = linked
    fs.delete(path)
    assert not os.path.lexists(os.path.join(str(base), path.lstrip('/')))
    assert (base / 'etc/real').read_bytes() == b'real\n'
    assert (base / 'etc/dir/inside').read_bytes() == b'inside\n'


def test_truncate_of_a_link_is_refused(linked):
    fs, base = linked
    with pytest.raises((RootError, OSError)):
        fs.truncate('/etc/link')
    assert (base / 'etc/real').read_bytes() == b'real\n'


def test_truncate_of_a_directory_is_refused(linked):
    fs, _base = linked
    with pytest.raises((RootError, OSError)):
        fs.truncate('/etc/dir')


@pytest.mark.parametrize('path', ['/etc/link', '/etc/dirlink', '/etc/dir'])
def test_write_over_a_link_or_directory_is_refused(linked, path):
    fs, base = linked
    with pytest.raises(RootError, match='not a regular file'):
        fs.write(path, b'new\n')
    assert (base / 'etc/real').read_bytes() == b'real\n'
    assert os.path.islink(base / 'etc/link')
    assert not [n for n in os.listdir(base / 'etc') if n.startswith('.imageprep-')]


def test_reading_follows_the_last_link_only_when_asked(linked):
    fs, _base = linked
    assert fs.read_bytes('/etc/link') is None
    assert fs.read_bytes('/etc/link', follow=True) == b'real\n'
    assert fs.read_text('/etc/real') == 'real\n'
    assert fs.is_file('/etc/real') and not fs.is_file('/etc/link')
    assert fs.is_dir('/etc/dirlink') and fs.is_dir('/etc/dir') and not fs.is_dir('/etc/real')
    assert fs.exists('/etc/link') and not fs.exists('/etc/none')


def test_a_dangling_link_exists_and_is_deleted(tmp_path):
    link(tmp_path, '/var/lib/dbus/machine-id', '/etc/machine-id')
    fs = RootFS(str(tmp_path), mounts=[])
    assert fs.exists('/var/lib/dbus/machine-id')
    assert fs.read_bytes('/var/lib/dbus/machine-id', follow=True) is None
    fs.delete('/var/lib/dbus/machine-id')
    assert not os.path.lexists(tmp_path / 'var/lib/dbus/machine-id')


def test_delete_of_a_missing_path_is_a_no_op(tmp_path):
    (tmp_path / 'etc').mkdir()
    RootFS(str(tmp_path), mounts=[]).delete('/etc/nothing')
    assert os.listdir(tmp_path) == ['etc'] and os.listdir(tmp_path / 'etc') == []


def test_symlink_replaces_a_file(tmp_path):
    put(tmp_path, '/var/lib/dbus/machine-id', b'd9e984c3d26147e4b10833fd2a4f3d1a\n')
    fs = RootFS(str(tmp_path), mounts=[])
    fs.symlink('/etc/machine-id', '/var/lib/dbus/machine-id')
    assert os.readlink(tmp_path / 'var/lib/dbus/machine-id') == '/etc/machine-id'
    assert os.listdir(tmp_path / 'var/lib/dbus') == ['machine-id']


# -- atomic write ------------------------------------------------------------------------
@pytest.mark.parametrize('mode', [0o644, 0o600, 0o640, 0o444, 0o000, 0o4755, 0o2750], ids=lambda m: f'{m:04o}')
def test_write_replaces_atomically_keeping_mode_and_owner(tmp_path, mode):
    host = put(tmp_path, '/etc/shadow', b'root:$6$old:19000::::::\n')
    os.chown(host, 1234, 42)
    os.chmod(host, mode)
    inode = os.stat(host).st_ino
    RootFS(str(tmp_path), mounts=[]).write('/etc/shadow', b'root:*:19000::::::\n')
    st = os.lstat(host)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (mode, 1234, 42)
    assert stat.S_ISREG(st.st_mode)
    assert st.st_ino != inode, 'replaced by rename, not rewritten in place'
    with open(host, 'rb') as handle:
        assert handle.read() == b'root:*:19000::::::\n'
    assert os.listdir(tmp_path / 'etc') == ['shadow']


@pytest.mark.parametrize('mode', [0o444, 0o755])
def test_write_creates_a_new_file_with_the_given_mode(tmp_path, mode):
    (tmp_path / 'etc').mkdir()
    RootFS(str(tmp_path), mounts=[]).write('/etc/machine-id', b'uninitialized\n', mode=mode)
    assert stat.S_IMODE(os.stat(tmp_path / 'etc/machine-id').st_mode) == mode
    assert (tmp_path / 'etc/machine-id').read_bytes() == b'uninitialized\n'


def test_truncate_keeps_the_file(tmp_path):
    host = put(tmp_path, '/var/log/wtmp', b'\0' * 384, 0o664)
    os.chown(host, 0, 43)
    inode = os.stat(host).st_ino
    RootFS(str(tmp_path), mounts=[]).truncate('/var/log/wtmp')
    st = os.stat(host)
    assert (st.st_size, st.st_ino, stat.S_IMODE(st.st_mode), st.st_gid) == (0, inode, 0o664, 43)


# -- glob --------------------------------------------------------------------------------
@pytest.fixture()
def logs(tmp_path):
    for path in ('/var/log/syslog', '/var/log/syslog.1', '/var/log/.hidden', '/var/log/apt/history.log',
                 '/var/log/apt/history.log.1.gz', '/var/log/apt/.swap.log', '/var/log/a/b/c/deep.log',
                 '/elsewhere/linked.log', '/home/u/.ssh/id_ed25519', '/home/u/.ssh/id_ed25519.pub', '/home/v/.bash_history'):
        put(tmp_path, path)
    link(tmp_path, '/var/log/linked', '/elsewhere')
    return RootFS(str(tmp_path), mounts=[])


@pytest.mark.parametrize('pattern, expected', [
    ('/var/log/*', ['/var/log/a', '/var/log/apt', '/var/log/linked', '/var/log/syslog', '/var/log/syslog.1']),
    ('/var/log/.*', ['/var/log/.hidden']),
    ('/var/log/*.[0-9]', ['/var/log/syslog.1']),
    ('/var/log/**/*.log', ['/var/log/a/b/c/deep.log', '/var/log/apt/history.log']),
    ('/var/log/**/*.gz', ['/var/log/apt/history.log.1.gz']),
    ('/var/log/**/.*', ['/var/log/.hidden', '/var/log/apt/.swap.log']),
    ('/var/log/syslog', ['/var/log/syslog']),
    ('/var/log/missing', []),
    ('/home/*/.ssh/id_*', ['/home/u/.ssh/id_ed25519', '/home/u/.ssh/id_ed25519.pub']),
    ('/home/*/.bash_history', ['/home/v/.bash_history']),
    # a literal path through a link inside the root is followed (the way the guest sees it)
    ('/var/log/linked/*.log', ['/var/log/linked/linked.log']),
])
def test_glob(logs, pattern, expected):
    assert logs.glob(pattern) == expected


def test_double_star_does_not_descend_through_links(logs):
    assert '/var/log/linked/linked.log' not in logs.glob('/var/log/**/*')
    assert '/var/log/linked' in logs.glob('/var/log/**/*')


# -- foreign files and pseudo file systems -----------------------------------------------
@pytest.fixture()
def mounted(tmp_path):
    root = str(tmp_path)
    put(tmp_path, '/etc/hostname', b'container\n')
    put(tmp_path, '/etc/hosts', b'127.0.0.1 localhost\n')
    for directory in ('/proc/1', '/sys/kernel', '/run/lock', '/home/u', '/dev/shm', '/procedure'):
        os.makedirs(os.path.join(root, directory.lstrip('/')), exist_ok=True)
    mounts = [(root, 'overlay'), (f'{root}/proc', 'proc'), (f'{root}/sys', 'sysfs'), (f'{root}/run', 'tmpfs'),
              (f'{root}/dev/shm', 'tmpfs'), (f'{root}/etc/hostname', 'ext4'), (f'{root}/home', 'ext4'),
              ('/elsewhere/proc', 'proc'), ('/', 'ext4')]
    return RootFS(root, mounts=mounts)


@pytest.mark.parametrize('path, why', [
    ('/proc', 'pseudo file system'),
    ('/proc/1', 'pseudo file system'),
    ('/sys/kernel', 'pseudo file system'),
    ('/run/lock', 'pseudo file system'),
    ('/dev/shm', 'pseudo file system'),
    ('/etc/hostname', 'mounted over from outside the root'),
    ('/etc/hosts', None),
    ('/home/u', None),
    ('/home', None),
    ('/procedure', None),
    ('/elsewhere/proc', None),
    ('/', None),
])
def test_foreign(mounted, path, why):
    found = mounted.foreign(path)
    if why is None:
        assert found is None
    else:
        assert why in found


def test_live_root_foreign_uses_the_mount_table(tmp_path):
    fs = RootFS('/', mounts=[('/', 'ext4'), ('/proc', 'proc'), ('/sys/fs/cgroup', 'cgroup2'), ('/boot', 'vfat')])
    assert fs.live
    assert 'pseudo' in fs.foreign('/proc/self/mountinfo')
    assert 'pseudo' in fs.foreign('/sys/fs/cgroup/x')
    assert fs.foreign('/sys/kernel') is None
    assert fs.foreign('/boot') is None
    assert not RootFS(str(tmp_path), mounts=[]).live


def test_read_mounts_unescapes_mount_points(tmp_path):
    mountinfo = tmp_path / 'mountinfo'
    mountinfo.write_text(
        '22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n'
        '23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw\n'
        '60 22 8:2 / /mnt/my\\040image rw,relatime shared:30 - xfs /dev/sdb1 rw\n'
        '61 60 0:5 / /mnt/my\\040image/dev rw master:2 - devtmpfs udev rw\n'
        'garbage\n', encoding='utf-8')
    assert read_mounts(str(mountinfo)) == [('/', 'ext4'), ('/proc', 'proc'), ('/mnt/my image', 'xfs'),
                                           ('/mnt/my image/dev', 'devtmpfs')]
    assert read_mounts(str(tmp_path / 'missing')) == []


@pytest.mark.parametrize('host, inner', [
    ('ROOT', '/'), ('ROOT/etc/hostname', '/etc/hostname'), ('ROOT/etc/../etc/hosts', '/etc/hosts'),
    ('ROOTx/etc', None), ('/etc/hostname', None),
])
def test_inner(tmp_path, host, inner):
    root = str(tmp_path / 'r')
    os.mkdir(root)
    assert RootFS(root, mounts=[]).inner(host.replace('ROOT', root)) == inner


# -- walk --------------------------------------------------------------------------------
def test_walk_does_not_follow_links(tmp_path):
    put(tmp_path, '/srv/app/config.yml')
    put(tmp_path, '/srv/app/keys/deploy.key')
    put(tmp_path, '/srv/skip/secret')
    put(tmp_path, '/data/elsewhere.txt')
    link(tmp_path, '/srv/app/data', '/data')
    link(tmp_path, '/srv/app/root', '/')
    link(tmp_path, '/srv/app/loop', '/srv')
    fs = RootFS(str(tmp_path), mounts=[])
    walked = list(fs.walk('/srv', prune=('/srv/skip',)))
    assert walked == [
        ('/srv', ['app'], []),
        ('/srv/app', ['keys'], ['config.yml', 'data', 'loop', 'root']),
        ('/srv/app/keys', [], ['deploy.key']),
    ]


def test_walk_skips_foreign_trees(mounted):
    tops = [directory for directory, _dirs, _files in mounted.walk('/')]
    assert '/proc' not in tops and '/sys/kernel' not in tops and '/run/lock' not in tops
    assert '/home/u' in tops and '/etc' in tops and '/procedure' in tops
