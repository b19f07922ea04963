#!/bin/bash
# Build the nubo "tiny" test image from Debian packages alone.
#
#   images/tiny/build.sh OUTDIR
#
# Writes OUTDIR/vmlinuz, OUTDIR/initrd.img (newc cpio, gzip), OUTDIR/disk.qcow2
# (64 MiB virtual, ext4, holding /nubo-image = "tiny") and, last,
# OUTDIR/manifest.json. The kernel and modules come from Debian's
# linux-image-6.1.0-N-amd64 package (apt-get download into the cache, then
# dpkg-deb -x; nothing is installed on the host), busybox from busybox-static,
# and the init and its helpers from images/tiny/rootfs.
#
# Progress goes to stdout as "progress <0-100> <message>" lines; errors go to
# stderr with a non-zero exit. Must run as root.
#
# Environment:
#   NUBO_CACHE_DIR        where downloaded .deb files are kept
#                         (default /var/cache/nubo/tiny)
#   NUBO_TINY_KERNEL_PKG  force a kernel package, e.g. linux-image-6.1.0-56-amd64
#   NUBO_TINY_KERNEL      "pvh" (default): OUTDIR/vmlinuz is the kernel
#                         decompressed from Debian's bzImage, an ELF that
#                         QEMU's -kernel boots through its PVH entry point,
#                         which saves the ~3-4 s the in-guest xz decompression
#                         costs under TCG; "bzimage": Debian's file as is
#   SOURCE_DATE_EPOCH     timestamp of every file in the outputs (default: the
#                         kernel's), which makes the outputs reproducible
set -euo pipefail
umask 022

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd)
# quiet: only errors on the console; cryptomgr.notests, 8250.nr_uarts=1,
# i8042.noaux, tsc=reliable and no_timer_check trim probing that costs
# tenths of a second each under TCG
cmdline="console=ttyS0 quiet cryptomgr.notests 8250.nr_uarts=1 i8042.noaux tsc=reliable no_timer_check"

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
cache=${NUBO_CACHE_DIR:-/var/cache/nubo/tiny}

[ "$(id -u)" -eq 0 ] || die "must run as root (apt-get download, device nodes in the initramfs)"
for tool in apt-get apt-cache dpkg-deb dpkg-query modinfo cpio gzip mke2fs \
	debugfs qemu-img flock find sort od dd; do
	command -v "$tool" >/dev/null 2>&1 || die "missing tool: $tool (scripts/deps.sh run installs it)"
done
[ -d "$here/rootfs" ] && [ -f "$here/modules" ] || die "$here/rootfs or $here/modules missing"

