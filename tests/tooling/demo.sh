#!/usr/bin/env bash
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
#
# make demo: the golden-image pipeline on a demo VM, start to end. Builds (or reuses) the
# cached demo disk, boots a fresh demo VM from it (UEFI firmware, a data disk) as a libvirt
# domain, runs the imageprep.vm.linux_image playbook against it, and prints the registered
# image, its report and the verify result. The library stays in place for local_image_info
# afterwards; the demo VM (generalized and shut off by then) and its backup are removed, and
# the logs and reports of the run stay in the work directory until the next demo.
#
# Needs root (libvirt's system daemon, the image library under /var/lib/imageprep).
# Environment: IMAGEPREP_DEMO_DIR (work directory, default .cache/demo),
# IMAGEPREP_DEMO_LIBRARY (default /var/lib/imageprep/images), IMAGEPREP_DEMO_IMAGE (image
# name, default imageprep-demo).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
coll=${1:?usage: demo.sh COLLECTION_DIR}
targets=$coll/tests/targets
dir=${IMAGEPREP_DEMO_DIR:-$repo/.cache/demo}
library=${IMAGEPREP_DEMO_LIBRARY:-/var/lib/imageprep/images}
image=${IMAGEPREP_DEMO_IMAGE:-imageprep-demo}
start=$(date +%s)

step() { printf '\n=== [%4ds] %s\n' $(($(date +%s) - start)) "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "make demo needs root: libvirt's system daemon and the image library under /var/lib/imageprep" >&2
  exit 1
fi

# The demo VM with everything the pipeline made for it on the hypervisor side (the backup's
# overlays in its directory, the backup record, the clone's directory); the logs stay until the next demo.
remove_demo_vm() {
  python "$targets/demo_vm.py" down "$dir" >/dev/null
  rm -rf "$dir/imageprep-demo" "$dir/backups" "$dir/clones"
}

step "demo VM: remove the one an earlier demo left, build or reuse the disk, boot a fresh VM"
remove_demo_vm
rm -rf "$dir/logs" "$dir/reports"
trap 'remove_demo_vm 2>/dev/null || true' EXIT
python "$targets/demo_vm.py" up "$dir" --name imageprep-demo

cat >"$dir/demo-vars.yml" <<VARS
---
# written by make demo
linux_deprovision_confirm: true
linux_deprovision_remove_users: [provision]
image_pipeline_library: $library
image_pipeline_image_name: $image
image_pipeline_image_description: the imageprep.vm demo VM (Debian 12, UEFI, one data disk)
image_pipeline_backup_state_dir: $dir/backups
image_pipeline_verify_workdir: $dir/clones
image_pipeline_log_dir: $dir/logs
linux_deprovision_report_dir: $dir/reports
VARS

step "ansible-playbook imageprep.vm.linux_image (backup, generalize, power off, capture, verify, report)"
ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_CALLBACK_RESULT_FORMAT=yaml \
  ansible-playbook -i "$dir/inventory.yml" -e "@$dir/demo-vars.yml" imageprep.vm.linux_image

step "the library: local_image_info name=$image"
python - "$library" "$image" <<'PY'
import json, subprocess, sys
library, image = sys.argv[1:]
out = subprocess.run(['ansible', 'localhost', '-o', '-m', 'imageprep.vm.local_image_info', '-a',
                      json.dumps({'library': library, 'name': image, 'verify': True})],
                     check=True, capture_output=True, text=True).stdout
result = json.loads(out.split('=>', 1)[1])
for record in result['images']:
    disks = ', '.join(f"{d['role']} {d['format']} {d['virtual_size'] // 2**20} MiB (sha256 {d['sha256'][:12]}...)" for d in record['disks'])
    print(f"{record['name']} {record['version']}: {record['kind']} image, {record['os_type']} {record['os_state']}, "
          f"{record['firmware']}, verified {record.get('verified')}; {disks}")
    print(f"  files: {record['path']}")
latest = result['images'][-1]
print(f"\n--- {latest['path']}/report.md ---")
print(open(f"{latest['path']}/report.md", encoding='utf-8').read())
PY

step "the run's summary: $dir/logs/summary.json"
python - "$dir/logs/summary.json" <<'PY'
import json, sys
for result in json.load(open(sys.argv[1], encoding='utf-8')):
    if isinstance(result, dict):
        verify = result.get('verify') or {}
        print(f"{result['host']}: {result['result']} {result['image']} {result['version']}; verify: sshd answered with "
              f"{len(verify.get('host_keys_served', []))} new host key(s), machine-id {verify.get('machine_id')} "
              f"(source {verify.get('source_machine_id')}), accounts on the clone: {verify.get('accounts')}")
PY

step "done: ansible localhost -m imageprep.vm.local_image_info -a 'library=$library name=$image' lists it"
