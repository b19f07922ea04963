"""The nubo command-line client against real daemons and real tiny guests.

Every test drives the nubo binary (cloud.cli) the way a person or a script
would, and checks what they would: exit codes, tables, --json, messages."""

import hashlib
import json
import os
import re
import select
import subprocess
import time

import pytest

from conftest import BUILD, SAN_ENV, wait_until


def table(text):
    """Rows of a nubo table as dicts keyed by the header's columns."""
    lines = [l for l in text.splitlines() if l.strip()]
    head = re.split(r"\s{2,}", lines[0].strip())
    rows = []
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(head), f"ragged row {line!r} under {lines[0]!r}"
        rows.append(dict(zip(head, cells)))
    return rows


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_version_and_exit_codes(cloud):
    p = cloud.cli("version")
    assert p.stdout.splitlines()[0] == "nubo 0.1.0"
    assert f"nubod 0.1.0 at {cloud.endpoint}" in p.stdout

    p = cloud.cli("show", "i-0123456789abcdef0", check=False)
    assert p.returncode == 4
    assert p.stderr.startswith("error: NotFound: ")

    p = cloud.cli("frobnicate", check=False)
    assert p.returncode == 2 and "unknown command 'frobnicate'" in p.stderr

    p = cloud.cli("run", "tiny", check=False)  # no --type
    assert p.returncode == 2 and "--type is required" in p.stderr and "usage: nubo run" in p.stderr

    p = cloud.cli("--token", "not-a-token", "ls", check=False)
    assert p.returncode == 1 and "error: AuthFailure:" in p.stderr

    dead = "http://127.0.0.1:1"
    p = cloud.cli("--endpoint", dead, "ls", check=False)
    assert p.returncode == 3 and dead in p.stderr

    p = cloud.cli("ls", "--help")
    assert p.stdout.startswith("usage: nubo ls") and "--all" in p.stdout


def test_types(cloud):
    p = cloud.cli("type", "set", "x1.cli", "--vcpus", "1", "--memory", "96", "--disk", "1",
                  "--net", "50", "--price", "0.125")
    assert table(p.stdout) == [{"NAME": "x1.cli", "VCPUS": "1", "MEMORY": "96 MiB",
                                "DISK": "1 GiB", "NET": "50 Mbps", "PRICE": "0.125/h"}]
    rows = {r["NAME"]: r for r in table(cloud.cli("type", "ls").stdout)}
    assert rows["x1.cli"]["MEMORY"] == "96 MiB" and "t1.nano" in rows
    types = json.loads(cloud.cli("--json", "type", "ls").stdout)["types"]
    mine = [t for t in types if t["name"] == "x1.cli"][0]
    assert mine["memory_mb"] == 96 and mine["price_per_hour"] == pytest.approx(0.125)

    p = cloud.cli("type", "set", "x1.cli", "--vcpus", "0", "--memory", "96", "--disk", "1",
                  "--net", "50", "--price", "1", check=False)
    assert p.returncode == 2 and "--vcpus" in p.stderr

    assert cloud.cli("type", "rm", "x1.cli").stdout == "x1.cli  deleted\n"
    p = cloud.cli("type", "rm", "x1.cli", check=False)
    assert p.returncode == 4


def test_hosts(cloud):
    rows = table(cloud.cli("host", "ls").stdout)
    me = [r for r in rows if r["NAME"] == cloud.name]
    assert len(me) == 1
    assert me[0]["STATE"] == "up" and me[0]["ACCEL"] == "tcg"
    assert re.fullmatch(r"\d+/\d+", me[0]["VCPUS"])
    assert re.fullmatch(r"\d+s|\d+m", me[0]["LAST-SEEN"])


def test_image_import_show_rm(cloud, tiny_image, tmp_path):
    # a raw disk (the controller converts it) plus the tiny kernel and initrd
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(8 << 20)
        f.write(b"nubo-cli-test")
    p = cloud.cli("image", "import", str(raw), "--name", "cli-raw", "--os", "busybox",
                  "--release", "9", "--kernel", str(tiny_image.vmlinuz),
                  "--initrd", str(tiny_image.initrd), "--cmdline", "console=ttyS0")
    rows = table(p.stdout)
    assert len(rows) == 1 and rows[0]["NAME"] == "cli-raw"
    assert rows[0]["BOOT"] == "kernel" and rows[0]["SIZE"] == "8 MiB"
    assert rows[0]["ID"].startswith("ami-")
    # not a terminal: no progress bar on stderr
    assert "\r" not in p.stderr and "[#" not in p.stderr

    im = json.loads(cloud.cli("--json", "image", "show", "cli-raw").stdout)
    assert im["format"] == "qcow2" and im["size"] == 8 << 20
    assert im["kernel_sha256"] == sha256(tiny_image.vmlinuz)
    assert im["initrd_sha256"] == sha256(tiny_image.initrd)
    assert im["cmdline"] == "console=ttyS0" and im["os"] == "busybox"
    assert im["id"] in cloud.cli("image", "ls").stdout

    # the name is taken: refused before anything is uploaded
    p = cloud.cli("image", "import", str(raw), "--name", "cli-raw", check=False)
    assert p.returncode == 1 and "Conflict" in p.stderr

    p = cloud.cli("image", "import", str(tmp_path / "missing.qcow2"), "--name", "x", check=False)
    assert p.returncode == 2 and "missing.qcow2" in p.stderr

    assert cloud.cli("image", "rm", im["id"]).returncode == 0
    assert cloud.cli("image", "show", "cli-raw", check=False).returncode == 4


