# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A capture killed with SIGKILL at any point leaves no half image visible, and the next run removes its leftovers."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import sqlite3
import tempfile
import time
import typing as t

import pytest

from library_checks import CATALOGUE, STAGING, assert_library_consistent, image_problems, leftovers, read_catalogue
from module_runs import MIB, ModuleProcess, capture, make_disk, run_module

NAME = 'killed'
KILLS = 8
FIRST_KILL = 0.05
# the last kill lands this far into an uninterrupted run: just before it ends
LAST_KILL_FRACTION = 0.95
# how often an uninterrupted run is looked at, to time its phases
WATCH_INTERVAL = 0.005
# below this an uninterrupted capture is too short to be killed in its middle on purpose
SHORTEST_USEFUL_CAPTURE = 0.5
# 3 extents of 200 MiB in a 1 GiB raw disk: an uninterrupted capture takes about 1 s on a quiet machine
# (with 300 MiB it once took 0.499 s, too short for the kills to land in its middle)
EXTENTS = [(0x11 + index, index * 256 * MIB, 200 * MIB) for index in range(3)]
JOURNAL = CATALOGUE + '-journal'
# bound for a capture to reach a given point (it takes about 1 s in all)
REACH_TIMEOUT = 60.0
# a module that renamed its files into place reaches the catalogue lock well within this
SETTLE = 0.3
# How a test's own SQLite connection stops a capture at the catalogue: with a reserved lock
# (BEGIN IMMEDIATE) the module waits to begin its transaction, its files renamed into place; with
# a reader's shared lock it begins, writes its rollback journal, and waits to commit.
CATALOGUE_HOLDS = {
    'before its transaction begins': 'BEGIN IMMEDIATE',
    'inside its commit (journal written)': 'BEGIN DEFERRED',
}


@dataclasses.dataclass
class Milestones:
    """When an uninterrupted capture reached each phase, in seconds after its start."""

    staging: float
    published: float
    ended: float


@dataclasses.dataclass
class KillOutcome:
    """Where one kill landed and what the next run did about it."""

    delay: float
    version: str
    landed: str
    left: set[str]
    rerun_changed: bool


def watch_capture(run: ModuleProcess, library: pathlib.Path, name_dir: pathlib.Path) -> Milestones:
    """Follow an uninterrupted run: when its staging directory appears, when its image directory does, when it ends."""
    before = set(os.listdir(name_dir)) if name_dir.is_dir() else set()
    staging = published = None
    while not run.finished():
        elapsed = time.monotonic() - run.started
        if staging is None and (library / STAGING).is_dir() and os.listdir(library / STAGING):
            staging = elapsed
        if published is None and name_dir.is_dir() and set(os.listdir(name_dir)) - before:
            published = elapsed
        time.sleep(WATCH_INTERVAL)
    ended = time.monotonic() - run.started
    return Milestones(staging if staging is not None else ended, published if published is not None else ended, ended)


def kill_delays(milestones: Milestones) -> list[float]:
    """FIRST_KILL (while the module starts), then the others spread from the staging directory's appearance to just before the end."""
    start, last = milestones.staging, milestones.ended * LAST_KILL_FRACTION
    return [FIRST_KILL] + [start + (last - start) * index / (KILLS - 2) for index in range(KILLS - 1)]


def where_the_kill_landed(library: pathlib.Path, version: str, ended_first: bool, left: set[str], committed: bool) -> str:
    """Name the phase of the capture a kill interrupted, from what it left on disk."""
    if ended_first:
        return 'after the run ended'
    if committed:
        return 'after the catalogue commit'
    staged = [entry for entry in left if entry.startswith(str(library / STAGING))]
    if staged:
        written = sum(path.stat().st_blocks * 512 for entry in staged for path in pathlib.Path(entry).rglob('*') if path.is_file())
        return f'staging ({written // MIB} MiB written)'
    if left:
        return 'renamed into place, not committed'
    return f'before staging of {version}'


@pytest.fixture(scope='module')
def source_disk() -> t.Iterator[pathlib.Path]:
    """A raw disk with 600 MiB of data in a 1 GiB virtual size, shared by this file's tests (they only read it)."""
    directory = pathlib.Path(tempfile.mkdtemp(prefix='local-image-kill-source-'))
    try:
        source = make_disk(directory / 'source.raw', 'raw', 1024 * MIB, EXTENTS)
        # written back now: ext4 would otherwise flush it in the first capture's fsync and make that run look slow
        os.sync()
        yield source
    finally:
        shutil.rmtree(directory)


def wait_for(condition: t.Callable[[], bool], run: ModuleProcess, what: str) -> None:
    """Poll CONDITION until it holds; fail when RUN ends first or REACH_TIMEOUT passes."""
    deadline = time.monotonic() + REACH_TIMEOUT
    while not condition():
        assert not run.finished(), f'the capture ended before {what}: {run.result()}'
        assert time.monotonic() < deadline, f'the capture did not reach {what} within {REACH_TIMEOUT} s'
        time.sleep(WATCH_INTERVAL)


