"""Instance lifecycle against real daemons and real tiny guests under TCG."""

import hashlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ApiError, Cloud, ConsoleSession, wait_until


def http_get(ip, timeout=5):
    with urllib.request.urlopen(f"http://{ip}/", timeout=timeout) as r:
        return r.read().decode()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def three(cloud):
    res = cloud.run(count=3, name="trio")
    ids = [i["id"] for i in res["instances"]]
    for iid in ids:
        cloud.wait_state(iid, "running", 60)
    return ids


def test_three_vms_boot_and_serve(cloud, three):
    ips = set()
    for iid in three:
        seen_id, ip = cloud.wait_ready(iid)
        assert seen_id == iid  # the guest read its id from SMBIOS
        inst = cloud.instance(iid)
        assert ip == inst["ip"], "DHCP gave the address the controller allocated"
        assert inst["host_name"] == "node1" and inst["type"] == "t1.nano"
        assert iid in wait_until(lambda: _try_http(ip), 30, f"HTTP from {iid}")
        ips.add(ip)
    assert len(ips) == 3


def _try_http(ip):
    try:
        return http_get(ip, timeout=3)
    except OSError:
        return None


def test_pause_stops_the_guest_and_resume_continues(cloud, three):
    iid = three[0]
    _, ip = cloud.wait_ready(iid)
    cloud.api("POST", f"/v1/instances/{iid}/pause")
    cloud.wait_state(iid, "paused", 20)
    # a paused guest's CPU does not run: it cannot answer a TCP handshake
    with pytest.raises(OSError):
        http_get(ip, timeout=3)
    before = cloud.console_output(iid)
    with pytest.raises(ApiError) as e:
        cloud.api("POST", f"/v1/instances/{iid}/reboot")
    assert e.value.code == "IncorrectInstanceState" and "paused" in e.value.message
    cloud.api("POST", f"/v1/instances/{iid}/resume")
    cloud.wait_state(iid, "running", 20)
    assert iid in wait_until(lambda: _try_http(ip), 30, "HTTP after resume")
    assert cloud.console_output(iid).startswith(before[:1000])


def test_reboot_restarts_the_guest_in_the_same_process(cloud, three):
    iid = three[1]
    cloud.wait_ready(iid)
    pid = cloud.qemu_pid(iid)
    markers = lambda: len(re.findall(r"NUBO-READY " + iid, cloud.console_output(iid)))
    n = markers()
    cloud.api("POST", f"/v1/instances/{iid}/reboot")
    wait_until(lambda: markers() > n, 90, "a second ready marker after reboot", interval=0.2)
    assert cloud.qemu_pid(iid) == pid
    assert cloud.instance(iid)["state"] == "running"


def test_stop_is_an_acpi_shutdown_and_start_boots_again(cloud, three):
    iid = three[2]
    cloud.wait_ready(iid)
    con = ConsoleSession(cloud, iid)
    out, rc = con.run("echo persisted-$((6*7)) > /data/mark && sync && cat /data/mark")
    assert rc == 0 and "persisted-42" in out
    con.close()
    t0 = time.monotonic()
    cloud.api("POST", f"/v1/instances/{iid}/stop")
    cloud.wait_state(iid, "stopped", 40)
    assert time.monotonic() - t0 < 20, "the guest handled ACPI; no hard-stop timeout"
    assert cloud.qemu_pid(iid) is None
    assert "hard stop" not in cloud.instance(iid)["state_reason"]
    assert (cloud.instance_dir(iid) / "exit").read_text().startswith("exited 0")
    with pytest.raises(ApiError) as e:
        cloud.api("POST", f"/v1/instances/{iid}/pause")
    assert e.value.status == 409 and e.value.code == "IncorrectInstanceState"
    booted = len(re.findall("NUBO-READY " + iid, cloud.console_output(iid)))
    cloud.api("POST", f"/v1/instances/{iid}/start")
    cloud.wait_state(iid, "running", 60)
    wait_until(lambda: len(re.findall("NUBO-READY " + iid, cloud.console_output(iid))) > booted,
               90, "ready marker after start")
    con = ConsoleSession(cloud, iid)
    con.wait_prompt()
    out, rc = con.run("cat /data/mark")
    assert "persisted-42" in out, "the disk outlives a stop"
    con.close()


