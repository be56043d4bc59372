"""What the clients send. A Workload makes one request at a time for one driver process.

Plugging in another server's workloads (the SQL server's NoOp, YCSB, TPC-C, OLAP) means: a Workload whose
requests are what that server's driver codec encodes, registered here under a name, with `protocol`
naming the codec (today only "resp"). The driver asks a workload for the next request of a connection;
it never looks inside.

Keys follow DEBUG POPULATE's naming ("key:N" -> "value:N"), so GETs hit the populated state.

Concurrency: one Workload instance per driver process, used from that process's one thread.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol


class Workload(Protocol):
    name: str
    protocol: str  # which codec encodes its requests: "resp"

    def next_request(self, conn: int) -> list[bytes]:
        """The next request for connection `conn` (an argv for RESP)."""
        ...


class KvWorkload:
    """GET / SET / a mix over `keys` keys, uniformly chosen, values of `value_size` bytes."""

    protocol = "resp"

    def __init__(
        self, name: str, keys: int, read_ratio: float, seed: int, value_size: int = 16
    ) -> None:
        if keys < 1:
            raise ValueError("the workload needs at least one key (--keys >= 1)")
        self.name = name
        self.keys = keys
        self.read_ratio = read_ratio
        self._rng = random.Random(seed)
        self._value = b"v" * value_size

    def next_request(self, conn: int) -> list[bytes]:
        key = b"key:%d" % self._rng.randrange(self.keys)
        if self.read_ratio >= 1.0 or self._rng.random() < self.read_ratio:
            return [b"GET", key]
        return [b"SET", key, self._value]


WorkloadFactory = Callable[[int, int], Workload]  # (keys, seed) -> Workload

WORKLOADS: dict[str, WorkloadFactory] = {
    "get": lambda keys, seed: KvWorkload("get", keys, 1.0, seed),
    "set": lambda keys, seed: KvWorkload("set", keys, 0.0, seed),
    # 80/20 read/write, the common cache mix (YCSB-B is 95/5, YCSB-A 50/50).
    "mixed": lambda keys, seed: KvWorkload("mixed", keys, 0.8, seed),
}


def make_workload(name: str, keys: int, seed: int) -> Workload:
    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise ValueError(
            f"unknown workload {name!r}; known: {', '.join(sorted(WORKLOADS))}"
        ) from None
    return factory(keys, seed)
