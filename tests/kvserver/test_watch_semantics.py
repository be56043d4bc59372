"""WATCH as Redis 7.0 defines it (multi.c), against redis-server: which events invalidate a WATCH.

Flushes touch only watched keys that exist, a key that expires after WATCH counts as changed, a SMOVE
whose member is already in the destination changes (and touches) only the source. INFO's sections
that tools and Redis's own suite read are checked too (plain: their values are not comparable).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.kvserver.redis_diff import Conn, compare

pytestmark = pytest.mark.timeout(60)


def _watch_then(setup: list[tuple[Any, ...]], between: list[tuple[Any, ...]]) -> Any:
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        a = connect()
        out = [a(*cmd) for cmd in setup]
        out.append(a("WATCH", "x", "y"))
        out += [a(*cmd) for cmd in between]
        out += [a("MULTI"), a("PING"), a("EXEC")]
        return out

    return scenario


@pytest.mark.parametrize(
    ("setup", "between", "exec_reply"),
    [
        ([("DEL", "x")], [("FLUSHALL",)], [b"PONG"]),
        ([("DEL", "x")], [("FLUSHDB",)], [b"PONG"]),
        ([("SET", "x", "1")], [("FLUSHALL",)], None),
        ([("SET", "y", "1")], [("FLUSHDB",)], None),
        ([("SELECT", "1"), ("SET", "x", "1")], [("SELECT", "0"), ("FLUSHDB",), ("SELECT", "1")], [b"PONG"]),
        ([("SET", "x", "1")], [("UNWATCH",), ("WATCH", "z"), ("DEL", "x")], [b"PONG"]),
    ],
)  # fmt: skip
def test_flushes_touch_only_existing_watched_keys(
    kv_shared: Any, redis_reference: Any, setup: Any, between: Any, exec_reply: Any
) -> None:
    out = compare(kv_shared, redis_reference, _watch_then(setup, between))
    assert out[-1] == exec_reply


def test_a_watched_key_that_expires_fails_exec_and_a_new_watch_starts_clean(
    kv_shared: Any, redis_reference: Any
) -> None:
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        a = connect()
        out = [a("SET", "x", "v", "PX", "30"), a("WATCH", "x")]
        deadline = time.monotonic() + 10
        while a("DBSIZE") != 0:  # active expiry removes it (no command touches it)
            assert time.monotonic() < deadline, "the key never expired"
            time.sleep(0.01)
        out += [a("MULTI"), a("PING"), a("EXEC")]
        # The next WATCH session on the same (now missing) key is not failed by the old one.
        out += [a("WATCH", "x"), a("MULTI"), a("PING"), a("EXEC")]
        return out

    out = compare(kv_shared, redis_reference, scenario)
    assert out[4] is None and out[-1] == [b"PONG"]


def test_smove_of_a_member_already_in_the_destination_touches_only_the_source(
    kv_shared: Any, redis_reference: Any
) -> None:
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        a, b = connect(), connect()
        out = [a("SADD", "src", "m", "n"), a("SADD", "dst", "m"), a("WATCH", "dst")]
        out += [a("MULTI"), a("SADD", "dst", "c"), b("SMOVE", "src", "dst", "m"), a("EXEC")]
        out += [a("SMEMBERS", "src"), a("SCARD", "dst"), a("WATCH", "src")]
        out += [b("SADD", "dst", "n"), b("SMOVE", "src", "dst", "n"), a("MULTI"), a("EXEC")]
        return out

    out = compare(kv_shared, redis_reference, scenario)
    assert out[6] == [1] and out[-1] is None


def test_info_sections_the_suite_reads(kv_shared: Any) -> None:
    r = Conn(kv_shared.host, kv_shared.port)
    r("CONFIG", "RESETSTAT")
    r("SET", "k", "v")
    assert r("GET", "k", "extra")[1].startswith("wrong number of arguments")  # rejected
    assert r("LPUSH", "k", "x")[1].startswith("WRONGTYPE")  # failed in its handler

    def info(*sections: str) -> str:
        text = r("INFO", *sections)
        assert isinstance(text, bytes)
        return text.decode()

    default, everything, cpu, stats = info(), info("everything"), info("cpu"), info("commandSTATS")
    assert "used_cpu_user" in cpu and "used_memory" not in cpu
    assert "used_cpu_user" in default and "rejected_calls" not in default
    assert "master_repl_offset" in default and "rejected_calls" in everything
    assert "cmdstat_get:calls=0,rejected_calls=1,failed_calls=0" in stats
    assert "cmdstat_lpush:calls=1,rejected_calls=0,failed_calls=1" in stats
    assert "used_memory" not in stats and "sentinel" not in everything
    assert info("cpu", "default").count("used_cpu_user_children") == 1
    r("CONFIG", "RESETSTAT")
    assert "cmdstat_get" not in info("commandstats")
    r.close()
