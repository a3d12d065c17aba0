#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Deprovisioning benchmark: ``linux_deprovision`` / ``linux_residue`` against ``virt-sysprep`` and ``waagent``.

One run builds a fresh Debian 12 guest root (``tests/targets/debian_root.py``, profile
``guest``), plants the residue of a used VM into it (``tests/targets/plant_used_vm.py``,
about 100 items) and makes one raw ext4 disk from it (``mkfs.ext4 -d``). Every timed run works
on its own copy of that disk; the tools are:

* ``ours, chroot``: the ``imageprep.vm.linux_deprovision`` role, run by ``ansible-playbook``
  with the ``community.general.chroot`` connection on the disk mounted as a directory (only the
  playbook is timed);
* ``ours, offline``: the ``imageprep.vm.linux_residue`` module, run by ``ansible-playbook`` on
  the controller with ``root:`` the mounted disk (the loop mount and unmount are timed too);
* ``virt-sysprep``: ``virt-sysprep -a DISK`` with its default operations (libguestfs boots
  its own appliance VM; KVM when it works here, TCG otherwise);
* ``waagent``: ``waagent -force -deprovision+user`` run with ``chroot`` in the mounted disk
  (the guest's own Debian package), in private mount, UTS, IPC, network and PID namespaces:
  it runs ``hostname`` and ``systemctl``, which must not reach this machine.

After each run the disk is mounted read-only and judged twice, the same way for every tool:
the **audit** (``imageprep.vm.linux_residue_info`` with ``root:`` the mounted disk; the number
of ``findings``) and the **planted items left** (the planter's manifest, entry by entry, with
the checks of ``tests/targets_tests/residue_checks.py``; a planted regular file counts as left
while it still holds the planted bytes, so a fresh random seed written in its place does not).

Each tool runs ``--repeat`` times (default 3), in a rotating order; the median wall time is
reported, with each peer's time divided by ours. Results are printed as one table per mode
(chroot, offline) and a table of planted items left per category, and written as JSON with
``--json OUT``. Missing peer packages are installed with ``apt-get`` (``--no-install``: fail
instead). Run by hand as root (a few minutes); ``make test`` does not run it.
"""
from __future__ import annotations

import argparse
import contextlib
import filecmp
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# The planter, root builder and checks of the test targets are used as they are; write nothing beside them.
sys.dont_write_bytecode = True
sys.path.insert(0, str(REPO_ROOT / 'tests' / 'targets'))
sys.path.insert(0, str(REPO_ROOT / 'tests' / 'targets_tests'))

import debian_root  # noqa: E402  pylint: disable=wrong-import-position
import machine_facts  # noqa: E402  pylint: disable=wrong-import-position
import plant_used_vm  # noqa: E402  pylint: disable=wrong-import-position
import qemu_vm  # noqa: E402  pylint: disable=wrong-import-position
import residue_checks  # noqa: E402  pylint: disable=wrong-import-position

COLLECTION = pathlib.Path('ansible_collections', 'imageprep', 'vm')
INFO_MODULE = 'ansible_collections.imageprep.vm.plugins.modules.linux_residue_info'
FAMILY = 'debian'
TARGET_SPEEDUP = 3.0
# The tools, in the order of the tables: name -> (label, mode it belongs to: chroot, offline or peer).
TOOLS = {
    'ours-chroot': ('ours: linux_deprovision role, chroot', 'chroot'),
    'ours-offline': ('ours: linux_residue, offline root', 'offline'),
    'virt-sysprep': ('virt-sysprep (default operations)', 'peer'),
    'waagent': ('waagent -deprovision+user (chroot)', 'peer'),
}
PLANTED = 'planted disk, untouched'
# What the peers need on this machine: Debian package -> why.
VIRT_SYSPREP_PACKAGE = 'guestfs-tools'
KERNEL_PACKAGE = 'linux-image-amd64'
# The guest's waagent and the host's hostname: run it where neither can reach this machine.
NAMESPACES = ['unshare', '--mount', '--propagation', 'private', '--uts', '--ipc', '--net', '--pid', '--fork', '--kill-child']
GUEST_ENV = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'LANG': 'C.UTF-8', 'HOME': '/root'}

CHROOT_PLAYBOOK = """\
---
- name: Deprovision the planted guest (imageprep.vm deprovisioning benchmark)
  hosts: guest
  gather_facts: false
  roles:
    - role: imageprep.vm.linux_deprovision
      vars:
        linux_deprovision_confirm: true
        linux_deprovision_report_dir: ""
        linux_deprovision_poweroff: false
"""
OFFLINE_PLAYBOOK = """\
---
- name: Remove the residue of an offline root (imageprep.vm deprovisioning benchmark)
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Remove the residue
      imageprep.vm.linux_residue:
        root: {root}
"""


class BenchError(Exception):
    """The benchmark cannot run; the message says why."""


# -- environment ---------------------------------------------------------------------------------
def machine() -> dict:
    """Describe the machine the numbers come from."""
    return machine_facts.describe({'qemu': ['qemu-system-x86_64', '--version'], 'virt_sysprep': ['virt-sysprep', '--version']})


def host_kernels() -> list[pathlib.Path]:
    """Kernels supermin can build the libguestfs appliance from (where it looks without SUPERMIN_KERNEL)."""
    return sorted(pathlib.Path('/boot').glob('vmlinuz-*')) + sorted(pathlib.Path('/lib/modules').glob('*/vmlinuz'))


def missing_packages(tools: list[str]) -> dict[str, str]:
    """Return the Debian packages the chosen peers need and this machine lacks: package -> why."""
    missing = {}
    if 'virt-sysprep' in tools:
        if not shutil.which('virt-sysprep'):
            missing[VIRT_SYSPREP_PACKAGE] = 'virt-sysprep'
        if not os.environ.get('SUPERMIN_KERNEL') and not host_kernels():
            missing[KERNEL_PACKAGE] = 'a kernel in /boot, from which supermin builds the libguestfs appliance'
    return missing


def install_packages(missing: dict[str, str], install: bool) -> None:
    """Install MISSING with apt-get, saying so; raise BenchError when not allowed or when it fails."""
    if not missing:
        return
    wanted = ', '.join(f'{package} ({why})' for package, why in missing.items())
    if not install:
        raise BenchError(f'missing Debian packages: {wanted}; install them or run without --no-install')
    print(f'installing Debian packages with apt-get: {wanted}', flush=True)
    command = ['apt-get', 'install', '-y', '-q', '--no-install-recommends', *missing]
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    if subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        # an old or empty package list: refresh it once and try again
        subprocess.run(['apt-get', 'update', '-q'], env=env, check=False, stdout=subprocess.DEVNULL)
        if subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL).returncode != 0:
            raise BenchError(f"apt-get could not install {' '.join(missing)}")


def libguestfs_env() -> tuple[dict[str, str], dict[str, str]]:
    """Return (environment for virt-sysprep, what was decided and why).

    The ``direct`` backend runs QEMU itself (no libvirtd needed). KVM is used only when a probe
    boot of this machine's kernel shows that it works (``qemu_vm.choose_accel``, cached; on hosts
    where /dev/kvm exists but QEMU aborts, libguestfs's own ``kvm:tcg`` fallback never triggers).
    """
    env = dict(os.environ, LIBGUESTFS_BACKEND=os.environ.get('LIBGUESTFS_BACKEND', 'direct'))
    kernel = pathlib.Path(os.environ['SUPERMIN_KERNEL']) if os.environ.get('SUPERMIN_KERNEL') else host_kernels()[-1]
    accel, why = qemu_vm.choose_accel(kernel)
    if accel == 'tcg' and 'LIBGUESTFS_BACKEND_SETTINGS' not in os.environ:
        env['LIBGUESTFS_BACKEND_SETTINGS'] = 'force_tcg'
    return env, {'accel': accel, 'why': why, 'kernel': str(kernel), 'backend': env['LIBGUESTFS_BACKEND'],
                 'backend_settings': env.get('LIBGUESTFS_BACKEND_SETTINGS', '')}


def stale_files(collection: pathlib.Path) -> list[str]:
    """Return the plugin and role files that differ between the work tree and the collection copy benchmarked."""
    if collection.resolve() == REPO_ROOT:
        return []
    stale = []
    for source in sorted(list((REPO_ROOT / 'plugins').rglob('*.py')) + list((REPO_ROOT / 'roles').rglob('*'))):
        if source.is_dir() or '__pycache__' in source.parts:
            continue
        relative = source.relative_to(REPO_ROOT)
        copy = collection / relative
        if not copy.exists() or not filecmp.cmp(source, copy, shallow=False):
            stale.append(str(relative))
    return stale


def ours_missing(collection: pathlib.Path) -> list[str]:
    """Return the parts of the collection the ``ours`` runs and the audit need that are not there yet."""
    needed = ['plugins/modules/linux_residue.py', 'plugins/modules/linux_residue_info.py',
              'roles/linux_deprovision/tasks/main.yml']
    return [part for part in needed if not (collection / part).exists()]


# -- the planted disk ------------------------------------------------------------------------------
def make_master(workdir: pathlib.Path, size_gib: int) -> dict:
    """Build the planted guest root and the raw ext4 disk made from it; return their description."""
    root = workdir / 'planted-root'
    started = time.perf_counter()
    debian_root.copy('guest', root)
    copied = time.perf_counter()
    manifest = plant_used_vm.plant(root, FAMILY)
    planted = time.perf_counter()
    disk = workdir / 'planted.raw'
    subprocess.run(['truncate', '-s', f'{size_gib}G', str(disk)], check=True)
    subprocess.run(['mkfs.ext4', '-q', '-F', '-L', 'imageprep-bench', '-d', str(root), str(disk)], check=True)
    os.sync()
    # The bytes of every planted regular file: a file counts as left while it still holds them.
    planted_bytes = {entry['path']: (root / entry['path'].lstrip('/')).read_bytes()
                     for entry in manifest if entry['kind'] == 'file'}
    waagent = root / 'usr' / 'sbin' / 'waagent'
    return {
        'root': root, 'disk': disk, 'manifest': manifest, 'planted_bytes': planted_bytes, 'waagent': waagent.exists(),
        'seconds': {'root': copied - started, 'plant': planted - copied, 'disk': time.perf_counter() - planted},
        'allocated_bytes': os.stat(disk).st_blocks * 512, 'size_gib': size_gib,
    }


@contextlib.contextmanager
def mounted(disk: pathlib.Path, point: pathlib.Path, read_only: bool = False) -> t.Iterator[pathlib.Path]:
    """Loop-mount DISK at POINT for the duration of the block."""
    point.mkdir(parents=True, exist_ok=True)
    options = 'loop,ro,noload' if read_only else 'loop'
    subprocess.run(['mount', '-o', options, str(disk), str(point)], check=True)
    try:
        yield point
    finally:
        unmount(point)


def unmount(point: pathlib.Path) -> None:
    """Unmount POINT; raise BenchError when something still holds it."""
    proc = subprocess.run(['umount', str(point)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f'cannot unmount {point}: {proc.stderr.strip()}')


def copy_disk(master: pathlib.Path, dest: pathlib.Path) -> None:
    """Copy the planted disk for one run, keeping its holes."""
    dest.unlink(missing_ok=True)
    subprocess.run(['cp', '--sparse=always', str(master), str(dest)], check=True)


# -- judging a result --------------------------------------------------------------------------------
def planted_left(root: pathlib.Path, manifest: list[dict[str, str]], planted_bytes: dict[str, bytes]) -> list[dict[str, str]]:
    """Return the manifest entries still present in ROOT (a planted file only while it holds the planted bytes)."""
    left = []
    for entry in manifest:
        if residue_checks.manifest_entry_problems(root, [entry]):
            continue
        if entry['kind'] == 'file':
            path = residue_checks.inside(root, entry['path'])
            if planted_bytes[entry['path']] not in path.read_bytes():
                continue
        left.append(entry)
    return left


class Auditor:
    """Runs ``linux_residue_info`` on a mounted result as a separate process, as Ansible does on a host."""

    def __init__(self, python: str, collections: pathlib.Path, workdir: pathlib.Path) -> None:
        self.python = python
        self.env = dict(os.environ, PYTHONPATH=str(collections))
        self.workdir = workdir

    def run(self, root: pathlib.Path) -> dict:
        """Return the module's result for ROOT; raise BenchError when it fails."""
        args_file = self.workdir / 'audit-args.json'
        args_file.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': {'root': str(root)}}), encoding='utf-8')
        proc = subprocess.run([self.python, '-m', INFO_MODULE, str(args_file)], capture_output=True, text=True,
                              env=self.env, check=False)
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise BenchError(f'linux_residue_info printed no JSON (rc {proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}') from None
        if result.get('failed'):
            raise BenchError(f"linux_residue_info failed: {result.get('msg')}")
        return result


def judge(disk: pathlib.Path, point: pathlib.Path, master: dict, auditor: t.Optional[Auditor]) -> dict:
    """Mount DISK read-only and return what the audit and the manifest find on it."""
    with mounted(disk, point, read_only=True) as root:
        left = planted_left(root, master['manifest'], master['planted_bytes'])
        verdict: dict[str, t.Any] = {'planted_left': len(left), 'planted_left_entries': left}
        if auditor is not None:
            audit = auditor.run(root)
            verdict.update(findings=len(audit.get('findings', [])), audit_counts=audit.get('counts', {}),
                           audit_clean=audit.get('clean'), audit_findings=audit.get('findings', []))
    return verdict


# -- the tools -------------------------------------------------------------------------------------------
class Runner:
    """Runs one tool on one copy of the planted disk and returns its wall time."""

    def __init__(self, args: argparse.Namespace, workdir: pathlib.Path, guestfs_env: dict[str, str]) -> None:
        self.args = args
        self.workdir = workdir
        self.point = workdir / 'mnt'
        self.guestfs_env = guestfs_env
        self.ansible_env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(args.collections), ANSIBLE_NOCOLOR='1',
                                ANSIBLE_LOCAL_TEMP=str(workdir / 'ansible-tmp'), ANSIBLE_RETRY_FILES_ENABLED='0',
                                ANSIBLE_HOST_KEY_CHECKING='0')
        self.logs = workdir / 'logs'
        self.logs.mkdir(exist_ok=True)

    def run(self, tool: str, disk: pathlib.Path, index: int) -> float:
        """Run TOOL on DISK; return its wall seconds; raise BenchError when it fails."""
        log = self.logs / f'{tool}-{index}.log'
        if tool == 'virt-sysprep':
            return self._timed(tool, ['virt-sysprep', '--format=raw', '-a', str(disk)], log, env=self.guestfs_env)
        if tool == 'ours-offline':
            playbook = self.workdir / 'offline.yml'
            playbook.write_text(OFFLINE_PLAYBOOK.format(root=json.dumps(str(self.point))), encoding='utf-8')
            started = time.perf_counter()
            with mounted(disk, self.point):
                argv = NAMESPACES + [self.args.ansible_playbook, '-e', f'ansible_python_interpreter={self.args.python}',
                                     str(playbook)]
                self._timed(tool, argv, log, env=self.ansible_env)
            return time.perf_counter() - started
        with mounted(disk, self.point) as root:
            if tool == 'ours-chroot':
                inventory = self.workdir / 'chroot-inventory.ini'
                inventory.write_text(f'[guests]\nguest ansible_connection=community.general.chroot ansible_host={root} '
                                     'ansible_python_interpreter=/usr/bin/python3\n', encoding='utf-8')
                playbook = self.workdir / 'chroot.yml'
                playbook.write_text(CHROOT_PLAYBOOK, encoding='utf-8')
                return self._timed(tool, NAMESPACES + [self.args.ansible_playbook, '-i', str(inventory), str(playbook)], log,
                                   env=self.ansible_env)
            if tool == 'waagent':
                return self._timed(tool, NAMESPACES + ['chroot', str(root), '/usr/sbin/waagent', '-force', '-deprovision+user'],
                                   log, env=GUEST_ENV)
        raise BenchError(f'unknown tool {tool}')

    @staticmethod
    def _timed(tool: str, command: list[str], log: pathlib.Path, env: dict[str, str]) -> float:
        with open(log, 'w', encoding='utf-8') as handle:
            handle.write('$ ' + ' '.join(command) + '\n')
            handle.flush()
            started = time.perf_counter()
            proc = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False)
            seconds = time.perf_counter() - started
        if proc.returncode != 0:
            tail = '\n'.join(log.read_text(encoding='utf-8', errors='replace').splitlines()[-30:])
            raise BenchError(f'{tool} failed (exit {proc.returncode}); the end of {log}:\n{tail}')
        return seconds


