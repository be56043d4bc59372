"""Sweeps behind figures 4 and 5.

patch_size_sweep (figure 4): patches changing 1, 10, 100 handler functions are built from the installed
kvserver; one run per live method applies them in turn (apply size1, revert, apply size10, revert, ...)
every SPACING_S under load, `repeats` times; every apply's swap time is plotted against its size. With
commits (`--commit chosen`: patches #1-#5 from the repository's history, lpbench.commits) each commit's
patch needs its parent's server: one run per commit and method, `repeats` applies each.

state_size_sweep (figure 5): for each state size K, one short run per method (none, live-global,
live-local, restart) with one update in the middle; the point is the maximum latency of the requests
started within ±1.5 s of it (for "none": of the same window with nothing happening, the baseline, which
shows the server's own pauses at that state size, e.g. garbage collection). A restart that outlasts the
run is run again, long enough to see the server back. Beside them, the paper's proxy for cloning an address space: the time os.fork() takes in a
process holding K keys of the same shape (b"key:N" -> b"value:N" in a dict), after gc.freeze() as a
forking server would (REFERENCE.md §3), median of FORK_REPEATS.

Concurrency: one thread; the fork probe runs in its own spawned process.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from lpbench import plots
from lpbench.commits import CommitPatch
from lpbench.patches import BuiltPatch, sized_patch
from lpbench.runner import BenchConfig, ServerFactory, Tick, run_once, write_json
from lpbench.stats import WINDOW_HALF_S
from lpbench.updates import LiveUpdate, make_update

SPACING_S = 0.6
FORK_REPEATS = 5
STATE_METHODS = ("none", "live-global", "live-local", "restart")


def patch_size_sweep(
    cfg: BenchConfig,
    sizes: list[int],
    repeats: int,
    out: Path,
    workdir: Path,
    start_tick: Any = None,
    commits: list[CommitPatch] | None = None,
) -> dict[str, Any]:
    """commits (`--commit`): instead of the built-in sized patches, each commit's patch, on a server
    running its parent (one run per commit and method: a patch applies only to its parent's code)."""
    sets: list[tuple[str, list[BuiltPatch], ServerFactory | None]]
    if commits:
        sets = [(f"commit{k}-{c.history.commit.sha[:7]}", [c.history.patch], c.server_factory)
                for k, c in enumerate(commits, start=1)]  # fmt: skip
    else:
        sets = [("", [sized_patch(workdir, n) for n in sizes], None)]
    records = []
    for name, patches, factory in sets:
        n_updates = 2 * len(patches) * repeats
        at = tuple(1.0 + SPACING_S * i for i in range(n_updates))
        run_cfg = replace(cfg, at_s=at, duration_s=at[-1] + 1.5)
        for quiescence in ("global", "local"):
            update = LiveUpdate(quiescence, patches)
            tick: Tick | None = (
                start_tick(f"patch sizes {name}, {update.name}", run_cfg.duration_s)
                if start_tick
                else None
            )
            result = run_once(run_cfg, update, out / name / update.name, tick=tick,
                              server_factory=factory)  # fmt: skip
            records += [{**u, "commit": name} for u in result.updates if u["action"] == "apply"]
    rows = [
        {"method": r["method"], "outcome": r["outcome"], **r["patch"],
         "swap_ms": r["timings"].get("swap"), "sync_ms": r["timings"].get("sync"),
         "stage_ms": r["timings"].get("stage"), "total_ms": r["timings"].get("total"),
         **({"commit": r["commit"]} if r["commit"] else {})}
        for r in records
    ]  # fmt: skip
    config = {"sizes": sizes, "repeats": repeats} if not commits else {
        "commits": [{"sha": c.history.commit.sha, "subject": c.history.commit.subject}
                    for c in commits], "repeats": repeats}  # fmt: skip
    write_json(out / "summary.json", {"config": config, "applies": rows})
    plots.patch_size(records, out / "patch_size.png")
    return {"applies": rows, "figure": str(out / "patch_size.png")}


def _fork_probe(keys: int, repeats: int, pipe: Any) -> None:
    import gc
    import os
    import time

    state = {b"key:%d" % i: b"value:%d" % i for i in range(keys)}
    gc.freeze()  # as a forking server would: keep the collector from touching every page afterwards
    times = []
    for _ in range(repeats):
        t = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        times.append((time.perf_counter_ns() - t) / 1e6)
        os.waitpid(pid, 0)
    pipe.send((statistics.median(times), len(state)))


def fork_time_ms(keys: int, repeats: int = FORK_REPEATS) -> float:
    """Median time of os.fork() in a fresh process holding `keys` keys."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_fork_probe, args=(keys, repeats, child))
    proc.start()
    try:
        if not parent.poll(600):
            raise RuntimeError("the fork probe did not finish")
        ms, _ = parent.recv()
        return float(ms)
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join()


def state_size_sweep(
    cfg: BenchConfig,
    states: list[int],
    patches: list[BuiltPatch],
    out: Path,
    start_tick: Any = None,
    server_factory: ServerFactory | None = None,
) -> dict[str, Any]:
    """server_factory: e.g. a commit's parent (`--commit`), instead of the installed server."""
    rows = []
    for keys in states:
        run_cfg = replace(cfg, keys=keys)
        for name in STATE_METHODS:
            tick: Tick | None = (
                start_tick(f"{keys} keys, {name}", run_cfg.duration_s) if start_tick else None
            )
            result = run_once(run_cfg, make_update(name, patches), out / f"{keys}" / name,
                              tick=tick, server_factory=server_factory)  # fmt: skip
            back_s = (result.updates[0]["window_ns"][1] - result.recording.t0_ns) / 1e9
            if back_s + WINDOW_HALF_S > run_cfg.duration_s:
                # The server came back too late for the run to see the requests that waited for it
                # (a restart with much state): once more, long enough.
                longer = replace(run_cfg, duration_s=back_s + WINDOW_HALF_S + 2.0)
                result = run_once(longer, make_update(name, patches), out / f"{keys}" / name,
                                  server_factory=server_factory)  # fmt: skip
            window = result.summary["updates"][0] if result.summary["updates"] else {}
            rows.append({
                "keys": keys, "method": name, "max_ms": window.get("max_ms"),
                "max_gap_ms": window.get("max_gap_ms"), "outcome": window.get("outcome"),
                "total_ms": window.get("total_ms"),
            })  # fmt: skip
        rows.append({"keys": keys, "method": "fork", "max_ms": fork_time_ms(keys)})
    write_json(out / "summary.json", {"config": {"states": states}, "rows": rows})
    plots.state_size(rows, out / "state_size.png")
    return {"rows": rows, "figure": str(out / "state_size.png")}


def replot_patch_size(out: Path) -> Path:
    rows = json.loads((out / "summary.json").read_text())["applies"]
    records = [
        {"method": r["method"], "patch": {"functions": r["functions"], "bytes": r["bytes"]},
         "timings": {"swap": r["swap_ms"]}}
        for r in rows if r.get("swap_ms") is not None
    ]  # fmt: skip
    return plots.patch_size(records, out / "patch_size.png")


def replot_state_size(out: Path) -> Path:
    rows = json.loads((out / "summary.json").read_text())["rows"]
    return plots.state_size(rows, out / "state_size.png")
