# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the end-to-end tests: the test targets on the path, and the measurement summary."""
from __future__ import annotations

import pathlib
import sys

TARGETS = pathlib.Path(__file__).resolve().parents[1] / 'targets'
if str(TARGETS) not in sys.path:
    sys.path.insert(0, str(TARGETS))

import measurement_summary  # noqa: E402  pylint: disable=wrong-import-position

# They show when a host or a change makes VMs slow.
pytest_runtest_logreport, pytest_terminal_summary = measurement_summary.hooks('VM measurements')
