#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Test domains of the libvirt_vm target, through tests/targets/libvirt_host.py.

Usage:
  domains.py define NAME WORKDIR PATH:FORMAT...   define a domain (type qemu, no OS) on those disks (vda, vdb, ...)
  domains.py set-source NAME TARGET PATH FORMAT   point one disk of the persistent definition elsewhere (a change by hand)
  domains.py remove WORKDIR NAME...               destroy and undefine the domains that exist (QEMU logs kept in WORKDIR)
"""
from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import xml.etree.ElementTree as ET

sys.path.insert(0, os.environ['IMAGEPREP_TEST_TARGETS'])

import libvirt_host  # noqa: E402  pylint: disable=wrong-import-position


def main() -> None:
    """Run the action named on the command line."""
    action, args = sys.argv[1], sys.argv[2:]
    if action == 'define':
        name, workdir, disks = args[0], pathlib.Path(args[1]), args[2:]
        specs = [{'path': path, 'format': fmt} for path, fmt in (disk.rsplit(':', 1) for disk in disks)]
        libvirt_host.LibvirtDomain.define(name, specs, workdir, memory_mib=64, domain_type='qemu')
    elif action == 'set-source':
        name, target, path, fmt = args
        root = ET.fromstring(libvirt_host.virsh('dumpxml', '--inactive', name).stdout)
        for disk in root.findall('./devices/disk'):
            if disk.find('target').get('dev') == target:
                for chain in disk.findall('backingStore'):
                    disk.remove(chain)
                disk.find('source').set('file', path)
                disk.find('driver').set('type', fmt)
        with tempfile.NamedTemporaryFile('w', suffix='.xml', encoding='utf-8') as handle:
            handle.write(ET.tostring(root, encoding='unicode'))
            handle.flush()
            libvirt_host.virsh('define', handle.name)
    elif action == 'remove':
        for name in args[1:]:
            domain = libvirt_host.LibvirtDomain(name, pathlib.Path(args[0]))
            if domain.exists():
                domain.cleanup()
    else:
        raise SystemExit(__doc__)


if __name__ == '__main__':
    main()