def test_sigkill_at_any_point_of_a_capture_leaves_the_library_consistent(source_disk, scratch, request):
    source = source_disk
    library = scratch / 'library'
    runs = scratch / 'runs'
    arguments = {'name': NAME, 'library': str(library), 'disks': [str(source)]}

    with ModuleProcess('local_image', dict(arguments, version='1.0.0'), runs) as first:
        milestones = watch_capture(first, library, library / NAME)
        result = first.result()
    assert result['rc'] == 0 and result['changed'], result
    request.node.user_properties.append(
        ('uninterrupted capture', f'{milestones.ended:.2f} s (600 MiB of data to qcow2): staging from {milestones.staging:.2f} s, '
                                  f'renamed into place at {milestones.published:.2f} s'))
    assert milestones.ended > SHORTEST_USEFUL_CAPTURE, f'a capture took {milestones.ended:.2f} s: too short to kill it in its middle'
    assert_library_consistent(library)

    outcomes = []
    for index, delay in enumerate(kill_delays(milestones)):
        version = f'1.1.{index}'
        step = dict(arguments, version=version)
        with ModuleProcess('local_image', step, runs) as run:
            time.sleep(max(0.0, run.started + delay - time.monotonic()))
            ended_first = run.finished()
            run.kill_group()

        images = read_catalogue(library)
        rows = [image for image in images if image['name'] == NAME and image['version'] == version]
        for image in rows:  # a row is visible only when it is whole
            assert not image_problems(library, image), image_problems(library, image)
            assert [disk['source'] for disk in image['disks']] == [str(source)]
        left = leftovers(library, images)
        landed = where_the_kill_landed(library, version, ended_first, left, bool(rows))

        rerun = capture(runs, **step)
        assert rerun['rc'] == 0, f'the run after a kill at {delay:.2f} s ({landed}) failed: {rerun}'
        assert set(rerun['cleaned']) == left, f'kill at {delay:.2f} s ({landed})'
        assert rerun['image']['version'] == version
        assert rerun['changed'] is not bool(rows), f'kill at {delay:.2f} s ({landed}): {rerun["msg"]}'
        assert_library_consistent(library, rehash={(NAME, version)})
        outcomes.append(KillOutcome(delay, version, landed, left, rerun['changed']))

    for outcome in outcomes:
        request.node.user_properties.append(
            (f'kill at {outcome.delay:.2f} s', f'{outcome.landed}; next run cleaned {len(outcome.left)}, '
                                               f"{'captured anew' if outcome.rerun_changed else 'found it complete'}"))
    # the kills must have hit captures in their middle, or this test proved nothing
    assert any(outcome.left for outcome in outcomes), [outcome.landed for outcome in outcomes]

    # every file was hashed right after its run; now the library as a whole, and the module's own verification
    assert_library_consistent(library, rehash=set())
    info = run_module('local_image_info', {'library': str(library), 'verify': True}, runs)
    assert info['rc'] == 0, info
    assert info['mismatches'] == []
    assert sorted(image['version'] for image in info['images']) == ['1.0.0'] + [f'1.1.{index}' for index in range(KILLS)]
    assert all(image['verified'] for image in info['images'])
    assert not os.listdir(library / STAGING)


@pytest.mark.parametrize('hold', list(CATALOGUE_HOLDS.values()), ids=list(CATALOGUE_HOLDS))
def test_sigkill_between_rename_and_commit_leaves_no_row(hold, source_disk, scratch):
    library = scratch / 'library'
    runs = scratch / 'runs'
    arguments = {'name': NAME, 'library': str(library), 'disks': [str(source_disk)]}
    assert capture(runs, version='1.0.0', **arguments)['rc'] == 0
    before = set(os.listdir(library / NAME))

    with contextlib.closing(sqlite3.connect(library / CATALOGUE, timeout=REACH_TIMEOUT, isolation_level=None)) as holder:
        with ModuleProcess('local_image', dict(arguments, version='1.0.1'), runs) as run:
            # past the library's opening and recovery (which use the catalogue too), converting
            wait_for(lambda: bool(os.listdir(library / STAGING)), run, 'its staging directory')
            holder.execute(hold)
            holder.execute('SELECT count(*) FROM images').fetchall()
            assert set(os.listdir(library / NAME)) == before, 'the capture was renamed into place before the catalogue was held'
            wait_for(lambda: set(os.listdir(library / NAME)) != before, run, 'the rename into place')
            if hold == 'BEGIN DEFERRED':
                wait_for((library / JOURNAL).exists, run, 'its rollback journal')
            time.sleep(SETTLE)
            assert not run.finished(), run.result()
            journal_at_kill = (library / JOURNAL).exists()
            run.kill_group()
        holder.execute('ROLLBACK')

    assert journal_at_kill is (hold == 'BEGIN DEFERRED')
    images = read_catalogue(library)  # SQLite rolls a hot journal back on opening
    assert [image['version'] for image in images] == ['1.0.0']
    left = leftovers(library, images)
    assert left == {str(library / NAME / entry) for entry in set(os.listdir(library / NAME)) - before}
    rerun = capture(runs, version='1.0.1', **arguments)
    assert rerun['rc'] == 0 and rerun['changed'], rerun
    assert set(rerun['cleaned']) == left
    assert not (library / JOURNAL).exists()
    assert [image['version'] for image in assert_library_consistent(library)] == ['1.0.0', '1.0.1']
