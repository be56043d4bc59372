"""A series of runs over update methods, their aggregate summary.json, and figures 1-3.

Layout of the output directory:
    DIR/<method>/run<i>/{requests.npz, events.json, summary.json, server.log}
    DIR/summary.json        config, per-run summaries, per-method medians (aggregate())
    DIR/throughput.png      figure 1 (the typical run of every method; the baseline is method "none")
    DIR/latency.png         figure 2 (the typical run of every method: median p99)
    DIR/sync_swap.png       figure 3 (every live update of every run)

Concurrency: one thread; runs are sequential (two servers at once would measure each other).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lpbench import plots
from lpbench.patches import BuiltPatch
from lpbench.recording import Recording
from lpbench.runner import BenchConfig, RunResult, ServerFactory, Tick, run_once, write_json
from lpbench.updates import UPDATE_OK, make_update


def _median(values: list[float]) -> float:
    vals = [v for v in values if v is not None and v == v]  # drop None and NaN
    return statistics.median(vals) if vals else float("nan")


def aggregate(results: list[RunResult]) -> dict[str, dict[str, Any]]:
    """Per method: medians over runs of the overall figures; over all its updates of the window
    figures (max latency, longest gap) and the agent's sync/swap times; sums of losses and errors."""
    out: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r.method for r in results):
        mine = [r for r in results if r.method == method]
        overall = [r.summary["overall"] for r in mine]
        windows = [u for r in mine for u in r.summary["updates"]]
        out[method] = {
            "runs": len(mine),
            **{k: _median([o[k] for o in overall]) for k in ("throughput_rps", "p50_ms", "p99_ms", "p99_9_ms", "max_ms")},
            "update_max_ms": _median([w["max_ms"] for w in windows]),
            "update_max_gap_ms": _median([w["max_gap_ms"] for w in windows]),
            "update_throughput_rps": _median([w["throughput_rps"] for w in windows]),
            "update_min_bin_rps": _median([w["min_bin_rps"] for w in windows]),
            "sync_ms": _median([w["sync_ms"] for w in windows]),
            "swap_ms": _median([w["swap_ms"] for w in windows]),
            "updates": len(windows),
            "updates_ok": sum(1 for w in windows if w["outcome"] in UPDATE_OK),
            "connections_lost": sum(o["connections_lost"] for o in overall),
            "errors": sum(o["errors"] + o["lost"] for o in overall),
        }  # fmt: skip
    return out


def _p99(r: RunResult) -> float:
    p99 = r.summary["overall"]["p99_ms"]
    return float("inf") if p99 is None or p99 != p99 else float(p99)  # no OK request: last


def typical_runs(results: list[RunResult]) -> list[RunResult]:
    """Per method, the run whose overall p99 is the median of that method's runs (the lower middle for
    an even count): figures 1 and 2 show a typical run, not whichever came first."""
    chosen = []
    for method in dict.fromkeys(r.method for r in results):
        mine = sorted(
            (r for r in results if r.method == method),
            key=lambda r: (_p99(r), r.index),
        )
        chosen.append(mine[(len(mine) - 1) // 2])
    return chosen


def draw_run_figures(results: list[RunResult], out: Path) -> list[Path]:
    typical = [(r.method, r.recording, r.updates) for r in typical_runs(results)]
    paths = [
        plots.throughput_over_time(typical, out / "throughput.png"),
        plots.latency_scatter(typical, out / "latency.png"),
    ]
    live = [u for r in results for u in r.updates if u["method"].startswith("live-")]
    if live:
        paths.append(plots.sync_swap(live, out / "sync_swap.png"))
    return paths


def run_series(
    cfg: BenchConfig,
    methods: list[str],
    runs: int,
    patches: list[BuiltPatch],
    out: Path,
    start_tick: Any = None,
    server_factory: ServerFactory | None = None,
) -> tuple[list[RunResult], dict[str, Any]]:
    """Run every method `runs` times (methods interleaved per round, so slow drift of a shared machine
    hits all methods alike), write DIR/summary.json and figures 1-3."""
    updates = {m: make_update(m, patches) for m in methods}
    results: list[RunResult] = []
    for i in range(runs):
        for m in methods:
            tick: Tick | None = (
                start_tick(f"{m} run {i + 1}/{runs}", cfg.duration_s) if start_tick else None
            )
            results.append(
                run_once(
                    cfg,
                    updates[m],
                    out / m / f"run{i}",
                    index=i,
                    tick=tick,
                    server_factory=server_factory,
                )
            )
    summary = {
        "config": asdict(cfg),
        "patches": [
            {
                "path": str(p.path),
                "functions": p.n_functions,
                "bytes": p.size_bytes,
                "targets": list(p.targets),
            }  # a commit's patch: its sha (--commit)
            for p in patches
        ],
        "methods": aggregate(results),
        "runs": [
            {"method": r.method, "index": r.index, "dir": f"{r.method}/run{r.index}", **r.summary}
            for r in results
        ],
    }
    write_json(out / "summary.json", summary)
    summary["figures"] = [str(p) for p in draw_run_figures(results, out)]
    return results, summary


def load_results(out: Path) -> list[RunResult]:
    """The runs of a finished `livepatch bench` from its output directory (for --replot)."""
    summary = json.loads((out / "summary.json").read_text())
    results = []
    for run in summary["runs"]:
        d = out / run["dir"]
        events = json.loads((d / "events.json").read_text())
        rec = Recording.load(d / "requests.npz")
        results.append(
            RunResult(run["method"], run["index"], rec, events["updates"], run, events["history"])
        )
    return results


def replot(out: Path) -> tuple[list[Path], dict[str, Any]]:
    """Figures 1-3 again from a finished run's directory; returns them and the per-method summary."""
    paths = draw_run_figures(load_results(out), out)
    return paths, json.loads((out / "summary.json").read_text())["methods"]
