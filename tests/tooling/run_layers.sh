#!/usr/bin/env bash
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Runs each test layer given as an argument (a make target), keeps going when one fails,
# prints a summary, and exits non-zero if any layer failed.
set -uo pipefail

declare -a names results times
failed=0
for layer in "$@"; do
  echo
  echo "===== layer: $layer ====="
  start=$(date +%s)
  if make --no-print-directory "$layer"; then status=passed; else status=FAILED; failed=1; fi
  names+=("$layer"); results+=("$status"); times+=("$(($(date +%s) - start))")
done

echo
echo "===== summary ====="
for i in "${!names[@]}"; do
  printf '  %-12s %-7s %5ss\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
done
if ((failed)); then echo "make test: FAILED"; exit 1; fi
echo "make test: all layers passed"
