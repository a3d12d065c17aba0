#!/usr/bin/env bash
# libvirt_power and libvirt_backup against real libvirt domains (type qemu) on blank disks that
# carry known bytes. The domains are named imageprep-test-<this shell's pid>-<random>-<label>, the
# scheme of tests/targets/libvirt_host.py, so a concurrent cleanup of stale test domains leaves
# them alone while this runs; they are destroyed and undefined on exit, whatever happened.
set -euo pipefail

: "${IMAGEPREP_TEST_TARGETS:?set by make integration: the directory of tests/targets}"
cd "$(dirname "${BASH_SOURCE[0]}")"
python "$IMAGEPREP_TEST_TARGETS/libvirt_host.py" daemon >/dev/null

work=$(mktemp -d -t imageprep-libvirt-vm.XXXXXX)
power_domain="imageprep-test-$$-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')-power"
backup_domain="imageprep-test-$$-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')-backup"
cleanup() {
  python domains.py remove "$work" "$power_domain" "$backup_domain" || true
  chattr -R -i "$work" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
  ansible-playbook -i localhost, -c local -e ansible_python_interpreter=/usr/bin/python3 \
  -e "__work=$work" -e "__power_domain=$power_domain" -e "__backup_domain=$backup_domain" main.yml "$@"
