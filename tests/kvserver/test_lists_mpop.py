"""LMPOP and LPOP/RPOP argument checks, SINTERCARD, HRANDFIELD, EXPIRE overflow: differential."""

from __future__ import annotations

from tests.kvserver.redis_diff import Differ, Shape, Unordered


def test_lmpop_and_pop_arity(diff: Differ) -> None:
    diff.check(
        ("RPUSH", "a", 1, 2, 3),
        ("RPUSH", "b", 4, 5),
        ("LMPOP", 2, "nokey", "a", "LEFT"),
        ("LMPOP", 2, "a", "b", "RIGHT", "COUNT", 10),
        ("LMPOP", 2, "a", "b", "RIGHT", "COUNT", 10),
        ("EXISTS", "a"),
        ("LMPOP", 1, "b", "LEFT"),
        ("LMPOP", 1, "nokey", "LEFT"),
        ("LMPOP", 0, "b", "LEFT"),
        ("LMPOP", "x", "b", "LEFT"),
        ("LMPOP", 3, "b", "LEFT"),
        ("LMPOP", 1, "b", "UP"),
        ("LMPOP", 1, "b", "LEFT", "COUNT", 0),
        ("LMPOP", 1, "b", "LEFT", "COUNT", "x"),
        ("LMPOP", 1, "b", "LEFT", "COUNT"),
        ("LMPOP", 1, "b"),
        ("LPOP", "b", 1, 2),
        ("RPOP", "b", 1, 2),
        ("LPOP", "b", -1),
        ("SET", "s", "x"),
        ("LMPOP", 1, "s", "LEFT"),
    )


def test_sintercard(diff: Differ) -> None:
    diff.check(
        ("SADD", "a", 1, 2, 3, 4),
        ("SADD", "b", 2, 3, 4, 5),
        ("SADD", "c", 3, 4),
        ("SINTERCARD", 2, "a", "b"),
        ("SINTERCARD", 3, "a", "b", "c"),
        ("SINTERCARD", 2, "a", "b", "LIMIT", 2),
        ("SINTERCARD", 2, "a", "b", "LIMIT", 0),
        ("SINTERCARD", 2, "a", "nokey"),
        ("SINTERCARD", 0, "a"),
        ("SINTERCARD", 3, "a", "b"),
        ("SINTERCARD", 2, "a", "b", "LIMIT", -1),
        ("SINTERCARD", 2, "a", "b", "LIMIT"),
        ("SINTERCARD", 1, "a", "FOO", 1),
        ("SET", "s", "x"),
        ("SINTERCARD", 2, "a", "s"),
        ("SMISMEMBER", "a", 1, 9),
    )


def test_hrandfield(diff: Differ, diff3: Differ) -> None:
    for d in (diff, diff3):
        d.check(
            ("HSET", "h", "f1", "v1", "f2", "v2", "f3", "v3"),
            ("HSET", "one", "f", "v"),
            ("HRANDFIELD", "one"),
            ("HRANDFIELD", "one", 1, "WITHVALUES"),
            ("HRANDFIELD", "one", -2, "WITHVALUES"),
            Unordered("HRANDFIELD", "h", 3),
            Unordered("HRANDFIELD", "h", 5),
            Shape("HRANDFIELD", "h", 2),
            Shape("HRANDFIELD", "h", -7),
            Shape("HRANDFIELD", "h", -4, "WITHVALUES"),
            ("HRANDFIELD", "nokey"),
            ("HRANDFIELD", "nokey", 2),
            ("HRANDFIELD", "h", 0),
            ("HRANDFIELD", "h", 1, "FOO"),
            ("HRANDFIELD", "h", "x"),
            ("HRANDFIELD", "h", -9223372036854775807, "WITHVALUES"),
        )


def test_expire_overflow_deletes_nothing(diff: Differ) -> None:
    diff.check(
        ("SET", "k", "v"),
        ("EXPIRE", "k", -9223372036854776),
        ("EXPIRE", "k", 9223372036854776),
        ("EXPIRE", "k", 9223372036854775),
        ("PEXPIRE", "k", 9223372036854775807),
        ("EXPIREAT", "k", -9223372036854776),
        ("EXISTS", "k"),
        ("EXPIRE", "k", -9223372036854775),
        ("EXISTS", "k"),
    )
