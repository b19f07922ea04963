#!/usr/bin/python3
"""S3 API throughput (issue 4): nubod's S3 endpoint against ceilings and peers.

Two sections, every server started and stopped here, run back to back:

  large  GET and PUT of one 1 GiB object, MB/s. GET: curl to /dev/null from
         nubod (SigV4-signed) and from nginx serving the very same data file
         (a hard link to the file nubod stored, `sendfile on`): the ceiling.
         PUT: one streaming signed PUT by curl (UNSIGNED-PAYLOAD) of a file in
         the page cache, against `dd bs=1M conv=fsync` of the same file onto
         the filesystem of nubod's s3_dir: the ceiling. Each pair runs
         --large-reps times, interleaved; the table shows the medians.
  small  4 KiB objects, --conns (16) concurrent clients, PUT (each to a new
         key) then GET (over the keys just put) ops/s and p99, against s3rver
         (npm) and moto_server. Load: bench/s3load (C, epoll, one request in
         flight per connection, every request SigV4-signed; built by meson).
         Each run stops after --count requests or --duration seconds; each
         server's PUT+GET pair runs --small-reps times, interleaved with the
         others'; the table shows the run of median ops/s. Each round also
         runs two ceilings: s3load against nginx serving 4 KiB files (what
         the client can drive) and --conns threads of write+fsync+rename+
         directory fsync (what durable small writes cost on this disk).

Goals (the issue): GET >= 80% of nginx, PUT >= 70% of dd, small objects
(PUT and GET) >= 10x s3rver.

Everything runs in a network namespace of this process's own (loopback
only); every process started here is stopped by pid on every path; --budget
stops new steps and an alarm cuts the run short after it.

usage: s3.py [--sections large,small] [--size-mib 1024] [--large-reps 3]
             [--conns 16] [--count 50000] [--duration 10] [--small-reps 3]
             [--peers s3rver,moto] [--budget 420] [--json FILE] [--keep DIR]
environment: NUBO_BUILD (build directory, default build),
             NUBO_BENCH_CACHE (where s3rver is installed, default
             /var/cache/nubo/bench)

Prints Markdown tables, the machine's noise and whether the goals are met.
Exits 0 after a complete run, met or not; 1 on an error; 2 when stopped
early (budget, signal).
"""

import argparse
import datetime
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ec2_describe as ec2  # noqa: E402  (its processes, nginx, CPU accounting)

REPO = Path(__file__).resolve().parents[1]
REGION = "nubo-1"
PEER_REGION = "us-east-1"
S3RVER_VERSION = "3.7.1"  # works on Node 20 (s3rver 3.x needs Node >= 8.3)
S3RVER_KEY = ("S3RVER", "S3RVER")  # s3rver's built-in credentials
MOTO_KEY = ("AKIAMOTOBENCH0000000", "moto-bench-secret")  # moto accepts any
GOAL_GET = 0.80    # GET of 1 GiB at least 80% of nginx's MB/s
GOAL_PUT = 0.70    # PUT of 1 GiB at least 70% of dd's
GOAL_SMALL = 10.0  # 4 KiB PUT and GET ops/s at least 10x s3rver's
EMPTY_SHA = hashlib.sha256(b"").hexdigest()
Aborted = ec2.Aborted
log = ec2.log


# ---------------------------------------------------------------- signing

