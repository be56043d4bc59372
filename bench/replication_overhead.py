"""What hot standby costs the primary (issue 15): throughput side by side, and instructions per request.

throughput    redis-benchmark without replication and with --protection commit, full, none, in the
              same run, interleaved rounds, medians: read-mostly (GET -c 45 beside SET -c 5, at once,
              over 100,000 keys populated first) and write-heavy (SET -c 50). The issue's goal:
              commit <= 5% below no replication in throughput, read-mostly. Also the CPU time per
              request of the primary and of the standby (/proc/PID/stat).
instructions  the same loads against a primary run under valgrind --tool=callgrind: machine
              instructions per request of the whole primary process (every thread: the loop, the
              sender, the acknowledgement reader), counted between a warm-up and the end of the load
              (callgrind_control -z / -d). Deterministic enough to compare two builds on a busy machine.

    .venv/bin/python bench/replication_overhead.py throughput [--rounds 3] [--requests 100000]
    .venv/bin/python bench/replication_overhead.py instructions [--requests 20000]
    (both: [--configs None,commit,full,none] [--loads read_mostly,write_heavy]; instructions:
    [--keep-dumps DIR], then `callgrind_annotate --inclusive=yes DIR/read_mostly-commit.callgrind`)
    A config MODE/G runs the primary with --group-commit-ms G (commit/0: an epoch per round trip),
    MODE/G/E also with --epoch-ms E: under valgrind the primary runs ~100x slower, so the real-time
    epoch rates of --epoch-ms 50 --group-commit-ms 2 are those of commit/200/5000 there (heartbeats,
    every 50 ms whatever the epoch length, are not scaled).
    throughput also reports the epochs per request and the SET replies' median and p99 latency.

Placement (2+ CPUs, like bench/kv_vs_redis.py): the primary (or the plain server) on CPU 1; the
standby and redis-benchmark on CPU 0 (RemusDB runs the standby on another machine: here it competes
with the load generator, not with the primary). --no-pin lets the scheduler place everything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.replication

from tests.replication.nodes import READY, Node, pin

from kv_common import (
    LOAD_CPU,
    SERVER_CPU,
    can_pin,
    cpu_seconds,
    machine_note,
    median,
    redis_benchmark_rows,
)
from lpbench.servers import ManagedProcess, free_port

Load = Callable[[int, list[int]], tuple[float, float, float]]


def split_config(config: str | None) -> tuple[str | None, list[str]]:
    """'commit/2' -> ('commit', ['--group-commit-ms', '2']); 'commit/200/5000' also passes
    --epoch-ms 5000; None -> (None, [])."""
    if config is None or config == "None":
        return None, []
    mode, _, rest = config.partition("/")
    gap, _, epoch = rest.partition("/")
    extra = ["--group-commit-ms", gap] if gap else []
    return mode, extra + (["--epoch-ms", epoch] if epoch else [])


class Setup:
    def __init__(self, pinned: bool, tmp: Path, wrapper: list[str] | None = None) -> None:
        self.pinned = pinned
        self.tmp = tmp
        self.wrapper = wrapper or []
        self.commands: set[str] = set()
        self.primary: Node | None = None  # the primary of the run in progress (None: plain)
        self.set_latency: list[tuple[float, float]] = []  # SET (p50, p99) ms of each load run
        self.epochs: list[float] = []  # epochs captured per request of each metered run
        # Under valgrind the primary runs ~50x slower: patient timeouts, or the pair would spend the
        # run declaring each other gone and resynchronising.
        self.patient = bool(self.wrapper)

    def bench(self, port: int, test: str, n: int, clients: int, record: bool = False) -> float:
        cmd, rows = redis_benchmark_rows(port, test, n, clients=clients, pinned=self.pinned)
        self.commands.add(" ".join(cmd))
        row = {r["test"]: r for r in rows}[test.upper()]
        if record:
            self.set_latency.append((float(row["p50_latency_ms"]), float(row["p99_latency_ms"])))
        return float(row["rps"])

    def run(self, config: str | None, fn: Load) -> tuple[float, float, float]:
        """fn(port, pids) against a plain kvserver (config None) or a primary with its standby."""
        protection, extra = split_config(config)
        port = free_port()
        self.primary = None
        if protection is None:
            argv = [*self.wrapper, sys.executable, "-m", "kvserver", "--no-livepatch"]
            plain = ManagedProcess(
                [*argv, "--port", str(port)], READY, self.tmp / "plain.log", ready_timeout_s=300
            )
            plain.start()
            try:
                assert plain.proc is not None
                if self.pinned:
                    pin(plain.proc.pid, {SERVER_CPU})
                return fn(port, [plain.proc.pid])
            finally:
                plain.stop()
        a, b = Node("a", free_port(), self.tmp), Node("b", free_port(), self.tmp)
        a.wrapper = self.wrapper
        if self.pinned:
            a.cpus, b.cpus = {SERVER_CPU}, {LOAD_CPU}
        try:
            patience = ["--failover-after-ms", "10000"] if self.patient else []
            b.start_standby(port, a, *patience)
            patience = ["--standby-timeout-ms", "10000"] if self.patient else []
            a.start_primary(port, b, "--protection", protection, *extra, *patience)
            self.primary = a
            if protection == "none":
                a.wait_status(lambda s: s["state"] == "streaming", 120, "streaming")
            else:
                a.wait_protected(120)
            return fn(port, [a.pid, b.pid])
        finally:
            b.kill()  # first: it would take over from a stopped primary
            a.stop()


def read_mostly(setup: Setup, n: int, before_load: Callable[[list[int]], Any]) -> Load:
    def load(port: int, pids: list[int]) -> tuple[float, float, float]:
        setup.bench(port, "set", n // 2, 50)  # populate (and warm up)
        results: dict[str, float] = {}
        start = before_load(pids)

        def run(test: str, requests: int, clients: int) -> None:
            results[test] = setup.bench(port, test, requests, clients, record=test == "set")

        threads = [
            threading.Thread(target=run, args=("get", n, 45)),
            threading.Thread(target=run, args=("set", n // 9, 5)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        first, second = start(n + n // 9)
        return results["get"] + results["set"], first, second

    return load


def write_heavy(setup: Setup, n: int, before_load: Callable[[list[int]], Any]) -> Load:
    def load(port: int, pids: list[int]) -> tuple[float, float, float]:
        setup.bench(port, "set", n // 4, 50)  # warm up
        start = before_load(pids)
        rps = setup.bench(port, "set", n, 50, record=True)
        first, second = start(n)
        return rps, first, second

    return load


def cpu_meter(setup: Setup) -> Callable[[list[int]], Callable[[int], tuple[float, float]]]:
    """CPU µs per request of the primary (or plain server) and of the standby, from now on; the
    primary's epochs captured per request go to setup.epochs."""

    def before_load(pids: list[int]) -> Callable[[int], tuple[float, float]]:
        before = [cpu_seconds(p) for p in pids]
        node = setup.primary
        epochs = node.status()["epochs_captured"] if node is not None else 0

        def done(requests: int) -> tuple[float, float]:
            used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)] + [0.0]
            if node is not None:
                setup.epochs.append((node.status()["epochs_captured"] - epochs) / requests)
            else:
                setup.epochs.append(0.0)
            return used[0] * 1e6 / requests, used[1] * 1e6 / requests

        return done

    return before_load


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    tables: dict[str, dict[str, list[tuple[float, float, float]]]]
    with tempfile.TemporaryDirectory(prefix="repl-bench-") as tmp:
        setup = Setup(args.pinned, Path(tmp))
        meter = cpu_meter(setup)
        loads = {
            "read_mostly": read_mostly(setup, args.requests, meter),
            "write_heavy": write_heavy(setup, args.requests, meter),
        }
        loads = {k: v for k, v in loads.items() if k in args.loads.split(",")}
        configs = args.configs.split(",")
        tables = {k: {c: [] for c in configs} for k in loads}
        extras: dict[str, dict[str, list[tuple[float, float, float]]]] = {
            k: {c: [] for c in configs} for k in loads
        }
        for rnd in range(args.rounds):
            order = configs if rnd % 2 == 0 else list(reversed(configs))
            for c in order:
                for name, load in loads.items():
                    tables[name][c].append(setup.run(None if c == "None" else c, load))
                    p50, p99 = setup.set_latency[-1]
                    extras[name][c].append((setup.epochs[-1], p50, p99))
                    print(name, c, [round(x, 1) for x in tables[name][c][-1]],
                          [round(x, 4) for x in extras[name][c][-1]], os.getloadavg()[0],
                          flush=True)  # fmt: skip
    out: dict[str, Any] = {"commands": sorted(setup.commands)}
    for name, table in tables.items():
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
                "epochs_per_1000_requests": round(
                    1000 * median([e[0] for e in extras[name][k]]), 2
                ),
                "set_p50_ms": round(median([e[1] for e in extras[name][k]]), 3),
                "set_p99_ms": round(median([e[2] for e in extras[name][k]]), 3),
            }
    return out


