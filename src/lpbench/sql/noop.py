"""NoOp (BenchBase's noop benchmark): every transaction is the empty statement ";" -- the cost of a
round trip through the server's protocol and dispatch, with no data. No schema, nothing to check."""

from __future__ import annotations

from lpbench.sql.pg import BlockingClient
from lpbench.sql.workloads import SqlWorkloadSpec, Tx, TxFactory


def _noop() -> Tx:
    yield ";"


class NoOp:
    name = "noop"
    protocol = "pg"

    def __init__(self, scale: float, seed: int, connections: int) -> None:
        pass

    def next_transaction(self, conn: int) -> TxFactory:
        return _noop


def load(client: BlockingClient, scale: float, seed: int) -> None:
    pass


def check(client: BlockingClient, scale: float) -> list[str]:
    return []


SPEC = SqlWorkloadSpec(NoOp, load, check, "an empty statement per transaction")
