"""String commands over a real server with redis-py: values, options, counters, ranges, errors."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from tests.kvserver.resp_helpers import err, raw


def test_get_set_overwrite_and_binary_values(r: redis.Redis) -> None:
    assert r.get("missing") is None
    assert r.set("k", b"\x00\r\n\xff") is True
    assert r.get("k") == b"\x00\r\n\xff"
    r.rpush("list", "x")
    assert r.set("list", "now a string") is True  # SET replaces any type
    assert r.get("list") == b"now a string"
    assert err(r, "GET", "nope", "extra") == "wrong number of arguments for 'get' command"


def test_set_nx_xx_get_keepttl(r: redis.Redis) -> None:
    assert r.set("k", "1", nx=True) is True
    assert r.set("k", "2", nx=True) is None
    assert r.set("other", "x", xx=True) is None
    assert r.exists("other") == 0
    assert r.set("k", "3", xx=True) is True
    assert r.set("k", "4", get=True) == b"3"
    assert r.set("fresh", "v", get=True) is None
    assert raw(r, "SET", "k", "5", "NX", "GET") == b"4"  # NX+GET (Redis 7)
    assert r.get("k") == b"4"
    r.set("t", "a", ex=100)
    r.set("t", "b", keepttl=True)
    assert 0 < r.ttl("t") <= 100
    r.set("t", "c")
    assert r.ttl("t") == -1  # a plain SET discards the TTL
    r.rpush("l", "x")
    assert err(r, "SET", "l", "v", "GET") == (
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    )


@pytest.mark.parametrize(
    "args",
    [
        ("NX", "XX"),
        ("EX", "10", "PX", "100"),
        ("KEEPTTL", "EX", "10"),
        ("EX",),
        ("BOGUS",),
    ],
)
def test_set_rejects_conflicting_or_unknown_options(r: redis.Redis, args: tuple[str, ...]) -> None:
    assert err(r, "SET", "k", "v", *args) == "syntax error"
    assert r.exists("k") == 0


def test_set_expire_arguments(r: redis.Redis) -> None:
    r.set("k", "v", px=100_000)
    assert 99_000 < r.pttl("k") <= 100_000
    assert err(r, "SET", "k", "v", "EX", "0") == "invalid expire time in 'set' command"
    assert err(r, "SET", "k", "v", "PX", "-5") == "invalid expire time in 'set' command"
    assert err(r, "SET", "k", "v", "EX", "abc") == "value is not an integer or out of range"
    assert raw(r, "SET", "k", "v", "EX", "10", "EX", "100") == b"OK"  # same option twice: last wins
    assert 10 < r.ttl("k") <= 100
    assert err(r, "SET", "k", "v", "EX", str(2**62)) == "invalid expire time in 'set' command"
    assert err(r, "SETEX", "k", "0", "v") == "invalid expire time in 'setex' command"
    assert err(r, "PSETEX", "k", "-1", "v") == "invalid expire time in 'psetex' command"
    assert raw(r, "SETEX", "s", "50", "v") == b"OK" and 0 < r.ttl("s") <= 50
    assert r.psetex("p", 50_000, "v") is True and 0 < r.pttl("p") <= 50_000


def test_mget_mset_msetnx(r: redis.Redis) -> None:
    assert r.mset({"a": "1", "b": "2"}) is True
    r.rpush("l", "x")
    assert r.mget("a", "l", "nope", "b") == [b"1", None, None, b"2"]
    assert r.msetnx({"b": "9", "c": "3"}) is False
    assert r.get("c") is None and r.get("b") == b"2"
    assert r.msetnx({"c": "3", "d": "4"}) is True
    assert r.mget("c", "d") == [b"3", b"4"]
    assert err(r, "MSET", "a", "1", "b") == "wrong number of arguments for 'mset' command"
    assert err(r, "MSETNX", "a") == "wrong number of arguments for 'msetnx' command"


def test_counters_and_their_errors(r: redis.Redis) -> None:
    assert r.incr("n") == 1
    assert r.incrby("n", 41) == 42
    assert r.decr("n") == 41
    assert r.decrby("n", 50) == -9
    assert r.get("n") == b"-9"
    r.set("big", str(2**63 - 1))
    assert err(r, "INCR", "big") == "increment or decrement would overflow"
    assert r.get("big") == str(2**63 - 1).encode()  # nothing changed
    r.set("small", str(-(2**63)))
    assert err(r, "DECR", "small") == "increment or decrement would overflow"
    assert err(r, "DECRBY", "n", str(-(2**63))) == "decrement would overflow"
    for bad in ("abc", " 1", "+1", "01", "1.0", "", str(2**63)):
        r.set("bad", bad)
        assert err(r, "INCR", "bad") == "value is not an integer or out of range", bad
    assert err(r, "INCRBY", "n", "1x") == "value is not an integer or out of range"
    r.lpush("l", "x")
    assert err(r, "INCR", "l").startswith("WRONGTYPE")
    r.set("ttl", "1", ex=100)
    r.incr("ttl")
    assert r.ttl("ttl") > 0  # INCR keeps the TTL


def test_incrbyfloat(r: redis.Redis) -> None:
    r.set("f", "10.50")
    assert r.incrbyfloat("f", 0.1) == pytest.approx(10.6)
    assert r.get("f") == b"10.6"
    assert r.incrbyfloat("f", -5) == pytest.approx(5.6)
    r.set("e", "5.0e3")
    r.incrbyfloat("e", "2.0e2")
    assert r.get("e") == b"5200"
    assert raw(r, "INCRBYFLOAT", "new", "3") == b"3"
    assert err(r, "INCRBYFLOAT", "f", "abc") == "value is not a valid float"
    assert err(r, "INCRBYFLOAT", "f", "nan") == "value is not a valid float"
    r.set("s", "hello")
    assert err(r, "INCRBYFLOAT", "s", "1") == "value is not a valid float"
    assert err(r, "INCRBYFLOAT", "f", "inf") == "increment would produce NaN or Infinity"
    assert r.get("f") == b"5.6"


def test_append_strlen_getrange_setrange(r: redis.Redis) -> None:
    assert r.append("s", "Hello") == 5
    assert r.append("s", " World") == 11
    assert r.strlen("s") == 11 and r.strlen("nope") == 0
    assert r.getrange("s", 0, 4) == b"Hello"
    assert r.getrange("s", -5, -1) == b"World"
    assert r.getrange("s", -1, -5) == b""
    assert r.getrange("s", 5, 2) == b""
    assert r.getrange("s", 0, 100) == b"Hello World"
    assert r.getrange("s", -100, 2) == b"Hel"
    assert r.getrange("nope", 0, -1) == b""
    assert r.setrange("s", 6, "Redis") == 11
    assert r.get("s") == b"Hello Redis"
    assert r.setrange("z", 3, "ab") == 5
    assert r.get("z") == b"\x00\x00\x00ab"
    assert r.setrange("empty", 10, "") == 0
    assert r.exists("empty") == 0
    assert err(r, "SETRANGE", "s", "-1", "x") == "offset is out of range"
    assert err(r, "SETRANGE", "s", str(600 * 1024 * 1024), "x") == (
        "string exceeds maximum allowed size (proto-max-bulk-len)"
    )
    assert err(r, "GETRANGE", "s", "a", "1") == "value is not an integer or out of range"
    r.hset("h", "f", "v")
    assert err(r, "APPEND", "h", "x").startswith("WRONGTYPE")
    assert err(r, "STRLEN", "h").startswith("WRONGTYPE")


def test_getset_getdel_setnx(r: redis.Redis) -> None:
    assert r.getset("k", "1") is None
    r.expire("k", 100)
    assert r.getset("k", "2") == b"1"
    assert r.ttl("k") == -1
    assert r.getdel("k") == b"2"
    assert r.exists("k") == 0
    assert r.getdel("k") is None
    assert r.setnx("n", "1") is True
    assert r.setnx("n", "2") is False
    assert r.get("n") == b"1"


def test_getex(r: redis.Redis) -> None:
    r.set("k", "v")
    assert r.getex("k", ex=100) == b"v"
    assert 0 < r.ttl("k") <= 100
    assert r.getex("k", persist=True) == b"v"
    assert r.ttl("k") == -1
    assert r.getex("k", pxat=1) == b"v"  # a time in the past deletes the key
    assert r.exists("k") == 0
    assert r.getex("nope", ex=10) is None
    r.set("k", "v")
    assert err(r, "GETEX", "k", "EX", "10", "PERSIST") == "syntax error"
    assert err(r, "GETEX", "k", "EX", "0") == "invalid expire time in 'getex' command"
    assert err(r, "GETEX", "k", "FOO") == "syntax error"
    assert err(r, "GETEX", "k", "PX", "10", "EX", "10") == "syntax error"
    assert raw(r, "GETEX", "k", "EX", "10", "EX", "20") == b"v"  # the same option twice: last wins
    assert 10 < r.ttl("k") <= 20
    assert raw(r, "GETEX", "k", "PERSIST", "PERSIST") == b"v"
    assert r.ttl("k") == -1


def test_resp3_string_replies(r3: redis.Redis) -> None:
    assert r3.set("k", "v") is True
    assert r3.get("k") == b"v"
    assert r3.get("nope") is None
    assert r3.incr("n") == 1
    assert raw(r3, "INCRBYFLOAT", "f", "1.5") == b"1.5"  # a bulk string in RESP3 too


def test_concurrent_counters_lose_no_update(kv_shared: Any) -> None:
    """Many clients hammering INCR/INCRBYFLOAT/APPEND on shared keys: every update lands once."""
    threads_n, per_thread = 8, 300
    setup = kv_shared.client()
    setup.delete("ctr", "fl", "log")
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work(tid: int) -> None:
        client = kv_shared.client()
        try:
            barrier.wait(timeout=30)
            for _ in range(per_thread):
                client.incr("ctr")
                client.incrbyfloat("fl", 0.5)
                client.append("log", b"%d," % tid)
        except BaseException as exc:  # reported below; a thread must not die silently
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert not any(w.is_alive() for w in workers)
    assert errors == []
    assert setup.get("ctr") == str(threads_n * per_thread).encode()
    assert float(setup.get("fl")) == threads_n * per_thread * 0.5
    parts = setup.get("log").split(b",")[:-1]
    assert sorted(parts) == sorted(b"%d" % t for t in range(threads_n) for _ in range(per_thread))


def test_string_size_limit_follows_proto_max_bulk_len(kv_factory: Any) -> None:
    r = kv_factory("--proto-max-bulk-len", "1mb").client()
    r.set("s", b"x" * 1000)
    assert err(r, "SETRANGE", "s", str(1024 * 1024), "y") == (
        "string exceeds maximum allowed size (proto-max-bulk-len)"
    )
    assert err(r, "APPEND", "s", b"z" * (1024 * 1024)) == (
        "string exceeds maximum allowed size (proto-max-bulk-len)"
    )
    assert r.strlen("s") == 1000  # nothing changed
    assert r.setrange("s", 1024 * 1024 - 1, "y") == 1024 * 1024
