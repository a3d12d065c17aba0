#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Capture benchmark: ``local_image`` against ``qemu-img convert`` alone and ``convert`` + ``sha256sum``.

One run makes a test disk (default: 4 GiB virtual, 1 GiB of random data in extents spread
across it) as raw and as qcow2, then for every source format (default qcow2; ``--sources
qcow2,raw`` adds the raw one) and output format times, with the page cache dropped before each
timed step (when permitted; programs are loaded again before the capture steps so that those
read the disk, not Python from a cold disk):

* ``ours``: the ``local_image`` module run as Ansible runs it on a host (``python -m
  ansible_collections.imageprep.vm.plugins.modules.local_image ARGS.json``), into a fresh library;
* ``convert``: ``qemu-img convert`` alone, with the arguments the module's own
  ``_qemu_img.convert`` builds;
* ``convert+sha256sum``: the same, then ``sha256sum`` of the output;
* ``re-run``: the module again with the same arguments (must report no change), cold (caches
  dropped) and warm.

Each step is repeated (``--repeat``, default 3) and the median is reported. A breakdown run
under cProfile shows where the module spends its time. Results are printed as a table and
written as JSON with ``--json OUT``. Run by hand (a few minutes); ``make test`` does not run it.
"""
from __future__ import annotations

import argparse
import filecmp
import hashlib
import importlib.util
import json
import os
import pathlib
import pstats
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t

import machine_facts  # this directory: the script's own

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
COLLECTION = pathlib.Path('ansible_collections', 'imageprep', 'vm')
MODULE = 'ansible_collections.imageprep.vm.plugins.modules.local_image'
MIB = 1024 * 1024
GIB = 1024 * MIB
TARGET_RATIO = 1.2
TARGET_RERUN = 1.0

# Output variants: name -> (format, compression).
VARIANTS = {
    'qcow2': ('qcow2', 'none'),
    'raw': ('raw', 'none'),
    'vpc': ('vpc', 'none'),
    'qcow2-zstd': ('qcow2', 'zstd'),
}
# Functions whose cumulative time the breakdown reports: label -> (file name, function name).
BREAKDOWN = {
    'qemu-img convert': ('_qemu_img.py', 'convert'),
    'sha256 of output': ('_qemu_img.py', 'sha256_file'),
    'qemu-img info': ('_qemu_img.py', 'image_info'),
    'qemu-img check': ('_qemu_img.py', 'check_image'),
    'qemu-img --version': ('_qemu_img.py', 'qemu_img_version'),
    'publish (fsync, rename, row)': ('_library.py', 'publish'),
    'getfqdn': ('socket.py', 'getfqdn'),
}


class BenchError(Exception):
    """The benchmark cannot run; the message says why."""


# -- environment ---------------------------------------------------------------------------------
def drop_caches() -> bool:
    """Write dirty pages and drop the page cache; return False when this user may not."""
    os.sync()
    try:
        with open('/proc/sys/vm/drop_caches', 'w', encoding='ascii') as handle:
            handle.write('3\n')
    except OSError:
        return False
    return True


def machine() -> dict:
    """Describe the machine the numbers come from."""
    return machine_facts.describe({'qemu_img': ['qemu-img', '--version'], 'sha256sum': ['sha256sum', '--version']})


def file_system(path: pathlib.Path) -> str:
    """Return the type and device of the file system holding PATH."""
    best, answer = '', 'unknown'
    real = str(path.resolve())
    with open('/proc/mounts', encoding='utf-8') as handle:
        for line in handle:
            device, mount_point, fs_type = line.split()[:3]
            inside = real == mount_point or real.startswith(mount_point.rstrip('/') + '/')
            if inside and len(mount_point) >= len(best):
                best, answer = mount_point, f'{fs_type} ({device} on {mount_point})'
    return answer


def load_module_utils(collection: pathlib.Path, name: str) -> t.Any:
    """Import one of the collection's module_utils (``_qemu_img``, ``_library``) from its file; they need only the standard library."""
    path = collection / 'plugins' / 'module_utils' / f'{name}.py'
    spec = importlib.util.spec_from_file_location(f'imageprep_bench{name}', path)
    if spec is None or spec.loader is None:
        raise BenchError(f'cannot load {path}')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stale_files(collection: pathlib.Path) -> list[str]:
    """Return the plugin files that differ between the work tree and the collection copy benchmarked."""
    if collection.resolve() == REPO_ROOT:
        return []
    stale = []
    for source in sorted((REPO_ROOT / 'plugins').rglob('*.py')):
        relative = source.relative_to(REPO_ROOT)
        copy = collection / relative
        if not copy.exists() or not filecmp.cmp(source, copy, shallow=False):
            stale.append(str(relative))
    return stale


