#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: local_image_info
short_description: Query the local image library, and verify its files
version_added: 0.1.0
description:
  - Lists images of the local image library that M(imageprep.vm.local_image) writes, filtered
    by name, version, OS type and state, and tags.
  - With O(verify=true), re-hashes every file of the selected images and reports each file
    that is missing or has another sha256 than the catalogue records.
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module changes nothing; it runs the same in check mode.
  diff_mode:
    support: none
  platform:
    platforms: posix
  idempotent:
    description: When run twice in a row with the same arguments, the second run reports no change.
    support: full
options:
  library:
    description: Directory of the image library. A missing library has no images.
    type: path
    default: /var/lib/imageprep/images
  name:
    description: Only images of this name.
    type: str
  version:
    description: Only this version; V(latest) keeps the highest version of each name.
    type: str
  os_type:
    description: Only images of this OS type.
    type: str
    choices: [linux, windows]
  os_state:
    description: Only generalized or only specialized images.
    type: str
    choices: [generalized, specialized]
  tags:
    description: Only images carrying all of these tags with these values.
    type: dict
    default: {}
  verify:
    description: Re-hash the files of the selected images and report mismatches (reads every file).
    type: bool
    default: false
seealso:
  - module: imageprep.vm.local_image
"""

EXAMPLES = r"""
- name: Find the latest generalized version of an image
  imageprep.vm.local_image_info:
    name: debian12-web
    version: latest
    os_state: generalized
  register: __web

- name: Use its OS disk
  ansible.builtin.debug:
    msg: "{{ __web.images[0].disks[0].path }}"

- name: Verify every image of the library
  imageprep.vm.local_image_info:
    verify: true
  register: __check
  failed_when: __check.mismatches | length > 0
"""

RETURN = r"""
images:
  description:
    - The matching catalogue records, by name and then version; the same shape as RV(imageprep.vm.local_image#module:image).
    - With O(verify=true) each has C(verified) (true when every file matched).
  returned: always
  type: list
  elements: dict
  sample:
    - name: debian12-web
      version: 1.0.2
      kind: vm
      os_state: generalized
      disks:
        - role: os
          lun: null
          path: /var/lib/imageprep/images/debian12-web/1.0.2-4f1a9c2be0d3/debian12-web-1.0.2-os.qcow2
          sha256: 1affd8a779d279f40fc108b1e34e2d07bc152eee07c7002c98ecfd958c4eacd3
mismatches:
  description: With O(verify=true), each file that does not match the catalogue, and how.
  returned: always
  type: list
  elements: dict
  contains:
    name: {description: Image name., type: str}
    version: {description: Image version., type: str}
    path: {description: The file., type: str}
    problem: {description: V(missing) or V(sha256)., type: str}
    expected: {description: What the catalogue records., type: raw}
    found: {description: What the file has., type: raw}
"""

import os
import sqlite3
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.imageprep.vm.plugins.module_utils import _library as library_mod
from ansible_collections.imageprep.vm.plugins.module_utils import _qemu_img as qemu_img


def verify_image(record):
    """Return the mismatches of RECORD's files against the catalogue."""
    problems = []
    for disk in record['disks']:
        base = {'name': record['name'], 'version': record['version'], 'path': disk['path']}
        if not os.path.isfile(disk['path']):
            problems.append(dict(base, problem='missing', expected=disk['sha256'], found=None))
            continue
        found = qemu_img.sha256_file(disk['path'])
        if found != disk['sha256']:
            problems.append(dict(base, problem='sha256', expected=disk['sha256'], found=found))
    return problems


class LocalImageInfo:
    """Carries out one local_image_info task."""

    def __init__(self, module):
        self.params = module.params

    def run(self):
        """Return the result dict."""
        params = self.params
        if params['name'] is not None and library_mod.name_problem(params['name']):
            raise library_mod.LibraryError(library_mod.name_problem(params['name']))
        if params['version'] not in (None, 'latest'):
            library_mod.parse_version(params['version'])
        result = {'changed': False, 'images': [], 'mismatches': []}
        if not os.path.exists(os.path.join(params['library'], library_mod.CATALOGUE)):
            result['msg'] = f"there is no image library at {params['library']}"
            return result
        with library_mod.Library(params['library'], create=False) as library, library.lock(exclusive=False):
            images = library.find(name=params['name'], version=params['version'], os_state=params['os_state'],
                                  os_type=params['os_type'], tags=params['tags'])
            if params['verify']:
                for image in images:
                    problems = verify_image(image)
                    image['verified'] = not problems
                    result['mismatches'].extend(problems)
        result['images'] = images
        return result


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec={
            'library': {'type': 'path', 'default': '/var/lib/imageprep/images'},
            'name': {'type': 'str'},
            'version': {'type': 'str'},
            'os_type': {'type': 'str', 'choices': ['linux', 'windows']},
            'os_state': {'type': 'str', 'choices': ['generalized', 'specialized']},
            'tags': {'type': 'dict', 'default': {}},
            'verify': {'type': 'bool', 'default': False},
        },
        supports_check_mode=True,
    )
    try:
        result = LocalImageInfo(module).run()
    except (library_mod.LibraryError, qemu_img.DiskImageError) as exc:
        module.fail_json(msg=str(exc))
    except (OSError, sqlite3.Error) as exc:
        module.fail_json(msg=f'{type(exc).__name__}: {exc}', exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == '__main__':
    main()