def test_kill9_of_qemu_is_seen_as_stopped(cloud):
    iid = cloud.run(name="victim")["instances"][0]["id"]
    cloud.wait_state(iid, "running", 60)
    pid = cloud.qemu_pid(iid)
    os.kill(pid, signal.SIGKILL)
    inst = cloud.wait_state(iid, "stopped", 10)
    assert "signal 9" in inst["state_reason"]
    # not restarted behind the user's back
    assert cloud.qemu_pid(iid) is None
    cloud.api("DELETE", f"/v1/instances/{iid}")
    cloud.wait_state(iid, "terminated", 30)


def test_guest_poweroff_is_seen_as_stopped(cloud):
    iid = cloud.run(name="selfstop")["instances"][0]["id"]
    cloud.wait_ready(iid)
    con = ConsoleSession(cloud, iid)
    con.send("\npoweroff -f\n")
    cloud.wait_state(iid, "stopped", 20)
    assert cloud.qemu_pid(iid) is None
    cloud.api("DELETE", f"/v1/instances/{iid}")
    cloud.wait_state(iid, "terminated", 30)


def test_terminate_leaves_nothing_behind(cloud):
    iid = cloud.run(name="gone")["instances"][0]["id"]
    cloud.wait_state(iid, "running", 60)
    d = cloud.instance_dir(iid)
    assert (d / "root.qcow2").exists()
    tap = "nb" + iid[2:15]
    assert subprocess.run(["ip", "link", "show", tap], capture_output=True).returncode == 0
    cloud.api("DELETE", f"/v1/instances/{iid}")
    cloud.wait_state(iid, "terminated", 30)
    wait_until(lambda: not d.exists(), 10, "instance dir removal")
    assert subprocess.run(["ip", "link", "show", tap], capture_output=True).returncode != 0
    assert not Path(f"/sys/fs/cgroup/memory/nubo/{iid}").exists()
    assert not any(iid in open(f"/proc/{p}/cmdline").read() for p in cloud.qemu_pids())
    # terminating twice is fine, anything else is not
    assert cloud.api("DELETE", f"/v1/instances/{iid}")["state"] == "terminated"
    with pytest.raises(ApiError) as e:
        cloud.api("POST", f"/v1/instances/{iid}/start")
    assert e.value.code == "IncorrectInstanceState"


def test_disks_are_copy_on_write(cloud, three, tiny_image):
    iid = three[0]
    d = cloud.instance_dir(iid)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U",
                                      str(d / "root.qcow2")], capture_output=True,
                                     check=True).stdout)
    base = Path(info["full-backing-filename"])
    image = cloud.api("GET", "/v1/images/tiny")
    assert base.name == image["sha256"] + ".qcow2"
    before = sha256(base)
    assert before == image["sha256"]
    con = ConsoleSession(cloud, iid)
    out, rc = con.run("dd if=/dev/urandom of=/data/blob bs=1024 count=2048 2>/dev/null; sync; echo ok")
    assert rc == 0
    con.close()
    assert sha256(base) == before, "the base image is never written"
    assert info["virtual-size"] == 1 << 30, "grown to t1.nano's 1 GiB"
    overlay = (d / "root.qcow2").stat().st_size
    assert overlay < 16 << 20 and overlay < base.stat().st_size + (8 << 20)


