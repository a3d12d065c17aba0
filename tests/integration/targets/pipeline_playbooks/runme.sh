#!/usr/bin/env bash
# The pipeline playbooks without booting a VM (the end-to-end test boots them): both parse;
# a version already in the library ends a host's run before anything connects to it, with no
# change; a VM libvirt does not know fails in preflight, untouched, with the cause in the
# summary and in its failure.json, while the other host goes on; the summary is printed and
# written, and the exit code says a host failed; --check on a real Debian root (chroot) whose
# domain runs on a blank disk changes nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
: "${ANSIBLE_COLLECTIONS_PATH:?set by make integration: where ansible_collections/imageprep/vm is}"
: "${IMAGEPREP_TEST_TARGETS:?set by make integration: where tests/targets is}"

python "$IMAGEPREP_TEST_TARGETS/libvirt_host.py" daemon >/dev/null
for playbook in linux_image windows_image pipeline_summary; do
  echo "--- syntax-check: imageprep.vm.$playbook"
  ansible-playbook -i localhost, --syntax-check "imageprep.vm.$playbook"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIPELINE_WORK=$work
python -m pytest -q -p no:cacheprovider "$@" test_pipeline_playbooks.py
