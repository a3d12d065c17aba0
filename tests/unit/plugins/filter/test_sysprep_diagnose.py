# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sysprep_diagnose: real Panther log excerpts (sources in fixtures/sysprep_logs/SOURCES.md) map to their causes."""
from __future__ import annotations

import pathlib

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.imageprep.vm.plugins.filter.sysprep_diagnose import FilterModule
from ansible_collections.imageprep.vm.plugins.module_utils import _sysprep_logs as logs_mod

FIXTURES = pathlib.Path(__file__).parent / 'fixtures' / 'sysprep_logs'
KEYS = ('known', 'cause', 'fix', 'signature', 'package', 'evidence')


def excerpt(name):
    return (FIXTURES / name).read_text(encoding='utf-8')


def diagnose(**logs):
    return FilterModule().filters()['sysprep_diagnose'](logs)


# -- the table ---------------------------------------------------------------------------
def test_signature_ids_are_unique():
    ids = [s.id for s in logs_mod.SIGNATURES]
    assert len(ids) == len(set(ids))
    assert 'unknown' not in ids
    assert list(logs_mod.BY_ID) == ids


@pytest.mark.parametrize('signature', logs_mod.SIGNATURES, ids=lambda s: s.id)
def test_signature_is_well_formed(signature):
    assert signature.patterns
    assert signature.cause.strip() and signature.fix.strip()


def test_every_fixture_is_listed_in_the_sources():
    sources = excerpt('SOURCES.md')
    for path in FIXTURES.glob('*.log'):
        assert '`%s`' % path.name in sources


def test_every_signature_has_a_real_excerpt():
    sources = excerpt('SOURCES.md')
    for signature in logs_mod.SIGNATURES:
        assert '`%s`' % signature.id in sources


# -- real excerpts -----------------------------------------------------------------------
@pytest.mark.parametrize('fixture, log_name, signature, package, in_cause', [
    ('appx_wsl_setupact.log', 'setupact.log', 'appx_not_provisioned', 'MicrosoftCorporationII.WindowsSubsystemForLinux',
     'MicrosoftCorporationII.WindowsSubsystemForLinux_2.7.11.0_x64__8wekyb3d8bbwe'),
    ('appx_miracastview_setupact.log', 'setupact.log', 'appx_not_provisioned', 'Windows.MiracastView',
     'Windows.MiracastView_6.3.0.0_neutral_neutral_cw5n1h2txyewy'),
    ('appx_notepadplusplus_setupact.log', 'setupact.log', 'appx_not_provisioned', 'NotepadPlusPlus',
     'NotepadPlusPlus_1.0.0.0_neutral__7njy0v32s6xk6'),
    ('appx_onedrive_setupact.log', 'setupact.log', 'appx_not_provisioned', 'Microsoft.OneDriveSync',
     'Microsoft.OneDriveSync_21220.1024.5.0_neutral__8wekyb3d8bbwe'),
    ('bitlocker_setupact.log', 'setupact.log', 'bitlocker', None, '0x80310039'),
    ('rearm_setuperr.log', 'setuperr.log', 'rearm_limit', None, 'rearm limit'),
    ('invalid_state_setuperr.log', 'setuperr.log', 'invalid_state', None, 'earlier Sysprep run'),
    ('servicing_setuperr.log', 'setuperr.log', 'pending_servicing', None, 'Sysprep_Clean_Validate_Opk'),
    ('defender_sense_setuperr.log', 'setuperr.log', 'defender_for_endpoint', None, 'Defender for Endpoint'),
    ('provider_dsccore_setuperr.log', 'setuperr.log', 'provider_failed', None, 'DscCore.dll (SysPrep_Cleanup)'),
    ('provider_spbcd_setuperr.log', 'setuperr.log', 'provider_failed', None, 'spbcd.dll (Sysprep_Generalize_Bcd)'),
    ('mrt_noise_then_dsccore_setuperr.log', 'setuperr.log', 'provider_failed', None, 'DscCore.dll'),
])
def test_real_excerpt_maps_to_its_signature(fixture, log_name, signature, package, in_cause):
    result = diagnose(**{log_name: excerpt(fixture)})
    assert tuple(result) == KEYS
    assert result['known'] is True
    assert result['signature'] == signature
    assert result['package'] == package
    assert in_cause in result['cause']
    assert result['fix'] == result['fix'].strip() and result['fix']
    assert '{' not in result['cause'] + result['fix']
    assert result['evidence']
    assert set(result['evidence']) <= set(excerpt(fixture).splitlines())


