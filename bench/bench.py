#!/usr/bin/python3
"""nubo benchmarks, run by bench/run (`make bench`).

In one run, against a real nubod + nubo-agent (the e2e harness's Cloud, in a
network namespace of this process's own) and a bare QEMU peer started in the
same run:

  1. launch latency: 20 launches one at a time (each terminated after), from
     POST /v1/instances to QEMU's pidfile, to the API state "running" and to
     the guest's "NUBO-READY <id>" console line (read from the instance's
     console socket as it arrives); the peer is the same image under a bare
     qemu-system-x86_64 (tinyimage.boot_bare: same memory, vCPUs, CPU model,
     accel tcg, machine pc, a tap on a bridge with a DHCP server and a
     metadata service of its own: PeerMetadata), 20 times, each right after a
     nubo launch. Before those, 6 more launches
     whose guests hand their DHCP lease back before they are terminated (the
     workaround for a stale-lease bug, see docs/performance.md), with 6 peers;
  3. clone: a 64 MiB and a 4 GiB base image, from the API call until the
     overlay root.qcow2 exists and until QEMU runs;
  2. burst: 20 instances in one call, until all run and all are ready; the
     peer is 20 bare QEMUs started at once;
  4. memory: nubod, nubo-agent, nubo-shim and QEMU RSS/PSS with the 20
     guests of the burst running, and the daemons' CPU use meanwhile.

Results are printed as Markdown tables; --json FILE also keeps the raw data.

usage: bench.py --work DIR [--launches N] [--released N] [--burst N]
                  [--clone-reps N] [--nonet N] [--budget S] [--json FILE]
       bench.py --sweep DIR     (kill what is left in this network namespace,
                                 remove the cgroups of DIR's instances)
"""

import argparse
import datetime
import http.client
import http.server
import json
import os
import platform
import re
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
E2E = REPO / "tests" / "e2e"
CG_CONTROLLERS = ("cpu", "memory", "pids")
CG_ROOT = Path("/sys/fs/cgroup")
LAUNCH_TIMEOUT = 90  # seconds one launch may take to its ready marker
BURST_TIMEOUT = 240
GOAL_P50_MS = 50.0
PEER_BRIDGE, PEER_NET, PEER_GW = "nbbench0", "10.214.0", "10.214.0.1"
TICK_FILE = 0.001  # polling period of files (pidfile, overlay, socket)
TICK_API = 0.005   # polling period of the instance's API state


class Aborted(Exception):
    pass


def mono():
    return time.monotonic()


def log(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------- statistics

def pct(values, p):
    """Nearest-rank percentile (p99 of 20 samples is the largest)."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(1, -(-len(v) * p // 100))  # ceil
    return v[int(k) - 1]


def ms(x):
    return "n/a" if x is None or x != x else f"{x * 1000:.0f}"


def ratio(a, b):
    return "n/a" if not b or a != a or b != b else f"{a / b:.2f}x"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------- processes

def proc_mem(pid):
    """(VmRSS, Pss) in KiB of pid, None when it is gone."""
    try:
        rss = pss = None
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
        return rss, pss
    except (OSError, ValueError):
        return None


def proc_cpu_s(pid):
    """utime + stime of pid in seconds (its threads included)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def cpu_throttling(iid):
    """CFS throttling of an instance's cpu cgroup so far (cgroup v1):
    {"throttled_s", "nr_throttled", "nr_periods"}, empty when unreadable."""
    try:
        st = dict(l.split() for l in (CG_ROOT / "cpu" / "nubo" / iid / "cpu.stat")
                  .read_text().splitlines() if l.strip())
        return {"throttled_s": int(st["throttled_time"]) / 1e9,
                "nr_throttled": int(st["nr_throttled"]), "nr_periods": int(st["nr_periods"])}
    except (OSError, ValueError, KeyError):
        return {}


CG_FILES = (("cpu", "cpu.cfs_period_us"), ("cpu", "cpu.cfs_quota_us"), ("cpu", "cpu.shares"),
            ("memory", "memory.limit_in_bytes"), ("pids", "pids.max"))
# nubo's settings for a 1-vCPU, 128 MiB guest (agent/cgroup/cgroup.h), used
# for the peers when a nubo instance's group cannot be read
CG_DEFAULTS = {"cpu.cfs_period_us": "100000", "cpu.cfs_quota_us": "100000",
               "cpu.shares": "1024", "memory.limit_in_bytes": str(256 << 20), "pids.max": "1024"}


def cgroup_settings(name):
    """The limits of nubo/<name> (cgroup v1), {} when unreadable."""
    out = {}
    for ctl, f in CG_FILES:
        try:
            out[f] = (CG_ROOT / ctl / "nubo" / name / f).read_text().strip()
        except OSError:
            pass
    return out


def netns_ino(pid="self"):
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def in_private_netns():
    """True when this process runs in a network namespace other than the
    machine's (bench/run passes the machine's in NUBO_BENCH_HOST_NETNS)."""
    host = os.environ.get("NUBO_BENCH_HOST_NETNS", "")
    return host.isdigit() and int(host) != netns_ino()


def sweep(work):
    """Kills every process left in this (private) network namespace but this
    one and its parent, then removes the cgroups of the instances under
    work. Run by bench/run from inside the namespace after the benchmark."""
    work = Path(work)
    me, parent = os.getpid(), os.getppid()
    mine = netns_ino()
    if not in_private_netns():
        print("bench sweep: not in a private network namespace; nothing killed",
              file=sys.stderr)
        return 1
    left = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) in (me, parent):
            continue
        try:
            if netns_ino(p.name) == mine:
                left.append(int(p.name))
        except OSError:
            pass
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if left:
        print(f"bench sweep: killed {len(left)} leftover process(es)", file=sys.stderr)
    deadline = mono() + 10
    while left and mono() < deadline:
        left = [p for p in left if Path(f"/proc/{p}").exists()]
        time.sleep(0.02)  # waiting for killed processes to be reaped
    ids = set()
    for d in (work / "cloud" / "agent" / "instances",):
        if d.is_dir():
            ids |= {p.name for p in d.iterdir() if p.name.startswith("i-")}
    for ctl in CG_CONTROLLERS:  # the peers' groups (Bench.peer_cgroup)
        ids |= {p.name for p in (CG_ROOT / ctl / "nubo").glob(f"nbbench-{mine}-*")}
    ids_file = work / "instance-ids"
    if ids_file.exists():
        ids |= set(ids_file.read_text().split())
    removed = 0
    for ctl in CG_CONTROLLERS:
        for i in ids:
            d = CG_ROOT / ctl / "nubo" / i
            if d.exists():
                try:
                    d.rmdir()
                    removed += 1
                except OSError as e:
                    print(f"bench sweep: cannot remove {d}: {e}", file=sys.stderr)
    made = work / "cgroup-parents-made"
    if made.exists():
        for line in made.read_text().split():
            try:
                Path(line).rmdir()
            except OSError:
                pass  # another user of the hierarchy put a group in it meanwhile
    if removed:
        print(f"bench sweep: removed {removed} leftover cgroup(s)", file=sys.stderr)
    return 0


