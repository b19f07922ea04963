#!/usr/bin/python3
"""EC2 DescribeInstances (SigV4-signed) throughput and p99 latency: nubod
against moto_server, with nginx serving a static file of the same size as
nubo's answer as the ceiling.

For each record count (default 1,000 and 10,000):

  nubo   nubod (release build) on a state dir whose SQLite store is seeded
         directly with that many instance records of one account (no guests
         are booted: see docs/performance.md). The account and its access key
         are made through the native API; the signed requests go to POST /.
  moto   moto_server with the same number of instances made by run_instances
         (same share of states and tags), same calls signed the same way.
  nginx  a private nginx (own prefix, config and pid file) serving a file of
         exactly the size of nubo's answer, fetched with GET.

Each nubo run is followed by the nginx run of the same size (both servers
are up at once), so that the pair sees the same machine; --repeat N does the
whole round N times and the summary shows the run of median req/s.

The request is signed once with botocore's SigV4Auth and the same bytes are
replayed by wrk (-t THREADS -c CONNECTIONS -d DURATION, a Lua script sets the
method, body and headers); wrk's own latency histogram gives p99. Variants:

  all       DescribeInstances, no filter: every record in one answer
  filtered  instance-state-name=running and tag:team=blue
  uncached  (nubo only) as "all", but every request differs (a signed
            instance-id filter i-* plus a distinct id that matches nothing),
            so nubod's Describe cache never answers
  changing  (nubo only) as "uncached", while the store changes ten times a
            second (a CreateTags on one instance, signed, every 100 ms): the
            first answer after each change reads and renders every row again
  reporting (nubo only) as "all", while the seeded host reports to nubod
            as one nubo-agent does (POST /v1/agent/report every 2.5 s: its
            heartbeat and its report, 5 s apart each); each report writes
            the host's last_seen, which invalidates the Describe cache

moto needs seconds per answer (about 4 s for 1,000 records, minutes for
10,000), so its window is stretched until every connection had time to
finish a request (bounded by --moto-cap), and by default it is only run up
to --moto-max records.

Everything runs in a network namespace of this process's own (loopback
only); every process started here is stopped by pid on every path.

usage: ec2_describe.py [--records 1000,10000] [--duration 10] [--connections 8]
                       [--threads 1] [--variants all,filtered,uncached,changing,reporting]
                       [--repeat 1] [--moto-max 1000] [--moto-connections N] [--moto-cap 60]
                       [--budget 300] [--json FILE] [--keep DIR]
environment: NUBO_BUILD (build directory, default build)

Prints Markdown tables and whether the goals (nubo >= 20x moto's req/s and
>= half of nginx's) are met. Exits 0 after a complete run, met or not; 1 on
an error; 2 when stopped early (budget, signal).
"""

import argparse
import ctypes
import datetime
import hashlib
import http.client
import json
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLONE_NEWNET = 0x40000000
REGION = "nubo-1"
MOTO_REGION = "us-east-1"
EC2_VERSION = "2016-11-15"
FORM = "application/x-www-form-urlencoded; charset=utf-8"
GOAL_MOTO = 20.0   # nubo req/s at least 20x moto's
GOAL_NGINX = 0.5   # and at least half of nginx's
SHARE_STATES = (("running", 0.85), ("stopped", 0.10), ("terminated", 0.05))
SHARE_TAGS = (("blue", 0.40), ("red", 0.20), (None, 0.40))
TYPES = (("t1.nano", 1, 128, 1, 100), ("t1.micro", 1, 256, 2, 200),
         ("t1.small", 1, 512, 4, 300), ("t1.medium", 2, 1024, 8, 500))
BODY_ALL = f"Action=DescribeInstances&Version={EC2_VERSION}"
BODY_FILTERED = (BODY_ALL + "&Filter.1.Name=instance-state-name&Filter.1.Value.1=running"
                 "&Filter.2.Name=tag%3Ateam&Filter.2.Value.1=blue")
UNCACHED_DISTINCT = 1000  # distinct signed requests cycled by the "uncached" variant
AGENT_TOKEN = hashlib.sha256(b"nubo-bench-ec2 host").hexdigest()  # the seeded host's
CHANGE_EVERY_S = 0.1  # the "changing" variant's store writes
REPORT_EVERY_S = 2.5  # one nubo-agent: a heartbeat and a report every 5 s each


