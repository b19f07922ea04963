#!/bin/bash
# Build a full Debian 12 (bookworm) guest image with the real cloud-init,
# for the tests of nubo's metadata service against it.
#
#   images/debian/build.sh OUTDIR
#
# debootstrap (from the Debian archive, packages kept in the cache) into a
# directory; linux-image-amd64, systemd-sysv, cloud-init (Ec2 data source
# only: `datasource_list: [ Ec2, None ]`), openssh-server, DHCP on every
# Ethernet NIC by systemd-networkd, python3-cffi-backend named explicitly,
# root logged in on the serial console. Outputs, as the tiny image's so
# nubo imports both the same way (kernel boot, the root filesystem is the
# whole disk):
#
#   OUTDIR/vmlinuz, OUTDIR/initrd.img   the kernel and initramfs of the guest
#   OUTDIR/disk.qcow2                   ext4, no partition table (root=/dev/vda)
#   OUTDIR/manifest.json                written last
#
# Progress goes to stdout as "progress <0-100> <message>" lines; everything
# else to stderr. Must run as root, with the Debian archive reachable (not
# inside the e2e tests' private network namespace).
#
# Environment:
#   NUBO_DEBIAN_MIRROR   the archive (default http://deb.debian.org/debian)
#   NUBO_DEBIAN_CACHE    where downloaded .deb files are kept
#                        (default /var/cache/nubo/debian)
#   NUBO_DEBIAN_SIZE     the root filesystem's size (default 2G)
set -euo pipefail
umask 022

prog=${0##*/}
suite=bookworm
mirror=${NUBO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${NUBO_DEBIAN_CACHE:-/var/cache/nubo/debian}
size=${NUBO_DEBIAN_SIZE:-2G}
cmdline="console=ttyS0 root=/dev/vda rw quiet"
packages=linux-image-amd64,systemd-sysv,udev,cloud-init,openssh-server,python3-cffi-backend,iproute2,e2fsprogs,netbase,sudo,procps,zstd

die() {
	echo "$prog: $*" >&2
	exit 1
}

progress() {
	echo "progress $1 $2"
}

[ $# -eq 1 ] && [ -n "$1" ] || {
	echo "usage: $prog OUTDIR" >&2
	exit 2
}
out=$1
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap)"
for tool in debootstrap chroot mke2fs qemu-img flock; do
	command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool (scripts/deps.sh all installs it)"
done
mkdir -p "$out" "$cache" || die "cannot create $out or $cache"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/nubo-debian.XXXXXX")
root=$work/root
cleanup() {
	# debootstrap mounts proc and sys in the target; never leave them
	for m in "$root/proc" "$root/sys" "$root/dev/pts" "$root/dev"; do
		mountpoint -q "$m" 2>/dev/null && umount -l "$m" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

exec 9>"$cache/.lock"
flock 9

progress 2 "debootstrap $suite from $mirror"
mkdir -p "$root"
if ! debootstrap --variant=minbase --include="$packages" --cache-dir="$cache" \
	"$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
	tail -n 30 "$work/debootstrap.log" >&2
	[ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
	die "debootstrap failed"
fi
flock -u 9
exec 9>&-
progress 70 "configuring the guest"

# cloud-init: the Ec2 data source only, asking 169.254.169.254 alone
install -d "$root/etc/cloud/cloud.cfg.d"
cat >"$root/etc/cloud/cloud.cfg.d/90-nubo.cfg" <<'CFG'
# nubo: the instance metadata service at 169.254.169.254 (EC2's)
datasource_list: [ Ec2, None ]
datasource:
  Ec2:
    metadata_urls: [ 'http://169.254.169.254' ]
    timeout: 5
    max_wait: 120
    strict_id: false
# one host key type: generating RSA keys is slow under TCG
ssh_genkeytypes: [ ed25519 ]
# a locale that exists without generating one (en_US.UTF-8, cloud-init's
# default, fails update-locale here and marks the boot as in error)
locale: C.UTF-8
CFG

# DHCP on every Ethernet NIC (cloud-init's network stage needs the network
# up; its own fallback configuration says the same)
install -d "$root/etc/systemd/network"
cat >"$root/etc/systemd/network/80-nubo-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
NET
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1 ||
	die "cannot enable systemd-networkd"

# root on the serial console, logged in (the tests drive it from there)
install -d "$root/etc/systemd/system/serial-getty@ttyS0.service.d"
cat >"$root/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'GETTY'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
GETTY

echo '/dev/vda / ext4 defaults,noatime 0 1' >"$root/etc/fstab"
echo debian >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# a new machine id, SSH host keys and DHCP identity at each instance's first boot
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root"/etc/ssh/ssh_host_*
chroot "$root" apt-get clean >/dev/null 2>&1 || true
rm -rf "$root/var/lib/apt/lists/"* "$root/var/log/"*.log "$root/debootstrap"

kernel=$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
initrd=$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n 1)
[ -n "$kernel" ] && [ -n "$initrd" ] || die "no kernel or initramfs in /boot"
kver=${kernel##*/vmlinuz-}
release=$(cat "$root/etc/debian_version")
ci=$(chroot "$root" dpkg-query -W -f='${Version}' cloud-init 2>/dev/null || echo unknown)

progress 80 "writing disk.qcow2 ($size ext4)"
truncate -s "$size" "$work/disk.raw"
mke2fs -q -F -t ext4 -L nubo-root -d "$root" "$work/disk.raw" >"$work/mke2fs.log" 2>&1 ||
	die "mke2fs failed: $(cat "$work/mke2fs.log")"
qemu-img convert -q -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2" ||
	die "qemu-img convert failed"

progress 95 "installing into $out"
rm -f "$out/manifest.json"
install -m 0644 "$kernel" "$out/.vmlinuz.tmp"
install -m 0644 "$initrd" "$out/.initrd.img.tmp"
install -m 0644 "$work/disk.qcow2" "$out/.disk.qcow2.tmp"
mv -f "$out/.vmlinuz.tmp" "$out/vmlinuz"
mv -f "$out/.initrd.img.tmp" "$out/initrd.img"
mv -f "$out/.disk.qcow2.tmp" "$out/disk.qcow2"
printf '{"name":"debian","os":"debian","release":"%s","arch":"x86_64","boot_mode":"kernel","cmdline":"%s","kernel_version":"%s","cloud_init":"%s"}\n' \
	"$release" "$cmdline" "$kver" "$ci" >"$out/.manifest.json.tmp"
mv -f "$out/.manifest.json.tmp" "$out/manifest.json"
progress 100 "debian image ready in $out"
