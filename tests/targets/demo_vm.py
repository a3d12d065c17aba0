#!/usr/bin/env python
# Copyright: imageprep.vm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The demo VM: a Debian 12 libvirt domain that its firmware boots, with a data disk, reached as a provisioning account.

The base disk is built once from the ``vm`` root of debian_root.py and cached, keyed by this
recipe: a 3 GiB sparse raw disk with a GPT (made by ``sfdisk`` on the image file), partition 1
an EFI system partition (FAT32 built as a file with ``mkfs.vfat -C`` and mtools) holding GRUB
as ``\\EFI\\BOOT\\BOOTX64.EFI`` (``grub-mkstandalone``, its configuration inside: find the root
by UUID, boot Debian's ``/vmlinuz`` and ``/initrd.img`` with ``console=ttyS0``), partition 2
the root file system (ext4 built as a file with ``mkfs.ext4 -d``, label ``imageprep-root``, a
fixed UUID). No loop devices, no mounts. Firmware (OVMF, UEFI) boots it: no ``-kernel``.

In the guest: systemd-networkd takes DHCP on ``en*``/``eth*``, sshd runs, and the provisioning
account ``provision`` (uid 1000, group sudo, ``NOPASSWD`` in /etc/sudoers.d/90-provision) has
the key pair generated with the build in its authorized_keys (root has none: the pipeline logs
in as the provisioning account and becomes root, as on a cloud). /etc/fstab mounts the root and
the ESP (/boot/efi) by UUID and the data disk by label at /srv/data (both ``nofail``). The root
is planted as a used VM (plant_used_vm.py: accounts, keys, leases, logs, agent state) unless
asked not to; cloud-init stays installed unless ``--without-cloud-init``.

A demo VM instance (``DemoVM``) lives in a work directory: a qcow2 overlay on the cached base
(vda), a 64 MiB qcow2 data disk with an ext4 file system labelled ``imageprep-data`` holding
``imageprep-demo-data.txt`` (vdb), its UEFI variable store, and a persistent libvirt domain
(``type='qemu'`` unless KVM really runs the guest kernel) with the serial console logged to a
file and the guest's port 22 forwarded to a free loopback port.

Usage:
  demo_vm.py build [--without-cloud-init] [--no-plant]
                                 build (or reuse) the cached base disk, print its paths
  demo_vm.py up DIR [--name N] [--count K] [--without-cloud-init] [--no-plant]
                                 create and start K demo VMs (domains N, or N-1..N-K), wait for SSH,
                                 write DIR/inventory.yml; one progress line per step, with seconds
  demo_vm.py down DIR            destroy and undefine what ``up`` made in DIR, remove its files

Environment:
  IMAGEPREP_TEST_CACHE      cache directory (see target_cache.py)
  IMAGEPREP_QEMU_ACCEL      kvm or tcg: skip the KVM probe and use this accelerator
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
import typing as t

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import debian_root  # noqa: E402  pylint: disable=wrong-import-position
import libvirt_host  # noqa: E402  pylint: disable=wrong-import-position
import plant_used_vm  # noqa: E402  pylint: disable=wrong-import-position
import qemu_vm  # noqa: E402  pylint: disable=wrong-import-position
import target_cache  # noqa: E402  pylint: disable=wrong-import-position

PROFILE = 'vm'
DEFAULT_NAME = 'imageprep-demo'
MEMORY_MIB = 1024
VCPUS = 2
MIB = 1024 * 1024
SECTOR = 512
DISK_MIB = 3072
ESP_START_MIB = 1
ESP_MIB = 64
# the backup GPT takes the last 33 sectors: the root partition stops 1 MiB before the end
ROOT_START_MIB = ESP_START_MIB + ESP_MIB
ROOT_MIB = DISK_MIB - ROOT_START_MIB - 1
ESP_TYPE = 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'
LINUX_TYPE = '0FC63DAF-8483-4772-8E79-3D69D8477DE4'
# fixed identities: the same recipe builds the same disk layout
DISK_GUID = '5E2C8A41-6D0B-4F6E-9A37-1C4B8D2E7F10'
ESP_PART_GUID = '5E2C8A41-6D0B-4F6E-9A37-1C4B8D2E7F11'
ROOT_PART_GUID = '5E2C8A41-6D0B-4F6E-9A37-1C4B8D2E7F12'
ROOT_UUID = '3b6f1e2a-9c4d-4e5f-8a7b-0c1d2e3f4a5b'
ROOT_LABEL = 'imageprep-root'
ESP_VOLUME_ID = '1D2E3F4A'
ESP_LABEL = 'EFI'
DATA_LABEL = 'imageprep-data'
DATA_MOUNT = '/srv/data'
DATA_MIB = 64
DATA_MARKER = 'imageprep-demo-data.txt'
DATA_MARKER_TEXT = 'imageprep demo data disk: this file lives on vdb\n'
PROVISION_USER = 'provision'
PROVISION_UID = 1000
SUDOERS_FILE = '/etc/sudoers.d/90-provision'
PLANTER_SEED = '/var/lib/cloud/seed/nocloud'
GRUB_MARK = 'imageprep demo: GRUB boots /vmlinuz'
KERNEL_CMDLINE = f'root=UUID={ROOT_UUID} ro console=ttyS0'
STATE_FILE = 'demo-vms.json'
INVENTORY_FILE = 'inventory.yml'
HOST_PACKAGES = {
    'grub-mkstandalone': 'grub-efi-amd64-bin', 'sfdisk': 'fdisk', 'mkfs.vfat': 'dosfstools', 'mcopy': 'mtools',
    'mmd': 'mtools', 'mkfs.ext4': 'e2fsprogs', 'qemu-img': 'qemu-utils',
}
GRUB_EFI_MODULES = pathlib.Path('/usr/lib/grub/x86_64-efi')
NETWORK_FILE = qemu_vm.NETWORK_FILE


class DemoVMError(RuntimeError):
    """The demo VM could not be built, created, started or removed."""


# -- the recipe, as text ---------------------------------------------------------------


def partition_script() -> str:
    """Return the sfdisk script of the base disk: GPT, the EFI system partition and the root partition."""
    per_mib = MIB // SECTOR
    return (f'label: gpt\nlabel-id: {DISK_GUID}\nunit: sectors\nsector-size: {SECTOR}\nfirst-lba: {ESP_START_MIB * per_mib}\n\n'
            f'start={ESP_START_MIB * per_mib}, size={ESP_MIB * per_mib}, type={ESP_TYPE}, uuid={ESP_PART_GUID}, '
            'name="EFI system partition"\n'
            f'start={ROOT_START_MIB * per_mib}, size={ROOT_MIB * per_mib}, type={LINUX_TYPE}, uuid={ROOT_PART_GUID}, '
            f'name="{ROOT_LABEL}"\n')


def grub_config() -> str:
    """Return GRUB's configuration: find the root by its UUID, boot Debian's /vmlinuz and /initrd.img at once."""
    return f"""\
# written by imageprep.vm's demo VM builder
set timeout=0
set default=0
search --no-floppy --fs-uuid --set=root {ROOT_UUID}
menuentry 'Debian GNU/Linux 12 (imageprep demo)' {{
    echo '{GRUB_MARK}'
    linux /vmlinuz {KERNEL_CMDLINE}
    initrd /initrd.img
}}
"""


def fat_uuid(volume_id: str) -> str:
    """Return how blkid and fstab spell a FAT volume id: ``1D2E3F4A`` -> ``1D2E-3F4A``."""
    if not re.fullmatch(r'[0-9A-F]{8}', volume_id):
        raise DemoVMError(f'a FAT volume id is 8 upper-case hex digits, not {volume_id!r}')
    return f'{volume_id[:4]}-{volume_id[4:]}'


def fstab() -> str:
    """Return the guest's /etc/fstab: root and ESP by UUID, the data disk by label; ESP and data may be missing."""
    return f"""\
# written by imageprep.vm's demo VM builder
UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1
UUID={fat_uuid(ESP_VOLUME_ID)} /boot/efi vfat umask=0077,nofail 0 2
LABEL={DATA_LABEL} {DATA_MOUNT} ext4 defaults,nofail 0 2
"""


def sudoers_dropin(user: str) -> str:
    """Return the sudoers drop-in that lets USER become root without a password."""
    return f'# written by imageprep.vm\'s demo VM builder: the provisioning account\n{user} ALL=(ALL) NOPASSWD:ALL\n'


def without_paths_under(manifest: list[dict[str, str]], directory: str) -> list[dict[str, str]]:
    """Return the planter's MANIFEST without the entries for DIRECTORY and what lies under it."""
    return [entry for entry in manifest if entry['path'] != directory and not entry['path'].startswith(directory.rstrip('/') + '/')]


def variant_name(with_cloud_init: bool, plant: bool) -> str:
    """Return the cache name part of a build variant: ``cloud-init`` or ``no-cloud-init``, ``-planted`` or ``-clean``."""
    return ('cloud-init' if with_cloud_init else 'no-cloud-init') + ('-planted' if plant else '-clean')


def instance_names(name: str, count: int) -> list[str]:
    """Return the domain names of COUNT demo VMs: NAME alone, or NAME-1 ... NAME-COUNT."""
    if count < 1:
        raise DemoVMError(f'the number of demo VMs must be at least 1, not {count}')
    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]{0,62}', name):
        raise DemoVMError(f'a domain name is 1-63 letters, digits, dots, dashes or underscores, not {name!r}')
    return [name] if count == 1 else [f'{name}-{index}' for index in range(1, count + 1)]