class Aborted(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def enter_netns():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed: run as root")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


# ----------------------------------------------------------------- processes

class Procs:
    """Every process this script starts; stop_all() ends them by pid."""

    def __init__(self):
        self.procs = []

    def start(self, name, argv, log_path, **kw):
        f = open(log_path, "ab")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, **kw)
        f.close()
        p.nb_name = name
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=15):
        if p.poll() is None:
            try:
                p.send_signal(sig)
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in reversed(list(self.procs)):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log(f"stopping {p.nb_name} (pid {p.pid}): {e}")


# ---------------------------------------------------------------- HTTP, signing

def http_call(port, method, path, body=None, headers=None, timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def sign(port, key_id, secret, body, region):
    """Headers of a SigV4-signed POST / (botocore's signer), valid 15 minutes."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    req = botocore.awsrequest.AWSRequest(method="POST", url=f"http://127.0.0.1:{port}/",
                                         data=body.encode(), headers={"Content-Type": FORM})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(key_id, secret), "ec2",
                            region).add_auth(req)
    h = {k: v for k, v in req.headers.items()}
    h["Host"] = f"127.0.0.1:{port}"
    return h


class Signed:
    """One or more signed requests for wrk to replay."""

    def __init__(self, port, key_id, secret, bodies, region):
        self.port = port
        self.reqs = [(b, sign(port, key_id, secret, b, region)) for b in bodies]

    def fetch(self, i=0):
        body, headers = self.reqs[i]
        return http_call(self.port, "POST", "/", body.encode(), headers)


# ----------------------------------------------------------------------- wrk

def lua_str(s):
    assert s.isascii()
    return json.dumps(s)  # an ASCII JSON string is a valid Lua string literal


WRK_DONE = r'''
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
'''


def wrk_script(path, method, reqs):
    """reqs: [(body, headers)]; one request is set as wrk's default, several are cycled."""
    out = []
    if len(reqs) == 1:
        body, headers = reqs[0]
        out.append(f"wrk.method = {lua_str(method)}")
        if body:
            out.append(f"wrk.body = {lua_str(body)}")
        for k, v in headers.items():
            out.append(f"wrk.headers[{lua_str(k)}] = {lua_str(v)}")
    else:
        out.append("local reqs = {}")
        for body, headers in reqs:
            hs = ", ".join(f"[{lua_str(k)}] = {lua_str(v)}" for k, v in headers.items())
            out.append(f"reqs[#reqs + 1] = wrk.format({lua_str(method)}, \"/\", {{{hs}}}, "
                       f"{lua_str(body)})")
        # each wrk thread starts at a different offset
        out.append("local i = 0")
        out.append("setup = function(thread) thread:set('start', math.random(#reqs)) end")
        out.append("init = function(args) i = tonumber(start or 0) or 0 end")
        out.append("request = function() i = i % #reqs + 1; return reqs[i] end")
    out.append(WRK_DONE)
    Path(path).write_text("\n".join(out) + "\n")


def cpu_busy_ticks():
    """Machine-wide busy CPU time in clock ticks (all but idle and iowait)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f) - f[3] - f[4]


def cpu_tree_ticks(pid):
    """user+system ticks of pid and its descendants (children of nginx's master)."""
    stats = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                st = (p / "stat").read_text()
            except OSError:
                continue
            f = st[st.rindex(")") + 2:].split()
            stats[int(p.name)] = (int(f[1]), int(f[11]) + int(f[12]))
    total, todo = 0, [pid]
    while todo:
        q = todo.pop()
        if q in stats:
            total += stats[q][1]
            todo.extend(k for k, (ppid, _) in stats.items() if ppid == q)
    return total


def run_wrk(url, script, args, duration, timeout_s, server_pid):
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.conns), "-d", f"{duration}s",
            "--timeout", f"{timeout_s}s", "--latency", "-s", str(script), url]
    busy0, srv0, kids0 = cpu_busy_ticks(), cpu_tree_ticks(server_pid), children_ticks()
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + timeout_s + 60)
    elapsed = time.monotonic() - t0
    busy, srv = cpu_busy_ticks() - busy0, cpu_tree_ticks(server_pid) - srv0
    wrk_t = children_ticks() - kids0
    hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count()
    for line in p.stdout.splitlines():
        if line.startswith("WRKJSON "):
            r = json.loads(line[8:])
            secs = r["duration_us"] / 1e6
            r["rps"] = r["requests"] / secs if secs > 0 else 0.0
            r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
            r["argv"] = " ".join(argv[:-3] + [argv[-1]])
            # CPU shares of the run (of all cores): the server, wrk, and the
            # rest of the machine (other work disturbs the numbers)
            r["cpu_server"] = srv / hz / elapsed / ncpu
            r["cpu_wrk"] = wrk_t / hz / elapsed / ncpu
            r["cpu_other"] = max(0.0, (busy - srv - wrk_t) / hz / elapsed / ncpu)
            return r
    raise RuntimeError(f"wrk gave no summary (rc {p.returncode}): {p.stdout[-2000:]} {p.stderr[-2000:]}")


