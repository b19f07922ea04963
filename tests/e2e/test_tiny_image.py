"""The tiny test image: images/tiny/build.sh's outputs, and the image booted
under a bare QEMU (TCG): ready marker, HTTP page, user-data, console shell,
reset, ACPI power-off, copy-on-write disk.

Run: /usr/bin/python3 -m pytest tests/e2e/test_tiny_image.py (as root).
"""

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest

import tinyimage

IID = "i-0123456789abcdef0"
USER_DATA = """#!/bin/sh
echo "user-data: $((6 * 7)) $(cat /sys/class/dmi/id/product_serial)"
echo "written by user-data" >/www/ud.txt
"""

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="building the image needs root"),
    pytest.mark.skipif(shutil.which(tinyimage.QEMU) is None, reason="no qemu-system-x86_64"),
]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def debugfs_cat(qcow2, path, tmp_path):
    """Contents of path in the ext4 filesystem of a qcow2 (and its backing
    chain), read without mounting."""
    raw = tmp_path / (qcow2.name + ".raw")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", str(qcow2), str(raw)], check=True)
    out = subprocess.run(["debugfs", "-R", f"cat {path}", str(raw)],
                         capture_output=True, check=True)
    return out.stdout, raw


@pytest.fixture(scope="session")
def image():
    return tinyimage.build_tiny(tinyimage.DEFAULT_OUT)


@pytest.fixture(scope="module")
def vm(image, tmp_path_factory):
    base_sha = sha256_file(image.disk)
    workdir = tmp_path_factory.mktemp("tinyvm")
    v = tinyimage.boot_bare(image.dir, IID, workdir, user_data=USER_DATA)
    v.base_sha = base_sha
    yield v
    v.close()


# ---- the build ---------------------------------------------------------------

def test_manifest(image):
    m = json.loads((image.dir / "manifest.json").read_text())
    assert list(m) == ["name", "os", "release", "arch", "boot_mode", "cmdline",
                       "kernel_version"]
    assert m["name"] == "tiny"
    assert m["os"] == "busybox"
    assert re.fullmatch(r"\d+\.\d+\.\d+", m["release"])
    assert m["arch"] == "x86_64"
    assert m["boot_mode"] == "kernel"
    assert m["cmdline"].split()[0] == "console=ttyS0"
    assert re.fullmatch(r"6\.1\.0-\d+-amd64", m["kernel_version"])


def test_kernel_and_initrd(image):
    head = image.vmlinuz.read_bytes()[:1024]
    # ELF (PVH entry, the default) or Debian's bzImage as is
    assert head[:4] == b"\x7fELF" or head[514:518] == b"HdrS"
    data = gzip.decompress(image.initrd.read_bytes())
    assert data[:6] == b"070701"  # newc cpio
    names = set(re.findall(rb"070701[0-9A-F]{104}([^\0]+)\0", data))
    assert {b"init", b"bin/busybox", b"sbin/init", b"etc/nubo/modules"} <= names
    kver = image.manifest["kernel_version"].encode()
    for mod in (b"virtio_pci", b"virtio_net", b"virtio_blk", b"ext4", b"button", b"evdev"):
        assert b"lib/modules/" + kver + b"/" + mod + b".ko" in names


def test_disk(image, tmp_path):
    info = json.loads(subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(image.disk)],
        capture_output=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 64 << 20
    assert "backing-filename" not in info
    content, raw = debugfs_cat(image.disk, "/nubo-image", tmp_path)
    assert content == b"tiny\n"
    blkid = subprocess.run(["blkid", "-o", "value", "-s", "TYPE", str(raw)],
                           capture_output=True, text=True).stdout.strip()
    assert blkid == "ext4"


