"""One run end to end, and a series of runs over update methods.

A run: start a fresh server (its data in a short temporary directory: Unix socket paths are limited to
108 bytes), load K keys, connect the load drivers, start them on one instant, trigger the update at each
--at time (an update method whose `run_over` turns true ends the load there), collect every request, fetch the agent's history, stop the server (always, in a finally),
and write into the run's directory:
    requests.npz   the Recording (recording.py)
    events.json    the update records (updates.py), the agent's history, reconnects, t0/t_end
    summary.json   stats.summarize_run: overall and ±1.5 s around each update

Concurrency: everything here runs on the caller's thread; the drivers are separate processes.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lpbench import agent
from lpbench.driver import DRAIN_S, LoadSpec
from lpbench.pool import LoadPool
from lpbench.recording import Recording
from lpbench.servers import Server, free_port, make_server
from lpbench.stats import summarize_run
from lpbench.updates import UpdateMethod

Tick = Callable[[float], None]  # seconds elapsed since t0
ServerFactory = Callable[[int, Path], Server]  # (port, data dir) -> a server not yet started


@dataclass(frozen=True)
class BenchConfig:
    server: str = "kv"
    workload: str = "mixed"
    connections: int = 20
    duration_s: float = 30.0
    keys: int = 10_000
    rate: float | None = None  # total requests/s (open loop); None: closed loop
    at_s: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 25.0)
    processes: int = 1
    seed: int = 1
    # sql: the server's connection policy, its thread groups (pool), the workload's scale (lpbench.sql)
    policy: str = "thread-per-connection"
    pool_groups: int = 3
    scale: float = 1.0
    pool_quiescence: str = (
        "priority"  # "naive": the deadlock figure's experiment-only pool protocol
    )

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.connections < 1:
            raise ValueError("--connections must be >= 1")
        if self.duration_s <= 0:
            raise ValueError("--duration must be > 0")
        if self.keys < 1:
            raise ValueError("--keys must be >= 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("--rate must be > 0")
        if self.processes < 1:
            raise ValueError("--processes must be >= 1")
        for at in self.at_s:
            if not 0 <= at < self.duration_s:
                raise ValueError(
                    f"--at {at:g} is outside the run (0 <= at < --duration {self.duration_s:g})"
                )
        if list(self.at_s) != sorted(self.at_s):
            raise ValueError("--at times must be increasing")


@dataclass
class RunResult:
    method: str
    index: int
    recording: Recording
    updates: list[dict[str, Any]]
    summary: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    unfinished: int = 0


def jsonable(obj: Any) -> Any:
    """NaN/inf become null: summary.json stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(jsonable(obj), indent=1) + "\n")


def _sleep_until(t_ns: int, tick: Tick | None, t0: int) -> None:
    while (now := time.monotonic_ns()) < t_ns:
        if tick is not None:
            tick(max(0.0, (now - t0) / 1e9))
        time.sleep(min(0.1, (t_ns - now) / 1e9))


def run_once(
    cfg: BenchConfig,
    update: UpdateMethod,
    out_dir: Path,
    *,
    index: int = 0,
    tick: Tick | None = None,
    server_factory: ServerFactory | None = None,
) -> RunResult:
    """server_factory: instead of cfg.server's (e.g. sqlserver of an older commit, lpbench.sql.history)."""
    cfg.check()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="lpb-"))
    port = free_port()
    # A method with its own kind of server (the hot standby's pair) brings its factory.
    factory = server_factory or getattr(update, "server_factory", None)
    server = (factory or (lambda p, d: make_server(cfg.server, p, d)))(port, data)
    configure = getattr(
        server, "configure", None
    )  # servers with settings beyond port and directory
    if configure is not None:
        configure(cfg)
    if update.needs_live and not server.supports_live:
        shutil.rmtree(data, ignore_errors=True)
        raise ValueError(
            f"server {cfg.server!r} has no livepatch agent: {update.name} is not possible"
        )
    spec = LoadSpec(
        host=server.host, port=port, connections=cfg.connections, workload=cfg.workload,
        keys=cfg.keys, rate=cfg.rate, seed=cfg.seed * 100 + index, scale=cfg.scale,
    )  # fmt: skip
    pool = LoadPool(spec, cfg.processes)
    updates: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    ended_early_ns: int | None = None  # when the load was told to stop before t_end (run_over)
    try:
        server.start()
        server.populate(cfg.keys)
        pool.start()
        t0, t_end = pool.go(cfg.duration_s)
        for i, at in enumerate(cfg.at_s):
            _sleep_until(t0 + int(at * 1e9), tick, t0)
            updates.append(update.trigger(server, i))
            # The method has what it needed (figure 6: the first aborted patch): end the load now.
            if getattr(update, "run_over", False):
                t_end = ended_early_ns = pool.end_now()
                break
        _sleep_until(t_end, tick, t0)
        rec = pool.collect(timeout_s=DRAIN_S + 60)
        if server.supports_live and server.control_socket is not None:
            try:
                history = [r.to_dict() for r in agent.history(server.control_socket)]
            except agent.AgentError:
                history = []  # the figures do not need it; events.json then has an empty history
    finally:
        pool.stop()
        server.stop()
        log = data / "server.log"
        if log.exists():
            shutil.copy(log, out_dir / "server.log")
        shutil.rmtree(data, ignore_errors=True)
    summary = summarize_run(rec, updates)
    summary["overall"]["unfinished"] = pool.unfinished
    summary["method"] = update.name
    summary["config"] = asdict(cfg)
    rec.save(out_dir / "requests.npz")
    write_json(
        out_dir / "events.json",
        {
            "t0_ns": rec.t0_ns,
            "t_end_ns": rec.t_end_ns,
            "updates": updates,
            "history": history,
            "reconnects": rec.reconnects.tolist(),
            "ended_early_ns": ended_early_ns,
        },
    )
    write_json(out_dir / "summary.json", summary)
    return RunResult(update.name, index, rec, updates, summary, history, pool.unfinished)
