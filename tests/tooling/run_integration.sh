#!/usr/bin/env bash
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Runs the integration targets of the collection copy given as $1: every directory under
# tests/integration/targets/ with a runme.sh (ansible-test's layout and aliases), then the
# pytest suites that prove the test targets themselves (tests/targets_tests/).
#
# ansible-test integration is not used to run them: it strips the environment (the cache
# location) and runs a copy of each target away from the tools in tests/targets/.
# Aliases honoured: `disabled` (skipped, listed) and `needs/root` (fails clearly without root).
# INTEGRATION_TARGETS="a b" runs only those targets.
set -uo pipefail

coll=${1:?usage: run_integration.sh COLLECTION_DIR}
failed=()
passed=()
skipped=()

for dir in "$coll"/tests/integration/targets/*/; do
  name=$(basename "$dir")
  [[ -x $dir/runme.sh ]] || continue
  if [[ -n ${INTEGRATION_TARGETS:-} && " $INTEGRATION_TARGETS " != *" $name "* ]]; then continue; fi
  aliases=$(grep -v '^#' "$dir/aliases" 2>/dev/null || true)
  if grep -qx 'disabled' <<<"$aliases"; then skipped+=("$name (disabled)"); continue; fi
  if grep -qx 'needs/root' <<<"$aliases" && [[ $(id -u) -ne 0 ]]; then
    echo "integration: $name needs root" >&2; failed+=("$name"); continue
  fi
  echo "--- integration target: $name"
  start=$(date +%s)
  if (cd "$dir" && ./runme.sh); then passed+=("$name ($(($(date +%s) - start))s)"); else failed+=("$name"); fi
done

if [[ -z ${INTEGRATION_TARGETS:-} || " $INTEGRATION_TARGETS " == *" targets_tests "* ]]; then
  echo "--- pytest: tests/targets_tests"
  if (cd "$coll" && python -m pytest -q -p no:cacheprovider tests/targets_tests); then
    passed+=("targets_tests"); else failed+=("targets_tests"); fi
fi

echo "integration: passed: ${passed[*]:-none}"
((${#skipped[@]})) && echo "integration: skipped: ${skipped[*]}"
if ((${#failed[@]})); then echo "integration: FAILED: ${failed[*]}"; exit 1; fi