def sign(method, port, path, key, region, payload=EMPTY_SHA, query=""):
    """SigV4 headers for a path-style request to 127.0.0.1:port (no other header signed)."""
    key_id, secret = key
    t = time.gmtime()
    amzdate, date = time.strftime("%Y%m%dT%H%M%SZ", t), time.strftime("%Y%m%d", t)
    host = f"127.0.0.1:{port}"
    canon = (f"{method}\n{path}\n{query}\nhost:{host}\nx-amz-content-sha256:{payload}\n"
             f"x-amz-date:{amzdate}\n\nhost;x-amz-content-sha256;x-amz-date\n{payload}")
    scope = f"{date}/{region}/s3/aws4_request"
    sts = f"AWS4-HMAC-SHA256\n{amzdate}\n{scope}\n{hashlib.sha256(canon.encode()).hexdigest()}"
    k = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    return {"Host": host, "x-amz-date": amzdate, "x-amz-content-sha256": payload,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, "
                             f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={sig}"}


def s3_call(srv, method, path, body=b"", ok=(200, 204)):
    payload = hashlib.sha256(body).hexdigest()
    status, data = ec2.http_call(srv.port, method, path, body or None,
                                 sign(method, srv.port, path, srv.key, srv.region, payload),
                                 timeout=120)
    if status not in ok:
        raise RuntimeError(f"{srv.name} {method} {path}: {status} {data[:300]!r}")
    return data


# ---------------------------------------------------------------- servers

class Nubo(ec2.Nubo):
    name = "nubo"
    region = REGION

    def __init__(self, procs, build, work):
        super().__init__(procs, build, work)
        self.s3_port = ec2.free_port()

    def start(self):
        self.proc = self.procs.start("nubod", [
            str(self.build / "src/nubod"), "-s", f"state_dir={self.state}",
            "-s", f"api_listen=127.0.0.1:{self.port}",
            "-s", f"s3_listen=127.0.0.1:{self.s3_port}", "-s", "log_level=warn"], self.log)
        ec2.wait_until(self._health, 20, "nubod health")
        ec2.wait_until(self._s3_up, 20, "nubod's S3 listener")
        self.token = (self.state / "admin.token").read_text().strip()

    def _s3_up(self):
        try:
            with socket.create_connection(("127.0.0.1", self.s3_port), timeout=1):
                return True
        except OSError:
            return False

    def setup(self):
        self.api("POST", "/v1/accounts", {"name": "bench"})
        k = self.api("POST", "/v1/keys", {"account": "bench", "user": "admin"})
        self.key = (k["access_key_id"], k["secret_access_key"])

    @property
    def pid(self):
        return self.proc.pid

    @property
    def s3dir(self):
        return self.state / "objects"


class S3Server:
    """The s3 side of a nubod (port, key, region) for s3_call and s3load."""

    def __init__(self, name, port, key, region, pid):
        self.name, self.port, self.key, self.region, self.pid = name, port, key, region, pid


class S3rver:
    name = "s3rver"

    def __init__(self, procs, work):
        self.procs, self.work = procs, work
        self.port = ec2.free_port()

    @staticmethod
    def ensure_installed():
        """s3rver's path, installing it with npm into the cache dir when missing; None if not."""
        cache = Path(os.environ.get("NUBO_BENCH_CACHE", "/var/cache/nubo/bench"))
        exe = cache / "node_modules/.bin/s3rver"
        pkg = cache / "node_modules/s3rver/package.json"
        if exe.exists() and pkg.exists() and \
                json.loads(pkg.read_text()).get("version") == S3RVER_VERSION:
            return exe
        if not shutil.which("npm"):
            log("s3rver not run: npm is missing (apt-get install npm)")
            return None
        cache.mkdir(parents=True, exist_ok=True)
        if not (cache / "package.json").exists():
            (cache / "package.json").write_text('{"name": "nubo-bench-peers", "private": true}\n')
        log(f"installing s3rver {S3RVER_VERSION} (npm) into {cache}")
        p = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(cache),
                            f"s3rver@{S3RVER_VERSION}"], capture_output=True, text=True,
                           timeout=300)
        if p.returncode != 0 or not exe.exists():
            log(f"s3rver not run: npm install failed: {p.stderr[-500:]}")
            return None
        return exe

    def start(self, exe):
        d = self.work / "s3rver-data"
        d.mkdir(parents=True, exist_ok=True)
        self.proc = self.procs.start("s3rver", [str(exe), "-d", str(d), "-a", "127.0.0.1",
                                                "-p", str(self.port), "-s"],
                                     self.work / "s3rver.log")
        ec2.wait_until(self._up, 60, "s3rver")
        return S3Server("s3rver", self.port, S3RVER_KEY, PEER_REGION, self.proc.pid)

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"s3rver exited ({self.proc.returncode}): see "
                               f"{self.work / 's3rver.log'}")
        try:
            return ec2.http_call(self.port, "GET", "/", None,
                                 sign("GET", self.port, "/", S3RVER_KEY, PEER_REGION),
                                 timeout=2)[0] == 200
        except OSError:
            return False


