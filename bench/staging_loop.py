"""What an event loop's clients see while a real commit's patch is staged in its process.

What runs: the parent tree of kvserver's figures commit (lpbench.kv_history.FIGURES) is imported in this
process, and an event-loop thread serves --connections sockets as kvserver's loop does (a selector, then
recv and send per ready socket: each call releases the GIL and takes it back). A client *process* (its own
GIL) sends one small request every 1/--rate s, open loop, round-robin over the connections, and records
each request's latency from its scheduled time. Meanwhile this process's main thread (the agent's patcher
thread in a server) stages the commit's signed patch (compiled code attached, as the agent does after the
signature check) --repeats times, --gap-ms apart, and records each staging's wall-clock interval.

Columns: per staging, the max latency of the requests scheduled from 1 ms before it to its end ("during"),
against the max of the requests scheduled away from any staging ("idle": more than 20 ms from one), and
the staging's wall and CPU time (time.thread_time). Without pacing a staging of a few ms of CPU holds the
loop in a GIL convoy (each of the loop's system calls hands the GIL back to the stager, and the loop
waits a switch interval to get it again): runtime/pacing.py.

Usage: .venv/bin/python bench/staging_loop.py [--repeats 30] [--json]
(`PYTHONPATH=<another checkout>/src` in front measures that checkout's staging.)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def client(port: int, connections: int, rate: float, t0: int, t_end: int, out: Connection) -> None:
    """The load: open loop, one request in flight per connection; (scheduled start, latency) in ns."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    period = int(1e9 / rate)
    pending: list[list[int]] = [[] for _ in socks]  # scheduled starts waiting, per connection
    inflight: list[int | None] = [None] * connections
    starts: list[int] = []
    lats: list[int] = []
    k = 0
    nxt = t0
    while True:
        now = time.monotonic_ns()
        while nxt <= now and nxt < t_end:
            pending[k % connections].append(nxt)
            k += 1
            nxt += period
        for i, s in enumerate(socks):
            if inflight[i] is None and pending[i]:
                inflight[i] = pending[i].pop(0)
                s.send(b"x")
        if nxt >= t_end and all(v is None for v in inflight) and not any(pending):
            break
        timeout = max(0.0, (nxt - time.monotonic_ns()) / 1e9) if nxt < t_end else 0.05
        for key, _ in sel.select(timeout):
            i = key.data
            if socks[i].recv(64) and inflight[i] is not None:
                starts.append(inflight[i])
                lats.append(time.monotonic_ns() - inflight[i])
                inflight[i] = None
    out.send((starts, lats))
    for s in socks:
        s.close()


def updater(socket_path: str, patch: str, repeats: int, gap_s: float, out: Connection) -> None:
    """--agent: apply (global) and revert the patch over the control socket, as the `livepatch` command
    does, from a process of its own; (action, sent, answered, stage ms) per request."""
    from lpbench import agent

    windows: list[tuple[str, int, int, float]] = []
    for _ in range(repeats):
        for action in ("apply", "revert"):
            a = time.monotonic_ns()
            if action == "apply":
                r = agent.apply(Path(socket_path), Path(patch), "global")
            else:
                r = agent.revert(Path(socket_path), "global")
            windows.append((action, a, time.monotonic_ns(), float(r.timings.get("stage", 0.0))))
            if r.outcome.value not in ("applied", "reverted"):
                raise RuntimeError(f"{action}: {r.outcome.value} {r.reason}")
            time.sleep(gap_s / 2)
    out.send(windows)