def test_appx_fix_says_how_to_remove_the_package():
    result = diagnose(**{'setupact.log': excerpt('appx_wsl_setupact.log')})
    assert 'Remove-AppxPackage' in result['fix']
    assert 'Remove-AppxProvisionedPackage' in result['fix']
    assert any('0x80073cf2' in line for line in result['evidence'])


def test_appx_names_every_blocking_package_and_returns_the_first():
    result = diagnose(**{
        'setupact.log': excerpt('appx_notepadplusplus_setupact.log') + excerpt('appx_wsl_setupact.log'),
    })
    assert result['package'] == 'NotepadPlusPlus'
    assert 'NotepadPlusPlus_1.0.0.0_neutral__7njy0v32s6xk6' in result['cause']
    assert 'MicrosoftCorporationII.WindowsSubsystemForLinux_2.7.11.0_x64__8wekyb3d8bbwe' in result['cause']


def test_appx_without_a_package_line_is_known_without_a_package():
    lines = [line for line in excerpt('appx_wsl_setupact.log').splitlines() if 'installed for a user' not in line]
    result = diagnose(**{'setupact.log': '\n'.join(lines)})
    assert result['signature'] == 'appx_not_provisioned'
    assert result['package'] is None
    assert '{' not in result['cause']


def test_the_first_signature_in_the_table_wins():
    # The Appx excerpt also reports a failing provider DLL (AppxSysprep.dll); the Appx cause is the useful one.
    result = diagnose(**{'setupact.log': excerpt('appx_miracastview_setupact.log')})
    assert result['signature'] == 'appx_not_provisioned'
    # The rearm excerpt also reports slc.dll as a failing provider.
    assert diagnose(**{'setuperr.log': excerpt('rearm_setuperr.log')})['signature'] == 'rearm_limit'


def test_a_success_line_naming_a_validator_is_not_a_failure():
    info = excerpt('bitlocker_setupact.log').splitlines()[0]
    assert 'ValidateBitLockerState' in info
    result = diagnose(**{'setupact.log': info})
    assert result['known'] is False
    assert result['evidence'] == []


@pytest.mark.parametrize('line, expected', [
    ("Error [0x0f0082] SYSPRP LaunchDll: Failure occurred while executing 'C:\\Windows\\System32\\slc.dll, SLReArmWindows', "
     'returned error code -1073425657', ('slc.dll', 'SLReArmWindows')),
    ("SYSPRP LaunchDll:Failure occurred while executing 'DscCore.dll,SysPrep_Cleanup', returned error code 0x2",
     ('DscCore.dll', 'SysPrep_Cleanup')),
    ("SYSPRP ActionPlatform::LaunchModule: Failure occurred while executing 'Sysprep_Clean_Validate_Opk' from "
     'C:\\Windows\\System32\\spopk.dll; dwRet = 0x5', ('spopk.dll', 'Sysprep_Clean_Validate_Opk')),
    ('SYSPRP RunExternalDlls:An error occurred while running registry sysprep DLLs', None),
])
def test_dll_failure_names_the_dll(line, expected):
    assert logs_mod.dll_failure(line) == expected


@pytest.mark.parametrize('full_name, name', [
    ('Microsoft.Winget.Source_2024.1128.1102.50_neutral__8wekyb3d8bbwe', 'Microsoft.Winget.Source'),
    ('Windows.MiracastView_6.3.0.0_neutral_neutral_cw5n1h2txyewy', 'Windows.MiracastView'),
    ('NoUnderscore', 'NoUnderscore'),
])
def test_package_name(full_name, name):
    assert logs_mod.package_name(full_name) == name


