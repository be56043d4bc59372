"""Failover on one machine with real processes: kill -9 the primary at random moments under a writer
and a reader; after every failover every acknowledged write is there and no value went backwards; the
killed server, restarted, rejoins as the standby (issue 15)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
import redis

from tests.replication.nodes import Node, wait_serving
from tests.replication.workload import Reader, Writer, check

pytestmark = pytest.mark.timeout(300)


def test_takeover_serves_the_acknowledged_data_on_the_same_port(
    pair: tuple[int, Node, Node],
) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b)
    a.wait_protected()
    with redis.Redis(port=port) as c:
        c.set("s", "v")
        c.rpush("l", "x", "y")
        c.hset("h", mapping={"f": "1", "g": "2"})
        c.sadd("set", "m")
        c.zadd("z", {"a": 1.5})
        c.set("ttl", "t", px=600_000)
        c.incr("n")
        c.select(3)
        c.set("in3", "yes")
        c.select(0)
        c.set("gone", "x")
        c.delete("gone")
        before = c.info("server")["run_id"]
    a.kill()
    wait_serving(port)
    status = b.status()
    # It took over, as primary of the next term, and looks for a standby where a left (a's port).
    assert status["role"] == "primary" and status["term"] == 2
    with redis.Redis(port=port) as c:
        assert c.info("server")["run_id"] != before  # another process serves the address
        assert c.get("s") == b"v"
        assert c.lrange("l", 0, -1) == [b"x", b"y"]
        assert c.hgetall("h") == {b"f": b"1", b"g": b"2"}
        assert c.smembers("set") == {b"m"}
        assert c.zscore("z", "a") == 1.5
        assert 590_000 < c.pttl("ttl") <= 600_000  # the absolute expiry came along
        assert c.get("n") == b"1"
        assert c.exists("gone") == 0
        c.select(3)
        assert c.get("in3") == b"yes"


def test_flushall_and_swapdb_are_replicated(pair: tuple[int, Node, Node]) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b)
    a.wait_protected()
    with redis.Redis(port=port) as c:
        c.set("old", "1")
        c.execute_command("SELECT", 1)
        c.set("one", "1")
        c.flushall()
        c.set("after", "2")  # db 1 (the connection's)
        c.execute_command("SWAPDB", 0, 1)  # "after" moves to db 0
        c.execute_command("SELECT", 0)
        c.set("zero", "0")
    a.kill()
    wait_serving(port)
    with redis.Redis(port=port, db=0) as c0, redis.Redis(port=port, db=1) as c1:
        assert sorted(c0.keys()) == [b"after", b"zero"]
        assert c1.keys() == []


def test_full_sync_streams_existing_data_while_the_primary_serves(
    pair: tuple[int, Node, Node],
) -> None:
    port, a, b = pair
    # The primary starts with data and no standby; the standby joins later and gets a full sync.
    a.start_primary(port, b)
    with redis.Redis(port=port) as c:
        c.execute_command("DEBUG", "POPULATE", 50_000)
        writer = Writer(port)
        writer.start()
        try:
            b.start_standby(port, a)
            status = a.wait_protected()
            assert status["full_syncs"] >= 1
            time.sleep(0.2)
        finally:
            writer.stop()
    acked, _ = writer.snapshot()
    assert acked, "the primary answered no write during the sync"
    # Writes acknowledged while the primary was degraded (a held reply waited over
    # --standby-timeout-ms: --on-standby-loss degrade) may be lost by design: say so if it was.
    degraded = a.status()["degradations"] - status["degradations"]
    a.kill()
    wait_serving(port)
    with redis.Redis(port=port) as c:
        assert c.dbsize() >= 50_000 + len(acked)
        assert c.get("key:49999") == b"value:49999"
    assert check(port, writer) == [], f"degradations since it was protected: {degraded}"


def test_every_acknowledged_write_survives_kill_9_of_the_primary(
    pair: tuple[int, Node, Node],
) -> None:
    """>= 10 kills at random moments; the killed one rejoins as the standby each time."""
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b)
    a.wait_protected()
    writer = Writer(port)
    reader = Reader(port, "w:ctr")
    writer.start()
    reader.start()
    rng = random.Random()
    primary, standby = a, b
    gaps = []
    try:
        for kill in range(10):
            time.sleep(rng.uniform(0.05, 0.5))  # the random moment of the kill
            done_before = len(writer.snapshot()[0])
            primary.kill()
            t = time.monotonic()
            gaps.append(wait_serving(port, timeout_s=15) - t)
            max_read = reader.max_read
            problems = check(port, writer, max_read)
            assert problems == [], f"kill {kill + 1}: {problems[:5]}"
            primary, standby = standby, primary
            standby.start_standby(port, primary)
            primary.wait_protected()
            assert len(writer.snapshot()[0]) > done_before or kill == 0
    finally:
        writer.stop()
        reader.stop()
    assert check(port, writer, reader.max_read) == []
    assert writer.acked and reader.reads
    assert max(gaps) < 5.0, gaps


def test_the_documented_redis_py_retry_recipe_rides_through_a_failover(
    pair: tuple[int, Node, Node],
) -> None:
    """docs/standby.md's client snippet, run verbatim (only the port differs)."""
    port, a, b = pair
    doc = (Path(__file__).resolve().parents[2] / "docs" / "standby.md").read_text()
    snippet = doc.split("```python\n", 1)[1].split("```", 1)[0]
    assert "port=6379" in snippet
    b.start_standby(port, a)
    a.start_primary(port, b)
    a.wait_protected()
    scope: dict[str, object] = {}
    exec(snippet.replace("port=6379", f"port={port}"), scope)
    r = scope["r"]
    assert isinstance(r, redis.Redis)
    a.kill()
    assert r.incr("counter") == 2  # the first INCR (in the snippet) was acknowledged: it survived
    assert b.status()["role"] == "primary"