def test_caps_are_in_force(cloud, three):
    iid = three[0]
    pid = cloud.qemu_pid(iid)
    cpu = Path(f"/sys/fs/cgroup/cpu/nubo/{iid}")
    mem = Path(f"/sys/fs/cgroup/memory/nubo/{iid}")
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == 1 * int((cpu / "cpu.cfs_period_us").read_text())
    limit = int((mem / "memory.limit_in_bytes").read_text())
    assert 128 << 20 < limit <= (128 + 256) << 20
    assert str(pid) in (cpu / "cgroup.procs").read_text().split()
    assert str(pid) in (mem / "cgroup.procs").read_text().split()
    cmd = open(f"/proc/{pid}/cmdline").read().split("\0")
    assert cmd[cmd.index("-smp") + 1].split(",")[0] in ("1", "cpus=1")
    tap = "nb" + iid[2:15]
    qd = subprocess.run(["tc", "qdisc", "show", "dev", tap], capture_output=True, text=True).stdout
    assert "100Mbit" in qd or "100000Kbit" in qd, qd


def test_failed_launches_leave_nothing(cloud):
    before = cloud.api("GET", "/v1/instances?all=1")["instances"]
    with pytest.raises(ApiError) as e:
        cloud.run(type="t9.nope")
    assert e.value.status == 400 and "t9.nope" in e.value.message
    with pytest.raises(ApiError) as e:
        cloud.run(image="no-such-image")
    assert e.value.status == 404 and "no-such-image" in e.value.message
    with pytest.raises(ApiError) as e:
        cloud.run(type="c1.xlarge", count=50)
    assert e.value.code == "InsufficientInstanceCapacity" and "MiB" in e.value.message
    assert cloud.api("GET", "/v1/instances?all=1")["instances"] == before
    assert len(cloud.qemu_pids()) == len([i for i in before if i["state"] in ("running", "paused", "pending")])


