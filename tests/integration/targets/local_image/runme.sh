#!/usr/bin/env bash
# local_image and local_image_info against real disk files made with qemu-img, run by the
# host's own Python (as on a hypervisor host).
set -euo pipefail
ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
  ansible-playbook -i localhost, -c local -e ansible_python_interpreter=/usr/bin/python3 main.yml "$@"
