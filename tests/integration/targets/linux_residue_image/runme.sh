#!/usr/bin/env bash
# linux_residue_info with `image:` on real disk image files: the planted Debian 12 guest root
# in a GPT disk (qcow2 over a backing file), whole-disk file systems in every format, disks
# without a Linux root, images in use; the image is never written and nothing is left behind.
set -euo pipefail

: "${ANSIBLE_COLLECTIONS_PATH:?set by make integration: where ansible_collections/imageprep/vm is}"
cd "$(dirname "${BASH_SOURCE[0]}")"
exec python -m pytest -q -p no:cacheprovider "$@" test_*.py
