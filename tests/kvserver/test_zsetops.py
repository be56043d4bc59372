"""ZUNION/ZINTER/ZDIFF(STORE), ZINTERCARD, ZRANGESTORE, ZREMRANGEBY*, ZRANDMEMBER, ZMPOP, ZREVRANGEBYLEX
and score formatting: differential against the real redis-server (tests/kvserver/redis_diff.py) and
direct assertions on kvserver."""

from __future__ import annotations

import redis

from tests.kvserver.redis_diff import Differ, Shape
from tests.kvserver.resp_helpers import raw

SETUP = [
    ("ZADD", "a", 1, "x", 2, "y", 3.5, "z", "inf", "big"),
    ("ZADD", "b", 10, "y", 20, "z", 30, "w", "-inf", "big"),
    ("SADD", "s", "x", "w", "q"),
    ("SET", "str", "v"),
]


def test_union_inter_diff(diff: Differ) -> None:
    diff.check(*SETUP)
    for op in ("ZUNION", "ZINTER"):
        diff.check(
            (op, 2, "a", "b"),
            (op, 2, "a", "b", "WITHSCORES"),
            (op, 3, "a", "b", "s", "WITHSCORES"),
            (op, 2, "a", "b", "WEIGHTS", 2, 0.5, "WITHSCORES"),
            (op, 2, "a", "b", "WEIGHTS", 0, 1, "WITHSCORES"),
            (op, 2, "a", "b", "AGGREGATE", "MIN", "WITHSCORES"),
            (op, 2, "a", "b", "AGGREGATE", "max", "WEIGHTS", 1, -1, "WITHSCORES"),
            (op, 2, "a", "nokey", "WITHSCORES"),
            (op, 0, "a"),
            (op, -1, "a"),
            (op, "x", "a"),
            (op, 3, "a", "b"),
            (op, 2, "a", "str"),
            (op, 2, "a", "b", "WEIGHTS", 1),
            (op, 2, "a", "b", "WEIGHTS", 1, "nan"),
            (op, 2, "a", "b", "WEIGHTS", 1, "x"),
            (op, 2, "a", "b", "AGGREGATE", "avg"),
            (op, 2, "a", "b", "AGGREGATE"),
            (op, 2, "a", "b", "FOO"),
            (op + "STORE", "d", 2, "a", "b", "WEIGHTS", 3, 1),
            ("ZRANGE", "d", 0, -1, "WITHSCORES"),
            (op + "STORE", "d", 2, "a", "b", "WITHSCORES"),
            (op + "STORE", "d", 0, "a"),
            (op + "STORE", "d", 1, "nokey"),
            ("EXISTS", "d"),
        )
    diff.check(
        ("ZDIFF", 2, "a", "b", "WITHSCORES"),
        ("ZDIFF", 3, "a", "b", "s"),
        ("ZDIFF", 1, "nokey"),
        ("ZDIFF", 2, "a", "b", "WEIGHTS", 1, 2),
        ("ZDIFF", 2, "a", "b", "AGGREGATE", "SUM"),
        ("ZDIFFSTORE", "d", 2, "a", "s"),
        ("ZRANGE", "d", 0, -1, "WITHSCORES"),
        ("ZDIFFSTORE", "d", 2, "a", "a"),
        ("EXISTS", "d"),
        ("ZUNIONSTORE", "a", 2, "a", "b"),
        ("ZRANGE", "a", 0, -1, "WITHSCORES"),
    )


def test_intercard(diff: Differ) -> None:
    diff.check(
        *SETUP,
        ("ZINTERCARD", 2, "a", "b"),
        ("ZINTERCARD", 3, "a", "b", "s"),
        ("ZINTERCARD", 2, "a", "b", "LIMIT", 1),
        ("ZINTERCARD", 2, "a", "b", "LIMIT", 0),
        ("ZINTERCARD", 2, "a", "b", "LIMIT", -1),
        ("ZINTERCARD", 2, "a", "b", "LIMIT"),
        ("ZINTERCARD", 2, "a", "b", "FOO", 1),
        ("ZINTERCARD", 0, "a"),
        ("ZINTERCARD", 3, "a", "b"),
        ("ZINTERCARD", 2, "a", "nokey"),
        ("ZINTERCARD", 2, "a", "str"),
    )


def test_rangestore_and_remrange(diff: Differ) -> None:
    members = []
    for i in range(12):
        members += [i % 4, f"m{i:02d}"]
    diff.check(
        ("ZADD", "z", *members),
        ("ZADD", "lex", *[x for c in "abcdefg" for x in (0, c)]),
        ("ZRANGESTORE", "d", "z", 2, 5),
        ("ZRANGE", "d", 0, -1, "WITHSCORES"),
        ("ZRANGESTORE", "d", "z", "(1", 2, "BYSCORE", "LIMIT", 1, 3),
        ("ZRANGE", "d", 0, -1, "WITHSCORES"),
        ("ZRANGESTORE", "d", "z", 3, "-inf", "BYSCORE", "REV"),
        ("ZRANGE", "d", 0, -1, "WITHSCORES"),
        ("ZRANGESTORE", "d", "lex", "[b", "(e", "BYLEX"),
        ("ZRANGE", "d", 0, -1),
        ("ZRANGESTORE", "d", "z", 0, 1, "WITHSCORES"),
        ("ZRANGESTORE", "d", "z", 0, 1, "LIMIT", 0, 1),
        ("ZRANGESTORE", "d", "nokey", 0, -1),
        ("EXISTS", "d"),
        ("ZREVRANGEBYLEX", "lex", "+", "-"),
        ("ZREVRANGEBYLEX", "lex", "(f", "[b", "LIMIT", 1, 2),
        ("ZREVRANGEBYLEX", "lex", "x", "-"),
        ("ZLEXCOUNT", "lex", "(a", "[f"),
        ("ZREMRANGEBYLEX", "lex", "[b", "(d"),
        ("ZREMRANGEBYLEX", "lex", "x", "(d"),
        ("ZRANGE", "lex", 0, -1),
        ("ZREMRANGEBYSCORE", "z", "(1", 2),
        ("ZREMRANGEBYSCORE", "z", "a", 2),
        ("ZREMRANGEBYRANK", "z", 1, -2),
        ("ZREMRANGEBYRANK", "z", 5, 3),
        ("ZRANGE", "z", 0, -1, "WITHSCORES"),
        ("ZREMRANGEBYRANK", "z", 0, -1),
        ("EXISTS", "z"),
        ("ZREMRANGEBYRANK", "nokey", 0, -1),
    )


