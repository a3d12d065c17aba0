# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run the collection's modules as real processes, the way Ansible runs them on a host, and make test disks.

A module runs as ``python -m ansible_collections.imageprep.vm.plugins.modules.NAME ARGS.json``
with ``ARGS.json`` = ``{"ANSIBLE_MODULE_ARGS": {...}}`` and the collection found through
``PYTHONPATH`` (the first entry of ``ANSIBLE_COLLECTIONS_PATH``, the synced copy ``make``
prepares). Each run is the leader of its own process group, so a test can kill it together with
the ``qemu-img`` it started, as a power cut or the OOM killer would.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import typing as t

MIB = 1024 * 1024
MODULE_PACKAGE = 'ansible_collections.imageprep.vm.plugins.modules'
# bound for one module run; the largest capture here takes 1-3 s
RUN_TIMEOUT = 300.0
# bound for the kernel to finish off a killed process group
GROUP_EXIT_TIMEOUT = 10.0


def collections_root() -> str:
    """Return the first entry of ANSIBLE_COLLECTIONS_PATH, where ``ansible_collections/imageprep/vm`` lives."""
    first = os.environ.get('ANSIBLE_COLLECTIONS_PATH', '').split(os.pathsep)[0]
    if not first or not os.path.isdir(os.path.join(first, 'ansible_collections', 'imageprep', 'vm')):
        raise RuntimeError('ANSIBLE_COLLECTIONS_PATH must name the directory holding ansible_collections/imageprep/vm '
                           '(make integration sets it)')
    return first


def live_group_members(pgid: int) -> list[int]:
    """Return the processes of group PGID that are not zombies (a zombie holds no files or locks)."""
    members = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat', encoding='utf-8', errors='replace') as handle:
                stat = handle.read()
        except OSError:  # the process ended while we looked
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat[stat.rindex(')') + 2:].split()
        if int(fields[2]) == pgid and fields[0] != 'Z':
            members.append(int(entry))
    return members


class ModuleProcess:
    """One module run, started at once in a new session (its own process group)."""

    def __init__(self, module: str, args: dict[str, t.Any], workdir: pathlib.Path,
                 env: t.Optional[dict[str, t.Optional[str]]] = None) -> None:
        self.module = module
        # ENV is laid over this process's environment; a key set to None is removed
        environment = dict(os.environ, PYTHONPATH=collections_root())
        for key, value in (env or {}).items():
            if value is None:
                environment.pop(key, None)
            else:
                environment[key] = value
        workdir.mkdir(parents=True, exist_ok=True)
        fd, args_file = tempfile.mkstemp(prefix=f'{module}-', suffix='.json', dir=workdir)
        with os.fdopen(fd, 'w', encoding='utf-8') as handle:
            json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
        self.started = time.monotonic()
        self.seconds: t.Optional[float] = None
        self.process = subprocess.Popen(  # pylint: disable=consider-using-with  # ended in result() or kill_group()
            [sys.executable, '-m', f'{MODULE_PACKAGE}.{module}', args_file],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env=environment)

    def __enter__(self) -> 'ModuleProcess':
        return self

    def __exit__(self, *exc_info: t.Any) -> None:
        if self.process.returncode is None:
            self.kill_group()

    def finished(self) -> bool:
        """Return True when the module process has exited."""
        return self.process.poll() is not None

    def result(self, timeout: float = RUN_TIMEOUT) -> dict[str, t.Any]:
        """Wait for the run and return its JSON result, with the exit status as ``rc``."""
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            raise AssertionError(f'{self.module} did not finish within {timeout} s') from None
        self.seconds = time.monotonic() - self.started
        try:
            result = json.loads(out)
        except ValueError:
            raise AssertionError(f'{self.module} printed no JSON result (exit {self.process.returncode}):\n{out}\n{err}') from None
        result['rc'] = self.process.returncode
        return result

    def kill_group(self) -> None:
        """SIGKILL the module and everything it started (its process group), and wait until they are gone."""
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.process.communicate()
        deadline = time.monotonic() + GROUP_EXIT_TIMEOUT
        while live_group_members(pgid):
            if time.monotonic() > deadline:
                raise AssertionError(f'processes {live_group_members(pgid)} of the killed group {pgid} are still alive')
            time.sleep(0.01)


def run_module(module: str, args: dict[str, t.Any], workdir: pathlib.Path,
               env: t.Optional[dict[str, t.Optional[str]]] = None) -> dict[str, t.Any]:
    """Run MODULE with ARGS (and ENV laid over this process's environment) to its end and return its result (``rc`` added)."""
    with ModuleProcess(module, args, workdir, env) as run:
        return run.result()


def capture(workdir: pathlib.Path, **args: t.Any) -> dict[str, t.Any]:
    """Run local_image with ARGS (the library and the sources among them) and return its result."""
    return run_module('local_image', args, workdir)


def make_disk(path: pathlib.Path, fmt: str, virtual_size: int, writes: t.Sequence[tuple[int, int, int]],
              compressed: bool = False) -> pathlib.Path:
    """Create a sparse disk with ``qemu-img create`` and fill it with ``qemu-io`` writes.

    WRITES holds (byte pattern, offset, length) triples; COMPRESSED writes qcow2 clusters
    compressed, so a disk holds much more data than it allocates.
    """
    subprocess.run(['qemu-img', 'create', '-q', '-f', fmt, str(path), str(virtual_size)], check=True)
    commands = []
    for pattern, offset, length in writes:
        commands += ['-c', f"write {'-c ' if compressed else ''}-P 0x{pattern:02x} {offset} {length}"]
    if commands:
        subprocess.run(['qemu-io', '-f', fmt] + commands + [str(path)], check=True, capture_output=True, text=True)
    return path
