"""The load driver against the real redis-server: what it records, open-loop scheduling, coordinated
omission, and reconnection across a restart. Expected values are derived here from the definitions."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np

from lpbench.driver import Driver, LoadSpec
from lpbench.pool import LoadPool, split_spec
from lpbench.recording import OK, Recording
from lpbench.runner import BenchConfig, run_once
from lpbench.servers import RedisServer
from lpbench.updates import Restart
from tests.conftest import require_tool

S = 1_000_000_000


def drive(spec: LoadSpec, duration_s: float, during=None) -> Recording:
    driver = Driver(spec)
    driver.connect()
    try:
        t0 = time.monotonic_ns() + S // 10
        t_end = t0 + int(duration_s * S)
        helper = None
        if during is not None:
            helper = threading.Thread(target=during, args=(t0,))
            helper.start()
        rec = driver.run(t0, t_end)
        if helper is not None:
            helper.join(timeout=30)
        return rec
    finally:
        driver.close()


def test_closed_loop_records_every_request_one_at_a_time(redis_server: RedisServer) -> None:
    spec = LoadSpec("127.0.0.1", redis_server.port, 8, "mixed", 100)
    rec = drive(spec, 1.0)
    assert len(rec) > 100
    assert set(rec.conn.tolist()) == set(range(8))
    assert (rec.status == OK).all()
    assert rec.reconnects.shape == (0, 3)
    assert rec.start_ns.min() >= rec.t0_ns and rec.start_ns.max() < rec.t_end_ns
    # Pipelining is off: on each connection a request starts only after the previous one ended.
    for c in range(8):
        mine = np.flatnonzero(rec.conn == c)
        order = mine[np.argsort(rec.start_ns[mine])]
        assert (rec.start_ns[order][1:] >= rec.end_ns[order][:-1]).all()


def test_open_loop_sends_exactly_the_schedule(redis_server: RedisServer) -> None:
    conns, rate, duration = 10, 500.0, 1.0
    rec = drive(LoadSpec("127.0.0.1", redis_server.port, conns, "get", 100, rate=rate), duration)
    interval, phase = int(conns / rate * S), int(S / rate)
    expected = sorted(
        rec.t0_ns + i * phase + k * interval
        for i in range(conns)
        for k in range(int(duration * S) // interval + 1)
        if i * phase + k * interval < duration * S
    )
    assert len(expected) == 500
    assert sorted(rec.start_ns.tolist()) == expected
    assert (rec.status == OK).all()


def test_open_loop_counts_a_stall_against_every_waiting_request(redis_server: RedisServer) -> None:
    """No coordinated omission: while the server is frozen for 0.4 s, every request scheduled in that
    time is charged its wait, not just the one request per connection that was in flight."""
    conns, rate = 10, 500.0
    frozen = threading.Event()

    def freeze(t0: int) -> None:
        time.sleep(max(0.0, (t0 + S // 2 - time.monotonic_ns()) / S))  # at t0 + 0.5 s
        os.kill(redis_server.pid(), signal.SIGSTOP)
        try:
            frozen.set()
            time.sleep(0.4)
        finally:
            os.kill(redis_server.pid(), signal.SIGCONT)

    rec = drive(LoadSpec("127.0.0.1", redis_server.port, conns, "get", 100, rate=rate), 1.5, freeze)
    assert frozen.is_set()
    assert len(rec) == 750 and (rec.status == OK).all()
    lat_ms = rec.latency_ns / 1e6
    assert lat_ms.max() >= 390
    # ~0.3 s of schedule (500/s) waited >= 100 ms; a closed-loop count would give only `conns`.
    assert int((lat_ms >= 100).sum()) > 5 * conns


def test_restart_loses_connections_and_clients_reconnect(tmp_path: Path) -> None:
    require_tool("redis-server")
    cfg = BenchConfig(
        server="redis", workload="mixed", connections=6, duration_s=2.5, keys=200, at_s=(1.0,)
    )
    result = run_once(cfg, Restart(), tmp_path / "out")
    rec = result.recording
    up = result.updates[0]["window_ns"][1]
    assert result.summary["overall"]["connections_lost"] == 6
    assert sorted(rec.reconnects[:, 0].tolist()) == list(range(6))
    assert (rec.reconnects[:, 2] > rec.reconnects[:, 1]).all()
    for c in range(6):  # every connection is served again after the restart
        assert ((rec.conn == c) & (rec.status == OK) & (rec.start_ns > up)).any()
    assert result.summary["updates"][0]["max_gap_ms"] > 0
    for name in ("requests.npz", "events.json", "summary.json"):
        assert (tmp_path / "out" / name).exists()


def test_split_spec_divides_connections_and_rate() -> None:
    spec = LoadSpec("127.0.0.1", 1, 11, "get", 10, rate=1100.0, seed=3)
    parts = split_spec(spec, 3)
    assert [p.connections for p in parts] == [4, 4, 3]
    assert [p.conn_offset for p in parts] == [0, 4, 8]
    assert sum(p.rate or 0 for p in parts) == 1100.0
    assert len({p.seed for p in parts}) == 3
    assert len(split_spec(spec, 50)) == 11  # never more processes than connections


def test_two_processes_start_together_and_merge(redis_server: RedisServer) -> None:
    pool = LoadPool(
        LoadSpec("127.0.0.1", redis_server.port, 6, "get", 100, rate=600.0), processes=2
    )
    try:
        pool.start()
        t0, t_end = pool.go(1.0)
        rec = pool.collect(timeout_s=30)
    finally:
        pool.stop()
    assert (rec.t0_ns, rec.t_end_ns, rec.connections) == (t0, t_end, 6)
    assert sorted(set(rec.conn.tolist())) == list(range(6))
    assert len(rec) == 600  # each process sent its share of the schedule
    assert (rec.status == OK).all()
    # The two processes interleave: connection j (numbered across both) is phase-shifted by j/600 s.
    interval, phase = int(6 / 600 * S), int(S / 600)
    expected = sorted(t0 + j * phase + k * interval for j in range(6) for k in range(100))
    assert sorted(rec.start_ns.tolist()) == expected
