#!/usr/bin/env bash
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Builds the collection tarball from the collection copy $1 into $2, installs it offline
# into an empty path, and checks what was installed against the tarball's manifest.
set -euo pipefail

coll=${1:?usage: check_build.sh COLLECTION_DIR OUTPUT_DIR}
out=${2:?usage: check_build.sh COLLECTION_DIR OUTPUT_DIR}
version=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["version"])' "$coll/galaxy.yml")

rm -rf "$out"
mkdir -p "$out/empty"
(cd "$coll" && ansible-galaxy collection build --force --output-path "$out")
tarball=$out/imageprep-vm-$version.tar.gz
[[ -f $tarball ]] || { echo "build: $tarball was not written" >&2; exit 1; }

# Nothing from the work tree that is not content may ship.
if tar -tzf "$tarball" | grep -E '^(\.venv|\.cache|\.git|tests/output)(/|$)'; then
  echo "build: the tarball carries files that build_ignore should exclude" >&2
  exit 1
fi

ANSIBLE_COLLECTIONS_PATH=$out/empty ansible-galaxy collection install --offline "$tarball" -p "$out/empty"
ANSIBLE_COLLECTIONS_PATH=$out/empty ansible-galaxy collection list imageprep.vm -p "$out/empty" --format json \
  | python -c 'import json, sys; data = json.load(sys.stdin); found = [v["version"] for p in data.values() for v in p.values()]; print("installed:", found); sys.exit(0 if found == [sys.argv[1]] else 1)' "$version"
ANSIBLE_COLLECTIONS_PATH=$out/empty ansible-galaxy collection verify --offline imageprep.vm -p "$out/empty"
# ansible-builder reads meta/execution-environment.yml of installed collections to make an EE.
ansible-builder introspect --sanitize "$out/empty" | tee "$out/ee-dependencies.yml"
grep -q 'qemu-utils .*from collection imageprep.vm' "$out/ee-dependencies.yml" || {
  echo "build: ansible-builder does not see the collection's system dependencies" >&2; exit 1; }
grep -q 'azure-identity.*from collection imageprep.vm' "$out/ee-dependencies.yml" || {
  echo "build: ansible-builder does not see the collection's Python dependencies" >&2; exit 1; }
echo "build: $tarball builds, installs offline, and declares its EE dependencies"
