"""The sqlserver figures that lpbench's kv plots (plots.py) do not draw: each function writes one PNG.

grid            panels drawn by plots.py (figures 1 and 4: one per workload and policy) tiled into one
2. olap_timeline every connection's OLAP queries on a timeline, the migration windows shaded
3. sync_times    sync time per update with a patch every 100 ms; and against the pool's thread groups
5. patch_time    total and swap time against patch size (patches #1-#5 from the repository's history)
6. deadlocks     runs that deadlocked, naive against priority-based pool quiescence, per workload

Small (plots.DPI) so they can live in docs/img.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from lpbench.plots import DPI, _color  # the import also selects matplotlib's Agg backend
from lpbench.recording import Recording


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def deadlocks(summary: dict[str, Any], path: Path) -> Path:
    """Figure 6: per workload, the share of runs that deadlocked under each protocol (bars), with the
    counts written on them."""
    rows = summary["rows"]
    workloads = list(dict.fromkeys(r["workload"] for r in rows))
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    colors = {"naive": "tab:red", "priority": "tab:blue"}
    fig, ax = plt.subplots(figsize=(6, 3.2))
    width = 0.8 / max(1, len(protocols))
    for j, protocol in enumerate(protocols):
        for i, workload in enumerate(workloads):
            r = next(
                (r for r in rows if r["protocol"] == protocol and r["workload"] == workload), None
            )
            if r is None or not r["runs"]:
                continue
            share = 100.0 * r["runs_deadlocked"] / r["runs"]
            x = i + (j - (len(protocols) - 1) / 2) * width
            ax.bar(x, share, width, color=colors.get(protocol, "tab:orange"),
                   label=protocol if i == 0 else None)  # fmt: skip
            hung = r.get("runs_hung", 0)
            ax.text(x, share + 2, f"{r['runs_deadlocked']}/{r['runs']}\n{r['patches_ok']:,} patches"
                    + (f"\n{hung} server hung" if hung else ""), ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(workloads)), [w.upper() for w in workloads])
    ax.set_ylim(0, 125)
    ax.set_ylabel("runs deadlocked (%)")
    ax.set_title(
        "pool quiescence: naive vs priority-based (a global patch every 100 ms)", fontsize=9
    )
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def grid(
    images: list[Path], titles: list[str], path: Path, columns: int, dpi: float = DPI * 1.5
) -> Path:
    """Panels drawn by other functions (PNG files), tiled into one figure with a title each."""
    rows = (len(images) + columns - 1) // columns
    first = plt.imread(images[0])
    h, w = first.shape[0], first.shape[1]
    scale = 4.5 / max(w, 1) * 100  # about 4.5 inches per panel
    fig, axes = plt.subplots(rows, columns, figsize=(columns * w * scale / 100, rows * h * scale / 100 + 0.3 * rows),
                             squeeze=False)  # fmt: skip
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles, strict=False):
        ax.imshow(plt.imread(image))
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    # Tiled scatter plots compress badly: 64 colours keep the figure small enough for docs/img.
    from PIL import Image  # matplotlib's own dependency

    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=64)
    small.save(path, optimize=True)
    return path


def olap_timeline(
    runs: list[tuple[str, Recording, list[dict[str, Any]]]], policy: str, path: Path
) -> Path:
    """Figure 2: per method, every connection's queries as bars from start to end (alternating shades so
    back-to-back queries stay apart), the migration windows (first to last agent event) shaded."""
    fig, axes = plt.subplots(
        len(runs), 1, figsize=(9, 1.2 + 0.45 * 4 * len(runs)), sharex=True, squeeze=False
    )
    for ax, (method, rec, updates) in zip(axes[:, 0], runs, strict=True):
        color = _color(method)
        for conn in range(rec.connections):
            mine = np.flatnonzero(rec.conn == conn)
            for k, i in enumerate(mine):
                s = (rec.start_ns[i] - rec.t0_ns) / 1e9
                ax.barh(conn, rec.latency_ns[i] / 1e9, left=s, height=0.7, color=color,
                        alpha=0.9 if k % 2 else 0.5, lw=0)  # fmt: skip
        for j, up in enumerate(updates):
            lo, hi = ((t - rec.t0_ns) / 1e9 for t in up.get("window_ns", [up["t_ns"], up["t_ns"]]))
            sync = up.get("timings", {}).get("sync")
            ax.axvspan(lo, max(hi, lo + 0.03), color="orange", alpha=0.35, lw=0,
                       label="migration window" if j == 0 else None)  # fmt: skip
            ax.text(lo, rec.connections - 0.55, f"{up['action']} {up['outcome']}"
                    + (f", sync {sync:.0f} ms" if sync is not None else ""), fontsize=7)  # fmt: skip
        ax.set_yticks(
            range(rec.connections), [f"conn {c}" for c in range(rec.connections)], fontsize=7
        )
        ax.set_ylim(-0.5, rec.connections + 0.1)  # room for the labels above the top row
        ax.set_title(f"{method}, {policy}: OLAP queries (bars) and migration windows", fontsize=9)
        ax.legend(loc="lower right", fontsize=7)
    axes[-1, 0].set_xlabel("time since start (s)")
    return _save(fig, path)


def sync_times(
    by_config: dict[str, list[dict[str, Any]]],
    by_groups: dict[int, list[dict[str, Any]]],
    path: Path,
) -> Path:
    """Figure 3: (left) the sync time of every update, per workload/policy and method (box: quartiles,
    whiskers p5-p95, log scale); (right) median and p90 against the pool's thread groups."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [2.2, 1]})
    methods = ("live-global", "live-local")
    for j, m in enumerate(methods):
        data, pos = [], []
        for i, updates in enumerate(by_config.values()):
            vals = [u["timings"]["sync"] for u in updates
                    if u["method"] == m and u.get("timings", {}).get("sync") is not None]  # fmt: skip
            if vals:
                data.append(vals)
                pos.append(i + (j - 0.5) * 0.36)
        if data:
            b = left.boxplot(data, positions=pos, widths=0.3, whis=(5, 95), showfliers=False,
                             patch_artist=True)  # fmt: skip
            for box in b["boxes"]:
                box.set_facecolor(_color(m))
                box.set_alpha(0.6)
            left.plot([], [], color=_color(m), lw=6, alpha=0.6, label=m)
    left.set_xticks(range(len(by_config)), list(by_config), fontsize=7)
    left.set_yscale("log")
    left.set_ylabel("sync time (ms)")
    left.set_title(
        "a patch every 100 ms: sync time per update (box: p25-p75, whiskers p5-p95)", fontsize=9
    )
    left.legend(fontsize=8)
    groups = sorted(by_groups)
    for m in methods:
        med, p90 = [], []
        for g in groups:
            sync = np.array([u["timings"]["sync"] for u in by_groups[g]
                             if u["method"] == m and u.get("timings", {}).get("sync") is not None])  # fmt: skip
            med.append(float(np.median(sync)) if sync.size else np.nan)
            p90.append(float(np.percentile(sync, 90)) if sync.size else np.nan)
        right.plot(groups, med, marker="o", color=_color(m), label=f"{m} median")
        right.plot(groups, p90, marker="^", ls="--", color=_color(m), label=f"{m} p90")
    right.set_xscale("log", base=2)
    right.set_xticks(groups, [str(g) for g in groups])
    right.set_yscale("log")
    right.set_xlabel("pool thread groups (YCSB, 16 connections)")
    right.set_ylabel("sync time (ms)")
    right.set_title("sync time against pool size", fontsize=9)
    right.legend(fontsize=7)
    return _save(fig, path)