class Moto:
    name = "moto"

    def __init__(self, procs, work):
        self.procs, self.work = procs, work
        self.port = ec2.free_port()

    def start(self, exe):
        self.proc = self.procs.start("moto_server", [exe, "-H", "127.0.0.1", "-p", str(self.port)],
                                     self.work / "moto.log")
        ec2.wait_until(self._up, 60, "moto_server")
        return S3Server("moto", self.port, MOTO_KEY, PEER_REGION, self.proc.pid)

    def _up(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto_server exited ({self.proc.returncode})")
        try:
            return ec2.http_call(self.port, "GET", "/moto-api/", timeout=2)[0] == 200
        except OSError:
            return False


# ---------------------------------------------------------------- measuring

class Cpu:
    """CPU shares of a step (of all cores): the server, our clients, the rest."""

    def __init__(self, server_pid):
        self.pid = server_pid
        self.busy0, self.srv0 = ec2.cpu_busy_ticks(), ec2.cpu_tree_ticks(server_pid)
        self.kids0, self.t0 = ec2.children_ticks(), time.monotonic()
        self.load0 = os.getloadavg()[0]

    def done(self, r):
        elapsed = time.monotonic() - self.t0
        busy = ec2.cpu_busy_ticks() - self.busy0
        srv = ec2.cpu_tree_ticks(self.pid) - self.srv0 if self.pid else 0
        cli = ec2.children_ticks() - self.kids0
        hz, ncpu = os.sysconf("SC_CLK_TCK"), os.cpu_count()
        r["cpu_server"] = srv / hz / elapsed / ncpu
        r["cpu_client"] = cli / hz / elapsed / ncpu
        r["cpu_other"] = max(0.0, (busy - srv - cli) / hz / elapsed / ncpu)
        r["load"] = max(self.load0, os.getloadavg()[0])
        return r


def run_curl(argv, server_pid, expect_bytes, what):
    cpu = Cpu(server_pid)
    p = subprocess.run(["curl", "-sS", "--max-time", "300", "-w",
                        "%{http_code} %{size_download} %{size_upload} %{time_total}"] + argv,
                       capture_output=True, text=True, timeout=330)
    if p.returncode != 0:
        raise RuntimeError(f"{what}: curl failed ({p.returncode}): {p.stderr[-500:]}")
    code, down, up, total = p.stdout.split()[-4:]
    r = {"status": int(code), "bytes": max(int(down), int(up)), "secs": float(total)}
    if r["status"] not in (200, 204) or r["bytes"] != expect_bytes:
        raise RuntimeError(f"{what}: status {code}, {r['bytes']} bytes (expected "
                           f"{expect_bytes}): {p.stdout[:300]}")
    r["mbs"] = r["bytes"] / r["secs"] / 1e6
    return cpu.done(r)


def run_dd(src, dst, size):
    cpu = Cpu(0)
    t0 = time.monotonic()
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none"],
                   check=True, timeout=300)
    secs = time.monotonic() - t0
    if dst.stat().st_size != size:
        raise RuntimeError(f"dd wrote {dst.stat().st_size} bytes, expected {size}")
    return cpu.done({"bytes": size, "secs": secs, "mbs": size / secs / 1e6})


