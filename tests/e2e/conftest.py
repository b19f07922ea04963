"""End-to-end harness: real nubod + nubo-agent + QEMU guests.

The whole pytest session runs in a network namespace of its own (made here at
import, before any thread starts), so the bridge, dnsmasq, nftables rules and
every listening port the tests make are invisible to the machine: loopback
inside it is private. Binaries come from $NUBO_BUILD (default build-asan).
"""

import base64
import ctypes
import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("NUBO_BUILD", REPO / "build-asan"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tinyimage  # noqa: E402

CLONE_NEWNET = 0x40000000


def _enter_private_netns():
    if os.environ.get("NUBO_E2E_NETNS") == str(os.getpid()):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed: run as root")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.environ["NUBO_E2E_NETNS"] = str(os.getpid())


_enter_private_netns()

OWN_NETNS = "NUBO_E2E_OWN_NETNS"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "own_netns: run the test in a child pytest in a network namespace of its "
        "own, for a cloud with a bridge of its own (the agent's `inet nubo` NAT table is one "
        "per namespace: a second agent in the session's would replace, then delete, the "
        "module cloud's)")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """A test marked own_netns runs again in a child pytest, which enters a
    namespace of its own at import (its pid is not NUBO_E2E_NETNS)."""
    if pyfuncitem.get_closest_marker("own_netns") is None or \
            os.environ.get(OWN_NETNS) == pyfuncitem.nodeid:
        return None
    env = dict(os.environ, **{OWN_NETNS: pyfuncitem.nodeid})
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "--rootdir", str(REPO), pyfuncitem.nodeid], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=1800)
    if p.returncode != 0 or " passed" not in p.stdout:
        pytest.fail(f"in its own network namespace ({p.returncode}):\n"
                    f"{p.stdout[-8000:]}{p.stderr[-2000:]}", pytrace=False)
    return True


SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:log_path=",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=0",
}
SAN_RE = re.compile(r"(ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer)")


