"""What the data commands log replays to the same data: crash (SIGKILL) then restart from the
append-only file. Checks the propagation rules: relative TTLs logged as absolute times, SPOP as
SREM of the chosen members, INCRBYFLOAT as the exact result, expiries in the past as DEL.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis


def _restart(kv_factory: Any, data_dir: Path, server: Any) -> redis.Redis:
    server.kill()  # no shutdown snapshot: the restart must replay the append-only file
    again = kv_factory("--dir", str(data_dir), "--appendfsync", "always", "--save", "")
    client: redis.Redis = again.client()
    return client


def test_replay_reproduces_data_and_keeps_absolute_ttls(kv_factory: Any, tmp_path: Path) -> None:
    server = kv_factory("--dir", str(tmp_path), "--appendfsync", "always", "--save", "")
    r = server.client()
    r.set("ex", "v", ex=1000)
    r.set("px", "v", px=2_000_000)
    r.set("plain", "v")
    r.expire("plain", 3000)
    r.set("gone", "v")
    r.expire("gone", -1)  # in the past: deleted, logged as DEL
    r.sadd("s", *[f"m{i}" for i in range(50)])
    popped = r.spop("s", 10)  # random choice: the log must name the members
    r.set("f", "10.5")
    r.incrbyfloat("f", 0.1)
    r.hset("h", "x", "1")
    r.hincrbyfloat("h", "x", 0.25)
    r.zadd("z", {"a": 1, "b": 2})
    r.zincrby("z", 5, "a")
    r.rpush("l", "a", "b", "c")
    r.lmove("l", "l2", "LEFT", "RIGHT")
    r.getex("px", persist=True)
    expire_at = {k: r.pexpiretime(k) for k in ("ex", "plain")}
    before = {
        "s": r.smembers("s"),
        "f": r.get("f"),
        "h": r.hgetall("h"),
        "z": r.zrange("z", 0, -1, withscores=True),
        "l": r.lrange("l", 0, -1),
        "l2": r.lrange("l2", 0, -1),
    }
    assert len(popped) == 10

    r2 = _restart(kv_factory, tmp_path, server)
    assert r2.smembers("s") == before["s"]
    assert r2.get("f") == before["f"] == b"10.6"
    assert r2.hgetall("h") == before["h"]
    assert r2.zrange("z", 0, -1, withscores=True) == before["z"]
    assert r2.lrange("l", 0, -1) == before["l"] and r2.lrange("l2", 0, -1) == before["l2"]
    assert r2.exists("gone") == 0
    assert r2.ttl("px") == -1  # GETEX PERSIST was logged
    for key, when in expire_at.items():
        assert r2.pexpiretime(key) == when, key  # the same instant, not restarted on replay


def test_replayed_past_expiry_is_gone(kv_factory: Any, tmp_path: Path) -> None:
    server = kv_factory("--dir", str(tmp_path), "--appendfsync", "always", "--save", "")
    r = server.client()
    soon = int(time.time() * 1000) + 200
    r.set("short", "v", pxat=soon)
    r.set("long", "v")
    deadline = time.monotonic() + 10
    while r.exists("short"):
        assert time.monotonic() < deadline, "PXAT key still there 10 s after its time"
        time.sleep(0.01)  # poll interval; the exit condition is the key's disappearance
    r2 = _restart(kv_factory, tmp_path, server)
    assert r2.exists("short") == 0
    assert r2.get("long") == b"v"


def test_snapshot_round_trip_of_every_type(kv_factory: Any, tmp_path: Path) -> None:
    """SAVE, crash, restart without an append-only file: every value type and TTL comes back."""
    args = ("--dir", str(tmp_path), "--appendonly", "no", "--save", "")
    server = kv_factory(*args)
    r = server.client()
    r.set("s", b"\x00bin")
    r.set("t", "v", ex=5000)
    r.rpush("l", *[f"e{i}" for i in range(100)])
    r.hset("h", mapping={f"f{i}": str(i) for i in range(100)})
    r.sadd("st", *[f"m{i}" for i in range(100)])
    r.zadd("z", {f"m{i}": i / 7 for i in range(1000)})
    expire_at = r.pexpiretime("t")
    assert r.save() is True
    server.kill()
    r2 = kv_factory(*args).client()
    assert r2.get("s") == b"\x00bin"
    assert r2.pexpiretime("t") == expire_at
    assert r2.lrange("l", 0, -1) == [f"e{i}".encode() for i in range(100)]
    assert r2.hgetall("h") == {f"f{i}".encode(): str(i).encode() for i in range(100)}
    assert r2.smembers("st") == {f"m{i}".encode() for i in range(100)}
    assert r2.zrange("z", 0, -1, withscores=True) == [
        (f"m{i}".encode(), i / 7) for i in range(1000)
    ]
    assert r2.zrank("z", "m500") == 500  # the restored SortedSet is fully indexed
    r2.zadd("z", {"new": -1})
    assert r2.zrange("z", 0, 0) == [b"new"]
