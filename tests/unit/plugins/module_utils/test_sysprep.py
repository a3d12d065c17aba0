# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Decisions of the Sysprep pre-flight on fact sets; each fact set's ``_source`` names the published fact it encodes."""
from __future__ import annotations

import copy
import json
import pathlib

import pytest

from ansible_collections.imageprep.vm.plugins.module_utils import _sysprep as sysprep

FIXTURES = pathlib.Path(__file__).resolve().parent / 'fixtures' / 'sysprep_facts'
FACT_SETS = sorted(path.stem for path in FIXTURES.glob('*.json'))


def facts(name='clean_server_2022', **changes):
    """The fact set NAME, with CHANGES applied; a key 'a__b' sets facts['a']['b']."""
    data = json.loads((FIXTURES / f'{name}.json').read_text())
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split('__')
        for parent in parents:
            target = target[parent]
        target[leaf] = copy.deepcopy(value)
    return data


def checks(findings):
    return [finding['check'] for finding in findings]


@pytest.mark.parametrize('name', FACT_SETS)
def test_every_fact_set_says_what_it_encodes(name):
    assert len(facts(name)['_source']) > 40


@pytest.mark.parametrize('name', ['clean_server_2022', 'clean_client_windows11'])
def test_clean_hosts_may_be_generalized(name):
    result = sysprep.preflight(facts(name))
    assert result == {'already_generalized': False, 'image_state': 'IMAGE_STATE_COMPLETE', 'blockers': [],
                      'warnings': [], 'ignored': [], 'appx_to_remove': [], 'ok': True}


def test_the_facts_may_be_the_json_text_the_script_prints():
    text = json.dumps(facts())
    assert sysprep.preflight(text) == sysprep.preflight(facts())


# image_state: Microsoft, "Windows Setup States".

def test_a_vm_generalized_to_oobe_is_already_generalized_not_blocked():
    result = sysprep.preflight(facts('generalized_reseal_to_oobe'))
    assert result['already_generalized'] is True
    assert result['image_state'] == 'IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE'
    assert result['blockers'] == [] and result['warnings'] == [] and result['ok'] is True


def test_a_vm_generalized_to_audit_is_already_generalized_with_a_warning():
    state = 'IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT'
    result = sysprep.preflight(facts(image_state={'registry': state, 'state_ini': state}))
    assert result['already_generalized'] is True
    assert checks(result['warnings']) == ['image_state']
    assert 'audit mode' in result['warnings'][0]['message']


def test_already_generalized_still_reports_what_would_block():
    result = sysprep.preflight(facts('generalized_reseal_to_oobe', pending_reboot__cbs_reboot_pending=True))
    assert result['already_generalized'] is True
    assert checks(result['blockers']) == ['pending_reboot'] and result['ok'] is False


@pytest.mark.parametrize('state, words', [
    ('IMAGE_STATE_UNDEPLOYABLE', 'reinstalled'),
    # Microsoft's page spells it with a blank; Setup writes it without.
    ('IMAGE_STATE _UNDEPLOYABLE', 'reinstalled'),
    ('IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE', 'OOBE'),
    ('IMAGE_STATE_SPECIALIZE_RESEAL_TO_AUDIT', 'audit mode'),
    ('IMAGE_STATE_SOMETHING_NEW', 'none of the documented states'),
])
def test_states_that_are_not_complete_block_with_a_fix(state, words):
    result = sysprep.preflight(facts(image_state={'registry': state, 'state_ini': state}))
    assert result['already_generalized'] is False
    assert checks(result['blockers']) == ['image_state']
    assert words in result['blockers'][0]['message'] + result['blockers'][0]['fix']
    assert result['blockers'][0]['fix']


def test_undeployable_while_sysprep_runs_is_only_the_running_sysprep():
    # Documented: UNDEPLOYABLE is the state while Setup runs and has not completed the phase.
    result = sysprep.preflight(facts(image_state={'registry': 'IMAGE_STATE_UNDEPLOYABLE', 'state_ini': None},
                                     sysprep__running=True))
    assert checks(result['blockers']) == ['sysprep_running']


