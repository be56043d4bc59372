"""The recording and summary arithmetic on synthetic data; every expected value is recomputed here with
plain Python (sorted lists, loops), independently of numpy and of lpbench.stats."""

from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from lpbench.recording import CONNECTION_LOST, ERROR_REPLY, OK, Recorder, Recording
from lpbench.stats import (
    max_gap_ns,
    percentile,
    summarize_latencies,
    summarize_run,
    throughput_bins,
    window_mask,
)

MS = 1_000_000
S = 1_000_000_000


def nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = math.ceil(p / 100 * len(ordered))
    return ordered[max(k, 1) - 1]


def synthetic(seed: int = 7, n: int = 5000, t0: int = 10 * S, duration_s: int = 10) -> Recording:
    """Requests spread over the run with random latencies, some errors and some lost."""
    rng = random.Random(seed)
    rec = Recorder()
    for i in range(n):
        start = t0 + rng.randrange(duration_s * S)
        status = OK
        r = rng.random()
        if r < 0.01:
            status = ERROR_REPLY
        elif r < 0.015:
            status = CONNECTION_LOST
        rec.request(start, start + rng.randrange(50_000, 20 * MS), i % 16, status)
    rec.reconnect(3, t0 + 2 * S, t0 + 2 * S + 40 * MS)
    rec.reconnect(5, t0 + 2 * S, t0 + 2 * S + 55 * MS)
    return rec.build(t0, t0 + duration_s * S, 16)


def rows(rec: Recording) -> list[tuple[int, int, int, int]]:
    return list(
        zip(
            rec.start_ns.tolist(),
            rec.latency_ns.tolist(),
            rec.conn.tolist(),
            rec.status.tolist(),
            strict=True,
        )
    )


def test_percentile_small_known_values() -> None:
    vals = np.arange(1, 11, dtype=np.float64)  # 1..10
    assert percentile(vals, 50) == 5.0
    assert percentile(vals, 10) == 1.0
    assert percentile(vals, 11) == 2.0
    assert percentile(vals, 99) == 10.0
    assert percentile(vals, 100) == 10.0
    assert math.isnan(percentile(np.array([]), 50))
    with pytest.raises(ValueError):
        percentile(vals, 0)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 999, 1000, 1001, 12345])
def test_percentile_matches_nearest_rank(n: int) -> None:
    rng = random.Random(n)
    values = [rng.expovariate(1.0) for _ in range(n)]
    arr = np.array(values)
    for p in (0.1, 1, 25, 50, 90, 99, 99.9, 99.95, 100):
        assert percentile(arr, p) == nearest_rank(values, p)


def test_recorder_round_trip_and_merge(tmp_path) -> None:
    a, b = synthetic(1, 300), synthetic(2, 200)
    path = tmp_path / "a.npz"
    a.save(path)
    loaded = Recording.load(path)
    assert rows(loaded) == rows(a)
    assert loaded.reconnects.tolist() == a.reconnects.tolist()
    assert (loaded.t0_ns, loaded.t_end_ns, loaded.connections) == (a.t0_ns, a.t_end_ns, 16)
    merged = Recording.merge([a, b])
    assert sorted(rows(merged)) == sorted(rows(a) + rows(b))
    assert merged.connections == 32
    assert merged.reconnects.shape == (4, 3)


def test_summary_overall_recomputed_by_hand() -> None:
    rec = synthetic()
    data = rows(rec)
    ok_lat_ms = [lat / 1e6 for _, lat, _, st in data if st == OK]
    got = summarize_latencies(rec)
    assert got["requests"] == len(data)
    assert got["ok"] == len(ok_lat_ms)
    assert got["errors"] == sum(1 for r in data if r[3] == ERROR_REPLY)
    assert got["lost"] == sum(1 for r in data if r[3] == CONNECTION_LOST)
    assert got["errors"] > 0 and got["lost"] > 0  # the synthetic data exercises both
    assert got["throughput_rps"] == pytest.approx(len(ok_lat_ms) / 10.0)
    assert got["p50_ms"] == nearest_rank(ok_lat_ms, 50)
    assert got["p99_ms"] == nearest_rank(ok_lat_ms, 99)
    assert got["p99_9_ms"] == nearest_rank(ok_lat_ms, 99.9)
    assert got["max_ms"] == max(ok_lat_ms)
    ends = sorted(s + lat for s, lat, _, st in data if st == OK)
    assert got["max_gap_ms"] == max(b - a for a, b in itertools.pairwise(ends)) / 1e6