mkdir -p "$out" "$cache" || die "cannot create $out or $cache"
work=$(mktemp -d "${TMPDIR:-/tmp}/nubo-tiny.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# ---- packages --------------------------------------------------------------

# newest cached .deb of package $1, or nothing
cached_deb() {
	find "$cache" -maxdepth 1 -type f -name "${1}_*_amd64.deb" | sort -V | tail -n 1
}

# path of a good cached .deb of package $1, downloading it when needed
fetch_deb() {
	local pkg=$1 deb dl
	deb=$(cached_deb "$pkg")
	if [ -n "$deb" ] && dpkg-deb --info "$deb" >/dev/null 2>&1; then
		echo "$deb"
		return 0
	fi
	[ -z "$deb" ] || rm -f "$deb"
	dl=$(mktemp -d "$cache/.download.XXXXXX")
	# apt drops privileges to _apt for the download when it can write there
	chown _apt "$dl" 2>/dev/null || true
	if ! (cd "$dl" && apt-get download -q "$pkg") >"$work/apt.log" 2>&1; then
		rm -rf "$dl"
		return 1
	fi
	for deb in "$dl"/*.deb; do
		[ -f "$deb" ] || continue
		chown root: "$deb"
		mv -f "$deb" "$cache/"
	done
	rm -rf "$dl"
	deb=$(cached_deb "$pkg")
	[ -n "$deb" ] && echo "$deb"
}

# the kernel package: what linux-image-amd64 depends on, else the newest
# linux-image-6.1.0-N-amd64 apt knows
kernel_package() {
	local pkg
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *|\{0,1\}Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' |
		sort -V | tail -n 1) || pkg=""
	if [ -z "$pkg" ]; then
		pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null |
			cut -d' ' -f1 | sort -V | tail -n 1) || pkg=""
	fi
	echo "$pkg"
}

exec 9>"$cache/.lock"
flock 9

progress 2 "choosing the kernel package"
kpkg=${NUBO_TINY_KERNEL_PKG:-$(kernel_package)}
kdeb=""
if [ -n "$kpkg" ]; then
	kdeb=$(cached_deb "$kpkg")
	if [ -n "$kdeb" ]; then
		progress 5 "using cached $kpkg"
	else
		progress 5 "downloading $kpkg"
	fi
	kdeb=$(fetch_deb "$kpkg") || kdeb=""
	[ -n "$kdeb" ] || echo "$prog: apt-get download $kpkg failed: $(tail -n 3 "$work/apt.log" | tr '\n' ' ')" >&2
fi
if [ -z "$kdeb" ]; then
	[ -z "${NUBO_TINY_KERNEL_PKG:-}" ] || die "cannot get $NUBO_TINY_KERNEL_PKG"
	# offline or apt lists missing: fall back on any kernel in the cache
	kdeb=$(find "$cache" -maxdepth 1 -type f -name 'linux-image-6.1.0-*-amd64_*_amd64.deb' | sort -V | tail -n 1)
	[ -n "$kdeb" ] || die "no linux-image-6.1.0-N-amd64 package: none downloadable (apt-get update may help) and none in $cache"
	echo "$prog: using cached ${kdeb##*/}" >&2
fi
progress 25 "kernel package ${kdeb##*/}"

bb=""
if dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
	for p in /bin/busybox /usr/bin/busybox; do
		if dpkg-query -S "$p" 2>/dev/null | grep -q '^busybox-static:'; then
			bb=$p
			break
		fi
	done
fi
if [ -z "$bb" ]; then
	progress 27 "fetching busybox-static"
	bbdeb=$(fetch_deb busybox-static) || die "apt-get download busybox-static failed: $(tail -n 3 "$work/apt.log" | tr '\n' ' ')"
	mkdir "$work/bb"
	dpkg-deb -x "$bbdeb" "$work/bb" || die "cannot unpack $bbdeb"
	for p in "$work/bb/bin/busybox" "$work/bb/usr/bin/busybox"; do
		[ -f "$p" ] && bb=$p && break
	done
	[ -n "$bb" ] || die "no busybox binary in $bbdeb"
fi

flock -u 9
exec 9>&-

bbver=$("$bb" --help 2>&1 | sed -n '1s/^BusyBox v\([0-9][0-9.]*\).*/\1/p')
[ -n "$bbver" ] || die "cannot tell the version of $bb"
progress 30 "busybox $bbver from $bb"

# ---- kernel ------------------------------------------------------------------

progress 32 "unpacking ${kdeb##*/}"
mkdir "$work/k"
dpkg-deb -x "$kdeb" "$work/k" || die "cannot unpack $kdeb"
kver=""
for d in "$work"/k/lib/modules/*/; do
	[ -d "$d" ] || continue
	[ -z "$kver" ] || die "several module trees in ${kdeb##*/}"
	kver=$(basename "$d")
done
[ -n "$kver" ] || die "no /lib/modules in ${kdeb##*/}"
kdir=$work/k/lib/modules/$kver
vmlinuz=$work/k/boot/vmlinuz-$kver
[ -f "$vmlinuz" ] || die "no /boot/vmlinuz-$kver in ${kdeb##*/}"
epoch=${SOURCE_DATE_EPOCH:-$(stat -c %Y "$vmlinuz")}

# unsigned little-endian integer of $2 bytes at offset $3 of file $1
le_uint() {
	od -An -t "u$2" -j "$3" -N "$2" "$1" | tr -d ' '
}

