#!/bin/sh
# Install the Debian packages nubo needs, only those missing. Idempotent and
# quiet when nothing is missing.  Usage: scripts/deps.sh [build|run|test|all]
set -eu
what=${1:-all}
build="meson ninja-build gcc pkg-config libmicrohttpd-dev libjansson-dev libsqlite3-dev libssl-dev libcurl4-openssl-dev libcmocka-dev libnftables-dev"
run="curl qemu-system-x86 qemu-utils dnsmasq-base nftables iproute2 busybox-static e2fsprogs cpio kmod xz-utils"
test="python3-pytest python3-boto3 python3-botocore socat awscli s3cmd debootstrap openssh-client"
case "$what" in
build) want="$build" ;;
run) want="$build $run" ;;
test|all) want="$build $run $test" ;;
*) echo "usage: $0 [build|run|test|all]" >&2; exit 2 ;;
esac
missing=""
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "nubo: installing missing Debian packages:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null || true
$SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