def children_ticks():
    ru = os.times()
    return int(round((ru.children_user + ru.children_system) * os.sysconf("SC_CLK_TCK")))


# ---------------------------------------------------------------- the records

def record_plan(n, seed):
    """Deterministic instance records: reservations of 1-20, shares of states/tags."""
    rnd = random.Random(seed)
    now = int(time.time() * 1000)
    recs, i = [], 0
    t0 = now - 30 * 86400 * 1000
    while i < n:
        size = min(n - i, rnd.randint(1, 20))
        rid = "r-" + "%017x" % rnd.getrandbits(68)
        t0 += rnd.randint(1, 2 * 30 * 86400 * 1000 // max(n, 1))
        created = min(t0, now - 3600 * 1000)
        for k in range(size):
            recs.append({"id": "i-" + "%017x" % rnd.getrandbits(68), "rid": rid, "k": k,
                         "created": created, "state": pick(rnd, SHARE_STATES),
                         "team": pick(rnd, SHARE_TAGS), "type": rnd.choice(TYPES),
                         "key": "bench-key" if rnd.random() < 0.7 else None})
        i += size
    return recs


def pick(rnd, shares):
    x, acc = rnd.random(), 0.0
    for v, p in shares:
        acc += p
        if x < acc:
            return v
    return shares[-1][0]


def seed_nubo_db(db, account_id, image_id, recs):
    """Writes host, reservation, instance and tag rows (nubod must be stopped)."""
    now = int(time.time() * 1000)
    con = sqlite3.connect(db)
    try:
        cur = con.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        host = cur.execute("SELECT id FROM hosts WHERE name = 'bench-host'").fetchone()
        if host:
            host_id = host[0]
        else:
            host_id = "h-" + "%017x" % random.Random(7).getrandbits(68)
            cur.execute("INSERT INTO hosts (id, name, address, agent_token, accel, qemu_version,"
                        " vcpus, memory_mb, disk_gb, cidr, last_seen, created_at)"
                        " VALUES (?, 'bench-host', '127.0.0.1:1', ?, 'tcg', '7.2.0', 2, 24576,"
                        " 200, '10.200.0.0/16', ?, ?)",
                        (host_id, AGENT_TOKEN, now, now))
        have = {r[0] for r in cur.execute("SELECT id FROM instances")}
        rids = {r[0] for r in cur.execute("SELECT id FROM reservations")}
        for j, r in enumerate(recs):
            if r["id"] in have:
                continue
            if r["rid"] not in rids:
                cur.execute("INSERT INTO reservations (id, account_id, created_at) VALUES (?, ?, ?)",
                            (r["rid"], account_id, r["created"]))
                rids.add(r["rid"])
            seq = j + 2
            ip = f"10.200.{seq // 256}.{seq % 256}"
            h = hashlib.sha256(r["id"].encode()).hexdigest()
            mac = f"52:54:00:{h[0:2]}:{h[2:4]}:{h[4:6]}"
            state = r["state"]
            tname, vcpus, mem, disk, net = r["type"]
            name = f"web-{j}" if r["team"] else ""
            reason = "forced stop" if state == "stopped" and j % 10 == 0 else ""
            term = now - (j % 1800) * 1000 if state == "terminated" else None
            cur.execute(
                "INSERT INTO instances (id, account_id, reservation_id, name, type, image_id,"
                " host_id, state, desired_state, start_seq, reboot_seq, ip, mac, launch_index,"
                " vcpus, memory_mb, disk_gb, net_mbps, user_data, state_reason, created_at,"
                " updated_at, terminated_at, key_name, az, launched_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 0, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?,"
                " 'nubo-1a', ?)",
                (r["id"], account_id, r["rid"], name, tname, image_id,
                 None if state == "terminated" else host_id, state,
                 "running" if state == "running" else state, ip, mac, r["k"], vcpus, mem,
                 disk, net, reason, r["created"], term or r["created"] + 60000, term,
                 r["key"], r["created"] + 20000))
            if r["team"]:
                for k, v in (("Name", name), ("team", r["team"])):
                    cur.execute("INSERT INTO tags (account_id, resource_id, resource_type, key,"
                                " value) VALUES (?, ?, 'instance', ?, ?)",
                                (account_id, r["id"], k, v))
        con.commit()
    finally:
        con.close()


# ---------------------------------------------------------------------- nubo

class Nubo:
    def __init__(self, procs, build, work):
        self.procs, self.build = procs, build
        self.state = work / "nubo-state"
        self.log = work / "nubod.log"
        self.port = free_port()
        self.proc = None

    def start(self):
        self.proc = self.procs.start("nubod", [
            str(self.build / "src/nubod"), "-s", f"state_dir={self.state}",
            "-s", f"api_listen=127.0.0.1:{self.port}",
            # the benchmark is about serving, not throttling: the per-account
            # Describe rate limit (100/s by default) is lifted
            "-s", "rate_describe=100000000", "-s", "rate_describe_burst=100000000",
            "-s", "log_level=warn"], self.log)
        wait_until(self._health, 20, "nubod health")
        self.token = (self.state / "admin.token").read_text().strip()

    def _health(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"nubod exited ({self.proc.returncode}): see {self.log}")
        try:
            return http_call(self.port, "GET", "/v1/health", timeout=2)[0] == 200
        except OSError:
            return False

    def stop(self):
        self.procs.stop(self.proc)
        if self.proc.returncode not in (0, -signal.SIGTERM):
            raise RuntimeError(f"nubod ended with {self.proc.returncode}: see {self.log}")

    def api(self, method, path, body=None, raw=None, ctype="application/json"):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = ctype
        status, payload = http_call(self.port, method, path, data, headers, timeout=60)
        if status >= 300:
            raise RuntimeError(f"{method} {path}: {status} {payload[:300]!r}")
        return json.loads(payload)

    def setup(self, work):
        """An account with an access key, and an image the records point at."""
        self.api("POST", "/v1/accounts", {"name": "bench"})
        key = self.api("POST", "/v1/keys", {"account": "bench", "user": "admin"})
        disk = work / "idle.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
        blob = self.api("PUT", "/v1/blobs", raw=disk.read_bytes(),
                        ctype="application/octet-stream")["blob"]
        image = self.api("POST", "/v1/images", {"name": "idle", "disk_blob": blob})
        return key, image["id"]


class Reporter:
    """The seeded host's agent reports (no instances), as one nubo-agent sends them."""

    def __init__(self, port):
        import threading
        self.port, self.sent = port, 0
        self.error = None
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        body = json.dumps({"instances": []}).encode()
        headers = {"Authorization": f"Bearer {AGENT_TOKEN}", "Content-Type": "application/json"}
        while not self.halt.is_set():
            try:
                status, payload = http_call(self.port, "POST", "/v1/agent/report", body, headers,
                                            timeout=30)
                if status != 200:
                    self.error = f"agent report: {status} {payload[:200]!r}"
                    return
                self.sent += 1
            except OSError as e:
                self.error = f"agent report: {e}"
                return
            self.halt.wait(REPORT_EVERY_S)

    def stop(self):
        self.halt.set()
        self.thread.join(35)
        if self.error:
            raise RuntimeError(self.error)


class Changer:
    """A CreateTags on one seeded instance every CHANGE_EVERY_S (values
    alternating, so each is a real change): every one bumps the store's
    epoch, so the next Describe reads the rows again."""

    def __init__(self, port, key, iid):
        import threading
        bodies = [f"Action=CreateTags&ResourceId.1={iid}&Tag.1.Key=bench-change"
                  f"&Tag.1.Value={v}&Version={EC2_VERSION}" for v in ("a", "b")]
        self.signed = Signed(port, key["access_key_id"], key["secret_access_key"], bodies, REGION)
        self.sent, self.error = 0, None
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.halt.is_set():
            try:
                status, payload = self.signed.fetch(self.sent % 2)
                if status != 200:
                    self.error = f"CreateTags: {status} {payload[:200]!r}"
                    return
                self.sent += 1
            except OSError as e:
                self.error = f"CreateTags: {e}"
                return
            self.halt.wait(CHANGE_EVERY_S)

    def stop(self):
        self.halt.set()
        self.thread.join(35)
        if self.error:
            raise RuntimeError(self.error)


# ---------------------------------------------------------------------- moto

class Moto:
    KEY = ("AKIAMOTOBENCH0000000", "moto-bench-secret")

    def __init__(self, procs, work):
        self.procs, self.work = procs, work
        self.port = free_port()
        self.proc = None
        self.count = 0
        self.ami = None

    def start(self):
        exe = shutil.which("moto_server")
        if not exe:
            raise RuntimeError("moto_server not on PATH (pip install 'moto[server]')")
        self.proc = self.procs.start("moto_server", [exe, "-H", "127.0.0.1", "-p", str(self.port)],
                                     self.work / "moto.log")
        wait_until(self._up, 60, "moto_server")
        self.client = self._boto()
        self.ami = self.client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto_server exited ({self.proc.returncode})")
        try:
            return http_call(self.port, "GET", "/moto-api/", timeout=2)[0] == 200
        except OSError:
            return False

    def _boto(self):
        import boto3
        from botocore.config import Config
        return boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{self.port}",
                            region_name=MOTO_REGION, aws_access_key_id=self.KEY[0],
                            aws_secret_access_key=self.KEY[1],
                            config=Config(retries={"max_attempts": 1}, read_timeout=900))

    def grow(self, recs, deadline):
        """Adds instances until there are len(recs), with the records' teams and states."""
        c = self.client
        todo = recs[self.count:]
        stop_ids, term_ids = [], []
        # one run_instances per team and up to 1000 instances: moto answers
        # at most 100 reservations at a time (then a NextToken), so its
        # reservations are few and large for the answer to hold them all
        for team in [t for t, _ in SHARE_TAGS]:
            group = [r for r in todo if r["team"] == team]
            for i in range(0, len(group), 1000):
                if time.monotonic() > deadline:
                    raise Aborted("budget spent while making moto's instances")
                part = group[i:i + 1000]
                kw = {}
                if team:
                    kw["TagSpecifications"] = [{"ResourceType": "instance", "Tags": [
                        {"Key": "Name", "Value": "web"}, {"Key": "team", "Value": team}]}]
                got = c.run_instances(ImageId=self.ami, MinCount=len(part), MaxCount=len(part),
                                      InstanceType="t2.micro", **kw)["Instances"]
                for r, inst in zip(part, got):
                    if r["state"] == "stopped":
                        stop_ids.append(inst["InstanceId"])
                    elif r["state"] == "terminated":
                        term_ids.append(inst["InstanceId"])
        for k in range(0, len(stop_ids), 500):
            c.stop_instances(InstanceIds=stop_ids[k:k + 500])
        for k in range(0, len(term_ids), 500):
            c.terminate_instances(InstanceIds=term_ids[k:k + 500])
        self.count = len(recs)


