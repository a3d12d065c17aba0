#!/usr/bin/env bash
# Fault, lock and concurrency tests of local_image: the module runs as real processes (as
# Ansible runs it on a host) against real qemu-img, QEMU and SQLite; see the test files.
set -euo pipefail

: "${ANSIBLE_COLLECTIONS_PATH:?set by make integration: where ansible_collections/imageprep/vm is}"
cd "$(dirname "${BASH_SOURCE[0]}")"
exec python -m pytest -q -p no:cacheprovider "$@" test_*.py
