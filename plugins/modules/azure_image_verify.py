#!/usr/bin/python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
from __future__ import annotations

DOCUMENTATION = r"""
module: azure_image_verify
short_description: Prove an Azure image boots and provisions, with a throw-away VM
version_added: 0.2.0
description:
  - Creates a VM from a managed image or a gallery image version (O(image_id)), with every data disk of the
    image, waits until Azure reports it provisioned and its VM agent ready (the guest ran its provisioning
    agent, so the generalization worked), checks its disks and power state, then deletes the VM with its
    disks and network interface.
  - The VM's network interface is created with the VM (C(networkInterfaceConfigurations)) in O(subnet_id)
    without a public IP, and deleted with it.
  - The VM is deleted whatever the outcome, unless O(keep_on_failure=true) and the check failed.
author:
  - imageprep.vm developers (@imageprep)
extends_documentation_fragment:
  - imageprep.vm.azure
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the image and says what VM it would create; creates nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
  idempotent:
    description: Each run creates and deletes its own VM; nothing is left between runs.
    support: none
options:
  image_id:
    description: Resource ID of the managed image or gallery image version to boot.
    type: str
    required: true
  resource_group:
    description: Resource group to create the throw-away VM in.
    type: str
    required: true
  location:
    description: Region of the VM (the image, or a replica of it, must be there).
    type: str
    required: true
  subnet_id:
    description: Resource ID of the subnet for the VM's network interface.
    type: str
    required: true
  name:
    description: Name of the VM. Default C(imageprep-verify-) and 8 random characters.
    type: str
  vm_size:
    description: Size of the VM.
    type: str
    default: Standard_B2s
  admin_username:
    description: Administrator account created by the provisioning agent in a generalized image.
    type: str
    default: imageprep
  ssh_public_key:
    description: SSH public key of O(admin_username) for a Linux image. Default a throw-away key the module makes.
    type: str
  admin_password:
    description: Password of O(admin_username) for a Windows image. Default a random one the module makes.
    type: str
  wait_for_agent:
    description: Wait until the VM agent reports ready. Set V(false) for images without the Azure VM agent.
    type: bool
    default: true
  keep_on_failure:
    description: Leave the VM in place when the check fails, to look at it (its ID is in the result).
    type: bool
    default: false
  timeout:
    description: Seconds to wait for the VM to provision, and then for its deletion.
    type: int
    default: 1800
seealso:
  - module: imageprep.vm.azure_image
"""

EXAMPLES = r"""
- name: Boot a throw-away VM from the new version
  imageprep.vm.azure_image_verify:
    image_id: "{{ __version.image.id }}"
    resource_group: verify-rg
    location: westeurope
    subnet_id: /subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net-rg/providers/Microsoft.Network/virtualNetworks/build/subnets/verify
  register: __verify
"""

RETURN = r"""
vm:
  description: The throw-away VM.
  returned: always
  type: dict
  contains:
    id: {description: Resource ID., type: str}
    name: {description: Name., type: str}
    deleted: {description: Whether it was deleted again., type: bool}
provisioning_state:
  description: Azure's provisioning state of the VM.
  returned: unless check mode
  type: str
  sample: Succeeded
agent:
  description: The VM agent's status (version and display status), or V(null) without one.
  returned: unless check mode
  type: dict
  sample: {version: 2.7.41491.949, status: Ready}
power_state:
  description: Power state of the VM once provisioned.
  returned: unless check mode
  type: str
  sample: running
data_disk_luns:
  description: LUNs of the data disks the VM got from the image.
  returned: unless check mode
  type: list
  elements: int
problems:
  description: What the check found wrong (the module fails when there is any).
  returned: always
  type: list
  elements: str
seconds:
  description: Seconds to create and provision the VM, and to delete it.
  returned: unless check mode
  type: dict
  sample: {provision: 96.2, delete: 41.0}
"""

import secrets
import string
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.imageprep.vm.plugins.module_utils import _azure as azure


class VerifyError(Exception):
    """The image cannot be booted as asked (wrong kind of ID, missing image)."""


def image_api(image_id: str) -> str:
    """Return the API version that serves IMAGE_ID (a managed image or a gallery image version)."""
    kinds = [kind.lower() for kind, _name in azure.parse_resource_id(image_id)['types']]
    if kinds == ['images']:
        return azure.API_COMPUTE
    if kinds == ['galleries', 'images', 'versions']:
        return azure.API_GALLERY
    raise VerifyError(f'image_id {image_id!r} is neither a managed image nor a gallery image version')