def test_rebuild_is_reproducible_and_reports_progress(image, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(["/bin/bash", str(tinyimage.TINY_SRC / "build.sh"), str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    pcts = []
    for line in proc.stdout.splitlines():
        m = re.fullmatch(r"progress (\d+) (.+)", line)
        assert m, f"not a progress line: {line!r}"
        pcts.append(int(m.group(1)))
    assert pcts == sorted(pcts) and pcts[-1] == 100
    for name in ("vmlinuz", "initrd.img", "disk.qcow2", "manifest.json"):
        assert sha256_file(out / name) == sha256_file(image.dir / name), name


def test_build_fails_cleanly_without_outdir():
    proc = subprocess.run(["/bin/bash", str(tinyimage.TINY_SRC / "build.sh")],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stdout == ""
    assert "usage" in proc.stderr


def test_build_tiny_uses_its_cache(image):
    before = {p: p.stat().st_mtime_ns for p in (image.vmlinuz, image.initrd, image.disk)}
    t0 = time.monotonic()
    again = tinyimage.build_tiny(tinyimage.DEFAULT_OUT)
    assert time.monotonic() - t0 < 5
    assert again.manifest == image.manifest
    assert {p: p.stat().st_mtime_ns for p in before} == before


# ---- the guest ---------------------------------------------------------------

def test_ready_marker(vm):
    iid, ip = vm.wait_ready(timeout=90)
    boot = time.monotonic() - vm.started
    print(f"\nboot to NUBO-READY: {boot:.2f} s")
    assert iid == IID
    assert ip == tinyimage.GUEST_ADDR
    lines = re.findall(rb"NUBO-READY[^\n]*\n", vm.console.text())
    assert lines == [f"NUBO-READY {IID} ip={ip}\r\n".encode()]


def test_http_page_names_the_instance(vm):
    vm.wait_ready(timeout=90)
    with urllib.request.urlopen(f"http://127.0.0.1:{vm.http_port}/", timeout=10) as r:
        assert r.status == 200
        assert f"nubo tiny {IID}" in r.read().decode()


def test_user_data_ran(vm):
    vm.wait_ready(timeout=90)
    # computed by the guest shell, so only a run of the script prints it
    vm.wait_for(f"user-data: 42 {IID}", timeout=1)
    with urllib.request.urlopen(f"http://127.0.0.1:{vm.http_port}/ud.txt", timeout=10) as r:
        assert r.read() == b"written by user-data\n"


def test_console_shell(vm, image):
    vm.wait_ready(timeout=90)
    status, out = vm.run("uname -r; hostname; cat /data/nubo-image", timeout=30)
    assert status == 0
    lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
    assert image.manifest["kernel_version"] in lines
    assert IID in lines
    assert "tiny" in lines  # /data is the mounted disk
    status, _ = vm.run("false", timeout=30)
    assert status == 1


def test_system_reset_reboots(vm):
    vm.wait_ready(timeout=90)
    since = vm.console.mark()
    vm.qmp("system_reset")
    m = vm.wait_for(tinyimage.READY_RE, timeout=90, since=since)
    assert m.group(1).decode() == IID
    assert vm.proc.poll() is None


def test_powerdown_after_write(vm, image, tmp_path):
    vm.wait_ready(timeout=90)
    status, _ = vm.run("echo hi > /data/x; sync", timeout=30)
    assert status == 0
    t0 = time.monotonic()
    vm.qmp("system_powerdown")
    rc = vm.wait_exit(timeout=30)  # the guest handled ACPI and powered off
    print(f"\nsystem_powerdown to QEMU exit: {time.monotonic() - t0:.2f} s")
    assert rc == 0
    vm.wait_for(rb"power button, powering off", timeout=1)
    assert sha256_file(image.disk) == vm.base_sha
    content, raw = debugfs_cat(vm.overlay, "/x", tmp_path)
    assert content == b"hi\n"
    # /data was unmounted before power-off: the filesystem is clean
    fsck = subprocess.run(["e2fsck", "-n", "-f", str(raw)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_boots_without_dhcp_or_disk(image, tmp_path):
    # a NIC on a hub port with nothing else on it: DHCP gets no answer
    nic = ["-netdev", "hubport,id=n0,hubid=0", "-device", "virtio-net-pci,netdev=n0"]
    with tinyimage.boot_bare(image.dir, "i-00000000000000001", tmp_path,
                             net=None, disk=False, extra_args=nic) as v:
        iid, ip = v.wait_ready(timeout=120)
        assert (iid, ip) == ("i-00000000000000001", "none")
        v.wait_for(rb"no DHCP lease on eth0", timeout=1)
        status, out = v.run("grep -c ' /data ' /proc/mounts", timeout=30)
        assert out.split() == ["0"]


def test_metadata_service(image, tmp_path):
    # IMDSv2 required, as nubo's service can be told: the init takes a token
    # first, then reads its id, hostname and key with it
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITinyImageTestKey0000000000000000000 t@nubo"
    ud = "#!/bin/sh\necho \"ud: $((6 * 7)) $(hostname)\"\n"
    with tinyimage.boot_bare(image.dir, IID, tmp_path, user_data=ud,
                             hostname="ip-10-1-2-3.nubo-1.compute.internal",
                             public_key=key, tokens_required=True) as v:
        iid, _ = v.wait_ready(timeout=120)
        assert iid == IID
        v.wait_for(re.escape(f"metadata service (IMDSv2): instance {IID}, "
                             "hostname ip-10-1-2-3, key yes"), timeout=1)
        v.wait_for("ud: 42 ip-10-1-2-3", timeout=1)  # user-data ran, after the hostname
        status, out = v.run("hostname; cat /root/.ssh/authorized_keys; "
                            "stat -c %a /root/.ssh /root/.ssh/authorized_keys", timeout=30)
        assert status == 0
        assert out.split("\n")[:4] == ["ip-10-1-2-3", key, "700", "600"]


def test_metadata_v1_fallback(image, tmp_path):
    # a service without tokens (PUT answered 400 here): IMDSv1 GETs
    mddir = tmp_path / "metadata"
    with tinyimage.boot_bare(image.dir, IID, tmp_path, hostname="v1host") as v:
        # the responder reads .token per request: without one, PUT is 400
        (mddir / ".token").unlink()
        v.wait_ready(timeout=120)
        v.wait_for(re.escape(f"metadata service (IMDSv1): instance {IID}, "
                             "hostname v1host, key no"), timeout=1)