class LoadSampler:
    """Samples, every 2 s, the load average and how many QEMU processes of
    others (outside this network namespace) run: the noise of a shared
    machine, reported per section."""

    def __init__(self):
        self.samples = []  # (monotonic, load1, foreign QEMUs)
        self.stop = threading.Event()
        self.mine = netns_ino()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def foreign_qemus(self):
        n = 0
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                if (p / "comm").read_text().startswith("qemu-system") and \
                        netns_ino(p.name) != self.mine:
                    n += 1
            except OSError:
                pass
        return n

    def run(self):
        while not self.stop.is_set():
            try:
                load = float(Path("/proc/loadavg").read_text().split()[0])
            except (OSError, ValueError):
                load = float("nan")
            self.samples.append((mono(), load, self.foreign_qemus()))
            self.stop.wait(2.0)

    def since(self, t0):
        """'load a-b, others' QEMUs c-d' over the samples after t0."""
        v = [x for x in self.samples if x[0] >= t0] or self.samples[-1:]
        if not v:
            return {}
        return {"load1_min": min(x[1] for x in v), "load1_max": max(x[1] for x in v),
                "other_qemus_min": min(x[2] for x in v), "other_qemus_max": max(x[2] for x in v)}

    def describe(self, t0):
        d = self.since(t0)
        if not d:
            return ""
        return (f"machine noise during this section: load average {d['load1_min']:.1f}-"
                f"{d['load1_max']:.1f}, other users' QEMUs running {d['other_qemus_min']}-"
                f"{d['other_qemus_max']}")

    def close(self):
        self.stop.set()
        self.thread.join(5)


# ---------------------------------------------------------------- API polling

class Poller:
    """A keep-alive HTTP connection to nubod for fine-grained state polls."""

    def __init__(self, cloud):
        self.cloud = cloud
        self.conn = None

    def get(self, path):
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.cloud.port,
                                                           timeout=30)
                self.conn.request("GET", path,
                                  headers={"Authorization": f"Bearer {self.cloud.token}"})
                r = self.conn.getresponse()
                body = r.read()
                if r.status != 200:
                    raise RuntimeError(f"GET {path}: {r.status} {body[:200]!r}")
                return json.loads(body)
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt:
                    raise

    def state(self, iid):
        return self.get(f"/v1/instances/{iid}")["state"]

    def states(self):
        return {i["id"]: i["state"] for i in self.get("/v1/instances")["instances"]}

    def close(self):
        if self.conn:
            self.conn.close()
        self.conn = None


def ready_re(iid):
    return re.compile(rb"NUBO-READY " + re.escape(iid.encode()) + rb" ip=(\S+)\r?\n")


def try_connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        s.setblocking(False)
        return s
    except OSError:
        s.close()
        return None


# ---------------------------------------------------------------- the benchmark

