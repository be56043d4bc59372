"""Differential checks: the same commands against kvserver and the real redis-server, replies compared.

    def test_x(diff: Differ) -> None:           # both servers flushed, RESP2 clients
        diff.check(("ZADD", "z", 1, "a"), ("ZRANGE", "z", 0, -1, "WITHSCORES"))
        diff.check(Unordered("SMEMBERS", "s"))  # compare as sorted lists (Redis's order is unspecified)
        diff.check(Shape("SRANDMEMBER", "s", 2)) # compare only the reply's kind and length (random picks)

Replies are read raw (no redis-py callbacks): bulk strings stay bytes, errors are compared by their
text, so an error line that differs from Redis's by one word fails. `check` runs the commands in order
on both servers and reports every differing reply with its command.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
