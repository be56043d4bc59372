"""Hash commands over a real server (RESP2 and RESP3)."""

from __future__ import annotations

import pytest
import redis

from tests.kvserver.resp_helpers import err, raw


def test_hset_hget_hmget_hgetall(r: redis.Redis) -> None:
    assert r.hset("h", mapping={"a": "1", "b": "2"}) == 2
    assert r.hset("h", mapping={"a": "9", "c": "3"}) == 1  # counts new fields only
    assert r.hget("h", "a") == b"9"
    assert r.hget("h", "nope") is None and r.hget("nokey", "a") is None
    assert r.hmget("h", ["a", "nope", "c"]) == [b"9", None, b"3"]
    assert r.hmget("nokey", ["a", "b"]) == [None, None]
    assert r.hgetall("h") == {b"a": b"9", b"b": b"2", b"c": b"3"}
    assert raw(r, "HGETALL", "h") is not None and len(raw(r, "HGETALL", "h")) == 6  # RESP2: flat
    assert r.hgetall("nokey") == {}
    assert raw(r, "HMSET", "h", "d", "4") == b"OK"
    assert sorted(r.hkeys("h")) == [b"a", b"b", b"c", b"d"]
    assert sorted(r.hvals("h")) == [b"2", b"3", b"4", b"9"]
    assert r.hlen("h") == 4 and r.hlen("nokey") == 0
    assert r.hstrlen("h", "a") == 1 and r.hstrlen("h", "zz") == 0
    assert err(r, "HSET", "h", "a") == "wrong number of arguments for 'hset' command"
    assert err(r, "HSET", "h", "a", "1", "b") == "wrong number of arguments for 'hset' command"


def test_hdel_hexists_and_empty_hash_is_deleted(r: redis.Redis) -> None:
    r.hset("h", mapping={"a": "1", "b": "2"})
    assert r.hexists("h", "a") is True and r.hexists("h", "z") is False
    assert r.hdel("h", "a", "zz", "a") == 1
    assert r.hdel("h", "b") == 1
    assert r.exists("h") == 0
    assert r.hdel("h", "b") == 0


def test_hsetnx(r: redis.Redis) -> None:
    assert r.hsetnx("h", "f", "1") == 1
    assert r.hsetnx("h", "f", "2") == 0
    assert r.hget("h", "f") == b"1"


def test_hincrby_and_hincrbyfloat(r: redis.Redis) -> None:
    assert r.hincrby("h", "n", 5) == 5
    assert r.hincrby("h", "n", -7) == -2
    r.hset("h", "s", "abc")
    assert err(r, "HINCRBY", "h", "s", "1") == "hash value is not an integer"
    assert err(r, "HINCRBY", "h", "n", "x") == "value is not an integer or out of range"
    r.hset("h", "max", str(2**63 - 1))
    assert err(r, "HINCRBY", "h", "max", "1") == "increment or decrement would overflow"
    assert r.hincrbyfloat("h", "f", 10.5) == pytest.approx(10.5)
    assert r.hincrbyfloat("h", "f", 0.1) == pytest.approx(10.6)
    assert r.hget("h", "f") == b"10.6"
    assert err(r, "HINCRBYFLOAT", "h", "s", "1") == "hash value is not a float"
    assert err(r, "HINCRBYFLOAT", "h", "f", "x") == "value is not a valid float"
    assert err(r, "HINCRBYFLOAT", "new", "f", "inf") == "value is NaN or Infinity"
    assert r.exists("new") == 0  # a refused increment leaves no empty hash behind


def test_hash_wrongtype(r: redis.Redis) -> None:
    r.set("s", "v")
    for args in (("HGET", "s", "f"), ("HSET", "s", "f", "v"), ("HGETALL", "s"), ("HLEN", "s")):
        assert err(r, *args).startswith("WRONGTYPE")


def test_hscan(r: redis.Redis) -> None:
    r.hset("h", mapping={f"f{i}": str(i) for i in range(30)})
    assert dict(r.hscan_iter("h")) == {f"f{i}".encode(): str(i).encode() for i in range(30)}
    assert dict(r.hscan_iter("h", match="f1*")) == {
        f"f{i}".encode(): str(i).encode() for i in range(30) if str(i).startswith("1")
    }


def test_resp3_hgetall_is_a_map(r3: redis.Redis) -> None:
    r3.hset("h", mapping={"a": "1", "b": "2"})
    assert raw(r3, "HGETALL", "h") == {b"a": b"1", b"b": b"2"}
    assert raw(r3, "HGETALL", "nokey") == {}
