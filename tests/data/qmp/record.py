#!/usr/bin/env python3
"""Records QMP transcripts from a real QEMU for tests/unit/test_qmp.c.

Each scenario starts its own qemu-system-x86_64 (TCG, no devices, no
display, 2 vCPUs, 128 MiB), runs a list of commands over QMP and writes
<scenario>.replay beside this script (or into the directory given), one
message a line:

    S: <json>   the server (QEMU) sent this
    C: <json>   the client must send this command; the fake monitor compares
                "execute" and "arguments", and puts the client's own id into
                the next reply in place of the recorded one

Recorded files are data: regenerate them with this script, never edit them.

    python3 tests/data/qmp/record.py [--qemu BIN] [OUTDIR]
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TIMEOUT = 20.0

# name -> list of (command, arguments or None, events to wait for after the
# reply, in addition to those that came before it). Waiting for the event a
# command causes makes each transcript complete without guessing delays.
SCENARIOS = {
    "connect": [],
    "query-status": [("query-status", None, [])],
    "query-version": [("query-version", None, [])],
    "query-cpus-fast": [("query-cpus-fast", None, [])],
    "query-memory-size-summary": [("query-memory-size-summary", None, [])],
    "stop-cont": [
        ("stop", None, ["STOP"]),
        ("query-status", None, []),
        ("cont", None, ["RESUME"]),
        ("query-status", None, []),
    ],
    "system_reset": [("system_reset", None, ["RESET"])],
    "system_powerdown": [("system_powerdown", None, ["POWERDOWN"])],
    "quit": [("quit", None, ["SHUTDOWN", "<eof>"])],
    "error-unknown-command": [
        ("nb-no-such-command", None, []),
        ("query-status", None, []),
    ],
    "error-bad-argument": [("query-status", {"verbose": True}, [])],
}


class Monitor:
    def __init__(self, path):
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)  # QEMU has not created the socket yet
        self.sock.settimeout(TIMEOUT)
        self.buf = b""
        self.eof = False
        self.lines = []
        self.next_id = 0

    def read(self):
        """Next message from QEMU (recorded), or None at EOF."""
        while b"\n" not in self.buf:
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                # QEMU closes after quit without reading the rest of our
                # last line, which the kernel turns into a reset.
                data = b""
            if not data:
                self.eof = True
                return None
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        self.lines.append("S: " + json.dumps(msg, separators=(",", ":")))
        return msg

    def execute(self, cmd, args, wait_events):
        self.next_id += 1
        rid = "rec-%d" % self.next_id
        req = {"execute": cmd}
        if args is not None:
            req["arguments"] = args
        self.lines.append("C: " + json.dumps(req, separators=(",", ":")))
        req["id"] = rid
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        seen = []
        while True:
            msg = self.read()
            if msg is None:
                raise RuntimeError("QEMU closed the socket before replying to " + cmd)
            if "event" in msg:
                seen.append(msg["event"])
            elif msg.get("id") == rid:
                break
        for ev in wait_events:
            if ev == "<eof>":
                while self.read() is not None:
                    pass
                continue
            while ev not in seen:
                msg = self.read()
                if msg is None:
                    raise RuntimeError("EOF while waiting for " + ev)
                if "event" in msg:
                    seen.append(msg["event"])
            seen.remove(ev)


def record(qemu, name, steps, outdir, version_note):
    tmp = tempfile.mkdtemp(prefix="nb-qmp-rec-")
    sock = os.path.join(tmp, "qmp.sock")
    argv = [qemu, "-nodefaults", "-no-user-config", "-display", "none",
            "-machine", "pc", "-accel", "tcg", "-smp", "2", "-m", "128M",
            "-qmp", "unix:%s,server=on,wait=off" % sock]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        mon = Monitor(sock)
        greeting = mon.read()
        if greeting is None or "QMP" not in greeting:
            raise RuntimeError("no QMP greeting")
        mon.execute("qmp_capabilities", None, [])
        for cmd, args, events in steps:
            mon.execute(cmd, args, events)
        text = ["# %s: recorded from %s by tests/data/qmp/record.py." % (name, version_note),
                "# Data, not code: regenerate with the script, do not edit."]
        text += mon.lines
        with open(os.path.join(outdir, name + ".replay"), "w") as f:
            f.write("\n".join(text) + "\n")
        if not mon.eof:
            mon.execute("quit", None, ["<eof>"])  # after the file is written
        mon.sock.close()
        proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qemu", default="qemu-system-x86_64")
    ap.add_argument("outdir", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    opts = ap.parse_args()
    if not shutil.which(opts.qemu):
        sys.exit("record.py: %s not found" % opts.qemu)
    version = subprocess.run([opts.qemu, "--version"], check=True, capture_output=True,
                             text=True).stdout.splitlines()[0]
    for name, steps in SCENARIOS.items():
        record(opts.qemu, name, steps, opts.outdir, version)
        print("recorded", name)


if __name__ == "__main__":
    main()
