"""COPY, MOVE, SWAPDB, SORT/SORT_RO, DUMP/RESTORE, OBJECT, MEMORY USAGE, FUNCTION FLUSH/LIST: differential
against the real redis-server where the replies are comparable, direct assertions on kvserver where
kvserver differs by design (its DUMP payload format, memory figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from tests.kvserver.redis_diff import Differ, Unordered
from tests.kvserver.resp_helpers import err, raw

VALUES = [
    ("SET", "str", "hello"),
    ("RPUSH", "list", "c", "a", "b"),
    ("SADD", "set", "x", "y"),
    ("ZADD", "zset", 1, "m", 2.5, "n"),
    ("HSET", "hash", "f", "v", "g", "w"),
    ("PEXPIRE", "str", 100000),
]


def test_copy(diff: Differ) -> None:
    diff.check(*VALUES)
    for key in ("str", "list", "set", "zset", "hash"):
        diff.check(
            ("COPY", key, key + "2"),
            ("TYPE", key + "2"),
            ("COPY", key, key + "2"),
            ("COPY", key, key + "2", "REPLACE"),
            ("COPY", key, key, "DB", 1),
            ("SELECT", 1),
            ("TYPE", key),
            ("SELECT", 0),
        )
    diff.check(
        ("RPUSH", "list2", "more"),  # the copy is independent of its source
        ("LRANGE", "list", 0, -1),
        ("LRANGE", "list2", 0, -1),
        ("ZADD", "zset2", 9, "m"),
        ("ZRANGE", "zset", 0, -1, "WITHSCORES"),
        ("PTTL", "nokey"),
        ("COPY", "nokey", "x"),
        ("COPY", "str", "str"),
        ("COPY", "str", "x", "DB", 99),
        ("COPY", "str", "x", "DB", "a"),
        ("COPY", "str", "x", "FOO"),
        ("COPY", "str", "x", "DB"),
    )
    # The TTL moves with the copy.
    ttl = raw(diff.kv, "PTTL", "str2")
    assert isinstance(ttl, int) and 0 < ttl <= 100000


def test_move_and_swapdb(diff: Differ) -> None:
    diff.check(
        *VALUES,
        ("MOVE", "str", 1),
        ("EXISTS", "str"),
        ("SELECT", 1),
        ("GET", "str"),
        ("SET", "list", "in db1"),
        ("SELECT", 0),
        ("MOVE", "list", 1),
        ("MOVE", "nokey", 1),
        ("MOVE", "set", 0),
        ("MOVE", "set", 16),
        ("MOVE", "set", -1),
        ("MOVE", "set", "x"),
        ("SWAPDB", 0, 1),
        ("GET", "str"),
        ("GET", "list"),
        ("EXISTS", "set"),
        ("SWAPDB", 0, 0),
        ("SWAPDB", 0, 16),
        ("SWAPDB", "a", 1),
        ("SWAPDB", 0, "b"),
        ("DBSIZE",),
        ("SWAPDB", 1, 0),
        ("DBSIZE",),
    )


def test_swapdb_reaches_other_clients_and_watch(r: redis.Redis, kv_shared) -> None:  # type: ignore[no-untyped-def]
    other = kv_shared.client()
    other.set("k", "db0")
    r.execute_command("SELECT", 1)
    r.set("k", "db1")
    with other.pipeline() as p:
        p.watch("k")
        r.execute_command("SWAPDB", 0, 1)
        assert other.get("k") == b"db1"  # a connection already on db 0 sees the swapped contents
        p.multi()
        p.get("k")
        try:
            p.execute()
            raise AssertionError("SWAPDB must invalidate a WATCH on a key of a swapped database")
        except redis.WatchError:
            pass


def test_sort(diff: Differ) -> None:
    diff.check(
        ("RPUSH", "l", 3, 1, 2, 10, "1.5"),
        ("SORT", "l"),
        ("SORT", "l", "DESC"),
        ("SORT", "l", "ALPHA"),
        ("SORT", "l", "LIMIT", 1, 2),
        ("SORT", "l", "LIMIT", -5, 2),
        ("SORT", "l", "LIMIT", 10, 2),
        ("SORT", "l", "LIMIT", 0, -1),
        ("MSET", "w_3", 30, "w_1", 10, "w_2", 5, "w_10", 1),
        ("HSET", "h_3", "f", "c"),
        ("HSET", "h_1", "f", "a"),
        ("SORT", "l", "BY", "w_*"),
        ("SORT", "l", "BY", "w_*", "DESC", "GET", "#", "GET", "w_*", "GET", "h_*->f"),
        ("SORT", "l", "BY", "h_*->f", "ALPHA"),
        ("SORT", "l", "BY", "nosort"),
        ("SORT", "l", "BY", "nosort", "DESC"),
        ("SORT", "l", "GET", "nostar"),
        ("SORT", "l", "BY", "w_*", "STORE", "dst"),
        ("LRANGE", "dst", 0, -1),
        ("SORT", "l", "GET", "h_*->f", "STORE", "dst"),
        ("LRANGE", "dst", 0, -1),
        ("SORT", "nokey", "STORE", "dst"),
        ("EXISTS", "dst"),
        ("SORT_RO", "l", "STORE", "dst"),
        ("SORT_RO", "l", "DESC", "LIMIT", 0, 2),
        ("RPUSH", "words", "b", "a", "c"),
        ("SORT", "words"),
        ("SORT", "words", "ALPHA", "DESC"),
        ("SADD", "s", 5, 3, 9),
        ("SORT", "s"),
        ("SORT", "s", "BY", "nosort", "STORE", "dst"),
        ("LRANGE", "dst", 0, -1),
        ("ZADD", "z", 1, "c", 2, "a", 3, "b"),
        ("SORT", "z", "ALPHA"),
        ("SORT", "z", "BY", "nosort"),
        ("SORT", "z", "BY", "nosort", "DESC", "LIMIT", 0, 2),
        ("SET", "str", "x"),
        ("SORT", "str"),
        ("SORT", "l", "LIMIT", 1),
        ("SORT", "l", "FOO"),
        ("SORT", "l", "LIMIT", "a", 1),
    )
    diff.check(Unordered("SORT", "s", "BY", "nosort"))


def test_dump_restore_round_trip(r: redis.Redis) -> None:
    r.set("str", "hello")
    r.rpush("list", "a", "b", "a")
    r.sadd("set", "x", "y")
    r.zadd("zset", {"m": 1.5, "n": float("-inf")})
    r.hset("hash", mapping={"f": "v", "g": ""})
    for key, read in (
        ("str", r.get),
        ("list", lambda k: r.lrange(k, 0, -1)),
        ("set", r.smembers),
        ("zset", lambda k: r.zrange(k, 0, -1, withscores=True)),
        ("hash", r.hgetall),
    ):
        payload = r.dump(key)
        assert isinstance(payload, bytes)
        assert err(r, "RESTORE", key, 0, payload) == "BUSYKEY Target key name already exists."
        assert r.restore(key + "_copy", 0, payload) == b"OK"
        assert read(key + "_copy") == read(key)
        assert r.restore(key + "_copy", 5000, payload, replace=True) == b"OK"
        assert 0 < r.pttl(key + "_copy") <= 5000
        corrupt = payload[:-1] + bytes([payload[-1] ^ 1])
        assert err(r, "RESTORE", "x", 0, corrupt) == "DUMP payload version or checksum are wrong"
        assert (
            err(r, "RESTORE", "x", 0, payload[:5]) == "DUMP payload version or checksum are wrong"
        )
    assert r.dump("nokey") is None
    payload = r.dump("str")
    assert raw(r, "RESTORE", "abs", 1000, payload, "ABSTTL") == b"OK"  # a time long past
    assert r.exists("abs") == 0
    assert raw(r, "RESTORE", "idle", 0, payload, "IDLETIME", 10, "FREQ", 5) == b"OK"
    assert err(r, "RESTORE", "x", -1, payload) == "Invalid TTL value, must be >= 0"
    assert (
        err(r, "RESTORE", "x", 0, payload, "IDLETIME", -1) == "Invalid IDLETIME value, must be >= 0"
    )
    assert err(r, "RESTORE", "x", 0, payload, "FREQ", 256) == (
        "Invalid FREQ value, must be >= 0 and <= 255"
    )
    assert err(r, "RESTORE", "x", 0, payload, "FOO") == "syntax error"


def test_restore_refuses_a_redis_payload(r: redis.Redis, redis_reference) -> None:  # type: ignore[no-untyped-def]
    ref = redis.Redis(host=redis_reference.host, port=redis_reference.port)
    try:
        ref.set("k", "value")
        foreign = ref.dump("k")
    finally:
        ref.close()
    assert isinstance(foreign, bytes)
    assert err(r, "RESTORE", "k", 0, foreign) == "DUMP payload version or checksum are wrong"
    assert r.exists("k") == 0


def test_object_and_memory(diff: Differ) -> None:
    diff.check(
        ("SET", "int", 12345),
        ("SET", "neg", -7),
        ("SET", "emb", "x" * 44),
        ("SET", "raw", "x" * 45),
        ("SET", "lead0", "0123"),
        ("RPUSH", "list", "a"),
        ("SADD", "ints", 1, 2, 3),
        ("SADD", "strs", "a", 1),
        ("HSET", "h", "f", "v"),
        ("HSET", "bigh", "f", "v" * 65),
        ("ZADD", "z", 1, "a"),
        ("ZADD", "bigz", 1, "a" * 65),
        *[("OBJECT", "ENCODING", k) for k in ("int", "neg", "emb", "raw", "lead0", "list", "ints",
                                              "strs", "h", "bigh", "z", "bigz", "nokey")],
        ("OBJECT", "FREQ", "int"),
        ("OBJECT", "IDLETIME", "nokey"),
        ("OBJECT", "REFCOUNT", "int"),
        ("OBJECT", "REFCOUNT", "emb"),
        ("OBJECT", "FOO", "int"),
        ("OBJECT", "ENCODING"),
        ("OBJECT", "ENCODING", "int", "extra"),
        ("MEMORY", "FOO"),
        ("MEMORY", "USAGE"),
        ("MEMORY", "USAGE", "nokey"),
    )  # fmt: skip
    assert raw(diff.kv, "OBJECT", "IDLETIME", "int") == 0
    usage = raw(diff.kv, "MEMORY", "USAGE", "bigh")
    assert isinstance(usage, int) and usage > 65
    assert raw(diff.kv, "MEMORY", "USAGE", "bigh", "SAMPLES", 0) == usage
    assert err(diff.kv, "MEMORY", "USAGE", "bigh", "FOO", 1) == "syntax error"


def test_function_flush_and_list(diff: Differ) -> None:
    diff.check(
        ("FUNCTION", "FLUSH"),
        ("FUNCTION", "FLUSH", "SYNC"),
        ("FUNCTION", "FLUSH", "ASYNC"),
        ("FUNCTION", "LIST"),
        ("FUNCTION", "LIST", "WITHCODE"),
        ("FUNCTION", "LIST", "LIBRARYNAME", "x*"),
        ("FUNCTION", "NOPE"),
    )


def _state(server: Any) -> dict[int, dict[bytes, Any]]:
    """Every key of databases 0-2 with its type, contents and whether it has a TTL."""
    out: dict[int, dict[bytes, Any]] = {}
    for db in range(3):
        c = server.client(db=db)
        snapshot: dict[bytes, Any] = {}
        for key in c.keys("*"):
            kind = c.type(key)
            if kind == b"string":
                value: Any = c.get(key)
            elif kind == b"list":
                value = c.lrange(key, 0, -1)
            elif kind == b"set":
                value = sorted(c.smembers(key))
            elif kind == b"zset":
                value = c.zrange(key, 0, -1, withscores=True)
            else:
                value = c.hgetall(key)
            snapshot[key] = (kind, value, c.pttl(key) > 0)
        out[db] = snapshot
    return out


def test_new_writes_replay_from_the_aof(kv_factory: Any, tmp_path: Path) -> None:
    """Every new write command, logged and replayed after kill -9, rebuilds the same keyspace."""
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendfsync", "always", "--save", "")
    r = srv.client()
    r.zadd("a", {"x": 1, "y": 2.5, "z": 3})
    r.zadd("b", {"y": 10, "w": 1})
    r.zunionstore("u", ["a", "b"], aggregate="MAX")
    r.zinterstore("i", {"a": 2, "b": 1})
    r.execute_command("ZDIFFSTORE", "d", 2, "a", "b")
    r.execute_command("ZRANGESTORE", "rs", "a", 0, 1)
    r.execute_command("ZMPOP", 1, "rs", "MIN")
    r.zremrangebyscore("u", 2, 3)
    r.rpush("l", 3, 1, 2, 5, 4)
    r.execute_command("LMPOP", 1, "l", "RIGHT", "COUNT", 2)
    r.sort("l", store="sorted")
    r.set("counter", 10, px=500_000)
    r.copy("counter", "copied", destination_db=2)
    r.copy("l", "l2")
    r.move("l2", 1)
    r.execute_command("SWAPDB", 1, 2)
    r.setbit("bits", 77, 1)
    r.bitop("NOT", "notbits", "bits")
    r.execute_command("BITFIELD", "bf", "SET", "i8", 0, -3, "INCRBY", "u4", 9, 7)
    r.pfadd("hll", *[f"e{i}" for i in range(100)])
    r.pfmerge("hll2", "hll")
    r.restore("restored", 0, r.dump("a"))
    r.restore("restored_ttl", 400_000, r.dump("l"))
    r.execute_command("SPOP", "nokey")
    before = _state(srv)
    assert before[1][b"copied"][2] is True  # copied to db 2 with its TTL, then SWAPDB 1 2
    assert b"l2" in before[2]
    srv.kill()
    srv2 = kv_factory("--dir", str(data), "--appendfsync", "always", "--save", "")
    assert _state(srv2) == before