def inventory_document(hosts: t.Mapping[str, t.Mapping[str, t.Any]]) -> str:
    """Return an Ansible inventory (YAML, in JSON syntax) with HOSTS ({name: vars}) under all.hosts."""
    return json.dumps({'all': {'hosts': {name: dict(variables) for name, variables in hosts.items()}}}, indent=2) + '\n'


def progress_line(total: float, message: str, seconds: float | None = None) -> str:
    """Return one progress line: time since the start, what happened, and how long it took."""
    took = '' if seconds is None else f' ({seconds:.1f}s)'
    return f'[{total:6.1f}s] {message}{took}'


class Progress:
    """Reports steps as they go: a line when a step starts, and one with its seconds when it ends."""

    def __init__(self, write: t.Callable[[str], None] = print) -> None:
        self.write = write
        self.origin = time.monotonic()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, message: str) -> t.Iterator[None]:
        """Report MESSAGE now, and again with its duration when the block ends."""
        begin = time.monotonic()
        self.write(progress_line(begin - self.origin, f'{message} ...'))
        yield
        end = time.monotonic()
        self.seconds[message] = end - begin
        self.write(progress_line(end - self.origin, f'{message}: done', end - begin))


def _silent(_message: str) -> None:
    """A progress writer that writes nothing."""


