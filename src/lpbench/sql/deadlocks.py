"""Figure 6: naive against priority-based quiescence of sqlserver's thread pool, counted in deadlocks.

Theory of operation
- One *run*: a fresh sqlserver with `--policy pool` (and `--pool-quiescence naive` for the naive
  protocol, an experiment-only switch of the server: every pool thread at one priority), the workload
  loaded, closed-loop load on `connections` connections, and a global patch applied or reverted every
  `interval_s` (the built-in or a given patch, alternately applied and reverted; each trigger waits for
  the previous one) with the runtime's quiescence deadline `deadline_s`. It is lpbench's ordinary run
  (runner.run_once), so every transaction and every patch event is recorded.
- A patch that hit its deadline is *aborted* (the runtime gives up cleanly and everyone resumes). It is a
  *deadlock* when no transaction completed in the second half of its wait (the last deadline/2 before
  the abort): the server had stopped making progress, which is how the paper's naive MariaDB hung (its
  listener parked while a worker waited for a lock whose COMMIT sat in the listener's poll set), except
  that our runtime's deadline ends it instead of a watchdog. The first half is left out because threads
  park one by one: the transactions already running finish early in the wait even when the server is
  stuck by then. An aborted patch with progress to the end is counted apart (slow, not a deadlock).
- A run *deadlocks* if any of its patches did. The first patch that did not take effect (aborted, or no
  reply) ends the run there: no more patches, and the load stops at once (`run_over`, runner.run_once),
  so a deadlocking run costs its time to the first deadline, not the whole duration. Its transactions
  up to that moment are all recorded, which is all the judgement of that patch reads.

Concurrency: one harness thread per run at a time (`run_all(jobs=N)`: N lanes, each run its own server,
drivers and directory; the verdicts and DIR/deadlocks.json under one lock); the load drivers are
processes (lpbench.pool).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from livepatch.runtime.lifecycle import Outcome
from lpbench.keys import harness_key
from lpbench.patches import BuiltPatch
from lpbench.recording import Recording
from lpbench.runner import BenchConfig, run_once, write_json
from lpbench.servers import Server
from lpbench.updates import LiveUpdate, NoUpdate

PROTOCOLS = ("naive", "priority")
HANG_GRACE_S = (
    20.0  # the agent answers within the deadline plus this, or the server process is hung
)


@dataclass(frozen=True)
class DeadlockConfig:
    workloads: tuple[str, ...] = ("ycsb", "tpcc")
    protocols: tuple[str, ...] = PROTOCOLS
    runs: int = 100  # per workload and protocol
    duration_s: float = 6.0  # patches at 0.5, 0.6 ... 5.5 s: 51 per run
    first_s: float = 0.5  # first patch (the load is running by then)
    interval_s: float = 0.1
    deadline_s: float = 3.0
    connections: int = 10
    scale: float = 0.05
    pool_groups: int = 3

    def at_s(self) -> tuple[float, ...]:
        n = int((self.duration_s - 0.5 - self.first_s) / self.interval_s + 1e-9) + 1
        return tuple(round(self.first_s + i * self.interval_s, 6) for i in range(max(1, n)))


class StopAtAbort:
    """Global patches, alternately applied and reverted; after the first one that did not take effect
    (aborted at the deadline, failed), only 'none' records: the run is judged already. When the agent
    does not answer within the deadline + HANG_GRACE_S the server process is hung: it gets SIGABRT,
    which (with PYTHONFAULTHANDLER=1 in its environment, as bench/sql_deadlocks.py sets) writes every
    thread's stack to its log, kept with the run."""

    name = "live-global"
    needs_live = True

    def __init__(self, patches: list[BuiltPatch], deadline_s: float) -> None:
        self.live = LiveUpdate("global", patches, deadline_s, wait_s=deadline_s + HANG_GRACE_S)
        self.run_over = False  # read by runner.run_once: end the load now

    def trigger(self, server: Server, index: int) -> dict[str, Any]:
        if self.run_over:
            return NoUpdate().trigger(server, index)
        record = self.live.trigger(server, index)
        if record["outcome"] not in (Outcome.APPLIED, Outcome.REVERTED):
            self.run_over = True
            if record["outcome"] == Outcome.FAILED and _is_hang(record.get("reason")):
                record["hung"] = True
                with contextlib.suppress(OSError, AssertionError):
                    os.kill(
                        server.pid(), signal.SIGABRT
                    )  # the stack dump; the harness stops it after
        return record


