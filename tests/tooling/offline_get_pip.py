# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Offline stand-in for the get-pip script ansible-test downloads before making a venv.

ansible-test runs it as ``python get_pip.py [pip options] pip==X ...``. We bootstrap pip from
the interpreter's own ensurepip and then let that pip install the requested packages from
the package index, which is reachable where the bootstrap host is not.
"""
from __future__ import annotations

import subprocess
import sys

IGNORED = {'--no-setuptools', '--no-wheel'}


def main() -> None:
    """Bootstrap pip, then install what the caller asked for."""
    subprocess.run([sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip'], check=True,
                   stdout=subprocess.DEVNULL)
    args = [arg for arg in sys.argv[1:] if arg not in IGNORED]
    subprocess.run([sys.executable, '-m', 'pip', 'install'] + args, check=True)


if __name__ == '__main__':
    main()