# --------------------------------------------------------------------- nginx

NGINX_CONF = """\
worker_processes {workers};
user root root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    keepalive_timeout 60;
    keepalive_requests 100000000;
    default_type text/xml;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
    }}
}}
"""


class Nginx:
    def __init__(self, procs, work):
        self.procs = procs
        self.prefix = work / "nginx"
        self.port = free_port()
        self.proc = None

    @staticmethod
    def ensure_installed():
        if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
            return
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        log("installing nginx-light (apt-get)")
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        if not Path("/usr/sbin/nginx").exists():
            subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=300)
            subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=300, check=True)

    def put(self, name, data):
        www = self.prefix / "www"
        www.mkdir(parents=True, exist_ok=True)
        (www / name).write_bytes(data)
        (www / name).chmod(0o644)

    def start(self, workers):
        for d in ("tmp", "www"):
            (self.prefix / d).mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=self.prefix, port=self.port, workers=workers))
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = self.procs.start("nginx", [exe, "-p", str(self.prefix), "-c", str(conf),
                                               "-e", str(self.prefix / "error.log"),
                                               "-g", "daemon off;"],
                                     self.prefix.parent / "nginx.out")
        wait_until(self._up, 20, "nginx")

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"nginx exited ({self.proc.returncode}): "
                               f"{(self.prefix / 'error.log').read_text(errors='replace')[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self):
        if self.proc:
            # SIGQUIT: graceful; the master reaps its workers before it exits
            self.procs.stop(self.proc, signal.SIGQUIT)


