#!/usr/bin/python3
"""nubo tenant network benchmarks (issue 5), run by bench/run at the end.

Against a real nubod + nubo-agent (the e2e harness's Cloud, which puts this
process in a network namespace of its own at import) and real tiny guests:

  1. security-group rule latency: a tenant's group of 200 rules (distinct
     ports and CIDRs) on a guest; one more rule (tcp 80 from 0.0.0.0/0) is
     authorized, and the time from the API call's answer until a TCP connect
     to the guest's port 80 from the VPC's namespace first succeeds is
     measured (a new connect attempt every TICK_PROBE; an attempt counts
     from the moment its SYN left); then revoke until the first attempt that
     is no longer answered. The physical limit, measured in the same run:
     the same tables (the VPC namespace's own ruleset, listed) loaded in a
     scratch namespace with libnftables in one process, replaced atomically
     as the agent does (and, for context, with the `nft -f` CLI).
  2. metadata requests per second: wrk (8 connections) against
     http://169.254.169.254/latest/meta-data/instance-id from a scratch
     namespace wired into the VPC's bridge with a guest's MAC and IP (the
     agent attributes a request by its source address; anti-spoofing only
     guards taps), against nginx serving a file of the same size on
     169.254.169.254:8080 in the VPC's namespace (the ceiling), same path,
     same client.
  3. TCP throughput VM to VM on one host: two tiny guests in one VPC,
     `nc -l` in one, `dd if=/dev/zero | nc` in the other, timed from the
     host around the console command; the ceiling is the same two guests
     under bare QEMUs on a plain bridge with no nft rules.

Prints Markdown tables; --json FILE keeps the raw numbers.

usage: net.py [--reps N] [--rules N] [--wrk-seconds S] [--mib N]
              [--tcp-reps N] [--accel tcg|kvm] [--budget S] [--json FILE]
       net.py --probe   (internal: the connect prober, run in the VPC namespace)
"""

import argparse
import datetime
import json
import os
import platform
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
E2E = REPO / "tests" / "e2e"
TICK_PROBE = 0.0015  # a new connect attempt this often
ATTEMPT_MAX = 0.9    # an attempt older than this is given up (before SYN retransmit at 1 s)
PROBE_TIMEOUT = 10.0
BARE_BRIDGE, BARE_NET = "nbnetb0", "10.216.0"
IMDS = "169.254.169.254"


def mono():
    return time.monotonic()


