"""Background load for `livepatch stress --workload W`: lpbench's own workloads run by extra client threads
next to the checking clients, so patches are applied and reverted under a realistic load too.

kv: GET/SET/mixed requests (lpbench.workloads) over the stress's RESP client; an error reply is a failed
request. sql: NoOp/YCSB/TPC-C/OLAP transactions (lpbench.sql.workloads, with BenchBase's retries of
serialization failures) over a blocking PostgreSQL client; a transaction that fails is a failed
request. A broken connection is a failed request too, and the thread reconnects. After the run the SQL
workload's consistency checks (e.g. TPC-C's W_YTD = sum(D_YTD)) must hold.

Concurrency: each LoadThread owns its connection and tally; `stop` is shared.
"""

from __future__ import annotations

import threading

from lpbench.recording import OK
from lpbench.sql.pg import BlockingClient, SqlError
from lpbench.sql.workloads import SQL_WORKLOAD_NAMES, run_transaction, sql_workload
from lpbench.stress.common import RequestFailed, StressConfig
from lpbench.workloads import make_workload

RECONNECT_S = 0.01
KV_KEYS = 10_000


class LoadThread(threading.Thread):
    def __init__(
        self, cfg: StressConfig, host: str, port: int, conn: int, stop: threading.Event
    ) -> None:
        super().__init__(name=f"stress-load-{conn}", daemon=True)
        self.cfg, self.host, self.port, self.conn, self.stop = cfg, host, port, conn, stop
        self.requests = 0
        self.failed = 0
        self.examples: list[str] = []

    def _fail(self, what: str) -> None:
        self.failed += 1
        if len(self.examples) < 10:
            self.examples.append(f"load connection {self.conn}: {what}")

    def run(self) -> None:
        if self.cfg.workload in SQL_WORKLOAD_NAMES:
            self._run_sql()
        else:
            self._run_kv()

    def _run_kv(self) -> None:
        from lpbench.stress.kv import KvClient

        assert self.cfg.workload is not None
        workload = make_workload(self.cfg.workload, KV_KEYS, self.cfg.seed * 1000 + self.conn)
        client: KvClient | None = None
        while not self.stop.is_set():
            try:
                if client is None:
                    client = KvClient(self.host, self.port, self.cfg.request_deadline_s)
                self.requests += 1
                client.call(*workload.next_request(self.conn))
            except RequestFailed as exc:
                self._fail(str(exc))
            except OSError as exc:
                self._fail(f"connection lost ({exc})")
                if client is not None:
                    client.close()
                client = None
                self.stop.wait(RECONNECT_S)
        if client is not None:
            client.close()

    def _run_sql(self) -> None:
        assert self.cfg.workload is not None
        spec = sql_workload(self.cfg.workload)
        workload = spec.make(
            self.cfg.scale, self.cfg.seed * 1000 + self.conn, self.cfg.load_connections
        )
        client: BlockingClient | None = None
        error = None  # the transaction's last error (the Result after it is the ROLLBACK's)
        while not self.stop.is_set():
            try:
                if client is None:
                    client = BlockingClient(self.host, self.port, self.cfg.request_deadline_s)
                self.requests += 1
                tx = run_transaction(workload.next_transaction(self.conn))
                step, error = next(tx), None
                while True:
                    result = client.run(step)
                    if result.error is not None:
                        error = result.error
                    step = tx.send(result)
            except StopIteration as done:
                if done.value != OK:
                    what = f"{error.sqlstate} {error.message}" if error is not None else "?"
                    self._fail(
                        f"a {self.cfg.workload} transaction failed: {what} (in {str(step)[:120]})"
                    )
            except (OSError, SqlError) as exc:
                self._fail(f"connection lost ({exc})")
                if client is not None:
                    client.close()
                client = None
                self.stop.wait(RECONNECT_S)
        if client is not None:
            client.close()


def consistency(cfg: StressConfig, host: str, port: int) -> list[str]:
    """The SQL workload's consistency problems after the run ([] for kv workloads or none found)."""
    if cfg.workload not in SQL_WORKLOAD_NAMES:
        return []
    with BlockingClient(host, port, cfg.request_deadline_s * 10) as c:
        return sql_workload(cfg.workload).check(c, cfg.scale)
