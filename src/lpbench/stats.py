"""The arithmetic behind summary.json and the plots, on a Recording. Pure functions, no I/O.

Definitions (the tests recompute each of them independently):
- percentile p of n values: nearest rank, the value at 1-based rank ceil(p/100 * n) in ascending order
  (so p100 is the maximum and every reported percentile is a latency that really occurred).
- latency statistics use requests with status OK only; errors and lost requests are counted separately.
- throughput: OK requests per second of wall time. Over the whole run: OK count / (t_end - t0).
  In 100 ms bins: OK requests by *completion* time (a stalled server shows as empty bins, then a burst).
- window of an update at time c: requests whose start lies in [c - half, c + half] intersected with
  [t0, t_end]; its throughput divides by that clipped length.
- max gap: the longest time between two consecutive OK completions (the pause clients saw).
- min bin of a window: the lowest 100 ms throughput bin among the bins lying wholly inside the window.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lpbench.recording import CONNECTION_LOST, ERROR_REPLY, OK, Recording

WINDOW_HALF_S = 1.5
BIN_S = 0.1
EXTREME_PERCENTILE = 99.95


def percentile(values: np.ndarray, p: float) -> float:
    """Nearest-rank percentile; nan for no values."""
    n = int(values.shape[0])
    if n == 0:
        return math.nan
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    rank = max(1, math.ceil(p / 100.0 * n))
    # partition is O(n) where a full sort would be O(n log n); the kth value is the same.
    return float(np.partition(values, rank - 1)[rank - 1])


def max_gap_ns(end_ns: np.ndarray) -> int:
    if end_ns.shape[0] < 2:
        return 0
    return int(np.max(np.diff(np.sort(end_ns))))


def summarize_latencies(
    rec: Recording, mask: np.ndarray | None = None, span_s: float | None = None
) -> dict[str, Any]:
    """Counts, throughput and latency percentiles (ms) of the selected requests."""
    if mask is None:
        mask = np.ones(len(rec), dtype=bool)
    span = rec.duration_s if span_s is None else span_s
    status = rec.status[mask]
    ok = status == OK
    lat_ms = rec.latency_ns[mask][ok] / 1e6
    ends = rec.end_ns[mask][ok]
    n_ok = int(ok.sum())
    return {
        "requests": int(status.shape[0]),
        "ok": n_ok,
        "errors": int((status == ERROR_REPLY).sum()),
        "lost": int((status == CONNECTION_LOST).sum()),
        "throughput_rps": n_ok / span if span > 0 else math.nan,
        "p50_ms": percentile(lat_ms, 50),
        "p99_ms": percentile(lat_ms, 99),
        "p99_9_ms": percentile(lat_ms, 99.9),
        "max_ms": float(lat_ms.max()) if n_ok else math.nan,
        "max_gap_ms": max_gap_ns(ends) / 1e6,
    }


def window_mask(
    rec: Recording, center_ns: int, half_s: float = WINDOW_HALF_S
) -> tuple[np.ndarray, float]:
    """Requests started within ±half of center (clipped to the run) and the clipped length in seconds."""
    half = int(half_s * 1e9)
    lo = max(rec.t0_ns, center_ns - half)
    hi = min(rec.t_end_ns, center_ns + half)
    mask = (rec.start_ns >= lo) & (rec.start_ns <= hi)
    return mask, max(0.0, (hi - lo) / 1e9)


def throughput_bins(rec: Recording, bin_s: float = BIN_S) -> tuple[np.ndarray, np.ndarray]:
    """(bin start in seconds since t0, OK completions per second in that bin) over [t0, t_end)."""
    width = round(bin_s * 1e9)
    n_bins = max(1, math.ceil((rec.t_end_ns - rec.t0_ns) / width))
    ends = rec.end_ns[rec.status == OK] - rec.t0_ns
    idx = ends // width
    idx = idx[(idx >= 0) & (idx < n_bins)]
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    return np.arange(n_bins) * bin_s, counts / bin_s


def connections_lost(rec: Recording) -> int:
    """Connection breaks seen by the driver (each is one reconnect attempt sequence)."""
    return int(rec.reconnects.shape[0])


def summarize_run(rec: Recording, updates: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's body for one run: overall figures plus one entry per update.

    `updates` are the records written by the update methods: each has `t_ns` (when it was triggered),
    and optionally `timings` (ms: sync, swap, ...) and `outcome`.
    """
    overall = summarize_latencies(rec)
    overall["connections_lost"] = connections_lost(rec)
    overall["duration_s"] = rec.duration_s
    overall["connections"] = rec.connections
    per_update = []
    x, rate = throughput_bins(rec)
    for up in updates:
        mask, span = window_mask(rec, int(up["t_ns"]))
        entry = summarize_latencies(rec, mask, span)
        # The worst 100 ms bin among those lying wholly inside the window: a dip, if there is one.
        rel = (int(up["t_ns"]) - rec.t0_ns) / 1e9
        inside = (x >= rel - WINDOW_HALF_S - 1e-9) & (x + BIN_S <= rel + WINDOW_HALF_S + 1e-9)
        entry["min_bin_rps"] = float(rate[inside].min()) if inside.any() else math.nan
        entry["at_s"] = (int(up["t_ns"]) - rec.t0_ns) / 1e9
        entry["action"] = up.get("action", "")
        entry["outcome"] = up.get("outcome", "")
        timings = up.get("timings", {})
        entry["sync_ms"] = timings.get("sync", math.nan)
        entry["swap_ms"] = timings.get("swap", math.nan)
        entry["total_ms"] = timings.get("total", math.nan)
        per_update.append(entry)
    return {"overall": overall, "updates": per_update}
