"""The client-visible pause of a data-changing update of kvserver (issue 14): validated (the transform runs
in a forked follower while the leader serves) vs the same patch applied in place (`livepatch apply
--method global`: the transform runs while every managed thread is parked).

    .venv/bin/python bench/mve_update.py [--keys 1000000,10000000] [--modes validated,in-place]
                                         [--figure docs/img/mve_timeline.png] [--out FILE.json]

The update is tests/mve/intenc.py's: kvserver v2 stores every canonical integer string as an int and its
transform hook converts every existing value. Per size and mode: start kvserver with its agent, load
KEYS counters `c:N` = "N" (MSET, pipelined), start one probing client (closed loop, GET and SET of
random counters, each request timed), 2 s of baseline, then the update, then 1 s. Printed per run (one
JSON line): the server's RSS before the update, the fork time (gc.collect(0) + gc.freeze + fork, what
the leader's loop spends), the follower's install and transform times, the longest request of the
probe during the update (the client-visible pause) and before it, and the probe's throughput before, while
two versions run (from the follower's readiness to the promotion) and after. Timestamps of the phases
(update requested, follower forked, follower ready, promoted) come from polling the agent.

--thp starts the server with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 PYTHONMALLOC=malloc: every Python
object comes from glibc's malloc, which asks for transparent huge pages (madvise) on its heap, so fork
copies one page-table entry per 2 MiB instead of per 4 KiB (the machine's THP setting must be madvise
or always).

--figure draws the first validated run's timeline (throughput per 100 ms and the longest request per
100 ms, with the phases marked): bench/mve_figure.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from tests.mve.intenc import build  # noqa: E402

from kv_common import SLOW_S, machine_note  # noqa: E402
from livepatch.agent import client as agent_client  # noqa: E402
from lpbench.servers import ManagedProcess, free_port  # noqa: E402

MSET_PAIRS = 10_000


def populate(port: int, keys: int) -> None:
    """`c:N` = "N" for N < keys: MSET commands of MSET_PAIRS pairs, 8 in flight, on one raw socket."""
    s = socket.create_connection(("127.0.0.1", port))
    try:
        pending = 0
        buf = b""
        for start in range(0, keys, MSET_PAIRS):
            n = min(MSET_PAIRS, keys - start)
            parts = [b"*%d\r\n$4\r\nMSET\r\n" % (2 * n + 1)]
            for i in range(start, start + n):
                k = b"c:%d" % i
                v = b"%d" % i
                parts.append(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
            s.sendall(b"".join(parts))
            pending += 1
            while pending >= 8:
                buf += s.recv(65536)
                while b"\r\n" in buf:
                    line, buf = buf.split(b"\r\n", 1)
                    assert line == b"+OK", line
                    pending -= 1
        while pending:
            buf += s.recv(65536)
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                assert line == b"+OK", line
                pending -= 1
    finally:
        s.close()


def probe(port: int, keys: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    r = redis.Redis(port=port, single_connection_client=True, socket_timeout=600)
    rnd = random.Random(1)
    i = 0
    while not stop.is_set():
        k = f"c:{rnd.randrange(keys)}"
        t0 = time.monotonic()
        if i % 2:
            r.get(k)
        else:
            r.set(k, str(i))
        samples.append((t0, time.monotonic() - t0))
        i += 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def poll_phases(sock: str, stop: threading.Event, phases: dict[str, float]) -> None:
    """Record when the follower was forked, became ready and (last seen) validated, from the agent."""
    while not stop.is_set():
        try:
            st = agent_client.request(sock, {"op": "update-status"}, timeout=30).get("update")
        except Exception:
            st = None
        now = time.monotonic()
        if st:
            if st.get("follower_pid"):
                phases.setdefault("forked", now)
            if st.get("ready"):
                phases.setdefault("ready", now)
        stop.wait(0.05)


THP_ENV = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1", "PYTHONMALLOC": "malloc"}


def one(keys: int, mode: str, work: Path, patch: Path, thp: bool) -> dict[str, Any]:
    port = free_port()
    sock = str(work / f"lp-{keys}-{mode}.sock")
    server = ManagedProcess(
        [sys.executable, "-m", "kvserver", "--port", str(port), "--livepatch-socket", sock,
         "--allow-unsigned"],
        re.compile(r"kvserver ready on"), work / f"server-{keys}-{mode}.log",
        ready_timeout_s=SLOW_S, stop_timeout_s=SLOW_S,
    )  # fmt: skip
    saved = dict(os.environ)
    if thp:
        os.environ.update(THP_ENV)  # the server's environment (ManagedProcess inherits ours)
    try:
        server.start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    try:
        t = time.monotonic()
        populate(port, keys)
        populate_s = time.monotonic() - t
        assert server.proc is not None
        rss = rss_mb(server.proc.pid)
        stop = threading.Event()
        samples: list[tuple[float, float]] = []
        prober = threading.Thread(target=probe, args=(port, keys, stop, samples), daemon=True)
        prober.start()
        time.sleep(2.0)  # the baseline: one version
        phases: dict[str, float] = {}
        poll_stop = threading.Event()
        poller = threading.Thread(target=poll_phases, args=(sock, poll_stop, phases), daemon=True)
        if mode == "validated":
            cmd = ["update", str(patch), "--socket", sock, "--validate", "--window", "2s",
                   "--exercise-wait", "0", "--max-lag", "10000000", "--json"]  # fmt: skip
            poller.start()
        else:
            cmd = ["apply", str(patch), "--socket", sock, "--method", "global", "--timeout",
                   "300", "--json"]  # fmt: skip
        phases["requested"] = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "livepatch.cli", *cmd],
            capture_output=True, text=True, timeout=SLOW_S,
        )  # fmt: skip
        phases["done"] = time.monotonic()
        poll_stop.set()
        time.sleep(1.0)
        stop.set()
        prober.join(timeout=600)
    finally:
        server.stop()
    try:
        reply = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"{mode} {keys}: {done.stdout}\n{done.stderr}") from None
    t0, t1 = phases["requested"], phases["done"]
    before = [lat for ts, lat in samples if ts < t0]
    during = [lat for ts, lat in samples if t0 <= ts <= t1]
    after = [ts for ts, _ in samples if ts > t1]
    out: dict[str, Any] = {
        "keys": keys,
        "mode": mode,
        "thp": thp,
        "ok": bool(reply.get("ok")),
        "rss_mb": round(rss),
        "populate_s": round(populate_s, 1),
        "update_s": round(t1 - t0, 2),
        "max_latency_ms_before": round(max(before) * 1e3, 1),
        "max_latency_ms_during_update": round(max(during) * 1e3, 1),
        "probe_ops_per_s_before": round(len(before) / 2.0),
    }
    if after:
        out["probe_ops_per_s_after"] = round(len(after) / max(1e-3, after[-1] - after[0]))
    if mode == "validated":
        report = reply["update"]
        out.update(
            outcome=report["outcome"],
            fork_ms=round(report["fork_ms"], 1),
            follower_install_ms=round(report["apply_ms"], 1),
            transform_ms=round(report["transform_ms"] or 0.0, 1),
            compared=report["compared"],
        )
        ready = phases.get("ready")
        if ready is not None:
            two = [ts for ts, _ in samples if ready <= ts <= t1]
            out["probe_ops_per_s_two_versions"] = round(len(two) / max(1e-3, t1 - ready))
    else:
        result = reply.get("result") or {}
        out["outcome"] = result.get("outcome", reply.get("error"))
        out["apply_timings_ms"] = {k: round(v, 1) for k, v in result.get("timings", {}).items()}
    out["_samples"] = samples
    out["_phases"] = phases
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", default="1000000,10000000")
    ap.add_argument("--modes", default="validated,in-place")
    ap.add_argument("--figure", type=Path, default=None, help="PNG of the first validated run")
    ap.add_argument("--thp", action="store_true", help="huge pages for the server's heap")
    ap.add_argument("--out", type=Path, default=None, help="write every run's samples (JSON)")
    args = ap.parse_args()
    print(json.dumps({"machine": machine_note()}), flush=True)
    work = Path(tempfile.mkdtemp(prefix="mvebench-"))
    runs: list[dict[str, Any]] = []
    try:
        patch = build(work)["good"]
        for keys in [int(k) for k in args.keys.split(",")]:
            for mode in args.modes.split(","):
                run = one(keys, mode, work, patch, args.thp)
                runs.append(run)
                print(
                    json.dumps({k: v for k, v in run.items() if not k.startswith("_")}), flush=True
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out is not None:
        args.out.write_text(json.dumps(runs))
    if args.figure is not None:
        from mve_figure import draw

        first = next((r for r in runs if r["mode"] == "validated"), None)
        if first is not None:
            draw(first, args.figure)
            print(json.dumps({"figure": str(args.figure)}))


if __name__ == "__main__":
    main()