# -- the cached base disk --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoDisk:
    """The cached, read-only parts every demo VM boots from."""

    directory: pathlib.Path

    @property
    def disk(self) -> pathlib.Path:
        """Raw GPT disk: the EFI system partition and the root (the backing file of every OS disk overlay)."""
        return self.directory / 'disk.raw'

    @property
    def kernel(self) -> pathlib.Path:
        """A copy of the guest's kernel: what the KVM probe boots (the domain itself boots through its firmware)."""
        return self.directory / 'vmlinuz'

    @property
    def private_key(self) -> pathlib.Path:
        """Private half of the key pair authorised for the provisioning account (mode 0600)."""
        return self.directory / 'id_ed25519'

    @property
    def public_key(self) -> pathlib.Path:
        """Public half of the key pair."""
        return self.directory / 'id_ed25519.pub'

    @property
    def record(self) -> pathlib.Path:
        """What the build made: variant, kernel, identities, the planted manifest, seconds per step (JSON)."""
        return self.directory / 'build.json'

    def info(self) -> dict[str, t.Any]:
        """Return the build record."""
        return json.loads(self.record.read_text(encoding='utf-8'))


def missing_host_tools() -> list[str]:
    """Return the host programs the build needs and lacks, with their Debian packages (empty when none)."""
    missing = [f'{program} (Debian package {package})' for program, package in HOST_PACKAGES.items() if shutil.which(program) is None]
    if not GRUB_EFI_MODULES.is_dir():
        missing.append(f'GRUB EFI modules in {GRUB_EFI_MODULES} (Debian package grub-efi-amd64-bin)')
    return missing


