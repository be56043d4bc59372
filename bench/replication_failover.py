"""Hot standby figures (issue 15), each printed with the command that made it:

failover   kill -9 of the primary under load, N times (the killed one rejoins as the standby each
           time): the gap from the kill to the first successful reply at the same address, and the
           acknowledged writes lost (a writer records every acknowledged SET and INCR).
           Goal: median <= 1 s, max <= 2 s, 0 lost.
switchover `livepatch switchover` back and forth N times under the same writers (retrying redis-py
           clients, as docs/standby.md recommends): the pause (the longest SET across the
           switchover), the errors that reached a client (goal 0), the acknowledged writes lost and
           the INCRs applied twice (goal 0; each counter must equal its acknowledged INCRs).
epochs     bytes per epoch and the compression ratio against --epoch-ms (25-500), under a writer
           of JSON-like values (--protection none: epochs close on time only).

    .venv/bin/python bench/replication_failover.py failover [--kills 20] [--figure PNG]
    .venv/bin/python bench/replication_failover.py switchover [--switches 20]
    .venv/bin/python bench/replication_failover.py epochs [--seconds 4]

The overhead (throughput, instructions per request) is bench/replication_overhead.py's.
--figure draws the gap of every kill and the recording writer's latency through the first kills.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

# The repository root, for tests.replication (the pair of servers and the recording clients).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.replication.nodes import Node, wait_serving
from tests.replication.workload import Writer, check

from kv_common import machine_note
from lpbench.ports import free_port


def failover(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="repl-bench-") as tmp:
        if args.logs:
            tmp = args.logs  # the servers' logs stay there
            Path(tmp).mkdir(parents=True, exist_ok=True)
        port = free_port()
        a, b = Node("a", free_port(), Path(tmp)), Node("b", free_port(), Path(tmp))
        primary, standby = a, b
        gaps: list[float] = []
        lost: list[str] = []
        try:
            standby.start_standby(port, primary)
            primary.start_primary(port, standby)
            primary.wait_protected()
            writer = Writer(port)
            load = [Writer(port, name=f"load{i}") for i in range(args.load_clients)]
            for w in (writer, *load):
                w.start()
            rng = random.Random(args.seed)
            kills: list[float] = []
            for n in range(args.kills):
                time.sleep(rng.uniform(0.2, 1.0))
                primary.kill()
                t = time.monotonic()
                kills.append(t)
                gaps.append(wait_serving(port, timeout_s=30) - t)
                if n % 10 == 9:
                    print(f"kill {n + 1}: gaps so far median {statistics.median(gaps):.3f} s, "
                          f"max {max(gaps):.3f} s, lost {len(lost)}", flush=True)  # fmt: skip
                lost += check(port, writer)
                primary, standby = standby, primary
                standby.start_standby(port, primary)
                primary.wait_protected()
            for w in (writer, *load):
                w.stop()
            lost += check(port, writer)
            acked = len(writer.acked)
        finally:
            a.kill()
            b.kill()
    timeline = [(start - kills[0], lat) for start, lat in writer.latencies if start >= kills[0] - 1]
    if args.figure:
        draw_failover(gaps, kills, timeline, Path(args.figure))
    by_kill = list(gaps)
    gaps.sort()
    return {
        "gaps_s": [round(g, 3) for g in by_kill],
        "writer_errors": writer.errors,
        "kills": args.kills,
        "gap_median_s": round(statistics.median(gaps), 3),
        "gap_p90_s": round(gaps[int(0.9 * (len(gaps) - 1))], 3),
        "gap_max_s": round(gaps[-1], 3),
        "acknowledged_writes_checked": acked,
        "lost": len(lost),
        "lost_examples": lost[:5],
    }


def draw_failover(
    gaps: list[float], kills: list[float], timeline: list[tuple[float, float]], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5), dpi=90)
    top.plot(range(1, len(gaps) + 1), [g * 1e3 for g in gaps], "o", ms=3)
    top.axhline(1000, color="grey", ls="--", lw=0.7)
    top.annotate("goal: median <= 1 s", (1, 1000), fontsize=7, va="bottom")
    top.set_xlabel("kill -9 of the primary, in order")
    top.set_ylabel("kill -> first reply\nat the address (ms)")
    median = statistics.median(gaps) * 1e3
    top.set_title(f"{len(gaps)} failovers: median {median:.0f} ms, max {max(gaps) * 1e3:.0f} ms")
    end = kills[2] - kills[0] + 1 if len(kills) > 2 else 3.0
    points = [(t, lat * 1e3) for t, lat in timeline if t <= end]
    bottom.plot([t for t, _ in points], [lat for _, lat in points], ".", ms=2, color="tab:red")
    for k in kills:
        if k - kills[0] <= end:
            bottom.axvline(k - kills[0], color="grey", ls="--", lw=0.7)
    bottom.set_yscale("log")
    bottom.set_xlabel("s since the first kill (dashed: kills)")
    bottom.set_ylabel("SET latency (ms),\nby start time")
    fig.tight_layout()
    fig.savefig(path)


def switchover(args: argparse.Namespace) -> dict[str, Any]:
    """N switchovers back and forth under retrying writers: pause, errors, losses, duplicates."""
    import subprocess

    starts: list[float] = []
    with tempfile.TemporaryDirectory(prefix="repl-bench-") as tmp:
        if args.logs:
            tmp = args.logs  # the servers' logs stay there
            Path(tmp).mkdir(parents=True, exist_ok=True)
        port = free_port()
        a, b = Node("a", free_port(), Path(tmp)), Node("b", free_port(), Path(tmp))
        primary, standby = a, b
        pauses: list[float] = []
        durations: list[float] = []
        try:
            standby.start_standby(port, primary)
            primary.start_primary(port, standby, "--replication-listen", f"127.0.0.1:{a.repl_port}")
            primary.wait_protected()
            writers = [Writer(port, name=f"sw{i}", retrying=True) for i in range(args.writers)]
            for w in writers:
                w.start()
            for _ in range(args.switches):
                time.sleep(0.5)
                t = time.monotonic()
                starts.append(t)
                done = subprocess.run(
                    [sys.executable, "-m", "livepatch.cli", "switchover", "--socket",
                     primary.status_socket], capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                if done.returncode:
                    raise RuntimeError(f"switchover failed: {done.stderr}")
                durations.append(time.monotonic() - t)
                primary, standby = standby, primary
                primary.wait_protected()
                time.sleep(0.3)  # writes after the switchover, so that the pause is measured whole
                worst = max(
                    (
                        lat
                        for w in writers
                        for start, lat in w.snapshot_latencies()
                        if start >= t - 1
                    ),
                    default=0.0,
                )
                pauses.append(worst)
            for w in writers:
                w.stop()
            problems: list[str] = []
            with redis.Redis(port=port) as c:
                for w in writers:
                    lost = check(port, w)
                    problems += lost
                    acked, sets = w.snapshot()[0], w.snapshot_latencies()
                    for line in lost:
                        if line.startswith("acknowledged SET"):
                            i = int(line.split()[-4])
                            start, lat = sets[acked.index(i)]
                            near = min(starts, key=lambda x: abs(x - start))
                            problems.append(
                                f"  {w.prefix}:{i} sent {start - near:+.3f} s from switchover "
                                f"{starts.index(near) + 1}, answered after {lat:.3f} s"
                            )
                    ctr = int(c.get(f"{w.prefix}:ctr") or 0)
                    if ctr != w.incrs:
                        problems.append(f"{w.prefix}:ctr {ctr} != {w.incrs} acknowledged INCRs")
        finally:
            a.kill()
            b.kill()
    return {
        "switches": args.switches,
        "writers": args.writers,
        "pause_ms_median": round(statistics.median(pauses) * 1e3, 1),
        "pause_ms_max": round(max(pauses) * 1e3, 1),
        "pauses_ms": [round(p * 1e3, 1) for p in pauses],
        "command_s_median": round(statistics.median(durations), 3),
        "client_errors": sum(w.errors for w in writers),
        "acknowledged_sets": sum(len(w.acked) for w in writers),
        "problems": len(problems),
        "problem_examples": problems[:12],
    }


def _json_writer(port: int, stop: threading.Event, seed: int, done: list[int]) -> None:
    rng = random.Random(seed)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    with redis.Redis(port=port) as c:
        while not stop.is_set():
            pipe = c.pipeline(transaction=False)
            for _ in range(50):
                i = rng.randrange(200_000)
                value = json.dumps(
                    {
                        "id": i,
                        "name": rng.choice(words) + str(rng.randrange(1000)),
                        "score": round(rng.random() * 100, 3),
                        "tags": rng.sample(words, 3),
                    }
                )
                pipe.set(f"user:{i}", value)
            pipe.execute()
            done[0] += 50


def epochs(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="repl-bench-") as tmp:
        for epoch_ms in (25, 50, 100, 200, 500):
            port = free_port()
            a, b = Node("a", free_port(), Path(tmp)), Node("b", free_port(), Path(tmp))
            try:
                b.start_standby(port, a)
                a.start_primary(port, b, "--protection", "none", "--epoch-ms", str(epoch_ms))
                a.wait_status(lambda s: s["state"] == "streaming", 30)
                stop = threading.Event()
                sets = [0]
                writer = threading.Thread(target=_json_writer, args=(port, stop, epoch_ms, sets))
                writer.start()
                time.sleep(0.5)  # past the first epochs of the load
                first, sets_first = a.status(), sets[0]
                time.sleep(max(args.seconds, 20 * epoch_ms / 1000))  # >= 20 epochs
                last, sets_last = a.status(), sets[0]
                stop.set()
                writer.join()
            finally:
                a.kill()
                b.kill()
            epochs_n = last["epochs_sent"] - first["epochs_sent"]
            sent = last["epoch_bytes_sent"] - first["epoch_bytes_sent"]
            raw = last["epoch_bytes_raw"] - first["epoch_bytes_raw"]
            n_sets = sets_last - sets_first
            rows.append(
                {
                    "epoch_ms": epoch_ms,
                    "epochs": epochs_n,
                    "sets": n_sets,
                    "bytes_per_epoch": round(sent / max(1, epochs_n)),
                    "raw_bytes_per_epoch": round(raw / max(1, epochs_n)),
                    "compression_ratio": round(raw / sent, 2) if sent else None,
                    "bytes_per_set": round(sent / max(1, n_sets), 1),
                }
            )
    return {
        "writer": "redis-py, pipelines of 50 SETs of ~100-byte JSON over 200,000 keys",
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    f = sub.add_parser("failover")
    f.add_argument("--kills", type=int, default=20)
    f.add_argument("--load-clients", type=int, default=4)
    f.add_argument("--seed", type=int, default=None)
    f.add_argument("--figure", default=None, help="draw the gaps and a latency timeline (PNG)")
    f.add_argument("--logs", default=None, help="keep the servers' logs in this directory")
    s = sub.add_parser("switchover")
    s.add_argument("--switches", type=int, default=20)
    s.add_argument("--writers", type=int, default=4)
    s.add_argument("--logs", default=None, help="keep the servers' logs in this directory")
    e = sub.add_parser("epochs")
    e.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(machine_note(), flush=True)
    result = {"failover": failover, "switchover": switchover, "epochs": epochs}[args.what](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