def test_state_ini_is_used_when_the_registry_has_no_state():
    result = sysprep.preflight(facts(image_state={'registry': None,
                                                  'state_ini': 'IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE'}))
    assert result['already_generalized'] is True and result['warnings'] == []


def test_the_registry_wins_when_state_ini_disagrees():
    result = sysprep.preflight(facts(image_state={'registry': 'IMAGE_STATE_COMPLETE',
                                                  'state_ini': 'IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE'}))
    assert result['already_generalized'] is False and result['ok'] is True
    assert checks(result['warnings']) == ['image_state']


def test_an_unreadable_state_blocks():
    result = sysprep.preflight(facts(image_state={'registry': None, 'state_ini': None}))
    assert result['image_state'] == 'unknown'
    assert checks(result['blockers']) == ['image_state']


# pending_reboot

@pytest.mark.parametrize('change, words', [
    ({'pending_reboot__cbs_reboot_pending': True}, 'Component Based Servicing'),
    ({'pending_reboot__wu_reboot_required': True}, 'Windows Update'),
    ({'pending_reboot__pending_file_rename_operations': ['\\??\\C:\\Windows\\Temp\\x.dll', '']}, '1 operation'),
    ({'pending_reboot__tiworker_running': True}, 'TiWorker'),
])
def test_each_pending_restart_signal_blocks(change, words):
    result = sysprep.preflight(facts(**change))
    assert checks(result['blockers']) == ['pending_reboot']
    assert words in result['blockers'][0]['message']
    assert 'Restart' in result['blockers'][0]['fix']


def test_blank_rename_entries_are_no_pending_operation():
    assert sysprep.preflight(facts(pending_reboot__pending_file_rename_operations=['', ' ']))['ok'] is True


def test_all_pending_signals_make_one_blocker_naming_each():
    renames = [f'\\??\\C:\\f{n}' for n in range(5)]
    result = sysprep.preflight(facts(pending_reboot={'cbs_reboot_pending': True, 'wu_reboot_required': True,
                                                     'pending_file_rename_operations': renames,
                                                     'tiworker_running': True}))
    [blocker] = result['blockers']
    for words in ('RebootPending', 'RebootRequired', '5 operation(s)', 'and 2 more', 'TiWorker'):
        assert words in blocker['message']


# bitlocker: "Sysprep requires the drives to be fully decrypted" (Prepare a Windows VHD to upload to Azure).

@pytest.mark.parametrize('status, protection', [
    ('FullyEncrypted', 'On'),
    ('FullyEncrypted', 'Off'),  # protection suspended or off: the volume is still encrypted
    ('EncryptionInProgress', 'Off'),
    ('DecryptionInProgress', 'Off'),
    ('EncryptionPaused', 'Off'),
    ('DecryptionPaused', 'Off'),
    ('EncryptionSuspended', 'Off'),  # the name Get-BitLockerVolume's enumeration uses
])
def test_any_volume_not_fully_decrypted_blocks(status, protection):
    volumes = [{'mount_point': 'C:', 'volume_status': 'FullyDecrypted', 'protection_status': 'Off',
                'encryption_percentage': 0.0},
               {'mount_point': 'D:', 'volume_status': status, 'protection_status': protection,
                'encryption_percentage': 42.5}]
    result = sysprep.preflight(facts(bitlocker=volumes))
    [blocker] = result['blockers']
    assert blocker['check'] == 'bitlocker'
    assert f'D: is {status}, protection {protection}, 42.5% encrypted' in blocker['message']
    assert 'C:' not in blocker['message']
    assert "Disable-BitLocker -MountPoint 'D:'" in blocker['fix'] and 'manage-bde -off' in blocker['fix']


def test_fully_decrypted_volumes_do_not_block():
    assert sysprep.preflight(facts('clean_client_windows11'))['ok'] is True


# server_roles: Microsoft, "Sysprep Support for Server Roles".

