"""SQL workloads: what a transaction is, how a failed one is retried, and the registry.

A transaction is a generator: it yields one step per round trip (pg.Step: a plain SQL string, or a
prepared statement with its parameters) and receives that step's Result (pg.Result); it ends with COMMIT (or ROLLBACK, e.g. TPC-C's 1 % of NewOrders with an unknown
item, which BenchBase counts as a successful user abort). `run_transaction` wraps it the way BenchBase's
worker does: an error with SQLSTATE 40001/40P01 (a serialization failure or deadlock: with SQLite's one
writer, a transaction that read first and then writes after another writer committed) rolls back and
runs the same transaction again (BenchBase retries such aborts too), up to MAX_RETRIES times, its latency counting from the first attempt;
any other error rolls back and the transaction counts as failed.

A SqlWorkload picks the next transaction of a connection (its type by the mix's weights, its
parameters by the benchmark's rules) and returns a factory, so a retry runs the same one. `load` creates
and fills the schema through a BlockingClient (COPY), `check` returns the consistency problems found
after a run (empty: consistent).

Concurrency: one SqlWorkload per driver process, used by that process's one thread.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Protocol

from lpbench.recording import ERROR_REPLY, OK
from lpbench.sql.pg import RETRYABLE, BlockingClient, Result, Step

MAX_RETRIES = 200
Tx = Generator[Step, Result, None]
TxFactory = Callable[[], Tx]


def run_transaction(factory: TxFactory) -> Generator[Step, Result, int]:
    """Yields steps, receives Results; returns the recording status (OK or ERROR_REPLY)."""
    for _attempt in range(MAX_RETRIES + 1):
        gen = factory()
        try:
            sql = next(gen)
            while True:
                result = yield sql
                if result.error is not None:
                    break
                sql = gen.send(result)
        except StopIteration:
            return OK
        gen.close()
        if result.status != "I":
            yield "ROLLBACK"
        if result.error.sqlstate not in RETRYABLE:
            return ERROR_REPLY
    return ERROR_REPLY


class SqlWorkload(Protocol):
    name: str
    protocol: str  # "pg"

    def next_transaction(self, conn: int) -> TxFactory: ...


@dataclass(frozen=True)
class SqlWorkloadSpec:
    """make(scale, seed, connections) -> SqlWorkload; load(client, scale, seed); check(client, scale)."""

    make: Callable[[float, int, int], SqlWorkload]
    load: Callable[[BlockingClient, float, int], None]
    check: Callable[[BlockingClient, float], list[str]]
    describe: str


def weighted(rng: random.Random, names: list[str], weights: list[int]) -> Callable[[], str]:
    """A picker by integer weights (BenchBase's <weights>)."""
    cum, total = [], 0
    for w in weights:
        total += w
        cum.append(total)

    def pick() -> str:
        x = rng.randrange(total)
        for name, c in zip(names, cum, strict=True):
            if x < c:
                return name
        return names[-1]

    return pick


def _registry() -> dict[str, SqlWorkloadSpec]:
    from lpbench.sql import noop, olap, tpcc, ycsb

    return {"noop": noop.SPEC, "ycsb": ycsb.SPEC, "tpcc": tpcc.SPEC, "olap": olap.SPEC}


SQL_WORKLOAD_NAMES = ("noop", "olap", "tpcc", "ycsb")


def sql_workload(name: str) -> SqlWorkloadSpec:
    try:
        return _registry()[name]
    except KeyError:
        raise ValueError(
            f"unknown SQL workload {name!r}; known: {', '.join(SQL_WORKLOAD_NAMES)}"
        ) from None
