# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The summary table of a pipeline run: one aligned line per host, failures explained below it."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.imageprep.vm.plugins.filter.pipeline_summary import FilterModule, pipeline_summary

CREATED = {'host': 'web01', 'image': 'web', 'version': '1.0.0', 'result': 'created', 'stage': 'finish', 'error': '',
           'restored': False, 'timings': {'preflight': 1.5, 'backup': 0.5, 'generalize': 40.0, 'power_off': 9.0,
                                          'capture': 12.0, 'verify': 80.0, 'report': 0.3, 'finish': 0.1}}
FAILED = {'host': 'db01', 'image': 'db', 'version': '', 'result': 'failed', 'stage': 'generalize',
          'error': 'residue remains on db01 after the cleanup: private_keys /srv/app/id_rsa', 'restored': True,
          'timings': {'preflight': 2.0, 'backup': 1.0, 'generalize': 30.0}}


def test_one_line_per_host_under_a_header_with_the_stages_that_ran():
    lines = pipeline_summary([CREATED, FAILED])
    header, rule, web, db = lines[:4]
    assert header.split() == ['host', 'image', 'version', 'result', 'preflight', 'backup', 'generalize', 'power_off',
                              'capture', 'verify', 'report', 'finish', 'total']
    assert set(rule.replace(' ', '')) == {'-'}
    assert web.split()[:4] == ['web01', 'web', '1.0.0', 'created']
    assert web.split()[-1] == '143.4'  # the sum of its stages
    assert web.split()[9] == '80.0'
    # a failed host names the stage and the restore; stages it never reached are '-'
    assert 'failed in generalize, VM restored' in db
    assert db.split()[-6:] == ['-', '-', '-', '-', '-', '33.0']


def test_columns_line_up():
    lines = pipeline_summary([CREATED, FAILED])
    # every row ends its total column at the same place
    assert len({len(line) for line in lines[:4]}) == 1


def test_causes_follow_the_table():
    lines = pipeline_summary([CREATED, FAILED])
    assert lines[4:] == ['db01: residue remains on db01 after the cleanup: private_keys /srv/app/id_rsa']


def test_unchanged_hosts_and_hosts_that_never_ran():
    unchanged = {'host': 'web01', 'image': 'web', 'version': '1.0.0', 'result': 'unchanged', 'timings': {'preflight': 0.8}}
    lines = pipeline_summary([unchanged, 'web02'])
    assert lines[0].split() == ['host', 'image', 'version', 'result', 'preflight', 'total']
    assert lines[2].split() == ['web01', 'web', '1.0.0', 'unchanged', '0.8', '0.8']
    assert lines[3].split() == ['web02', '-', '-', 'not', 'run', '-', '-']


@pytest.mark.parametrize('bad', ['web01', 7, [3], [{'host': 'a', 'timings': {'backup': 'slow'}}]])
def test_bad_input_is_a_clear_error(bad):
    with pytest.raises(AnsibleFilterError, match='pipeline_summary'):
        pipeline_summary(bad)


def test_the_filter_is_registered():
    assert FilterModule().filters()['pipeline_summary'] is pipeline_summary