def warm_virt_sysprep(disk: pathlib.Path, env: dict[str, str]) -> float:
    """Build libguestfs's cached appliance once (untimed in the runs): ``virt-filesystems`` launches it read-only."""
    started = time.perf_counter()
    proc = subprocess.run(['virt-filesystems', '--format=raw', '-a', str(disk)], capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise BenchError(f'libguestfs cannot launch its appliance here (run libguestfs-test-tool to see why):\n{proc.stderr[-3000:]}')
    return time.perf_counter() - started


# -- output ---------------------------------------------------------------------------------------------
def table(rows: list[list[str]]) -> str:
    """Return ROWS (the first is the header) as a Markdown table with aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ['| ' + ' | '.join(cell.ljust(width) for cell, width in zip(row, widths)) + ' |' for row in rows]
    lines.insert(1, '|' + '|'.join('-' * (width + 2) for width in widths) + '|')
    return '\n'.join(lines)


def cell(value: t.Any, digits: int = 2) -> str:
    """Format a number for a table; a missing value is a dash."""
    if value is None:
        return '-'
    return f'{value:.{digits}f}' if isinstance(value, float) else str(value)


def mode_table(mode: str, results: dict, baseline: dict) -> str:
    """Return the table of one mode: our tool of that mode first, then the peers, then the untouched disk."""
    ours = f'ours-{mode}'
    ours_seconds = results.get(ours, {}).get('median_seconds')
    rows = [['tool', 'wall (s)', 'audit findings left', 'planted items left', 'time / ours']]
    for tool in [ours] + [name for name, (_label, kind) in TOOLS.items() if kind == 'peer']:
        if tool not in results:
            continue
        result = results[tool]
        seconds = result.get('median_seconds')
        ratio = seconds / ours_seconds if seconds is not None and ours_seconds else None
        rows.append([TOOLS[tool][0] + ('' if result.get('ran') else ' (not run: ' + result['reason'] + ')'), cell(seconds),
                     cell(result.get('findings')), cell(result.get('planted_left')), cell(ratio)])
    rows.append([PLANTED, '-', cell(baseline.get('findings')), cell(baseline.get('planted_left')), '-'])
    return table(rows)


def category_table(results: dict, baseline: dict, manifest: list[dict[str, str]]) -> str:
    """Return the planted items left per residue category, one column per tool that ran."""
    ran = [tool for tool in TOOLS if results.get(tool, {}).get('ran')]
    rows = [['category', 'planted'] + ran]
    categories = sorted({entry['category'] for entry in manifest})
    for category in categories:
        row = [category, str(sum(1 for entry in baseline['planted_left_entries'] if entry['category'] == category))]
        for tool in ran:
            row.append(str(sum(1 for entry in results[tool]['planted_left_entries'] if entry['category'] == category)))
        rows.append(row)
    rows.append(['total', str(baseline['planted_left'])] + [str(results[tool]['planted_left']) for tool in ran])
    return table(rows)


def targets(results: dict) -> list[str]:
    """Return one line per target of the issue: met, missed, or not measured."""
    lines = []
    peers = [tool for tool, (_label, kind) in TOOLS.items() if kind == 'peer' and results.get(tool, {}).get('ran')]
    for mode in [mode for mode in ('chroot', 'offline') if f'ours-{mode}' in results]:
        ours = results[f'ours-{mode}']
        if not ours.get('ran') or ours.get('findings') is None:
            lines.append(f'{mode}: targets not measured (ours did not run)')
            continue
        fewer = all(ours['findings'] < results[peer]['findings'] for peer in peers)
        against = ', '.join(f"{peer} {results[peer]['findings']}" for peer in peers)
        lines.append(f"{mode}: fewer audit findings than every peer ({ours['findings']} against {against}): "
                     f"{'met' if fewer else 'missed'}")
        sysprep = results.get('virt-sysprep', {})
        if sysprep.get('ran'):
            speedup = sysprep['median_seconds'] / ours['median_seconds']
            lines.append(f"{mode}: at least {TARGET_SPEEDUP:.0f}x faster than virt-sysprep ({speedup:.1f}x): "
                         f"{'met' if speedup >= TARGET_SPEEDUP else 'missed'}")
    return lines


# -- main ------------------------------------------------------------------------------------------------
def parse_args(argv: t.Optional[list[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--collections', type=pathlib.Path, default=REPO_ROOT / '.cache' / 'collections',
                        help='collections root holding ansible_collections/imageprep/vm (default: the copy `make sync` makes)')
    parser.add_argument('--python', default=sys.executable,
                        help='Python with ansible-core that runs the modules and ansible-playbook (default: this one)')
    parser.add_argument('--ansible-playbook', help='ansible-playbook to run (default: the one beside --python)')
    parser.add_argument('--dir', type=pathlib.Path, default=pathlib.Path('/var/tmp'),
                        help='parent of the temporary directory holding the planted root and the disks (default: /var/tmp)')
    parser.add_argument('--size', type=int, default=2, help='size of the planted disk in GiB (default: 2)')
    parser.add_argument('--tools', default=','.join(TOOLS), help=f"tools, comma-separated, of {', '.join(TOOLS)} (default: all)")
    parser.add_argument('--repeat', type=int, default=3, help='runs of each tool; the median is reported (default: 3)')
    parser.add_argument('--no-install', action='store_true', help='fail instead of installing missing peer packages with apt-get')
    parser.add_argument('--json', type=pathlib.Path, help='also write the results as JSON to this file')
    parser.add_argument('--keep', action='store_true', help='keep the temporary directory (logs of every run, the planted disk)')
    args = parser.parse_args(argv)
    args.tools = [tool for tool in args.tools.split(',') if tool]
    for tool in args.tools:
        if tool not in TOOLS:
            parser.error(f"unknown tool {tool!r}: use {', '.join(TOOLS)}")
    if args.repeat < 1:
        parser.error('--repeat must be 1 or more')
    if args.ansible_playbook is None:
        args.ansible_playbook = str(pathlib.Path(args.python).parent / 'ansible-playbook')
    return args


def main(argv: t.Optional[list[str]] = None) -> int:
    """Run the benchmark; return the exit status."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        print('the benchmark builds, mounts and chroots into guest roots: run it as root', file=sys.stderr)
        return 2
    collection = args.collections / COLLECTION
    if not (collection / 'galaxy.yml').exists():
        print(f'{collection} holds no imageprep.vm collection: run `make sync`, or give --collections', file=sys.stderr)
        return 2
    for tool, package in (('mkfs.ext4', 'e2fsprogs'), ('unshare', 'util-linux'), ('chroot', 'coreutils')):
        if not shutil.which(tool):
            print(f'{tool} is not installed (Debian package {package})', file=sys.stderr)
            return 2
    if subprocess.run([args.python, '-c', 'import ansible.module_utils.basic'], capture_output=True, check=False).returncode != 0:
        print(f'{args.python} cannot import ansible-core: give --python (e.g. .venv/bin/python after `make setup`)', file=sys.stderr)
        return 2
    missing_parts = ours_missing(collection)
    ours_tools = [tool for tool in args.tools if tool.startswith('ours-')]
    if ours_tools and not missing_parts and not os.access(args.ansible_playbook, os.X_OK):
        print(f'{args.ansible_playbook} is not there: give --ansible-playbook', file=sys.stderr)
        return 2
    stale = stale_files(collection)
    if stale:
        print(f"warning: {collection} differs from the work tree in {', '.join(stale)} (run `make sync`)", file=sys.stderr)
    if missing_parts:
        print(f"ours not measured: {collection} lacks {', '.join(missing_parts)}; the peers run and are judged by the "
              'planted items left only', flush=True)
    install_packages(missing_packages(args.tools), not args.no_install)
    args.dir.mkdir(parents=True, exist_ok=True)

    report: dict[str, t.Any] = {
        'machine': machine(), 'python': machine_facts.first_line([args.python, '--version']),
        'ansible_playbook': machine_facts.first_line([args.ansible_playbook, '--version']) if ours_tools else '',
        'collection': str(collection), 'stale_files': stale, 'ours_missing': missing_parts, 'repeat': args.repeat,
        'tools': args.tools, 'load_average_start': os.getloadavg(),
    }
    started = time.perf_counter()
    workdir = pathlib.Path(tempfile.mkdtemp(prefix='imageprep-deprovision-bench-', dir=args.dir))
    results: dict[str, dict] = {}
    try:
        master = make_master(workdir, args.size)
        report['disk'] = {key: master[key] for key in ('seconds', 'allocated_bytes', 'size_gib')}
        report['disk']['planted_items'] = len(master['manifest'])
        print(f"planted disk: {len(master['manifest'])} items planted into a fresh Debian 12 guest root "
              f"({master['seconds']['root']:.1f} s to copy the root, {master['seconds']['plant']:.1f} s to plant, "
              f"{master['seconds']['disk']:.1f} s for mkfs.ext4 -d), {args.size} GiB raw ext4 in {workdir}", flush=True)
        auditor = None if missing_parts else Auditor(args.python, args.collections, workdir)
        baseline = judge(master['disk'], workdir / 'mnt', master, auditor)
        report['planted_disk'] = baseline
        if baseline['planted_left'] != len(master['manifest']):
            raise BenchError(f"the untouched disk holds {baseline['planted_left']} of the {len(master['manifest'])} planted items")

        guestfs_env: dict[str, str] = dict(os.environ)
        tools = list(args.tools)
        for tool in TOOLS:
            if tool not in tools:
                continue
            if tool.startswith('ours-') and missing_parts:
                results[tool] = {'ran': False, 'reason': 'not in the collection yet'}
            elif tool == 'waagent' and not master['waagent']:
                raise BenchError('the guest root has no /usr/sbin/waagent (Debian package waagent in its profile)')
        if 'virt-sysprep' in tools:
            guestfs_env, report['libguestfs'] = libguestfs_env()
            seconds = warm_virt_sysprep(master['disk'], guestfs_env)
            report['libguestfs']['warm_up_seconds'] = seconds
            print(f"virt-sysprep: libguestfs backend {report['libguestfs']['backend']}, {report['libguestfs']['accel']} "
                  f"({report['libguestfs']['why']}), kernel {report['libguestfs']['kernel']}; appliance ready in "
                  f'{seconds:.1f} s (untimed warm-up)', flush=True)

        runner = Runner(args, workdir, guestfs_env)
        runnable = [tool for tool in tools if results.get(tool, {}).get('ran', True)]
        runs: dict[str, list[dict]] = {tool: [] for tool in runnable}
        disk = workdir / 'run.raw'
        for index in range(args.repeat):
            # rotate the order, so that no tool always runs first (or last) in a round
            order = runnable[index % len(runnable):] + runnable[:index % len(runnable)] if runnable else []
            for tool in order:
                copy_disk(master['disk'], disk)
                os.sync()
                seconds = runner.run(tool, disk, index)
                verdict = judge(disk, workdir / 'mnt', master, auditor)
                runs[tool].append(dict(verdict, seconds=seconds))
                print(f"{tool} run {index + 1}: {seconds:.2f} s, planted items left {verdict['planted_left']}"
                      + (f", audit findings {verdict['findings']}" if 'findings' in verdict else ''), flush=True)
        disk.unlink(missing_ok=True)
        for tool, tool_runs in runs.items():
            last = tool_runs[-1]
            results[tool] = {
                'ran': True, 'label': TOOLS[tool][0], 'seconds': [run['seconds'] for run in tool_runs],
                'median_seconds': statistics.median(run['seconds'] for run in tool_runs),
                'planted_left': last['planted_left'], 'planted_left_runs': [run['planted_left'] for run in tool_runs],
                'planted_left_entries': last['planted_left_entries'],
                'findings': last.get('findings'), 'findings_runs': [run.get('findings') for run in tool_runs],
                'audit_counts': last.get('audit_counts'), 'audit_findings': last.get('audit_findings'),
            }
        report['results'] = results
    finally:
        if args.keep:
            print(f'kept {workdir}')
        else:
            for point in (workdir / 'mnt',):
                if os.path.ismount(point):
                    unmount(point)
            shutil.rmtree(workdir, ignore_errors=True)
    report['load_average_end'] = os.getloadavg()
    report['seconds'] = time.perf_counter() - started

    # One table per mode of ours that was asked for; the peers alone when neither was.
    for mode in [mode for mode in ('chroot', 'offline') if f'ours-{mode}' in results] or ['peers']:
        print()
        print(f'{mode} mode (seconds: median of {args.repeat}; time / ours: the tool\'s wall time divided by ours):'
              if mode != 'peers' else f'peers (seconds: median of {args.repeat}):')
        print()
        print(mode_table(mode, results, baseline))
    print()
    print('Planted items left, per residue category:')
    print()
    print(category_table(results, baseline, master['manifest']))
    print()
    for line in targets(results):
        print(line)
    unsteady = [tool for tool, result in results.items() if result.get('ran')
                and (len(set(result['planted_left_runs'])) > 1 or len(set(result['findings_runs'])) > 1)]
    if unsteady:
        print(f"note: the residue left changed between runs for {', '.join(unsteady)} (see --json)")
    print(f"load average at start {report['load_average_start'][0]:.2f}, at end {report['load_average_end'][0]:.2f}; "
          f"{report['seconds']:.0f} s in all")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=_json_default) + '\n', encoding='utf-8')
    return 0


def _json_default(value: t.Any) -> t.Any:
    if isinstance(value, (pathlib.Path, bytes)):
        return str(value)
    raise TypeError(f'{type(value).__name__} is not JSON serialisable')


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (BenchError, subprocess.CalledProcessError, plant_used_vm.PlantError) as exc:
        print(f'bench: {exc}', file=sys.stderr)
        sys.exit(1)