_TOTALS = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def callgrind_meter(
    setup: Setup, tmp: Path, keep: Path | None = None, label: dict[str, str] | None = None
) -> Callable[[list[int]], Callable[[int], tuple[float, float]]]:
    """keep: copy each counted window's dump there as LABEL.callgrind (label["name"]), for
    `callgrind_annotate --inclusive=yes` (by C function: where the instructions went)."""

    def before_load(pids: list[int]) -> Callable[[int], tuple[float, float]]:
        pid = pids[0]
        # Instrumentation starts here (--instr-atstart=no below): the start-up, the full sync and
        # the warm-up run at valgrind's uninstrumented speed, which at a load of 40 on this
        # machine is what lets the server print its readiness line within the timeouts.
        node = setup.primary
        epochs = node.status()["epochs_captured"] if node is not None else 0
        for op in (["-i", "on"], ["-z"]):
            subprocess.run(["callgrind_control", *op, str(pid)], check=True, capture_output=True)

        def done(requests: int) -> tuple[float, float]:
            dumps = set(tmp.glob("callgrind.*"))
            subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
            after = node.status()["epochs_captured"] if node is not None else 0
            setup.epochs.append((after - epochs) / requests)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                new = [p for p in set(tmp.glob("callgrind.*")) - dumps if p.stat().st_size]
                if new and _TOTALS.search(new[0].read_text(errors="replace")):
                    text = new[0].read_text(errors="replace")
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        name = (label or {}).get("name", "run")
                        (keep / f"{name}.callgrind").write_text(text)
                    for p in new:
                        p.unlink()
                    instructions = sum(int(m) for m in _TOTALS.findall(text)[:1])
                    return instructions / requests, 0.0
                time.sleep(0.1)
            raise RuntimeError("callgrind wrote no dump")

        return done

    return before_load


