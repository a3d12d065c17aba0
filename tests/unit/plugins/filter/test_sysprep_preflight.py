# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The sysprep_preflight filter: its wiring to the pre-flight decisions and its errors."""
from __future__ import annotations

import json
import pathlib

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.imageprep.vm.plugins.filter import sysprep_preflight as plugin
from ansible_collections.imageprep.vm.plugins.module_utils._sysprep import CHECKS, PLATFORMS

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / 'module_utils' / 'fixtures' / 'sysprep_facts'


def facts(name):
    return json.loads((FIXTURES / f'{name}.json').read_text())


FILTER = plugin.FilterModule().filters()['sysprep_preflight']


def test_the_collection_exposes_the_filter():
    assert plugin.FilterModule().filters() == {'sysprep_preflight': plugin.sysprep_preflight}


def test_defaults_decide_a_clean_host():
    assert FILTER(facts('clean_server_2022')) == {
        'already_generalized': False, 'image_state': 'IMAGE_STATE_COMPLETE', 'blockers': [], 'warnings': [],
        'ignored': [], 'appx_to_remove': [], 'ok': True}


def test_options_reach_the_decisions():
    data = facts('azure_vm_agent_running')
    data['services']['cdrom_start'] = 4
    data['rearm_count'] = 0
    assert FILTER(data)['ok'] is True
    assert [b['check'] for b in FILTER(data, platform='azure')['blockers']] == ['cdrom']
    assert FILTER(data, ignore_checks=['cdrom'], platform='azure')['ignored'] == ['cdrom']
    assert [w['check'] for w in FILTER(data)['warnings']] == ['rearm']
    assert FILTER(data, skip_rearm=True)['warnings'] == []


def test_the_json_text_of_the_script_is_accepted():
    assert FILTER(json.dumps(facts('generalized_reseal_to_oobe')))['already_generalized'] is True


def test_none_for_ignore_checks_means_none_ignored():
    assert FILTER(facts('domain_controller'), ignore_checks=None)['ok'] is False


@pytest.mark.parametrize('args, kwargs, match', [
    ((['not', 'a', 'dict'],), {}, 'sysprep_preflight: the facts must be a JSON object'),
    (('{',), {}, 'sysprep_preflight: the facts are not valid JSON'),
    (({},), {'ignore_checks': ['roles']}, 'sysprep_preflight: unknown check name\\(s\\) in ignore_checks: roles; '
                                          'known checks: image_state'),
    (({},), {'platform': 'aws'}, "sysprep_preflight: unknown platform 'aws'"),
    (({'bitlocker': 'C:'},), {}, 'facts.bitlocker must be a list'),
])
def test_bad_input_is_a_filter_error(args, kwargs, match):
    with pytest.raises(AnsibleFilterError, match=match):
        FILTER(*args, **kwargs)


def test_the_documentation_matches_the_decisions():
    doc = yaml.safe_load(plugin.DOCUMENTATION)
    assert doc['name'] == 'sysprep_preflight'
    assert set(doc['options']) == {'_input', 'ignore_checks', 'platform', 'skip_rearm'}
    assert tuple(doc['options']['platform']['choices']) == PLATFORMS
    for check in CHECKS:
        assert f'V({check})' in ' '.join(doc['description'])
    returned = yaml.safe_load(plugin.RETURN)['_value']['contains']
    assert set(returned) == set(FILTER(facts('clean_server_2022')))
    yaml.safe_load(plugin.EXAMPLES)
