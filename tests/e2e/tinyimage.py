"""Build and boot the nubo tiny test image (images/tiny) without nubo.

Used by the end-to-end tests and the benchmarks:

    img = build_tiny("/var/cache/nubo/tiny-out")     # cached on images/tiny/*
    with boot_bare(img.dir, "i-0123456789abcdef0", workdir) as vm:
        iid, ip = vm.wait_ready(timeout=60)
        urllib.request.urlopen(f"http://127.0.0.1:{vm.http_port}/")
        vm.qmp("system_powerdown")
        vm.wait_exit(30)

boot_bare() starts a bare qemu-system-x86_64 (TCG by default): kernel boot of
the image, a copy-on-write overlay over disk.qcow2, SMBIOS serial = instance
id, the serial console on QEMU's stdio (read by a thread, also written to
<workdir>/console.log), a QMP socket, and by default slirp networking that is
isolated (restrict=on) except for a host forward to guest port 80 and a
metadata service at 169.254.169.254 served by this module (instance id,
hostname, key, user-data; IMDSv2 tokens as nubo's service hands them out).

Run as a script, `python3 tinyimage.py build [OUTDIR]` builds the image,
`python3 tinyimage.py build-debian [OUTDIR]` the full Debian image with
cloud-init (images/debian, build_debian), and
`python3 tinyimage.py serve-metadata DIR` is the per-connection metadata
responder QEMU's guestfwd runs.
"""

import fcntl
import hashlib
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_SRC = REPO / "images" / "tiny"
DEFAULT_OUT = Path(os.environ.get("NUBO_TINY_OUT", "/var/cache/nubo/tiny-out"))
DEBIAN_SRC = REPO / "images" / "debian"
DEBIAN_OUT = Path(os.environ.get("NUBO_DEBIAN_OUT", "/var/cache/nubo/debian-out"))
QEMU = os.environ.get("NUBO_QEMU", "qemu-system-x86_64")
READY_RE = re.compile(rb"NUBO-READY (\S+) ip=(\S+)\r?\n")
PROGRESS_RE = re.compile(r"^progress (\d{1,3}) (.*)$")
CONSOLE_MAX = 16 << 20  # bytes of console output kept in memory
METADATA_NET = "169.254.169.0/24"
METADATA_ADDR = "169.254.169.254"
GUEST_ADDR = "169.254.169.15"
BUILD_TIMEOUT = 900
DEBIAN_BUILD_TIMEOUT = 3600


@dataclass
class TinyImage:
    dir: Path
    vmlinuz: Path
    initrd: Path
    disk: Path
    manifest: dict

    @property
    def cmdline(self):
        return self.manifest["cmdline"]


