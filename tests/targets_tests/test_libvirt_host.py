# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The libvirt test host is real: the daemon answers, domains hold QEMU's locks on their disks while they run, and go away."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import typing as t

import pytest

import libvirt_host

LOCK_ERROR = 'Failed to get shared "write" lock'


@pytest.fixture(name='libvirt_daemon', scope='module', autouse=True)
def fixture_libvirt_daemon() -> libvirt_host.DaemonStatus:
    """The system daemon, started unless it answers, before any test here; test domains of dead runs removed."""
    status = libvirt_host.ensure_daemon()
    libvirt_host.cleanup_stale()
    return status


@pytest.fixture(name='test_disks')
def fixture_test_disks(tmp_path: pathlib.Path) -> dict[str, pathlib.Path]:
    """A 64 MiB qcow2 OS disk and a 16 MiB raw data disk, empty."""
    disks = {'os': tmp_path / 'os.qcow2', 'data': tmp_path / 'data.raw'}
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(disks['os']), '64M'], check=True)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', str(disks['data']), '16M'], check=True)
    return disks


def define_on(disks: dict[str, pathlib.Path], workdir: pathlib.Path, name: str | None = None) -> libvirt_host.LibvirtDomain:
    """Define a small domain on the test disks (OS disk vda, data disk vdb)."""
    return libvirt_host.LibvirtDomain.define(name, [{'path': disks['os'], 'format': 'qcow2'}, {'path': disks['data'], 'format': 'raw'}],
                                             workdir, memory_mib=128)


@pytest.fixture(name='domain')
def fixture_domain(test_disks: dict[str, pathlib.Path], tmp_path: pathlib.Path) -> t.Iterator[libvirt_host.LibvirtDomain]:
    """A domain defined on the test disks; destroyed and undefined afterwards, whatever the test did."""
    with define_on(test_disks, tmp_path / 'domain') as defined:
        yield defined
    assert not defined.exists()


def qemu_img(*args: str) -> subprocess.CompletedProcess:
    """Run qemu-img with ARGS; return the CompletedProcess."""
    return subprocess.run(['qemu-img', *args], capture_output=True, text=True, check=False)


def copy_error(image: pathlib.Path, image_format: str, tmp_path: pathlib.Path) -> str:
    """Copy IMAGE with ``qemu-img convert``; return its error output ('' when the copy worked)."""
    copy = tmp_path / f'copy-of-{image.name}.raw'
    result = qemu_img('convert', '-f', image_format, '-O', 'raw', str(image), str(copy))
    copy.unlink(missing_ok=True)
    return '' if result.returncode == 0 else result.stderr


def domain_names() -> list[str]:
    """Return the names of every domain libvirt knows."""
    return libvirt_host.virsh('list', '--all', '--name').stdout.split()


def test_daemon_answers_and_a_second_call_finds_it_running(libvirt_daemon):
    assert libvirt_daemon.libvirtd in ('running', 'started')
    assert libvirt_daemon.virtlogd in ('running', 'started')
    assert libvirt_daemon.hypervisor.startswith('QEMU')
    again = libvirt_host.ensure_daemon()
    assert (again.virtlogd, again.libvirtd) == ('running', 'running')
    assert libvirt_host.virsh('list').returncode == 0


