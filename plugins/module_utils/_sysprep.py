# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Sysprep pre-flight: may this Windows guest be generalized now, and if not, why and how to fix it.

The guest gathers its facts in one round trip (``roles/windows_sysprep/files/Get-SysprepPreflight.ps1``
prints them as one JSON object); :func:`preflight` decides on them, here, where the decisions are
unit-tested without a Windows host. Each rule cites the published fact it encodes:

``image_state``      Microsoft, "Windows Setup States": the state in ``HKLM\\SOFTWARE\\Microsoft\\Windows\\
                     CurrentVersion\\Setup\\State`` (``ImageState``) and ``%WINDIR%\\Setup\\State\\State.ini``.
``pending_reboot``   Microsoft, "Prepare a Windows VHD to upload to Azure": update Windows and restart
                     before running Sysprep; a pending restart or running servicing fails generalize.
``bitlocker``        same article: "Sysprep requires the drives to be fully decrypted before execution".
``server_roles``     Microsoft, "Sysprep Support for Server Roles".
``appx``             Microsoft KB 2769827: a package installed for a user but not provisioned for all
                     users makes Sysprep fail ("Sysprep was not able to validate your Windows
                     installation", 0x80073cf2).
``azure_agent``      Azure VM Image Builder troubleshooting, "Sysprep timing": wait until the guest agent
                     services run before Sysprep; "Prepare a Windows VHD": the agent is recommended.
``cdrom``            "Prepare a Windows VHD": Azure mounts the provisioning ISO on the DVD-ROM; with the
                     DVD-ROM disabled the VM is stuck at OOBE.
``domain``           a warning only: the deployed copies do not keep the reference VM's membership.
``sysprep_running``  one Sysprep at a time.
``rearm``            without ``SkipRearm`` generalize rearms licensing, which fails at a rearm count of 0.
"""
from __future__ import annotations

import json
import typing as t

CHECKS = ('image_state', 'pending_reboot', 'bitlocker', 'server_roles', 'appx', 'azure_agent', 'cdrom', 'domain',
          'sysprep_running', 'rearm')
PLATFORMS = ('generic', 'azure')

# "Windows Setup States" lists these values and no others. Microsoft's own page spells one of them
# "IMAGE_STATE _UNDEPLOYABLE"; states are compared without blanks.
STATE_COMPLETE = 'IMAGE_STATE_COMPLETE'
STATE_UNDEPLOYABLE = 'IMAGE_STATE_UNDEPLOYABLE'
STATE_GENERALIZE_OOBE = 'IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE'
STATE_GENERALIZE_AUDIT = 'IMAGE_STATE_GENERALIZE_RESEAL_TO_AUDIT'
STATE_SPECIALIZE_OOBE = 'IMAGE_STATE_SPECIALIZE_RESEAL_TO_OOBE'
STATE_SPECIALIZE_AUDIT = 'IMAGE_STATE_SPECIALIZE_RESEAL_TO_AUDIT'
IMAGE_STATES = (STATE_COMPLETE, STATE_UNDEPLOYABLE, STATE_GENERALIZE_OOBE, STATE_GENERALIZE_AUDIT,
                STATE_SPECIALIZE_OOBE, STATE_SPECIALIZE_AUDIT)
GENERALIZED_STATES = (STATE_GENERALIZE_OOBE, STATE_GENERALIZE_AUDIT)

BITLOCKER_DECRYPTED = 'FullyDecrypted'


class ServerRole(t.NamedTuple):
    """A server role that "Sysprep Support for Server Roles" marks unsupported, and its feature names."""

    name: str
    features: t.Tuple[str, ...]  # Get-WindowsFeature names, lower case; a trailing '*' matches a prefix


# The rows marked "No" for Windows Server 2008 R2 and later (every build this collection supports).
# Only the role services count: the RSAT-* and *-RSAT/-UI management tools are not the role.
UNSUPPORTED_ROLES = (
    ServerRole('Active Directory Certificate Services (AD CS)', ('ad-certificate', 'adcs-*')),
    ServerRole('Active Directory Domain Services (AD DS)', ('ad-domain-services',)),
    ServerRole('Active Directory Federation Services (AD FS)', ('adfs-*',)),
    ServerRole('Active Directory Lightweight Directory Services (AD LDS)', ('adlds',)),
    ServerRole('Active Directory Rights Management Services (AD RMS)', ('adrms', 'adrms-*')),
    ServerRole('DHCP Server', ('dhcp',)),
    ServerRole('Fax Server', ('fax',)),
    ServerRole('Network Policy and Access Services (NPAS)', ('npas', 'npas-*')),
    ServerRole('Windows Server Update Services (WSUS)', ('updateservices', 'updateservices-services',
                                                         'updateservices-widdb', 'updateservices-db')),
)
# Windows Deployment Services is supported only while it is not initialized (the same table).
WDS_FEATURES = ('wds', 'wds-deployment', 'wds-transport')

AZURE_AGENT_SERVICES = ('RdAgent', 'WindowsAzureGuestAgent')
# The start value Windows installs for the cdrom driver (SERVICE_SYSTEM_START); 4 is SERVICE_DISABLED.
CDROM_START_DEFAULT = 1
CDROM_START_DISABLED = 4


class PreflightError(ValueError):
    """The facts or the options cannot be decided on (wrong shape, unknown check or platform)."""


Finding = t.Dict[str, str]


def _blocker(check: str, message: str, fix: str) -> Finding:
    return {'check': check, 'message': message, 'fix': fix}


def _warning(check: str, message: str) -> Finding:
    return {'check': check, 'message': message}


def _section(facts: t.Mapping[str, t.Any], key: str, kind: type, default: t.Any) -> t.Any:
    """facts[key] when it has the right type; the default when it is missing or null."""
    value = facts.get(key)
    if value is None:
        return default
    if not isinstance(value, kind):
        raise PreflightError(f'facts.{key} must be a {kind.__name__}, got {type(value).__name__}')
    return value


def _state(value: t.Any) -> t.Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise PreflightError(f'an image state must be a string, got {type(value).__name__}')
    return ''.join(value.split()).upper() or None


def check_image_state(facts: t.Mapping[str, t.Any]) -> t.Tuple[str, bool, t.List[Finding], t.List[Finding]]:
    """The image state, whether the image is already generalized, blockers and warnings."""
    section = _section(facts, 'image_state', dict, {})
    registry = _state(section.get('registry'))
    state_ini = _state(section.get('state_ini'))
    warnings = []
    # The registry is Setup's primary record; State.ini is the copy a reader of an offline image sees.
    state = registry or state_ini
    if registry and state_ini and registry != state_ini:
        warnings.append(_warning('image_state', f'The registry says {registry} but State.ini says {state_ini}; '
                                                f'deciding on the registry.'))
    if state is None:
        return 'unknown', False, [_blocker(
            'image_state', 'The image state could not be read from the registry or State.ini.',
            r'Check HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Setup\State (ImageState) and '
            r'%WINDIR%\Setup\State\State.ini on the guest.')], warnings
    if state in GENERALIZED_STATES:
        if state == STATE_GENERALIZE_AUDIT:
            warnings.append(_warning('image_state', 'The image is generalized but reseals to audit mode: its first '
                                                    'boot enters audit mode, not OOBE.'))
        return state, True, [], warnings
    if state == STATE_COMPLETE:
        return state, False, [], warnings
    if state == STATE_UNDEPLOYABLE:
        sysprep = _section(facts, 'sysprep', dict, {})
        if sysprep.get('running'):
            # Documented: UNDEPLOYABLE while Setup (here Sysprep) runs; sysprep_running reports that.
            return state, False, [], warnings
        return state, False, [_blocker(
            'image_state', f'The image state is {state}: a Setup or Sysprep phase failed and did not complete '
                           f'(Microsoft: such an image must be reinstalled).',
            r'Read %WINDIR%\System32\Sysprep\Panther\setuperr.log for the failed phase; rebuild the VM from its '
            r'backup or installation media.')], warnings
    if state in (STATE_SPECIALIZE_OOBE, STATE_SPECIALIZE_AUDIT):
        mode = 'OOBE' if state == STATE_SPECIALIZE_OOBE else 'audit mode'
        return state, False, [_blocker(
            'image_state', f'The image state is {state}: the specialize pass ran and the next boot continues into '
                           f'{mode}; Setup has not completed.',
            f'Restart the VM and let it finish {mode} until the state is {STATE_COMPLETE}, then run the role again.')
        ], warnings
    return state, False, [_blocker(
        'image_state', f'The image state {state} is none of the documented states ({", ".join(IMAGE_STATES)}).',
        'Check the guest: the state is read from the registry and State.ini.')], warnings


def check_pending_reboot(facts: t.Mapping[str, t.Any]) -> t.List[Finding]:
    """A pending restart or running servicing."""
    section = _section(facts, 'pending_reboot', dict, {})
    renames = section.get('pending_file_rename_operations') or []
    if not isinstance(renames, list):
        raise PreflightError('facts.pending_reboot.pending_file_rename_operations must be a list')
    renames = [str(name) for name in renames if str(name).strip()]
    reasons = []
    if section.get('cbs_reboot_pending'):
        reasons.append('Component Based Servicing has RebootPending')
    if section.get('wu_reboot_required'):
        reasons.append('Windows Update has RebootRequired')
    if renames:
        shown = ', '.join(renames[:3]) + (f' and {len(renames) - 3} more' if len(renames) > 3 else '')
        reasons.append(f'PendingFileRenameOperations holds {len(renames)} operation(s) ({shown})')
    if section.get('tiworker_running'):
        reasons.append('the Windows Modules Installer Worker (TiWorker.exe) is servicing the OS')
    if not reasons:
        return []
    return [_blocker('pending_reboot', 'A restart or servicing is pending: ' + '; '.join(reasons) + '.',
                     'Restart the VM (ansible.windows.win_reboot), wait until TiWorker.exe has exited, and run the '
                     'role again.')]


def check_bitlocker(facts: t.Mapping[str, t.Any]) -> t.List[Finding]:
    """Every volume must be fully decrypted; protection off is not enough."""
    volumes = _section(facts, 'bitlocker', list, [])
    found = []
    for volume in volumes:
        if not isinstance(volume, dict):
            raise PreflightError('facts.bitlocker must be a list of volumes')
        status = volume.get('volume_status')
        if status == BITLOCKER_DECRYPTED:
            continue
        mount = volume.get('mount_point') or '?'
        detail = f'{mount} is {status}'
        if volume.get('protection_status') is not None:
            detail += f', protection {volume.get("protection_status")}'
        if volume.get('encryption_percentage') is not None:
            detail += f', {volume.get("encryption_percentage")}% encrypted'
        found.append((mount, detail))
    if not found:
        return []
    mounts = ', '.join(f"'{mount}'" for mount, detail in found)
    return [_blocker('bitlocker', 'BitLocker: Sysprep needs every volume fully decrypted, including volumes whose '
                                  'protection is off: ' + '; '.join(detail for mount, detail in found) + '.',
                     f'Disable-BitLocker -MountPoint {mounts} (or manage-bde -off <volume>) and wait until '
                     f'Get-BitLockerVolume shows FullyDecrypted for each, then run the role again.')]


def _matches(feature: str, patterns: t.Iterable[str]) -> bool:
    return any(feature.startswith(pattern[:-1]) if pattern.endswith('*') else feature == pattern
               for pattern in patterns)


def check_server_roles(facts: t.Mapping[str, t.Any]) -> t.List[Finding]:
    """Installed roles that Sysprep does not support."""
    features = _section(facts, 'features', list, [])
    installed = [str(name) for name in features]
    found = []
    for role in UNSUPPORTED_ROLES:
        names = [name for name in installed if _matches(name.lower(), role.features)]
        if names:
            found.append((role.name, names))
    wds = [name for name in installed if name.lower() in WDS_FEATURES]
    if wds:
        initialized = facts.get('wds_initialized')
        if initialized is not False:
            # null means the probe could not tell; an initialized server is the unsupported case.
            state = 'initialized' if initialized else 'possibly initialized'
            found.append((f'Windows Deployment Services ({state})', wds))
    if not found:
        return []
    features_found = [name for role, names in found for name in names]
    return [_blocker('server_roles', 'Installed server roles that Sysprep does not support (Microsoft, "Sysprep '
                                     'Support for Server Roles"): ' +
                     '; '.join(f'{role} [{", ".join(names)}]' for role, names in found) + '.',
                     'Uninstall-WindowsFeature -Name ' + ','.join(features_found) + ' -Restart, then install and '
                     'configure these roles on each deployed VM instead.')]


def check_appx(facts: t.Mapping[str, t.Any]) -> t.Tuple[t.List[Finding], t.List[str]]:
    """Packages installed for a user but not provisioned for all users, and their full names."""
    packages = _section(facts, 'appx_user_only', list, [])
    lines = []
    full_names = []
    for package in packages:
        if not isinstance(package, dict) or not package.get('package_full_name'):
            raise PreflightError('facts.appx_user_only must be a list of packages with a package_full_name')
        full_name = str(package['package_full_name'])
        users = package.get('users') or []
        users = [users] if isinstance(users, str) else [str(user) for user in users]
        full_names.append(full_name)
        lines.append(f'{package.get("name") or full_name} ({full_name}, installed for {", ".join(users) or "a user"})')
    if not full_names:
        return [], []
    removals = '; '.join(f'Remove-AppxPackage -AllUsers -Package {name}' for name in full_names)
    return [_blocker('appx', 'Appx packages installed for a user but not provisioned for all users; Sysprep fails '
                             'on them with "Sysprep was not able to validate your Windows installation" '
                             '(0x80073cf2): ' + '; '.join(lines) + '.',
                     f'Remove each for every user: {removals} (or set windows_sysprep_remove_user_appx: true, '
                     f'and the role removes exactly these, the ones in appx_to_remove).')], full_names


def check_azure_agent(facts: t.Mapping[str, t.Any], platform: str) -> t.Tuple[t.List[Finding], t.List[Finding]]:
    """The Azure guest agent services, blockers and warnings."""
    services = _section(facts, 'services', dict, {})
    states = {name: str(services.get(name) or 'absent') for name in AZURE_AGENT_SERVICES}
    present = {name: state for name, state in states.items() if state.lower() != 'absent'}
    # Azure VM Image Builder documents Sysprep failing when it runs before the agent services have
    # started, so a present agent must be Running on any platform; Running and present on a generic
    # platform is fine (the agent idles without the Azure wire server).
    stopped = {name: state for name, state in present.items() if state.lower() != 'running'}
    blockers = []
    warnings = []
    if stopped:
        blockers.append(_blocker(
            'azure_agent', 'Azure guest agent services are installed but not running: ' +
            ', '.join(f'{name} is {state}' for name, state in stopped.items()) +
            '; Sysprep that runs before the agent has started fails.',
            'Start-Service -Name ' + ','.join(stopped) + " and wait until each is Running (set their start type to "
            "Automatic if it is not), then run the role again."))
    absent = [name for name in AZURE_AGENT_SERVICES if name not in present]
    if platform == 'azure' and absent:
        # "Prepare a Windows VHD to upload to Azure" lists the agent among the recommended settings
        # that do not affect the upload: without it a VM still boots, but gets no extensions.
        warnings.append(_warning('azure_agent', 'The Azure VM agent is not installed (' + ', '.join(absent) +
                                 ' absent); VMs from this image get no VM extensions (password reset, '
                                 'monitoring). Microsoft recommends installing it before generalizing.'))
    return blockers, warnings


def check_cdrom(facts: t.Mapping[str, t.Any], platform: str) -> t.Tuple[t.List[Finding], t.List[Finding]]:
    """On Azure, the DVD-ROM driver must stay enabled: provisioning reads its ISO from there."""
    start = _section(facts, 'services', dict, {}).get('cdrom_start')
    if start is not None and (isinstance(start, bool) or not isinstance(start, int)):
        raise PreflightError('facts.services.cdrom_start must be an integer or null')
    if platform != 'azure':
        return [], []
    fix = (r"Set-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Services\cdrom' -Name Start "
           f'-Value {CDROM_START_DEFAULT} -Type DWord (the Windows default), then run the role again.')
    if start is None:
        return [], [_warning('cdrom', r'The start value of the cdrom driver (HKLM\SYSTEM\CurrentControlSet\Services'
                                      r'\cdrom) could not be read; Azure needs the DVD-ROM enabled.')]
    if start == CDROM_START_DISABLED:
        return [_blocker('cdrom', 'The DVD-ROM driver is disabled (cdrom Start = 4). Azure mounts its provisioning '
                                  'ISO on the DVD-ROM when it creates a VM from a generalized image; with the '
                                  'DVD-ROM disabled the VM is stuck at OOBE.', fix)], []
    return [], []


def check_domain(facts: t.Mapping[str, t.Any]) -> t.List[Finding]:
    """Domain membership: a warning, the image is still valid."""
    domain = _section(facts, 'domain', dict, {})
    if not domain.get('part_of_domain'):
        return []
    return [_warning('domain', f'The VM is joined to the domain {domain.get("domain") or "?"}. Deployed copies do not '
                               f'keep this membership (the computer account stays with this VM) and domain policy '
                               f'settings are captured into the image; join each deployed VM to the domain instead.')]


def check_sysprep_running(facts: t.Mapping[str, t.Any]) -> t.List[Finding]:
    """A Sysprep run in progress."""
    if not _section(facts, 'sysprep', dict, {}).get('running'):
        return []
    return [_blocker('sysprep_running', 'sysprep.exe is already running on the VM.',
                     'Wait for it to finish (its result is the image state and Sysprep_succeeded.tag) or stop it '
                     'with Stop-Process -Name sysprep, read its Panther logs, and run the role again.')]


def check_rearm(facts: t.Mapping[str, t.Any], skip_rearm: bool) -> t.List[Finding]:
    """The licensing rearm count, when generalize will rearm."""
    count = facts.get('rearm_count')
    if count is None or skip_rearm:
        return []
    if isinstance(count, bool) or not isinstance(count, int):
        raise PreflightError('facts.rearm_count must be an integer or null')
    if count > 0:
        return []
    return [_warning('rearm', 'The Windows rearm count is 0: Sysprep /generalize rearms licensing and fails at the '
                              'rearm limit unless the answer file sets SkipRearm to 1.')]


def preflight(facts: t.Any, ignore_checks: t.Iterable[str] = (), platform: str = 'generic',
              skip_rearm: bool = False) -> t.Dict[str, t.Any]:
    """Decide whether Sysprep may generalize the guest described by FACTS (a dict or its JSON text).

    Returns ``already_generalized``, ``image_state``, ``blockers`` (check, message, fix), ``warnings``
    (check, message), ``ignored`` (names of checks in IGNORE_CHECKS that found something, dropped),
    ``appx_to_remove`` (package full names) and ``ok`` (no blockers left). SKIP_REARM says the answer
    file sets SkipRearm, which silences the rearm warning. Raises :class:`PreflightError` on facts of
    the wrong shape and on unknown check names or platforms.
    """
    if isinstance(facts, (str, bytes)):
        try:
            facts = json.loads(facts)
        except ValueError as exc:
            raise PreflightError(f'the facts are not valid JSON: {exc}') from exc
    if not isinstance(facts, dict):
        raise PreflightError(f'the facts must be a JSON object (dict), got {type(facts).__name__}')
    if platform not in PLATFORMS:
        raise PreflightError(f'unknown platform {platform!r}; known platforms: {", ".join(PLATFORMS)}')
    if isinstance(ignore_checks, (str, bytes)) or ignore_checks is None:
        raise PreflightError('ignore_checks must be a list of check names')
    ignore = [str(name) for name in ignore_checks]
    unknown = sorted(set(ignore) - set(CHECKS))
    if unknown:
        raise PreflightError(f'unknown check name(s) in ignore_checks: {", ".join(unknown)}; '
                             f'known checks: {", ".join(CHECKS)}')

    image_state, generalized, blockers, warnings = check_image_state(facts)
    blockers += check_pending_reboot(facts)
    blockers += check_bitlocker(facts)
    blockers += check_server_roles(facts)
    appx_blockers, appx_to_remove = check_appx(facts)
    blockers += appx_blockers
    for check in (check_azure_agent, check_cdrom):
        found_blockers, found_warnings = check(facts, platform)
        blockers += found_blockers
        warnings += found_warnings
    warnings += check_domain(facts)
    blockers += check_sysprep_running(facts)
    warnings += check_rearm(facts, skip_rearm)

    ignored = [name for name in CHECKS if name in ignore and any(f['check'] == name for f in blockers + warnings)]
    blockers = [finding for finding in blockers if finding['check'] not in ignore]
    warnings = [finding for finding in warnings if finding['check'] not in ignore]
    return {
        'already_generalized': generalized,
        'image_state': image_state,
        'blockers': blockers,
        'warnings': warnings,
        'ignored': ignored,
        'appx_to_remove': appx_to_remove,
        'ok': not blockers,
    }
