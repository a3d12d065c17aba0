#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build (cached) and hand out fresh copies of real Debian 12 root filesystems.

Profiles:
  guest  systemd, OpenSSH server, python3, cloud-init, waagent, isc-dhcp-client, sudo:
         what a Debian VM in a cloud runs. Used through the chroot connection and as the
         podman image for Molecule.
  vm     guest plus a kernel, udev and dbus, for a bootable QEMU disk.

Usage:
  debian_root.py build [--profile P]          print the path of the cached root tarball
  debian_root.py copy [--profile P] DEST      extract a fresh copy into DEST (must be empty)
"""
from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import target_cache  # noqa: E402  pylint: disable=wrong-import-position

SUITE = 'bookworm'
GUEST_PACKAGES = [
    'systemd', 'systemd-sysv', 'dbus', 'openssh-server', 'python3', 'python3-apt', 'sudo',
    'cloud-init', 'waagent', 'isc-dhcp-client', 'iproute2', 'ifupdown', 'netbase', 'procps',
    'less', 'cron', 'logrotate', 'ca-certificates',
]
PROFILES = {
    'guest': GUEST_PACKAGES,
    'vm': GUEST_PACKAGES + ['linux-image-amd64', 'udev', 'kmod', 'initramfs-tools', 'zstd'],
}


def mmdebstrap_command(profile: str, output: pathlib.Path) -> list[str]:
    """Return the mmdebstrap command line that builds PROFILE into OUTPUT."""
    return [
        'mmdebstrap', '--variant=minbase', '--quiet', '--format=tar',
        '--include=' + ','.join(PROFILES[profile]),
        # a generic hostname, like a cloud image before its first boot
        '--customize-hook=echo localhost > "$1/etc/hostname"',
        SUITE, str(output),
    ]


def tarball_path(profile: str) -> pathlib.Path:
    """Return where the cached tarball of PROFILE lives; its name carries the key of its inputs."""
    key = target_cache.input_key(*mmdebstrap_command(profile, pathlib.Path('OUT')))
    return target_cache.cache_dir() / f'debian12-{profile}-{key}.tar'


def build(profile: str) -> pathlib.Path:
    """Build the root tarball of PROFILE with mmdebstrap unless a build with the same inputs exists."""
    final = tarball_path(profile)
    with target_cache.build_lock(f'debian12-{profile}'):
        if final.exists():
            return final
        tmp = final.with_name(final.name + '.partial')
        tmp.unlink(missing_ok=True)
        subprocess.run(mmdebstrap_command(profile, tmp), check=True)
        target_cache.publish(tmp, final)
        target_cache.prune(f'debian12-{profile}-', final)
    return final


def copy(profile: str, dest: pathlib.Path) -> pathlib.Path:
    """Extract a fresh copy of the PROFILE root into DEST."""
    tarball = build(profile)
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise SystemExit(f'{dest} is not empty; a root copy needs an empty directory')
    subprocess.run(['tar', '-xf', str(tarball), '-C', str(dest), '--numeric-owner',
                    '--xattrs', '--xattrs-include=*'], check=True)
    return dest


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=['build', 'copy'])
    parser.add_argument('dest', nargs='?', type=pathlib.Path)
    parser.add_argument('--profile', choices=sorted(PROFILES), default='guest')
    args = parser.parse_intermixed_args()
    if args.action == 'build':
        print(build(args.profile))
    else:
        if args.dest is None:
            parser.error('copy needs DEST')
        print(copy(args.profile, args.dest))


if __name__ == '__main__':
    main()
