"""What hot standby costs the primary (issue 15): throughput side by side, and instructions per request.

throughput    a plain kvserver and primaries with --protection commit, full, none (and MODE/GAP[/EPOCH]
              configs), in the same run, rounds interleaved (the order reversed every other round),
              medians. Each run: populate 100,000 keys, then a timed closed-loop load from
              bench/kvmix.c (compiled with gcc at start): CLIENTS connections, each with one request
              outstanding, each request a GET or a SET drawn from the load's mix, uniform keys; after a
              warm-up, --seconds of wall time are counted. Throughput = every request completed in the
              window / the window. Loads: read_mostly (YCSB-B's 95/5 read/update, 40 clients),
              read_mostly_90 (90/10, 40 clients), write_heavy (SET only, 50 clients). The issue's
              goal: commit <= 5% below no replication in throughput, read-mostly. Also the CPU time
              per request of the primary and of the standby (/proc/PID/stat), the SET share achieved,
              the mean latency (Little's law: clients x window / requests) and epochs per request.
paired        for a busy machine: the base (--base, default a plain server) and one config both up
              at once, --windows pairs of --seconds-long kvmix windows in turn (which side goes
              first alternates), the median of the per-pair ratios: what other processes do on a
              scale of seconds hits both sides of a pair, where throughput's 5-second rounds of one
              config after another moved by 3x at load 3-7 (kept: it is the issue's own measure).
instructions  the same loads against a primary run under valgrind --tool=callgrind: machine
              instructions per request of the whole primary process (every thread: the loop, the
              sender, the acknowledgement reader), counted over the window (callgrind_control -z / -d),
              per request the server completed (INFO commandstats). Deterministic enough to compare
              two builds on a busy machine.

    .venv/bin/python bench/replication_overhead.py throughput [--rounds 5] [--seconds 5]
    .venv/bin/python bench/replication_overhead.py instructions [--seconds 20]
    .venv/bin/python bench/replication_overhead.py paired [--windows 20] [--seconds 1] [--base None]
    (both: [--configs None,commit,full,none] [--loads read_mostly,read_mostly_90,write_heavy]
    [--warmup 1]; instructions: [--keep-dumps DIR], then
    `callgrind_annotate --inclusive=yes DIR/read_mostly-commit.callgrind`)
    A config MODE/G runs the primary with --group-commit-ms G (commit/0: an epoch per round trip),
    MODE/G/E also with --epoch-ms E: under valgrind the primary runs ~100x slower, so the real-time
    epoch rates of --epoch-ms 50 --group-commit-ms 2 are those of commit/200/5000 there (heartbeats,
    every 50 ms whatever the epoch length, are not scaled).

Why not the metric before session 9. Until then read_mostly summed the requests per second of two
redis-benchmark runs started together: GET -n N -c 45 and SET -n N/9 -c 5. The runs had different
lengths (the SET run ended after ~0.1 s unreplicated, the GET run ran on alone), so the sum was not
requests / interval, and it was dominated by the SET run's own rate, i.e. by write latency: under
commit each SET waits for its epoch's acknowledgement, its run fell from 44-46k to 6-7k rps, and the
sum fell 45% (the session-8 figures) while GETs, the real cost, fell ~30%; each run also lasted ~0.4 s.
GET clients beside SET clients for one interval would not do either: closed-loop pools per operation
let the mix follow the latencies (measured: 18% SETs unreplicated, 4.5% under commit, for 38 GET + 2
SET clients). Here every client draws each request from the mix, as YCSB's clients do, so the mix is
the stated one (the achieved SET share is reported) and a slow SET delays that client's next reads.

Placement (2+ CPUs, like bench/kv_vs_redis.py): the primary (or the plain server) on CPU 1; the
standby and the load generator on CPU 0 (RemusDB runs the standby on another machine: here it
competes with the load generator, not with the primary). --no-pin lets the scheduler place everything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import redis

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
        self.mix_stats: list[dict[str, float]] = []  # SET share, mean latency ms, per run
        self.kvmix: Path | None = None  # the compiled load generator
        self.epochs: list[float] = []  # epochs captured per request of each metered run
        # Under valgrind the primary runs ~50x slower: patient timeouts, or the pair would spend the
        # run declaring each other gone and resynchronising.
        self.patient = bool(self.wrapper)
        self.clients = 0  # --clients: the load's connections (0: the load's own, MIXES)
        self.utilization: list[float] = []  # paired: the server's CPU seconds per window second
        # paired: the server's user and system CPU µs per request of each window (the kernel's part,
        # the loopback sends and receives, is most of a request's cost: which one commit moves)
        self.split: list[tuple[float, float]] = []
        # per pair: (base user, base system, config user, config system) µs per request
        self.pair_splits: list[tuple[float, float, float, float]] = []

    def bench(self, port: int, test: str, n: int, clients: int) -> float:
        cmd, rows = redis_benchmark_rows(port, test, n, clients=clients, pinned=self.pinned)
        self.commands.add(" ".join(cmd))
        return float({r["test"]: r for r in rows}[test.upper()]["rps"])

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


# The loads: (read percentage of every client's requests, closed-loop clients).
MIXES: dict[str, tuple[int, int]] = {
    "read_mostly": (95, 40),  # YCSB-B's 95/5 read/update
    "read_mostly_90": (90, 40),  # 90/10
    "write_heavy": (0, 50),
}
KEYSPACE = 100_000
KVMIX = Path(__file__).with_name("kvmix.c")


def build_kvmix(tmp: Path) -> Path:
    """Compile bench/kvmix.c (the mixed closed-loop load generator) into tmp."""
    exe = tmp / "kvmix"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe), str(KVMIX)], check=True)
    return exe


def _calls(port: int) -> int:
    """GETs and SETs the server has completed so far (its INFO commandstats)."""
    with redis.Redis(host="127.0.0.1", port=port, socket_timeout=120) as r:
        stats = r.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{k}", {}).get("calls", 0)) for k in ("get", "set"))


def timed_mix(
    setup: Setup, mix: str, seconds: float, warmup_s: float, before_load: Callable[[list[int]], Any]
) -> Load:
    """The load `mix` for `seconds` of wall time (bench/kvmix.c): all its clients start together,
    each keeps one request outstanding and draws every request's operation from the mix, and all
    stop together; throughput = the GETs and SETs completed in the window / the window. The CPU
    (or instruction) meter counts over the same window, per request the server completed in it."""
    read_pct, clients = MIXES[mix]
    clients = setup.clients or clients

    def load(port: int, pids: list[int]) -> tuple[float, float, float]:
        setup.bench(port, "set", KEYSPACE, 50)  # populate (and warm up)
        assert setup.kvmix is not None
        cmd = [str(setup.kvmix), "127.0.0.1", str(port), str(clients), str(read_pct),
               str(KEYSPACE), str(warmup_s), str(seconds)]  # fmt: skip
        setup.commands.add(" ".join(["kvmix", "127.0.0.1", "PORT", *cmd[3:]]))
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, {LOAD_CPU})) if setup.pinned else None,
        )
        try:
            time.sleep(warmup_s)  # the window opens (kvmix times it itself; the meter from here)
            start = before_load(pids)
            c0 = _calls(port)
            out, _ = proc.communicate(timeout=seconds + 600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"kvmix failed ({proc.returncode}): {out}")
        first, second = start(_calls(port) - c0)
        done = {k: float(v) for k, v in (f.split("=") for f in out.split())}
        window, gets, sets = done["window_s"], done["gets"], done["sets"]
        # Little's law for closed-loop clients: mean latency = clients / throughput.
        setup.mix_stats.append(
            {
                "set_share": sets / (gets + sets),
                "mean_ms": 1000 * clients * window / (gets + sets),
                "errors": done["errors"],
            }
        )
        return (gets + sets) / window, first, second

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
    with tempfile.TemporaryDirectory(prefix="repl-bench-") as tmp:
        setup = Setup(args.pinned, Path(tmp))
        setup.clients = args.clients
        setup.kvmix = build_kvmix(Path(tmp))
        meter = cpu_meter(setup)
        names = args.loads.split(",")
        loads = {k: timed_mix(setup, k, args.seconds, args.warmup, meter) for k in names}
        configs = args.configs.split(",")
        tables: dict[str, dict[str, list[tuple[float, float, float]]]]
        tables = {k: {c: [] for c in configs} for k in loads}
        extras: dict[str, dict[str, list[dict[str, float]]]]
        extras = {k: {c: [] for c in configs} for k in loads}
        for rnd in range(args.rounds):
            order = configs if rnd % 2 == 0 else list(reversed(configs))
            for c in order:
                for name, load in loads.items():
                    tables[name][c].append(setup.run(None if c == "None" else c, load))
                    extras[name][c].append({**setup.mix_stats[-1], "epochs": setup.epochs[-1]})
                    row = {k: round(v, 4) for k, v in extras[name][c][-1].items()}
                    print(name, c, [round(x, 1) for x in tables[name][c][-1]], row,
                          os.getloadavg()[0], flush=True)  # fmt: skip
    out: dict[str, Any] = {"commands": sorted(setup.commands), "seconds": args.seconds}
    for name, table in tables.items():
        base = median([r[0] for r in table["None"]])
        base_cpu = median([r[1] for r in table["None"]])
        out[name] = {}
        for k, v in table.items():
            rps = median([r[0] for r in v])
            primary_us = median([r[1] for r in v])
            ex = extras[name][k]
            out[name]["no replication" if k == "None" else k] = {
                "rps_median": round(rps),
                "vs_no_replication": round(rps / base - 1, 3),
                "rounds": [round(r[0]) for r in v],
                "primary_cpu_us_per_request": round(primary_us, 1),
                "primary_cpu_vs_no_replication": round(primary_us / base_cpu - 1, 3),
                "standby_cpu_us_per_request": round(median([r[2] for r in v]), 1),
                "epochs_per_1000_requests": round(1000 * median([e["epochs"] for e in ex]), 2),
                "set_share": round(median([e["set_share"] for e in ex]), 4),
                "mean_latency_ms": round(median([e["mean_ms"] for e in ex]), 3),
                "errors": sum(e["errors"] for e in ex),
            }
    return out


def _window(setup: Setup, port: int, pid: int, mix: str, seconds: float) -> tuple[float, float]:
    """One kvmix window against a running server: (requests/s, server CPU µs per request); the
    server's CPU seconds per second of the window go to setup.utilization (1.0: its CPU is the
    limit, the primary is saturated)."""
    read_pct, clients = MIXES[mix]
    clients = setup.clients or clients
    assert setup.kvmix is not None
    cmd = [str(setup.kvmix), "127.0.0.1", str(port), str(clients), str(read_pct),
           str(KEYSPACE), "0.2", str(seconds)]  # fmt: skip
    setup.commands.add(" ".join(["kvmix", "127.0.0.1", "PORT", *cmd[3:]]))
    cpu0 = cpu_seconds(pid)
    user0, sys0 = _user_system(pid)
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {LOAD_CPU})) if setup.pinned else None,
    )
    cpu = cpu_seconds(pid) - cpu0  # includes the 0.2 s warm-up: the same share in A and B
    user1, sys1 = _user_system(pid)
    counts = {k: float(v) for k, v in (f.split("=") for f in done.stdout.split())}
    setup.utilization.append(cpu / (counts["window_s"] + 0.2))
    n = counts["gets"] + counts["sets"]
    if not n:  # seen once at load 8: a window in which the server completed nothing
        print(f"no request completed in a {seconds} s window on port {port}", flush=True)
        setup.split.append((float("nan"), float("nan")))
        return 0.0, float("nan")
    per = 1e6 / (n * (1 + 0.2 / counts["window_s"]))
    setup.split.append(((user1 - user0) * per, (sys1 - sys0) * per))
    return n / counts["window_s"], cpu * 1e6 / (n * (1 + 0.2 / counts["window_s"]))


def _user_system(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used so far (/proc/PID/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _alternate(
    setup: Setup,
    mix: str,
    config: str,
    args: argparse.Namespace,
    rows: list[tuple[float, float, float, float]],
    port: int,
    pids: list[int],
    bport: int,
    bpids: list[int],
) -> tuple[float, float, float]:
    """args.windows pairs of windows, base and config in turn (which goes first alternates); rows
    gets (base rps, config rps, base CPU µs/request, config CPU µs/request) per pair."""
    for p, pid in ((bport, bpids[0]), (port, pids[0])):
        setup.bench(p, "set", KEYSPACE, 50)  # populate
        # A window not counted: under commit the populate's epochs may still be on their way (at
        # load 11 the first window ran at 38 requests/s while the standby caught up).
        _window(setup, p, pid, mix, args.seconds)
    setup.utilization.clear()  # the same list as the base side's
    setup.pair_splits.clear()
    for w in range(args.windows):
        if w % 2 == 0:
            base_side = _window(setup, bport, bpids[0], mix, args.seconds)
            base_split = setup.split[-1]
        side = _window(setup, port, pids[0], mix, args.seconds)
        side_split = setup.split[-1]
        if w % 2:
            base_side = _window(setup, bport, bpids[0], mix, args.seconds)
            base_split = setup.split[-1]
        rows.append((base_side[0], side[0], base_side[1], side[1]))
        setup.pair_splits.append((*base_split, *side_split))
        busy = [round(u, 2) for u in setup.utilization[-2:]]
        split = [round(x, 2) for x in setup.pair_splits[-1]]  # user, system: base, config
        print(
            mix, config, w, *[round(x, 1) for x in rows[-1]], busy, split, os.getloadavg()[0],
            flush=True,
        )  # fmt: skip
    return 0.0, 0.0, 0.0


def _split_medians(
    splits: list[tuple[float, float, float, float]], base: int, side: int
) -> dict[str, float]:
    """Medians of one CPU column over the pairs: the base's, the config's, and their ratio - 1."""
    ok = [s for s in splits if s[base] > 0 and s[side] == s[side]]  # not NaN
    if not ok:
        return {}
    return {
        "base": round(median([s[base] for s in ok]), 2),
        "config": round(median([s[side] for s in ok]), 2),
        "vs_base": round(median([s[side] / s[base] for s in ok]) - 1, 3),
    }


def paired(args: argparse.Namespace) -> dict[str, Any]:
    """Both servers up at once (the base and one config), windows alternating A, B, A, B ...: a
    ratio per adjacent pair, so what the machine does on a scale of seconds hits both sides."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="repl-paired-") as tmp:
        setup = Setup(args.pinned, Path(tmp))
        setup.kvmix = build_kvmix(Path(tmp))
        # --base-src: the base side runs another tree's code (main vs a branch, A/B in turns).
        wrapper = ["env", f"PYTHONPATH={args.base_src}"] if args.base_src else None
        base_setup = Setup(args.pinned, Path(tmp) / "base", wrapper)
        base_setup.patient = False  # the wrapper is not valgrind: the same timeouts as the other
        (Path(tmp) / "base").mkdir()
        base_setup.kvmix = setup.kvmix
        base_setup.commands = setup.commands
        setup.clients = base_setup.clients = args.clients
        base_setup.utilization = setup.utilization  # both sides' windows, in order
        for mix in args.loads.split(","):
            out[mix] = {}
            for config in args.configs.split(","):
                rows: list[tuple[float, float, float, float]] = []
                setup.utilization.clear()
                base = None if args.base == "None" else args.base
                alternate = partial(_alternate, setup, mix, config, args, rows)
                base_setup.run(
                    base,
                    lambda bport, bpids, c=config, f=alternate: setup.run(  # type: ignore[misc]
                        None if c == "None" else c,
                        lambda port, pids: f(port, pids, bport, bpids),
                    ),
                )
                stalled = [r for r in rows if not (r[0] and r[1])]
                rows = [r for r in rows if r[0] and r[1]]  # a ratio needs both sides' requests
                out[mix][config] = {
                    "stalled_pairs": len(stalled),
                    "vs_base_median": round(median([b / a for a, b, _, _ in rows]) - 1, 3),
                    "base_rps_median": round(median([r[0] for r in rows])),
                    "rps_median": round(median([r[1] for r in rows])),
                    "primary_cpu_vs_base_median": round(
                        median([bc / ac for _, _, ac, bc in rows]) - 1, 3
                    ),
                    # the same in user and system CPU apart (µs per request, medians of the pairs)
                    "primary_user_us": _split_medians(setup.pair_splits, 0, 2),
                    "primary_system_us": _split_medians(setup.pair_splits, 1, 3),
                    "pairs": len(rows),
                    # CPU seconds per window second of both servers' windows (each ~1.0 when the
                    # server's CPU is the limit, which is when throughput can show its cost).
                    "server_cpu_utilization_median": round(median(setup.utilization), 2),
                    "load_average_end": round(os.getloadavg()[0], 1),
                }
    out["commands"] = sorted(setup.commands)
    out["base"] = args.base
    out["base_src"] = args.base_src
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
        setup.clients = args.clients
        setup.kvmix = build_kvmix(Path(tmp))
        label = {"name": ""}
        keep = Path(args.keep_dumps) if args.keep_dumps else None
        meter = callgrind_meter(setup, Path(tmp), keep, label)
        names = args.loads.split(",")
        loads = {k: timed_mix(setup, k, args.seconds, args.warmup, meter) for k in names}
        for name, load in loads.items():
            out[name] = {}
            for c in args.configs.split(","):
                label["name"] = f"{name}-{c.replace('/', '-')}"
                rps, per_request, _ = setup.run(None if c == "None" else c, load)
                out[name]["no replication" if c == "None" else c] = {
                    "instructions_per_request": round(per_request),
                    "rps_under_valgrind": round(rps),
                    "epochs_per_1000_requests": round(1000 * setup.epochs[-1], 2),
                    "set_share": round(setup.mix_stats[-1]["set_share"], 4),
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
    t.add_argument("--rounds", type=int, default=5)
    t.add_argument("--seconds", type=float, default=5.0, help="the measured window of each run")
    i = sub.add_parser("instructions")
    i.add_argument("--seconds", type=float, default=20.0, help="the counted window of each run")
    i.add_argument("--keep-dumps", metavar="DIR", help="keep each window's callgrind dump in DIR")
    pr = sub.add_parser("paired")
    pr.add_argument("--windows", type=int, default=20, help="pairs of windows per config")
    pr.add_argument("--seconds", type=float, default=1.0, help="the length of each window")
    pr.add_argument("--base", default="None", help="the config each is compared to (None: plain)")
    pr.add_argument("--base-src", metavar="DIR", help="run the base side with PYTHONPATH=DIR")
    for p in (t, i, pr):
        p.add_argument("--configs", default="None,commit,full,none", help="which (None: plain)")
        p.add_argument("--loads", default="read_mostly,read_mostly_90,write_heavy",
                       help=f"which loads to run, of {','.join(MIXES)}")  # fmt: skip
        p.add_argument("--warmup", type=float, default=1.0, help="seconds before the window")
        p.add_argument("--clients", type=int, default=0,
                       help="connections of the load (0: the load's own, 40 or 50); more saturate "
                       "the primary")  # fmt: skip
        p.add_argument("--no-pin", action="store_true", help="let the scheduler place everything")
    args = parser.parse_args()
    args.pinned = can_pin() and not args.no_pin
    placement = "primary on CPU 1, standby and load on CPU 0" if args.pinned else "not pinned"
    print(f"{machine_note()}; {placement}; pid {os.getpid()}", flush=True)
    run = {"throughput": throughput, "instructions": instructions, "paired": paired}
    result = run[args.what](args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
