#!/usr/bin/env bash
# The windows_sysprep role's unattend.xml.j2, rendered with ansible.builtin.template for
# several option sets (options/*.yml, passed as extra vars over the role's defaults), then
# checked by test_unattend.py: well-formed, namespaces, each setting in the pass Microsoft
# documents, no deprecated element, the password never in plain text nor in the output;
# and the syntax of a play applying the role.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export WINDOWS_SYSPREP_RENDER_DIR=$out

for options in options/*.yml; do
  name=$(basename "$options" .yml)
  echo "--- render: $name"
  # -v and --diff: the output is checked for the password, as a user's verbose run would show it
  ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false \
    ansible-playbook -i localhost, -c local -v --diff render.yml \
    -e "ansible_python_interpreter={{ ansible_playbook_python }}" \
    -e "@$options" -e "render_dest=$out/$name.xml" >"$out/$name.log" 2>&1 || {
    cat "$out/$name.log"
    exit 1
  }
done

echo "--- syntax-check of a play applying the role"
: "${ANSIBLE_COLLECTIONS_PATH:?set by make integration: where ansible_collections/imageprep/vm is}"
ansible-playbook -i localhost, --syntax-check syntax.yml

python -m pytest -q -p no:cacheprovider "$@" test_unattend.py
