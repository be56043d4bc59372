"""Sorted-set commands over a real server, RESP2 and RESP3 (where WITHSCORES replies differ)."""

from __future__ import annotations

import math

import redis

from tests.kvserver.resp_helpers import err, raw


def test_zadd_options(r: redis.Redis) -> None:
    assert r.zadd("z", {"a": 1, "b": 2}) == 2
    assert r.zadd("z", {"a": 5, "c": 3}) == 1
    assert r.zadd("z", {"a": 6, "d": 4}, ch=True) == 2
    assert r.zadd("z", {"a": 100, "e": 5}, nx=True) == 1
    assert r.zscore("z", "a") == 6.0
    assert r.zadd("z", {"a": 7, "f": 1}, xx=True) == 0
    assert r.zscore("z", "a") == 7.0 and r.zscore("z", "f") is None
    assert r.zadd("z", {"a": 3}, gt=True, ch=True) == 0
    assert r.zadd("z", {"a": 8}, gt=True, ch=True) == 1
    assert r.zadd("z", {"a": 9}, lt=True, ch=True) == 0
    assert r.zadd("z", {"a": 2}, lt=True, ch=True) == 1
    assert r.zadd("z", {"b": 10}, incr=True) == 12.0
    assert raw(r, "ZADD", "z", "NX", "INCR", "1", "b") is None
    assert r.zadd("nope", {"a": 1}, xx=True) == 0 and r.exists("nope") == 0
    assert err(r, "ZADD", "z", "NX", "XX", "1", "a") == (
        "XX and NX options at the same time are not compatible"
    )
    assert err(r, "ZADD", "z", "GT", "LT", "1", "a") == (
        "GT, LT, and/or NX options at the same time are not compatible"
    )
    assert err(r, "ZADD", "z", "INCR", "1", "a", "2", "b") == (
        "INCR option supports a single increment-element pair"
    )
    assert err(r, "ZADD", "z", "x", "a") == "value is not a valid float"
    assert err(r, "ZADD", "z", "nan", "a") == "value is not a valid float"
    assert err(r, "ZADD", "z", "1", "a", "2") == "syntax error"
    assert err(r, "ZADD", "z", "1") == "wrong number of arguments for 'zadd' command"
    r.zadd("inf", {"x": float("inf")})
    assert err(r, "ZADD", "inf", "INCR", "-inf", "x") == "resulting score is not a number (NaN)"
    assert err(r, "ZINCRBY", "inf", "-inf", "x") == "resulting score is not a number (NaN)"


def test_zrange_by_index_score_lex(r: redis.Redis) -> None:
    r.zadd("z", {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5})
    assert r.zrange("z", 0, -1) == [b"a", b"b", b"c", b"d", b"e"]
    assert r.zrange("z", -2, 100) == [b"d", b"e"]
    assert r.zrange("z", 3, 1) == []
    assert r.zrange("z", 0, 1, desc=True) == [b"e", b"d"]
    assert raw(r, "ZRANGE", "z", "0", "1", "WITHSCORES") == [b"a", b"1", b"b", b"2"]
    assert r.zrevrange("z", 0, 1) == [b"e", b"d"]
    assert raw(r, "ZRANGE", "z", "(1", "3", "BYSCORE") == [b"b", b"c"]
    assert raw(r, "ZRANGE", "z", "-inf", "+inf", "BYSCORE", "LIMIT", "1", "2") == [b"b", b"c"]
    assert raw(r, "ZRANGE", "z", "+inf", "(3", "BYSCORE", "REV") == [b"e", b"d"]
    assert raw(r, "ZRANGE", "z", "5", "1", "BYSCORE", "REV", "LIMIT", "1", "2") == [b"d", b"c"]
    assert raw(r, "ZRANGEBYSCORE", "z", "2", "4", "WITHSCORES") == [
        b"b",
        b"2",
        b"c",
        b"3",
        b"d",
        b"4",
    ]
    assert raw(r, "ZRANGEBYSCORE", "z", "-inf", "inf", "LIMIT", "3", "-1") == [b"d", b"e"]
    assert raw(r, "ZREVRANGEBYSCORE", "z", "4", "2") == [b"d", b"c", b"b"]
    r.zadd("lex", {m: 0 for m in ("a", "b", "c", "d", "e")})
    assert raw(r, "ZRANGE", "lex", "[b", "(d", "BYLEX") == [b"b", b"c"]
    assert raw(r, "ZRANGE", "lex", "-", "+", "BYLEX", "LIMIT", "1", "2") == [b"b", b"c"]
    assert raw(r, "ZRANGE", "lex", "+", "[c", "BYLEX", "REV") == [b"e", b"d", b"c"]
    assert raw(r, "ZRANGEBYLEX", "lex", "(c", "+") == [b"d", b"e"]
    assert raw(r, "ZRANGE", "lex", "+", "-", "BYLEX") == []
    assert raw(r, "ZLEXCOUNT", "lex", "[b", "[d") == 3
    assert r.zrange("nope", 0, -1) == []
    assert err(r, "ZRANGE", "z", "0", "1", "LIMIT", "0", "1") == (
        "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
    )
    assert err(r, "ZRANGE", "lex", "-", "+", "BYLEX", "WITHSCORES") == (
        "syntax error, WITHSCORES not supported in combination with BYLEX"
    )
    assert err(r, "ZRANGE", "z", "a", "1", "BYSCORE") == "min or max is not a float"
    assert err(r, "ZRANGE", "lex", "a", "+", "BYLEX") == "min or max not valid string range item"
    assert err(r, "ZRANGE", "z", "x", "1") == "value is not an integer or out of range"
    assert err(r, "ZRANGE", "z", "0", "1", "FOO") == "syntax error"