class Loop:
    """An event loop thread: echo one byte per request, as kvserver's loop answers one."""

    def __init__(self, connections: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = connections
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        conns = [self.listener.accept()[0] for _ in range(self.connections)]
        for c in conns:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(c, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                data = sock.recv(64)
                if data:
                    sock.send(data)
        for c in conns:
            c.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.listener.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--gap-ms", type=float, default=100.0, help="between stagings")
    ap.add_argument("--rate", type=float, default=1000.0, help="requests/s")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=None, help="where the commit is built (kept)")
    ap.add_argument(
        "--agent",
        action="store_true",
        help="apply and revert through an Agent in this process, from another process (the whole "
        "apply path: the control socket, the signature check, staging, the swap)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.agent and args.workdir is not None:
        ap.error("--agent builds a patch signed with this run's key: no --workdir")

    from lpbench import kv_history

    assert kv_history.FIGURES is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="staging-loop-"))
    built = kv_history.build_one(ROOT, 0, kv_history.FIGURES, workdir)
    sys.path.insert(0, str(built.code / "src"))
    from livepatch.patch import compiled, lpatch
    from livepatch.runtime.staging import stage

    pf = lpatch.read(built.patch.path)
    spec = compiled.attach(pf.spec, pf.manifest.get("compiled"))
    for m in spec.modules:
        __import__(m.module)
    stage(spec)  # once, unmeasured: the first staging warms caches (fingerprints, imports)

    loop = Loop(args.connections)
    lead_s = 0.5  # the client connects and the loop accepts before the load starts
    per = 2 if args.agent else 1  # --agent: an apply and a revert per repeat
    duration_s = 0.3 + per * args.repeats * args.gap_ms / 1e3 + 1.0
    t0 = time.monotonic_ns() + int(lead_s * 1e9)
    t_end = t0 + int(duration_s * 1e9)
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(
        target=client, args=(loop.port, args.connections, args.rate, t0, t_end, child)
    )
    proc.start()
    time.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9) + 0.3)
    windows: list[tuple[str, int, int, float]] = []  # (action, start, end, stage ms)
    if args.agent:
        from livepatch.agent.agent import Agent
        from lpbench.keys import harness_key

        sock = str(workdir / "control.sock")
        with Agent(sock, trusted_keys=[harness_key()[1]], state_dir=None):
            up_parent, up_child = ctx.Pipe()
            up = ctx.Process(
                target=updater,
                args=(sock, str(built.patch.path), args.repeats, per * args.gap_ms / 1e3, up_child),
            )
            up.start()
            windows = up_parent.recv()
            up.join()
    else:
        for _ in range(args.repeats):
            a, c = time.monotonic_ns(), time.thread_time()
            stage(spec)
            windows.append(("stage", a, time.monotonic_ns(), (time.thread_time() - c) * 1e3))
            time.sleep(args.gap_ms / 1e3)
    starts, lats = parent.recv()
    proc.join()
    loop.stop()

    import numpy as np

    st = np.array(starts)
    lat = np.array(lats) / 1e6
    near = np.zeros(len(st), dtype=bool)
    during: dict[str, list[float]] = {}
    for action, a, b, _ in windows:
        near |= (st >= a - 20_000_000) & (st <= b + 20_000_000)
        w = (st >= a - 1_000_000) & (st <= b)
        during.setdefault(action, []).append(float(lat[w].max()) if w.any() else float("nan"))
    idle = float(lat[~near].max())
    out: dict[str, Any] = {
        "livepatch": str(Path(sys.modules["livepatch"].__file__ or "").parent),
        "requests": len(lat),
        "idle_max_ms": idle,
        "idle_p99_ms": float(np.percentile(lat[~near], 99)),
        "wall_median_ms": {
            k: statistics.median((b - a) / 1e6 for act, a, b, _ in windows if act == k)
            for k in during
        },
        # the staging's CPU (in-process) or the agent's stage time (--agent)
        "stage_median_ms": {
            k: statistics.median(c for act, _, _, c in windows if act == k) for k in during
        },
        "during_max_ms": during,
        "during_median_of_max_ms": {k: statistics.median(v) for k, v in during.items()},
        "over_idle_max": {k: sum(d > idle for d in v) for k, v in during.items()},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(
        f"livepatch from {out['livepatch']}: {len(lat)} requests; idle max {idle:.2f} ms "
        f"(p99 {out['idle_p99_ms']:.2f})"
    )
    for k, v in during.items():
        print(
            f"  during each {k}: median of maxima {out['during_median_of_max_ms'][k]:.2f} ms, max "
            f"{max(v):.2f} ms, {out['over_idle_max'][k]}/{len(v)} over the idle max; wall median "
            f"{out['wall_median_ms'][k]:.2f} ms, stage median {out['stage_median_ms'][k]:.2f} ms"
        )


if __name__ == "__main__":
    main()