def test_image_build_tiny(cloud):
    p = cloud.cli("image", "build", "tiny", "--name", "tiny-cli", timeout=900)
    rows = table(p.stdout)
    assert rows[0]["NAME"] == "tiny-cli" and rows[0]["BOOT"] == "kernel"
    assert rows[0]["OS"] == "busybox"
    # the builder's progress lines came through as plain lines (no terminal)
    assert re.search(r"^build: 100% ", p.stderr, re.M)
    im = json.loads(cloud.cli("--json", "image", "show", "tiny-cli").stdout)
    assert im["cmdline"] and im["kernel_sha256"] and im["initrd_sha256"]
    cloud.cli("image", "rm", "tiny-cli")


def test_run_wait_ls_show_logs(cloud):
    p = cloud.cli("run", "tiny", "--type", "t1.nano", "--count", "2", "--name", "clitest",
                  "--wait", "--timeout", "120", timeout=180)
    rows = table(p.stdout)
    assert len(rows) == 2
    assert all(r["STATE"] == "running" and r["NAME"] == "clitest" for r in rows)
    ids = [r["ID"] for r in rows]

    listed = {r["ID"]: r for r in table(cloud.cli("ls").stdout)}
    for iid in ids:
        assert listed[iid]["HOST"] == cloud.name and listed[iid]["IMAGE"] == "tiny"
        assert listed[iid]["IP"] == cloud.instance(iid)["ip"]
        assert re.fullmatch(r"\d+[smhd]", listed[iid]["AGE"])

    show = cloud.cli("show", ids[0]).stdout
    assert re.search(rf"^id\s+{ids[0]}$", show, re.M)
    assert re.search(r"^state\s+running$", show, re.M)

    # the console output, through the controller
    out = wait_until(lambda: (lambda o: o if "NUBO-READY" in o else None)(
        cloud.cli("logs", ids[0]).stdout), 90, "NUBO-READY in nubo logs", interval=0.5)
    assert f"NUBO-READY {ids[0]}" in out
    j = json.loads(cloud.cli("--json", "logs", ids[0]).stdout)
    assert j["id"] == ids[0] and "NUBO-READY" in j["output"]

    p = cloud.cli("rm", *ids)
    assert [l.split()[0] for l in p.stdout.splitlines()] == ids


def _read_until(proc, pattern, timeout):
    buf = b""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while not rx.search(buf):
        left = deadline - time.monotonic()
        assert left > 0, f"{pattern!r} not seen; got {buf[-300:]!r}"
        r, _, _ = select.select([proc.stdout], [], [], left)
        if r:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"nubo console ended early; got {buf[-300:]!r}"
            buf += chunk
    return buf


def test_console_piped(cloud):
    iid = cloud.run(name="clicons")["instances"][0]["id"]
    cloud.wait_ready(iid)
    env = dict(os.environ, NUBO_ENDPOINT=cloud.endpoint, NUBO_TOKEN=cloud.token, **SAN_ENV)
    proc = subprocess.Popen([str(BUILD / "src/cli/nubo"), "console", iid],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(b"echo CLI-$((6*7))-$(cat /proc/sys/kernel/hostname)\n")
        proc.stdin.flush()
        _read_until(proc, rb"CLI-42-", 60)
        proc.stdin.close()  # stdin's end, no --linger: nubo leaves at once
        assert proc.wait(15) == 0
        assert f"Connected to {iid} (Ctrl-] to detach)" in proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    cloud.cli("rm", iid)


def test_actions_and_terminated_listing(cloud):
    iid = cloud.run(name="cliact")["instances"][0]["id"]
    cloud.wait_state(iid, "running", 60)

    p = cloud.cli("stop", "--force", iid)
    assert p.stdout.split()[0] == iid and p.stdout.split()[1] in ("stopping", "stopped")
    cloud.wait_state(iid, "stopped", 60)
    listed = {r["ID"]: r for r in table(cloud.cli("ls").stdout)}
    assert listed[iid]["STATE"] == "stopped"  # stopped ones are listed
    p = cloud.cli("--json", "start", iid)
    assert json.loads(p.stdout)["id"] == iid
    cloud.wait_state(iid, "running", 60)

    # several ids: one unknown -> the known one is still acted on, exit 4
    p = cloud.cli("rm", iid, "i-0000000000000000f", check=False)
    assert p.returncode == 4
    assert p.stdout.split()[0] == iid
    assert "error: NotFound:" in p.stderr
    cloud.wait_state(iid, "terminated", 60)

    assert iid not in cloud.cli("ls").stdout
    gone = {r["ID"]: r for r in table(cloud.cli("ls", "--all").stdout)}
    assert gone[iid]["STATE"] == "terminated"
    assert iid in [i["id"] for i in json.loads(cloud.cli("--json", "ls", "--all").stdout)["instances"]]