def test_rank_score_count_card(r: redis.Redis) -> None:
    r.zadd("z", {"a": 1, "b": 2, "c": 2, "d": 3.5})
    assert r.zrank("z", "a") == 0 and r.zrank("z", "c") == 2
    assert r.zrevrank("z", "a") == 3
    assert r.zrank("z", "nope") is None and r.zrank("nokey", "a") is None
    assert r.zscore("z", "d") == 3.5 and r.zscore("z", "x") is None
    assert r.zmscore("z", ["a", "x", "d"]) == [1.0, None, 3.5]
    assert r.zcard("z") == 4 and r.zcard("nokey") == 0
    assert r.zcount("z", 2, 3.5) == 3
    assert r.zcount("z", "(2", "+inf") == 1
    assert r.zcount("z", "-inf", "(2") == 1
    assert err(r, "ZCOUNT", "z", "x", "1") == "min or max is not a float"


def test_zrem_zincrby_and_empty_set_is_deleted(r: redis.Redis) -> None:
    r.zadd("z", {"a": 1, "b": 2})
    assert r.zincrby("z", 2.5, "a") == 3.5
    assert r.zincrby("z", 1, "new") == 1.0
    assert r.zrange("z", 0, -1) == [b"new", b"b", b"a"]
    assert r.zrem("z", "a", "nope") == 1
    assert r.zrem("z", "b", "new") == 2
    assert r.exists("z") == 0
    assert err(r, "ZINCRBY", "z", "x", "a") == "value is not a valid float"


def test_zpopmin_zpopmax(r: redis.Redis) -> None:
    r.zadd("z", {"a": 1, "b": 2, "c": 3, "d": 4})
    assert raw(r, "ZPOPMIN", "z") == [b"a", b"1"]
    assert raw(r, "ZPOPMAX", "z", "2") == [b"d", b"4", b"c", b"3"]
    assert raw(r, "ZPOPMIN", "z", "10") == [b"b", b"2"]
    assert r.exists("z") == 0
    assert raw(r, "ZPOPMIN", "z") == []
    assert err(r, "ZPOPMIN", "z", "-1") == "value is out of range, must be positive"


def test_scores_keep_full_precision_and_infinities(r: redis.Redis) -> None:
    r.zadd("z", {"third": 1 / 3, "big": 1e300, "ninf": float("-inf")})
    assert r.zscore("z", "third") == 1 / 3
    assert r.zscore("z", "big") == 1e300
    assert r.zscore("z", "ninf") == -math.inf
    assert r.zrange("z", 0, 0) == [b"ninf"]


def test_zset_wrongtype(r: redis.Redis) -> None:
    r.set("s", "v")
    for args in (("ZADD", "s", "1", "a"), ("ZRANGE", "s", "0", "1"), ("ZSCORE", "s", "a")):
        assert err(r, *args).startswith("WRONGTYPE")


def test_zscan(r: redis.Redis) -> None:
    r.zadd("z", {f"m{i}": i for i in range(25)})
    assert dict(r.zscan_iter("z")) == {f"m{i}".encode(): float(i) for i in range(25)}


def test_resp3_doubles_and_pairs(r3: redis.Redis) -> None:
    r3.zadd("z", {"a": 1.5, "b": 2})
    assert raw(r3, "ZSCORE", "z", "a") == 1.5  # a RESP3 double
    assert raw(r3, "ZINCRBY", "z", "1", "a") == 2.5
    assert raw(r3, "ZMSCORE", "z", "a", "x") == [2.5, None]
    assert raw(r3, "ZRANGE", "z", "0", "-1", "WITHSCORES") == [[b"b", 2.0], [b"a", 2.5]]
    assert raw(r3, "ZPOPMAX", "z") == [b"a", 2.5]
    r3.zadd("z", {"c": 3})
    assert raw(r3, "ZPOPMIN", "z", "2") == [[b"b", 2.0], [b"c", 3.0]]
    r3.zadd("z", {"d": 0.25})
    assert raw(r3, "ZSCAN", "z", "0") == [b"0", [b"d", b"0.25"]]  # scan scores stay strings
