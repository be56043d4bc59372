"""Keyspace commands over a real server: DEL/EXISTS/TYPE/RENAME/KEYS/SCAN/DBSIZE/RANDOMKEY."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import redis

from tests.conftest import require_tool
from tests.kvserver.resp_helpers import err, raw


def test_del_unlink_exists(r: redis.Redis) -> None:
    r.mset({"a": "1", "b": "2", "c": "3"})
    assert r.exists("a", "a", "nope", "b") == 3  # repeats count
    assert r.delete("a", "nope") == 1
    assert r.unlink("b", "c", "b") == 2
    assert r.exists("a", "b", "c") == 0
    assert err(r, "DEL") == "wrong number of arguments for 'del' command"


def test_type(r: redis.Redis) -> None:
    r.set("s", "v")
    r.rpush("l", "v")
    r.hset("h", "f", "v")
    r.sadd("st", "v")
    r.zadd("z", {"v": 1})
    kinds = [raw(r, "TYPE", k) for k in ("s", "l", "h", "st", "z", "nope")]
    assert kinds == [b"string", b"list", b"hash", b"set", b"zset", b"none"]


def test_rename_and_renamenx(r: redis.Redis) -> None:
    r.set("a", "1", ex=100)
    assert r.rename("a", "b") is True
    assert r.get("b") == b"1" and r.exists("a") == 0
    assert 0 < r.ttl("b") <= 100  # the TTL moves with the value
    r.rpush("l", "x")
    r.rename("b", "l")  # RENAME overwrites any type
    assert r.get("l") == b"1"
    assert err(r, "RENAME", "nope", "x") == "no such key"
    assert err(r, "RENAMENX", "nope", "x") == "no such key"
    assert r.rename("l", "l") is True  # same key: OK when it exists
    r.set("c", "3")
    assert r.renamenx("l", "c") is False
    assert r.renamenx("l", "d") is True
    assert r.mget("c", "d", "l") == [b"3", b"1", None]
    assert r.renamenx("d", "d") is False


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*", {"hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "a[b"}),
        ("h?llo", {"hello", "hallo", "hxllo", "h*llo"}),
        ("h*llo", {"hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo"}),
        ("h[ae]llo", {"hello", "hallo"}),
        ("h[^e]llo", {"hallo", "hxllo", "h*llo"}),
        ("h[a-b]llo", {"hallo"}),
        ("h[b-a]llo", {"hallo"}),
        ("h\\*llo", {"h*llo"}),
        ("a\\[b", {"a[b"}),
        ("nothing*", set()),
    ],
)
def test_keys_glob(r: redis.Redis, pattern: str, expected: set[str]) -> None:
    for k in ("hello", "hallo", "hxllo", "hllo", "heeeello", "h*llo", "a[b"):
        r.set(k, "v")
    assert {k.decode() for k in r.keys(pattern)} == expected


def test_scan_walks_everything_with_match_count_and_type(r: redis.Redis) -> None:
    for i in range(120):
        r.set(f"s:{i}", "v")
    for i in range(30):
        r.rpush(f"l:{i}", "v")
    seen: list[bytes] = []
    cursor = 0
    calls = 0
    while True:
        cursor, keys = r.scan(cursor, count=17)
        seen += keys
        calls += 1
        if cursor == 0:
            break
    assert calls > 1  # COUNT bounds the work per call
    assert set(seen) == {f"s:{i}".encode() for i in range(120)} | {
        f"l:{i}".encode() for i in range(30)
    }
    assert set(r.scan_iter(match="l:1*", count=50)) == {
        f"l:{i}".encode() for i in range(30) if str(i).startswith("1")
    }
    assert len(set(r.scan_iter(_type="list", count=1000))) == 30
    assert err(r, "SCAN", "notanumber") == "invalid cursor"
    assert err(r, "SCAN", "0", "COUNT", "0") == "syntax error"
    assert err(r, "SCAN", "0", "COUNT") == "syntax error"
    assert err(r, "SCAN", "0", "FOO", "1") == "syntax error"


def test_scan_returns_keys_that_survive_concurrent_changes(r: redis.Redis) -> None:
    """Every key present for the whole scan is returned, while other keys come and go between calls."""
    stable = {f"stable:{i}".encode() for i in range(200)}
    for k in stable:
        r.set(k, "v")
    seen: set[bytes] = set()
    cursor = 0
    churn = 0
    while True:
        cursor, keys = r.scan(cursor, count=10)
        seen.update(keys)
        for _ in range(5):  # adds and deletes between calls
            r.set(f"churn:{churn}", "v")
            r.delete(f"churn:{churn - 3}")
            churn += 1
        if cursor == 0:
            break
    assert stable <= seen


def test_dbsize_and_randomkey(r: redis.Redis) -> None:
    assert r.dbsize() == 0
    assert r.randomkey() is None
    r.mset({f"k{i}": "v" for i in range(10)})
    assert r.dbsize() == 10
    drawn = {r.randomkey() for _ in range(60)}
    assert drawn <= {f"k{i}".encode() for i in range(10)}
    assert len(drawn) > 1


def test_commands_on_wrong_types_leave_data_intact(r: redis.Redis) -> None:
    r.set("s", "v")
    for args in (
        ("LPUSH", "s", "x"),
        ("HSET", "s", "f", "v"),
        ("SADD", "s", "m"),
        ("ZADD", "s", "1", "m"),
    ):
        assert err(r, *args).startswith("WRONGTYPE")
    assert r.get("s") == b"v"


def test_redis_cli_drives_the_data_commands(kv_shared: Any) -> None:
    """The real redis-cli, fed a script on stdin, gets Redis-shaped replies for every type."""
    cli = require_tool("redis-cli")
    kv_shared.client().flushall()
    script = "\n".join(
        [
            "SET a 1",
            "INCRBY a 41",
            "RPUSH l x y",
            "LRANGE l 0 -1",
            "HSET h f v",
            "HGET h f",
            "SADD s m",
            "SCARD s",
            "ZADD z 1.5 m",
            "ZSCORE z m",
            "TYPE z",
            "DBSIZE",
            "LPUSH a x",
        ]
    )
    done = subprocess.run(
        [cli, "-h", kv_shared.host, "-p", str(kv_shared.port)],
        input=script + "\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.stdout.splitlines() == [
        "OK",
        "42",
        "2",
        "x",
        "y",
        "1",
        "v",
        "1",
        "1",
        "1",
        "1.5",
        "zset",
        "5",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "",  # redis-cli prints an error followed by an empty line (as with redis-server)
    ]
