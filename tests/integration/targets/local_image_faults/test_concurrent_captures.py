# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two captures started at the same moment on one library: serialised, both complete, the catalogue sound."""
from __future__ import annotations

import contextlib
import pathlib
import typing as t

import pytest

from library_checks import assert_library_consistent
from module_runs import MIB, ModuleProcess, make_disk, run_module

# enough data that each capture lasts a few tenths of a second, so the two overlap
DATA = 96 * MIB


@pytest.fixture
def two_sources(scratch: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """Two raw disks with different data."""
    return (make_disk(scratch / 'first.raw', 'raw', 256 * MIB, [(0x41, 0, DATA)]),
            make_disk(scratch / 'second.raw', 'raw', 256 * MIB, [(0x42, 64 * MIB, DATA)]))


def capture_together(request: pytest.FixtureRequest, workdir: pathlib.Path, *argument_sets: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """Start one local_image process per argument set at once, and return their results in that order."""
    with contextlib.ExitStack() as stack:
        runs = [stack.enter_context(ModuleProcess('local_image', arguments, workdir)) for arguments in argument_sets]
        results = [run.result() for run in runs]
    request.node.user_properties.append(('runs', ', '.join(f'{run.seconds:.2f} s ({result["msg"]})' for run, result in zip(runs, results))))
    for result in results:
        assert result['rc'] == 0, result
    return results


def verified(library: pathlib.Path, workdir: pathlib.Path) -> list[dict[str, t.Any]]:
    """Check the library independently and with local_image_info verify=true; return the module's records."""
    assert_library_consistent(library)
    info = run_module('local_image_info', {'library': str(library), 'verify': True}, workdir)
    assert info['rc'] == 0, info
    assert info['mismatches'] == []
    return info['images']


def test_two_captures_of_different_sources_to_one_name_make_two_versions(scratch, two_sources, request):
    library = scratch / 'library'
    argument_sets = [{'name': 'web', 'version': 'auto', 'library': str(library), 'disks': [str(source)]} for source in two_sources]
    first, second = capture_together(request, scratch / 'runs', *argument_sets)

    assert first['changed'] and second['changed']
    assert sorted([first['image']['version'], second['image']['version']]) == ['1.0.0', '1.0.1']
    for result, source in zip((first, second), two_sources):
        assert [disk['source'] for disk in result['image']['disks']] == [str(source)]
    images = verified(library, scratch / 'runs')
    assert {(image['version'], image['disks'][0]['source']) for image in images} == {
        (first['image']['version'], str(two_sources[0])), (second['image']['version'], str(two_sources[1]))}
    assert first['image']['disks'][0]['sha256'] != second['image']['disks'][0]['sha256']


def test_two_captures_of_one_unchanged_source_make_one_version(scratch, two_sources, request):
    library = scratch / 'library'
    arguments = {'name': 'web', 'version': 'auto', 'library': str(library), 'disks': [str(two_sources[0])]}
    results = capture_together(request, scratch / 'runs', arguments, dict(arguments))

    assert sorted(result['changed'] for result in results) == [False, True]
    assert [result['image']['version'] for result in results] == ['1.0.0', '1.0.0']
    assert results[0]['image']['disks'] == results[1]['image']['disks']
    images = verified(library, scratch / 'runs')
    assert [(image['name'], image['version']) for image in images] == [('web', '1.0.0')]


def test_two_captures_to_different_names_make_both(scratch, two_sources, request):
    library = scratch / 'library'
    argument_sets = [{'name': name, 'version': 'auto', 'library': str(library), 'disks': [str(source)]}
                     for name, source in zip(('web', 'db'), two_sources)]
    results = capture_together(request, scratch / 'runs', *argument_sets)

    assert all(result['changed'] for result in results)
    assert [(result['image']['name'], result['image']['version']) for result in results] == [('web', '1.0.0'), ('db', '1.0.0')]
    images = verified(library, scratch / 'runs')
    assert {(image['name'], image['version'], image['disks'][0]['source']) for image in images} == {
        ('web', '1.0.0', str(two_sources[0])), ('db', '1.0.0', str(two_sources[1]))}
