#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixture trees of the families whose roots cannot be built here (RHEL, SUSE, Ubuntu, Arch).

A fixture tree is a directory with what the residue code reads and writes on that family,
not a bootable system: the family's published ``os-release`` (verbatim, in
``/usr/lib/os-release`` with ``/etc/os-release`` linking to it, as those distributions ship
it), its account databases and ``login.defs`` (data under ``fixtures/<family>/``), its
network configuration with the VM's identity (MAC addresses, connection UUIDs), its
registration files and, on RHEL, LVM's devices file. ``build_used()`` then runs the planter
over it (``plant_used_vm.plant``), which writes the family's runtime residue at the family's
paths.

Formats, per family:
  rhel    ifcfg-eth0 as NetworkManager's ifcfg-rh plugin writes it (HWADDR, UUID), cloud-init's
          NetworkManager keyfile (uuid, mac-address; mode 0600), RHSM consumer and entitlement
          certificates (real X.509 from openssl), RHN systemid (XML-RPC params), yum uuid,
          insights-client machine-id, /etc/lvm/devices/system.devices
  suse    /etc/sysconfig/network/ifcfg-eth0 (LLADDR) and cloud-init's udev rule, SUSEConnect
          configuration, SCC credentials, zypp AnonymousUniqueId
  ubuntu  netplan 50-cloud-init.yaml (match macaddress, set-name), Ubuntu Pro machine token
  arch    cloud-init's systemd-networkd file (MACAddress match)

Usage:
  fixture_trees.py FAMILY DEST [--plant] [--manifest OUT.json]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
import textwrap

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import plant_used_vm  # noqa: E402  pylint: disable=wrong-import-position
from plant_used_vm import (  # noqa: E402  pylint: disable=wrong-import-position
    FQDN, INSTANCE_ID, MAC_ADDRESS, NM_CONNECTION_UUID, Manifest, make_dir, run_host, write_file,
)

FIXTURES = pathlib.Path(__file__).resolve().parent / 'fixtures'
FAMILIES = ('rhel', 'suse', 'ubuntu', 'arch')
# cloud-init's NetworkManager renderer derives the profile uuid from the interface name
CLOUD_INIT_NM_UUID = '1dd9a779-d327-56e1-8454-c65e2556c12c'
RHSM_CONSUMER_UUID = '0b7c5f3e-2a41-4d8e-9f61-7c3d2e1b0a94'
RHSM_ORG_ID = '12345678'
ENTITLEMENT_SERIAL = '4579356285930287413'
# account database modes as each family ships them
SHADOW_MODES = {'rhel': 0o000, 'suse': 0o640, 'ubuntu': 0o640, 'arch': 0o600}


def build(family: str, dest: pathlib.Path) -> list[dict[str, str]]:
    """Create the fixture tree of FAMILY in DEST (empty or missing); return its manifest entries."""
    if family not in FAMILIES:
        raise plant_used_vm.PlantError(f'no fixture tree for {family!r}; one of {", ".join(FAMILIES)}')
    dest.mkdir(parents=True, exist_ok=True)
    if any(dest.iterdir()):
        raise plant_used_vm.PlantError(f'{dest} is not empty; a fixture tree needs an empty directory')
    shutil.copytree(FIXTURES / family, dest, dirs_exist_ok=True)
    (dest / 'etc/os-release').symlink_to('../usr/lib/os-release')
    shadow_group = plant_used_vm.root_group_id(dest, 'shadow')
    for name in ('shadow', 'gshadow'):
        os.chown(dest / 'etc' / name, 0, shadow_group)
        os.chmod(dest / 'etc' / name, SHADOW_MODES[family])
    for directory, mode in (('root', 0o700), ('home', 0o755), ('tmp', 0o1777), ('var/tmp', 0o1777), ('run', 0o755),
                            ('var/log', 0o755), ('var/lib', 0o755), ('etc/ssh', 0o755)):
        make_dir(dest / directory, mode)
    write_file(dest / 'etc/hosts', '127.0.0.1   localhost localhost.localdomain\n::1         localhost localhost.localdomain\n')
    manifest = Manifest(dest)
    {'rhel': _build_rhel, 'suse': _build_suse, 'ubuntu': _build_ubuntu, 'arch': _build_arch}[family](dest, manifest)
    return manifest.entries


def build_used(family: str, dest: pathlib.Path) -> list[dict[str, str]]:
    """Build the fixture tree of FAMILY in DEST and plant production residue into it."""
    entries = build(family, dest)
    return entries + plant_used_vm.plant(dest, family)


