# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The identity of a Linux root: machine id, host name, SSH host keys, regular accounts.

What the golden-image pipeline compares between the source VM, its image and a clone booted
from it: a clone must have a machine id and host keys of its own, and the accounts it was
meant to keep. Everything is read through :class:`RootFS`, so an offline root is read the way
its own system would read it, never this machine's files.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
import typing as t

from ansible_collections.imageprep.vm.plugins.module_utils._rootfs import RootFS

DEFAULT_UID_MIN = 1000
# UIDs from here on are reserved (systemd's dynamic and container ranges, nobody at 65534).
RESERVED_UID_START = 60000
HOST_KEY_GLOB = '/etc/ssh/ssh_host_*_key.pub'


def ssh_fingerprint(blob: bytes) -> str:
    """The SHA256 fingerprint of a public key blob, as ``ssh-keygen -l`` prints it."""
    return 'SHA256:' + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip('=')


def parse_public_key(text: str) -> t.Optional[dict[str, str]]:
    """{type, public_key, fingerprint} of the first key line of an OpenSSH ``.pub`` file, None when it holds none."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith('#'):
            continue
        try:
            blob = base64.b64decode(fields[1], validate=True)
        except (binascii.Error, ValueError):
            continue
        # the blob starts with its own type name (a length-prefixed string); a mismatch is not a key
        if len(blob) < 4 or blob[4:4 + int.from_bytes(blob[:4], 'big')] != fields[0].encode():
            continue
        return {'type': fields[0], 'public_key': fields[1], 'fingerprint': ssh_fingerprint(blob)}
    return None


def uid_min(login_defs: t.Optional[str]) -> int:
    """UID_MIN of a login.defs text (the first UID useradd gives a regular account), 1000 when unset."""
    for line in (login_defs or '').splitlines():
        match = re.match(r'^\s*UID_MIN\s+(\d+)\s*(?:#.*)?$', line)
        if match:
            return int(match.group(1))
    return DEFAULT_UID_MIN


def regular_accounts(passwd: t.Optional[str], first_uid: int) -> list[dict[str, t.Any]]:
    """Regular (human) accounts of a passwd text: FIRST_UID <= UID < 60000, nobody excluded, in file order."""
    accounts = []
    for line in (passwd or '').splitlines():
        fields = line.split(':')
        if len(fields) < 7 or not fields[2].isdigit() or fields[0] in ('nobody', '') or fields[0].startswith(('+', '-')):
            continue
        uid = int(fields[2])
        if first_uid <= uid < RESERVED_UID_START:
            accounts.append({'name': fields[0], 'uid': uid, 'home': fields[5], 'shell': fields[6]})
    return accounts


def _stripped(fs: RootFS, path: str) -> t.Optional[str]:
    text = fs.read_text(path, follow=True)
    return None if text is None else text.strip()


def host_keys(fs: RootFS) -> list[dict[str, str]]:
    """The SSH host public keys of the root: {path, type, public_key, fingerprint}, by path."""
    keys = []
    for path in fs.glob(HOST_KEY_GLOB):
        key = parse_public_key(fs.read_text(path, follow=True) or '')
        if key is not None:
            keys.append(dict(key, path=path))
    return keys


def machine_identity(fs: RootFS) -> dict[str, t.Any]:
    """machine_id and hostname (stripped content; '' when empty, None when missing), ssh_host_keys, accounts."""
    return {
        'machine_id': _stripped(fs, '/etc/machine-id'),
        'hostname': _stripped(fs, '/etc/hostname'),
        'ssh_host_keys': host_keys(fs),
        'accounts': regular_accounts(fs.read_text('/etc/passwd', follow=True), uid_min(fs.read_text('/etc/login.defs', follow=True))),
    }