def instructions(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="repl-cg-") as tmp:
        wrapper = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={tmp}/callgrind.%p",
        ]
        setup = Setup(args.pinned, Path(tmp), wrapper)
        label = {"name": ""}
        keep = Path(args.keep_dumps) if args.keep_dumps else None
        meter = callgrind_meter(setup, Path(tmp), keep, label)
        loads = {
            "read_mostly": read_mostly(setup, args.requests, meter),
            "write_heavy": write_heavy(setup, args.requests, meter),
        }
        for name, load in loads.items():
            if name not in args.loads.split(","):
                continue
            out[name] = {}
            for c in args.configs.split(","):
                label["name"] = f"{name}-{c.replace('/', '-')}"
                rps, per_request, _ = setup.run(None if c == "None" else c, load)
                out[name]["no replication" if c == "None" else c] = {
                    "instructions_per_request": round(per_request),
                    "rps_under_valgrind": round(rps),
                    "epochs_per_1000_requests": round(1000 * setup.epochs[-1], 2),
                    "set_p50_ms_under_valgrind": setup.set_latency[-1][0],
                }
                print(name, c, round(per_request), round(1000 * setup.epochs[-1], 2), flush=True)
            base = out[name]["no replication"]["instructions_per_request"]
            for row in out[name].values():
                row["vs_no_replication"] = round(row["instructions_per_request"] / base - 1, 3)
        out["commands"] = sorted(setup.commands)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--requests", type=int, default=100_000)
    i = sub.add_parser("instructions")
    i.add_argument("--requests", type=int, default=20_000)
    i.add_argument("--keep-dumps", metavar="DIR", help="keep each window's callgrind dump in DIR")
    for p in (t, i):
        p.add_argument("--configs", default="None,commit,full,none", help="which (None: plain)")
        p.add_argument("--loads", default="read_mostly,write_heavy", help="which loads to run")
        p.add_argument("--no-pin", action="store_true", help="let the scheduler place everything")
    args = parser.parse_args()
    args.pinned = can_pin() and not args.no_pin
    placement = "primary on CPU 1, standby and load on CPU 0" if args.pinned else "not pinned"
    print(f"{machine_note()}; {placement}; pid {os.getpid()}", flush=True)
    result = {"throughput": throughput, "instructions": instructions}[args.what](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
