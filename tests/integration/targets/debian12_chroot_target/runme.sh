#!/usr/bin/env bash
# Smoke test of the chroot test target: a fresh copy of the cached Debian 12 root, reached
# with community.general.chroot, reports Debian 12 and runs its real agents.
set -euo pipefail

# ansible-test runs a copy of this directory; the Makefile says where the target tools are.
targets=${IMAGEPREP_TEST_TARGETS:?set by make integration: the tests/targets directory}
root=$(mktemp -d "${TMPDIR:-/tmp}/imageprep-chroot.XXXXXX")
trap 'rm -rf --one-file-system "$root"' EXIT

python3 "$targets/debian_root.py" copy --profile guest "$root" >/dev/null
printf '[guests]\nused_vm ansible_host=%s ansible_connection=community.general.chroot ansible_python_interpreter=/usr/bin/python3\n' "$root" >"$root.inventory"
trap 'rm -rf --one-file-system "$root" "$root.inventory"' EXIT

ansible-playbook -i "$root.inventory" smoke.yml "$@"