def test_a_domain_controller_names_each_unsupported_role_and_warns_of_the_domain():
    result = sysprep.preflight(facts('domain_controller'))
    [blocker] = result['blockers']
    assert blocker['check'] == 'server_roles'
    for role in ('AD DS', 'AD CS', 'DHCP Server'):
        assert role in blocker['message']
    assert 'DNS' not in blocker['message'] and 'RSAT' not in blocker['message']
    assert blocker['fix'].startswith('Uninstall-WindowsFeature -Name AD-Certificate,ADCS-Cert-Authority,'
                                     'AD-Domain-Services,DHCP ')
    assert checks(result['warnings']) == ['domain']
    assert 'corp.example.com' in result['warnings'][0]['message']


@pytest.mark.parametrize('feature, role', [
    ('AD-Certificate', 'AD CS'),
    ('ADCS-Web-Enrollment', 'AD CS'),
    ('AD-Domain-Services', 'AD DS'),
    ('ADFS-Federation', 'AD FS'),
    ('ADLDS', 'AD LDS'),
    ('ADRMS', 'AD RMS'),
    ('ADRMS-Server', 'AD RMS'),
    ('DHCP', 'DHCP Server'),
    ('Fax', 'Fax Server'),
    ('NPAS', 'NPAS'),
    ('NPAS-Policy-Server', 'NPAS'),
    ('UpdateServices', 'WSUS'),
    ('UpdateServices-Services', 'WSUS'),
    ('UpdateServices-WidDB', 'WSUS'),
    ('updateservices', 'WSUS'),  # feature names compare without case
])
def test_each_unsupported_role_blocks(feature, role):
    [blocker] = sysprep.preflight(facts(features=['FileAndStorage-Services', feature]))['blockers']
    assert blocker['check'] == 'server_roles' and role in blocker['message'] and feature in blocker['message']


@pytest.mark.parametrize('feature', ['DNS', 'Web-Server', 'Hyper-V', 'FileAndStorage-Services', 'RSAT-ADCS',
                                     'RSAT-NPAS', 'RSAT-DHCP', 'UpdateServices-RSAT', 'UpdateServices-UI',
                                     'RSAT-AD-PowerShell', 'Print-Services'])
def test_supported_roles_and_management_tools_do_not_block(feature):
    assert sysprep.preflight(facts(features=[feature]))['ok'] is True


@pytest.mark.parametrize('initialized, blocks, words', [
    (False, False, None),
    (True, True, 'Windows Deployment Services (initialized)'),
    (None, True, 'Windows Deployment Services (possibly initialized)'),
])
def test_wds_blocks_unless_uninitialized(initialized, blocks, words):
    result = sysprep.preflight(facts(features=['WDS', 'WDS-Deployment', 'WDS-Transport'],
                                     wds_initialized=initialized))
    assert result['ok'] is not blocks
    if blocks:
        assert words in result['blockers'][0]['message']


# appx: Microsoft KB 2769827, 0x80073cf2.

def test_appx_installed_for_a_user_names_each_package_and_lists_them_to_remove():
    result = sysprep.preflight(facts('appx_installed_for_user_not_provisioned'))
    [blocker] = result['blockers']
    assert blocker['check'] == 'appx'
    assert '0x80073cf2' in blocker['message']
    assert 'NotepadPlusPlus (NotepadPlusPlus_1.0.0.0_neutral__7njy0v32s6xk6, installed for WIN11REF\\builder)' \
        in blocker['message']
    assert 'Microsoft.WindowsCalculator' in blocker['message']
    assert 'Remove-AppxPackage -AllUsers -Package NotepadPlusPlus_1.0.0.0_neutral__7njy0v32s6xk6' in blocker['fix']
    assert result['appx_to_remove'] == ['NotepadPlusPlus_1.0.0.0_neutral__7njy0v32s6xk6',
                                        'Microsoft.WindowsCalculator_11.2311.0.0_x64__8wekyb3d8bbwe']


def test_ignored_appx_still_lists_the_packages_to_remove():
    result = sysprep.preflight(facts('appx_installed_for_user_not_provisioned'), ignore_checks=['appx'])
    assert result['ok'] is True and result['ignored'] == ['appx']
    assert len(result['appx_to_remove']) == 2


# azure_agent: Azure VM Image Builder "Sysprep timing"; "Prepare a Windows VHD" recommends the agent.