# write the kernel inside bzImage $1 (xz or gzip payload) to $2 as an ELF
decompress_bzimage() {
	local setup off len start magic
	[ "$(od -An -c -j 514 -N 4 "$1" | tr -d ' ')" = HdrS ] || return 1
	setup=$(le_uint "$1" 1 497)
	[ "$setup" -ne 0 ] || setup=4
	off=$(le_uint "$1" 4 584)
	# the payload ends with its 4-byte decompressed size, not part of the stream
	len=$(($(le_uint "$1" 4 588) - 4))
	start=$(((setup + 1) * 512 + off))
	magic=$(od -An -t x1 -j "$start" -N 4 "$1" | tr -d ' ')
	dd if="$1" bs=64K iflag=skip_bytes,count_bytes skip="$start" count="$len" \
		status=none >"$work/payload" || return 1
	case "$magic" in
	fd377a58)
		# Debian's xz payload uses the x86 BCJ filter, which busybox's
		# unxz lacks: xz-utils, or python3's lzma
		if command -v xz >/dev/null 2>&1; then
			xz -dc "$work/payload" >"$2" || return 1
		elif command -v python3 >/dev/null 2>&1; then
			python3 -c 'import lzma, sys
sys.stdout.buffer.write(lzma.decompress(open(sys.argv[1], "rb").read()))' \
				"$work/payload" >"$2" || return 1
		else
			echo "$prog: neither xz nor python3 to decompress the kernel" >&2
			return 1
		fi
		;;
	1f8b*) gzip -dc "$work/payload" >"$2" || return 1 ;;
	*) return 1 ;;
	esac
	rm -f "$work/payload"
	[ "$(od -An -c -N 4 "$2" | tr -d ' ')" = 177ELF ]
}

kernel_format=${NUBO_TINY_KERNEL:-pvh}
case "$kernel_format" in
pvh)
	progress 45 "decompressing the kernel for PVH boot"
	grep -q '^CONFIG_PVH=y' "$work/k/boot/config-$kver" ||
		die "kernel $kver lacks CONFIG_PVH (use NUBO_TINY_KERNEL=bzimage)"
	decompress_bzimage "$vmlinuz" "$work/vmlinux" ||
		die "cannot decompress $vmlinuz (use NUBO_TINY_KERNEL=bzimage)"
	touch -d "@$epoch" "$work/vmlinux"
	vmlinuz=$work/vmlinux
	;;
bzimage) ;;
*) die "NUBO_TINY_KERNEL must be pvh or bzimage, not $kernel_format" ;;
esac
progress 55 "kernel $kver ($kernel_format)"

# ---- modules -----------------------------------------------------------------

