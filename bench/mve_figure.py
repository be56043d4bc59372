"""The timeline of one validated update (bench/mve_update.py --figure): the probing client's throughput per
100 ms and its longest request per 100 ms, with the phases marked (update requested, follower forked,
follower ready = transform done and catch-up starts, promoted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

BUCKET_S = 0.1


def draw(run: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples: list[tuple[float, float]] = run["_samples"]
    phases: dict[str, float] = run["_phases"]
    t0 = samples[0][0]
    n = int((samples[-1][0] - t0) / BUCKET_S) + 1
    count = [0] * n
    worst = [0.0] * n
    for ts, lat in samples:
        b = int((ts - t0) / BUCKET_S)
        count[b] += 1
        worst[b] = max(worst[b], lat * 1e3)
    xs = [i * BUCKET_S for i in range(n)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 4.2), sharex=True, dpi=90)
    top.plot(xs, [c / BUCKET_S for c in count], lw=0.8)
    top.set_ylabel("requests/s\n(1 client)")
    bottom.plot(xs, worst, lw=0.8, color="tab:red")
    bottom.set_ylabel("longest request\nper 100 ms (ms)")
    bottom.set_xlabel("s")
    labels = {
        "requested": "update",
        "forked": "forked",
        "ready": "ready (transformed)",
        "done": "promoted",
    }
    for key, label in labels.items():
        if key in phases:
            x = phases[key] - t0
            for ax in (top, bottom):
                ax.axvline(x, color="grey", ls="--", lw=0.7)
            top.annotate(label, (x, 1.0), xycoords=("data", "axes fraction"), fontsize=7,
                         rotation=90, va="top", ha="right")  # fmt: skip
    top.set_title(
        f"validated data-changing update, {run['keys']:,} keys: fork {run.get('fork_ms')} ms, "
        f"max request {run['max_latency_ms_during_update']} ms",
        fontsize=8,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
