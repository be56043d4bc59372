"""What fork() costs a Python process against its resident memory, with and without transparent huge pages
for its heap: the pause of a validated update's leader (docs/validated-updates.md, "Where the pause is").

    .venv/bin/python bench/fork_cost.py [--keys 1000000,3000000,10000000] [--forks 3]

Per size and setting, a child interpreter builds a dict of KEYS `b"c:N"` -> `b"N"` (kvserver's layout of a
string key), then times gc.collect(0) + gc.freeze() + fork() (what session.py does on the loop thread) a
few times; the child exits at once. "thp": the interpreter runs with GLIBC_TUNABLES=glibc.malloc.hugetlb=1
PYTHONMALLOC=malloc (glibc's malloc serves every object and madvises its heap for huge pages), so the
page tables fork copies hold one entry per 2 MiB instead of per 4 KiB. Prints one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import gc, json, os, sys, time
n, forks = int(sys.argv[1]), int(sys.argv[2])
d = {b"c:%d" % i: b"%d" % i for i in range(n)}
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
def huge():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("AnonHugePages"):
            return int(line.split()[1]) // 1024
times = []
for _ in range(forks):
    t0 = time.monotonic()
    gc.collect(0)
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    times.append(round((time.monotonic() - t0) * 1e3, 1))
    os.waitpid(pid, 0)
    gc.unfreeze()
print(json.dumps({"rss_mb": status("VmRSS"), "huge_mb": huge(), "fork_ms": times}))
"""

THP_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "PYTHONMALLOC": "malloc"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", default="1000000,3000000,10000000")
    ap.add_argument("--forks", type=int, default=3)
    args = ap.parse_args()
    print(json.dumps({"load_average": os.getloadavg()}), flush=True)
    for keys in [int(k) for k in args.keys.split(",")]:
        for setting, extra in (("4k", {}), ("thp", THP_ENV)):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(keys), str(args.forks)],
                capture_output=True, text=True, check=True, env={**os.environ, **extra},
            )  # fmt: skip
            print(
                json.dumps({"keys": keys, "pages": setting, **json.loads(done.stdout)}), flush=True
            )


if __name__ == "__main__":
    main()
