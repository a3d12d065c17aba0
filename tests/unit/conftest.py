# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make the test-target tools importable by the unit tests of their decisions."""
from __future__ import annotations

import pathlib
import sys

TESTS = pathlib.Path(__file__).resolve().parents[1]
for tools in (TESTS / 'targets', TESTS / 'tooling'):
    if str(tools) not in sys.path:
        sys.path.insert(0, str(tools))