def _host_package_version(package: str) -> str:
    """Return the installed version of a Debian package ('' when not installed): part of the recipe's key."""
    result = subprocess.run(['dpkg-query', '-W', '-f=${Version}', package], capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ''


def disk_path(with_cloud_init: bool = True, plant: bool = True) -> pathlib.Path:
    """Return where the cached base disk of a variant lives (its name carries the key of its inputs)."""
    root_tarball = debian_root.tarball_path(PROFILE)
    variant = variant_name(with_cloud_init, plant)
    # this file holds the recipe; the planter and the host's GRUB shape the disk too
    key = target_cache.input_key(pathlib.Path(__file__), pathlib.Path(plant_used_vm.__file__) if plant else '', root_tarball.name,
                                 _host_package_version('grub-efi-amd64-bin'), variant)
    return target_cache.cache_dir() / f'debian12-demo-{variant}-{key}'


def _run(command: list[str], **kwargs: t.Any) -> subprocess.CompletedProcess:
    """Run COMMAND; raise DemoVMError with its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise DemoVMError(f'{" ".join(command)} failed (exit {result.returncode}): {output}')
    return result


def _add_provisioning_account(root: pathlib.Path, public_key: str) -> None:
    """Create the provisioning account in ROOT (before the planter, so it gets uid 1000), with key and sudoers."""
    _run(['chroot', str(root), 'useradd', '--uid', str(PROVISION_UID), '--user-group', '--create-home', '--shell', '/bin/bash',
          '--groups', 'sudo', '--comment', 'imageprep demo provisioning account', PROVISION_USER])
    # no password at all ('*'), rather than a locked one ('!'): only the key logs in
    _run(['chroot', str(root), 'usermod', '--password', '*', PROVISION_USER])
    home = root / 'home' / PROVISION_USER
    ssh_dir = home / '.ssh'
    ssh_dir.mkdir(mode=0o700)
    authorized_keys = ssh_dir / 'authorized_keys'
    authorized_keys.write_text(public_key, encoding='utf-8')
    authorized_keys.chmod(0o600)
    for path in (ssh_dir, authorized_keys):
        os.chown(path, PROVISION_UID, PROVISION_UID)
    sudoers = root / SUDOERS_FILE.lstrip('/')
    sudoers.write_text(sudoers_dropin(PROVISION_USER), encoding='utf-8')
    sudoers.chmod(0o440)
    # the guest's own visudo judges the file: a broken drop-in would take sudo away from every account
    _run(['chroot', str(root), 'visudo', '-c', '-q', '-f', SUDOERS_FILE])


def _customise_root(root: pathlib.Path, public_key: str, with_cloud_init: bool, plant: bool) -> list[dict[str, str]]:
    """Make a copy of the vm root the demo guest; return the planter's manifest (empty without planting)."""
    _add_provisioning_account(root, public_key)
    manifest: list[dict[str, str]] = []
    if plant:
        # the planter runs the root's own cloud-init: before it may be purged
        manifest = without_paths_under(plant_used_vm.plant(root, 'debian'), PLANTER_SEED)
        # the planter's NoCloud seed stands in for a cloud's metadata while it plants; left in place, ds-identify
        # would find a datasource and run cloud-init on every boot of the demo VM (about 45 s more under TCG)
        shutil.rmtree(root / PLANTER_SEED.lstrip('/'))
        # what the planter put in /run (leases, cloud-init's run state) would lie under the tmpfs the booted guest
        # mounts there: hidden from the guest (and from a deprovisioning in it), found by an offline audit of the
        # disk. An installed system has an empty /run on disk.
        manifest = without_paths_under(manifest, '/run')
        for entry in (root / 'run').iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    if not with_cloud_init:
        _run(['chroot', str(root), 'dpkg', '--purge', 'cloud-init'], env=dict(os.environ, DEBIAN_FRONTEND='noninteractive'))
    (root / 'etc' / 'fstab').write_text(fstab(), encoding='utf-8')
    for directory in ('boot/efi', DATA_MOUNT.lstrip('/')):
        (root / directory).mkdir(parents=True, exist_ok=True)
    network_dir = root / 'etc' / 'systemd' / 'network'
    network_dir.mkdir(parents=True, exist_ok=True)
    (network_dir / '50-imageprep-demo-dhcp.network').write_text(NETWORK_FILE, encoding='utf-8')
    # the guest's own systemctl creates exactly the links its unit files ask for
    _run(['chroot', str(root), 'systemctl', 'enable', '--quiet', 'systemd-networkd.service', 'ssh.service'])
    # the pipeline logs in as the provisioning account; root gets no key
    (root / 'root' / '.ssh' / 'authorized_keys').unlink(missing_ok=True)
    return manifest


def _check_initramfs(root: pathlib.Path, initrd: pathlib.Path) -> None:
    """Fail unless the initramfs can find the root: virtio disk and ext4 drivers, and udev for root=UUID=.

    The guest's own lsinitramfs lists it (the initramfs tools that made it are in the guest, not
    necessarily on the host).
    """
    inside = '/' + str(initrd.relative_to(root))
    listing = _run(['chroot', str(root), 'lsinitramfs', inside]).stdout
    for needed in ('/virtio_blk.ko', '/virtio_pci.ko', '/fs/ext4/', 'bin/udevadm'):
        if needed not in listing:
            raise DemoVMError(f'{initrd.name} lacks {needed}: the initramfs would not find the root file system')


def _esp_image(path: pathlib.Path, boot_loader: pathlib.Path) -> None:
    """Build the EFI system partition as a file: FAT32 with \\EFI\\BOOT\\BOOTX64.EFI, no mount."""
    _run(['mkfs.vfat', '-F', '32', '-n', ESP_LABEL, '-i', ESP_VOLUME_ID, '-C', str(path), str(ESP_MIB * 1024)])
    _run(['mmd', '-i', str(path), '::/EFI', '::/EFI/BOOT'])
    _run(['mcopy', '-i', str(path), str(boot_loader), '::/EFI/BOOT/BOOTX64.EFI'])


def _boot_loader(path: pathlib.Path, scratch: pathlib.Path) -> None:
    """Build GRUB for UEFI as one file, its configuration (and every module) in its memory disk."""
    config = scratch / 'grub.cfg'
    config.write_text(grub_config(), encoding='utf-8')
    _run(['grub-mkstandalone', '--format=x86_64-efi', f'--output={path}', '--modules=part_gpt ext2 search_fs_uuid',
          '--locales=', '--fonts=', '--themes=', f'boot/grub/grub.cfg={config}'])


def _write_at(image: pathlib.Path, disk: pathlib.Path, offset_mib: int) -> None:
    """Copy IMAGE into DISK at OFFSET_MIB, keeping DISK sparse (zero blocks are skipped)."""
    _run(['dd', f'if={image}', f'of={disk}', 'bs=1M', f'seek={offset_mib}', 'conv=notrunc,sparse', 'status=none'])


def build(with_cloud_init: bool = True, plant: bool = True, progress: Progress | None = None) -> DemoDisk:
    """Build the base disk of a variant unless a build with the same inputs exists; return its paths."""
    progress = progress or Progress(_silent)
    missing = missing_host_tools()
    if missing:
        raise DemoVMError('cannot build the demo disk; missing: ' + ', '.join(missing))
    final = disk_path(with_cloud_init, plant)
    with progress.step(f'Debian 12 {PROFILE} root'):
        debian_root.build(PROFILE)
    variant = variant_name(with_cloud_init, plant)
    with target_cache.build_lock(f'debian12-demo-{variant}'):
        if final.exists():
            return DemoDisk(final)
        tmp = final.with_name(final.name + '.partial')
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(mode=0o700)
        parts = DemoDisk(tmp)
        root = tmp / 'root'
        record: dict[str, t.Any] = {'variant': variant, 'cloud_init': with_cloud_init, 'planted': plant, 'root_uuid': ROOT_UUID,
                                    'esp_uuid': fat_uuid(ESP_VOLUME_ID), 'kernel_cmdline': KERNEL_CMDLINE}
        with progress.step('copy the root'):
            debian_root.copy(PROFILE, root)
        with progress.step('customise the root' + (' and plant a used VM' if plant else '')):
            _run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'imageprep-demo-provision', '-f', str(parts.private_key)])
            parts.private_key.chmod(0o600)
            record['planted_items'] = _customise_root(root, parts.public_key.read_text(encoding='utf-8'), with_cloud_init, plant)
        kernels = sorted((root / 'boot').glob('vmlinuz-*'))
        if len(kernels) != 1:
            raise DemoVMError(f'expected one kernel in the {PROFILE} root, found {[k.name for k in kernels]}')
        record['kernel'] = kernels[0].name[len('vmlinuz-'):]
        _check_initramfs(root, root / 'boot' / f'initrd.img-{record["kernel"]}')
        shutil.copyfile(kernels[0], parts.kernel)
        with progress.step('boot loader and EFI system partition'):
            _boot_loader(tmp / 'BOOTX64.EFI', tmp)
            _esp_image(tmp / 'esp.img', tmp / 'BOOTX64.EFI')
        with progress.step('root file system'):
            _run(['truncate', '-s', f'{ROOT_MIB}M', str(tmp / 'root.ext4')])
            _run(['mkfs.ext4', '-q', '-F', '-L', ROOT_LABEL, '-U', ROOT_UUID, '-d', str(root), str(tmp / 'root.ext4')])
        with progress.step('partition and fill the disk'):
            _run(['truncate', '-s', f'{DISK_MIB}M', str(parts.disk)])
            _run(['sfdisk', '--quiet', '--no-reread', '--no-tell-kernel', str(parts.disk)], input=partition_script())
            _write_at(tmp / 'esp.img', parts.disk, ESP_START_MIB)
            _write_at(tmp / 'root.ext4', parts.disk, ROOT_START_MIB)
        for scratch in ('esp.img', 'root.ext4', 'BOOTX64.EFI', 'grub.cfg'):
            (tmp / scratch).unlink()
        shutil.rmtree(root)
        record['seconds'] = {step: round(seconds, 1) for step, seconds in progress.seconds.items()}
        parts.record.write_text(json.dumps(record, indent=2) + '\n', encoding='utf-8')
        target_cache.publish(tmp, final)
        target_cache.prune(f'debian12-demo-{variant}-', final)
    return DemoDisk(final)


