#!/usr/bin/env bash
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Usage: run_molecule.sh COLL
#
# Runs `molecule test` for every scenario under COLL/extensions/molecule/ (COLL is the
# collection copy at .../ansible_collections/imageprep/vm), one after another, keeps going
# when one fails, prints a summary and exits non-zero if any failed. The scenarios share
# the platform in extensions/molecule/config.yml: a podman image of the Debian 12 guest
# root, imported here (and reused while the root is unchanged). A scenario whose directory
# holds a file requires-env (variable names, one a line) is skipped while any is unset.
set -euo pipefail

if (($# != 1)); then
  echo "usage: $0 COLL" >&2
  exit 2
fi
coll=$(cd "$1" && pwd)
if [[ $coll != */ansible_collections/imageprep/vm ]]; then
  echo "run_molecule.sh: COLL must be a copy of the collection at .../ansible_collections/imageprep/vm" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${IMAGEPREP_VENV:-$repo/.venv}
targets=${IMAGEPREP_TEST_TARGETS:-$repo/tests/targets}
cache=${IMAGEPREP_TEST_CACHE:-$repo/.cache/targets}
export IMAGEPREP_TEST_CACHE=$cache
# Molecule's working files (inventory, ansible.cfg, state) go next to the target cache, not
# into the collection copy that the other layers lint and sync.
ephemeral_root=$(dirname "$cache")/molecule
# molecule runs ansible-config and ansible-playbook from the venv
export PATH=$venv/bin:$PATH
# Molecule colours its output (and forces Ansible's) on xterm-like terminals unless NO_COLOR is set.
if [[ -n ${ANSIBLE_NOCOLOR:-} ]]; then export NO_COLOR=1; fi

start=$(date +%s)
IMAGEPREP_MOLECULE_IMAGE=$("$venv/bin/python" "$targets/podman_image.py" build)
export IMAGEPREP_MOLECULE_IMAGE
echo "molecule: target image $IMAGEPREP_MOLECULE_IMAGE ($(($(date +%s) - start))s)"

# This collection from the copy's ansible_collections tree; containers.podman and the
# other dependencies from the venv's ansible package (ansible-core scans sys.path for them).
export ANSIBLE_COLLECTIONS_PATH=${coll%/ansible_collections/*}
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=true

# A scenario is a directory holding molecule.yml; its name is its path below
# extensions/molecule/ (the way Molecule names scenarios inside a collection).
mapfile -t scenarios < <(cd "$coll/extensions/molecule" && find . -mindepth 2 -name molecule.yml -printf '%h\n' | sed 's|^\./||' | sort)
if ((${#scenarios[@]} == 0)); then
  echo "molecule: no scenario under $coll/extensions/molecule" >&2
  exit 1
fi

declare -a results times
failed=0
for scenario in "${scenarios[@]}"; do
  echo
  echo "===== molecule scenario: $scenario ====="
  # A scenario for a machine this host cannot make (a Windows VM) names, in requires-env, the
  # variables that give it; without them it is skipped, not failed.
  missing=()
  if [[ -f $coll/extensions/molecule/$scenario/requires-env ]]; then
    while read -r var; do
      [[ -z $var || $var == \#* ]] && continue
      [[ -n ${!var:-} ]] || missing+=("$var")
    done <"$coll/extensions/molecule/$scenario/requires-env"
  fi
  if ((${#missing[@]})); then
    echo "molecule: $scenario skipped (needs ${missing[*]})"
    results+=("skipped (needs ${missing[*]})")
    times+=(0)
    continue
  fi
  scenario_start=$(date +%s)
  ephemeral=$ephemeral_root/${scenario//\//--}
  mkdir -p "$ephemeral"
  if (cd "$coll" && MOLECULE_EPHEMERAL_DIRECTORY=$ephemeral molecule test --scenario-name "$scenario"); then
    results+=(passed)
  else
    results+=(FAILED)
    failed=1
  fi
  times+=("$(($(date +%s) - scenario_start))")
done

echo
echo "===== molecule summary ====="
for i in "${!scenarios[@]}"; do
  printf '  %-30s %-7s %5ss\n' "${scenarios[$i]}" "${results[$i]}" "${times[$i]}"
done
if ((failed)); then
  echo "molecule: FAILED"
  exit 1
fi
echo "molecule: all scenarios passed (or were skipped)"