def image_facts(image: dict, definition: dict | None) -> dict:
    """Return the OS type, OS state and data disk LUNs of a managed image or gallery version (with its definition)."""
    props = image.get('properties') or {}
    storage = props.get('storageProfile') or {}
    if definition is None:  # a managed image
        os_disk = storage.get('osDisk') or {}
        return {'os_type': str(os_disk.get('osType', 'Linux')).lower(), 'os_state': str(os_disk.get('osState', 'Generalized')).lower(),
                'data_disk_luns': sorted(int(disk['lun']) for disk in storage.get('dataDisks') or [])}
    definition_props = definition.get('properties') or {}
    return {'os_type': str(definition_props.get('osType', 'Linux')).lower(),
            'os_state': str(definition_props.get('osState', 'Generalized')).lower(),
            'data_disk_luns': sorted(int(disk['lun']) for disk in storage.get('dataDiskImages') or [])}


def vm_body(params: dict, facts: dict, name: str, password: str | None) -> dict:
    """Return the VM to create: the image, its data disks, a NIC made and deleted with the VM, no public IP."""
    storage = {'imageReference': {'id': params['image_id']},
               'osDisk': {'createOption': 'FromImage', 'deleteOption': 'Delete', 'caching': 'ReadWrite',
                          'managedDisk': {'storageAccountType': 'Standard_LRS'}}}
    if facts['data_disk_luns']:
        storage['dataDisks'] = [{'lun': lun, 'createOption': 'FromImage', 'deleteOption': 'Delete'} for lun in facts['data_disk_luns']]
    properties = {
        'hardwareProfile': {'vmSize': params['vm_size']},
        'storageProfile': storage,
        'networkProfile': {'networkApiVersion': '2020-11-01', 'networkInterfaceConfigurations': [{
            'name': f'{name}-nic', 'properties': {'primary': True, 'deleteOption': 'Delete', 'ipConfigurations': [{
                'name': 'ipconfig1', 'properties': {'subnet': {'id': params['subnet_id']}}}]}}]},
        'diagnosticsProfile': {'bootDiagnostics': {'enabled': True}},
    }
    if facts['os_state'] == 'generalized':  # a specialized image keeps its own accounts: Azure refuses an osProfile
        profile = {'computerName': name[:15], 'adminUsername': params['admin_username']}
        if facts['os_type'] == 'linux':
            key_path = f"/home/{params['admin_username']}/.ssh/authorized_keys"
            profile['linuxConfiguration'] = {'disablePasswordAuthentication': True,
                                             'ssh': {'publicKeys': [{'path': key_path, 'keyData': params['ssh_public_key']}]}}
        else:
            profile['adminPassword'] = password
        properties['osProfile'] = profile
    return {'location': params['location'], 'properties': properties, 'tags': {'imageprep_verify': params['image_id'][-256:]}}


def verify_problems(vm: dict, facts: dict, wait_for_agent: bool) -> tuple[list[str], dict]:
    """Return what is wrong with the provisioned VM (with its instance view), and what was seen."""
    props = vm.get('properties') or {}
    view = props.get('instanceView') or {}
    codes = [str(status.get('code', '')) for status in view.get('statuses') or []]
    agent = view.get('vmAgent')
    agent_status = None
    if agent:
        agent_status = {'version': agent.get('vmAgentVersion'),
                        'status': next((status.get('displayStatus') for status in agent.get('statuses') or []), None)}
    seen = {'provisioning_state': props.get('provisioningState'), 'agent': agent_status,
            'power_state': next((code.split('/', 1)[1] for code in codes if code.startswith('PowerState/')), 'unknown'),
            'data_disk_luns': sorted(int(disk['lun']) for disk in (props.get('storageProfile') or {}).get('dataDisks') or [])}
    problems = []
    if str(seen['provisioning_state']).lower() != 'succeeded':
        problems.append(f"the VM's provisioning state is {seen['provisioning_state']}")
    if seen['power_state'] != 'running':
        problems.append(f"the VM is {seen['power_state']}, not running")
    if wait_for_agent and (agent_status or {}).get('status') != 'Ready':
        problems.append(f"the VM agent is not ready ({(agent_status or {}).get('status') or 'no status'})")
    if seen['data_disk_luns'] != facts['data_disk_luns']:
        problems.append(f"the VM has data disks at LUNs {seen['data_disk_luns']}, the image {facts['data_disk_luns']}")
    return problems, seen