# -- demo VM instances -----------------------------------------------------------------


def make_data_disk(path: pathlib.Path) -> None:
    """Write a 64 MiB qcow2 data disk: ext4 labelled imageprep-data, holding the marker file (built as a file, no mount)."""
    with tempfile.TemporaryDirectory(prefix='imageprep-demo-data-', dir=path.parent) as scratch:
        content = pathlib.Path(scratch) / 'content'
        content.mkdir(mode=0o755)
        (content / DATA_MARKER).write_text(DATA_MARKER_TEXT, encoding='utf-8')
        raw = pathlib.Path(scratch) / 'data.ext4'
        _run(['truncate', '-s', f'{DATA_MIB}M', str(raw)])
        _run(['mkfs.ext4', '-q', '-F', '-L', DATA_LABEL, '-d', str(content), str(raw)])
        _run(['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', str(raw), str(path)])


def instance_files(workdir: pathlib.Path, name: str) -> list[pathlib.Path]:
    """Return every file a demo VM instance NAME keeps in WORKDIR."""
    return [workdir / file for file in ('os.qcow2', 'data.qcow2', 'nvram.fd', 'console.log', 'qemu.log', f'{name}.xml')]


def remove_instance(name: str, workdir: pathlib.Path) -> bool:
    """Destroy and undefine domain NAME (with its UEFI variables) and remove its files; True when the domain existed."""
    domain = libvirt_host.LibvirtDomain(name, workdir)
    existed = domain.exists()
    domain.cleanup()
    for path in instance_files(workdir, name):
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        workdir.rmdir()
    return existed


