#!/usr/bin/python3
"""Instructions per EC2 DescribeInstances answer, counted by callgrind: a
noise-free measure of nubod's cost per answer (wall-clock rates swing on a
shared machine).

For each record count, the store is seeded as bench/ec2_describe.py does
(same records, same seed), nubod (release build) runs under
valgrind --tool=callgrind --toggle-collect=nb_ec2_handle (so only the
handling of EC2 requests counts: authentication, parsing, the store, the
answer; not MHD or the socket), one warm-up request is answered, the
counters are zeroed (callgrind_control --zero), then ANSWERS requests of the
variant are sent one after another and nubod is stopped. The count per
answer is the total over ANSWERS.

Variants (each request distinct, so nubod's Describe cache never answers,
except "cached"):
  uncached   every record (instance-id filter i-* plus an id matching nothing)
  filtered   instance-state-name=running, tag:team=blue, plus the same
             instance-id filter
  cached     every record, the same request each time (served from the cache)

usage: ec2_callgrind.py [--records 1000,10000] [--answers 3]
                        [--variants uncached,filtered,cached] [--keep DIR]
                        [--annotate N]
environment: NUBO_BUILD (build directory, default build)

Runs in a network namespace of its own; stops what it starts, by pid.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ec2_describe as ed  # noqa: E402

VARIANT_BODY = {
    "uncached": ed.BODY_ALL + "&Filter.1.Name=instance-id&Filter.1.Value.1=i-%2A"
                "&Filter.1.Value.2=i-{k:017x}",
    "filtered": ed.BODY_FILTERED + "&Filter.3.Name=instance-id&Filter.3.Value.1=i-%2A"
                "&Filter.3.Value.2=i-{k:017x}",
    "cached": ed.BODY_ALL,
}


class GrindNubo(ed.Nubo):
    def start_grind(self, out):
        self.proc = self.procs.start("nubod", [
            "valgrind", "--tool=callgrind", "--toggle-collect=nb_ec2_handle",
            f"--callgrind-out-file={out}",
            str(self.build / "src/nubod"), "-s", f"state_dir={self.state}",
            "-s", f"api_listen=127.0.0.1:{self.port}",
            "-s", "rate_describe=100000000", "-s", "rate_describe_burst=100000000",
            "-s", "log_level=warn"], self.log)
        ed.wait_until(self._health, 300, "nubod health under valgrind", interval=0.5)


def totals(path):
    for line in Path(path).read_text().splitlines():
        m = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if m:
            return int(m.group(1))
    raise RuntimeError(f"no totals in {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", default="1000,10000")
    ap.add_argument("--answers", type=int, default=3)
    ap.add_argument("--variants", default="uncached,filtered,cached")
    ap.add_argument("--keep", help="work directory to use and keep")
    ap.add_argument("--annotate", type=int, default=0,
                    help="also print the top N functions (inclusive) of each run")
    args = ap.parse_args()
    counts = [int(x) for x in args.records.split(",")]
    variants = args.variants.split(",")
    build = Path(os.environ.get("NUBO_BUILD", ed.REPO / "build")).resolve()
    ed.enter_netns()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nubo-grind-ec2."))
    work.mkdir(parents=True, exist_ok=True)
    procs = ed.Procs()
    rows = []
    try:
        nubo = GrindNubo(procs, build, work)
        nubo.start()
        key, image_id = nubo.setup(work)
        nubo.stop()
        plan = ed.record_plan(counts[-1], seed=20240601)
        for n in counts:
            ed.seed_nubo_db(nubo.state / "nubo.db", key["account_id"], image_id, plan[:n])
            for v in variants:
                out = work / f"callgrind.{n}.{v}.out"
                nubo.start_grind(out)
                bodies = [VARIANT_BODY[v].format(k=k) for k in range(args.answers + 1)]
                signed = ed.Signed(nubo.port, key["access_key_id"], key["secret_access_key"],
                                   bodies, ed.REGION)
                status, body = signed.fetch(0)
                if status != 200:
                    raise RuntimeError(f"{v}: {status} {body[:300]!r}")
                size, got = len(body), body.count(b"<instanceId>")
                subprocess.run(["callgrind_control", "--zero", str(nubo.proc.pid)], check=True,
                               stdout=subprocess.DEVNULL)
                t = time.monotonic()
                for k in range(1, args.answers + 1):
                    status, b = signed.fetch(k if v != "cached" else 0)
                    if status != 200 or len(b) != size:
                        raise RuntimeError(f"{v}: {status}, {len(b)} bytes, expected {size}")
                secs = time.monotonic() - t
                nubo.stop()
                ir = totals(out) / args.answers
                rows.append((n, v, got, size, ir))
                ed.log(f"[{n}] {v}: {got} instances, {size:,} bytes, {ir / 1e6:,.2f} M "
                       f"instructions per answer ({secs:.1f} s under valgrind)")
                if args.annotate:
                    a = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)],
                                       capture_output=True, text=True).stdout
                    lines = [ln for ln in a.splitlines() if re.match(r"\s*[\d,]+ \(", ln)]
                    print("\n".join(lines[:args.annotate]))
    finally:
        procs.stop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("| records | variant | instances | answer bytes | instructions per answer |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for n, v, got, size, ir in rows:
        print(f"| {n:,} | {v} | {got:,} | {size:,} | {ir / 1e6:,.2f} M |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