def _build_rhel(dest: pathlib.Path, manifest: Manifest) -> None:
    mac = MAC_ADDRESS.upper()
    ifcfg = '/etc/sysconfig/network-scripts/ifcfg-eth0'
    write_file(dest / ifcfg.lstrip('/'), textwrap.dedent(f'''\
        TYPE=Ethernet
        PROXY_METHOD=none
        BROWSER_ONLY=no
        BOOTPROTO=dhcp
        DEFROUTE=yes
        IPV4_FAILURE_FATAL=no
        IPV6INIT=yes
        IPV6_AUTOCONF=yes
        IPV6_DEFROUTE=yes
        IPV6_FAILURE_FATAL=no
        NAME="System eth0"
        UUID={NM_CONNECTION_UUID}
        DEVICE=eth0
        ONBOOT=yes
        HWADDR={mac}
        '''))
    manifest.content('network_identity', ifcfg, f'HWADDR={mac}')
    manifest.content('network_identity', ifcfg, f'UUID={NM_CONNECTION_UUID}')
    keyfile = '/etc/NetworkManager/system-connections/cloud-init-eth0.nmconnection'
    write_file(dest / keyfile.lstrip('/'), textwrap.dedent(f'''\
        # Generated by cloud-init. Changes will be lost.

        [connection]
        id=cloud-init eth0
        uuid={CLOUD_INIT_NM_UUID}
        autoconnect-priority=120
        type=ethernet

        [user]
        org.freedesktop.NetworkManager.origin=cloud-init

        [ethernet]
        mac-address={mac}

        [ipv4]
        method=auto
        may-fail=false

        '''), 0o600)
    manifest.content('network_identity', keyfile, f'uuid={CLOUD_INIT_NM_UUID}')
    manifest.content('network_identity', keyfile, f'mac-address={mac}')

    consumer = dest / 'etc/pki/consumer'
    make_dir(consumer)
    run_host(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '365', '-subj', f'/O={RHSM_ORG_ID}/CN={RHSM_CONSUMER_UUID}',
              '-keyout', str(consumer / 'key.pem'), '-out', str(consumer / 'cert.pem')])
    os.chmod(consumer / 'key.pem', 0o640)
    manifest.file('registration', '/etc/pki/consumer/cert.pem', f'RHSM consumer certificate, CN={RHSM_CONSUMER_UUID}')
    manifest.file('registration', '/etc/pki/consumer/key.pem', 'RHSM consumer key')
    entitlement = dest / 'etc/pki/entitlement'
    make_dir(entitlement)
    run_host(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '365', '-subj', f'/CN={RHSM_ORG_ID}',
              '-set_serial', ENTITLEMENT_SERIAL,
              # Red Hat's product OID namespace: product 479 is Red Hat Enterprise Linux for x86_64
              '-addext', '1.3.6.1.4.1.2312.9.1.479.1=ASN1:UTF8String:Red Hat Enterprise Linux for x86_64',
              '-keyout', str(entitlement / f'{ENTITLEMENT_SERIAL}-key.pem'), '-out', str(entitlement / f'{ENTITLEMENT_SERIAL}.pem')])
    manifest.file('registration', f'/etc/pki/entitlement/{ENTITLEMENT_SERIAL}.pem', 'RHSM entitlement certificate')
    manifest.file('registration', f'/etc/pki/entitlement/{ENTITLEMENT_SERIAL}-key.pem', 'RHSM entitlement key')
    systemid = '/etc/sysconfig/rhn/systemid'
    members = {'username': 'contoso-ops', 'operating_system': 'redhat-release', 'profile_name': FQDN,
               'system_id': 'ID-1000012345', 'architecture': 'x86_64', 'os_release': '9.4',
               'checksum': 'a7f5c3e1b9d24f6e8c0a1b2d3e4f5a6b'}
    body = ''.join(f'<member>\n<name>{name}</name>\n<value><string>{value}</string></value>\n</member>\n' for name, value in members.items())
    write_file(dest / systemid.lstrip('/'), f'<?xml version="1.0"?>\n<params>\n<param>\n<value><struct>\n{body}</struct></value>\n'
                                            '</param>\n</params>\n', 0o600)
    manifest.content('registration', systemid, '<name>system_id</name>')
    write_file(dest / 'var/lib/yum/uuid', 'e1c9f2a4-6b3d-4f8e-a0c7-5d2b9e4f1a36')
    manifest.file('registration', '/var/lib/yum/uuid', 'yum uuid (RHEL 7 and earlier)')
    write_file(dest / 'etc/insights-client/machine-id', 'a3c51e27-9d4f-4b86-8e2a-6f0d1c7b5e93')
    manifest.file('registration', '/etc/insights-client/machine-id', 'Red Hat Insights machine id')

    devices = '/etc/lvm/devices/system.devices'
    write_file(dest / devices.lstrip('/'), textwrap.dedent('''\
        # LVM uses devices listed in this file.
        # Created by LVM command vgimportdevices pid 745 at Fri Nov 21 08:59:12 2025
        VERSION=1.1.1
        IDTYPE=sys_wwid IDNAME=naa.60022480d0f8d63d4c8cbd42b9e5e0a1 DEVNAME=/dev/sda4 PVID=Fq3dl9vJ1mYxP0aZc3WkT8oR2hN6sE4u PART=4
        '''))
    manifest.content('lvm_devices', devices, 'PVID=Fq3dl9vJ1mYxP0aZc3WkT8oR2hN6sE4u')


