"""Differential checks: the same commands against kvserver and the real redis-server, replies compared.

    def test_x(diff: Differ) -> None:           # both servers flushed, RESP2 clients
        diff.check(("ZADD", "z", 1, "a"), ("ZRANGE", "z", 0, -1, "WITHSCORES"))
        diff.check(Unordered("SMEMBERS", "s"))  # compare as sorted lists (Redis's order is unspecified)
        diff.check(Shape("SRANDMEMBER", "s", 2)) # compare only the reply's kind and length (random picks)

Scenarios with several connections per server (a parked client, a second client inside another's
MULTI) use `compare(kv_shared, redis_reference, scenario)`: the scenario gets `connect()` for raw
connections (`Conn`: send now, read later) and returns what it observed; both runs must agree.

Replies are read raw (no redis-py callbacks): bulk strings stay bytes, errors are compared by their
text, so an error line that differs from Redis's by one word fails. `check` runs the commands in order
on both servers and reports every differing reply with its command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis


@dataclass(frozen=True)
class Unordered:
    """A command whose reply (an array, or an array of arrays) is compared as a sorted list."""

    args: tuple[Any, ...]

    def __init__(self, *args: Any) -> None:
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class Shape:
    """A command with a random reply: only its type and length are compared."""

    args: tuple[Any, ...]

    def __init__(self, *args: Any) -> None:
        object.__setattr__(self, "args", args)


Step = Sequence[Any] | Unordered | Shape


def run_raw(client: redis.Redis, args: Sequence[Any]) -> Any:
    """One reply as the protocol carried it; an error comes back as ("error", text)."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command(*args)
        try:
            return conn.read_response()
        except redis.ResponseError as exc:
            return ("error", str(exc))
    finally:
        client.connection_pool.release(conn)


def _sort_key(x: Any) -> Any:
    return repr(x)


def _normalise(step: Step, reply: Any) -> Any:
    if isinstance(step, Unordered) and isinstance(reply, list | set):
        return sorted(reply, key=_sort_key)
    if isinstance(step, Shape):
        return (type(reply).__name__, len(reply) if isinstance(reply, list | set | bytes) else None)
    return reply


class Differ:
    """A pair of clients (kvserver, redis-server) on the same protocol."""

    def __init__(self, kv: redis.Redis, ref: redis.Redis) -> None:
        self.kv, self.ref = kv, ref

    def check(self, *steps: Step) -> list[Any]:
        """Run every step on both servers; assert equal replies; return kvserver's replies."""
        differences = []
        replies = []
        for step in steps:
            args = step.args if isinstance(step, Unordered | Shape) else tuple(step)
            mine = _normalise(step, run_raw(self.kv, args))
            theirs = _normalise(step, run_raw(self.ref, args))
            replies.append(mine)
            if mine != theirs:
                differences.append(
                    f"{' '.join(map(str, args))}\n  kvserver: {mine!r}\n  redis:    {theirs!r}"
                )
        assert not differences, "replies differ from redis-server:\n" + "\n".join(differences)
        return replies

    def check_all(self, steps: Iterable[Step]) -> list[Any]:
        return self.check(*steps)


class Conn:
    """One raw connection: send without reading (the client may be parked), read later."""

    def __init__(self, host: str, port: int, protocol: int = 2) -> None:
        self.c = redis.Connection(host=host, port=port, protocol=protocol, socket_timeout=10)
        self.c.connect()

    def send(self, *args: Any) -> None:
        self.c.send_command(*args)

    def read(self) -> Any:
        try:
            return self.c.read_response()
        except redis.ResponseError as exc:
            return ("error", str(exc))

    def read_push(self) -> Any:
        """The next frame, a RESP3 push included (pub/sub messages and confirmations)."""
        return self.c.read_response(push_request=True)

    def __call__(self, *args: Any) -> Any:
        self.send(*args)
        return self.read()

    def close(self) -> None:
        self.c.disconnect()


def wait_blocked(ctl: Conn, count: int) -> None:
    """Until INFO says `count` clients are blocked (a condition, bounded at 10 s)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        info = ctl("INFO", "clients")
        text = info.decode() if isinstance(info, bytes) else str(info)
        if f"blocked_clients:{count}\r" in text:
            return
        time.sleep(0.002)
    raise AssertionError(f"never saw {count} blocked clients: {text}")


Scenario = Callable[[Callable[..., Conn]], list[Any]]


def compare(kv_shared: Any, redis_reference: Any, scenario: Scenario) -> list[Any]:
    """Run `scenario` on both servers (each flushed first); assert the same observations."""
    results = []
    for host, port in (
        (kv_shared.host, kv_shared.port),
        (redis_reference.host, redis_reference.port),
    ):
        opened: list[Conn] = []

        def connect(
            protocol: int = 2, host: str = host, port: int = port, opened: list[Conn] = opened
        ) -> Conn:
            conn = Conn(host, port, protocol)
            opened.append(conn)
            return conn

        connect()("FLUSHALL")
        try:
            results.append(scenario(connect))
        finally:
            for conn in opened:
                conn.close()
    mine, theirs = results
    assert mine == theirs, f"kvserver: {mine!r}\nredis:    {theirs!r}"
    return mine