def test_throughput_bins_count_completions() -> None:
    rec = synthetic()
    x, y = throughput_bins(rec, 0.1)
    assert len(x) == 100 and x[1] == pytest.approx(0.1)
    expected = [0] * 100
    for s, lat, _, st in rows(rec):
        k = (s + lat - rec.t0_ns) // (100 * MS)
        if st == OK and 0 <= k < 100:
            expected[k] += 1
    assert y.tolist() == [c / 0.1 for c in expected]


def test_gap_shows_as_empty_bins_and_max_gap() -> None:
    t0 = 0
    rec = Recorder()
    # one reply every 10 ms except a hole from 1.0 s to 1.5 s (a restart)
    for i in range(200):
        start = i * 10 * MS
        if S <= start < S + S // 2:
            continue
        rec.request(start, start + MS, 0, OK)
    r = rec.build(t0, 2 * S, 1)
    _, y = throughput_bins(r, 0.1)
    assert y[10:15].tolist() == [0.0] * 5  # the hole
    assert y[3] == 100.0  # 10 replies in 100 ms
    assert max_gap_ns(r.end_ns) == 510 * MS  # last reply 0.991 s, next 1.501 s


def test_window_clipped_to_run_and_summarized_per_update() -> None:
    rec = synthetic()
    center = rec.t0_ns + S // 2  # window would start before t0: clipped
    mask, span = window_mask(rec, center, 1.5)
    assert span == pytest.approx(2.0)
    inside = [r for r in rows(rec) if rec.t0_ns <= r[0] <= center + 3 * S // 2]
    assert int(mask.sum()) == len(inside)
    updates = [
        {
            "t_ns": center,
            "action": "apply",
            "outcome": "applied",
            "timings": {"sync": 1.25, "swap": 0.5},
        },
        {"t_ns": rec.t0_ns + 5 * S, "action": "revert", "outcome": "reverted", "timings": {}},
    ]
    summary = summarize_run(rec, updates)
    first, second = summary["updates"]
    ok_in = [lat / 1e6 for _, lat, _, st in inside if st == OK]
    assert first["ok"] == len(ok_in)
    assert first["throughput_rps"] == pytest.approx(len(ok_in) / 2.0)
    assert first["max_ms"] == max(ok_in)
    assert first["p99_ms"] == nearest_rank(ok_in, 99)
    assert (first["sync_ms"], first["swap_ms"]) == (1.25, 0.5)
    assert first["at_s"] == pytest.approx(0.5)
    mid = [
        lat / 1e6
        for s, lat, _, st in rows(rec)
        if st == OK and abs(s - (rec.t0_ns + 5 * S)) <= 3 * S // 2
    ]
    assert second["ok"] == len(mid)
    assert second["throughput_rps"] == pytest.approx(len(mid) / 3.0)
    assert math.isnan(second["sync_ms"])
    # worst 100 ms bin wholly inside each window, by completion time (bins 0..19 and 35..64)
    counts = [0] * 100
    for s, lat, _, st in rows(rec):
        k = (s + lat - rec.t0_ns) // (100 * MS)
        if st == OK and 0 <= k < 100:
            counts[k] += 1
    assert first["min_bin_rps"] == min(counts[0:20]) / 0.1
    assert second["min_bin_rps"] == min(counts[35:65]) / 0.1
    assert summary["overall"]["connections_lost"] == 2
