# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Azure layer: the modules against an ARM test server answering with Azure's published examples, and Azurite.

IMAGEPREP_AZURE_REST_EXAMPLES names the directory of the official Azure REST API examples and
OpenAPI files (``make azure`` finds it next to the repository); without it these tests fail, they
do not skip: the Azure modules would be untested.
"""
from __future__ import annotations

import os
import pathlib
import sys

import pytest

TESTS = pathlib.Path(__file__).resolve().parents[1]
if str(TESTS / 'targets') not in sys.path:
    sys.path.insert(0, str(TESTS / 'targets'))


@pytest.fixture(scope='session')
def examples_dir() -> pathlib.Path:
    """The directory of the Azure REST API examples."""
    value = os.environ.get('IMAGEPREP_AZURE_REST_EXAMPLES', '')
    path = pathlib.Path(value) if value else None
    if not path or not (path / 'ComputeRP').is_dir():
        pytest.fail('the Azure REST API examples were not found: set IMAGEPREP_AZURE_REST_EXAMPLES to the directory holding '
                    f'ComputeRP/, GalleryRP/ and DiskRP/ (now {value!r})')
    return path


@pytest.fixture
def arm(examples_dir, tmp_path):
    """A running ARM test server (fresh state per test).

    Whatever the test checks, every request the modules sent must have been valid against the
    OpenAPI files and served, and the server's own answers valid against the response schemas.
    """
    from arm_server import ArmServer  # pylint: disable=import-outside-toplevel
    with ArmServer(examples_dir, tmp_path / 'arm') as server:
        yield server
        assert server.problems == [], server.problems
        assert server.response_problems == [], server.response_problems