declare -A modfile=() modstate=()
order=()
while IFS= read -r f; do
	b=${f##*/}
	b=${b%.ko}
	modfile[${b//-/_}]=$f
done < <(find "$kdir/kernel" -type f -name '*.ko')
[ ${#modfile[@]} -gt 0 ] || die "no modules in ${kdeb##*/} (compressed modules are not supported)"

# true when module $1 is built into the kernel
builtin_mod() {
	[ -f "$kdir/modules.builtin" ] && grep -q "/${1}\.ko\$" "$kdir/modules.builtin"
}

# append module $1 to $order after everything it depends on
add_mod() {
	local m=${1//-/_} f d soft
	case "${modstate[$m]:-}" in
	loaded) return 0 ;;
	busy) die "module dependency loop through $m" ;;
	esac
	f=${modfile[$m]:-}
	if [ -z "$f" ]; then
		builtin_mod "$m" && return 0
		die "module $m is neither in ${kdeb##*/} nor built in"
	fi
	modstate[$m]=busy
	for d in $(modinfo -F depends "$f" | tr ',' ' '); do
		add_mod "$d"
	done
	# soft pre-dependencies that name a module (aliases such as
	# crypto-crc32c are listed in images/tiny/modules instead)
	soft=$(modinfo -F softdep "$f" | sed -n 's/^pre: *\([^:]*\)\( post:.*\)\{0,1\}$/\1/p')
	for d in $soft; do
		[ -n "${modfile[${d//-/_}]:-}" ] && add_mod "$d"
	done
	modstate[$m]=loaded
	order+=("$m")
}

while read -r m _; do
	case "$m" in '' | '#'*) continue ;; esac
	add_mod "$m"
done <"$here/modules"
progress 62 "modules: ${order[*]}"

# ---- initramfs ---------------------------------------------------------------

root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,data,www,root,mnt,var/log,etc/nubo}
mkdir -p "$root/lib/modules/$kver"
cp -R "$here/rootfs/." "$root/"
chmod 0755 "$root/init" "$root/etc/udhcpc.script" "$root/etc/acpi/PWRF/00000080" "$root/sbin/nubo-stop"
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
install -m 0755 "$bb" "$root/bin/busybox"
"$bb" --list-full | while IFS= read -r applet; do
	case "$applet" in '' | /* | *..*) continue ;; esac
	[ -e "$root/$applet" ] || [ -L "$root/$applet" ] && continue
	mkdir -p "$root/$(dirname "$applet")"
	ln -s /bin/busybox "$root/$applet"
done
[ -L "$root/sbin/init" ] || die "busybox has no init applet"
for m in "${order[@]}"; do
	install -m 0644 "${modfile[$m]}" "$root/lib/modules/$kver/$m.ko"
done
printf '%s\n' "${order[@]}" >"$root/etc/nubo/modules"
printf 'tiny busybox-%s kernel-%s\n' "$bbver" "$kver" >"$root/etc/nubo/release"
mknod -m 0600 "$root/dev/console" c 5 1
mknod -m 0666 "$root/dev/null" c 1 3

progress 70 "writing initrd.img"
find "$root" -exec touch -h -d "@$epoch" {} +
(cd "$root" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort |
	cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -9n >"$work/initrd.img" ||
	die "cannot write the initramfs"

# ---- disk --------------------------------------------------------------------

progress 85 "writing disk.qcow2"
mkdir "$work/disk"
echo tiny >"$work/disk/nubo-image"
touch -d "@$epoch" "$work/disk/nubo-image" "$work/disk"
truncate -s 64M "$work/disk.raw"
uuid=6e75626f-7469-6e79-8000-000000000001
E2FSPROGS_FAKE_TIME=$epoch mke2fs -q -F -t ext4 -L nubo-data -U "$uuid" \
	-E "root_owner=0:0,hash_seed=$uuid" -d "$work/disk" "$work/disk.raw" >"$work/mke2fs.log" 2>&1 ||
	die "mke2fs failed: $(cat "$work/mke2fs.log")"
# mke2fs -d copies the source file's ctime, which touch cannot set
E2FSPROGS_FAKE_TIME=$epoch debugfs -w -R "set_inode_field /nubo-image ctime @$epoch" \
	"$work/disk.raw" >"$work/debugfs.log" 2>&1 || die "debugfs failed: $(cat "$work/debugfs.log")"
qemu-img convert -q -f raw -O qcow2 "$work/disk.raw" "$work/disk.qcow2" ||
	die "qemu-img convert failed"

# ---- outputs -----------------------------------------------------------------

progress 95 "installing into $out"
rm -f "$out/manifest.json"
install -m 0644 "$vmlinuz" "$out/.vmlinuz.tmp"
install -m 0644 "$work/initrd.img" "$out/.initrd.img.tmp"
install -m 0644 "$work/disk.qcow2" "$out/.disk.qcow2.tmp"
mv -f "$out/.vmlinuz.tmp" "$out/vmlinuz"
mv -f "$out/.initrd.img.tmp" "$out/initrd.img"
mv -f "$out/.disk.qcow2.tmp" "$out/disk.qcow2"
printf '{"name":"tiny","os":"busybox","release":"%s","arch":"x86_64","boot_mode":"kernel","cmdline":"%s","kernel_version":"%s"}\n' \
	"$bbver" "$cmdline" "$kver" >"$out/.manifest.json.tmp"
mv -f "$out/.manifest.json.tmp" "$out/manifest.json"
progress 100 "tiny image ready in $out"