def run_load(build, srv, op, args, prefix, keys, count):
    argv = [str(build / "bench/s3load"), "-p", str(srv.port), "-b", "bench4k", "-o", op,
            "-c", str(args.conns), "-n", str(count), "-d", str(args.duration), "-s", "4096",
            "-k", str(max(1, keys)), "-x", prefix, "-a", srv.key[0], "-S", srv.key[1],
            "-r", srv.region]
    cpu = Cpu(srv.pid)
    p = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 120)
    if p.returncode != 0:
        raise RuntimeError(f"s3load {srv.name} {op} failed ({p.returncode}): {p.stderr[-500:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["argv"] = " ".join(argv[:1] + argv[3:10] + argv[11:14])
    return cpu.done(r)


# ---------------------------------------------------------------- sections

def large(args, build, work, procs, nubo, deadline, results):
    size = args.size_mib << 20
    src = work / "large.src"
    log(f"[large] writing a {args.size_mib} MiB source file")
    md5 = hashlib.md5()
    with open(src, "wb") as f:
        for _ in range(args.size_mib):
            b = os.urandom(1 << 20)
            md5.update(b)
            f.write(b)
    etag = md5.hexdigest()
    srv = S3Server("nubo", nubo.s3_port, nubo.key, REGION, nubo.pid)
    s3_call(srv, "PUT", "/bench-large")
    url = f"http://127.0.0.1:{nubo.s3_port}/bench-large/large.bin"
    dd_out = nubo.state / "dd.out"  # the filesystem of the objects (s3_dir is under state_dir)

    def put_nubo():
        h = sign("PUT", nubo.s3_port, "/bench-large/large.bin", nubo.key, REGION,
                 "UNSIGNED-PAYLOAD")
        hdrs = sum((["-H", f"{k}: {v}"] for k, v in h.items() if k != "Host"), [])
        r = run_curl(["-o", str(work / "put.out"), "-D", str(work / "put.hdr"), "-T", str(src),
                      "-H", "Expect:", "-H", "Content-Type: application/octet-stream"]
                     + hdrs + [url], nubo.pid, size, "nubo PUT")
        got = [ln.split(":", 1)[1].strip().strip('"') for ln in
               (work / "put.hdr").read_text().splitlines() if ln.lower().startswith("etag:")]
        if got != [etag]:
            raise RuntimeError(f"nubo PUT: ETag {got}, expected the MD5 {etag}")
        return r

    def get_nubo():
        h = sign("GET", nubo.s3_port, "/bench-large/large.bin", nubo.key, REGION)
        hdrs = sum((["-H", f"{k}: {v}"] for k, v in h.items() if k != "Host"), [])
        return run_curl(["-o", "/dev/null"] + hdrs + [url], nubo.pid, size, "nubo GET")

    # PUT: dd and nubo, interleaved; dd's file and nubo's object replaced each round
    for rep in range(args.large_reps):
        if time.monotonic() > deadline:
            raise Aborted("budget spent")
        subprocess.run(["cat", str(src)], stdout=subprocess.DEVNULL, check=True)  # in cache
        r = run_dd(src, dd_out, size)
        dd_out.unlink()
        r.update(section="large", op="PUT", server="dd", rep=rep)
        results["runs"].append(r)
        log(f"[large] dd conv=fsync: {r['mbs']:.0f} MB/s ({r['secs']:.2f} s)")
        r = put_nubo()
        r.update(section="large", op="PUT", server="nubo", rep=rep)
        results["runs"].append(r)
        log(f"[large] nubo PUT: {r['mbs']:.0f} MB/s ({r['secs']:.2f} s)")
    # GET: the object's data file, hard-linked into nginx's root
    data = max((p for p in nubo.s3dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    if data.stat().st_size != size:
        raise RuntimeError(f"no {size}-byte data file under {nubo.s3dir}")
    nginx = ec2.Nginx(procs, work)
    www = nginx.prefix / "www"
    www.mkdir(parents=True, exist_ok=True)
    os.link(data, www / "large.bin")
    nginx.start("auto")
    ngurl = f"http://127.0.0.1:{nginx.port}/large.bin"
    get_nubo()  # both read the same pages: make sure they are cached
    for rep in range(args.large_reps):
        if time.monotonic() > deadline:
            raise Aborted("budget spent")
        r = run_curl(["-o", "/dev/null", ngurl], nginx.proc.pid, size, "nginx GET")
        r.update(section="large", op="GET", server="nginx", rep=rep)
        results["runs"].append(r)
        log(f"[large] nginx GET: {r['mbs']:.0f} MB/s ({r['secs']:.2f} s)")
        r = get_nubo()
        r.update(section="large", op="GET", server="nubo", rep=rep)
        results["runs"].append(r)
        log(f"[large] nubo GET: {r['mbs']:.0f} MB/s ({r['secs']:.2f} s)")
    nginx.stop()
    (www / "large.bin").unlink()
    s3_call(srv, "DELETE", "/bench-large/large.bin")
    s3_call(srv, "DELETE", "/bench-large")
    src.unlink()


def small(args, build, work, procs, nubo, deadline, results):
    servers = [S3Server("nubo", nubo.s3_port, nubo.key, REGION, nubo.pid)]
    if "s3rver" in args.peers and args.s3rver_exe:
        servers.append(S3rver(procs, work).start(args.s3rver_exe))
    if "moto" in args.peers:
        exe = shutil.which("moto_server")
        if exe:
            servers.append(Moto(procs, work).start(exe))
        else:
            log("moto not run: moto_server is not on PATH (pip install 'moto[server]')")
    for srv in servers:
        s3_call(srv, "PUT", "/bench4k")
        # warm-up (JITs, caches, SQLite pages), not counted
        w = run_load(build, srv, "put", args, "warm/", 1, 300)
        w2 = run_load(build, srv, "get", args, "warm/", 300, 300)
        for x, op in ((w, "PUT"), (w2, "GET")):
            if x["errors"]:
                raise RuntimeError(f"{srv.name} warm-up {op}: {x['errors']} errors: "
                                   f"{x['first_error']}")
        log(f"[small] {srv.name}: warm-up {w['rps']:.0f} PUT/s, {w2['rps']:.0f} GET/s")
    nginx = None
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        # the load generator's own ceiling: nginx serving 4 KiB files at the
        # same paths (it ignores the signature)
        nginx = ec2.Nginx(procs, work)
        d = nginx.prefix / "www/bench4k/c"
        d.mkdir(parents=True, exist_ok=True)
        body = bytes((ord("a") + (i * 7 + i // 64) % 26) for i in range(4096))
        for i in range(1000):
            (d / f"{i:08d}").write_bytes(body)
        nginx.start("auto")
        ng = S3Server("nginx", nginx.port, nubo.key, REGION, nginx.proc.pid)
    for rep in range(args.small_reps):
        if nginx:
            r = run_load(build, ng, "get", args, "c/", 1000, args.count)
            r.update(section="small", op="GET", server="nginx", rep=rep)
            results["runs"].append(r)
            check_load(r)
            log(f"[small] nginx GET (the client's ceiling): {r['rps']:,.0f} ops/s, "
                f"p99 {r['p99_us'] / 1000:.2f} ms")
        r = fsync_ceiling(work / f"fsync{rep}", args)
        r.update(section="small", op="PUT", server="fsync", rep=rep)
        results["runs"].append(r)
        log(f"[small] durable-write ceiling: {r['rps']:,.0f} ops/s, p99 {r['p99_us'] / 1000:.2f} ms")
        for srv in servers:
            if time.monotonic() > deadline:
                raise Aborted("budget spent")
            prefix = f"r{rep}/"
            r = run_load(build, srv, "put", args, prefix, 1, args.count)
            r.update(section="small", op="PUT", server=srv.name, rep=rep)
            results["runs"].append(r)
            check_load(r)
            log(f"[small] {srv.name} PUT: {r['rps']:,.0f} ops/s, p99 {r['p99_us'] / 1000:.2f} ms"
                f" ({r['requests']} in {r['duration_s']:.1f} s)")
            ok = r["requests"] - r["errors"]
            r = run_load(build, srv, "get", args, prefix, ok, args.count)
            r.update(section="small", op="GET", server=srv.name, rep=rep, keys=ok)
            results["runs"].append(r)
            check_load(r)
            log(f"[small] {srv.name} GET: {r['rps']:,.0f} ops/s, p99 {r['p99_us'] / 1000:.2f} ms"
                f" ({r['requests']} in {r['duration_s']:.1f} s)")
    if nginx:
        nginx.stop()
    return [s.name for s in servers]


def fsync_ceiling(d, args):
    """What durable small writes cost on this disk: --conns threads each writing
    4 KiB to a new file, fsync, rename, fsync of the directory (what nubod does
    per object, without its SQLite commit)."""
    import threading
    d.mkdir(parents=True)
    dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    body = b"x" * 4096
    lat, lock = [], threading.Lock()
    t_end = time.monotonic() + min(args.duration, 5)
    n = [0]

    def worker(k):
        i = 0
        while time.monotonic() < t_end:
            with lock:
                if n[0] >= args.count:
                    return
                n[0] += 1
            t0 = time.monotonic()
            tmp, dst = d / f"t{k}-{i}", d / f"o{k}-{i}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, body)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmp, dst)
            os.fsync(dfd)
            lat.append(time.monotonic() - t0)
            i += 1

    cpu = Cpu(0)
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(args.conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    secs = time.monotonic() - t0
    os.close(dfd)
    # The files stay until the work dir goes at the end of the run: on ext4
    # without a journal (this machine's) a new inode skips every inode freed
    # in the last 60 s (360 s while its table block is dirty; recently_deleted
    # in fs/ext4/ialloc.c), so removing thousands here made the next step's
    # file creations (nubod's PUTs) scan past them: a third of nubod's CPU.
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, max(0, int(p / 100 * len(lat) + 0.999999) - 1))] * 1e6
    r = {"requests": len(lat), "errors": 0, "duration_s": secs, "rps": len(lat) / secs,
         "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99), "max_us": lat[-1] * 1e6}
    return cpu.done(r)


def check_load(r):
    if r["requests"] == 0:
        raise RuntimeError(f"{r['server']} {r['op']}: no answer")
    if r["errors"]:
        log(f"warning: {r['server']} {r['op']}: {r['errors']} errors of {r['requests']} "
            f"(4xx {r['status_4xx']}, 5xx {r['status_5xx']}, I/O {r['io_errors']}, "
            f"short {r['bad_len']}): {r['first_error']}")
        if r["errors"] > r["requests"] // 100:
            raise RuntimeError(f"{r['server']} {r['op']}: more than 1% errors")


# ---------------------------------------------------------------- report

def median_run(results, section, op, server, key):
    rs = sorted((r for r in results["runs"]
                 if (r["section"], r["op"], r["server"]) == (section, op, server)),
                key=lambda r: r[key])
    return rs[(len(rs) - 1) // 2] if rs else None


def noise(rs):
    rs = [r for r in rs if r]
    if not rs:
        return "-"
    return (f"load {min(r['load'] for r in rs):.1f}-{max(r['load'] for r in rs):.1f}, "
            f"other CPU {min(r['cpu_other'] for r in rs):.0%}-{max(r['cpu_other'] for r in rs):.0%}")


def report(args, results, peers):
    print(f"S3, {results['date']}, {results['machine']}\n")
    goals = []
    if "large" in results["sections"]:
        print(f"### {args.size_mib} MiB object, MB/s (median of {args.large_reps}, interleaved)\n")
        print("| op | nubo MB/s | ceiling | ceiling MB/s | nubo/ceiling | goal | noise |")
        print("| --- | ---: | --- | ---: | ---: | --- | --- |")
        for op, peer, goal, what in (("GET", "nginx", GOAL_GET, "nginx, sendfile, same file"),
                                     ("PUT", "dd", GOAL_PUT, "dd bs=1M conv=fsync")):
            nb = median_run(results, "large", op, "nubo", "mbs")
            pr = median_run(results, "large", op, peer, "mbs")
            if not nb or not pr:
                continue
            x = nb["mbs"] / pr["mbs"]
            ok = x >= goal
            goals.append((f"{op} 1 GiB >= {goal:.0%} of {peer}", ok, f"{x:.0%}"))
            print(f"| {op} | {nb['mbs']:,.0f} | {what} | {pr['mbs']:,.0f} | {x:.0%} "
                  f"| >= {goal:.0%}: {'met' if ok else 'NOT met'} | {noise([nb, pr])} |")
        print()
    if "small" in results["sections"]:
        print(f"### 4 KiB objects, {args.conns} connections (run of median ops/s of "
              f"{args.small_reps}, interleaved)\n")
        hdr = "| op | nubo ops/s | nubo p99 ms |"
        sep = "| --- | ---: | ---: |"
        for p in peers[1:]:
            hdr += f" {p} ops/s | {p} p99 ms | nubo/{p} |"
            sep += " ---: | ---: | ---: |"
        print(hdr + "\n" + sep)
        for op in ("PUT", "GET"):
            nb = median_run(results, "small", op, "nubo", "rps")
            if not nb:
                continue
            line = f"| {op} | {nb['rps']:,.0f} | {nb['p99_us'] / 1000:.3g} |"
            for p in peers[1:]:
                pr = median_run(results, "small", op, p, "rps")
                if not pr:
                    line += " - | - | - |"
                    continue
                x = nb["rps"] / pr["rps"]
                line += f" {pr['rps']:,.0f} | {pr['p99_us'] / 1000:.3g} | {x:.3g}x |"
                if p == "s3rver":
                    goals.append((f"4 KiB {op} >= {GOAL_SMALL:.0f}x s3rver", x >= GOAL_SMALL,
                                  f"{x:.3g}x"))
            print(line)
        print()
        ng = median_run(results, "small", "GET", "nginx", "rps")
        fs = median_run(results, "small", "PUT", "fsync", "rps")
        nbg = median_run(results, "small", "GET", "nubo", "rps")
        nbp = median_run(results, "small", "PUT", "nubo", "rps")
        if ng and nbg:
            print(f"ceilings: s3load against nginx serving 4 KiB files: {ng['rps']:,.0f} GET/s, "
                  f"p99 {ng['p99_us'] / 1000:.3g} ms (nubo at {nbg['rps'] / ng['rps']:.0%});")
        if fs and nbp:
            print(f"durable 4 KiB writes on this disk ({args.conns} threads: write, fsync, rename, "
                  f"fsync dir): {fs['rps']:,.0f}/s, p99 {fs['p99_us'] / 1000:.3g} ms "
                  f"(nubo PUT at {nbp['rps'] / fs['rps']:.0%})")
        print()
    for what, ok, val in goals:
        print(f"goal {what}: {'met' if ok else 'NOT met'} ({val})")
    print()
    print("| section | op | server | rep | result | p50 ms | p99 ms | requests | errors "
          "| CPU server | CPU client | CPU other | load |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results["runs"]:
        if r["section"] == "large":
            res, p50, p99, n, e = f"{r['mbs']:,.0f} MB/s", "-", "-", "1", "0"
        else:
            res = f"{r['rps']:,.0f} ops/s"
            p50, p99 = f"{r['p50_us'] / 1000:.3g}", f"{r['p99_us'] / 1000:.3g}"
            n, e = f"{r['requests']:,}", f"{r['errors']}"
        print(f"| {r['section']} | {r['op']} | {r['server']} | {r['rep']} | {res} | {p50} | {p99} "
              f"| {n} | {e} | {r['cpu_server']:.0%} | {r['cpu_client']:.0%} "
              f"| {r['cpu_other']:.0%} | {r['load']:.2f} |")
    print("\n(CPU: share of both cores during the step; client is curl, dd or s3load; "
          "\"other\" is the rest of the machine; load: the 1-minute load average)")
    return all(ok for _, ok, _ in goals)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default="large,small")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--large-reps", type=int, default=3)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--count", type=int, default=50000, help="most requests of one small run")
    ap.add_argument("--duration", type=float, default=10, help="longest small run, seconds")
    ap.add_argument("--small-reps", type=int, default=3)
    ap.add_argument("--peers", default="s3rver,moto")
    ap.add_argument("--budget", type=int, default=420, help="seconds; no new step after it")
    ap.add_argument("--json", help="also write the raw numbers here")
    ap.add_argument("--keep", help="work directory to use and keep (default: a temporary one)")
    args = ap.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    args.peers = [p for p in args.peers.split(",") if p]
    for s in sections:
        if s not in ("large", "small"):
            ap.error(f"unknown section {s}")
    if not 1 <= args.size_mib <= 8192 or not 1 <= args.count <= 1000000 or \
            not 1 <= args.conns <= 256 or not 0 < args.duration <= 120:
        ap.error("--size-mib 1-8192, --count 1-1000000, --conns 1-256, --duration up to 120")
    build = Path(os.environ.get("NUBO_BUILD", REPO / "build")).resolve()
    for exe in ("src/nubod", "bench/s3load"):
        if not (build / exe).exists():
            sys.exit(f"no {exe} in {build}: build first (ninja -C {build})")
    # installs first: inside the namespace entered below nothing is reachable
    ec2.Nginx.ensure_installed()  # both sections' ceilings
    args.s3rver_exe = S3rver.ensure_installed() \
        if "small" in sections and "s3rver" in args.peers else None

    start = time.monotonic()
    deadline = start + args.budget

    def on_signal(sig, frame):
        raise Aborted(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(args.budget + 300)

    ec2.enter_netns()
    # on the disk (not a tmpfs): nubod's s3_dir and dd's target live here
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nubo-bench-s3.",
                                                                   dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    procs = ec2.Procs()
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": ec2.machine(), "sections": sections,
               "fs": fs_of(work), "settings": {k: v for k, v in vars(args).items()
                                              if k not in ("json", "keep", "s3rver_exe")}, "runs": []}
    rc = 0
    try:
        nubo = Nubo(procs, build, work)
        nubo.start()
        nubo.setup()
        peers = ["nubo"]
        if "large" in sections:
            large(args, build, work, procs, nubo, deadline, results)
        if "small" in sections:
            peers = small(args, build, work, procs, nubo, deadline, results)
        results["goals_met"] = report(args, results, peers)
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


def fs_of(path):
    try:
        p = subprocess.run(["df", "--output=source,fstype", str(path)], capture_output=True,
                           text=True, timeout=10)
        return " ".join(p.stdout.split()[2:])
    except (OSError, subprocess.SubprocessError):
        return "?"


if __name__ == "__main__":
    sys.exit(main())
