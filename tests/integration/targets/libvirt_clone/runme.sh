#!/usr/bin/env bash
# libvirt_clone against the host's libvirt daemon, run by the host's own Python (as on a
# hypervisor host). Domain names carry this shell's pid (libvirt_host.py's test names), so
# `libvirt_host.py cleanup` removes what a killed run left behind and no concurrent run clashes.
set -euo pipefail
: "${IMAGEPREP_TEST_TARGETS:?set by make integration: the directory of tests/targets}"
python "$IMAGEPREP_TEST_TARGETS/libvirt_host.py" daemon >/dev/null
prefix="imageprep-test-$$-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
# a free loopback port for the clone's SSH forward
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
  ansible-playbook -i localhost, -c local -e ansible_python_interpreter=/usr/bin/python3 \
  -e "__prefix=$prefix __port=$port" main.yml "$@"
