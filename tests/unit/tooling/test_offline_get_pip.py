# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The offline pip bootstrap passes ansible-test's requests on to pip, minus what pip rejects."""
from __future__ import annotations

import subprocess
import sys

import offline_get_pip


def test_bootstrap_then_install_without_get_pip_only_options(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, 'run', lambda cmd, **kwargs: calls.append(cmd))
    monkeypatch.setattr(sys, 'argv', ['get_pip.py', '--disable-pip-version-check', 'pip==25.2', '--no-setuptools', '--no-wheel'])
    offline_get_pip.main()
    assert calls[0] == [sys.executable, '-m', 'ensurepip', '--upgrade', '--default-pip']
    assert calls[1] == [sys.executable, '-m', 'pip', 'install', '--disable-pip-version-check', 'pip==25.2']