# -- several logs ------------------------------------------------------------------------
def test_cause_in_setuperr_while_setupact_holds_only_info_lines():
    result = diagnose(**{
        'setupact.log': excerpt('info_only_setupact.log'),
        'setuperr.log': excerpt('rearm_setuperr.log'),
    })
    assert result['signature'] == 'rearm_limit'
    assert all('Info' not in line for line in result['evidence'])


def test_a_line_in_both_logs_counts_once():
    text = excerpt('bitlocker_setupact.log')
    result = diagnose(**{'setupact.log': text, 'setuperr.log': text})
    assert len(result['evidence']) == len(set(result['evidence'])) == 3


def test_lines_of_several_logs_are_ordered_by_time():
    lines = logs_mod.log_lines({
        'setuperr.log': excerpt('provider_dsccore_setuperr.log'),
        'setupact.log': excerpt('servicing_setuperr.log'),
    })
    assert lines == sorted(lines, key=lambda line: line[:19])
    assert lines[0].startswith('2018-09-15 18:04:30')


# -- fallback ----------------------------------------------------------------------------
@pytest.mark.parametrize('fixture', ['unknown_mrt_setuperr.log', 'unknown_mrt_connectserver_setuperr.log'])
def test_unknown_logs_fall_back_to_the_error_lines(fixture):
    result = diagnose(**{'setuperr.log': excerpt(fixture)})
    assert result == {
        'known': False,
        'cause': 'unknown',
        'fix': logs_mod.UNKNOWN_FIX,
        'signature': 'unknown',
        'package': None,
        'evidence': excerpt(fixture).splitlines(),
    }


def test_fallback_skips_info_lines_and_keeps_the_last_twenty():
    info = excerpt('info_only_setupact.log').splitlines()
    errors = ['2023-02-14 09:%02d:44, Error                 SYSPRP MRTGeneralize:98 - ERROR: Failed ConnectServer' % minute
              for minute in range(30)]
    result = diagnose(**{'setupact.log': '\n'.join(info + errors)})
    assert result['known'] is False
    assert result['evidence'] == errors[-20:]


def test_info_only_logs_have_no_evidence():
    result = diagnose(**{'setupact.log': excerpt('info_only_setupact.log')})
    assert result['known'] is False
    assert result['evidence'] == []
    assert result['fix'] == logs_mod.UNKNOWN_FIX


@pytest.mark.parametrize('logs', [{}, {'setupact.log': ''}, {'setupact.log': None, 'setuperr.log': '\r\n  \r\n'}])
def test_empty_input(logs):
    result = FilterModule().filters()['sysprep_diagnose'](logs)
    assert result == {
        'known': False,
        'cause': 'unknown',
        'fix': logs_mod.NO_LOGS_FIX,
        'signature': 'unknown',
        'package': None,
        'evidence': [],
    }


def test_crlf_bytes_and_utf16_logs_are_read():
    text = excerpt('bitlocker_setupact.log').replace('\n', '\r\n')
    assert diagnose(**{'setupact.log': text.encode('utf-8')})['signature'] == 'bitlocker'
    assert diagnose(**{'setupact.log': text.encode('utf-16')})['signature'] == 'bitlocker'
    assert all(not line.endswith('\r') for line in diagnose(**{'setupact.log': text})['evidence'])


# -- the filter --------------------------------------------------------------------------
def test_filter_is_registered():
    filters = FilterModule().filters()
    assert list(filters) == ['sysprep_diagnose']
    assert callable(filters['sysprep_diagnose'])


@pytest.mark.parametrize('bad', ['setupact text', ['setupact.log'], None, {'setupact.log': 42}])
def test_filter_rejects_what_is_not_a_dict_of_texts(bad):
    with pytest.raises(AnsibleFilterError, match='sysprep_diagnose'):
        FilterModule().filters()['sysprep_diagnose'](bad)