def log(msg=""):
    print(msg, flush=True)


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(1, -(-len(v) * p // 100))
    return v[int(k) - 1]


def ms(x):
    return "n/a" if x is None or x != x else f"{x * 1000:.1f}"


def ratio(a, b):
    return "n/a" if not b or a is None or a != a or b != b else f"{a / b:.2f}x"


def table(head, rows):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


class Aborted(Exception):
    pass


# ---------------------------------------------------------------- the prober

def probe(ip, port, want_open, timeout):
    """Starts a non-blocking connect to ip:port every TICK_PROBE. want_open:
    returns the start time (monotonic, system-wide) of the first attempt that
    connected within ATTEMPT_MAX; otherwise the start of the first attempt
    that, with the 5 after it, got no answer within ATTEMPT_MAX (or was
    refused). None on timeout."""
    t_end = mono() + timeout
    pending = {}  # socket -> start
    failed = []  # starts of failed attempts, in order
    ok_after = {}  # start of a failure -> successes started after it
    next_start = mono()
    try:
        while mono() < t_end:
            now = mono()
            if now >= next_start:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex((ip, port))
                pending[s] = now
                next_start = now + TICK_PROBE
            _, w, _ = select.select([], list(pending), [], max(0.0, next_start - mono()))
            now = mono()
            done = []
            for s in w:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                done.append((s, err == 0))
            for s, t in pending.items():
                if s not in w and now - t > ATTEMPT_MAX:
                    done.append((s, False))
            for s, good in done:
                t = pending.pop(s)
                s.close()
                if want_open and good:
                    return t
                if not want_open:
                    if good:
                        for f in failed:
                            if f < t:
                                ok_after[f] = True
                    else:
                        failed.append(t)
                        failed.sort()
            if not want_open:
                # the earliest failure followed by 5 more failures and no
                # success that started after it
                for i, f in enumerate(failed):
                    if not ok_after.get(f) and len(failed) - i >= 6:
                        return f
    finally:
        for s in pending:
            s.close()
    return None


def nftlib_main(path, n):
    """Loads the nft script at path n times with libnftables in this process
    (as the agent does: src/net/net_link.c) and prints the seconds of each."""
    import ctypes
    lib = ctypes.CDLL("libnftables.so.1")
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    for f in ("nft_ctx_buffer_output", "nft_ctx_buffer_error", "nft_ctx_free"):
        getattr(lib, f).argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    buf = Path(path).read_bytes()
    out = []
    for _ in range(n):
        ctx = lib.nft_ctx_new(0)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        t0 = mono()
        r = lib.nft_run_cmd_from_buffer(ctx, buf)
        out.append(mono() - t0)
        lib.nft_ctx_free(ctx)
        if r != 0:
            print(f"libnftables failed ({r})", file=sys.stderr)
            return 1
    print(json.dumps(out))
    return 0


def probe_main():
    """Line protocol on stdin/stdout: 'open|closed IP PORT TIMEOUT' -> 'at T'
    or 'none'."""
    for line in sys.stdin:
        what, ip, port, tmo = line.split()
        t = probe(ip, int(port), what == "open", float(tmo))
        print("none" if t is None else f"at {t:.6f}", flush=True)
    return 0


# ---------------------------------------------------------------- the benchmark

class NetBench:
    def __init__(self, args, ct, ti):
        self.args, self.ct, self.ti = args, ct, ti
        self.work = Path(args.work)
        self.results = {}
        self.cloud = None
        self.procs = []  # Popen we started, stopped at close
        self.netns = []  # named namespaces we made
        self.links = []  # (netns or None, link) we made
        self.bare = []
        self.cgroups = []  # cgroup dirs we made for the bare QEMUs
        self.t_start = mono()

    def check_budget(self):
        if mono() - self.t_start > self.args.budget:
            raise Aborted(f"time budget of {self.args.budget}s exceeded")

    def sh(self, *a, ns=None, check=True):
        argv = (["ip", "netns", "exec", ns] if ns else []) + list(a)
        return subprocess.run(argv, check=check, capture_output=True, text=True)

    def machine(self):
        cpu = "?"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                "commit": git, "build": str(self.ct.BUILD),
                "loadavg_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3])}

    def load(self):
        return float(Path("/proc/loadavg").read_text().split()[0])

    # -- setup --
    def start(self):
        self.work.mkdir(parents=True, exist_ok=True)
        m = self.results["machine"] = self.machine()
        log(f"# nubo tenant network benchmarks\n\n{m['date']}; {m['cpu']}, {m['cores']} cores; "
            f"Linux {m['kernel']}; nubo {m['commit']} ({m['build']}); load average at start "
            f"{m['loadavg_at_start']}\n")
        self.img = self.ti.build_tiny()
        self.cloud = self.ct.Cloud(self.work / "cloud", accel=self.args.accel)
        self.cloud.start()
        self.cloud.import_tiny(self.img)
        admin = self.ct.make_tenant(self.cloud, "admin")
        aec2 = admin.boto()
        tiny = [i for i in aec2.describe_images(Owners=["self"])["Images"]
                if i["Name"] == "tiny"][0]["ImageId"]
        aec2.modify_image_attribute(ImageId=tiny, LaunchPermission={"Add": [{"Group": "all"}]})
        self.image = tiny
        self.tenant = self.ct.make_tenant(self.cloud, "benchnet")
        self.ec2 = self.tenant.boto()
        vpc = self.ec2.describe_vpcs()["Vpcs"][0]
        self.vpc_cidr = vpc["CidrBlock"]
        self.sg = self.ec2.create_security_group(GroupName="bench200", VpcId=vpc["VpcId"],
                                                 Description="200 rules")["GroupId"]
        perms = [{"IpProtocol": "tcp", "FromPort": 10000 + k, "ToPort": 10000 + k,
                  "IpRanges": [{"CidrIp": f"10.{k // 256}.{k % 256}.0/24"}]}
                 for k in range(self.args.rules)]
        for i in range(0, len(perms), 50):
            self.ec2.authorize_security_group_ingress(GroupId=self.sg, IpPermissions=perms[i:i + 50])
        # the transfer of section 3 and the probes' source (the VPC
        # namespace's own address on the bridge is in the VPC CIDR)
        self.ec2.authorize_security_group_ingress(GroupId=self.sg, IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": 5001, "ToPort": 5100,
             "IpRanges": [{"CidrIp": self.vpc_cidr}]}])
        res = self.ec2.run_instances(ImageId=tiny, InstanceType="t1.nano", MinCount=2,
                                     MaxCount=2, SecurityGroupIds=[self.sg])
        self.iids = [i["InstanceId"] for i in res["Instances"]]
        self.ips = {}
        for iid in self.iids:
            rx = re.compile(r"NUBO-READY (\S+) ip=(\S+)")
            m = self.ct.wait_until(lambda: rx.search(self.ec2.get_console_output(
                InstanceId=iid).get("Output", "")), 180, f"{iid} ready", interval=0.5)
            self.ips[iid] = m.group(2)
        self.ns = self.cloud.vpc_netns(self.iids[0])
        log(f"guests {', '.join(f'{i} {self.ips[i]}' for i in self.iids)} in {self.ns}; group "
            f"{self.sg} with {self.args.rules + 1} ingress rules\n")

    def start_prober(self):
        p = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, __file__, "--probe"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    # -- 1. rule latency --
    def bench_rules(self):
        log(f"## 1. Security-group change with {self.args.rules} rules in the group\n")
        iid = self.iids[0]
        ip = self.ips[iid]
        pr = self.start_prober()
        perm = [{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
                 "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
        res = {"authorize": [], "revoke": [], "authorize_call": [], "revoke_call": []}

        def one(what, call, key):
            pr.stdin.write(f"{what} {ip} 80 {PROBE_TIMEOUT}\n")
            pr.stdin.flush()
            t0 = mono()
            call()
            t1 = mono()
            line = pr.stdout.readline().split()
            if not line or line[0] != "at":
                raise RuntimeError(f"{key}: the rule was not seen in force in {PROBE_TIMEOUT}s")
            res[key].append(float(line[1]) - t1)
            res[key + "_call"].append(t1 - t0)

        # before: port 80 closed
        pr.stdin.write(f"open {ip} 80 1\n")
        pr.stdin.flush()
        if pr.stdout.readline().startswith("at"):
            raise RuntimeError("port 80 answers before any rule allows it")
        for k in range(self.args.reps):
            self.check_budget()
            one("open", lambda: self.ec2.authorize_security_group_ingress(
                GroupId=self.sg, IpPermissions=perm), "authorize")
            one("closed", lambda: self.ec2.revoke_security_group_ingress(
                GroupId=self.sg, IpPermissions=perm), "revoke")
            log(f"  {k + 1}/{self.args.reps}: authorize {ms(res['authorize'][-1])} ms, "
                f"revoke {ms(res['revoke'][-1])} ms after the answer")
        pr.stdin.close()
        pr.wait(10)

        # the kernel's cost: the same tables loaded with nft -f in a scratch
        # namespace, as an atomic replace
        rules = self.sh("nft", "list", "ruleset", ns=self.ns).stdout
        nlines = sum(1 for l in rules.splitlines() if l.strip() and not l.strip().endswith("{")
                     and l.strip() != "}")
        tables = re.findall(r"^table (\S+) (\S+) \{", rules, re.M)
        f = self.work / "ruleset.nft"
        f.write_text("".join(f"table {a} {b}\ndelete table {a} {b}\n" for a, b in tables) + rules)
        scratch = f"nbnetk-{os.getpid()}"
        self.sh("ip", "netns", "add", scratch)
        self.netns.append(scratch)
        nft_t = []
        for _ in range(max(self.args.reps, 10)):
            t0 = mono()
            self.sh("nft", "-f", str(f), ns=scratch)
            nft_t.append(mono() - t0)
        empty = self.work / "empty.nft"
        empty.write_text("\n")
        nft0 = []
        for _ in range(max(self.args.reps, 10)):
            t0 = mono()
            self.sh("nft", "-f", str(empty), ns=scratch)
            nft0.append(mono() - t0)
        lib_t = json.loads(self.sh(sys.executable, __file__, "--nftlib", str(f),
                                   str(max(self.args.reps, 10)), ns=scratch).stdout)
        res["nft_f"] = nft_t
        res["libnftables"] = lib_t
        res["nft_f_empty"] = nft0
        res["nft_lines"] = nlines
        self.results["rules"] = res
        n = self.args.reps
        rows = []
        for key, what in (("authorize", "authorize tcp 80: answer -> first connect succeeds"),
                          ("revoke", "revoke: answer -> first connect unanswered")):
            rows.append([what, ms(pct(res[key], 50)), ms(pct(res[key], 99)), ms(max(res[key])),
                         ratio(pct(res[key], 50), pct(lib_t, 50))])
            rows.append([f"  the API call itself ({key})", ms(pct(res[key + '_call'], 50)),
                         ms(pct(res[key + '_call'], 99)), ms(max(res[key + '_call'])), ""])
        rows.append([f"libnftables in one process, the same tables ({nlines} rule lines), "
                     "scratch namespace (the limit)",
                     ms(pct(lib_t, 50)), ms(pct(lib_t, 99)), ms(max(lib_t)), "1.00x"])
        rows.append(["`nft -f` of the same tables (the CLI)",
                     ms(pct(nft_t, 50)), ms(pct(nft_t, 99)), ms(max(nft_t)),
                     ratio(pct(nft_t, 50), pct(lib_t, 50))])
        rows.append(["  `nft -f` of an empty file (the process's own start)",
                     ms(pct(nft0, 50)), ms(pct(nft0, 99)), ms(max(nft0)), ""])
        log("\n" + table([f"{n} repetitions", "p50 ms", "p99 ms", "max ms", "p50 / libnftables"], rows))
        worst = max(res["authorize"] + res["revoke"])
        log(f"\ngoal (issue 5): rules in force within a second of the API call -> "
            f"{'MET' if worst < 1.0 else 'NOT MET'} (worst {ms(worst)} ms)\n")

    # -- 2. metadata --
    def wrk(self, ns, url):
        p = self.sh("wrk", "-t1", "-c8", f"-d{self.args.wrk_seconds}s", "--latency", url, ns=ns)
        m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
        errs = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
        sock = re.search(r"Socket errors: (.*)", p.stdout)
        lat = re.search(r"^\s+50%\s+(\S+)", p.stdout, re.M)
        lat99 = re.search(r"^\s+99%\s+(\S+)", p.stdout, re.M)
        return {"rps": float(m.group(1)) if m else None,
                "non2xx": int(errs.group(1)) if errs else 0,
                "socket_errors": sock.group(1) if sock else "",
                "p50": lat.group(1) if lat else "?", "p99": lat99.group(1) if lat99 else "?",
                "raw": p.stdout}

    def bench_imds(self):
        log("## 2. Metadata requests per second\n")
        iid = self.iids[1]
        ip = self.ips[iid]
        inst = self.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        mac = inst["NetworkInterfaces"][0]["MacAddress"]
        prefix = self.ec2.describe_subnets(SubnetIds=[inst["SubnetId"]])["Subnets"][0][
            "CidrBlock"].split("/")[1]
        scratch = f"nbnetm-{os.getpid()}"
        self.sh("ip", "netns", "add", scratch)
        self.netns.append(scratch)
        a, b = f"nbbm{os.getpid() % 100000}", f"nbbn{os.getpid() % 100000}"
        self.sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        self.sh("ip", "link", "set", a, "netns", scratch)
        self.links.append((scratch, a))
        self.sh("ip", "link", "set", b, "netns", self.ns)
        self.sh("ip", "link", "set", b, "master", "nbbr", "up", ns=self.ns)
        self.sh("ip", "link", "set", "lo", "up", ns=scratch)
        self.sh("ip", "link", "set", a, "address", mac, ns=scratch)
        self.sh("ip", "addr", "add", f"{ip}/{prefix}", "dev", a, ns=scratch)
        self.sh("ip", "link", "set", a, "up", ns=scratch)
        net = ".".join(ip.split(".")[:3])
        gateway = self.sh("ip", "-4", "-o", "addr", "show", "dev", "nbbr", ns=self.ns).stdout
        gws = re.findall(r"inet (\S+)/", gateway)
        gateway = next((g for g in gws if g.startswith(net + ".")), gws[0])
        self.sh("ip", "route", "add", "default", "via", gateway, ns=scratch)
        url = f"http://{IMDS}/latest/meta-data/instance-id"
        body = self.sh("curl", "-s", "-f", "-m", "5", url, ns=scratch, check=False).stdout
        if body.strip() != iid:
            raise RuntimeError(f"metadata from the fake guest answered {body!r}, not {iid}")
        # nginx in the VPC namespace on 169.254.169.254:8080, a file of the same size
        d = self.work / "nginx"
        (d / "www" / "latest" / "meta-data").mkdir(parents=True, exist_ok=True)
        (d / "www" / "latest" / "meta-data" / "instance-id").write_text(body)
        (d / "nginx.conf").write_text(
            f"daemon off;\nuser root;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n"
            f"events {{ worker_connections 64; }}\nhttp {{ access_log off;\n"
            f"  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n"
            f"  fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n"
            f"  default_type text/plain;\n"
            f"  server {{ listen {IMDS}:8080; root {d}/www; }} }}\n")
        (d / "tmp").mkdir(exist_ok=True)
        ng = subprocess.Popen(["ip", "netns", "exec", self.ns, "nginx", "-c", str(d / "nginx.conf"),
                               "-p", str(d)], stdout=subprocess.DEVNULL,
                              stderr=open(d / "stderr", "wb"))
        self.procs.append(ng)
        self.ct.wait_until(lambda: self.sh("curl", "-s", "-f", "-m", "2", f"http://{IMDS}:8080/"
                                           "latest/meta-data/instance-id", ns=scratch,
                                           check=False).stdout == body, 20, "nginx")
        l0 = self.load()
        res = {"imds": self.wrk(scratch, url),
               "nginx": self.wrk(scratch, f"http://{IMDS}:8080/latest/meta-data/instance-id"),
               "bytes": len(body), "load_before": l0, "load_after": self.load()}
        ng.terminate()
        ng.wait(10)
        # the fake guest goes: the real one's MAC must be learnt on its tap again
        self.sh("ip", "-n", scratch, "link", "del", a)
        self.results["imds"] = {k: ({kk: vv for kk, vv in v.items() if kk != "raw"}
                                    if isinstance(v, dict) else v) for k, v in res.items()}
        rows = []
        for k, what in (("imds", "nubo-agent metadata service (nb_imds)"),
                        ("nginx", "nginx, 1 worker, static file of the same size (ceiling)")):
            r = res[k]
            rows.append([what, f"{r['rps']:.0f}" if r["rps"] else "n/a", r["p50"], r["p99"],
                         r["non2xx"], r["socket_errors"] or "0"])
        log(table([f"wrk -t1 -c8 -d{self.args.wrk_seconds}s, GET instance-id ({len(body)} B) "
                   "from a guest's address", "requests/s", "latency p50", "latency p99",
                   "non-2xx", "socket errors"], rows))
        log(f"\nnubo / ceiling: {ratio(res['imds']['rps'], res['nginx']['rps'])}; load "
            f"average {l0:.1f} before, {res['load_after']:.1f} after\n")

    # -- 3. TCP throughput --
    def transfer(self, run_a, run_b, ip_a, mib):
        """run_a/run_b(cmd, timeout) -> output; returns (seconds on the host's
        clock, seconds by the guest's `time`, output) for mib MiB."""
        n = mib * 16  # 64 KiB blocks
        # the listener's stdin stays open (busybox nc drops the connection
        # when its stdin ends); wc writes the count when the sender closed
        # a new port each time: the last one may linger in TIME_WAIT
        self.port = getattr(self, "port", 5000) % 100 + 5001
        port = self.port
        run_a(f"rm -f /tmp/nbrx; (sleep 300 | nc -l -p {port} | wc -c > /tmp/nbrx) & true", 10)
        # until it listens (state 0A = LISTEN)
        run_a(f"n=0; while ! grep -q ':{port:04X} 00000000:0000 0A' /proc/net/tcp && "
              "[ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done", 60)
        # until the listener accepts (nc -z is not in every busybox: retry the send)
        t0 = mono()
        out = run_b(f"time sh -c 'dd if=/dev/zero bs=64k count={n} 2>/dev/null | nc -w 2 {ip_a} {port}'",
                    600)
        t = mono() - t0
        if re.search(r"refused|can't|No route|unreachable", out):
            raise RuntimeError(f"the transfer failed: {out[-500:]!r}")
        # the receiver counted every byte
        deadline = mono() + 30
        while True:
            got = run_a("cat /tmp/nbrx 2>/dev/null", 10).strip()
            if got or mono() > deadline:
                break
        if got != str(n * 65536):
            raise RuntimeError(f"the receiver got {got!r} bytes, not {n * 65536}")
        m = re.search(r"real\s+(\d+)m\s*([\d.]+)s", out)
        guest_t = int(m.group(1)) * 60 + float(m.group(2)) if m else None
        return t, guest_t, out

    def bench_tcp(self):
        log(f"## 3. TCP throughput VM to VM on one host ({self.args.mib} MiB)\n")
        a, b = self.iids
        ca = self.ct.ConsoleSession(self.cloud, a, timeout=30, tenant=self.tenant)
        cb = self.ct.ConsoleSession(self.cloud, b, timeout=30, tenant=self.tenant)
        try:
            ca.wait_prompt(60)
            cb.wait_prompt(60)
            res = {"nubo": [], "bare": []}
            for _ in range(self.args.tcp_reps):
                self.check_budget()
                res["nubo"].append(self.pair(lambda c, tmo: ca.run(c, tmo)[0],
                                             lambda c, tmo: cb.run(c, tmo)[0], self.ips[a],
                                             "nubo"))
        finally:
            ca.close()
            cb.close()
        self.start_bare()
        va, vb = self.bare
        for _ in range(self.args.tcp_reps):
            self.check_budget()
            res["bare"].append(self.pair(lambda c, tmo: va.run(c, tmo)[1],
                                         lambda c, tmo: vb.run(c, tmo)[1], f"{BARE_NET}.2",
                                         "bare"))
        self.results["tcp"] = res
        mib, small = self.args.mib, max(1, self.args.mib // 4)
        rows, mbit = [], {}
        for k, what in (("nubo", "nubo: two guests in one VPC, group with "
                         f"{self.args.rules + 1} rules, anti-spoofing"),
                        ("bare", "bare QEMUs, tap on a plain bridge, no nft rules (ceiling)")):
            mbit[k] = pct([x["mbit_slope"] for x in res[k]], 50)
            rows.append([what, f"{pct([x['mbit_large'] for x in res[k]], 50):.1f}",
                         f"{mbit[k]:.1f}",
                         f"{pct([x['mbit_guest'] for x in res[k] if x['mbit_guest']], 50):.1f}",
                         len(res[k])])
        log(table([f"dd \\| busybox nc, {small} and {mib} MiB", f"Mbit/s, {mib} MiB (host clock)",
                   f"Mbit/s, {mib} - {small} MiB slope (host clock)",
                   f"Mbit/s, {mib} MiB (guest's time)", "runs (p50)"], rows))
        log(f"\nnubo / ceiling (slope): {ratio(mbit['nubo'], mbit['bare'])} ({self.args.accel}"
            f"{'; under TCG the guests CPUs are the bottleneck' if self.args.accel == 'tcg' else ''})\n")

    def pair(self, run_a, run_b, ip_a, label):
        """A transfer of mib/4 and one of mib MiB; the slope between them
        cancels what does not grow with the size (console round trips,
        connection set-up, nc's end)."""
        mib, small = self.args.mib, max(1, self.args.mib // 4)
        ts, _, _ = self.transfer(run_a, run_b, ip_a, small)
        tl, gl, _ = self.transfer(run_a, run_b, ip_a, mib)
        r = {"small_mib": small, "large_mib": mib, "t_small": ts, "t_large": tl,
             "t_large_guest": gl, "mbit_large": mib * 8.388608 / tl,
             "mbit_slope": (mib - small) * 8.388608 / (tl - ts) if tl > ts else float("nan"),
             "mbit_guest": mib * 8.388608 / gl if gl else None}
        log(f"  {label}: {small} MiB {ts:.2f} s, {mib} MiB {tl:.2f} s (guest's time {gl}) -> "
            f"{r['mbit_slope']:.1f} Mbit/s")
        return r

    def start_bare(self):
        run = lambda *a: self.sh(*a)  # noqa: E731
        run("ip", "link", "add", BARE_BRIDGE, "type", "bridge")
        self.links.append((None, BARE_BRIDGE))
        run("ip", "addr", "add", f"{BARE_NET}.1/24", "dev", BARE_BRIDGE)
        run("ip", "link", "set", BARE_BRIDGE, "up")
        hosts = []
        for k in range(2):
            tap = f"nbnt{k}"
            run("ip", "tuntap", "add", "dev", tap, "mode", "tap")
            self.links.append((None, tap))
            run("ip", "link", "set", tap, "master", BARE_BRIDGE, "up")
            hosts.append(f"--dhcp-host=52:54:00:bf:00:{k:02x},{BARE_NET}.{k + 2}")
        d = self.work / "bare-net"
        d.mkdir(exist_ok=True)
        dn = subprocess.Popen(
            ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
             f"--interface={BARE_BRIDGE}", "--bind-interfaces", "--except-interface=lo",
             "--user=root", f"--dhcp-range={BARE_NET}.0,static,255.255.255.0,1h",
             f"--dhcp-leasefile={d}/leases", f"--pid-file={d}/pid"] + hosts,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(dn)
        for k in range(2):
            wd = self.work / "bare" / str(k)
            wd.mkdir(parents=True, exist_ok=True)
            kvm = self.args.accel == "kvm"
            # as the agent starts its guests (src/agent/qmp/qemu_cmd.c)
            vm = self.ti.boot_bare(self.img.dir, f"i-bbbbbbbbbbbb0000{k}", wd, net=None,
                                   accel="kvm" if kvm else "tcg,tb-size=64",
                                   extra_args=["-cpu", "host" if kvm else "Nehalem", "-netdev",
                                               f"tap,id=net0,ifname=nbnt{k},script=no,"
                                               "downscript=no,vhost=off", "-device",
                                               f"virtio-net-pci,netdev=net0,"
                                               f"mac=52:54:00:bf:00:{k:02x}"])
            self.bare.append(vm)
            self.bare_cgroup(vm, k)
        for vm in self.bare:
            vm.wait_ready(180)

    def bare_cgroup(self, vm, k):
        """Puts a bare QEMU where nubo puts its guests: a group of its own
        under nubo/ in each controller (cgroup v1), with the limits of nubo's
        first guest, so both compete for the CPU on the same footing."""
        src = self.iids[0]
        name = f"nbnetb-{os.stat('/proc/self/ns/net').st_ino}-{k}"
        for ctl, files in (("cpu", ("cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.shares")),
                           ("memory", ("memory.limit_in_bytes",)), ("pids", ("pids.max",))):
            parent = Path("/sys/fs/cgroup") / ctl / "nubo"
            if not parent.is_dir():
                continue
            d = parent / name
            d.mkdir(exist_ok=True)
            self.cgroups.append(d)
            for f in files:
                try:
                    (d / f).write_text((parent / src / f).read_text().strip())
                except OSError:
                    pass
            (d / "cgroup.procs").write_text(str(vm.proc.pid))

    def close(self):
        for vm in self.bare:
            try:
                vm.close()
            except Exception as e:
                log(f"net bench: closing a bare QEMU: {e}")
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for ns, link in self.links:
            subprocess.run((["ip", "-n", ns] if ns else ["ip"]) + ["link", "del", link],
                           capture_output=True)
        if self.cloud:
            try:
                self.cloud.shutdown()
            except Exception as e:
                log(f"net bench: cloud shutdown: {e}")
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        for d in self.cgroups:
            try:
                self.ct.wait_until(lambda: self.ct._try_rmdir(d), 10, f"removal of {d}",
                                   interval=0.01)
            except TimeoutError as e:
                log(f"net bench: {e}")


def main():
    if sys.argv[1:] == ["--probe"]:
        return probe_main()
    if len(sys.argv) == 4 and sys.argv[1] == "--nftlib":
        return nftlib_main(sys.argv[2], int(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", help="scratch directory (default: a new one under /tmp)")
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--tcp-reps", type=int, default=3)
    ap.add_argument("--accel", choices=("tcg", "kvm"), default="tcg",
                    help="the guests' accelerator, nubo's and the bare peers' (default tcg, "
                    "as the tests)")
    ap.add_argument("--budget", type=float, default=720,
                    help="seconds after which no new step starts")
    ap.add_argument("--json", help="write the raw results here")
    args = ap.parse_args()
    import tempfile
    own_work = not args.work
    args.work = args.work or tempfile.mkdtemp(prefix="nubo-bench-net.")
    os.environ["NUBO_BUILD"] = os.environ.get("NUBO_BUILD", str(REPO / "build"))
    sys.path.insert(0, str(E2E))
    import conftest  # noqa: E402  (enters a private network namespace at import)
    import tinyimage  # noqa: E402

    def on_term(sig, frame):
        raise Aborted(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    b = NetBench(args, conftest, tinyimage)
    rc = 0
    try:
        b.start()
        for step in (b.bench_rules, b.bench_imds, b.bench_tcp):
            l0 = b.load()
            step()
            log(f"load average {l0:.1f} before this section, {b.load():.1f} after\n")
        log(f"total time {mono() - b.t_start:.0f} s")
    except Aborted as e:
        log(f"net bench: aborted: {e}")
        rc = 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        b.close()
        if args.json:
            Path(args.json).write_text(json.dumps(b.results, indent=1, default=str) + "\n")
        if own_work:
            subprocess.run(["rm", "-rf", args.work])
    return rc


if __name__ == "__main__":
    sys.exit(main())
