"""Several driver processes that connect first, then start on one shared instant, and merge their records.

Handshake with each worker over a pipe: the worker connects all its connections and says "ready" (or
sends the error); the parent picks t0 a little in the future (monotonic_ns is machine-wide), sends
(t0, t_end) to all (and, if the run ends early, `end_now` sends a new t_end: the driver watches the pipe
while it runs); each worker drives load, saves its recording to a file (large arrays do not travel
through the pipe) and says "done". Workers are started with the "spawn" method, so they inherit no
threads or locks from the parent.

Concurrency: a LoadPool is driven by one thread of the parent. `stop()` always terminates any worker
still alive (call it in a finally).
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from lpbench.driver import LoadSpec, make_driver
from lpbench.recording import Recording

# A bound only: at load 30 a spawned driver took over 30 s to import and connect.
READY_TIMEOUT_S = 120.0
START_LEAD_S = 0.3  # time for every worker to receive t0 before it arrives


def _worker(spec: LoadSpec, pipe: Connection, out_path: str) -> None:
    try:
        driver = make_driver(spec)
        driver.connect()
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    pipe.send(("ready", None))
    t0, t_end = pipe.recv()
    try:
        rec = driver.run(t0, t_end, control=pipe)
        driver.close()
        rec.save(Path(out_path))
    except Exception as exc:  # tell the parent now rather than let it wait for its timeout
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    pipe.send(("done", driver.unfinished))


def split_spec(spec: LoadSpec, processes: int) -> list[LoadSpec]:
    """Divide connections (and the rate) among processes; connection numbers stay unique."""
    processes = max(1, min(processes, spec.connections))
    specs, offset = [], 0
    for i in range(processes):
        n = spec.connections // processes + (1 if i < spec.connections % processes else 0)
        rate = None if spec.rate is None else spec.rate * n / spec.connections
        specs.append(
            replace(
                spec,
                connections=n,
                rate=rate,
                seed=spec.seed * 1000 + i,
                conn_offset=offset,
                total_connections=spec.connections,
            )
        )
        offset += n
    return specs


class LoadPool:
    def __init__(self, spec: LoadSpec, processes: int = 1) -> None:
        self.specs = split_spec(spec, processes)
        self._ctx = mp.get_context("spawn")
        self._procs: list[Any] = []
        self._pipes: list[Connection] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="lpbench-")
        self.unfinished = 0

    def start(self) -> None:
        """Start the workers and wait until every connection is open. Raises RuntimeError otherwise."""
        for i, spec in enumerate(self.specs):
            parent, child = self._ctx.Pipe()
            out = str(Path(self._tmp.name) / f"worker{i}.npz")
            proc = self._ctx.Process(target=_worker, args=(spec, child, out), daemon=True)
            proc.start()
            self._procs.append(proc)
            self._pipes.append(parent)
        for pipe in self._pipes:
            if not pipe.poll(READY_TIMEOUT_S):
                raise RuntimeError("a load driver did not get ready in time")
            kind, detail = pipe.recv()
            if kind != "ready":
                raise RuntimeError(f"load driver could not connect: {detail}")

    def go(self, duration_s: float) -> tuple[int, int]:
        """Tell every worker to start at one instant; returns (t0, t_end) in monotonic ns."""
        t0 = time.monotonic_ns() + int(START_LEAD_S * 1e9)
        t_end = t0 + int(duration_s * 1e9)
        for pipe in self._pipes:
            pipe.send((t0, t_end))
        return t0, t_end

    def end_now(self) -> int:
        """Bring the run's end forward to now (the drivers send nothing more, then drain as usual);
        returns the new t_end in monotonic ns."""
        t_end = time.monotonic_ns()
        for pipe in self._pipes:
            pipe.send(t_end)
        return t_end

    def collect(self, timeout_s: float) -> Recording:
        parts = []
        for i, pipe in enumerate(self._pipes):
            if not pipe.poll(timeout_s):
                raise RuntimeError("a load driver did not finish in time")
            kind, detail = pipe.recv()
            if kind != "done":
                raise RuntimeError(f"load driver failed: {detail}")
            self.unfinished += int(detail)
            parts.append(Recording.load(Path(self._tmp.name) / f"worker{i}.npz"))
        return Recording.merge(parts)

    def stop(self) -> None:
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        for pipe in self._pipes:
            pipe.close()
        self._tmp.cleanup()
