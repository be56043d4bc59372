"""The five figures (matplotlib, Agg backend: no display needed). Each function writes one PNG.

1. throughput_over_time   OK requests/s in 100 ms bins; update runs over the baseline run (grey)
2. latency_scatter        every request's latency against its start; extremes (>= p99.95) in red;
                          migration windows shaded (widened to >= MIN_SPAN_S = 80 ms so a 1 ms window shows)
3. sync_swap              sync and swap time (ms) of every update, per method
4. patch_size             swap time against patch size (changed functions; .lpatch bytes)
5. state_size             maximum client latency against state size (keys), per method, and fork time

Scatter plots of half a million points are slow and large, so figure 2 draws every request at or above
the 99th percentile and a uniform sample of at most SCATTER_SAMPLE of the others (said in its title).
Figures are small (dpi 80) so they can live in docs/img.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the Agg backend is chosen above, first
import numpy as np
from matplotlib.ticker import NullFormatter

from lpbench.recording import OK, Recording
from lpbench.stats import EXTREME_PERCENTILE, percentile, throughput_bins

DPI = 80
SCATTER_SAMPLE = 6_000
MIN_SPAN_S = 0.08
COLORS = {
    "none": "0.6",
    "live-global": "tab:blue",
    "live-local": "tab:green",
    "restart": "tab:red",
    "fork": "tab:purple",
    "failover": "tab:brown",
    "switchover": "tab:cyan",
}

STATE_LABELS = {
    "fork": "fork() of a process holding the state",
    "none": "baseline (no update): max client latency",
}


def _color(method: str) -> str:
    return COLORS.get(method, "tab:orange")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _rel(rec: Recording, t_ns: int) -> float:
    return (t_ns - rec.t0_ns) / 1e9


def throughput_over_time(
    runs: list[tuple[str, Recording, list[dict[str, Any]]]], path: Path
) -> Path:
    """runs: (method, recording, update records); the baseline ("none") is drawn first, in grey."""
    fig, ax = plt.subplots(figsize=(9, 4))
    for method, rec, updates in sorted(runs, key=lambda r: r[0] != "none"):
        x, y = throughput_bins(rec)
        ax.step(x, y, where="post", color=_color(method), lw=1.0 if method == "none" else 1.2,
                label=method if method != "none" else "baseline (no update)")  # fmt: skip
        if method != "none":
            for up in updates:
                ax.axvline(_rel(rec, up["t_ns"]), color=_color(method), ls=":", lw=0.8)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("throughput (requests/s, 100 ms bins)")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput over time; dotted lines: updates")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def latency_scatter(runs: list[tuple[str, Recording, list[dict[str, Any]]]], path: Path) -> Path:
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs)), sharex=True, squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (method, rec, updates) in zip(axes[:, 0], runs, strict=True):
        ok = rec.status == OK
        x = (rec.start_ns[ok] - rec.t0_ns) / 1e9
        y = rec.latency_ns[ok] / 1e6
        if y.size:
            high = y >= percentile(y, 99)
            rest = np.flatnonzero(~high)
            if rest.size > SCATTER_SAMPLE:
                rest = rng.choice(rest, SCATTER_SAMPLE, replace=False)
            keep = np.concatenate([rest, np.flatnonzero(high)])
            ax.scatter(
                x[keep], y[keep], s=2, color=_color(method), alpha=0.4, lw=0, rasterized=True
            )
            extreme = y >= percentile(y, EXTREME_PERCENTILE)
            ax.scatter(x[extreme], y[extreme], s=10, color="red", marker="x", lw=0.8,
                       label=f">= p{EXTREME_PERCENTILE:g}")  # fmt: skip
        lost = rec.status != OK
        if lost.any():
            ax.scatter((rec.start_ns[lost] - rec.t0_ns) / 1e9, rec.latency_ns[lost] / 1e6, s=12,
                       color="black", marker="v", label="error / lost")  # fmt: skip
        for i, up in enumerate(updates if method != "none" else []):
            lo, hi = (_rel(rec, t) for t in up.get("window_ns", [up["t_ns"], up["t_ns"]]))
            ax.axvspan(lo, max(hi, lo + MIN_SPAN_S), color="orange", alpha=0.35, lw=0,
                       label="migration window" if i == 0 else None)  # fmt: skip
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{method}: latency of every request (sample below p99)", fontsize=9)
        ax.legend(loc="upper left", fontsize=7)
    axes[-1, 0].set_xlabel("request start, time since start (s)")
    return _save(fig, path)


def sync_swap(records: list[dict[str, Any]], path: Path) -> Path:
    """records: update records with `method` and `timings` (ms). Strip plot with the median marked."""
    methods = sorted({r["method"] for r in records if r.get("timings", {}).get("swap") is not None})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key in zip(axes, ("sync", "swap"), strict=True):
        for i, m in enumerate(methods):
            vals = [
                r["timings"][key]
                for r in records
                if r["method"] == m and key in r.get("timings", {})
            ]
            if not vals:
                continue
            jitter = (np.random.default_rng(i).random(len(vals)) - 0.5) * 0.3
            ax.scatter(i + jitter, vals, s=14, color=_color(m), alpha=0.7)
            ax.hlines(float(np.median(vals)), i - 0.3, i + 0.3, color="black", lw=1.5)
        ax.set_xticks(range(len(methods)), methods)
        ax.set_ylabel(f"{key} time (ms)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"{key} time per update (bar: median)", fontsize=9)
    return _save(fig, path)


def patch_size(records: list[dict[str, Any]], path: Path) -> Path:
    """records: apply records with `patch` {functions, bytes} and timings.swap."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    for ax, key, label in zip(
        axes, ("functions", "bytes"), ("changed functions", "patch file size (bytes)"), strict=True
    ):
        for m in sorted({r["method"] for r in records}):
            pts = [(r["patch"][key], r["timings"]["swap"]) for r in records
                   if r["method"] == m and "patch" in r and "swap" in r.get("timings", {})]  # fmt: skip
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, s=16, color=_color(m), alpha=0.7, label=m)
            sizes = sorted(set(xs))
            ax.plot(
                sizes,
                [float(np.median([y for x, y in pts if x == s])) for s in sizes],
                color=_color(m),
                lw=1,
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short decade
        ax.set_xlabel(label)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("swap time (ms)")
    fig.suptitle("Swap time against patch size (line: median)", fontsize=10)
    return _save(fig, path)


def state_size(rows: list[dict[str, Any]], path: Path) -> Path:
    """rows: {keys, method, max_ms}; method "fork" rows hold the fork time."""
    fig, ax = plt.subplots(figsize=(10, 4))
    for m in sorted({r["method"] for r in rows}):
        pts = sorted(
            (r["keys"], r["max_ms"]) for r in rows if r["method"] == m and r["max_ms"] is not None
        )
        if pts:
            xs, ys = zip(*pts, strict=True)
            label = STATE_LABELS.get(m, f"{m}: max client latency")
            ax.plot(xs, ys, marker="o", color=_color(m), label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("state size (keys)")
    ax.set_ylabel("ms")
    ax.set_title("Pause against state size", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the lines cross
    return _save(fig, path)
