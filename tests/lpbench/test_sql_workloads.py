"""The SQL workloads' transaction logic through lpbench's PostgreSQL driver (the shared codec), against a
real sqlserver process and, where installed, the real PostgreSQL 15 (the postgres_port fixture of
conftest.py): for a short closed-loop run every
transaction must succeed (serialization failures are retried, as BenchBase does) and the workload's
consistency checks must hold afterwards (TPC-C: W_YTD = sum(D_YTD), order ids, new orders, order lines).
Running the same driver against PostgreSQL is what shows the drivers themselves are right."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lpbench.driver import LoadSpec, make_driver
from lpbench.recording import OK
from lpbench.servers import SqlServer
from lpbench.sql.pg import BlockingClient
from lpbench.sql.workloads import sql_workload
from tests.conftest import free_port

pytest.importorskip("sqlglot")

SCALES = {
    "noop": 1.0,
    "ycsb": 1.0,
    "tpcc": 0.05,
    "olap": 0.05,
}  # tpcc 0.05: one warehouse, 5,000 items, 150 customers
RUN_S = {
    "olap": 3.0
}  # seconds of load; 1 s for the others (OLAP's slowest queries take ~0.5 s alone)


def drive(port: int, workload: str, connections: int = 4, seed: int = 7) -> Any:
    spec = LoadSpec(
        "127.0.0.1", port, connections, workload, keys=0, seed=seed, scale=SCALES[workload]
    )
    driver = make_driver(spec)
    driver.connect()
    try:
        t0 = time.monotonic_ns() + 10_000_000
        return driver.run(t0, t0 + int(RUN_S.get(workload, 1.0) * 1e9))
    finally:
        driver.close()


def run_and_check(port: int, workload: str) -> None:
    spec = sql_workload(workload)
    with BlockingClient("127.0.0.1", port) as c:
        spec.load(c, SCALES[workload], 1)
        assert spec.check(c, SCALES[workload]) == []  # the freshly loaded data is consistent
    rec = drive(port, workload)
    # No count per second: the machine may be at load 30. Every connection finished transactions, and
    # every transaction succeeded.
    assert np.all(rec.status == OK), (
        f"{workload}: {int(np.sum(rec.status != OK))} failed of {len(rec)}"
    )
    assert len(set(rec.conn.tolist())) == 4  # every connection did work
    with BlockingClient("127.0.0.1", port) as c:
        assert spec.check(c, SCALES[workload]) == []
        if workload == "tpcc":  # the run did change the data the checks look at
            orders = c.execute("SELECT count(*) FROM oorder").scalar()
            assert int(orders or 0) > 10 * 150


@pytest.fixture(scope="module")
def sqlserver_port() -> Iterator[int]:
    work = Path(tempfile.mkdtemp(prefix="lpsw-"))
    server = SqlServer(free_port(), work)
    try:
        server.start()
        yield server.port
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workload", ["noop", "ycsb", "tpcc", "olap"])
def test_workload_on_sqlserver(sqlserver_port: int, workload: str) -> None:
    run_and_check(sqlserver_port, workload)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workload", ["noop", "ycsb", "tpcc", "olap"])
def test_workload_on_postgres(postgres_port: int, workload: str) -> None:
    run_and_check(postgres_port, workload)
