#!/usr/bin/env bash
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Installs everything the tests and the demo need on a Debian 12 machine, as root:
# Debian packages, the pinned Python toolchain in a project venv, and the offline
# pip bootstrap that ansible-test expects. Safe to run again: each step checks first.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${IMAGEPREP_VENV:-$repo/.venv}

apt_packages=(
  make git rsync openssh-client ca-certificates
  qemu-system-x86 qemu-utils ovmf
  grub-efi-amd64-bin mtools dosfstools fdisk
  mmdebstrap debootstrap
  podman runc
  systemd-journal-remote
  e2fsprogs xz-utils zstd shellcheck
  iproute2 openssl dnsmasq-base ldb-tools util-linux
  libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients
)

missing=()
for pkg in "${apt_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages (${missing[*]}); run as root to install them" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Plain `podman run` fails on these hosts (crun cannot raise rlimits; hybrid cgroups):
# use runc and explicit ulimits.
conf=/etc/containers/containers.conf
if [[ $(id -u) -eq 0 ]] && ! grep -qs '^runtime = "runc"' "$conf"; then
  mkdir -p /etc/containers
  cat >"$conf" <<'CONF'
# written by imageprep.vm's test set-up
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
CONF
fi

# The toolchain needs Python 3.12 (ansible-core 2.20 and later run only on 3.12+).
python=${IMAGEPREP_PYTHON:-}
if [[ -z $python ]]; then
  for candidate in /usr/bin/python3.12 /usr/local/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 python3.12; do
    if "$candidate" -c 'import sys, venv; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      python=$(command -v "$candidate"); break
    fi
  done
fi
if [[ -z $python ]]; then
  echo "setup: Python 3.12 not found; install it or set IMAGEPREP_PYTHON" >&2
  exit 1
fi

stamp_key=$(cat "$repo/tests/toolchain-requirements.txt" "$repo/tests/toolchain-constraints.txt" | sha256sum | cut -c1-16)
stamp=$venv/.toolchain-$stamp_key
if [[ ! -e $stamp ]]; then
  echo "setup: building the toolchain venv in $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip==25.2
  "$venv/bin/python" -m pip install -q -r "$repo/tests/toolchain-requirements.txt" \
    -c "$repo/tests/toolchain-constraints.txt"
  touch "$stamp"
fi

# Azurite (Microsoft's Azure Storage emulator) for the blob upload tests, from the npm registry.
azurite_version=3.37.0
npm_prefix=$repo/.cache/npm
if [[ $(node -p "require('$npm_prefix/node_modules/azurite/package.json').version" 2>/dev/null) != "$azurite_version" ]]; then
  if ! command -v npm >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
      echo "setup: npm is missing (Debian packages nodejs npm); run as root to install it" >&2
      exit 1
    fi
    echo "setup: installing nodejs npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  fi
  echo "setup: installing Azurite $azurite_version in $npm_prefix"
  mkdir -p "$npm_prefix"
  npm install --prefix "$npm_prefix" --no-audit --no-fund --loglevel=error "azurite@$azurite_version" >/dev/null
fi

# ansible-test downloads a get-pip script before it makes its sanity venvs; offline, a
# stand-in that bootstraps pip from ensurepip does the same job.
pip_version=$("$venv/bin/python" - <<'PY'
import re, pathlib, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / '_internal' / 'python_requirements.py'
print(re.search(r"pip='([0-9.]+)'", src.read_text()).group(1))
PY
)
bootstrap=$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py
if ! cmp -s "$repo/tests/tooling/offline_get_pip.py" "$bootstrap"; then
  mkdir -p "$(dirname "$bootstrap")"
  cp "$repo/tests/tooling/offline_get_pip.py" "$bootstrap"
fi
echo "setup: ok ($("$venv/bin/ansible" --version | sed -n 1p))"
