"""Hot standby figures (issue 15), each printed with the command that made it:

failover   kill -9 of the primary under load, N times (the killed one rejoins as the standby each
           time): the gap from the kill to the first successful reply at the same address, and the
           acknowledged writes lost (a writer records every acknowledged SET and INCR).
           Goal: median <= 1 s, max <= 2 s, 0 lost.
overhead   redis-benchmark throughput without replication and with --protection commit, full, none,
           in the same run, interleaved rounds, medians: read-mostly (GET -c 45 beside SET -c 5, at
           once) and write-heavy (SET -c 50). Goal: commit <= 5% below no replication, read-mostly.
epochs     bytes per epoch and the compression ratio against --epoch-ms (25-500), under a writer
           of JSON-like values (--protection none: epochs close on time only).

    .venv/bin/python bench/replication_failover.py failover [--kills 20]
    .venv/bin/python bench/replication_failover.py overhead [--rounds 3] [--requests 100000]
    .venv/bin/python bench/replication_failover.py epochs [--seconds 4]

The standby runs on the same machine: its CPU is part of the overhead measured.
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

from tests.replication.nodes import READY, Node, wait_serving
from tests.replication.workload import Writer, check

from kv_common import cpu_seconds, machine_note, median, redis_benchmark
from lpbench.servers import ManagedProcess, free_port


def failover(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="repl-bench-") as tmp:
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
            for _ in range(args.kills):
                time.sleep(rng.uniform(0.2, 1.0))
                primary.kill()
                t = time.monotonic()
                gaps.append(wait_serving(port, timeout_s=30) - t)
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
    gaps.sort()
    return {
        "kills": args.kills,
        "gap_median_s": round(statistics.median(gaps), 3),
        "gap_p90_s": round(gaps[int(0.9 * (len(gaps) - 1))], 3),
        "gap_max_s": round(gaps[-1], 3),
        "acknowledged_writes_checked": acked,
        "lost": len(lost),
        "lost_examples": lost[:5],
    }


def _with_server(protection: str | None, tmp: Path, fn: Any) -> Any:
    """fn(port, pids) against a plain kvserver (protection None) or a primary with its standby."""
    port = free_port()
    if protection is None:
        plain = ManagedProcess(
            [sys.executable, "-m", "kvserver", "--no-livepatch", "--port", str(port)],
            READY,
            tmp / "plain.log",
        )
        plain.start()
        try:
            assert plain.proc is not None
            return fn(port, [plain.proc.pid])
        finally:
            plain.stop()
    a, b = Node("a", free_port(), tmp), Node("b", free_port(), tmp)
    try:
        b.start_standby(port, a)
        a.start_primary(port, b, "--protection", protection)
        if protection == "none":
            a.wait_status(lambda s: s["state"] == "streaming", 30, "streaming")
        else:
            a.wait_protected()
        return fn(port, [a.pid, b.pid])
    finally:
        a.kill()
        b.kill()


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    configs: list[str | None] = [None, "commit", "full", "none"]
    read_mostly: dict[str, list[tuple[float, float, float]]] = {str(c): [] for c in configs}
    write_heavy: dict[str, list[tuple[float, float, float]]] = {str(c): [] for c in configs}
    commands: list[str] = []
    n = args.requests

    def cpu(pids: list[int]) -> list[float]:
        return [cpu_seconds(p) for p in pids] + [0.0] * (2 - len(pids))

    def per_request(before: list[float], after: list[float], requests: int) -> tuple[float, float]:
        """CPU µs per request of the primary (or plain server) and of the standby."""
        return (
            (after[0] - before[0]) * 1e6 / requests,
            (after[1] - before[1]) * 1e6 / requests,
        )

    def read_mostly_run(port: int, pids: list[int]) -> tuple[float, float, float]:
        redis_benchmark(port, "set", n // 2, clients=50, keyspace=100_000)  # populate
        results: dict[str, float] = {}
        before = cpu(pids)

        def run(test: str, requests: int, clients: int) -> None:
            cmd, res = redis_benchmark(port, test, requests, clients=clients, keyspace=100_000)
            results[test] = res[test.upper()][0]
            commands.append(" ".join(cmd))

        threads = [
            threading.Thread(target=run, args=("get", n, 45)),
            threading.Thread(target=run, args=("set", n // 9, 5)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        primary_us, standby_us = per_request(before, cpu(pids), n + n // 9)
        return results["get"] + results["set"], primary_us, standby_us

    def write_heavy_run(port: int, pids: list[int]) -> tuple[float, float, float]:
        before = cpu(pids)
        cmd, res = redis_benchmark(port, "set", n, clients=50, keyspace=100_000)
        commands.append(" ".join(cmd))
        primary_us, standby_us = per_request(before, cpu(pids), n)
        return res["SET"][0], primary_us, standby_us

    with tempfile.TemporaryDirectory(prefix="repl-bench-") as tmp:
        for _ in range(args.rounds):
            for c in configs:
                read_mostly[str(c)].append(_with_server(c, Path(tmp), read_mostly_run))
                write_heavy[str(c)].append(_with_server(c, Path(tmp), write_heavy_run))
    out: dict[str, Any] = {"commands": sorted(set(commands))}
    for name, table in (("read_mostly", read_mostly), ("write_heavy", write_heavy)):
        base = median([r[0] for r in table["None"]])
        base_cpu = median([r[1] for r in table["None"]])
        out[name] = {}
        for k, v in table.items():
            rps = median([r[0] for r in v])
            primary_us = median([r[1] for r in v])
            out[name]["no replication" if k == "None" else k] = {
                "rps_median": round(rps),
                "vs_no_replication": round(rps / base - 1, 3),
                "rounds": [round(r[0]) for r in v],
                "primary_cpu_us_per_request": round(primary_us, 1),
                "primary_cpu_vs_no_replication": round(primary_us / base_cpu - 1, 3),
                "standby_cpu_us_per_request": round(median([r[2] for r in v]), 1),
            }
    return out


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
    o = sub.add_parser("overhead")
    o.add_argument("--rounds", type=int, default=3)
    o.add_argument("--requests", type=int, default=100_000)
    e = sub.add_parser("epochs")
    e.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    print(machine_note(), flush=True)
    result = {"failover": failover, "overhead": overhead, "epochs": epochs}[args.what](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