def test_an_azure_vm_with_its_agent_running_may_be_generalized_for_azure():
    assert sysprep.preflight(facts('azure_vm_agent_running'), platform='azure')['ok'] is True


@pytest.mark.parametrize('platform', ['generic', 'azure'])
def test_a_running_agent_is_fine_on_any_platform(platform):
    result = sysprep.preflight(facts('azure_vm_agent_running'), platform=platform)
    assert result['blockers'] == [] and result['warnings'] == []


@pytest.mark.parametrize('platform', ['generic', 'azure'])
@pytest.mark.parametrize('state', ['Stopped', 'StartPending'])
def test_an_installed_agent_that_is_not_running_blocks(platform, state):
    result = sysprep.preflight(facts('azure_vm_agent_running', services__WindowsAzureGuestAgent=state),
                               platform=platform)
    [blocker] = result['blockers']
    assert blocker['check'] == 'azure_agent' and f'WindowsAzureGuestAgent is {state}' in blocker['message']
    assert 'RdAgent' not in blocker['message']
    assert blocker['fix'].startswith('Start-Service -Name WindowsAzureGuestAgent ')


def test_no_agent_is_a_warning_on_azure_and_nothing_elsewhere():
    assert sysprep.preflight(facts(), platform='generic')['warnings'] == []
    result = sysprep.preflight(facts(), platform='azure')
    assert result['ok'] is True
    assert checks(result['warnings']) == ['azure_agent']
    assert 'RdAgent, WindowsAzureGuestAgent absent' in result['warnings'][0]['message']


def test_missing_services_section_reads_as_no_agent():
    data = facts()
    del data['services']
    assert sysprep.preflight(data)['ok'] is True


# cdrom: "Prepare a Windows VHD to upload to Azure": Azure mounts its ISO on the DVD-ROM.

def test_a_disabled_dvd_rom_blocks_on_azure_only():
    data = facts('azure_vm_agent_running', services__cdrom_start=4)
    assert sysprep.preflight(data, platform='generic')['ok'] is True
    [blocker] = sysprep.preflight(data, platform='azure')['blockers']
    assert blocker['check'] == 'cdrom' and 'stuck at OOBE' in blocker['message']
    assert blocker['fix'].startswith("Set-ItemProperty -Path 'HKLM:\\SYSTEM\\CurrentControlSet\\Services\\cdrom' "
                                     '-Name Start -Value 1 -Type DWord')


@pytest.mark.parametrize('start', [0, 1, 2, 3])
def test_an_enabled_dvd_rom_is_fine_on_azure(start):
    assert sysprep.preflight(facts('azure_vm_agent_running', services__cdrom_start=start), platform='azure')['ok']


def test_an_unreadable_dvd_rom_start_is_a_warning_on_azure():
    result = sysprep.preflight(facts('azure_vm_agent_running', services__cdrom_start=None), platform='azure')
    assert result['ok'] is True and checks(result['warnings']) == ['cdrom']


# domain, sysprep_running, rearm

def test_domain_membership_is_a_warning_not_a_blocker():
    result = sysprep.preflight(facts(domain={'part_of_domain': True, 'domain': 'corp.example.com'}))
    assert result['ok'] is True and checks(result['warnings']) == ['domain']


def test_a_running_sysprep_blocks():
    [blocker] = sysprep.preflight(facts(sysprep__running=True))['blockers']
    assert blocker['check'] == 'sysprep_running' and 'Stop-Process -Name sysprep' in blocker['fix']


@pytest.mark.parametrize('count, skip_rearm, warns', [
    (0, False, True),
    (0, True, False),
    (1, False, False),
    (None, False, False),
])
def test_rearm_count_zero_warns_unless_skip_rearm(count, skip_rearm, warns):
    result = sysprep.preflight(facts(rearm_count=count), skip_rearm=skip_rearm)
    assert result['ok'] is True
    assert checks(result['warnings']) == (['rearm'] if warns else [])


# combinations and ignore_checks