class DemoVM(libvirt_host.SshDomain):
    """One demo VM: OS disk overlay (vda) and data disk (vdb) in WORKDIR, a persistent domain NAME booted by OVMF."""

    def __init__(self, workdir: pathlib.Path, base: DemoDisk | None = None, name: str = DEFAULT_NAME) -> None:
        base = base or build()
        super().__init__(name, workdir, PROVISION_USER, base.private_key)
        self.base = base
        self.os_disk, self.data_disk, self.nvram = (self.workdir / file for file in ('os.qcow2', 'data.qcow2', 'nvram.fd'))
        self.memory_mib = MEMORY_MIB
        self.vcpus = VCPUS

    @classmethod
    def create(cls, workdir: pathlib.Path, base: DemoDisk | None = None, *, name: str = DEFAULT_NAME, memory_mib: int = MEMORY_MIB,
               vcpus: int = VCPUS) -> DemoVM:
        """Make the disks and define the domain; return it (not started). Refuses a name libvirt already has."""
        vm = cls(workdir, base, name)
        vm.memory_mib, vm.vcpus = memory_mib, vcpus
        if vm.exists():
            raise DemoVMError(f'a domain named {name} exists already: remove it first (demo_vm.py down DIR, '
                              f'or virsh undefine --nvram {name} after virsh destroy {name})')
        vm.workdir.mkdir(parents=True, exist_ok=True)
        for path in instance_files(vm.workdir, name):
            path.unlink(missing_ok=True)
        _run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'raw', '-b', str(vm.base.disk), str(vm.os_disk)])
        make_data_disk(vm.data_disk)
        vm.define_domain()
        return vm

    def define_domain(self) -> None:
        """(Re)define the domain with a free loopback port forwarded to the guest's SSH."""
        self.port = qemu_vm.free_port()
        disks = libvirt_host.disk_specs([libvirt_host.DiskSpec(self.os_disk, 'qcow2', 'vda'),
                                         libvirt_host.DiskSpec(self.data_disk, 'qcow2', 'vdb')])
        self._define(disks, memory_mib=self.memory_mib, vcpus=self.vcpus, domain_type=None, probe_kernel=self.base.kernel,
                     ssh_port=self.port, firmware=libvirt_host.UefiFirmware(self.nvram))

    def start(self, attempts: int = 3) -> DemoVM:
        """Start the domain; another port is tried when the forwarded one was taken meanwhile."""
        for attempt in range(1, attempts + 1):
            try:
                super().start()
                return self
            except libvirt_host.LibvirtHostError as exc:
                if 'host forwarding' not in str(exc) or attempt == attempts:
                    raise
                self.define_domain()
        return self

    def inventory_vars(self) -> dict[str, t.Any]:
        """Return the host variables Ansible needs: SSH as the provisioning account, and the domain's name.

        Become is left to the play (the pipeline becomes root in the guest, and not on the
        hypervisor, where an ``ansible_become`` host variable would follow its delegated tasks).
        """
        variables = qemu_vm.ssh_inventory_vars(self.port, self.private_key)
        variables.update(ansible_user=PROVISION_USER, image_pipeline_domain=self.name)
        return variables

    def cleanup(self) -> None:
        """Destroy and undefine the domain (and its UEFI variables) and remove its files."""
        remove_instance(self.name, self.workdir)