def _is_hang(reason: str | None) -> bool:
    return bool(reason) and "no reply" in str(reason)


def completions_between(rec: Recording, start_ns: int, end_ns: int) -> int:
    """Transactions (any status but lost) that completed in [start_ns, end_ns]."""
    done = rec.start_ns + rec.latency_ns
    kept = rec.status != 2
    return int(np.count_nonzero(kept & (done >= start_ns) & (done <= end_ns)))


def judge(rec: Recording, updates: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's patches: how many took effect, aborted, and aborted without progress (deadlocks)."""
    patched = [u for u in updates if u["action"] in ("apply", "revert")]
    ok = [u for u in patched if u["outcome"] in (Outcome.APPLIED, Outcome.REVERTED)]
    aborted, deadlocks, other, hangs = [], [], [], []
    for u in patched:
        if u["outcome"] in (Outcome.APPLIED, Outcome.REVERTED):
            continue
        if u["outcome"] != Outcome.ABORTED:
            if u.get("hung") or (u["outcome"] == Outcome.FAILED and _is_hang(u.get("reason"))):
                hangs.append(f"{u['action']}: {u.get('reason')}")
            else:
                other.append(f"{u['action']} {u['outcome']}: {u.get('reason')}")
            continue
        end = max(u["window_ns"][1], u["t_ns"])
        late = completions_between(rec, end - (end - u["t_ns"]) // 2, end)
        aborted.append({"at_ns": u["t_ns"], "waited_ms": (end - u["t_ns"]) / 1e6,
                        "completed": completions_between(rec, u["t_ns"], end),
                        "completed_second_half": late, "reason": u.get("reason")})  # fmt: skip
        if late == 0:
            deadlocks.append(aborted[-1])
    sync = [u["timings"].get("sync") for u in ok if u["timings"].get("sync") is not None]
    return {
        "patches": len(patched), "patches_ok": len(ok), "aborted": len(aborted),
        "deadlocks": len(deadlocks), "deadlocked": bool(deadlocks), "other_failures": other,
        "hangs": hangs,
        "aborts": aborted, "sync_ms": sync, "transactions": int(np.count_nonzero(rec.status == 0)),
    }  # fmt: skip


def one_run(
    cfg: DeadlockConfig,
    workload: str,
    protocol: str,
    index: int,
    patches: list[BuiltPatch],
    out: Path,
) -> dict[str, Any]:
    bench = BenchConfig(
        server="sql", workload=workload, connections=cfg.connections, duration_s=cfg.duration_s,
        at_s=cfg.at_s(), seed=1 + index, policy="pool", pool_groups=cfg.pool_groups,
        scale=cfg.scale, pool_quiescence=protocol,
    )  # fmt: skip
    run_dir = out / protocol / workload / f"run{index}"
    started = time.monotonic()
    result = run_once(bench, StopAtAbort(patches, cfg.deadline_s), run_dir)
    verdict = judge(result.recording, result.updates)
    # The machine's 1-minute load average at the run's end: the figure is a busy machine's.
    verdict.update(workload=workload, protocol=protocol, index=index,
                   seconds=round(time.monotonic() - started, 1), load=round(os.getloadavg()[0], 1))  # fmt: skip
    write_json(run_dir / "verdict.json", verdict)
    # The raw data of a run is large and figure 6 needs only the verdicts: keep the server log and
    # events of runs with an aborted patch (to see where it hung), drop the rest.
    if not verdict["aborted"] and not verdict["other_failures"] and not verdict["hangs"]:
        for name in ("requests.npz", "events.json", "server.log"):
            (run_dir / name).unlink(missing_ok=True)
    return verdict


def run_all(
    cfg: DeadlockConfig,
    patches: list[BuiltPatch],
    out: Path,
    log: Any = print,
    resume: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Every run, rounds interleaving protocols and workloads (slow drift hits all alike); writes
    DIR/deadlocks.json after each run, so an interrupted sweep keeps what it measured. `resume`: keep
    the verdicts already in DIR/deadlocks.json and run only the missing (protocol, workload, index).
    `jobs`: runs at a time (each its own server and drivers; the runs in one round then overlap). A run
    that fails to run at all (a server that does not start) is logged and left missing: `resume` redoes
    it."""
    out.mkdir(parents=True, exist_ok=True)
    verdicts: list[dict[str, Any]] = []
    spent = 0.0
    if resume and (out / "deadlocks.json").exists():
        previous = load(out)
        verdicts, spent = previous["runs"], float(previous.get("seconds", 0.0))
        for v in verdicts:  # verdicts from before hangs were told apart
            if "hangs" not in v:
                v["hangs"] = [f for f in v["other_failures"] if _is_hang(f)]
                v["other_failures"] = [f for f in v["other_failures"] if not _is_hang(f)]
    done = {(v["protocol"], v["workload"], v["index"]) for v in verdicts}
    todo = [(protocol, workload, i) for i in range(cfg.runs) for protocol in cfg.protocols
            for workload in cfg.workloads if (protocol, workload, i) not in done]  # fmt: skip
    started = time.monotonic()
    lock = threading.Lock()
    harness_key()  # made once, before any lane (functools.cache is not a lock)

    def one(protocol: str, workload: str, i: int) -> None:
        try:
            v = one_run(cfg, workload, protocol, i, patches, out)
        except (RuntimeError, OSError, ValueError) as exc:
            log(
                f"{protocol:8} {workload:5} run {i + 1}/{cfg.runs}: did not run ({exc}); --resume redoes it"
            )
            return
        with lock:
            verdicts.append(v)
            summary = summarize(cfg, verdicts, patches)
            summary["seconds"] = round(spent + time.monotonic() - started, 1)
            write_json(out / "deadlocks.json", summary)
            log(f"{protocol:8} {workload:5} run {i + 1}/{cfg.runs}: {v['patches_ok']}/{v['patches']} "
                f"patches, {v['aborted']} aborted, {'DEADLOCK' if v['deadlocked'] else 'ok'}, "
                f"{v['seconds']} s, load {v['load']}")  # fmt: skip

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as lanes:
        for f in [lanes.submit(one, *t) for t in todo]:
            f.result()
    return summarize(cfg, verdicts, patches)


def summarize(
    cfg: DeadlockConfig, verdicts: list[dict[str, Any]], patches: list[BuiltPatch]
) -> dict[str, Any]:
    rows = []
    seen = {v["protocol"] for v in verdicts} | set(
        cfg.protocols
    )  # a resumed sweep may run one only
    for protocol in [p for p in PROTOCOLS if p in seen]:
        for workload in cfg.workloads:
            mine = [v for v in verdicts if v["protocol"] == protocol and v["workload"] == workload]
            sync = sorted(s for v in mine for s in v["sync_ms"])
            rows.append({
                "protocol": protocol, "workload": workload, "runs": len(mine),
                "runs_deadlocked": sum(v["deadlocked"] for v in mine),
                "runs_aborted": sum(v["aborted"] > 0 for v in mine),
                "patches": sum(v["patches"] for v in mine),
                "patches_ok": sum(v["patches_ok"] for v in mine),
                "sync_p50_ms": sync[len(sync) // 2] if sync else None,
                "sync_p99_ms": sync[min(len(sync) - 1, int(0.99 * len(sync)))] if sync else None,
                "runs_hung": sum(bool(v.get("hangs")) for v in mine),
                "other_failures": sum(len(v["other_failures"]) for v in mine),
                "seconds_per_run": _median([v["seconds"] for v in mine if "seconds" in v]),
                "load": [min(loads), max(loads)] if (loads := [v["load"] for v in mine if "load" in v]) else None,
            })  # fmt: skip
    return {
        "config": asdict(cfg),
        "patches": [
            {"path": str(p.path), "functions": p.n_functions, "bytes": p.size_bytes}
            for p in patches
        ],
        "rows": rows,
        "runs": verdicts,
    }


def _median(xs: list[float]) -> float | None:
    return sorted(xs)[len(xs) // 2] if xs else None


def load(out: Path) -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((out / "deadlocks.json").read_text())
    return summary
