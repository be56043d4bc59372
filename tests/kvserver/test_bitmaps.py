"""SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD, BITFIELD_RO: differential against redis-server."""

from __future__ import annotations

import random

from tests.kvserver.redis_diff import Differ


def test_setbit_getbit(diff: Differ) -> None:
    diff.check(
        ("SETBIT", "b", 7, 1),
        ("GET", "b"),
        ("SETBIT", "b", 7, 0),
        ("SETBIT", "b", 100, 1),
        ("STRLEN", "b"),
        ("GETBIT", "b", 100),
        ("GETBIT", "b", 99),
        ("GETBIT", "b", 100000),
        ("GETBIT", "nokey", 0),
        ("SETBIT", "new", 10, 0),
        ("GET", "new"),
        ("SETBIT", "b", -1, 1),
        ("SETBIT", "b", 4294967296, 1),
        ("SETBIT", "b", "x", 1),
        ("SETBIT", "b", 1, 2),
        ("SETBIT", "b", 1, "x"),
        ("GETBIT", "b", -1),
        ("RPUSH", "l", "a"),
        ("SETBIT", "l", 0, 1),
        ("GETBIT", "l", 0),
    )


def test_bitcount_bitpos(diff: Differ) -> None:
    diff.check(
        ("SET", "s", "foobar"),
        ("SET", "z", b"\x00\x00\x00"),
        ("SET", "f", b"\xff\xff\xff"),
        ("SET", "m", b"\x00\xff\xf0"),
    )
    steps: list[tuple[object, ...]] = []
    for key in ("s", "z", "f", "m", "nokey"):
        steps += [("BITCOUNT", key), ("BITPOS", key, 1), ("BITPOS", key, 0)]
        for start, end in (
            (0, 0),
            (1, 1),
            (1, -1),
            (-2, -1),
            (5, 2),
            (-100, 100),
            (0, -100),
            (-1, -2),
            (-6, -7),
        ):
            steps += [
                ("BITCOUNT", key, start, end),
                ("BITCOUNT", key, start, end, "BIT"),
                ("BITCOUNT", key, start, end, "BYTE"),
                ("BITPOS", key, 1, start, end),
                ("BITPOS", key, 0, start, end),
                ("BITPOS", key, 0, start, end, "BIT"),
                ("BITPOS", key, 1, start, end, "BIT"),
                ("BITPOS", key, 0, start),
                ("BITPOS", key, 1, start),
            ]
    steps += [
        ("SET", "x4", "xxxx"),
        ("BITCOUNT", "x4", -6, -7),
        ("BITCOUNT", "x4", -6, -15, "BIT"),
        ("BITPOS", "x4", 1, -6, -7),
        ("BITPOS", "x4", 0, -6, -15, "BIT"),
        ("BITCOUNT", "s", 0),
        ("BITCOUNT", "s", 0, 1, "FOO"),
        ("BITCOUNT", "s", "x", 1),
        ("BITPOS", "s", 2),
        ("BITPOS", "s", "x"),
        ("BITPOS", "s", 1, 0, 1, "FOO"),
        ("BITPOS", "s", 1, "x"),
    ]
    diff.check(*steps)


def test_bitop(diff: Differ) -> None:
    diff.check(
        ("SET", "a", b"\x0f\xf0abc"),
        ("SET", "b", b"\xff\x00"),
        ("BITOP", "AND", "d", "a", "b"),
        ("GET", "d"),
        ("BITOP", "OR", "d", "a", "b", "nokey"),
        ("GET", "d"),
        ("BITOP", "XOR", "d", "a", "b"),
        ("GET", "d"),
        ("BITOP", "NOT", "d", "a"),
        ("GET", "d"),
        ("BITOP", "NOT", "d", "a", "b"),
        ("BITOP", "NAND", "d", "a"),
        ("BITOP", "AND", "d", "nokey", "nokey2"),
        ("EXISTS", "d"),
        ("RPUSH", "l", 1),
        ("BITOP", "AND", "d", "a", "l"),
    )


def test_bitfield(diff: Differ) -> None:
    steps: list[tuple[object, ...]] = [
        ("BITFIELD", "bf", "SET", "i8", 0, 100, "GET", "i8", 0, "GET", "u4", 0, "GET", "i4", "#1"),
        ("BITFIELD", "bf", "INCRBY", "i8", 0, 100),
        ("BITFIELD", "bf", "OVERFLOW", "SAT", "INCRBY", "i8", 0, 100, "INCRBY", "u2", 100, 7),
        ("BITFIELD", "bf", "OVERFLOW", "FAIL", "INCRBY", "i8", 0, 100, "GET", "i8", 0),
        ("BITFIELD", "bf", "SET", "u8", "#2", -1, "GET", "u8", 16),
        ("BITFIELD", "bf", "OVERFLOW", "SAT", "SET", "u8", "#3", -1, "SET", "i4", 3, 100),
        (
            "BITFIELD",
            "bf",
            "SET",
            "i64",
            8,
            -5,
            "GET",
            "i64",
            8,
            "INCRBY",
            "i64",
            8,
            -9223372036854775803,
        ),
        ("BITFIELD", "bf", "SET", "u63", 1, 5, "INCRBY", "u63", 1, -6),
        ("GET", "bf"),
        ("BITFIELD", "bf"),
        ("BITFIELD", "nokey", "GET", "u8", 0),
        ("EXISTS", "nokey"),
        ("BITFIELD", "bf", "GET", "u64", 0),
        ("BITFIELD", "bf", "GET", "i65", 0),
        ("BITFIELD", "bf", "GET", "x8", 0),
        ("BITFIELD", "bf", "GET", "i0", 0),
        ("BITFIELD", "bf", "GET", "i8", -1),
        ("BITFIELD", "bf", "GET", "i8", "#x"),
        ("BITFIELD", "bf", "GET", "i8"),
        ("BITFIELD", "bf", "SET", "i8", 0),
        ("BITFIELD", "bf", "SET", "i8", 0, "x"),
        ("BITFIELD", "bf", "OVERFLOW", "MAYBE"),
        ("BITFIELD", "bf", "FOO"),
        ("BITFIELD_RO", "bf", "GET", "u8", 0, "GET", "i16", 3),
        ("BITFIELD_RO", "bf", "SET", "u8", 0, 1),
        ("BITFIELD_RO", "bf", "OVERFLOW", "SAT"),
    ]
    rnd = random.Random(7)
    for _ in range(200):
        signed = rnd.random() < 0.5
        bits = rnd.randint(1, 64 if signed else 63)
        kind = f"{'i' if signed else 'u'}{bits}"
        offset = rnd.randint(0, 100)
        op = rnd.choice(("SET", "INCRBY"))
        value = rnd.randint(-(2**63), 2**63 - 1) if rnd.random() < 0.3 else rnd.randint(-300, 300)
        overflow = rnd.choice(("WRAP", "SAT", "FAIL"))
        steps.append(
            ("BITFIELD", "rnd", "OVERFLOW", overflow, op, kind, offset, value, "GET", kind, offset)
        )
    steps.append(("GET", "rnd"))
    diff.check(*steps)
