"""lpbench's load driver for the PostgreSQL wire protocol: the same loop as lpbench.driver.Driver (one
process, one selector, nonblocking connections, closed or open loop, reconnects, no coordinated
omission), but a *request* is a whole transaction of several round trips.

Theory of operation
- Each connection holds a `run_transaction` generator (workloads.py): it yields the next step (a Query,
  or Parse/Bind/Execute/Sync of a prepared statement), the driver sends it, feeds the server's bytes to
  the connection's Conversation (the shared sans-IO codec) and, at ReadyForQuery, sends the Result back
  into the generator, which yields the next step or returns the transaction's status. The transaction is
  recorded then: start (send time, or the scheduled time in open loop), latency to its last
  ReadyForQuery, connection, status (OK / ERROR_REPLY / CONNECTION_LOST).
- Connecting is blocking (TCP connect and the startup exchange, bounded by CONNECT_TIMEOUT_S), done
  before the clock starts and on reconnects; everything after that is nonblocking.
- A transaction interrupted by a broken connection is recorded as lost; its generator is dropped.

Concurrency: a PgDriver is used by one thread (its process's main thread).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Generator

from lpbench.driver import CONNECT_TIMEOUT_S, RECV_SIZE, Driver, LoadSpec, _Conn
from lpbench.recording import Recorder
from lpbench.sql.pg import Conversation, Result, SqlError, Step
from lpbench.sql.workloads import run_transaction, sql_workload
from sqlserver.protocol import ProtocolViolation


class _PgConn(_Conn):
    __slots__ = ("conv", "tx")

    def __init__(self, cid: int) -> None:
        super().__init__(cid)
        self.conv = Conversation()
        self.tx: Generator[Step, Result, int] | None = None


class PgDriver(Driver):
    def __init__(self, spec: LoadSpec) -> None:  # not super().__init__: it builds a RESP workload
        if spec.connections < 1:
            raise ValueError("a driver needs at least one connection")
        if spec.rate is not None and spec.rate <= 0:
            raise ValueError("--rate must be positive")
        self.spec = spec
        total = spec.total_connections or spec.connections
        self.sql = sql_workload(spec.workload).make(spec.scale, spec.seed, total)
        self.sel = selectors.DefaultSelector()
        self.conns: list[_Conn] = [_PgConn(spec.conn_offset + i) for i in range(spec.connections)]
        self.rec = Recorder()
        self.unfinished = 0

    def _open(self, c: _Conn) -> None:
        sock = socket.create_connection((self.spec.host, self.spec.port), timeout=CONNECT_TIMEOUT_S)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conv = Conversation()
            sock.sendall(conv.startup())
            done: list[Result] = []
            while not done:
                data = sock.recv(RECV_SIZE)
                if not data:
                    raise ConnectionResetError("the server closed the connection during startup")
                done = conv.feed(data)
            done[0].raise_for_error("startup")
        except (
            SqlError,
            ProtocolViolation,
        ) as exc:  # e.g. the server is still starting: retry later
            sock.close()
            raise ConnectionRefusedError(str(exc)) from exc
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        assert isinstance(c, _PgConn)
        c.sock, c.conv, c.out, c.tx = sock, conv, b"", None
        self.sel.register(sock, selectors.EVENT_READ, c)

    def _send(self, c: _Conn, start_ns: int) -> None:
        """Begin the connection's next transaction."""
        assert isinstance(c, _PgConn)
        c.tx = run_transaction(self.sql.next_transaction(c.id))
        c.in_flight = start_ns
        self._write(c, c.conv.request(next(c.tx)))

    def _receive(self, c: _Conn, t_end: int) -> None:
        assert c.sock is not None and isinstance(c, _PgConn)
        try:
            data = c.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        now = time.monotonic_ns()
        if not data:
            self._lost(c, now)
            return
        try:
            results = c.conv.feed(data)
        except ProtocolViolation:
            self._lost(c, now)
            return
        for result in results:  # one per step sent; a step is sent only after the previous result
            if c.tx is None:
                continue
            try:
                step = c.tx.send(result)
            except StopIteration as done:
                self.rec.request(c.in_flight, now, c.id, int(done.value))
                c.in_flight, c.tx = -1, None
                if self.spec.rate is None and now < t_end:
                    self._send(c, now)
                continue
            self._write(c, c.conv.request(step))

    def _lost(self, c: _Conn, now: int) -> None:
        assert isinstance(c, _PgConn)
        c.tx = None
        super()._lost(c, now)