def write_inventory(path: pathlib.Path, *vms: DemoVM) -> pathlib.Path:
    """Write an inventory with VMS under all.hosts, named after their domains; return its path."""
    path = pathlib.Path(path)
    path.write_text(inventory_document({vm.name: vm.inventory_vars() for vm in vms}), encoding='utf-8')
    return path


# -- command line ----------------------------------------------------------------------


def up(directory: pathlib.Path, name: str = DEFAULT_NAME, count: int = 1, *, with_cloud_init: bool = True, plant: bool = True,
       write: t.Callable[[str], None] = print) -> pathlib.Path:
    """Create and start COUNT demo VMs in DIRECTORY, wait for SSH, write the inventory; return its path.

    What was made is listed in DIRECTORY/demo-vms.json for ``down``. When a step fails, every VM
    made so far is removed again.
    """
    progress = Progress(write)
    names = instance_names(name, count)
    directory = pathlib.Path(directory).absolute()
    state = directory / STATE_FILE
    if state.exists():
        raise DemoVMError(f'{state} exists: demo VMs are up from {directory}; run demo_vm.py down {directory} first')
    with progress.step('libvirt daemon'):
        daemon = libvirt_host.ensure_daemon()
    write(f'  virtlogd {daemon.virtlogd}, libvirtd {daemon.libvirtd}, {daemon.hypervisor}')
    base = build(with_cloud_init, plant, progress)
    write(f'  base disk {base.disk}')
    directory.mkdir(parents=True, exist_ok=True)
    vms: list[DemoVM] = []
    try:
        state.write_text(json.dumps({'vms': [{'name': vm_name, 'workdir': str(directory / vm_name)} for vm_name in names]}, indent=2)
                         + '\n', encoding='utf-8')
        for vm_name in names:
            with progress.step(f'{vm_name}: disks and domain'):
                vms.append(DemoVM.create(directory / vm_name, base, name=vm_name))
            write(f'  domain type {vms[-1].domain_type} ({vms[-1].domain_type_why}); console {vms[-1].console_log}')
        for vm in vms:
            with progress.step(f'{vm.name}: start (UEFI firmware)'):
                vm.start()
        for vm in vms:
            with progress.step(f'{vm.name}: wait for SSH as {PROVISION_USER} on 127.0.0.1:{vm.port}'):
                vm.wait_for_ssh()
        with progress.step('inventory'):
            inventory = write_inventory(directory / INVENTORY_FILE, *vms)
    except BaseException:
        for vm in vms:
            with contextlib.suppress(libvirt_host.LibvirtHostError, OSError):
                vm.cleanup()
        state.unlink(missing_ok=True)
        raise
    write(f'inventory: {inventory}')
    return inventory


