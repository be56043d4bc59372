"""CLIENT KILL filters, CLIENT NO-EVICT argument checks and EXEC with arguments, against redis-server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.kvserver.redis_diff import Conn, compare

pytestmark = pytest.mark.timeout(60)


def _alive(conn: Conn) -> bool:
    try:
        return conn("PING") == b"PONG"
    except (redis.ConnectionError, OSError):
        return False


def _field(info: bytes, name: str) -> str:
    return dict(kv.split("=", 1) for kv in info.decode().split())[name]


def test_client_kill_filters_all_must_match(kv_shared: Any, redis_reference: Any) -> None:
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        ctl, a, b, c = connect(), connect(), connect(), connect()
        a_info, c_info = a("CLIENT", "INFO"), c("CLIENT", "INFO")
        a_addr, c_id = _field(a_info, "addr"), _field(c_info, "id")
        c_laddr = _field(c_info, "laddr")
        out = [ctl("CLIENT", "KILL", "ADDR", a_addr, "TYPE", "pubsub")]  # both must match: none
        out += [ctl("CLIENT", "KILL", "ADDR", a_addr, "USER", "default"), _alive(a), _alive(b)]
        out += [ctl("CLIENT", "KILL", "ID", c_id, "LADDR", "1.2.3.4:5"), _alive(c)]
        out += [ctl("CLIENT", "KILL", "LADDR", c_laddr, "SKIPME", "yes"), _alive(c), _alive(ctl)]
        out += [ctl("CLIENT", "KILL", "TYPE", "normal"), _alive(b), _alive(ctl)]
        out += [ctl("CLIENT", "KILL", a_addr)]  # old form, gone already
        return out

    assert compare(kv_shared, redis_reference, scenario)[:4] == [0, 1, False, True]


@pytest.mark.parametrize(
    "args",
    [
        ("TYPE", "foo"),
        ("USER", "nobody"),
        ("SKIPME", "maybe"),
        ("ID", "abc"),
        ("ID", "0"),
        ("ID", "1", "ID"),
        ("MAXAGE", "100"),
        ("1.2.3.4:5",),
        ("TYPE", "master"),
        ("USER", "default", "TYPE", "replica"),
    ],
)
def test_client_kill_errors_and_empty_matches(diff: Any, args: tuple[str, ...]) -> None:
    diff.check(("CLIENT", "KILL", *args))


def test_client_no_evict_checks_its_argument(diff: Any) -> None:
    diff.check(
        ("CLIENT", "NO-EVICT", "maybe"), ("CLIENT", "NO-EVICT", "on"), ("CLIENT", "NO-EVICT", "OFF")
    )


def test_exec_with_arguments_aborts_the_transaction(diff: Any) -> None:
    diff.check(
        ("WATCH", "w"),
        ("MULTI",),
        ("SET", "a", "1"),
        ("EXEC", "now"),
        ("EXEC",),
        ("GET", "a"),
        ("EXEC", "outside"),
        ("MULTI",),
        ("EXEC",),
    )


def test_client_reply_off_skip_on(kv_shared: Any, redis_reference: Any) -> None:
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        a = connect()
        # Pipelined, then read: only the replies the server sends can be read back, in order.
        for cmd in [
            ("CLIENT", "REPLY", "SKIP"),
            ("SET", "a", "1"),  # skipped
            ("GET", "a"),  # answered
            ("CLIENT", "REPLY", "OFF"),
            ("INCR", "a"),
            ("GET", "a"),
            ("CLIENT", "REPLY", "SKIP"),  # no effect while OFF
            ("CLIENT", "REPLY", "ON"),  # answered
            ("GET", "a"),
            ("CLIENT", "REPLY", "OFF"),
            ("RESET",),  # back to ON, answered
            ("CLIENT", "REPLY", "MAYBE"),
            ("ECHO", "last"),
        ]:
            a.send(*cmd)
        return [a.read() for _ in range(6)]

    assert compare(kv_shared, redis_reference, scenario)[-1] == b"last"