def wait_until(pred, timeout, what, interval=0.05):
    """Polls pred() until it returns a truthy value; that value is returned.
    interval is the polling period of a real condition, not a readiness sleep."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class ApiError(Exception):
    def __init__(self, status, code, message):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class Daemon:
    def __init__(self, name, argv, log):
        self.name, self.argv, self.log_path = name, argv, log
        env = dict(os.environ, **SAN_ENV)
        self.logf = open(log, "ab")
        self.proc = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)

    def log(self):
        return Path(self.log_path).read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()

    def sanitizer_errors(self):
        return [l for l in self.log().splitlines() if SAN_RE.search(l)]


def _try_rmdir(d):
    try:
        d.rmdir()
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False  # its last task is still exiting


class Cloud:
    """A controller and one agent on this (namespaced) host."""

    def __init__(self, root, name="node1", cidr="10.213.0.0/24", bridge="nbbr0",
                 accel="tcg", agent_extra=(), nubod_extra=()):
        self.root = Path(root)
        self.state = self.root / "state"
        # short: the guests' unix sockets live below it (108-byte addresses)
        self.agent_state = Path(tempfile.mkdtemp(prefix="nba-", dir="/tmp"))
        self.port = tinyimage.free_port()
        self.agent_port = tinyimage.free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        # each cloud its own S3 port: several may run at once in one session
        self.s3_port = tinyimage.free_port()
        self.s3_endpoint = f"http://127.0.0.1:{self.s3_port}"
        self.name, self.cidr, self.bridge, self.accel = name, cidr, bridge, accel
        self.agent_extra = list(agent_extra)
        self.nubod_extra = list(nubod_extra)
        self.nubod = None
        self.agent = None
        self.daemons = []

    # -- processes --
    def start_nubod(self):
        self.nubod = Daemon("nubod", [str(BUILD / "src/nubod"), "-s", f"state_dir={self.state}",
                                      "-s", f"api_listen=127.0.0.1:{self.port}",
                                      # tests run many tiny guests on 2 cores
                                      "-s", "cpu_overcommit=64",
                                      "-s", f"s3_listen=127.0.0.1:{self.s3_port}"]
                            + self.nubod_extra,
                            self.root / "nubod.log")
        self.daemons.append(self.nubod)
        wait_until(lambda: self._health(), 20, "nubod health")
        self.token = (self.state / "admin.token").read_text().strip()

    def agent_argv(self):
        return [str(BUILD / "src/nubo-agent"),
                "-s", f"controller={self.endpoint}",
                "-s", f"join_token_file={self.state}/join.token",
                "-s", f"name={self.name}",
                "-s", f"listen=127.0.0.1:{self.agent_port}",
                "-s", f"state_dir={self.agent_state}",
                "-s", f"accel={self.accel}",
                "-s", f"bridge={self.bridge}",
                "-s", f"cidr={self.cidr}",
                "-s", f"shim={BUILD / 'src/shim/nubo-shim'}",
                "-s", "stop_timeout=8",
                # a VPC's namespace goes with its last instance here, so
                # tests see teardown at once (the default keeps it 60 s)
                "-s", "vpc_keep=0"] + self.agent_extra

    def start_agent(self):
        self.agent = Daemon("nubo-agent", self.agent_argv(), self.root / "agent.log")
        self.daemons.append(self.agent)
        try:
            wait_until(lambda: any(h["name"] == self.name and h["state"] == "up"
                                   for h in self.api("GET", "/v1/hosts")["hosts"]),
                       60, "agent to join")
        except TimeoutError as e:
            # what the agent said (and whether it still runs) is what a
            # reader of a CI log needs
            rc = self.agent.proc.poll()
            raise TimeoutError(f"{e}; agent {'exited ' + str(rc) if rc is not None else 'running'}"
                               f", its log ends:\n{self.agent.log()[-3000:]}"
                               f"\nnubod's log ends:\n{self.nubod.log()[-2000:]}") from None

    def start(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_nubod()
        self.start_agent()
        return self

    def _health(self):
        try:
            with urllib.request.urlopen(self.endpoint + "/v1/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def qemu_pids(self):
        """pids of QEMU processes of this cloud (their cmdline names our state dir)."""
        pids = []
        for p in Path("/proc").iterdir():
            if not p.name.isdigit():
                continue
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"qemu-system-x86_64") and \
                    any(str(self.agent_state).encode() in a for a in cmd):
                pids.append(int(p.name))
        return pids

    def shutdown(self):
        ids = set()
        try:
            ids = {i["id"] for i in self.api("GET", "/v1/instances?all=1")["instances"]}
        except Exception:
            pass
        for d in reversed(self.daemons):
            d.stop()
        for pid in self.qemu_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        wait_until(lambda: not self.qemu_pids(), 20, "QEMU processes to end")
        # cgroups the agent made for our instances
        inst = self.agent_state / "instances"
        ids |= {p.name for p in inst.iterdir()} if inst.exists() else set()
        for ctl in ("cpu", "memory", "pids"):
            for i in ids:
                d = Path(f"/sys/fs/cgroup/{ctl}/nubo/{i}")
                if d.exists():
                    wait_until(lambda: _try_rmdir(d), 10, f"removal of {d}")
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        # the VPC namespaces this agent made (/run/netns is the machine's):
        # their processes (dnsmasq) first, then the namespaces
        for ns in self.vpc_netns_names():
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                                  text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ValueError, ProcessLookupError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        pidf = self.agent_state / "net" / "dnsmasq.pid"
        if pidf.exists():
            try:
                os.kill(int(pidf.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass
        shutil.rmtree(self.agent_state, ignore_errors=True)

    def nat_intact(self):
        """True while the namespace's `inet nubo` table is this cloud's: NAT
        of its cidr out of anything but its bridge."""
        p = subprocess.run(["nft", "list", "table", "inet", "nubo"], capture_output=True, text=True)
        return p.returncode == 0 and f"ip saddr {self.cidr} oifname != \"{self.bridge}\" masquerade" in p.stdout

    def sanitizer_errors(self):
        return [f"{d.name}: {l}" for d in self.daemons for l in d.sanitizer_errors()]

    # -- the object store's layout (docs/s3.md, "On disk") --
    def object_file(self, bucket, key):
        """The data file of bucket/key's latest version, or None (none, or
        an object kept in its row)."""
        db = sqlite3.connect(f"file:{self.state}/objects/meta.db?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT v.data_id FROM versions v JOIN buckets b ON b.id = v.bucket_id"
                " WHERE b.name = ? AND v.key = ? AND v.is_latest = 1 AND v.delete_marker = 0",
                (bucket, key.encode())).fetchone()
        finally:
            db.close()
        # a small object has no file: its bytes are in its row (docs/s3.md)
        return self.state / "objects" / "data" / row[0][:2] / row[0] if row and row[0] else None

    def library_file(self, sha):
        """Where the image library keeps blob sha: an object of its bucket."""
        return self.object_file("nubo-library", f"blobs/{sha}")

    # -- API --
    def api(self, method, path, body=None, token=None, raw=None, ctype=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.endpoint + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.token}")
        if data is not None:
            req.add_header("Content-Type", ctype or "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                payload = r.read()
                if r.headers.get("Content-Type", "").startswith("application/json"):
                    return json.loads(payload)
                return payload
        except urllib.error.HTTPError as e:
            payload = e.read()
            try:
                err = json.loads(payload)["error"]
            except (ValueError, KeyError):
                raise ApiError(e.code, "?", payload.decode(errors="replace"))
            raise ApiError(e.code, err["code"], err["message"])

    def upload(self, path):
        return self.api("PUT", "/v1/blobs", raw=Path(path).read_bytes(),
                        ctype="application/octet-stream")["blob"]

    def import_tiny(self, img, name="tiny"):
        disk = self.upload(img.disk)
        kernel = self.upload(img.vmlinuz)
        initrd = self.upload(img.initrd)
        m = img.manifest
        return self.api("POST", "/v1/images", {
            "name": name, "os": m["os"], "release": m["release"], "arch": m["arch"],
            "disk_blob": disk, "kernel_blob": kernel, "initrd_blob": initrd,
            "cmdline": m["cmdline"]})

    def run(self, image="tiny", type="t1.nano", count=1, **kw):
        body = {"image": image, "type": type, "count": count}
        body.update(kw)
        return self.api("POST", "/v1/instances", body)

    def instance(self, iid):
        return self.api("GET", f"/v1/instances/{iid}")

    def wait_state(self, iid, state, timeout=60):
        return wait_until(lambda: (lambda i: i if i["state"] == state else None)(self.instance(iid)),
                          timeout, f"{iid} to be {state}", interval=0.1)

    def console_output(self, iid):
        return self.api("GET", f"/v1/instances/{iid}/console-output").decode(errors="replace")

    def wait_console(self, iid, pattern, timeout=90):
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.console_output(iid)), timeout,
                          f"{pattern!r} on the console of {iid}", interval=0.2)

    def wait_ready(self, iid, timeout=90):
        m = self.wait_console(iid, r"NUBO-READY (\S+) ip=(\S+)", timeout)
        return m.group(1), m.group(2)

    def instance_dir(self, iid):
        return self.agent_state / "instances" / iid

    def vpc_netns_names(self):
        """The VPC namespaces this cloud's agent has made (docs/network.md:
        nb + 8 hex of sha256(agent state dir) + - + VNI; /run/netns is the
        machine's)."""
        prefix = "nb" + hashlib.sha256(str(self.agent_state).encode()).hexdigest()[:8] + "-"
        try:
            return [n for n in os.listdir("/run/netns") if n.startswith(prefix)]
        except FileNotFoundError:
            return []

    def vpc_netns(self, iid):
        """The network namespace of the instance's VPC on this cloud's host:
        the one of this agent's that holds the instance's tap."""
        tap = "nb" + iid[2:15]
        for ns in self.vpc_netns_names():
            r = subprocess.run(["ip", "-n", ns, "link", "show", "dev", tap],
                               capture_output=True)
            if r.returncode == 0:
                return ns
        return None

    def open_admin_default_group(self):
        """Lets everything into the admin account's default VPC's default
        security group (EC2's default group admits only its own members),
        so tests can reach the admin's guests from the VPC's namespace.
        Tenants made with make_tenant keep the default rules."""
        if getattr(self, "_admin_group_open", False):
            return
        admin = make_tenant(self, "admin", user="harness")
        ec2 = admin.boto()
        sg = ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]
        try:
            ec2.authorize_security_group_ingress(
                GroupId=sg["GroupId"],
                IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
        except Exception as e:  # already there (a second cloud on one state)
            if "Duplicate" not in str(e):
                raise
        self._admin_group_open = True

    def guest_http(self, iid, ip=None, path="/", timeout=3):
        """GET http://<ip><path> from inside the instance's VPC namespace
        (a guest's private address is reachable only there, as in a VPC):
        the body, or None when nothing answered."""
        self.open_admin_default_group()
        ns = self.vpc_netns(iid)
        ip = ip or self.instance(iid)["ip"]
        if not ns:
            return None
        r = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-f", "-m", str(timeout),
                            f"http://{ip}{path}"], capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None

    def qemu_pid(self, iid):
        p = self.instance_dir(iid) / "qemu.pid"
        try:
            pid = int(p.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def cli(self, *args, check=True, input=None, timeout=120):
        env = dict(os.environ, NUBO_ENDPOINT=self.endpoint, NUBO_TOKEN=self.token, **SAN_ENV)
        p = subprocess.run([str(BUILD / "src/cli/nubo"), *args], capture_output=True,
                           text=True, env=env, input=input, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"nubo {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        return p


@pytest.fixture(scope="session")
def tiny_image():
    return tinyimage.build_tiny()


@pytest.fixture(scope="module")
def cloud(tiny_image, tmp_path_factory):
    c = Cloud(tmp_path_factory.mktemp("cloud"))
    try:
        c.start()
        c.import_tiny(tiny_image)
        yield c
    finally:
        c.shutdown()
    errs = c.sanitizer_errors()
    assert not errs, "sanitizer reports:\n" + "\n".join(errs)


class ConsoleSession:
    """The live serial console through nubod (HTTP Upgrade: nubo-console)."""

    def __init__(self, cloud, iid, timeout=10, tenant=None):
        import socket as _s
        path = f"/v1/instances/{iid}/console"
        if tenant:  # an account's access key: SigV4 by botocore's signer
            import botocore.auth
            import botocore.awsrequest
            import botocore.credentials
            req = botocore.awsrequest.AWSRequest(method="GET", url=cloud.endpoint + path)
            botocore.auth.SigV4Auth(botocore.credentials.Credentials(tenant.key_id, tenant.secret),
                                    "nubo", REGION).add_auth(req)
            auth = "".join(f"{k}: {v}\r\n" for k, v in req.headers.items())
        else:
            auth = f"Authorization: Bearer {cloud.token}\r\n"
        self.sock = _s.create_connection(("127.0.0.1", cloud.port), timeout=timeout)
        self.sock.sendall((f"GET {path} HTTP/1.1\r\n"
                           f"Host: 127.0.0.1:{cloud.port}\r\nConnection: Upgrade\r\n"
                           f"Upgrade: nubo-console\r\n{auth}\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError(f"console closed during the handshake: {head!r}")
            head += chunk
        self.status = int(head.split(b" ", 2)[1])
        if self.status != 101:
            raise ConnectionError(f"console answered {head!r}")
        self.buf = b""

    def send(self, text):
        self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def expect(self, pattern, timeout=30):
        if isinstance(pattern, str):
            pattern = pattern.encode()
        rx = re.compile(pattern) if isinstance(pattern, bytes) else pattern
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{pattern!r} not seen on the console; got {self.buf[-500:]!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                chunk = None
            if chunk == b"":
                raise EOFError(f"console closed; got {self.buf[-500:]!r}")
            if chunk:
                self.buf += chunk

    def wait_prompt(self, timeout=30):
        """Presses Enter until the guest's shell prompt answers."""
        deadline = time.monotonic() + timeout
        while True:
            self.send("\n")
            try:
                return self.expect(rb":~# ", timeout=1)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise

    def run(self, cmd, timeout=30):
        """Runs cmd in the guest's console shell; returns its output."""
        tag = os.urandom(4).hex()
        self.send(f"echo BEGIN-{tag}; {cmd}; echo END-{tag} $?\n")
        m = self.expect(re.compile(rf"BEGIN-{tag}\r?\n(.*?)END-{tag} (\d+)".encode(), re.S), timeout)
        return m.group(1).decode(errors="replace"), int(m.group(2))

    def close(self):
        self.sock.close()


REGION = "nubo-1"
AWS = os.environ.get("NUBO_AWS", "/usr/bin/aws")


class Tenant:
    """An account's access key, with the real clients pointed at nubo."""

    def __init__(self, cloud, key):
        self.cloud = cloud
        self.key_id = key["access_key_id"]
        self.secret = key["secret_access_key"]
        self.account_id = key["account_id"]
        self.account = key["account"]
        self.role = key["role"]

    def boto(self, service="ec2", **kw):
        import boto3
        from botocore.config import Config
        return boto3.client(service, endpoint_url=self.cloud.endpoint, region_name=REGION,
                            aws_access_key_id=self.key_id, aws_secret_access_key=self.secret,
                            config=Config(retries={"max_attempts": 1}, **kw))

    def wait_console(self, iid, pattern, timeout):
        """Waits for pattern on the instance's console, read as its owner
        reads it (EC2 GetConsoleOutput); returns the re.Match."""
        rx = re.compile(pattern)
        ec2 = self.boto()
        seen = [""]

        def look():
            seen[0] = ec2.get_console_output(InstanceId=iid).get("Output") or ""
            return rx.search(seen[0])
        try:
            return wait_until(look, timeout, f"{pattern!r} on the console of {iid}", interval=1)
        except TimeoutError as e:
            raise TimeoutError(f"{e}; console tail:\n{seen[0][-3000:]}") from None

    def aws(self, *args, check=True):
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.key_id, AWS_SECRET_ACCESS_KEY=self.secret,
                   AWS_DEFAULT_REGION=REGION, AWS_MAX_ATTEMPTS="1", AWS_PAGER="",
                   AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null")
        p = subprocess.run([AWS, "--endpoint-url", self.cloud.endpoint, "--output", "json", *args],
                           capture_output=True, text=True, env=env, timeout=300)
        if check and p.returncode != 0:
            raise AssertionError(f"aws {' '.join(args)} failed ({p.returncode}): {p.stderr}")
        if not check:
            return p
        return json.loads(p.stdout) if p.stdout.strip() else {}


def make_tenant(cloud, account, user="admin", role=None):
    try:
        cloud.api("POST", "/v1/accounts", {"name": account})
    except ApiError as e:
        if e.code != "Conflict":
            raise
    body = {"account": account, "user": user}
    if role:
        body["role"] = role
    return Tenant(cloud, cloud.api("POST", "/v1/keys", body))
