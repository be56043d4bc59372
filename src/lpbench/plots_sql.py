"""The sqlserver figures that lpbench's kv plots (plots.py) do not draw: each function writes one PNG.

6. deadlocks     runs that deadlocked, naive against priority-based pool quiescence, per workload
(figures 1-4 for sqlserver reuse plots.py; the OLAP timeline, sync against pool size and patch time
against patch size are added here as they are written)

Small (plots.DPI) so they can live in docs/img.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from lpbench.plots import DPI  # also selects matplotlib's Agg backend


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
            ax.text(x, share + 2, f"{r['runs_deadlocked']}/{r['runs']}\n{r['patches_ok']:,} patches",
                    ha="center", va="bottom", fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(workloads)), [w.upper() for w in workloads])
    ax.set_ylim(0, 125)
    ax.set_ylabel("runs deadlocked (%)")
    ax.set_title(
        "pool quiescence: naive vs priority-based (a global patch every 100 ms)", fontsize=9
    )
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)