def down(directory: pathlib.Path, write: t.Callable[[str], None] = print) -> list[str]:
    """Remove the demo VMs ``up`` made in DIRECTORY and their files; return the domains that existed."""
    progress = Progress(write)
    directory = pathlib.Path(directory).absolute()
    state = directory / STATE_FILE
    if not state.exists():
        write(f'no demo VMs are up from {directory} (no {STATE_FILE})')
        return []
    libvirt_host.ensure_daemon()
    removed = []
    for entry in json.loads(state.read_text(encoding='utf-8'))['vms']:
        with progress.step(f'{entry["name"]}: destroy, undefine, remove files'):
            if remove_instance(entry['name'], pathlib.Path(entry['workdir'])):
                removed.append(entry['name'])
    (directory / INVENTORY_FILE).unlink(missing_ok=True)
    state.unlink()
    return removed


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('action', choices=['build', 'up', 'down'])
    parser.add_argument('directory', nargs='?', type=pathlib.Path)
    parser.add_argument('--name', default=DEFAULT_NAME, help=f'domain name (default {DEFAULT_NAME}); with --count, the prefix')
    parser.add_argument('--count', type=int, default=1, help='how many demo VMs (default 1)')
    parser.add_argument('--without-cloud-init', action='store_true', help='purge cloud-init from the guest')
    parser.add_argument('--no-plant', action='store_true', help='do not plant a used VM\'s residue into the guest')
    args = parser.parse_intermixed_args()
    if args.action in ('up', 'down') and args.directory is None:
        parser.error(f'{args.action} needs DIR')
    variant = {'with_cloud_init': not args.without_cloud_init, 'plant': not args.no_plant}

    def write(line: str) -> None:
        print(line, flush=True)
    try:
        if args.action == 'build':
            base = build(progress=Progress(write), **variant)
            for field in ('disk', 'kernel', 'private_key', 'public_key', 'record'):
                print(f'{field}: {getattr(base, field)}')
        elif args.action == 'up':
            up(args.directory, args.name, args.count, write=write, **variant)
        else:
            removed = down(args.directory, write=write)
            print('removed: ' + (', '.join(removed) if removed else 'nothing'))
    except (DemoVMError, libvirt_host.LibvirtHostError, qemu_vm.QemuVMError, plant_used_vm.PlantError,
            subprocess.CalledProcessError) as exc:
        raise SystemExit(f'demo_vm.py {args.action}: {exc}') from exc


if __name__ == '__main__':
    main()