class PeerMetadata:
    """The bare peers' metadata service at 169.254.169.254:80 on their
    bridge, answering what the tiny image asks (an IMDSv2 token, then
    meta-data/instance-id, local-hostname, a key and user-data, the last two
    404 as for an instance with neither), so that both guests take the same
    boot path: without one a peer's guest waits up to 9 s for the service."""
    ADDR = "169.254.169.254"

    def __init__(self, ids):
        self.ids = ids  # guest IPv4 -> instance id

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def reply(self, code, body=b""):
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self):
                if self.path == "/latest/api/token":
                    self.reply(200, b"bench-peer-token")
                else:
                    self.reply(404)

            def do_GET(self):
                iid = outer.ids.get(self.client_address[0], "")
                ip = self.client_address[0]
                answers = {"/latest/meta-data/instance-id": iid,
                           "/latest/meta-data/local-hostname":
                               "ip-" + ip.replace(".", "-") + ".bench.internal"}
                if self.path in answers and iid:
                    self.reply(200, answers[self.path].encode())
                else:
                    self.reply(404)

        subprocess.run(["ip", "addr", "add", f"{self.ADDR}/32", "dev", "lo"],
                       check=True, capture_output=True)
        self.httpd = http.server.ThreadingHTTPServer((self.ADDR, 80), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        subprocess.run(["ip", "addr", "del", f"{self.ADDR}/32", "dev", "lo"],
                       capture_output=True)


class Bench:
    def __init__(self, args, conftest, tinyimage):
        self.args = args
        self.ct = conftest
        self.ti = tinyimage
        self.work = Path(args.work).resolve()
        self.results = {}
        self.cloud = None
        self.poll = None
        self.img = None
        self.peer_dnsmasq = None
        self.peer_md = None
        self.peer_ids = {}  # a bare peer's IPv4 -> its instance id
        self.peer_taps = []
        self.bare = []  # BareVMs alive
        self.peer_cg = dict(CG_DEFAULTS)  # replaced by a real instance's limits
        self.peer_groups = {}  # id(BareVM) -> cgroup name
        self.ids = []
        self.t_start = mono()
        self.load = LoadSampler()

    # -- bookkeeping --
    def remember(self, iid):
        self.ids.append(iid)
        with open(self.work / "instance-ids", "a") as f:
            f.write(iid + "\n")

    def check_budget(self):
        if mono() - self.t_start > self.args.budget:
            raise Aborted(f"time budget of {self.args.budget}s exceeded")

    # -- setup --
    def note_cgroup_parents(self):
        made = []
        for ctl in CG_CONTROLLERS:
            d = CG_ROOT / ctl / "nubo"
            if (CG_ROOT / ctl).is_dir() and not d.exists():
                made.append(str(d))
        (self.work / "cgroup-parents-made").write_text("\n".join(made) + "\n")

    def machine(self):
        cpu = "?"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        q = subprocess.run([self.ti.QEMU, "--version"], capture_output=True, text=True)
        git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        load = Path("/proc/loadavg").read_text().split()[:3]
        return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kb / 2**20, 1),
                "kernel": platform.release(), "qemu": q.stdout.splitlines()[0] if q.stdout else "?",
                "commit": git, "build": str(self.ct.BUILD), "loadavg_at_start": " ".join(load)}

    def start(self):
        self.work.mkdir(parents=True, exist_ok=True)
        self.note_cgroup_parents()
        m = self.machine()
        self.results["machine"] = m
        log(f"# nubo benchmarks\n\n{m['date']}; {m['cpu']}, {m['cores']} cores, "
            f"{m['mem_gib']} GiB; Linux {m['kernel']}; {m['qemu']}; nubo {m['commit']} "
            f"({m['build']}); load average at start {m['loadavg_at_start']}\n")
        self.img = self.ti.build_tiny()
        # The agent offers more vCPUs than the machine has (overcommit) so a
        # burst of 20 one-vCPU instances fits.
        # vpc_keep: the agent's default (the harness removes a VPC's
        # namespace with its last instance; a user's agent keeps it 60 s)
        self.cloud = self.ct.Cloud(self.work / "cloud", agent_extra=[
            "-s", f"vcpus={max(24, self.args.burst + 4)}", "-s", "vpc_keep=60"])
        self.cloud.start()
        self.cloud.import_tiny(self.img)
        self.poll = Poller(self.cloud)
        self.start_peer_net()

    def start_peer_net(self):
        """A bridge, taps and a DHCP server (fixed leases) for the bare peers,
        like the agent's: the guest takes the same boot path under both."""
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "link", "add", PEER_BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{PEER_GW}/24", "dev", PEER_BRIDGE)
        run("ip", "link", "set", PEER_BRIDGE, "up")
        n = max(self.args.burst, 1)
        hosts = []
        for k in range(n):
            tap = f"nbbt{k}"
            run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
            run("ip", "link", "set", tap, "master", PEER_BRIDGE, "up")
            self.peer_taps.append(tap)
            hosts.append(f"--dhcp-host={self.peer_mac(k)},{PEER_NET}.{k + 2}")
        d = self.work / "peer-net"
        d.mkdir(exist_ok=True)
        err = open(d / "dnsmasq.err", "wb")
        self.peer_dnsmasq = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
             f"--interface={PEER_BRIDGE}", "--bind-interfaces", "--except-interface=lo",
             "--user=root", f"--dhcp-range={PEER_NET}.0,static,255.255.255.0,1h",
             f"--dhcp-leasefile={d}/leases", f"--pid-file={d}/pid", "--dhcp-authoritative",
             f"--log-facility={d}/dnsmasq.log", "--log-dhcp"] + hosts,
            stdout=subprocess.DEVNULL, stderr=err)
        err.close()
        self.ct.wait_until(lambda: (d / "pid").exists() or self.peer_dnsmasq.poll() is not None,
                           10, "the peer's dnsmasq")
        if self.peer_dnsmasq.poll() is not None:
            raise RuntimeError("the peer's dnsmasq failed: " +
                               (d / "dnsmasq.err").read_text(errors="replace")[-2000:])
        self.peer_md = PeerMetadata(self.peer_ids)

    @staticmethod
    def peer_mac(k):
        return f"52:54:00:be:{k // 256:02x}:{k % 256:02x}"

    # -- one nubo launch --
    def watch_start(self, iid, t0, deadline, api=True):
        """Polls the instance dir and the API until QEMU's pidfile, the
        overlay and the console socket exist and the API says running.
        Returns (marks, console socket)."""
        d = self.cloud.instance_dir(iid)
        marks, sock, next_api = {}, None, 0.0
        while True:
            now = mono()
            if "disk" not in marks and (d / "root.qcow2").exists():
                marks["disk"] = now - t0
            if "pid" not in marks and (d / "qemu.pid").exists():
                marks["pid"] = now - t0
                try:
                    marks["disk_bytes"] = (d / "root.qcow2").stat().st_size
                except OSError:
                    pass
            if sock is None:
                sock = try_connect(d / "console.sock")
                if sock:
                    marks["console"] = mono() - t0
            if api and "running" not in marks and now >= next_api:
                st = self.poll.state(iid)
                if st == "running":
                    marks["running"] = mono() - t0
                elif st in ("stopped", "terminated", "shutting-down"):
                    raise RuntimeError(f"{iid} went {st}: {self.cloud.instance(iid)}")
                next_api = mono() + TICK_API
            if {"disk", "pid"} <= marks.keys() and sock and (not api or "running" in marks):
                return marks, sock
            if now > deadline:
                raise TimeoutError(f"{iid}: start not seen in time; seen {marks}")
            time.sleep(TICK_FILE)

    @staticmethod
    def expect(sock, rx, deadline, buf):
        """Reads sock into buf until rx matches; consumes buf up to the
        match and returns it. TimeoutError at deadline, EOFError when the
        console closes."""
        while True:
            m = rx.search(bytes(buf))  # a copy: the match outlives the del below
            if m:
                del buf[:m.end()]
                return m
            left = deadline - mono()
            if left <= 0:
                raise TimeoutError(f"{rx.pattern!r} not seen; console tail {bytes(buf[-300:])!r}")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise EOFError(f"console closed before {rx.pattern!r}")
            buf += chunk

    def wait_marker(self, iid, sock, t0, deadline):
        """Reads the console socket until the ready marker; returns (seconds
        since t0, ip)."""
        rx = ready_re(iid)
        try:
            m = self.expect(sock, rx, deadline, bytearray())
        except EOFError:
            # the shim went away: the log file has what it saw
            log_path = self.cloud.instance_dir(iid) / "console.log"
            m = rx.search(log_path.read_bytes()) if log_path.exists() else None
            if not m:
                raise
        return mono() - t0, m.group(1).decode()

    def release_lease(self, iid, sock, mac, deadline):
        """Has the guest give its DHCP lease back (busybox udhcpc does on
        SIGUSR2), as a guest OS may on shutdown, and waits until nubo's
        dnsmasq dropped it from its lease file. The workaround for the stale
        lease finding (see docs/performance.md)."""
        buf = bytearray()
        while True:  # the console shell starts just after the marker
            sock.sendall(b"\n")
            try:
                self.expect(sock, re.compile(rb":~# "), min(deadline, mono() + 1), buf)
                break
            except TimeoutError:
                if mono() > deadline:
                    raise
        sock.sendall(b"kill -USR2 $(pidof udhcpc); echo released-$((6*7))\n")
        self.expect(sock, re.compile(rb"released-42"), deadline, buf)
        leases = self.cloud.agent_state / "net" / "dnsmasq.leases"
        self.ct.wait_until(lambda: mac.lower() not in leases.read_text().lower(),
                           max(0.1, deadline - mono()), f"dnsmasq to drop the lease of {iid}",
                           interval=0.005)

    def terminate(self, iid, timeout=60):
        t0 = mono()
        self.cloud.api("DELETE", f"/v1/instances/{iid}")
        deadline = t0 + timeout
        while self.poll.state(iid) != "terminated":
            if mono() > deadline:
                raise TimeoutError(f"{iid} not terminated after {timeout}s")
            time.sleep(0.01)
        return mono() - t0

    def nubo_launch(self, type_="t1.nano", image="tiny", marker=True, release=False):
        t0 = mono()
        r = self.cloud.run(image=image, type=type_)
        t_api = mono() - t0
        inst = r["instances"][0]
        iid = inst["id"]
        self.remember(iid)
        deadline = t0 + LAUNCH_TIMEOUT
        sock = None
        try:
            marks, sock = self.watch_start(iid, t0, deadline)
            marks["api"] = t_api
            if marker:
                marks["ready"], marks["ip"] = self.wait_marker(iid, sock, t0, deadline)
                marks.update(cpu_throttling(iid))
            if type_ == "t1.nano" and not self.results.get("peer_cgroup"):
                got = cgroup_settings(iid)
                if got:
                    self.peer_cg = got
                self.results["peer_cgroup"] = self.peer_cg
            if release and marks["ip"] != "none":
                self.release_lease(iid, sock, inst["mac"], mono() + 30)
        finally:
            if sock:
                sock.close()
            marks_term = self.terminate(iid)
        marks["terminate"] = marks_term
        marks["id"] = iid
        return marks

    # -- one bare launch --
    def bare_start(self, k, slot, net=True):
        iid = f"i-bbbbbbbbbb{k:07x}"
        wd = self.work / "bare" / f"{k}"
        extra = ["-cpu", "Nehalem", "-pidfile", str(wd / "qemu.pid")]
        if net:
            self.peer_ids[f"{PEER_NET}.{slot + 2}"] = iid
            extra += ["-netdev", f"tap,id=net0,ifname={self.peer_taps[slot]},script=no,"
                      "downscript=no,vhost=off",
                      "-device", f"virtio-net-pci,netdev=net0,mac={self.peer_mac(slot)}"]
        wd.mkdir(parents=True, exist_ok=True)
        (wd / "qemu.pid").unlink(missing_ok=True)
        vm = self.ti.boot_bare(self.img.dir, iid, wd, memory_mb=128, vcpus=1,
                               accel="tcg,tb-size=64", machine="pc", net=None,
                               extra_args=extra)
        self.bare.append(vm)
        self.peer_cgroup(vm, slot if net else "nonet")
        return vm

    @staticmethod
    def bare_check(vm, mk):
        """One look at a bare QEMU: notes in mk when its pidfile exists and
        when its QMP first answers "running" (seconds since its exec)."""
        if "pid" not in mk and (vm.workdir / "qemu.pid").exists():
            mk["pid"] = mono() - vm.started
        if "running" not in mk and vm.qmp_path.exists():
            try:
                if vm.qmp("query-status").get("running"):
                    mk["running"] = mono() - vm.started
            except (OSError, EOFError, RuntimeError, ValueError):
                pass
        if vm.proc.poll() is not None:
            raise RuntimeError(f"bare QEMU exited: {vm.stderr()[-1000:]}")
        return {"pid", "running"} <= mk.keys()

    def bare_watch(self, vms, deadline):
        """Polls every VM of vms until its pidfile exists and its QMP answers
        "running"; returns the marks of each."""
        marks = [{} for _ in vms]
        while True:
            if all([self.bare_check(vm, mk) for vm, mk in zip(vms, marks)]):
                return marks
            if mono() > deadline:
                raise TimeoutError(f"bare QEMU not up in time; seen {marks}")
            time.sleep(TICK_FILE)

    def bare_burst(self, n, deadline):
        """Starts n bare QEMUs one right after the other while a thread
        watches the ones already started, so each is timed as it comes up
        (not after the last start). Returns (vms, marks)."""
        vms, marks, err = [], [], []
        lock = threading.Lock()
        started = threading.Event()

        def watch():
            try:
                while True:
                    last = started.is_set()  # before the snapshot: no start is missed
                    with lock:
                        cur = list(zip(vms, marks))
                    done = all([self.bare_check(vm, mk) for vm, mk in cur])
                    if done and last:
                        return
                    if mono() > deadline:
                        raise TimeoutError(f"bare QEMUs not up in time; seen {marks}")
                    time.sleep(TICK_FILE)
            except Exception as e:  # handed to the caller
                err.append(e)
        th = threading.Thread(target=watch, daemon=True)
        th.start()
        try:
            for k in range(n):
                vm = self.bare_start(2000 + k, k)
                with lock:
                    vms.append(vm)
                    marks.append({})
        finally:
            started.set()
            th.join(max(0.0, deadline - mono()) + 5)
        if err:
            raise err[0]
        return vms, marks

    def bare_ready(self, vms, deadline):
        """Waits for every VM's ready marker, each on a thread of its own so
        each arrival is timed as it happens; returns [(seconds since its
        exec, ip)]."""
        out = [None] * len(vms)

        def wait(k, vm):
            try:
                m = vm.wait_for(self.ti.READY_RE, max(0.0, deadline - mono()))
                out[k] = (mono() - vm.started, m.group(2).decode())
            except Exception as e:  # reported below
                out[k] = e
        threads = [threading.Thread(target=wait, args=(k, vm), daemon=True)
                   for k, vm in enumerate(vms)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline - mono()) + 5)
        for k, r in enumerate(out):
            if not isinstance(r, tuple):
                raise RuntimeError(f"bare guest {vms[k].instance_id}: {r!r}")
        return out

    def peer_cgroup(self, vm, slot):
        """Puts a bare QEMU where nubo puts its guests: a group of its own
        under nubo/ in each controller, with the limits nubo gave its own
        instance, so both compete for the CPU on the same footing (on a shared
        machine other nubo guests sit in the same parent group)."""
        name = f"nbbench-{netns_ino()}-{slot}"
        for ctl in CG_CONTROLLERS:
            d = CG_ROOT / ctl / "nubo" / name
            if not (CG_ROOT / ctl).is_dir():
                continue
            d.mkdir(parents=True, exist_ok=True)
            for c, f in CG_FILES:
                if c == ctl and f in self.peer_cg:
                    (d / f).write_text(self.peer_cg[f])
            (d / "cgroup.procs").write_text(str(vm.proc.pid))
        self.peer_groups[id(vm)] = name

    def bare_close(self, vm):
        vm.close()
        if vm in self.bare:
            self.bare.remove(vm)
        name = self.peer_groups.pop(id(vm), None)
        if name:
            for ctl in CG_CONTROLLERS:
                d = CG_ROOT / ctl / "nubo" / name
                if d.exists():
                    self.ct.wait_until(lambda: self.ct._try_rmdir(d), 10, f"removal of {d}",
                                       interval=0.01)

    def bare_launch(self, k, net=True):
        vm = self.bare_start(k, 0, net)
        try:
            deadline = vm.started + LAUNCH_TIMEOUT
            marks = self.bare_watch([vm], deadline)[0]
            marks["ready"], marks["ip"] = self.bare_ready([vm], deadline)[0]
        finally:
            self.bare_close(vm)
        return marks

    # -- 1. launch latency --
    def launch_series(self, label, n, first_bare, release):
        nubo, bare = [], []
        for k in range(n):
            self.check_budget()
            nubo.append(self.nubo_launch(release=release))
            bare.append(self.bare_launch(first_bare + k))
            a, b = nubo[-1], bare[-1]
            log(f"  {label} {k + 1:2d}/{n}: nubo pid {ms(a['pid'])} running {ms(a['running'])} "
                f"ready {ms(a['ready'])} ms (ip={a['ip']}); bare pid {ms(b['pid'])} "
                f"running {ms(b['running'])} ready {ms(b['ready'])} ms (ip={b['ip']})")
        return nubo, bare

    @staticmethod
    def compare_rows(nubo, bare, keys):
        rows = []
        for key, what in keys:
            a = [x[key] for x in nubo]
            b = [x[key] for x in bare]
            for p in (50, 99):
                rows.append([what, f"p{p}", ms(pct(a, p)), ms(pct(b, p)),
                             ms(pct(a, p) - pct(b, p)), ratio(pct(a, p), pct(b, p))])
        return rows

    def bench_launch(self):
        n, nr = self.args.launches, self.args.released
        log("## 1. Launch latency (one at a time, each terminated after; a bare QEMU boot "
            "after each nubo launch)\n")
        # The first launch on a host also fetches the image into the agent's
        # cache: measured once, apart (section 3 measures that path).
        first = self.nubo_launch(release=True)
        log(f"  first launch on this host (cold image cache): pid {ms(first['pid'])} running "
            f"{ms(first['running'])} ready {ms(first['ready'])} ms (ip={first['ip']})")
        # With each guest handing its DHCP lease back before it is
        # terminated, the next guest gets a lease (finding 1); these come
        # first because an unreleased lease blocks its address for an hour.
        rel_nubo, rel_bare = self.launch_series("released", nr, 100, True)
        nubo, bare = self.launch_series("as is", n, 0, False)
        nonet = []
        for k in range(self.args.nonet):
            self.check_budget()
            nonet.append(self.bare_launch(1000 + k, net=False))
        self.results["launch"] = {"first": first, "nubo": nubo, "bare": bare,
                                  "nubo_released": rel_nubo, "bare_released": rel_bare,
                                  "bare_nonet": nonet}
        keys = (("pid", "to QEMU's pidfile"),
                ("running", "to running (nubo: API state; bare: QMP answers)"),
                ("ready", "to ready marker NUBO-READY"))
        head = ["from API call (nubo) / exec (bare)", "", "nubo ms", "bare QEMU ms",
                "nubo - bare ms", "ratio"]
        log(f"\nnubo as it is, {n} launches, {n} bare peers:\n")
        log(table(head, self.compare_rows(nubo, bare, keys)))
        with_ip = [x["ready"] for x in nubo if x["ip"] != "none"]
        no_ip = [x["ready"] for x in nubo if x["ip"] == "none"]
        log(f"\nnubo guests that got a DHCP lease: {len(with_ip)}/{n}; "
            f"without one: {len(no_ip)} (ready p50 {ms(pct(no_ip, 50))} ms); bare peers with a "
            f"lease: {sum(1 for x in bare if x['ip'] != 'none')}/{n}")
        if nr:
            log(f"\neach guest released its DHCP lease before it was terminated "
                f"(workaround for finding 1), {nr} launches, {nr} bare peers:\n")
            log(table(head, self.compare_rows(rel_nubo, rel_bare, keys)))
            log(f"\nnubo guests that got a DHCP lease: "
                f"{sum(1 for x in rel_nubo if x['ip'] != 'none')}/{nr}")
        both_n, both_b = nubo + rel_nubo, bare + rel_bare
        rows = []
        for key, what, bkey in (("api", "POST /v1/instances answered", None),
                                ("disk", "overlay root.qcow2 appears", None),
                                ("console", "console socket (shim up: disk, cgroup, tap done)",
                                 None),
                                ("pid", "QEMU's pidfile", "pid"),
                                ("running", "running (nubo: API; bare: QMP answers)", "running"),
                                ("ready", "ready marker", "ready")):
            a = pct([x[key] for x in both_n], 50)
            b = pct([x[bkey] for x in both_b], 50) if bkey else None
            rows.append([what, ms(a), ms(b) if bkey else "", ms(a - b) if bkey else ""])
        a = pct([x["ready"] - x["pid"] for x in rel_nubo], 50)
        b = pct([x["ready"] - x["pid"] for x in rel_bare], 50)
        rows.append(["guest boot, pidfile to ready marker (guests with a lease)", ms(a), ms(b),
                     ms(a - b)])
        thr = [x["throttled_s"] for x in both_n if "throttled_s" in x]
        if thr:
            rows.append(["CPU quota throttling of the instance's cgroup until ready",
                         ms(pct(thr, 50)), "(no cgroup)", ""])
        log(f"\nwhere the time goes (p50 over all {len(both_n)} nubo launches and "
            f"{len(both_b)} bare boots):\n")
        log(table(["step", "nubo ms from the API call", "bare ms from exec", "nubo - bare ms"],
                  rows))
        if nonet:
            log(f"\ncontext: bare QEMU without a NIC ({len(nonet)} boots, no DHCP): ready p50 "
                f"{ms(pct([x['ready'] for x in nonet], 50))} ms")
        log(f"terminate (DELETE to API state terminated) p50 "
            f"{ms(pct([x['terminate'] for x in both_n], 50))} ms")
        verdict = {}
        for name, a, b in (("as is", nubo, bare), ("lease released", rel_nubo, rel_bare)):
            if not a:
                continue
            d = {k: pct([x[k] for x in a], 50) - pct([x[k] for x in b], 50)
                 for k in ("ready", "running", "pid")}
            br = [x["ready"] for x in b]
            met = d["ready"] * 1000 <= GOAL_P50_MS and d["pid"] * 1000 <= GOAL_P50_MS
            verdict[name] = {"ready_diff_p50_s": d["ready"], "running_diff_p50_s": d["running"],
                             "pid_diff_p50_s": d["pid"], "met": met}
            log(f"goal: nubo adds at most {GOAL_P50_MS:.0f} ms at p50 ({name}): ready marker "
                f"{d['ready'] * 1000:+.0f} ms (bare ready times spread p25-p75 "
                f"{ms(pct(br, 25))}-{ms(pct(br, 75))} ms), QEMU's pidfile "
                f"{d['pid'] * 1000:+.0f} ms, running {d['running'] * 1000:+.0f} ms -> "
                f"{'MET' if met else 'NOT MET'}")
        log("")
        self.results["launch"]["verdict"] = verdict

    # -- 2. burst, 4. memory --
    def bench_burst(self):
        n = self.args.burst
        log(f"## 2. Burst: {n} instances in one call (t1.nano)\n")
        idle = self.daemon_mem()
        t0 = mono()
        r = self.cloud.run(count=n)
        t_api = mono() - t0
        ids = [i["id"] for i in r["instances"]]
        for i in ids:
            self.remember(i)
        deadline = t0 + BURST_TIMEOUT
        running, ready, ips, socks, pids = {}, {}, {}, {}, {}
        sel = selectors.DefaultSelector()
        bufs = {i: bytearray() for i in ids}
        rx = {i: ready_re(i) for i in ids}
        next_api = 0.0
        cpu0 = {k: proc_cpu_s(p) for k, p in self.daemon_pids().items()}
        try:
            while len(ready) < n or len(running) < n:
                now = mono()
                if now > deadline:
                    raise TimeoutError(f"burst: {len(running)} running, {len(ready)} ready")
                for i in ids:
                    if i not in pids and (self.cloud.instance_dir(i) / "qemu.pid").exists():
                        pids[i] = mono() - t0
                    if i not in socks:
                        s = try_connect(self.cloud.instance_dir(i) / "console.sock")
                        if s:
                            socks[i] = s
                            sel.register(s, selectors.EVENT_READ, i)
                if len(running) < n and now >= next_api:
                    st = self.poll.states()
                    for i in ids:
                        if i not in running and st.get(i) == "running":
                            running[i] = mono() - t0
                    next_api = mono() + 0.02
                wait = 0.002 if len(pids) < n or len(running) < n else 1.0
                for key, _ in sel.select(wait):
                    i = key.data
                    chunk = key.fileobj.recv(65536)
                    if not chunk:
                        sel.unregister(key.fileobj)
                        continue
                    bufs[i] += chunk
                    m = rx[i].search(bufs[i])
                    if m and i not in ready:
                        ready[i] = mono() - t0
                        ips[i] = m.group(1).decode()
                        sel.unregister(key.fileobj)
        finally:
            sel.close()
            for s in socks.values():
                s.close()
        nubo = {"api": t_api, "ids": ids, "running": sorted(running.values()),
                "ready": sorted(ready.values()),
                "pid": sorted(pids.values()),
                "no_ip": sum(1 for v in ips.values() if v == "none")}
        # 4. memory with n guests running (and CPU use of the daemons while idle)
        cpu_t = mono()
        mem = self.cloud_mem(ids)
        window = 5.0
        cpu_mid = {k: proc_cpu_s(p) for k, p in self.daemon_pids().items()}
        self.idle_window(window)
        cpu1 = {k: proc_cpu_s(p) for k, p in self.daemon_pids().items()}
        cpu_idle = {k: (cpu1[k] - cpu_mid[k]) / (mono() - cpu_t) for k in cpu1
                    if cpu1.get(k) is not None and cpu_mid.get(k) is not None}
        cpu_burst = {k: cpu_mid[k] - cpu0[k] for k in cpu_mid
                     if cpu_mid.get(k) is not None and cpu0.get(k) is not None}
        hups = self.dnsmasq_rereads(window)
        t_term0 = mono()
        for i in ids:
            self.cloud.api("DELETE", f"/v1/instances/{i}")
        self.ct.wait_until(lambda: all(s == "terminated" for i, s in self.poll.states().items()
                                       if i in ids) or None, 120, "the burst to terminate",
                           interval=0.05)
        t_term = mono() - t_term0

        # the peer: n bare QEMUs started at once
        self.check_budget()
        t0 = mono()
        vms = []
        try:
            deadline = t0 + BURST_TIMEOUT
            vms, marks = self.bare_burst(n, deadline)
            readies = self.bare_ready(vms, deadline)
            bare_mem = [proc_mem(vm.proc.pid) for vm in vms]
        finally:
            for vm in vms:
                self.bare_close(vm)
        b_running = [vm.started - t0 + mk["running"] for vm, mk in zip(vms, marks)]
        b_ready = [vm.started - t0 + r[0] for vm, r in zip(vms, readies)]
        b_ips = [r[1] for r in readies]
        b_pid = [vm.started - t0 + mk["pid"] for vm, mk in zip(vms, marks)]
        bare = {"running": sorted(b_running), "ready": sorted(b_ready), "pid": sorted(b_pid),
                "no_ip": sum(1 for v in b_ips if v == "none")}
        self.results["burst"] = {"nubo": nubo, "bare": bare, "terminate_all_s": t_term}
        rows = []
        for key, what in (("pid", "QEMU's pidfile"),
                          ("running", "running (nubo: API; bare: QMP answers)"),
                          ("ready", "printed the ready marker")):
            for label, f in (("first", min), ("median", lambda v: pct(v, 50)), ("all", max)):
                a, b = f(nubo[key]), f(bare[key])
                rows.append([f"{label}: {what}", ms(a), ms(b), ms(a - b), ratio(a, b)])
        log(table(["from API call / first exec", "nubo ms", f"{n} bare QEMUs ms",
                   "nubo - bare ms", "ratio"], rows))
        gaps = [b - a for a, b in zip(nubo["pid"], nubo["pid"][1:])]
        if gaps:
            log(f"\nnubo started its QEMUs one after another: the gap between consecutive "
                f"starts grew from {ms(gaps[0])} ms to {ms(max(gaps))} ms as guests booted")
        log(f"\nPOST answered in {ms(t_api)} ms; guests without a DHCP lease: nubo "
            f"{nubo['no_ip']}/{n}, bare {bare['no_ip']}/{n}; terminating all {n} took "
            f"{ms(t_term)} ms\n")

        log(f"## 4. Memory with {n} guests running\n")
        rows = []
        for name in ("nubod", "nubo-agent"):
            a, b = idle.get(name), mem.get(name)
            rows.append([name, self.kib(a, 0), self.kib(a, 1), self.kib(b, 0), self.kib(b, 1)])
        shim = [x for x in mem["shims"] if x]
        qemu = [x for x in mem["qemus"] if x]
        bq = [x for x in bare_mem if x]
        rows.append([f"nubo-shim (each, median of {len(shim)})", "", "",
                     self.kib(self.med(shim), 0), self.kib(self.med(shim), 1)])
        rows.append([f"QEMU under nubo (each, median of {len(qemu)})", "", "",
                     self.kib(self.med(qemu), 0), self.kib(self.med(qemu), 1)])
        rows.append([f"bare QEMU peer (each, median of {len(bq)})", "", "",
                     self.kib(self.med(bq), 0), self.kib(self.med(bq), 1)])
        log(table(["process", "RSS idle (0 guests)", "PSS idle", f"RSS ({n} guests)",
                   f"PSS ({n} guests)"], rows))
        ctl = sum((mem[k] or (0, 0))[1] for k in ("nubod", "nubo-agent")) + \
            sum(x[1] for x in shim)
        guests = sum(x[1] for x in qemu)
        if mem["cg_peak"]:
            log(f"\nmemory cgroups of the {len(mem['cg_peak'])} instances: peak charge p50 "
                f"{pct(mem['cg_peak'], 50) / 2**20:.0f} MiB, max {max(mem['cg_peak']) / 2**20:.0f} "
                f"MiB of a {(mem['cg_limit'] or 0) / 2**20:.0f} MiB limit; limit hit (failcnt) in "
                f"{sum(1 for x in mem['cg_failcnt'] if x)} of them")
        log(f"\ncontrol plane PSS (nubod + agent + {len(shim)} shims) {ctl / 1024:.1f} MiB "
            f"= {ctl / max(guests, 1) * 100:.1f}% of the {len(qemu)} QEMUs' PSS "
            f"({guests / 1024:.0f} MiB); per guest {ctl / max(len(qemu), 1) / 1024:.2f} MiB")
        log("CPU of the daemons during the burst, including serving the benchmark's state "
            "polls (s): " +
            ", ".join(f"{k} {v:.2f}" for k, v in cpu_burst.items()) +
            f"; afterwards with {n} idle guests over {window:.0f} s: " +
            ", ".join(f"{k} {v * 100:.1f}%" for k, v in cpu_idle.items()) +
            f"; the agent re-signalled dnsmasq {hups} times in that window\n")
        self.results["memory"] = {"idle": idle, "loaded": mem, "bare_qemu": bare_mem,
                                  "cpu_burst_s": cpu_burst, "cpu_idle_frac": cpu_idle,
                                  "dnsmasq_rereads_in_window": hups, "window_s": window}

    def idle_window(self, seconds):
        """Lets seconds pass with the guests idle (a measuring window for CPU
        use; not a readiness wait)."""
        end = mono() + seconds
        while mono() < end:
            time.sleep(min(0.5, end - mono()))

    def dnsmasq_rereads(self, window):
        """'read .../dhcp-hosts' lines nubo's dnsmasq logged in the last
        window seconds (each is a SIGHUP from the agent)."""
        p = self.cloud.agent_state / "net" / "dnsmasq.log"
        try:
            lines = [l for l in p.read_text(errors="replace").splitlines() if "dhcp-hosts" in l]
        except OSError:
            return None
        now = datetime.datetime.now()
        n = 0
        for l in lines:
            try:
                t = datetime.datetime.strptime(f"{now.year} {l[:15]}", "%Y %b %d %H:%M:%S")
            except ValueError:
                continue
            if (now - t).total_seconds() <= window + 1:
                n += 1
        return n

    @staticmethod
    def med(xs):
        """(median RSS, median PSS) of (RSS, PSS) pairs."""
        cols = [[x[i] for x in xs if x and x[i] is not None] for i in (0, 1)]
        return tuple(statistics.median(c) if c else None for c in cols)

    @staticmethod
    def kib(x, i):
        if not x or x[i] is None:
            return "n/a"
        return f"{x[i] / 1024:.1f} MiB"

    def daemon_pids(self):
        return {"nubod": self.cloud.nubod.proc.pid, "nubo-agent": self.cloud.agent.proc.pid}

    def daemon_mem(self):
        return {k: proc_mem(p) for k, p in self.daemon_pids().items()}

    def cloud_mem(self, ids):
        out = self.daemon_mem()
        out["shims"], out["qemus"] = [], []
        for i in ids:
            d = self.cloud.instance_dir(i)
            for f, key in (("shim.pid", "shims"), ("qemu.pid", "qemus")):
                try:
                    out[key].append(proc_mem(int((d / f).read_text().split()[0])))
                except (OSError, ValueError, IndexError):
                    out[key].append(None)
        # the memory cgroups: peak charge against the limit, and how often
        # the limit was hit (reclaim)
        out["cg_peak"], out["cg_failcnt"], out["cg_limit"] = [], [], None
        for i in ids:
            d = CG_ROOT / "memory" / "nubo" / i
            try:
                out["cg_peak"].append(int((d / "memory.max_usage_in_bytes").read_text()))
                out["cg_failcnt"].append(int((d / "memory.failcnt").read_text()))
                out["cg_limit"] = int((d / "memory.limit_in_bytes").read_text())
            except (OSError, ValueError):
                pass
        return out

    # -- 3. clone --
    def make_base(self, name, size, offsets):
        p = self.work / f"{name}.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(p), size], check=True)
        cmds = []
        for k, off in enumerate(offsets):
            cmds += ["-c", f"write -P 0x{0x40 + k:02x} {off} 4M"]
        subprocess.run(["qemu-io", "-f", "qcow2", *cmds, str(p)], check=True,
                       capture_output=True)
        return p

    def import_disk(self, name, path):
        t0 = mono()
        disk = self.cloud.upload(path)
        kernel = self.cloud.upload(self.img.vmlinuz)
        initrd = self.cloud.upload(self.img.initrd)
        m = self.img.manifest
        im = self.cloud.api("POST", "/v1/images", {
            "name": name, "os": m["os"], "release": m["release"], "arch": m["arch"],
            "disk_blob": disk, "kernel_blob": kernel, "initrd_blob": initrd,
            "cmdline": m["cmdline"]})
        return im, mono() - t0

    def bench_clone(self):
        log("## 3. Clone: overlay on a 64 MiB and a 4 GiB base image\n")
        reps = self.args.clone_reps
        small = self.make_base("base-64m", "64M", ["0", "16M", "32M", "60M"])
        big = self.make_base("base-4g", "4G", ["0", "1G", "2G", "3G", "4092M"])
        self.cloud.api("PUT", "/v1/types/bench.disk8", {
            "vcpus": 1, "memory_mb": 128, "disk_gb": 8, "net_mbps": 100, "price_per_hour": 0})
        ims, res = {}, {}
        for name, path in (("bench-64m", small), ("bench-4g", big)):
            im, t = self.import_disk(name, path)
            ims[name] = im
            res[name] = {"import_s": t, "size": im["size"], "file_size": im["file_size"],
                         "cold": None, "warm": []}
        for name in ims:  # first launch on the host: the agent fetches the base
            res[name]["cold"] = self.nubo_launch(type_="bench.disk8", image=name, marker=False)
        for _ in range(reps):
            for name in ims:
                self.check_budget()
                res[name]["warm"].append(
                    self.nubo_launch(type_="bench.disk8", image=name, marker=False))
        self.results["clone"] = res
        rows = []
        a, b = res["bench-64m"], res["bench-4g"]
        for key, what in (("disk", "overlay root.qcow2 exists"), ("pid", "QEMU started (pidfile)"),
                          ("running", "API state running")):
            x = pct([w[key] for w in a["warm"]], 50)
            y = pct([w[key] for w in b["warm"]], 50)
            rows.append([what + f" (cached base, p50 of {reps})", ms(x), ms(y), ratio(y, x)])
        for key, what in (("disk", "overlay exists"), ("running", "API state running")):
            rows.append([what + " (first launch: agent fetches the base)",
                         ms(a["cold"][key]), ms(b["cold"][key]),
                         ratio(b["cold"][key], a["cold"][key])])
        sa = pct([w.get("disk_bytes", 0) for w in a["warm"]], 50)
        sb = pct([w.get("disk_bytes", 0) for w in b["warm"]], 50)
        rows.append(["overlay file size when QEMU started (KiB)", f"{sa / 1024:.0f}",
                     f"{sb / 1024:.0f}", ratio(sb, sa)])
        rows.append(["import (upload + POST /v1/images)", ms(a["import_s"]), ms(b["import_s"]),
                     ratio(b["import_s"], a["import_s"])])
        log(table(["from API call", f"64 MiB base ({a['file_size'] >> 20} MiB file) ms",
                   f"4 GiB base ({b['file_size'] >> 20} MiB file) ms", "ratio 4 GiB / 64 MiB"],
                  rows))
        x = pct([w["disk"] for w in a["warm"]], 50)
        y = pct([w["disk"] for w in b["warm"]], 50)
        # "does not grow": the same overlay, and no more than noise between
        # the two medians (a copy of 4 GiB would take seconds)
        ok = sa == sb and (y - x <= 0.02 or y <= 1.5 * x)
        log(f"\ngoal: clone time does not grow with the image size -> "
            f"{'MET' if ok else 'NOT MET'} (overlay appears {ms(x)} vs {ms(y)} ms, "
            f"{ratio(y, x)}; overlay {sa / 1024:.0f} vs {sb / 1024:.0f} KiB)\n")
        res["met"] = ok

    # -- teardown --
    def close(self):
        self.load.close()
        for vm in list(self.bare):
            try:
                self.bare_close(vm)
            except Exception as e:  # keep cleaning up
                log(f"bench: closing a bare QEMU: {e}")
        if self.poll:
            self.poll.close()
        if self.cloud:
            try:
                self.cloud.shutdown()
            except Exception as e:
                log(f"bench: cloud shutdown: {e}")
        if self.peer_md:
            self.peer_md.close()
        if self.peer_dnsmasq and self.peer_dnsmasq.poll() is None:
            self.peer_dnsmasq.terminate()
            try:
                self.peer_dnsmasq.wait(10)
            except subprocess.TimeoutExpired:
                self.peer_dnsmasq.kill()
                self.peer_dnsmasq.wait()
        for tap in self.peer_taps:
            subprocess.run(["ip", "link", "del", tap], capture_output=True)
        subprocess.run(["ip", "link", "del", PEER_BRIDGE], capture_output=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", help="scratch directory (state dirs, overlays, logs)")
    ap.add_argument("--sweep", metavar="DIR", help="clean up after a run in DIR")
    ap.add_argument("--launches", type=int, default=20)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--released", type=int, default=6,
                    help="extra launches whose guests release their DHCP lease")
    ap.add_argument("--nonet", type=int, default=0,
                    help="bare boots without a NIC, for context")
    ap.add_argument("--clone-reps", type=int, default=7)
    ap.add_argument("--budget", type=float, default=780,
                    help="seconds after which no new step starts")
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args()
    if args.sweep:
        return sweep(args.sweep)
    if not args.work:
        ap.error("--work is required")

    sys.path.insert(0, str(E2E))
    import conftest  # noqa: E402  (enters a private network namespace at import)
    import tinyimage  # noqa: E402
    if not in_private_netns() and os.environ.get("NUBO_E2E_NETNS") != str(os.getpid()):
        print("bench: not in a private network namespace", file=sys.stderr)
        return 1

    def on_term(sig, frame):
        raise Aborted(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    b = Bench(args, conftest, tinyimage)
    rc = 0
    try:
        b.start()
        for name, step in (("launch", b.bench_launch), ("clone", b.bench_clone),
                           ("burst", b.bench_burst)):
            t0 = mono()
            step()
            log(b.load.describe(t0) + "\n")
            b.results.setdefault("noise", {})[name] = b.load.since(t0)
        log(f"total benchmark time {mono() - b.t_start:.0f} s")
    except Aborted as e:
        log(f"bench: aborted: {e}")
        rc = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        b.close()
        if args.json:
            Path(args.json).write_text(json.dumps(b.results, indent=1, default=str) + "\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
