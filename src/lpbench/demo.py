"""`livepatch demo`: fix a bug in a running kvserver while clients keep using it.

The story, on a real server with real connections:
1. start kvserver with its livepatch agent; load 1000 keys; a client connection stores demo:greeting;
2. a light open-loop load starts (8 connections, 400 requests/s, GET/SET on other keys);
3. a first live patch plants the bug (GET of a "demo:" key loses the value's last byte; see
   lpbench.patches) — this stands in for a bad release, so the demo needs nothing planted in kvserver;
4. the same client connection sees the bug; then the fix (the reverse patch, built by `livepatch diff`
   from the buggy source to the installed one) is applied live with local quiescence;
5. the same connection sees the right value again; the load's record shows whether any connection was
   lost or any request failed; the timeline of the fix and the plots are written to the output dir.
Success (exit 0) means: the bug showed, the fix was applied, the value is right again on the same
connection, and no connection was lost and no request failed.

Concurrency: one thread; the load runs in a separate process.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rich.console import Console
from rich.table import Table

from livepatch.runtime.lifecycle import Outcome, PatchResult
from lpbench import agent, plots
from lpbench.driver import DRAIN_S, LoadSpec
from lpbench.patches import demo_patches
from lpbench.pool import LoadPool
from lpbench.runner import write_json
from lpbench.servers import KvServer, free_port
from lpbench.stats import summarize_run
from lpbench.updates import event_window

KEY = b"demo:greeting"
VALUE = b"hello, world"
LOAD_CONNECTIONS, LOAD_RATE, LOAD_KEYS = 8, 400.0, 1000


def _timeline(result: PatchResult, title: str) -> Table:
    events = result.to_dict()["events"]
    table = Table(title=title, title_justify="left")
    for col in ("+ms", "event", "thread", "generation", "detail"):
        table.add_column(col, justify="right" if col == "+ms" else "left")
    t0 = events[0]["t_ns"] if events else 0
    for e in events:
        table.add_row(f"{(e['t_ns'] - t0) / 1e6:8.3f}", e["name"], str(e.get("thread") or ""),
                      "" if e.get("generation") is None else str(e["generation"]), str(e.get("detail") or "")[:60])  # fmt: skip
    timings = ", ".join(f"{k} {v:.2f} ms" for k, v in result.timings.items())
    table.caption = f"outcome: {result.outcome.value} {result.reason}; {timings}"
    return table


def _get(client: redis.Redis) -> bytes | None:
    value = client.get(KEY)
    return value if isinstance(value, bytes) else None


def _record(result: PatchResult, action: str, t_ns: int) -> dict[str, Any]:
    events = result.to_dict()["events"]
    return {"t_ns": t_ns, "action": action, "method": "live-local", "outcome": result.outcome.value,
            "timings": dict(result.timings), "events": events, "window_ns": event_window(events, t_ns)}  # fmt: skip


def run_demo(out: Path, duration_s: float = 8.0, console: Console | None = None) -> bool:
    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lpdemo-"))  # short: the agent's Unix socket lives here
    port = free_port()
    server = KvServer(port, work / "data")
    pool: LoadPool | None = None
    checks: dict[str, bool] = {}
    updates: list[dict[str, Any]] = []
    try:
        console.rule(
            "[bold]livepatch demo: fix a bug in a running kvserver, clients stay connected"
        )
        console.print(
            "building the patches from the installed kvserver source (livepatch diff) ..."
        )
        bug, fix = demo_patches(work / "patches")
        for p in (bug, fix):
            shutil.copy(p.path, out / p.path.name)
        console.print(
            f"  bug.lpatch: plants a bug in {', '.join(bug.targets)}; fix.lpatch: removes it"
        )
        server.start()
        server.populate(LOAD_KEYS)
        console.print(f"kvserver running on 127.0.0.1:{port}, agent at {server.control_socket}")
        assert server.control_socket is not None
        # One connection, never silently re-established: the server's CLIENT ID for it before and after
        # the fix proves the client kept its connection through both live patches.
        with redis.Redis(
            "127.0.0.1", port, single_connection_client=True, retry=Retry(NoBackoff(), 0)
        ) as client:
            client.set(KEY, VALUE)
            conn_id = client.client_id()
            console.print(f"client (id {conn_id}): GET {KEY.decode()} -> {_get(client)!r}")
            spec = LoadSpec("127.0.0.1", port, LOAD_CONNECTIONS, "mixed", LOAD_KEYS, rate=LOAD_RATE)
            pool = LoadPool(spec)
            pool.start()
            t0, _ = pool.go(duration_s)
            console.print(
                f"load: {LOAD_CONNECTIONS} connections, {LOAD_RATE:.0f} requests/s for {duration_s:g} s"
            )
            time.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9 + 1.0))
            t = time.monotonic_ns()
            res_bug = agent.apply(server.control_socket, bug.path, "local")
            updates.append(_record(res_bug, "plant bug", t))
            seen_bug = _get(client)
            checks["bug planted"] = res_bug.outcome is Outcome.APPLIED
            checks["bug visible"] = seen_bug == VALUE[:-1]
            console.print(
                f"[red]bug planted live[/red] ({res_bug.outcome.value}): GET {KEY.decode()} -> {seen_bug!r}"
            )
            time.sleep(max(0.0, (t0 + int(duration_s / 2 * 1e9) - time.monotonic_ns()) / 1e9))
            t = time.monotonic_ns()
            res_fix = agent.apply(server.control_socket, fix.path, "local")
            updates.append(_record(res_fix, "fix", t))
            seen_fix = _get(client)
            checks["fix applied"] = res_fix.outcome is Outcome.APPLIED
            checks["value right again"] = seen_fix == VALUE
            checks["same client connection"] = client.client_id() == conn_id
            console.print(
                f"[green]fix applied live[/green] ({res_fix.outcome.value}): GET {KEY.decode()} -> {seen_fix!r}"
            )
            rec = pool.collect(timeout_s=duration_s + DRAIN_S + 30)
        history = [r.to_dict() for r in agent.history(server.control_socket)]
    finally:
        if pool is not None:
            pool.stop()
        server.stop()
        if (work / "data" / "server.log").exists():
            shutil.copy(work / "data" / "server.log", out / "server.log")
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize_run(rec, updates)
    overall = summary["overall"]
    checks["no connection lost"] = overall["connections_lost"] == 0
    checks["no request failed"] = overall["errors"] == 0 and overall["lost"] == 0
    rec.save(out / "requests.npz")
    write_json(out / "events.json", {"t0_ns": rec.t0_ns, "updates": updates, "history": history})
    write_json(out / "summary.json", {**summary, "checks": checks})
    runs = [("live-local", rec, updates)]
    plots.throughput_over_time(runs, out / "throughput.png")
    plots.latency_scatter(runs, out / "latency.png")

    console.print(_timeline(res_fix, "timeline of the fix (agent events, ms after the request)"))
    console.print(
        f"load: {overall['ok']} requests ok, {overall['errors'] + overall['lost']} failed, "
        f"{overall['connections_lost']} connections lost; p50 {overall['p50_ms']:.2f} ms, "
        f"p99 {overall['p99_ms']:.2f} ms, max {overall['max_ms']:.2f} ms"
    )
    for name, ok in checks.items():
        console.print(f"  {'[green]ok[/green]  ' if ok else '[red]FAIL[/red]'} {name}")
    console.print(
        f"written to {out}/: throughput.png, latency.png, summary.json, events.json, requests.npz"
    )
    return all(checks.values())