def source_hash(src=TINY_SRC):
    """sha256 over images/tiny/** but docs (relative paths, exec bits,
    contents): the key of build_tiny's cache."""
    h = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if not p.is_file() or "__pycache__" in p.parts or p.suffix == ".md":
            continue
        rel = p.relative_to(src).as_posix()
        h.update(rel.encode() + b"\0")
        h.update(b"x" if os.access(p, os.X_OK) else b"-")
        h.update(p.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _image(outdir):
    outdir = Path(outdir)
    manifest = json.loads((outdir / "manifest.json").read_text())
    img = TinyImage(outdir, outdir / "vmlinuz", outdir / "initrd.img",
                    outdir / "disk.qcow2", manifest)
    for p in (img.vmlinuz, img.initrd, img.disk):
        if not p.is_file():
            raise FileNotFoundError(p)
    return img


def build_tiny(outdir=DEFAULT_OUT, force=False, progress=None,
               timeout=BUILD_TIMEOUT):
    """Run images/tiny/build.sh into outdir unless it already holds a build
    of the current images/tiny sources; return the TinyImage.

    progress, if given, is called with (percent, message) for each progress
    line build.sh prints. Concurrent callers serialize on outdir/.lock.
    Raises RuntimeError with build.sh's stderr when the build fails."""
    return _build(TINY_SRC, outdir, force, progress, timeout)


def build_debian(outdir=DEBIAN_OUT, force=False, progress=None,
                 timeout=DEBIAN_BUILD_TIMEOUT, cached_only=False):
    """The full Debian image with cloud-init (images/debian/build.sh), cached
    like the tiny image on images/debian's sources. debootstrap needs the
    Debian archive: build it outside the tests' network namespace (tests/run
    does). cached_only: raise FileNotFoundError instead of building."""
    return _build(DEBIAN_SRC, outdir, force, progress, timeout, cached_only)


def _build(src, outdir, force, progress, timeout, cached_only=False):
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    want = source_hash(src)
    stamp = outdir / ".source-sha256"
    with open(outdir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            try:
                if stamp.read_text().strip() == want:
                    return _image(outdir)
            except (OSError, ValueError, KeyError):
                pass
        if cached_only:
            raise FileNotFoundError(f"no build of the current {src} in {outdir}")
        stamp.unlink(missing_ok=True)
        proc = subprocess.Popen(
            ["/bin/bash", str(src / "build.sh"), str(outdir)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err = []
        t = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
        t.start()
        last = -1
        try:
            for line in proc.stdout:
                m = PROGRESS_RE.match(line.rstrip("\n"))
                if not m:
                    raise RuntimeError(f"build.sh printed a non-progress line: {line!r}")
                pct = int(m.group(1))
                if pct < last or pct > 100:
                    raise RuntimeError(f"build.sh progress went {last} -> {pct}")
                last = pct
                if progress:
                    progress(pct, m.group(2))
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            t.join(5)
        if rc != 0:
            raise RuntimeError(f"{src}/build.sh failed ({rc}): {''.join(err)[-4000:]}")
        if last != 100:
            raise RuntimeError("build.sh exited 0 without reaching progress 100")
        img = _image(outdir)
        stamp.write_text(want + "\n")
        return img


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Console:
    """Reads a byte stream (QEMU's serial console) on a thread; keeps the
    last CONSOLE_MAX bytes and mirrors everything to an optional log file."""

    def __init__(self, stream, log_path=None):
        self._stream = stream
        self._buf = bytearray()
        self._base = 0  # absolute offset of _buf[0]
        self._eof = False
        self._cond = threading.Condition()
        self._log = open(log_path, "wb") if log_path else None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        fd = self._stream.fileno()
        try:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if self._log and chunk:
                    self._log.write(chunk)
                    self._log.flush()
                with self._cond:
                    if not chunk:
                        self._eof = True
                        self._cond.notify_all()
                        return
                    self._buf += chunk
                    extra = len(self._buf) - CONSOLE_MAX
                    if extra > 0:
                        del self._buf[:extra]
                        self._base += extra
                    self._cond.notify_all()
        finally:
            if self._log:
                self._log.close()

    def mark(self):
        """Offset of the end of the output so far (for wait_for's since)."""
        with self._cond:
            return self._base + len(self._buf)

    def text(self, since=0):
        with self._cond:
            return bytes(self._buf[max(0, since - self._base):])

    def wait_for(self, pattern, timeout, since=0, alive=None):
        """Wait until pattern (regex, str or bytes) matches the output after
        offset since (from mark()); return the re.Match.
        Raises TimeoutError, or EOFError when the stream ends first."""
        if isinstance(pattern, str):
            pattern = pattern.encode()
        if isinstance(pattern, bytes):
            pattern = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                start = max(0, since - self._base)
                m = pattern.search(self._buf, start)
                if m:
                    return m
                if self._eof:
                    raise EOFError(f"console closed before {pattern.pattern!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = bytes(self._buf[-2000:]).decode(errors="replace")
                    raise TimeoutError(
                        f"no {pattern.pattern!r} on the console within {timeout}s; "
                        f"console tail:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def join(self, timeout=None):
        self._thread.join(timeout)


def qmp_command(path, command, arguments=None, timeout=10):
    """Connect to a QMP socket, run one command, return its "return" value.
    Raises RuntimeError on a QMP error."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        f = s.makefile("rwb")

        def read_reply():
            while True:
                line = f.readline()
                if not line:
                    raise EOFError("QMP connection closed")
                msg = json.loads(line)
                if "event" in msg or "QMP" in msg:
                    continue
                if "error" in msg:
                    raise RuntimeError(f"QMP {command}: {msg['error']}")
                return msg.get("return")

        greeting = json.loads(f.readline())
        if "QMP" not in greeting:
            raise RuntimeError(f"not a QMP greeting: {greeting}")
        f.write(b'{"execute": "qmp_capabilities"}\n')
        f.flush()
        read_reply()
        req = {"execute": command}
        if arguments:
            req["arguments"] = arguments
        f.write(json.dumps(req).encode() + b"\n")
        f.flush()
        return read_reply()


@dataclass
class BareVM:
    proc: subprocess.Popen
    console: Console
    qmp_path: Path
    workdir: Path
    instance_id: str
    overlay: Path = None
    http_port: int = None
    argv: list = field(default_factory=list)
    started: float = 0.0  # time.monotonic() just before QEMU was started

    def wait_for(self, pattern, timeout, since=0):
        """Wait for pattern on the console (see Console.wait_for)."""
        try:
            return self.console.wait_for(pattern, timeout, since)
        except EOFError:
            raise RuntimeError(
                f"QEMU exited ({self.proc.poll()}) before {pattern!r}: "
                f"{self.stderr()[-2000:]}\nconsole:\n"
                f"{self.console.text()[-2000:].decode(errors='replace')}") from None

    def wait_ready(self, timeout=60):
        """Wait for the NUBO-READY line; return (instance_id, ip)."""
        m = self.wait_for(READY_RE, timeout)
        return m.group(1).decode(), m.group(2).decode()

    def send(self, data):
        """Type data on the serial console."""
        if isinstance(data, str):
            data = data.encode()
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def run(self, command, timeout=30):
        """Type a one-line shell command on the console, wait until it
        finished and return (exit status, output). The begin and end markers
        are computed by the guest shell, so the echoed command line (or type
        ahead echoed before the shell started) never matches them."""
        tag = f"{os.getpid()}x{time.monotonic_ns()}"
        since = self.console.mark()
        self.send(f"echo BEGIN-$((1+1))-{tag}; {command}; echo END-$((1+1))-{tag}-$?\n")
        m = self.wait_for(re.compile(
            rb"BEGIN-2-" + tag.encode() + rb"\r?\n(.*?)END-2-" + tag.encode() + rb"-(\d+)",
            re.S), timeout, since)
        return int(m.group(2)), m.group(1).decode(errors="replace").replace("\r", "")

    def qmp(self, command, **arguments):
        return qmp_command(self.qmp_path, command, arguments or None)

    def wait_exit(self, timeout):
        """Wait for QEMU to exit by itself; return its exit status."""
        return self.proc.wait(timeout=timeout)

    def stderr(self):
        try:
            return (self.workdir / "qemu.stderr").read_text(errors="replace")
        except OSError:
            return ""

    def close(self):
        """Stop QEMU (if still running) and the console reader."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.console.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_metadata(mddir, instance_id, user_data=None, hostname=None,
                   public_key=None, tokens_required=False):
    """Lay out the metadata tree serve-metadata answers from: latest/... as
    files (a directory lists its entries), plus `.token` (the IMDSv2 token
    PUT /latest/api/token hands out) and `.required` (tokens required)."""
    root = Path(mddir)
    base = root / "latest"
    (base / "meta-data").mkdir(parents=True, exist_ok=True)
    (base / "meta-data" / "instance-id").write_text(instance_id)
    for name, value in (("hostname", hostname), ("local-hostname", hostname)):
        f = base / "meta-data" / name
        if value is None:
            f.unlink(missing_ok=True)
        else:
            f.write_text(value)
    keydir = base / "meta-data" / "public-keys" / "0"
    if public_key is None:
        (keydir / "openssh-key").unlink(missing_ok=True)
    else:
        keydir.mkdir(parents=True, exist_ok=True)
        (keydir / "openssh-key").write_text(public_key)
    ud = base / "user-data"
    if user_data is None:
        ud.unlink(missing_ok=True)
    else:
        ud.write_bytes(user_data.encode() if isinstance(user_data, str) else user_data)
    (root / ".token").write_text(hashlib.sha256(os.urandom(32)).hexdigest())
    req = root / ".required"
    if tokens_required:
        req.write_text("required\n")
    else:
        req.unlink(missing_ok=True)


def boot_bare(image_dir, instance_id, workdir, *, memory_mb=128, vcpus=1,
              accel="tcg,tb-size=64", machine="pc", cmdline=None,
              user_data=None, net="user", http_port=None, disk=True,
              extra_args=(), qemu=QEMU, hostname=None, public_key=None,
              tokens_required=False):
    """Start the tiny image under a bare QEMU; return a BareVM (a context
    manager; close() stops QEMU).

    image_dir holds vmlinuz, initrd.img, disk.qcow2 and manifest.json.
    workdir (created) receives overlay.qcow2, qmp.sock, console.log,
    qemu.stderr and the metadata tree. net="user" gives isolated slirp
    networking (guest 169.254.169.15, gateway .2) with a host forward from
    127.0.0.1:http_port (default: a free port) to guest port 80 and the
    metadata service at 169.254.169.254 (user_data: str/bytes or None;
    hostname, public_key: meta-data/local-hostname and
    public-keys/0/openssh-key when given; IMDSv2 tokens, required when
    tokens_required).
    net=None gives no NIC; anything else is passed as extra_args (e.g. a tap
    -netdev and -device pair)."""
    image_dir = Path(image_dir)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((image_dir / "manifest.json").read_text())
    qmp_path = workdir / "qmp.sock"
    qmp_path.unlink(missing_ok=True)

    argv = [qemu, "-nodefaults", "-no-user-config", "-display", "none",
            "-accel", accel, "-machine", machine,
            "-m", str(memory_mb), "-smp", str(vcpus),
            "-kernel", str(image_dir / "vmlinuz"),
            "-initrd", str(image_dir / "initrd.img"),
            "-append", cmdline or manifest["cmdline"],
            "-smbios", f"type=1,serial={instance_id}",
            "-chardev", "stdio,id=con0,signal=off", "-serial", "chardev:con0",
            "-qmp", f"unix:{qmp_path},server=on,wait=off"]
    overlay = None
    if disk:
        overlay = workdir / "overlay.qcow2"
        overlay.unlink(missing_ok=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                        "-b", str((image_dir / "disk.qcow2").resolve()), str(overlay)],
                       check=True)
        argv += ["-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe"]
    if net == "user":
        if http_port is None:
            http_port = free_port()
        mddir = workdir / "metadata"
        write_metadata(mddir, instance_id, user_data, hostname=hostname,
                       public_key=public_key, tokens_required=tokens_required)
        responder = " ".join(shlex.quote(str(a)) for a in
                             (sys.executable, Path(__file__).resolve(), "serve-metadata", mddir))
        if "," in responder:
            raise ValueError("paths must not contain commas (QEMU option syntax)")
        argv += ["-netdev",
                 f"user,id=net0,restrict=on,net={METADATA_NET},host=169.254.169.2,"
                 f"dhcpstart={GUEST_ADDR},"
                 f"hostfwd=tcp:127.0.0.1:{http_port}-:80,"
                 f"guestfwd=tcp:{METADATA_ADDR}:80-cmd:{responder}",
                 "-device", "virtio-net-pci,netdev=net0"]
    elif net is not None:
        raise ValueError(f"unknown net {net!r} (use 'user', None or extra_args)")
    argv += list(extra_args)

    stderr = open(workdir / "qemu.stderr", "wb")
    started = time.monotonic()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, cwd=workdir)
    finally:
        stderr.close()
    console = Console(proc.stdout, workdir / "console.log")
    return BareVM(proc=proc, console=console, qmp_path=qmp_path, workdir=workdir,
                  instance_id=instance_id, overlay=overlay, http_port=http_port,
                  argv=argv, started=started)


def wait_qmp(vm, timeout=10):
    """Wait until QEMU's QMP socket answers; return the query-status reply."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return vm.qmp("query-status")
        except (OSError, EOFError):
            if vm.proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def serve_metadata(mddir):
    """Answer one HTTP request on stdin/stdout from the tree under mddir
    (run by QEMU's guestfwd for each connection): GET/HEAD of files and
    directory listings under latest/, and IMDSv2 as nubo serves it: PUT
    /latest/api/token (with X-aws-ec2-metadata-token-ttl-seconds 1..21600)
    returns the token in mddir/.token, a GET with another token is 401, and
    without one 401 when mddir/.required exists."""
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    root = Path(mddir).resolve()
    line = inp.readline(8192)
    headers = {}
    for _ in range(100):
        h = inp.readline(8192)
        if h in (b"", b"\r\n", b"\n"):
            break
        name, _, value = h.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    parts = line.split()
    status, body, head = "404 Not Found", b"not found\n", False
    token = (root / ".token").read_text().strip() if (root / ".token").exists() else ""
    path = parts[1].decode("ascii", "replace").split("?", 1)[0] if len(parts) >= 2 else ""
    if len(parts) >= 2 and parts[0] == b"PUT" and path == "/latest/api/token":
        ttl = headers.get("x-aws-ec2-metadata-token-ttl-seconds", "")
        if ttl.isdigit() and 1 <= int(ttl) <= 21600 and token:
            status, body = "200 OK", token.encode()
        else:
            status, body = "400 Bad Request", b""
    elif len(parts) >= 2 and parts[0] in (b"GET", b"HEAD"):
        head = parts[0] == b"HEAD"
        given = headers.get("x-aws-ec2-metadata-token")
        if (given is not None and given != token) or \
                (given is None and (root / ".required").exists()):
            status, body = "401 Unauthorized", b""
        else:
            target = (root / path.lstrip("/")).resolve()
            if target.is_relative_to(root) and not any(
                    p.startswith(".") for p in target.relative_to(root).parts):
                if target.is_file():
                    status, body = "200 OK", target.read_bytes()
                elif target.is_dir():
                    names = sorted(p.name + ("/" if p.is_dir() else "")
                                   for p in target.iterdir() if not p.name.startswith("."))
                    status, body = "200 OK", "\n".join(names).encode()
    else:
        status, body = "400 Bad Request", b""
    out.write(f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
    if not head:
        out.write(body)
    out.flush()


def _main(argv):
    if len(argv) >= 1 and argv[0] == "build":
        dirs = [a for a in argv[1:] if a != "--force"]
        img = build_tiny(dirs[0] if dirs else DEFAULT_OUT,
                         force="--force" in argv,
                         progress=lambda p, m: print(f"progress {p} {m}", flush=True))
        print(json.dumps({"dir": str(img.dir), **img.manifest}))
        return 0
    if len(argv) >= 1 and argv[0] == "build-debian":
        dirs = [a for a in argv[1:] if a != "--force"]
        img = build_debian(dirs[0] if dirs else DEBIAN_OUT,
                           force="--force" in argv,
                           progress=lambda p, m: print(f"progress {p} {m}", flush=True))
        print(json.dumps({"dir": str(img.dir), **img.manifest}))
        return 0
    if len(argv) == 2 and argv[0] == "serve-metadata":
        serve_metadata(argv[1])
        return 0
    print("usage: tinyimage.py build [OUTDIR] [--force] | build-debian [OUTDIR] [--force]"
          " | serve-metadata DIR",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