# ----------------------------------------------------------------------- run

def fmt_rps(r):
    if r is None:
        return "-"
    return f"{r['rps']:,.0f}" if r["rps"] >= 100 else f"{r['rps']:.3g}"


def fmt_ms(r):
    if r is None:
        return "-"
    ms = r["p99_us"] / 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.3g}"


def ratio(a, b):
    if not a or not b or not b["rps"]:
        return None
    return a["rps"] / b["rps"]


def fmt_ratio(x):
    return "-" if x is None else (f"{x:,.0f}x" if x >= 100 else f"{x:.3g}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", default="1000,10000")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", dest="conns", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default="all,filtered,uncached,changing,reporting")
    ap.add_argument("--moto-max", type=int, default=1000,
                    help="largest record count moto is run at (its answers take minutes at 10,000)")
    ap.add_argument("--moto-connections", type=int, default=0,
                    help="connections for moto (default: --connections)")
    ap.add_argument("--moto-cap", type=int, default=60,
                    help="longest window for one moto run, seconds")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each nubo/nginx pair, interleaved; the table shows the median")
    ap.add_argument("--nginx-workers", default="auto")
    ap.add_argument("--budget", type=int, default=300, help="seconds; no new step after it")
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("--keep", help="work directory to use and keep (default: a temporary one)")
    args = ap.parse_args()
    counts = sorted(int(x) for x in args.records.split(","))
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in ("all", "filtered", "uncached", "changing", "reporting"):
            ap.error(f"unknown variant {v}")
    build = Path(os.environ.get("NUBO_BUILD", REPO / "build")).resolve()
    if not (build / "src/nubod").exists():
        sys.exit(f"no nubod in {build}: build first (ninja -C {build})")
    if not shutil.which("wrk"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        if not shutil.which("wrk"):
            sys.exit("wrk is missing (apt-get install wrk)")
    Nginx.ensure_installed()

    start = time.monotonic()
    deadline = start + args.budget

    def on_signal(sig, frame):
        raise Aborted(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    # a hard stop well after the budget: whatever runs then is cut short
    signal.alarm(args.budget + 240 + (args.moto_cap if args.moto_max >= counts[-1] else 0))

    enter_netns()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nubo-bench-ec2."))
    work.mkdir(parents=True, exist_ok=True)
    procs = Procs()
    results = {"date": datetime.datetime.now().isoformat(timespec="seconds"),
               "machine": machine(), "settings": {
                   "threads": args.threads, "connections": args.conns,
                   "duration_s": args.duration, "repeat": args.repeat,
                   "build": str(build)}, "runs": []}
    rc = 0
    try:
        rc = bench(args, counts, variants, build, work, procs, deadline, results)
    except Aborted as e:
        log(f"aborted: {e}")
        rc = 2
    finally:
        signal.alarm(0)
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    log(f"total {time.monotonic() - start:.0f} s")
    return rc


def machine():
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def bench(args, counts, variants, build, work, procs, deadline, results):
    nubo = Nubo(procs, build, work)
    nubo.start()
    key, image_id = nubo.setup(work)
    nubo.stop()
    nginx = Nginx(procs, work)
    moto = None
    plan = record_plan(counts[-1], seed=20240601)
    table = []
    goals_ok = True
    for n in counts:
        if time.monotonic() > deadline:
            raise Aborted("budget spent")
        recs = plan[:n]
        t = time.monotonic()
        seed_nubo_db(nubo.state / "nubo.db", key["account_id"], image_id, recs)
        log(f"[{n}] seeded nubo's store in {time.monotonic() - t:.1f} s")
        nubo.start()
        bodies = {"all": [BODY_ALL], "filtered": [BODY_FILTERED],
                  "uncached": [BODY_ALL + "&Filter.1.Name=instance-id&Filter.1.Value.1=i-%2A"
                               f"&Filter.1.Value.2=i-{k:017x}" for k in range(UNCACHED_DISTINCT)],
                  "reporting": [BODY_ALL]}
        bodies["changing"] = bodies["uncached"]
        expect = {"all": n, "uncached": n, "changing": n, "reporting": n,
                  "filtered": sum(1 for r in recs if r["state"] == "running" and r["team"] == "blue")}
        sizes, prepared = {}, {}
        for v in variants:
            signed = Signed(nubo.port, key["access_key_id"], key["secret_access_key"],
                            bodies[v], REGION)
            t = time.monotonic()
            status, body = signed.fetch(0)
            cold = time.monotonic() - t
            if status != 200:
                raise RuntimeError(f"nubo {v}: {status} {body[:500]!r}")
            got = body.count(b"<instanceId>")
            if got != expect[v]:
                raise RuntimeError(f"nubo {v}: {got} instances in the answer, expected {expect[v]}")
            sizes[v] = len(body)
            log(f"[{n}] nubo {v}: {len(body):,} bytes, {got} instances, first answer "
                f"{cold * 1000:.1f} ms")
            if v in ("all", "filtered"):
                nginx.put(f"describe-{v}.xml", body)
            script = work / f"nubo-{n}-{v}.lua"
            wrk_script(script, "POST", signed.reqs)
            prepared[v] = (script, got, cold, signed)
        # nginx, the static ceiling, runs beside nubod; each nubo run is
        # followed by its nginx run, so that both see the same machine
        nginx.start(args.nginx_workers)
        ngscript = work / "nginx.lua"
        wrk_script(ngscript, "GET", [("", {})])
        for rep in range(args.repeat):
            for v in variants:
                if time.monotonic() > deadline:
                    raise Aborted("budget spent")
                script, got, cold, signed = prepared[v]
                if v in ("all", "filtered"):
                    # steady state: the answer is in nubod's cache before the
                    # run (an earlier "reporting" run leaves it stale; the
                    # first misses would otherwise all be computed at once)
                    status, _ = signed.fetch(0)
                    if status != 200:
                        raise RuntimeError(f"nubo {v}: {status}")
                reporter = Reporter(nubo.port) if v == "reporting" else None
                changer = Changer(nubo.port, key, next(r["id"] for r in recs if r["state"] == "running")) \
                    if v == "changing" else None
                try:
                    r = run_wrk(f"http://127.0.0.1:{nubo.port}/", script, args, args.duration,
                                10, nubo.proc.pid)
                finally:
                    if reporter:
                        reporter.stop()
                    if changer:
                        changer.stop()
                if reporter:
                    r["reports"] = reporter.sent
                if changer:
                    r["changes"] = changer.sent
                check_wrk("nubo", v, r, sizes[v])
                r.update(server="nubo", records=n, variant=v, size=sizes[v], instances=got,
                         first_ms=cold * 1000, rep=rep)
                results["runs"].append(r)
                log(f"[{n}] nubo {v}: {r['rps']:,.1f} req/s, p99 {r['p99_us'] / 1000:.2f} ms")
                if v not in ("all", "filtered"):
                    continue
                r = run_wrk(f"http://127.0.0.1:{nginx.port}/describe-{v}.xml", ngscript, args,
                            args.duration, 10, nginx.proc.pid)
                check_wrk("nginx", v, r, sizes[v])
                r.update(server="nginx", records=n, variant=v, size=sizes[v], rep=rep)
                results["runs"].append(r)
                log(f"[{n}] nginx {v}: {r['rps']:,.1f} req/s, p99 {r['p99_us'] / 1000:.2f} ms")
        nginx.stop()
        nubo.stop()

        # moto
        if n <= args.moto_max and not shutil.which("moto_server"):
            log(f"[{n}] moto not run: moto_server is not on PATH (pip install 'moto[server]')")
        elif n <= args.moto_max:
            if time.monotonic() > deadline:
                raise Aborted("budget spent")
            if moto is None:
                moto = Moto(procs, work)
                moto.start()
            t = time.monotonic()
            moto.grow(recs, deadline)
            log(f"[{n}] moto: {n} instances made in {time.monotonic() - t:.1f} s")
            conns = args.moto_connections or args.conns
            margs = argparse.Namespace(**vars(args))
            margs.conns = conns
            for v in ("all", "filtered"):
                if v not in variants:
                    continue
                if time.monotonic() > deadline:
                    raise Aborted("budget spent")
                signed = Signed(moto.port, *Moto.KEY, bodies[v], MOTO_REGION)
                t = time.monotonic()
                status, body = signed.fetch(0)
                one = time.monotonic() - t
                if status == 200 and one < args.duration:
                    # moto's first answer of a kind is slower: time a second
                    t = time.monotonic()
                    status, body = signed.fetch(0)
                    one = time.monotonic() - t
                if status != 200:
                    raise RuntimeError(f"moto {v}: {status} {body[:500]!r}")
                got = body.count(b"<instanceId>")
                if got != expect[v] or b"<nextToken>" in body:
                    raise RuntimeError(f"moto {v}: {got} instances in the answer, expected {expect[v]}")
                # long enough for every connection to get an answer (moto
                # serves one request at a time): stretched, bounded
                window = max(args.duration, min(args.moto_cap, int(one * (conns + 1) * 1.3) + 1))
                log(f"[{n}] moto {v}: {len(body):,} bytes, {got} instances, one answer "
                    f"{one:.2f} s; window {window} s")
                script = work / f"moto-{n}-{v}.lua"
                wrk_script(script, "POST", signed.reqs)
                r = run_wrk(f"http://127.0.0.1:{moto.port}/", script, margs, window,
                            max(10, int(one * (conns + 2) * 1.5) + 1), moto.proc.pid)
                check_wrk("moto", v, r, None)
                r.update(server="moto", records=n, variant=v, size=len(body), instances=got,
                         first_ms=one * 1000)
                results["runs"].append(r)
                log(f"[{n}] moto {v}: {r['rps']:.3g} req/s, p99 {r['p99_us'] / 1000:.0f} ms "
                    f"({r['requests']:.0f} answers)")
        else:
            log(f"[{n}] moto not run at {n} records (--moto-max {args.moto_max})")

        for v in variants:
            def get(server, variant):
                """The run of median req/s among the repetitions."""
                rs = sorted((r for r in results["runs"]
                             if (r["server"], r["records"], r["variant"]) == (server, n, variant)),
                            key=lambda r: r["rps"])
                return rs[(len(rs) - 1) // 2] if rs else None
            nb = get("nubo", v)
            base = "filtered" if v == "filtered" else "all"
            mo, ng = get("moto", base), get("nginx", base)
            rm, rn = ratio(nb, mo), ratio(nb, ng)
            ok_m = None if rm is None else rm >= GOAL_MOTO
            ok_n = None if rn is None else rn >= GOAL_NGINX
            if v == "all":
                goals_ok &= ok_m is not False and ok_n is not False
            table.append((n, v, nb, mo, ng, rm, rn, ok_m, ok_n))

    report(args, results, table)
    results["goals_met"] = goals_ok
    return 0


def check_wrk(server, v, r, size):
    if r["requests"] == 0:
        raise RuntimeError(f"{server} {v}: wrk got no answer")
    if r["errors"]:
        log(f"warning: {server} {v}: wrk errors: connect {r['connect']} read {r['read']} "
            f"write {r['write']} status {r['status']} timeout {r['timeout']}")
        if r["status"]:
            raise RuntimeError(f"{server} {v}: {r['status']} answers were not 2xx")
    if size is not None and r["bytes"] / r["requests"] < size:
        raise RuntimeError(f"{server} {v}: {r['bytes'] / r['requests']:.0f} bytes per answer, "
                           f"expected at least {size}")


def report(args, results, table):
    print(f"EC2 DescribeInstances (SigV4), {results['date']}, {results['machine']}")
    print(f"wrk -t{args.threads} -c{args.conns} -d{args.duration}s"
          + (f", median of {args.repeat} interleaved runs" if args.repeat > 1 else "")
          + " (moto: window stretched, see notes)\n")
    print("| records | variant | answer bytes | nubo req/s | nubo p99 ms | moto req/s "
          "| moto p99 ms | nginx req/s | nginx p99 ms | nubo/moto | nubo/nginx |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n, v, nb, mo, ng, rm, rn, _, _ in table:
        print(f"| {n:,} | {v} | {nb['size']:,} | {fmt_rps(nb)} | {fmt_ms(nb)} | {fmt_rps(mo)} "
              f"| {fmt_ms(mo)} | {fmt_rps(ng)} | {fmt_ms(ng)} | {fmt_ratio(rm)} | {fmt_ratio(rn)} |")
    print()
    for n, v, nb, mo, ng, rm, rn, ok_m, ok_n in table:
        gm = "no moto run" if ok_m is None else ("met" if ok_m else "NOT met")
        gn = "no nginx run" if ok_n is None else ("met" if ok_n else "NOT met")
        print(f"goal at {n:,} records, {v}: >= {GOAL_MOTO:.0f}x moto {gm}; "
              f">= {GOAL_NGINX:.0%} of nginx {gn}")
    print()
    print("| records | variant | server | answers | req/s | p50 ms | p99 ms | max ms "
          "| CPU server | CPU wrk | CPU other |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["runs"]:
        print(f"| {r['records']:,} | {r['variant']} | {r['server']} | {r['requests']:,.0f} "
              f"| {fmt_rps(r)} | {r['p50_us'] / 1000:.3g} | {fmt_ms(r)} "
              f"| {r['max_us'] / 1000:,.4g} | {r['cpu_server']:.0%} | {r['cpu_wrk']:.0%} "
              f"| {r['cpu_other']:.0%} |")
    print("\n(CPU: share of all cores during the run; \"other\" is the rest of the machine)")
    for r in results["runs"]:
        if r.get("reports") is not None:
            print(f"nubo {r['records']:,} reporting: {r['reports']} agent reports during the run")
        if r.get("changes") is not None:
            print(f"nubo {r['records']:,} changing: {r['changes']} store changes during the run")
        if r["server"] == "moto":
            print(f"moto {r['records']:,} {r['variant']}: {r['requests']:.0f} answers in "
                  f"{r['duration_us'] / 1e6:.0f} s on {args.moto_connections or args.conns} "
                  f"connections; one answer alone {r['first_ms'] / 1000:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