def _build_suse(dest: pathlib.Path, manifest: Manifest) -> None:
    ifcfg = '/etc/sysconfig/network/ifcfg-eth0'
    write_file(dest / ifcfg.lstrip('/'), textwrap.dedent(f'''\
        # Created by cloud-init automatically, do not edit.
        #
        BOOTPROTO=dhcp4
        DHCLIENT_SET_DEFAULT_ROUTE=yes
        LLADDR={MAC_ADDRESS}
        STARTMODE=auto
        '''))
    manifest.content('network_identity', ifcfg, f'LLADDR={MAC_ADDRESS}')
    rules = '/etc/udev/rules.d/85-persistent-net-cloud-init.rules'
    write_file(dest / rules.lstrip('/'), f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{MAC_ADDRESS}", NAME="eth0"\n')
    manifest.content('network_identity', rules, MAC_ADDRESS)
    write_file(dest / 'etc/SUSEConnect', '---\nurl: https://scc.suse.com\ninsecure: false\n', 0o600)
    manifest.content('registration', '/etc/SUSEConnect', 'url: https://scc.suse.com')
    credentials = '/etc/zypp/credentials.d/SCCcredentials'
    write_file(dest / credentials.lstrip('/'), 'username=SCC_3b336b6784f04b5e9a2f1c3d4e5f6a7b\npassword=8f3c1e2d4b5a6978\n', 0o600)
    manifest.content('registration', credentials, 'username=SCC_')
    write_file(dest / 'var/lib/zypp/AnonymousUniqueId', 'f2d6a1c8-3e5b-4a97-b0c4-8e1f7d2a6b35')
    manifest.file('registration', '/var/lib/zypp/AnonymousUniqueId', 'zypp anonymous unique id')


def _build_ubuntu(dest: pathlib.Path, manifest: Manifest) -> None:
    netplan = '/etc/netplan/50-cloud-init.yaml'
    write_file(dest / netplan.lstrip('/'), textwrap.dedent(f'''\
        # This file is generated from information provided by the datasource.  Changes
        # to it will not persist across an instance reboot.  To disable cloud-init's
        # network configuration capabilities, write a file
        # /etc/cloud/cloud.cfg.d/99-disable-network-config.cfg with the following:
        # network: {{config: disabled}}
        network:
            ethernets:
                eth0:
                    dhcp4: true
                    dhcp4-overrides:
                        route-metric: 100
                    dhcp6: false
                    match:
                        driver: hv_netvsc
                        macaddress: {MAC_ADDRESS}
                    set-name: eth0
            version: 2
        '''), 0o600)
    manifest.content('network_identity', netplan, f'macaddress: {MAC_ADDRESS}')
    manifest.content('network_identity', netplan, 'set-name: eth0')
    token = '/var/lib/ubuntu-advantage/private/machine-token.json'
    make_dir(dest / 'var/lib/ubuntu-advantage/private', 0o700)
    write_file(dest / token.lstrip('/'), json.dumps({
        'machineToken': 'aBcD1234eFgH5678iJkL',
        'machineTokenInfo': {'machineId': INSTANCE_ID.replace('-', ''), 'contractInfo': {'id': 'cAX4qPz7', 'name': 'contoso-pro'}},
    }, indent=2) + '\n', 0o600)
    manifest.content('registration', token, '"machineToken"')


def _build_arch(dest: pathlib.Path, manifest: Manifest) -> None:
    network = '/etc/systemd/network/10-cloud-init-eth0.network'
    write_file(dest / network.lstrip('/'), textwrap.dedent(f'''\
        # Generated by cloud-init. Changes will be lost.

        [Match]
        MACAddress={MAC_ADDRESS}
        Name=eth0

        [Network]
        DHCP=ipv4

        '''))
    manifest.content('network_identity', network, f'MACAddress={MAC_ADDRESS}')
    # Arch has no registration service and no LVM devices file by default


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('family', choices=FAMILIES)
    parser.add_argument('dest', type=pathlib.Path)
    parser.add_argument('--plant', action='store_true', help='also plant production residue (plant_used_vm)')
    parser.add_argument('--manifest', type=pathlib.Path, help='write the manifest (JSON) here')
    args = parser.parse_args()
    try:
        entries = build_used(args.family, args.dest) if args.plant else build(args.family, args.dest)
    except plant_used_vm.PlantError as error:
        raise SystemExit(f'fixture_trees: {error}') from error
    if args.manifest:
        args.manifest.write_text(json.dumps(entries, indent=1) + '\n', encoding='utf-8')
    print(f'{args.family} fixture tree in {args.dest} ({len(entries)} manifest entries)')


if __name__ == '__main__':
    main()