# -- the test disk ---------------------------------------------------------------------------------
def make_disks(workdir: pathlib.Path, size: int, data: int, seed: int) -> dict:
    """Write a sparse raw disk with DATA bytes of random data in extents across it, and a qcow2 copy."""
    rng = random.Random(seed)
    extents = []
    total = 0
    while total < data:
        length = min(rng.choice([1, 2, 4, 8, 16, 32]) * MIB, data - total)
        extents.append(length)
        total += length
    slot = size // len(extents) // MIB * MIB
    raw = workdir / 'source.raw'
    fd = os.open(raw, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for index, length in enumerate(extents):
            length = min(length, slot)
            offset = index * slot + rng.randrange(0, (slot - length) // MIB + 1) * MIB
            written = 0
            while written < length:
                chunk = min(8 * MIB, length - written)
                os.pwrite(fd, os.urandom(chunk), offset + written)
                written += chunk
        os.fsync(fd)
    finally:
        os.close(fd)
    qcow2 = workdir / 'source.qcow2'
    subprocess.run(['qemu-img', 'convert', '-f', 'raw', '-O', 'qcow2', str(raw), str(qcow2)], check=True)
    os.sync()
    return {
        'virtual_size': size, 'data_bytes': sum(min(length, slot) for length in extents), 'extents': len(extents),
        'files': {'raw': str(raw), 'qcow2': str(qcow2)},
        'allocated': {'raw': os.stat(raw).st_blocks * 512, 'qcow2': os.stat(qcow2).st_blocks * 512},
    }


# -- the timed steps ------------------------------------------------------------------------------
def convert_commands(qemu_img: t.Any, source: str, source_format: str, dest: str, fmt: str, compression: str,
                     virtual_size: int) -> list[list[str]]:
    """Return the qemu-img commands the module's ``_qemu_img.convert`` runs for this capture."""
    commands: list[list[str]] = []

    def record(args: list[str], **_kwargs: t.Any) -> tuple[int, str, str]:
        commands.append(list(args))
        return 0, '', ''

    qemu_img.convert(record, source, source_format, dest, fmt, compression=compression, virtual_size=virtual_size)
    return commands


def timed(function: t.Callable[[], t.Any]) -> tuple[float, t.Any]:
    """Return (seconds, result) of FUNCTION()."""
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def run_commands(commands: list[list[str]]) -> None:
    """Run commands one after the other; raise on failure."""
    for command in commands:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def sha256sum(path: str) -> str:
    """Return the hex digest ``sha256sum`` prints for PATH."""
    return subprocess.run(['sha256sum', path], capture_output=True, text=True, check=True).stdout.split()[0]


def full_sha256(path: str) -> str:
    """Return the sha256 of PATH by reading all of it (an independent check of the module's sparse-aware hash)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        while True:
            chunk = handle.read(4 * MIB)
            if not chunk:
                return digest.hexdigest()
            digest.update(chunk)


class ModuleRunner:
    """Runs ``local_image`` as a separate process, as Ansible does on a host."""

    def __init__(self, python: str, collections: pathlib.Path, workdir: pathlib.Path) -> None:
        self.python = python
        self.env = dict(os.environ, PYTHONPATH=str(collections))
        self.workdir = workdir

    def warm(self) -> None:
        """Load Python, ansible-core, the module and the tools into the page cache (after caches were dropped).

        The capture steps then measure reading the disks, not loading programs from a cold disk;
        the cold re-run step skips this on purpose.
        """
        subprocess.run([self.python, '-c', f'import {MODULE}'], env=self.env, check=True)
        for command in (['qemu-img', '--version'], ['sha256sum', '--version']):
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    def run(self, args: dict, profile: t.Optional[pathlib.Path] = None) -> tuple[float, dict]:
        """Return (seconds, result) of one module run with ARGS; raise BenchError when it fails."""
        args_file = self.workdir / 'args.json'
        args_file.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': args}), encoding='utf-8')
        command = [self.python]
        if profile is not None:
            command += ['-m', 'cProfile', '-o', str(profile)]
        command += ['-m', MODULE, str(args_file)]
        seconds, proc = timed(lambda: subprocess.run(command, capture_output=True, text=True, env=self.env, check=False))
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise BenchError(f'local_image printed no JSON (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}') from None
        if result.get('failed'):
            raise BenchError(f"local_image failed: {result.get('msg')}")
        return seconds, result


def resident_bytes(path: str) -> t.Optional[int]:
    """Return how many bytes of PATH are in the page cache (``fincore``), or None without fincore."""
    if not shutil.which('fincore'):
        return None
    out = subprocess.run(['fincore', '--bytes', '--noheadings', '--output', 'RES', path], capture_output=True, text=True, check=False)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip().isdigit() else None


def bench_case(runner: ModuleRunner, qemu_img: t.Any, library_utils: t.Any, workdir: pathlib.Path, disks: dict, source_format: str, variant: str,
               repeat: int, drop: bool) -> dict:
    """Time one source format and output variant; return its runs, medians and checks."""
    fmt, compression = VARIANTS[variant]
    source = disks['files'][source_format]
    dest = str(workdir / f'convert-out.{qemu_img.FORMAT_EXTENSIONS[fmt]}')
    library = workdir / 'library'
    commands = convert_commands(qemu_img, source, source_format, dest, fmt, compression, disks['virtual_size'])
    args = {'name': 'bench', 'version': 'auto', 'library': str(library), 'disks': [source], 'format': fmt, 'compression': compression}
    runs: dict[str, list[float]] = {'ours': [], 'convert': [], 'convert_fsync': [], 'convert_sha256sum': [], 'rerun_cold': [], 'rerun_warm': []}
    load_start = os.getloadavg()[0]
    checks: dict[str, t.Any] = {'rerun_changed': [], 'rerun_source_resident_bytes': [], 'sha256_matches': []}

    def fresh_step() -> None:
        if os.path.exists(dest):
            os.unlink(dest)
        shutil.rmtree(library, ignore_errors=True)
        if drop:
            drop_caches()
            runner.warm()

    for index in range(repeat):
        fresh_step()
        seconds, _unused = timed(lambda: run_commands(commands))
        runs['convert'].append(seconds)
        # qemu-img leaves the output in the page cache; the module makes it durable. Time that apart.
        flushed, _unused = timed(lambda: library_utils.fsync_path(dest))
        runs['convert_fsync'].append(seconds + flushed)

        fresh_step()
        seconds, reference = timed(lambda: (run_commands(commands), sha256sum(dest))[1])
        runs['convert_sha256sum'].append(seconds)
        output_size = os.stat(dest).st_size
        os.unlink(dest)

        fresh_step()
        seconds, result = runner.run(args)
        runs['ours'].append(seconds)
        stored = result['image']['disks'][0]
        if not result['changed'] or os.stat(stored['path']).st_size != output_size:
            raise BenchError(f'{source_format} -> {variant}: the capture did not write the expected file: {result}')
        if fmt == 'vpc':
            # A VHD footer holds a time stamp and a random UUID: compare with a full read of this very file (first run only).
            if index == 0:
                checks['sha256_matches'].append(full_sha256(stored['path']) == stored['sha256'])
        else:
            checks['sha256_matches'].append(reference == stored['sha256'])

        if drop:
            drop_caches()
        seconds, again = runner.run(args)
        runs['rerun_cold'].append(seconds)
        checks['rerun_changed'].append(again['changed'])
        checks['rerun_source_resident_bytes'].append(resident_bytes(source) if drop else None)
        seconds, again = runner.run(args)
        runs['rerun_warm'].append(seconds)
        checks['rerun_changed'].append(again['changed'])
    shutil.rmtree(library, ignore_errors=True)

    median = {key: statistics.median(values) for key, values in runs.items()}
    return {
        'source_format': source_format, 'variant': variant, 'format': fmt, 'compression': compression,
        'convert_commands': commands, 'module_args': args, 'runs': runs, 'median': median,
        'ratio_convert': median['ours'] / median['convert'],
        'ratio_convert_fsync': median['ours'] / median['convert_fsync'],
        'ratio_convert_sha256sum': median['ours'] / median['convert_sha256sum'],
        'meets_ratio_target': median['ours'] / median['convert'] <= TARGET_RATIO,
        'meets_rerun_target': median['rerun_cold'] < TARGET_RERUN and median['rerun_warm'] < TARGET_RERUN,
        'checks': checks, 'load_average': [load_start, os.getloadavg()[0]],
    }


def breakdown(runner: ModuleRunner, workdir: pathlib.Path, disks: dict, source_format: str, variant: str, drop: bool) -> dict:
    """Run one capture under cProfile and return the seconds spent in its main parts."""
    fmt, compression = VARIANTS[variant]
    library = workdir / 'library'
    shutil.rmtree(library, ignore_errors=True)
    profile = workdir / 'capture.prof'
    args = {'name': 'bench', 'version': 'auto', 'library': str(library), 'disks': [disks['files'][source_format]],
            'format': fmt, 'compression': compression}
    if drop:
        drop_caches()
        runner.warm()
    seconds, _unused = runner.run(args, profile=profile)
    shutil.rmtree(library, ignore_errors=True)
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    parts: dict[str, float] = {}
    main = 0.0
    for (filename, _line, function), (_cc, _nc, _tt, cumulative, _callers) in stats.items():
        if filename.endswith('local_image.py') and function == 'main':
            main = cumulative
        for label, (wanted_file, wanted_function) in BREAKDOWN.items():
            if filename.endswith(wanted_file) and function == wanted_function:
                parts[label] = parts.get(label, 0.0) + cumulative
    # image_info runs on the source (before) and the output (after); both count here.
    parts['python start, imports, argument parsing'] = max(0.0, seconds - main)
    parts['other'] = max(0.0, seconds - sum(parts.values()))
    return {'source_format': source_format, 'variant': variant, 'total': seconds, 'parts': parts}


# -- output ---------------------------------------------------------------------------------------------
def table(rows: list[list[str]]) -> str:
    """Return ROWS (the first is the header) as a Markdown table with aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ['| ' + ' | '.join(cell.ljust(width) for cell, width in zip(row, widths)) + ' |' for row in rows]
    lines.insert(1, '|' + '|'.join('-' * (width + 2) for width in widths) + '|')
    return '\n'.join(lines)


def results_table(cases: list[dict]) -> str:
    """Return the results as a Markdown table."""
    rows = [['source', 'format', 'ours (s)', 'convert alone (s)', 'convert+sha256sum (s)', 'ours/convert',
             'ours/(convert+sha256sum)', 're-run cold (s)', 're-run warm (s)', 'convert+fsync (s)', 'ours/(convert+fsync)']]
    for case in cases:
        median = case['median']
        rows.append([case['source_format'], case['variant'], f"{median['ours']:.2f}", f"{median['convert']:.2f}",
                     f"{median['convert_sha256sum']:.2f}", f"{case['ratio_convert']:.2f}", f"{case['ratio_convert_sha256sum']:.2f}",
                     f"{median['rerun_cold']:.2f}", f"{median['rerun_warm']:.2f}", f"{median['convert_fsync']:.2f}",
                     f"{case['ratio_convert_fsync']:.2f}"])
    return table(rows)


def breakdown_table(parts: list[dict]) -> str:
    """Return the breakdown runs as a Markdown table, one column per run."""
    labels = list(BREAKDOWN) + ['python start, imports, argument parsing', 'other']
    rows = [['part (s)'] + [f"{p['source_format']} -> {p['variant']}" for p in parts]]
    for label in labels:
        rows.append([label] + [f"{p['parts'].get(label, 0.0):.2f}" for p in parts])
    rows.append(['total'] + [f"{p['total']:.2f}" for p in parts])
    return table(rows)


# -- main ------------------------------------------------------------------------------------------------
def parse_args(argv: t.Optional[list[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--collections', type=pathlib.Path, default=REPO_ROOT / '.cache' / 'collections',
                        help='collections root holding ansible_collections/imageprep/vm (default: the copy `make sync` makes)')
    parser.add_argument('--python', default=sys.executable, help='Python that runs the module (default: this one; it needs ansible-core)')
    parser.add_argument('--dir', type=pathlib.Path, default=pathlib.Path('/var/tmp'),
                        help='parent of the temporary directory holding the disks, the library and the outputs (default: /var/tmp)')
    parser.add_argument('--size', type=int, default=4, help='virtual size of the test disk in GiB (default: 4)')
    parser.add_argument('--data', type=int, default=1024, help='MiB of random data in the test disk (default: 1024)')
    parser.add_argument('--seed', type=int, default=1, help='seed for the extent layout (default: 1)')
    parser.add_argument('--sources', default='qcow2', help='source formats, comma-separated, of qcow2, raw (default: qcow2)')
    parser.add_argument('--formats', default='qcow2,raw,vpc,qcow2-zstd',
                        help=f"output variants, comma-separated, of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument('--repeat', type=int, default=3, help='runs of each timed step; the median is reported (default: 3)')
    parser.add_argument('--no-drop-caches', action='store_true', help='do not drop the page cache before the timed steps')
    parser.add_argument('--no-breakdown', action='store_true', help='skip the cProfile run that shows where the module spends its time')
    parser.add_argument('--json', type=pathlib.Path, help='also write the results as JSON to this file')
    parser.add_argument('--keep', action='store_true', help='keep the temporary directory')
    args = parser.parse_args(argv)
    args.sources = [s for s in args.sources.split(',') if s]
    args.formats = [f for f in args.formats.split(',') if f]
    for source in args.sources:
        if source not in ('qcow2', 'raw'):
            parser.error(f'unknown source format {source!r}: use qcow2, raw')
    for variant in args.formats:
        if variant not in VARIANTS:
            parser.error(f"unknown format {variant!r}: use {', '.join(VARIANTS)}")
    if args.repeat < 1:
        parser.error('--repeat must be 1 or more')
    return args


def main(argv: t.Optional[list[str]] = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    collection = args.collections / COLLECTION
    if not (collection / 'plugins' / 'modules' / 'local_image.py').exists():
        print(f'{collection} holds no imageprep.vm collection: run `make sync`, or give --collections', file=sys.stderr)
        return 2
    for tool in ('qemu-img', 'sha256sum'):
        if not shutil.which(tool):
            print(f'{tool} is not installed', file=sys.stderr)
            return 2
    if subprocess.run([args.python, '-c', 'import ansible.module_utils.basic'], capture_output=True, check=False).returncode != 0:
        print(f'{args.python} cannot import ansible-core: give --python (e.g. .venv/bin/python after `make setup`)', file=sys.stderr)
        return 2
    stale = stale_files(collection)
    if stale:
        print(f"warning: {collection} differs from the work tree in {', '.join(stale)} (run `make sync`)", file=sys.stderr)
    args.dir.mkdir(parents=True, exist_ok=True)
    need = 5 * args.data * MIB
    stat = os.statvfs(args.dir)
    if stat.f_bavail * stat.f_frsize < need:
        print(f'{args.dir} has less than {need // MIB} MiB free', file=sys.stderr)
        return 2

    qemu_img = load_module_utils(collection, '_qemu_img')
    library_utils = load_module_utils(collection, '_library')
    drop = not args.no_drop_caches and drop_caches()
    report: dict[str, t.Any] = {
        'machine': machine(), 'python': subprocess.run([args.python, '--version'], capture_output=True, text=True, check=True).stdout.strip(),
        'collection': str(collection), 'stale_files': stale, 'repeat': args.repeat, 'caches_dropped': drop,
        'load_average_start': os.getloadavg(),
    }
    started = time.perf_counter()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='imageprep-bench-', dir=args.dir))
    try:
        report['file_system'] = file_system(workdir)
        seconds, disks = timed(lambda: make_disks(workdir, args.size * GIB, args.data * MIB, args.seed))
        report['disk'] = dict(disks, seconds_to_make=seconds)
        print(f"test disk: {args.size} GiB virtual, {disks['data_bytes'] // MIB} MiB random data in {disks['extents']} extents "
              f"({seconds:.1f} s to make) in {workdir} on {report['file_system']}; page cache dropped before each step: "
              f"{'yes' if drop else 'no (not permitted or --no-drop-caches)'}", flush=True)
        runner = ModuleRunner(args.python, args.collections, workdir)
        report['cases'] = []
        for source_format in args.sources:
            for variant in args.formats:
                case = bench_case(runner, qemu_img, library_utils, workdir, disks, source_format, variant, args.repeat, drop)
                report['cases'].append(case)
                median = case['median']
                print(f"{source_format} -> {variant}: ours {median['ours']:.2f} s, convert {median['convert']:.2f} s, "
                      f"convert+sha256sum {median['convert_sha256sum']:.2f} s, re-run {median['rerun_cold']:.2f}/"
                      f"{median['rerun_warm']:.2f} s (load average {case['load_average'][0]:.1f} -> {case['load_average'][1]:.1f})", flush=True)
        if not args.no_breakdown:
            report['breakdown'] = [breakdown(runner, workdir, disks, source_format, variant, drop)
                                   for source_format in args.sources for variant in args.formats]
    finally:
        if args.keep:
            print(f'kept {workdir}')
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report['load_average_end'] = os.getloadavg()
    report['seconds'] = time.perf_counter() - started

    print()
    print(results_table(report['cases']))
    if report.get('breakdown'):
        print()
        print('Where a capture spends its time (one run under cProfile, which slows Python start and imports):')
        print()
        print(breakdown_table(report['breakdown']))
    print()
    failures = []
    for case in report['cases']:
        label = f"{case['source_format']} -> {case['variant']}"
        if not all(case['checks']['sha256_matches']):
            failures.append(f'{label}: the module sha256 differs from sha256sum')
        if any(case['checks']['rerun_changed']):
            failures.append(f'{label}: the re-run reported a change')
    met = [f"{c['source_format']} -> {c['variant']}" for c in report['cases'] if c['meets_ratio_target']]
    print(f"within {TARGET_RATIO}x of convert alone: {', '.join(met) or 'none'}")
    print(f"re-run under {TARGET_RERUN:.0f} s (cold and warm): "
          f"{'all' if all(c['meets_rerun_target'] for c in report['cases']) else 'not all'}")
    resident = [b for c in report['cases'] for b in c['checks']['rerun_source_resident_bytes'] if b is not None]
    if resident:
        print(f'source bytes in the page cache after a cold re-run: at most {max(resident)} (metadata only; the data was not read)')
    print(f"load average at start {report['load_average_start'][0]:.2f}, at end {report['load_average_end'][0]:.2f}; "
          f"{report['seconds']:.0f} s in all")
    for failure in failures:
        print(f'FAILED: {failure}', file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + '\n', encoding='utf-8')
    return 1 if failures else 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (BenchError, subprocess.CalledProcessError) as exc:
        print(f'bench: {exc}', file=sys.stderr)
        sys.exit(1)