def test_corrupt_image_launch_leaves_nothing(cloud, tiny_image, tmp_path):
    # a garbage disk is refused at import
    junk = tmp_path / "junk.vmdk"
    junk.write_bytes(b"KDMV" + os.urandom(4096))
    blob = cloud.upload(junk)
    with pytest.raises(ApiError) as e:
        cloud.api("POST", "/v1/images", {"name": "junk", "disk_blob": blob})
    assert e.value.status == 400
    assert all(i["name"] != "junk" for i in cloud.api("GET", "/v1/images")["images"])
    # an image whose stored file rots is refused by the host's checksum check
    # (a disk of its own, so no host has it cached yet)
    disk = tmp_path / "rotten.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "48M"], check=True)
    img = cloud.api("POST", "/v1/images", {
        "name": "rotten", "disk_blob": cloud.upload(disk),
        "kernel_blob": cloud.upload(tiny_image.vmlinuz),
        "initrd_blob": cloud.upload(tiny_image.initrd), "cmdline": tiny_image.cmdline})
    lib = cloud.library_file(img["sha256"])  # the object's data file in the store
    data = bytearray(lib.read_bytes())
    data[len(data) // 2] ^= 0xFF
    lib.write_bytes(bytes(data))
    iid = cloud.run(image="rotten")["instances"][0]["id"]
    inst = cloud.wait_state(iid, "terminated", 30)
    assert "checksum" in inst["state_reason"]
    assert not cloud.instance_dir(iid).exists()
    assert subprocess.run(["ip", "link", "show", "nb" + iid[2:15]], capture_output=True).returncode != 0
    assert not any(iid in open(f"/proc/{p}/cmdline").read() for p in cloud.qemu_pids())
    assert not list((cloud.agent_state / "images").glob(img["sha256"] + "*"))


def test_client_token_makes_instances_once(cloud):
    a = cloud.run(count=2, client_token="tok-1", name="idem")
    b = cloud.run(count=2, client_token="tok-1", name="idem")
    assert a["reservation_id"] == b["reservation_id"]
    assert [i["id"] for i in a["instances"]] == [i["id"] for i in b["instances"]]
    with pytest.raises(ApiError) as e:
        cloud.run(count=3, client_token="tok-1", name="idem")
    assert e.value.code == "IdempotentParameterMismatch"
    for i in a["instances"]:
        cloud.api("DELETE", f"/v1/instances/{i['id']}")


def test_agent_restart_readopts_running_guests(cloud, three):
    pids = {iid: cloud.qemu_pid(iid) for iid in three}
    cloud.agent.stop()
    assert all(cloud.qemu_pid(iid) == pid for iid, pid in pids.items()), "guests outlive the agent"
    cloud.start_agent()
    for iid in three:
        inst = cloud.instance(iid)
        assert inst["state"] == "running"
        assert cloud.qemu_pid(iid) == pids[iid]
    # and the new agent drives them: pause and resume one
    cloud.api("POST", f"/v1/instances/{three[0]}/pause")
    cloud.wait_state(three[0], "paused", 20)
    cloud.api("POST", f"/v1/instances/{three[0]}/resume")
    cloud.wait_state(three[0], "running", 20)
    con = ConsoleSession(cloud, three[1])
    out, rc = con.run("echo still-here")
    assert "still-here" in out
    con.close()


def test_stop_falls_back_to_a_hard_stop_when_acpi_is_ignored(cloud):
    iid = cloud.run(name="deaf")["instances"][0]["id"]
    cloud.wait_ready(iid)
    con = ConsoleSession(cloud, iid)
    con.wait_prompt()
    out, rc = con.run("killall acpid; sleep 0.2; pidof acpid || echo no-acpid")
    assert "no-acpid" in out
    con.close()
    t0 = time.monotonic()
    cloud.api("POST", f"/v1/instances/{iid}/stop")
    assert cloud.instance(iid)["state"] == "stopping"
    inst = cloud.wait_state(iid, "stopped", 30)
    took = time.monotonic() - t0
    assert took >= 7, "the guest got its stop_timeout (8 s) to shut down"
    assert "hard stop" in inst["state_reason"]
    assert cloud.qemu_pid(iid) is None
    cloud.api("DELETE", f"/v1/instances/{iid}")


def test_forced_stop_skips_acpi(cloud):
    iid = cloud.run(name="forced")["instances"][0]["id"]
    cloud.wait_state(iid, "running", 60)
    pid = cloud.qemu_pid(iid)
    cloud.api("POST", f"/v1/instances/{iid}/stop", {"force": True})
    cloud.wait_state(iid, "stopped", 10)
    assert cloud.qemu_pid(iid) is None and not Path(f"/proc/{pid}").exists()
    cloud.api("POST", f"/v1/instances/{iid}/start")
    cloud.wait_state(iid, "running", 60)
    cloud.api("DELETE", f"/v1/instances/{iid}")
    cloud.wait_state(iid, "terminated", 30)


def test_reused_address_reaches_the_next_guest(cloud):
    """A terminated guest's address goes to the next launch, and that guest
    gets it from DHCP at once (dnsmasq no longer holds the old MAC's lease)."""
    first = cloud.run(name="lease-a")["instances"][0]["id"]
    _, ip = cloud.wait_ready(first)
    assert ip == cloud.instance(first)["ip"]
    cloud.api("DELETE", f"/v1/instances/{first}")
    cloud.wait_state(first, "terminated", 30)
    # launches get the lowest free addresses: make as many as there are free
    # ones below the freed address, plus one, in one call
    held = {i["ip"] for i in cloud.api("GET", "/v1/instances")["instances"]
            if i["state"] != "terminated" and i.get("ip")}
    last = int(ip.rsplit(".", 1)[1])
    prefix = ip.rsplit(".", 1)[0]
    below = [a for a in range(2, last) if f"{prefix}.{a}" not in held]
    made = [i["id"] for i in cloud.run(count=len(below) + 1, name="lease-b")["instances"]]
    second = next((i for i in made if cloud.instance(i)["ip"] == ip), None)
    assert second, f"no launch was given the freed address {ip}"
    seen, got = cloud.wait_ready(second)
    assert seen == second
    assert got == ip, f"the guest on the reused address {ip} got {got} from DHCP"
    assert second in wait_until(lambda: _try_http(ip), 30, "HTTP on the reused address")
    for iid in made:
        cloud.api("DELETE", f"/v1/instances/{iid}")
    for iid in made:
        cloud.wait_state(iid, "terminated", 30)

