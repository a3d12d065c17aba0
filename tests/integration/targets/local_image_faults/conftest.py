# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures of the fault tests: scratch directories, a tiny tmpfs, paused QEMU processes.

Each fixture undoes what it made (unmounts, kills, removes) even when its test fails.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t

import pytest

TARGETS = pathlib.Path(os.environ.get('IMAGEPREP_TEST_TARGETS') or pathlib.Path(__file__).resolve().parents[3] / 'targets')
if str(TARGETS) not in sys.path:
    sys.path.insert(0, str(TARGETS))

import measurement_summary  # noqa: E402  pylint: disable=wrong-import-position
import mount_table  # noqa: E402  pylint: disable=wrong-import-position

TMPFS_SIZE = '32m'
# QEMU under TCG with -S reaches its monitor in well under a second; the bound is for a busy host
QEMU_READY_TIMEOUT = 60.0


@pytest.fixture
def scratch() -> t.Iterator[pathlib.Path]:
    """A fresh directory on the host's disk, removed afterwards (after unmounting anything under it)."""
    path = pathlib.Path(tempfile.mkdtemp(prefix='local-image-faults-'))
    try:
        yield path
    finally:
        mount_table.remove_scratch(path)


@pytest.fixture
def small_tmpfs(scratch: pathlib.Path) -> t.Iterator[pathlib.Path]:
    """A 32 MiB tmpfs mounted in the scratch directory, unmounted afterwards."""
    assert os.geteuid() == 0, 'mounting a tmpfs needs root (the target has the alias needs/root)'
    point = scratch / 'small-fs'
    point.mkdir()
    subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={TMPFS_SIZE},mode=0700', 'tmpfs', str(point)], check=True)
    try:
        yield point
    finally:
        mount_table.unmount(str(point))


class PausedQemu:
    """A QEMU process stopped before its first instruction (-S), holding its disk's image lock."""

    def __init__(self, disk: pathlib.Path, fmt: str, workdir: pathlib.Path) -> None:
        self.monitor = workdir / f'qmp-{disk.name}.sock'
        self.log = workdir / f'qemu-{disk.name}.log'
        with open(self.log, 'wb') as log:
            self.process = subprocess.Popen(  # pylint: disable=consider-using-with  # ended in stop()
                ['qemu-system-x86_64', '-accel', 'tcg', '-display', 'none', '-S', '-nodefaults',
                 '-drive', f'file={disk},format={fmt},if=virtio',
                 '-qmp', f'unix:{self.monitor},server=on,wait=off'],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> dict[str, t.Any]:
        """Wait until QEMU answers ``query-status`` on QMP: it answers only after its devices (and disks) are set up."""
        deadline = time.monotonic() + QEMU_READY_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f'QEMU exited ({self.process.returncode}): {self.log.read_text(errors="replace")}')
            if time.monotonic() > deadline:
                raise AssertionError(f'QEMU did not answer on {self.monitor} within {QEMU_READY_TIMEOUT} s')
            try:
                return self._query_status()
            except OSError:
                time.sleep(0.05)

    def _query_status(self) -> dict[str, t.Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(QEMU_READY_TIMEOUT)
            connection.connect(str(self.monitor))
            stream = connection.makefile('rw', encoding='utf-8')
            stream.readline()  # the greeting
            answer: dict[str, t.Any] = {}
            for command in ('qmp_capabilities', 'query-status'):
                stream.write(json.dumps({'execute': command}) + '\n')
                stream.flush()
                answer = {}
                while 'return' not in answer and 'error' not in answer:
                    line = stream.readline()
                    if not line:
                        raise ConnectionResetError('QEMU closed the monitor')
                    answer = json.loads(line)
            return answer['return']

    def running(self) -> bool:
        """Return True while the QEMU process lives."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Kill QEMU (and anything it started) and wait for it."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


@pytest.fixture
def paused_qemu(scratch: pathlib.Path) -> t.Iterator[t.Callable[[pathlib.Path, str], PausedQemu]]:
    """A function that starts a paused QEMU on a disk and returns it once it holds the disk; all are killed afterwards."""
    started: list[PausedQemu] = []

    def start(disk: pathlib.Path, fmt: str) -> PausedQemu:
        vm = PausedQemu(disk, fmt, scratch)
        started.append(vm)
        vm.wait_ready()
        return vm

    try:
        yield start
    finally:
        for vm in started:
            vm.stop()


# Capture times, kill points and what each kill left behind.
pytest_runtest_logreport, pytest_terminal_summary = measurement_summary.hooks('local_image fault measurements')
