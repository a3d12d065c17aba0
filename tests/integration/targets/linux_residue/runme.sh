#!/usr/bin/env bash
# linux_residue and linux_residue_info on a real, planted Debian 12 guest root: through the
# chroot connection (the module runs inside the root, with the root's own cloud-init and
# waagent) and offline (root: a loop-mounted disk image), plus the refusals.
set -euo pipefail

: "${ANSIBLE_COLLECTIONS_PATH:?set by make integration: where ansible_collections/imageprep/vm is}"
cd "$(dirname "${BASH_SOURCE[0]}")"
exec python -m pytest -q -p no:cacheprovider "$@" test_*.py
