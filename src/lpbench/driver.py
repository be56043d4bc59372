"""One load-driver process: many nonblocking connections on one selector, one request in flight each.

Theory of operation
- Pipelining is off: a connection sends its next request only after the previous reply, as most real
  clients do, so a server pause shows as latency rather than as a deeper queue.
- Closed loop (rate None): a connection sends its next request as soon as its reply arrives; start time
  is the send time.
- Open loop (rate R for this process): connection i of N is scheduled every N/R seconds, phase-shifted by
  i/R_total (i numbered across all driver processes, R_total the pool's rate) so all requests are evenly
  spread. A request's start is its *scheduled* time; if the
  connection is still waiting for an earlier reply, the request waits, and that wait counts in its latency
  (no coordinated omission). Requests scheduled at or after t_end are not sent.
- A broken connection (EOF, reset) records its in-flight request as lost, then reconnects every
  RECONNECT_INTERVAL_S until the server is back (a restart) or the run ends; each break with its repair
  time is recorded (-1: not repaired before the end). Open loop: requests scheduled before t_end are
  all sent, also after t_end. Whatever is still unanswered or unsent DRAIN_S after t_end is dropped and
  counted as `unfinished`.
- The end can be brought forward during the run (`control`: the pool's pipe, which the selector watches
  beside the connections; each message is a new t_end, taken if earlier): a run whose question is
  answered (figure 6's first aborted patch) stops its load at once instead of running out its time.

Concurrency: a Driver is used by one thread (its process's main thread). Nothing here is shared.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

from lpbench.codec import ReplyParser, encode_command, is_error
from lpbench.recording import CONNECTION_LOST, ERROR_REPLY, OK, Recorder, Recording
from lpbench.workloads import make_workload

RECONNECT_INTERVAL_S = 0.01
# A bound on one connect + startup exchange: at load 35 a PostgreSQL startup took over 1 s (figure 3 died).
CONNECT_TIMEOUT_S = 5.0
DRAIN_S = 3.0
RECV_SIZE = 65536


@dataclass(frozen=True)
class LoadSpec:
    """What one driver process does. Picklable: it crosses to the worker process."""

    host: str
    port: int
    connections: int
    workload: str
    keys: int
    rate: float | None = None  # requests/s for this process; None: closed loop
    seed: int = 0
    conn_offset: int = 0  # connection numbers are conn_offset .. conn_offset+connections-1
    total_connections: int = 0  # over all processes of the pool (0: just these)
    scale: float = 1.0  # SQL workloads: YCSB records / 1000, TPC-C warehouses (lpbench.sql)


class _Conn:
    __slots__ = ("down_since", "id", "in_flight", "next_due", "out", "reader", "retry_at", "sock")

    def __init__(self, cid: int) -> None:
        self.id = cid
        self.sock: socket.socket | None = None
        self.reader = ReplyParser()
        self.in_flight = -1  # start_ns of the request awaiting its reply, -1 when idle
        self.next_due = 0  # open loop: scheduled start of the next request
        self.out = b""  # bytes the kernel did not take yet
        self.down_since = -1
        self.retry_at = 0


class Driver:
    def __init__(self, spec: LoadSpec) -> None:
        if spec.connections < 1:
            raise ValueError("a driver needs at least one connection")
        if spec.rate is not None and spec.rate <= 0:
            raise ValueError("--rate must be positive")
        self.spec = spec
        self.workload = make_workload(spec.workload, spec.keys, spec.seed)
        if self.workload.protocol != "resp":  # the one codec this driver speaks (lpbench.codec)
            raise ValueError(
                f"workload {spec.workload!r} speaks {self.workload.protocol!r}; this driver speaks resp"
            )
        self.sel = selectors.DefaultSelector()
        self.conns = [_Conn(spec.conn_offset + i) for i in range(spec.connections)]
        self.rec = Recorder()
        self.unfinished = 0

    # -- connections -------------------------------------------------------------------------
    def _open(self, c: _Conn) -> None:
        sock = socket.create_connection((self.spec.host, self.spec.port), timeout=CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        c.sock, c.reader, c.out = sock, ReplyParser(), b""
        self.sel.register(sock, selectors.EVENT_READ, c)

    def connect(self) -> None:
        """Open every connection (before the clock starts). Raises OSError if the server is not there."""
        for c in self.conns:
            self._open(c)

    def close(self) -> None:
        for c in self.conns:
            if c.sock is not None:
                self.sel.unregister(c.sock)
                c.sock.close()
                c.sock = None
        self.sel.close()

    def _lost(self, c: _Conn, now: int) -> None:
        if c.in_flight >= 0:
            self.rec.request(c.in_flight, now, c.id, CONNECTION_LOST)
            c.in_flight = -1
        if c.sock is not None:
            self.sel.unregister(c.sock)
            c.sock.close()
            c.sock = None
        c.down_since, c.retry_at = now, now

    def _try_reconnect(self, c: _Conn, now: int) -> None:
        try:
            self._open(c)
        except OSError:
            c.retry_at = now + int(RECONNECT_INTERVAL_S * 1e9)
            return
        self.rec.reconnect(c.id, c.down_since, time.monotonic_ns())
        c.down_since = -1

    # -- requests ----------------------------------------------------------------------------
    def _send(self, c: _Conn, start_ns: int) -> None:
        data = encode_command(*self.workload.next_request(c.id))
        c.in_flight = start_ns
        self._write(c, data)

    def _write(self, c: _Conn, data: bytes) -> None:
        """Send what the socket takes now; the rest waits for writability (_flush)."""
        assert c.sock is not None
        try:
            sent = c.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._lost(c, time.monotonic_ns())
            return
        if sent < len(data):
            c.out = data[sent:]
            self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def _flush(self, c: _Conn) -> None:
        assert c.sock is not None
        try:
            sent = c.sock.send(c.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._lost(c, time.monotonic_ns())
            return
        c.out = c.out[sent:]
        if not c.out:
            self.sel.modify(c.sock, selectors.EVENT_READ, c)

    def _receive(self, c: _Conn, t_end: int) -> None:
        assert c.sock is not None
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
        c.reader.feed(data)
        replies = c.reader.replies()
        if not replies:
            return
        if c.in_flight >= 0:
            self.rec.request(c.in_flight, now, c.id, ERROR_REPLY if is_error(replies[0]) else OK)
            c.in_flight = -1
        # Closed loop: the next request leaves at once, in this same pass (no extra select round).
        if self.spec.rate is None and now < t_end:
            self._send(c, now)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, t0: int, t_end: int, control: Connection | None = None) -> Recording:
        """Drive load from t0 (a future monotonic_ns, shared by all processes) until t_end, or until an
        earlier t_end received on `control`."""
        n = len(self.conns)
        interval = 0
        if self.spec.rate is not None:
            interval = int(n / self.spec.rate * 1e9)
            # Phases by the connection's number across all processes: the pool's requests interleave.
            total = self.spec.total_connections or n
            phase = int(1e9 / (self.spec.rate * total / n))
            for c in self.conns:
                c.next_due = t0 + c.id * phase
        while time.monotonic_ns() < t0:
            time.sleep(max(0.0, (t0 - time.monotonic_ns()) / 1e9))
        if self.spec.rate is None:
            now = time.monotonic_ns()
            for c in self.conns:
                self._send(c, now)
        deadline = t_end + int(DRAIN_S * 1e9)
        open_loop = self.spec.rate is not None
        if control is not None:
            self.sel.register(control.fileno(), selectors.EVENT_READ, None)

        def has_work(c: _Conn, now: int) -> bool:
            # Open loop: every request scheduled before t_end is sent, even after t_end (its wait counts).
            if c.in_flight >= 0:
                return True
            return c.next_due < t_end if open_loop else now < t_end

        while True:
            now = time.monotonic_ns()
            if now >= deadline or not any(has_work(c, now) for c in self.conns):
                break
            wake = deadline
            for c in self.conns:
                if c.sock is None:
                    if not has_work(c, now):
                        continue
                    if now >= c.retry_at:
                        self._try_reconnect(c, now)
                    if c.sock is None:
                        wake = min(wake, c.retry_at)
                        continue
                if c.in_flight >= 0:
                    continue
                if open_loop:
                    if c.next_due >= t_end:
                        continue
                    if c.next_due <= now:
                        self._send(c, c.next_due)
                        c.next_due += interval
                    else:
                        wake = min(wake, c.next_due)
                elif now < t_end:
                    self._send(c, time.monotonic_ns())
            if now < t_end:
                wake = min(wake, t_end)
            timeout = max(0.0, (wake - time.monotonic_ns()) / 1e9)
            for key, mask in self.sel.select(timeout):
                c = key.data
                if c is None:  # the control pipe: the end brought forward
                    assert control is not None
                    t_end = min(t_end, int(control.recv()))
                    deadline = t_end + int(DRAIN_S * 1e9)
                    continue
                if c.sock is None:
                    continue
                if mask & selectors.EVENT_WRITE and c.out:
                    self._flush(c)
                if mask & selectors.EVENT_READ and c.sock is not None:
                    self._receive(c, t_end)
        if control is not None:
            self.sel.unregister(control.fileno())
        self.unfinished = sum(1 for c in self.conns if c.in_flight >= 0)
        if open_loop:  # scheduled but never sent before the drain deadline
            self.unfinished += sum(
                -(-(t_end - c.next_due) // interval) for c in self.conns if c.next_due < t_end
            )
        for c in self.conns:
            if c.sock is None:  # broken and not repaired before the end: still a lost connection
                self.rec.reconnect(c.id, c.down_since, -1)
        return self.rec.build(t0, t_end, n)


def make_driver(spec: LoadSpec) -> Driver:
    """The driver for the workload's protocol: RESP (this module) or PostgreSQL (lpbench.sql.driver)."""
    from lpbench.sql.workloads import SQL_WORKLOAD_NAMES

    if spec.workload in SQL_WORKLOAD_NAMES:
        from lpbench.sql.driver import PgDriver

        return PgDriver(spec)
    return Driver(spec)
