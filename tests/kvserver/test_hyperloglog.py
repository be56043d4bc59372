"""PFADD, PFCOUNT, PFMERGE: kvserver computes Redis's own estimate (same hash, registers and estimator),
so the counts are compared exactly with redis-server's; a value written by one server is read by the
other (dense and sparse)."""

from __future__ import annotations

import redis

from tests.kvserver.redis_diff import Differ
from tests.kvserver.resp_helpers import raw


def test_counts_equal_redis(diff: Differ) -> None:
    steps: list[tuple[object, ...]] = [
        ("PFADD", "empty"),
        ("PFCOUNT", "empty"),
        ("PFADD", "h", "a", "b", "c"),
    ]
    steps += [("PFADD", "h", "a")]
    batch: list[object] = []
    for i in range(20000):
        batch.append(f"element:{i}")
        if len(batch) == 1000:
            steps += [("PFADD", "h", *batch), ("PFCOUNT", "h")]
            steps += [("PFADD", "g", *[f"{x}x" for x in batch[:300]])]
            batch = []
    steps += [
        ("PFCOUNT", "h", "g"),
        ("PFCOUNT", "h", "nokey"),
        ("PFCOUNT", "nokey"),
        ("PFMERGE", "m", "h", "g"),
        ("PFCOUNT", "m"),
        ("PFMERGE", "m2"),
        ("PFCOUNT", "m2"),
        ("PFMERGE", "g", "h"),
        ("PFCOUNT", "g"),
        ("SET", "str", "not an hll"),
        ("PFADD", "str", "a"),
        ("PFCOUNT", "str"),
        ("PFMERGE", "m", "str"),
        ("RPUSH", "l", "a"),
        ("PFADD", "l", "a"),
        ("TYPE", "h"),
    ]
    diff.check(*steps)


def test_values_are_exchangeable_with_redis(diff: Differ) -> None:
    diff.check(("PFADD", "small", *[f"s{i}" for i in range(50)]))  # Redis keeps this one sparse
    diff.check(("PFADD", "big", *[f"b{i}" for i in range(5000)]))  # and this one dense
    diff.check(("PFCOUNT", "small"), ("PFADD", "small", "one-more"), ("GET", "small"))
    for key in ("small", "big"):
        theirs = raw(diff.ref, "GET", key)
        assert isinstance(theirs, bytes)
        diff.kv.set(key + "_from_redis", theirs)
        mine = raw(diff.kv, "GET", key)
        assert isinstance(mine, bytes)
        diff.ref.set(key + "_from_kv", mine)
        expected = raw(diff.ref, "PFCOUNT", key)
        assert raw(diff.kv, "PFCOUNT", key + "_from_redis") == expected
        assert raw(diff.ref, "PFCOUNT", key + "_from_kv") == expected
        assert raw(diff.kv, "PFADD", key + "_from_redis", "new-one") == raw(
            diff.ref, "PFADD", key, "new-one"
        )
        assert raw(diff.kv, "PFCOUNT", key + "_from_redis") == raw(diff.ref, "PFCOUNT", key)


def test_cache_byte_and_corruption(r: redis.Redis) -> None:
    r.pfadd("h", "a", "b")
    assert r.getrange("h", 15, 15) == b"\x80"  # cached cardinality stale after an add
    assert r.pfcount("h") == 2
    assert r.getrange("h", 15, 15) == b"\x00"
    r.set("bad", b"HYLL\x01\x00\x00\x00" + b"\x00" * 8 + b"\xff")  # sparse, runs past the registers
    with_error = raw_error(r, "PFCOUNT", "bad")
    assert with_error.startswith("INVALIDOBJ")


def raw_error(r: redis.Redis, *args: object) -> str:
    try:
        r.execute_command(*args)
    except redis.ResponseError as exc:
        return str(exc)
    raise AssertionError(f"{args} did not fail")