def throwaway_key() -> str:
    """Return an SSH public key nobody holds the private half of (the VM is never logged into)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + ' imageprep-verify'


class ImageVerifier:
    """Creates, checks and deletes one throw-away VM."""

    def __init__(self, module: AnsibleModule, session: azure.ArmSession) -> None:
        self.module = module
        self.params = module.params
        self.arm = session

    def run(self) -> dict:
        image_id = self.params['image_id']
        api = image_api(image_id)
        image = self.arm.get(image_id, api)
        if image is None:
            raise VerifyError(f'the image {image_id} does not exist')
        definition = None
        if api == azure.API_GALLERY:
            definition = self.arm.get(image_id.rsplit('/versions/', 1)[0], azure.API_GALLERY) or {}
        facts = image_facts(image, definition)
        name = self.params['name'] or 'imageprep-verify-' + ''.join(secrets.choice(string.ascii_lowercase + string.digits) for _position in range(8))
        path = azure.resource_id(self.arm.subscription_id, self.params['resource_group'], 'virtualMachines', name)
        result = {'changed': True, 'vm': {'id': path, 'name': name, 'deleted': False}, 'problems': []}
        if self.module.check_mode:
            result['msg'] = f"would create the VM {name} from {image_id}, check it provisions, and delete it"
            return result
        if self.params['ssh_public_key'] is None and facts['os_type'] == 'linux':
            self.params['ssh_public_key'] = throwaway_key()
        password = self.params['admin_password'] or (secrets.token_urlsafe(18) + 'aA1!')
        body = vm_body(self.params, facts, name, password)
        seconds = {}
        started = time.monotonic()
        try:
            try:
                self.arm.put(path, azure.API_COMPUTE, body, self.params['timeout'])
                vm = self._wait_ready(path)
                problems, seen = verify_problems(vm, facts, self.params['wait_for_agent'])
            except azure.AzureError as exc:
                problems, seen = [f'the VM did not provision: {exc.message}'], {}
            seconds['provision'] = round(time.monotonic() - started, 1)
            result.update(seen)
            result['problems'] = problems
        finally:
            if not (result['problems'] and self.params['keep_on_failure']):
                started = time.monotonic()
                result['vm']['deleted'] = self.arm.delete(path, azure.API_COMPUTE, self.params['timeout'])
                seconds['delete'] = round(time.monotonic() - started, 1)
        result['seconds'] = seconds
        return result

    def _wait_ready(self, path: str) -> dict:
        """Return the VM with its instance view once its agent reports (or the timeout passes)."""
        deadline = time.monotonic() + self.params['timeout']
        while True:
            vm = self.arm.get(path, azure.API_COMPUTE, query={'$expand': 'instanceView'}) or {}
            agent = ((vm.get('properties') or {}).get('instanceView') or {}).get('vmAgent') or {}
            ready = any(status.get('displayStatus') == 'Ready' for status in agent.get('statuses') or [])
            if ready or not self.params['wait_for_agent'] or time.monotonic() >= deadline:
                return vm
            time.sleep(min(self.arm.poll_seconds, max(deadline - time.monotonic(), 0)))


def main():
    """Module entry point."""
    module = AnsibleModule(
        argument_spec=dict(
            image_id=dict(type='str', required=True),
            resource_group=dict(type='str', required=True),
            location=dict(type='str', required=True),
            subnet_id=dict(type='str', required=True),
            name=dict(type='str'),
            vm_size=dict(type='str', default='Standard_B2s'),
            admin_username=dict(type='str', default='imageprep'),
            ssh_public_key=dict(type='str'),
            admin_password=dict(type='str', no_log=True),
            wait_for_agent=dict(type='bool', default=True),
            keep_on_failure=dict(type='bool', default=False),
            timeout=dict(type='int', default=1800),
            **azure.AZURE_AUTH_SPEC,
        ),
        supports_check_mode=True,
    )
    if azure.AZURE_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib('azure-identity and azure-core'), exception=azure.AZURE_IMPORT_ERROR)
    if module.params['timeout'] < 1:
        module.fail_json(msg='timeout must be 1 or more')
    try:
        result = ImageVerifier(module, azure.ArmSession(module.params)).run()
    except VerifyError as exc:
        module.fail_json(msg=str(exc))
    except azure.AzureError as exc:
        module.fail_json(msg=exc.message, exception=traceback.format_exc(), **exc.to_result())
    if result['problems']:
        module.fail_json(msg=f"the image did not pass: {'; '.join(result['problems'])}", **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
