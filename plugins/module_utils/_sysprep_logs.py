# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Sysprep failure table: known Panther log signatures, each with its cause and its fix.

:data:`SIGNATURES` is one table, in priority order. Each :class:`Signature` has an id, the
regular expressions that recognise it in a log line, the cause and the fix (format strings
that may name ``{package}``, ``{packages}``, ``{dll}`` or ``{entry}``), and an optional
extractor that pulls those details out of the matching lines.

:func:`diagnose` reads the fetched logs (``{"setupact.log": text, "setuperr.log": text, ...}``,
from ``%WINDIR%\\System32\\Sysprep\\Panther`` and ``%WINDIR%\\Panther``) and returns the first
signature that matches, or falls back to the log lines that look like errors.

Every signature is backed by a real log excerpt from a public source; the excerpts and their
sources live with the unit tests.
"""
from __future__ import annotations

import re
import typing as t

MAX_EVIDENCE = 20

# A Panther log line begins with "YYYY-MM-DD HH:MM:SS, Level"; sorting on it puts the most
# recent line last when lines of several files are merged.
TIMESTAMP_RE = re.compile(r'^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),')
# Lines worth showing when no signature matches: what Sysprep logs as an error or a failure.
# Case-sensitive on purpose: Info lines say "executed ... without error".
RELEVANT_RE = re.compile(r'(?:^|[\s,])Error\b|\bERROR:|\bFailed\b|\bFailure\b|\bfailed\b|halting sysprep|Hit failure')
APPX_PACKAGE_RE = re.compile(r'Package (\S+) (?:was )?installed for a user, but not provisioned for all users', re.IGNORECASE)
LAUNCHDLL_RE = re.compile(r"LaunchDll: ?Failure occurred while executing '([^',]+), ?([^']+)'", re.IGNORECASE)
LAUNCHMODULE_RE = re.compile(r"LaunchModule: Failure occurred while executing '([^']+)' from ([^;']+?\.dll)", re.IGNORECASE)


class SysprepLogError(Exception):
    """The logs given are not a mapping of log names to text."""


class Signature(t.NamedTuple):
    """One known Sysprep failure: how to recognise it, what it means, how to fix it."""

    id: str
    patterns: t.Tuple[re.Pattern[str], ...]
    cause: str
    fix: str
    details: t.Optional[t.Callable[[t.List[str]], t.Dict[str, str]]] = None


def package_name(package_full_name: str) -> str:
    """The package name of an Appx package full name (``Name_Version_Arch_ResourceId_PublisherId``)."""
    return package_full_name.split('_', 1)[0]


def _appx_details(lines: t.List[str]) -> t.Dict[str, str]:
    full_names = []  # type: t.List[str]
    for line in lines:
        match = APPX_PACKAGE_RE.search(line)
        if match and match.group(1) not in full_names:
            full_names.append(match.group(1))
    if not full_names:
        return {'package': '', 'packages': 'a Store (Appx) package'}
    return {'package': package_name(full_names[0]), 'packages': ', '.join(full_names)}


def dll_failure(line: str) -> t.Optional[t.Tuple[str, str]]:
    """The (DLL file name, entry point) of a provider that a log line reports as failed, or None."""
    match = LAUNCHDLL_RE.search(line)
    if match:
        dll, entry = match.group(1), match.group(2)
    else:
        match = LAUNCHMODULE_RE.search(line)
        if not match:
            return None
        entry, dll = match.group(1), match.group(2)
    return re.split(r'[\\/]', dll.strip())[-1], entry.strip()


def _provider_details(lines: t.List[str]) -> t.Dict[str, str]:
    for line in lines:
        found = dll_failure(line)
        if found:
            return {'dll': found[0], 'entry': found[1]}
    return {'dll': 'a Sysprep provider DLL', 'entry': 'its entry point'}


def _compile(*patterns: str) -> t.Tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.IGNORECASE) for p in patterns)


SIGNATURES = (
    Signature(
        id='appx_not_provisioned',
        patterns=_compile(
            r'installed for a user, but not provisioned for all users',
            r'Failed to remove apps for the current user: 0x80073cf2',
        ),
        cause='The Store (Appx) package {packages} is installed for a user but not provisioned for all '
              'users, so Sysprep cannot generalize the image (0x80073cf2).',
        fix='Remove the package for every user and remove its provisioning, then run Sysprep again: '
            'Get-AppxPackage -AllUsers -Name <name> | Remove-AppxPackage -AllUsers; '
            'Remove-AppxProvisionedPackage -Online -PackageName <package full name>. Keep the Store '
            'from updating apps while the image is built.',
        details=_appx_details,
    ),
    Signature(
        id='bitlocker',
        patterns=_compile(r'BitLocker is on', r'0x80310039'),
        cause='BitLocker is on for the OS volume; Sysprep will not generalize an encrypted volume '
              '(0x80310039, FVE_E_NOT_DECRYPTED), even with protection suspended.',
        fix='Decrypt the volume (Disable-BitLocker -MountPoint C:), wait until Get-BitLockerVolume '
            'shows FullyDecrypted, then run Sysprep again.',
    ),
    Signature(
        id='rearm_limit',
        patterns=_compile(r'SLReArmWindows.*(?:-1073425657|0xc004d307)', r'hr = 0xc004d307'),
        cause='The Windows licensing rearm limit of this image is used up (SLReArmWindows, 0xC004D307).',
        fix='Rebuild the image from installation media. While the image is still being built, '
            'set SkipRearm to 1 in the generalize pass (Microsoft-Windows-Security-SPP), and remove '
            'it for the final Sysprep run.',
    ),
    Signature(
        id='invalid_state',
        patterns=_compile(r'Not running DLLs; either the machine is in an invalid state'),
        cause='An earlier Sysprep run failed part-way and left the installation in a state Sysprep '
              'refuses to continue from.',
        fix='Re-create the image: Sysprep cannot roll back. Keep a copy of the Panther logs of the '
            'first failed run; they name the original cause.',
    ),
    Signature(
        id='pending_servicing',
        patterns=_compile(
            r'Failed to query pending CBS operations',
            r"Failure occurred while executing 'Sysprep_Clean_Validate_Opk'",
        ),
        cause="Sysprep's servicing check (Sysprep_Clean_Validate_Opk in spopk.dll) failed: Windows "
              'servicing has pending operations or could not be queried.',
        fix='Restart Windows to finish pending updates, wait until TiWorker.exe (Windows Modules '
            'Installer) has stopped, then run Sysprep again.',
    ),
    Signature(
        id='defender_for_endpoint',
        patterns=_compile(r'Windows-SenseClient-Service', r'Windows Advanced Threat Protection'),
        cause='Microsoft Defender for Endpoint (the Sense service) blocked generalize: Sysprep could '
              'not remove its onboarding state (access denied).',
        fix='Do not onboard the reference VM to Defender for Endpoint, or offboard it before Sysprep; '
            'onboard the clones after deployment (for example with the VDI onboarding script).',
    ),
    Signature(
        id='provider_failed',
        patterns=_compile(LAUNCHDLL_RE.pattern, LAUNCHMODULE_RE.pattern),
        cause='The Sysprep provider {dll} ({entry}) failed, and Sysprep stopped.',
        fix='Find the product that installed {dll} (security agents and management agents register '
            'Sysprep providers under HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Setup\\Sysprep'
            'External); follow its vendor\'s imaging guidance or uninstall it before Sysprep, then '
            'run Sysprep again.',
        details=_provider_details,
    ),
)  # type: t.Tuple[Signature, ...]

BY_ID = dict((s.id, s) for s in SIGNATURES)

UNKNOWN_CAUSE = 'unknown'
UNKNOWN_FIX = ('No known signature matched. Read the evidence lines (the errors Sysprep logged, most '
               'recent last) and the full setupact.log.')
NO_LOGS_FIX = ('No Sysprep log lines were given. Fetch setupact.log and setuperr.log from '
               '%WINDIR%\\System32\\Sysprep\\Panther and %WINDIR%\\Panther.')


def _text(value: t.Any) -> str:
    if value is None:
        return ''
    if isinstance(value, bytes):
        # Panther logs are usually ANSI or UTF-8; some tools save them as UTF-16.
        if value[:2] in (b'\xff\xfe', b'\xfe\xff'):
            return value.decode('utf-16', errors='replace')
        return value.decode('utf-8', errors='replace')
    if isinstance(value, str):
        return value
    raise SysprepLogError('a log must be text, got %s' % type(value).__name__)


def log_lines(logs: t.Mapping[str, t.Any]) -> t.List[str]:
    """All distinct non-empty lines of the logs, most recent last.

    setuperr.log repeats the errors of setupact.log, so a line seen twice is kept once. When
    every line carries a timestamp, the lines of all files are ordered by it.
    """
    if not isinstance(logs, t.Mapping):
        raise SysprepLogError('logs must be a mapping of log file names to text, got %s' % type(logs).__name__)
    seen = set()  # type: t.Set[str]
    lines = []  # type: t.List[str]
    for name in logs:
        for line in _text(logs[name]).lstrip('\ufeff').splitlines():
            line = line.rstrip()
            if line.strip() and line not in seen:
                seen.add(line)
                lines.append(line)
    stamps = [TIMESTAMP_RE.match(line) for line in lines]
    if lines and all(stamps):
        order = sorted(range(len(lines)), key=lambda i: (stamps[i].group(1), i))  # type: ignore[union-attr]
        lines = [lines[i] for i in order]
    return lines


def relevant_lines(lines: t.List[str], limit: int = MAX_EVIDENCE) -> t.List[str]:
    """The lines that report an error or a failure, at most ``limit``, most recent last."""
    found = [line for line in lines if RELEVANT_RE.search(line)]
    return found[-limit:]


def match(signature: Signature, lines: t.List[str]) -> t.List[str]:
    """The lines that carry the signature."""
    return [line for line in lines if any(p.search(line) for p in signature.patterns)]


def diagnose(logs: t.Mapping[str, t.Any]) -> t.Dict[str, t.Any]:
    """The cause of a failed Sysprep run, read from its Panther logs.

    Returns ``known``, ``cause``, ``fix``, ``signature`` (the id of the signature, or
    ``unknown``), ``package`` (the blocking Appx package by name, else None) and ``evidence``
    (the log lines the diagnosis rests on).
    """
    lines = log_lines(logs)
    for signature in SIGNATURES:
        matched = match(signature, lines)
        if not matched:
            continue
        details = signature.details(matched) if signature.details else {}
        return {
            'known': True,
            'cause': signature.cause.format(**details),
            'fix': signature.fix.format(**details),
            'signature': signature.id,
            'package': details.get('package') or None,
            'evidence': matched[-MAX_EVIDENCE:],
        }
    return {
        'known': False,
        'cause': UNKNOWN_CAUSE,
        'fix': UNKNOWN_FIX if lines else NO_LOGS_FIX,
        'signature': 'unknown',
        'package': None,
        'evidence': relevant_lines(lines),
    }