def worst_host():
    """Every blocker at once, on a domain-joined Azure VM at rearm 0."""
    data = facts('appx_installed_for_user_not_provisioned',
                 image_state={'registry': 'IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE', 'state_ini': None},
                 pending_reboot__tiworker_running=True,
                 bitlocker=[{'mount_point': 'C:', 'volume_status': 'FullyEncrypted', 'protection_status': 'Off',
                             'encryption_percentage': 100.0}],
                 features=['AD-Domain-Services'],
                 services={'RdAgent': 'Stopped', 'WindowsAzureGuestAgent': 'Running', 'cdrom_start': 4},
                 domain={'part_of_domain': True, 'domain': 'corp.example.com'},
                 sysprep={'succeeded_tag': False, 'running': True},
                 rearm_count=0)
    return data


def test_every_blocker_at_once_in_check_order():
    result = sysprep.preflight(worst_host(), platform='azure')
    assert checks(result['blockers']) == ['image_state', 'pending_reboot', 'bitlocker', 'server_roles', 'appx',
                                          'azure_agent', 'cdrom', 'sysprep_running']
    assert checks(result['warnings']) == ['domain', 'rearm']
    assert result['ok'] is False and result['ignored'] == []
    assert all(blocker['message'] and blocker['fix'] for blocker in result['blockers'])


def test_ignored_checks_move_to_ignored_and_the_rest_still_block():
    result = sysprep.preflight(worst_host(), platform='azure',
                               ignore_checks=['bitlocker', 'cdrom', 'domain', 'rearm', 'pending_reboot'])
    assert checks(result['blockers']) == ['image_state', 'server_roles', 'appx', 'azure_agent', 'sysprep_running']
    assert result['warnings'] == []
    assert result['ignored'] == ['pending_reboot', 'bitlocker', 'cdrom', 'domain', 'rearm']


def test_ignoring_every_check_leaves_ok():
    result = sysprep.preflight(worst_host(), platform='azure', ignore_checks=list(sysprep.CHECKS))
    assert result['ok'] is True and result['blockers'] == [] and result['warnings'] == []
    assert result['ignored'] == list(sysprep.CHECKS)


def test_ignoring_a_check_that_found_nothing_lists_nothing():
    result = sysprep.preflight(facts(), ignore_checks=['bitlocker'])
    assert result['ignored'] == [] and result['ok'] is True


# wrong input

def test_unknown_check_names_are_an_error_naming_the_known_ones():
    with pytest.raises(ValueError, match=r'unknown check name\(s\) in ignore_checks: bitlocker_off, rolse; '
                                         r'known checks: image_state, pending_reboot, .*, rearm$'):
        sysprep.preflight(facts(), ignore_checks=['rolse', 'bitlocker', 'bitlocker_off'])


@pytest.mark.parametrize('kwargs, match', [
    ({'platform': 'hyperv'}, "unknown platform 'hyperv'; known platforms: generic, azure"),
    ({'ignore_checks': 'domain'}, 'ignore_checks must be a list'),
])
def test_bad_options_are_errors(kwargs, match):
    with pytest.raises(sysprep.PreflightError, match=match):
        sysprep.preflight(facts(), **kwargs)


@pytest.mark.parametrize('data, match', [
    ('not json', 'not valid JSON'),
    ('[1, 2]', 'must be a JSON object'),
    (None, 'must be a JSON object'),
    ({'bitlocker': {'C:': 'FullyEncrypted'}}, 'facts.bitlocker must be a list'),
    ({'bitlocker': ['C:']}, 'list of volumes'),
    ({'features': 'DHCP'}, 'facts.features must be a list'),
    ({'appx_user_only': [{'name': 'x'}]}, 'package_full_name'),
    ({'image_state': {'registry': 7}}, 'image state must be a string'),
    ({'services': {'cdrom_start': '4'}}, 'cdrom_start must be an integer'),
    ({'rearm_count': '0'}, 'rearm_count must be an integer'),
    ({'pending_reboot': {'pending_file_rename_operations': 'x'}}, 'must be a list'),
])
def test_facts_of_the_wrong_shape_are_errors(data, match):
    with pytest.raises(sysprep.PreflightError, match=match):
        sysprep.preflight(data)