def test_daemon_is_safe_to_ensure_from_several_threads():
    results: list[object] = []

    def ensure() -> None:
        try:
            results.append(libvirt_host.ensure_daemon())
        except libvirt_host.LibvirtHostError as exc:
            results.append(exc)

    threads = [threading.Thread(target=ensure) for _index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [type(result) for result in results] == [libvirt_host.DaemonStatus] * 4, results


def test_defined_domain_lists_both_disks_and_is_off(domain, test_disks):
    assert domain.name.startswith(f'imageprep-test-{os.getpid()}-')
    assert domain.name in domain_names()
    assert domain.block_devices() == {'vda': str(test_disks['os']), 'vdb': str(test_disks['data'])}
    assert domain.state() == 'shut off'
    assert "<domain type='qemu'" in domain.dumpxml()


def test_running_domain_locks_its_disks_until_destroyed(domain, test_disks, tmp_path, request):
    start = time.monotonic()
    domain.start()
    request.node.user_properties.append(('start', f'{time.monotonic() - start:.2f}s'))
    assert domain.state() == 'running'
    # a qcow2 cannot even be inspected while QEMU holds it; a raw file can, but not be copied
    info = qemu_img('info', str(test_disks['os']))
    assert info.returncode != 0 and LOCK_ERROR in info.stderr, info
    assert LOCK_ERROR in copy_error(test_disks['os'], 'qcow2', tmp_path)
    assert LOCK_ERROR in copy_error(test_disks['data'], 'raw', tmp_path)

    assert domain.destroy() is True
    assert domain.state() == 'shut off'
    assert qemu_img('info', str(test_disks['os'])).returncode == 0
    assert copy_error(test_disks['os'], 'qcow2', tmp_path) == ''
    assert copy_error(test_disks['data'], 'raw', tmp_path) == ''
    assert domain.destroy() is False


def test_paused_domain_keeps_its_locks(domain, test_disks, tmp_path):
    domain.start()
    domain.suspend()
    assert domain.state() == 'paused'
    assert LOCK_ERROR in copy_error(test_disks['os'], 'qcow2', tmp_path)
    domain.resume()
    assert domain.state() == 'running'


def test_undefine_removes_the_domain_but_keeps_its_disks(test_disks, tmp_path):
    defined = define_on(test_disks, tmp_path / 'domain')
    try:
        defined.start()
        defined.destroy()
        assert not defined.undefine()
        assert defined.name not in domain_names()
        assert not defined.exists()
        assert test_disks['os'].exists() and test_disks['data'].exists()
        assert (tmp_path / 'domain' / 'qemu.log').exists(), "QEMU's log is kept with the domain's files"
    finally:
        defined.cleanup()


def test_undefine_removes_disks_only_when_asked(test_disks, tmp_path):
    defined = define_on(test_disks, tmp_path / 'domain')
    try:
        removed = defined.undefine(remove_storage=True)
    finally:
        defined.cleanup()
    assert sorted(removed) == sorted(test_disks.values())
    assert not any(path.exists() for path in test_disks.values())


def test_context_manager_cleans_up_when_the_test_fails(test_disks, tmp_path):
    with pytest.raises(RuntimeError, match='the test failed'):
        with define_on(test_disks, tmp_path / 'domain') as defined:
            defined.start()
            raise RuntimeError('the test failed')
    assert defined.name not in domain_names()
    assert copy_error(test_disks['os'], 'qcow2', tmp_path) == ''


def test_cleanup_stale_removes_domains_of_dead_runs_only(test_disks, tmp_path):
    with subprocess.Popen(['true']) as finished:
        finished.wait()
    dead_name = f'{libvirt_host.TEST_DOMAIN_PREFIX}{finished.pid}-abc123-killed-run'
    assert libvirt_host.owner_pid(dead_name) == finished.pid
    live_disks = {'os': tmp_path / 'live.qcow2', 'data': test_disks['data']}
    shutil.copyfile(test_disks['os'], live_disks['os'])
    with define_on(test_disks, tmp_path / 'dead', name=dead_name) as dead, define_on(live_disks, tmp_path / 'live') as live:
        dead.start()
        removed = libvirt_host.cleanup_stale()
        assert dead_name in removed
        assert live.name not in removed
        assert dead_name not in domain_names()
        assert live.exists()
    assert copy_error(test_disks['os'], 'qcow2', tmp_path) == ''


# -- starting the daemon from nothing, away from the host's daemon ----------------------

NAMESPACED_ENSURE = textwrap.dedent('''\
    import json, os, pathlib, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    import libvirt_host
    # a private /run: no daemon answers here, and the host's daemon is not disturbed
    subprocess.run(['mount', '-t', 'tmpfs', 'imageprep-test-run', '/run'], check=True)
    if len(sys.argv) > 2:
        subprocess.run(['mount', '--bind', sys.argv[2], '/etc/libvirt/qemu.conf'], check=True)
    report = {}
    try:
        status = libvirt_host.ensure_daemon(timeout=20)
        report = {'virtlogd': status.virtlogd, 'libvirtd': status.libvirtd, 'seconds': status.seconds,
                  'answers': libvirt_host.daemon_answers()}
    except libvirt_host.LibvirtHostError as exc:
        report = {'error': str(exc)}
    report['left_running'] = [name for name in ('virtlogd', 'libvirtd') if libvirt_host.daemon_pid(name) is not None]
    for name in ('libvirtd', 'virtlogd'):
        libvirt_host._stop_daemon(name)
    print(json.dumps(report))
''')


def ensure_in_private_run(tmp_path: pathlib.Path, qemu_conf: pathlib.Path | None = None) -> dict[str, t.Any]:
    """Run ensure_daemon() in a mount namespace with an empty /run (and QEMU_CONF over qemu.conf); return its report."""
    script = tmp_path / 'ensure_in_private_run.py'
    script.write_text(NAMESPACED_ENSURE, encoding='utf-8')
    command = ['unshare', '--mount', '--propagation', 'private', sys.executable, str(script), str(pathlib.Path(libvirt_host.__file__).parent)]
    if qemu_conf:
        command.append(str(qemu_conf))
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_daemon_starts_from_nothing(tmp_path, request):
    report = ensure_in_private_run(tmp_path)
    request.node.user_properties.append(('daemon start', f'{report.get("seconds", 0):.2f}s'))
    assert report.get('error') is None, report['error']
    assert (report['virtlogd'], report['libvirtd'], report['answers']) == ('started', 'started', True)
    assert report['left_running'] == ['virtlogd', 'libvirtd']


def test_failed_start_stops_what_it_started_and_shows_the_log(tmp_path):
    qemu_conf = tmp_path / 'qemu.conf'
    qemu_conf.write_text('user = "imageprep-no-such-user"\n', encoding='utf-8')
    report = ensure_in_private_run(tmp_path, qemu_conf)
    assert 'libvirtd exited' in report.get('error', ''), report
    assert 'imageprep-no-such-user' in report['error'], 'the error carries the daemon log'
    assert report['left_running'] == []
