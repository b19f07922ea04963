"""The README's first command: scripts/up.sh brings a cloud up, prints how to
launch a VM, and `scripts/up.sh stop` takes down all it started. Also
scripts/deps.sh, quiet when nothing is missing."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

import tinyimage
from conftest import BUILD, REPO, SAN_ENV, SAN_RE, wait_until


def alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def qemus_of(state):
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmd.split(b"\0")[0] and str(state).encode() in cmd:
                found.append(int(p.name))
    return found


@pytest.mark.own_netns  # its bridge (nbbr0) and NAT table are the namespace's
def test_up_then_run_then_stop(tiny_image):
    root = Path(tempfile.mkdtemp(prefix="nbu-", dir="/tmp"))  # short: guests' sockets
    state = root / "state"
    port, aport, s3port = (tinyimage.free_port() for _ in range(3))
    env = dict(os.environ, NUBO_STATE_DIR=str(state), NUBO_PORT=str(port),
               NUBO_AGENT_PORT=str(aport), NUBO_S3_PORT=str(s3port), NUBO_BUILD=str(BUILD),
               NUBO_CONFIG=str(root / "cli.conf"), HOME=str(root), **SAN_ENV)
    for k in ("NUBO_ENDPOINT", "NUBO_TOKEN", "NUBO_ACCESS_KEY_ID", "NUBO_SECRET_ACCESS_KEY"):
        env.pop(k, None)
    up = lambda *a: subprocess.run([str(REPO / "scripts/up.sh"), *a], env=env, cwd=root,
                                   capture_output=True, text=True, timeout=900)
    nubo = lambda *a: subprocess.run([str(BUILD / "src/cli/nubo"), *a], env=env,
                                     capture_output=True, text=True, timeout=300)
    pids = {}
    stopped = False
    try:
        p = up()
        assert p.returncode == 0, p.stdout + p.stderr
        assert f"nubo is up: API http://127.0.0.1:{port}" in p.stdout
        assert re.search(r"nubo run tiny --type t1\.nano --count 3 --wait", p.stdout), p.stdout
        assert "Ctrl-] detaches" in p.stdout and "make down" in p.stdout
        assert (root / "cli.conf").read_text().startswith(f"endpoint = http://127.0.0.1:{port}\n")
        assert not (root / ".config/nubo/config").exists(), "NUBO_CONFIG is where it writes"
        pids = {d: int((state / "run" / f"{d}.pid").read_text()) for d in ("nubod", "nubo-agent")}
        assert all(alive(pid) for pid in pids.values())
        # the ports it was given, not the defaults
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        for want in (port, aport, s3port):
            assert f"127.0.0.1:{want} " in listening, listening

        p = nubo("run", "tiny", "--type", "t1.nano", "--wait", "--timeout", "180")
        assert p.returncode == 0, p.stderr
        iid = p.stdout.split("\n")[1].split()[0]
        assert iid.startswith("i-") and "running" in p.stdout
        p = nubo("ls")
        assert p.returncode == 0 and iid in p.stdout and "running" in p.stdout
        assert qemus_of(state)
        assert subprocess.run(["ip", "link", "show", "nbbr0"], capture_output=True).returncode == 0

        p = up("stop")
        stopped = True
        assert p.returncode == 0, p.stdout + p.stderr
        assert "nubo: stopped" in p.stdout
        assert not any(alive(pid) for pid in pids.values()), "nubod or the agent still runs"
        wait_until(lambda: not qemus_of(state), 20, "the guests' QEMUs to end")
        assert subprocess.run(["ip", "link", "show", "nbbr0"], capture_output=True).returncode != 0
        assert subprocess.run(["nft", "list", "table", "inet", "nubo"],
                              capture_output=True).returncode != 0
        assert not Path(f"/sys/fs/cgroup/memory/nubo/{iid}").exists()
        assert not list((state / "run").glob("*.pid"))
        for log in ("nubod.log", "agent.log"):
            text = (state / "log" / log).read_text(errors="replace")
            assert not SAN_RE.search(text), f"{log}: sanitizer report"
    finally:
        if not stopped:
            up("stop")
        for pid in list(pids.values()) + qemus_of(state):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)


def test_deps_is_quiet_when_nothing_is_missing():
    p = subprocess.run([str(REPO / "scripts/deps.sh"), "all"], capture_output=True, text=True,
                       timeout=300)
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