def test_randmember_and_mpop(diff: Differ) -> None:
    diff.check(
        ("ZADD", "z", 1, "a", 2, "b", 3, "c"),
        ("ZADD", "one", 5, "only"),
        ("ZRANDMEMBER", "one"),
        ("ZRANDMEMBER", "one", 1, "WITHSCORES"),
        ("ZRANDMEMBER", "one", -3, "WITHSCORES"),
        Shape("ZRANDMEMBER", "z", 2),
        Shape("ZRANDMEMBER", "z", 10),
        Shape("ZRANDMEMBER", "z", -10),
        Shape("ZRANDMEMBER", "z", -5, "WITHSCORES"),
        ("ZRANDMEMBER", "nokey"),
        ("ZRANDMEMBER", "nokey", 3),
        ("ZRANDMEMBER", "z", 0),
        ("ZRANDMEMBER", "z", 1, "FOO"),
        ("ZRANDMEMBER", "z", "x"),
        ("ZRANDMEMBER", "z", -9223372036854775807, "WITHSCORES"),
        ("ZMPOP", 2, "nokey", "z", "MIN"),
        ("ZMPOP", 1, "z", "MAX", "COUNT", 5),
        ("ZMPOP", 1, "z", "MAX"),
        ("ZMPOP", 0, "z", "MAX"),
        ("ZMPOP", 3, "z", "MAX"),
        ("ZMPOP", 1, "z", "MID"),
        ("ZMPOP", 1, "z", "MIN", "COUNT", 0),
        ("ZMPOP", 1, "z", "MIN", "COUNT", 1, "COUNT", 1),
        ("ZMPOP", 1, "z"),
    )
    assert [s == [b"a", b"1", b"a", b"1"] for s in [raw(diff.kv, "ZRANDMEMBER", "one", -2)]]


def test_scores_have_17_digits(diff: Differ) -> None:
    diff.check(
        ("ZADD", "z", 1.1, "a", 0.1, "b", "-inf", "c", 1e300, "d", 3, "e", 2.5e-5, "f"),
        ("ZSCORE", "z", "a"),
        ("ZMSCORE", "z", "a", "b", "nope"),
        ("ZRANGE", "z", 0, -1, "WITHSCORES"),
        ("ZINCRBY", "z", 0.2, "a"),
        ("ZADD", "z", "INCR", 0.7, "b"),
        ("ZRANK", "z", "a", "WITHSCORE") if False else ("ZRANK", "z", "a"),
        ("ZPOPMIN", "z"),
        ("ZPOPMAX", "z", 2),
        ("ZSCAN", "z", 0),
    )


def test_resp3_scores_and_pairs(diff3: Differ) -> None:
    diff3.check(
        ("ZADD", "a", 1.5, "x", 2, "y"),
        ("ZADD", "b", 1, "y"),
        ("ZUNION", 2, "a", "b", "WITHSCORES"),
        ("ZINTER", 2, "a", "b", "WITHSCORES"),
        ("ZMPOP", 1, "a", "MIN"),
        ("ZRANDMEMBER", "b", 1, "WITHSCORES"),
        ("ZSCORE", "a", "y"),
    )


def test_store_invalidates_watch_and_survives_restart_of_client(r: redis.Redis) -> None:
    r.zadd("a", {"x": 1})
    with r.pipeline() as p:
        p.watch("d")
        r.zunionstore("d", ["a"])
        p.multi()
        p.get("d")
        try:
            p.execute()
            raise AssertionError("EXEC should have been aborted by the WATCHed destination")
        except redis.WatchError:
            pass


def test_bylex_on_mixed_scores_walks_like_redis(diff: Differ) -> None:
    """Redis leaves BYLEX on mixed scores unspecified but answers deterministically (its walk)."""
    steps: list[tuple[object, ...]] = [("ZADD", "z", 1, "a", 2, "b", 3, "c", 4, "d")]
    steps += [("ZADD", "m", 1, "d", 2, "b", 3, "c", 4, "a", 5, "e")]
    for key in ("z", "m"):
        for lo, hi in (
            ("[b", "[c"),
            ("-", "+"),
            ("(a", "[d"),
            ("[c", "[b"),
            ("[e", "+"),
            ("-", "(b"),
        ):
            steps += [
                ("ZRANGE", key, lo, hi, "BYLEX"),
                ("ZRANGE", key, hi, lo, "BYLEX", "REV"),
                ("ZRANGEBYLEX", key, lo, hi, "LIMIT", 1, 1),
                ("ZLEXCOUNT", key, lo, hi),
                ("ZRANGESTORE", "dst", key, lo, hi, "BYLEX"),
            ]
    steps += [("ZREMRANGEBYLEX", "m", "[b", "[c"), ("ZRANGE", "m", 0, -1)]
    diff.check(*steps)
