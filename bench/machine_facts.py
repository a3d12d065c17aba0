# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The machine a benchmark's numbers come from: CPU, memory, kernel, OS and the versions of the tools compared."""
from __future__ import annotations

import os
import platform
import subprocess


def first_line(command: list[str]) -> str:
    """The first line COMMAND prints (stdout, else stderr), or an empty string when it cannot run."""
    try:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError:
        return ''
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else ''


def os_name() -> str:
    """PRETTY_NAME of this machine's os-release."""
    try:
        with open('/etc/os-release', encoding='utf-8') as handle:
            for line in handle:
                if line.startswith('PRETTY_NAME='):
                    return line.split('=', 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def describe(tools: dict[str, list[str]]) -> dict:
    """This machine, with the first line of each TOOLS command (name -> version command)."""
    cpu = ''
    with open('/proc/cpuinfo', encoding='utf-8') as handle:
        for line in handle:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    with open('/proc/meminfo', encoding='utf-8') as handle:
        mem_kib = int(handle.readline().split()[1])
    facts = {'cpu': cpu, 'cpus': os.cpu_count(), 'memory_gib': round(mem_kib / 1024 / 1024, 1),
             'kernel': platform.release(), 'os': os_name()}
    facts.update({name: first_line(command) for name, command in tools.items()})
    return facts