def patch_time(records: list[dict[str, Any]], path: Path) -> Path:
    """Figure 5: total patch time (request to finished) and the swap inside it against patch size
    (changed functions; .lpatch bytes), every apply of patches #1-#5, per method (line: median)."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5), sharex="col")
    for col, (key, label) in enumerate(
        (("functions", "changed functions"), ("bytes", "patch file size (bytes)"))
    ):
        for row, timing in enumerate(("total", "swap")):
            ax = axes[row, col]
            for m in ("live-global", "live-local"):
                pts = [(r["patch"][key], r["timings"][timing]) for r in records
                       if r["method"] == m and r["outcome"] == "applied" and timing in r.get("timings", {})]  # fmt: skip
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                ax.scatter(xs, ys, s=14, color=_color(m), alpha=0.6, label=m)
                sizes = sorted(set(xs))
                ax.plot(sizes, [float(np.median([y for x, y in pts if x == s])) for s in sizes],
                        color=_color(m), lw=1)  # fmt: skip
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on a short decade
            ax.set_yscale("log")
            ax.set_ylabel(f"{timing} time (ms)")
            if row == 1:
                ax.set_xlabel(label)
            ax.legend(fontsize=7)
    fig.suptitle(
        "Patch time against patch size (real sqlserver commits, each on its parent's server)",
        fontsize=10,
    )
    return _save(fig, path)
