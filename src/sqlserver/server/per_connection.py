"""Thread-per-connection: one managed thread serves one connection at a time, plus a thread cache.

Theory of operation
-------------------
`dispatch` (acceptor thread) gives the connection to a cached idle thread when one waits, else starts a
thread. A connection thread loops: serve its connection until the client leaves, then wait in the cache
for the next one (at most `thread_cache` threads wait; the others exit) -- MariaDB's
`cache_thread()`/`one_thread_per_connection_end`.

Live patching (REFERENCE.md section 1, MariaDB's `do_command`):
  * The quiescence point is at the top of the request loop, only when `session.idle` (it holds
    nothing: no open transaction -- or a block that ran no statement yet --, no half-received
    message, not in COPY). A thread inside a transaction never parks: it may hold SQLite locks others
    wait for, and parking it would let a patch wait for itself.
  * Reading the next request blocks in `recv` for as long as the client thinks. The read is first
    made active with a short kernel timeout (IDLE_GRACE_S, SO_RCVTIMEO): a client in a request loop
    answers within it and nothing else is paid. When it expires and the session is idle, the thread
    deactivates and blocks without timeout, so a global patch never waits for a client that sends
    nothing (at most IDLE_GRACE_S for one about to pause); `activate()` afterwards waits while a
    global patch is being applied (the request then runs on the new code) and, under a local patch,
    moves the thread to the new generation. Inside a transaction the thread stays active during the
    read: a global patch waits for the client's next statement (the thread runs it and reaches its
    point once idle) or aborts at its deadline -- it never parks a thread inside a transaction.
  * A request that would start a transaction (its first write) while a patch is pending backs out
    before taking anything (sqlserver/blocking.py); the loop then passes its point (the session
    holds nothing) and runs the request again afterwards, so a global patch waits only for the
    transactions that already hold something.
  * Cached threads wait deactivated (the runtime never waits for them), so no wake-up hook is needed
    for the cache; the acceptor's self-pipe hook wakes the acceptor.

Concurrency: `dispatch` from the acceptor thread; `stop` from the thread that ran the acceptor, after it
returned. Everything else runs on the connection threads.
"""

from __future__ import annotations

import collections
import itertools
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from sqlserver import blocking
from sqlserver.server.connection import READ_SIZE, Connection, ConnectionTable
from sqlserver.server.contract import SessionFactory

log = logging.getLogger("sqlserver.server")

# How long an idle connection thread waits for its client's next request while still active, before it
# deactivates. Deactivating costs two runtime-lock round trips, which would be paid on every request
# (~15% more instructions per pgbench transaction); a client in a request loop answers well within
# this, so only clients that really pause pay it. The price: a global patch may wait up to this long
# for a thread whose client is about to pause. The timeout is the kernel's (SO_RCVTIMEO): the read
# stays one system call.
IDLE_GRACE_S = 0.002
_GRACE = struct.pack("ll", 0, int(IDLE_GRACE_S * 1_000_000))
_NO_TIMEOUT = struct.pack("ll", 0, 0)


class ThreadPerConnection:
    def __init__(
        self,
        state: SessionFactory,
        table: ConnectionTable,
        thread_cache: int = 8,
        livepatch_enabled: bool = True,
    ) -> None:
        self.state = state
        self.table = table
        self.thread_cache = thread_cache
        self.livepatch_enabled = livepatch_enabled
        self._cond = threading.Condition()
        self._handoff: collections.deque[Connection] = collections.deque()
        self._cached = 0  # threads waiting in the cache (each takes one handoff)
        self._stopping = False
        self._threads: set[threading.Thread] = set()
        self._names = itertools.count(1)
        self.threads_started = 0  # statistics: how often the cache missed

    # ---------------------------------------------------------------------------- acceptor thread
    def start(self) -> None:
        pass  # threads are created on demand

    def dispatch(self, conn: Connection) -> None:
        with self._cond:
            if self._cached > len(self._handoff):
                self._handoff.append(conn)
                self._cond.notify()
                return
            thread = threading.Thread(
                target=self._thread_main, args=(conn,), name=f"sql-conn-{next(self._names)}"
            )
            self._threads.add(thread)
            self.threads_started += 1
        thread.start()

    def stop(self, timeout: float) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            leftovers = list(self._handoff)
            self._handoff.clear()
        for conn in leftovers:
            conn.close()
        for conn in self.table.snapshot():
            conn.interrupt()
        deadline = time.monotonic() + timeout
        with self._cond:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in threads if t.is_alive()]
        if stuck:
            log.warning("connection threads still running at exit: %s", ", ".join(stuck))

    # ---------------------------------------------------------------------------- connection threads
    def _thread_main(self, conn: Connection) -> None:
        try:
            if self.livepatch_enabled:
                import livepatch

                ctx: AbstractContextManager[None] = livepatch.managed_thread(
                    role="connection", priority=livepatch.Priority.LOW
                )
            else:
                ctx = nullcontext()
            with ctx:
                next_conn: Connection | None = conn
                while next_conn is not None:
                    self._serve(next_conn)
                    next_conn = self._wait_in_cache()
        finally:
            with self._cond:
                self._threads.discard(threading.current_thread())

    def _serve(self, conn: Connection) -> None:
        try:
            if self.livepatch_enabled:
                serve_patchable(conn, self.state)
            else:
                serve_plain(conn, self.state)
        except Exception:
            log.exception("serving %s failed; closing it", conn.peer)
        finally:
            conn.close()

    def _wait_in_cache(self) -> Connection | None:
        with self._cond:
            if self._stopping or self._cached >= self.thread_cache:
                return None  # the cache is full: this thread exits
            self._cached += 1
        deactivate, activate = _activation(self.livepatch_enabled)
        deactivate()  # parked outside the work loop: patches do not wait for this thread
        try:
            with self._cond:
                while not self._handoff and not self._stopping:
                    self._cond.wait()
                self._cached -= 1
                return self._handoff.popleft() if self._handoff else None
        finally:
            activate()


def serve_plain(conn: Connection, state: SessionFactory) -> None:
    """The request loop without livepatch (the overhead baseline, `--no-livepatch`)."""
    serve_once = conn.serve_once
    while serve_once(state):
        pass


def serve_patchable(conn: Connection, state: SessionFactory) -> None:
    """The request loop of a managed connection thread (see the theory of operation)."""
    import livepatch

    flag = livepatch.transition_flag()
    quiescence_point = livepatch.quiescence_point
    blocking.install_back_out(blocking.BackOutRule(flag))
    sock = conn.sock
    fd = sock.fileno()
    recv = sock.recv
    respond = conn.respond
    session = conn.open_session(state)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _GRACE)
    while True:
        # `session.idle` is asked only when it matters (a patch pending, a client pausing): the
        # request loop itself pays one attribute read for being patchable.
        if flag.request is not None and session.idle:
            quiescence_point()  # between two requests, outside any transaction
        if conn.pending is not None:
            # The last request backed out for the patch just passed (blocking.py): run it now.
            if not conn.serve_once(state):
                return
            continue
        native = getattr(session, "native", None)  # set once authenticated (sqlserver/native.py)
        try:
            # Active for at most IDLE_GRACE_S: the usual reply time. The C fast path answers the
            # bursts it can without the GIL (None) and hands back whatever else it received.
            data = native.serve(fd) if native is not None else recv(READ_SIZE)
        except BlockingIOError:
            # The client is thinking. Idle: deactivated, so that a patch does not wait for it.
            # Inside a transaction: active, so that a global patch waits for the COMMIT or aborts.
            data = _read_blocking(sock, deactivated=session.idle)
        except OSError:
            return
        if data is not None and (not data or not respond(state, data)):
            return


def _read_blocking(sock: socket.socket, deactivated: bool) -> bytes:
    """Wait for the client without the grace timeout (b"" on error: the connection is finished)."""
    import livepatch

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _NO_TIMEOUT)
    if deactivated:
        livepatch.deactivate()
    try:
        return sock.recv(READ_SIZE)
    except OSError:
        return b""
    finally:
        if deactivated:
            livepatch.activate()  # waits while a global patch is applied: the request runs new code
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _GRACE)
        except OSError:
            pass  # closed meanwhile (shutdown): the caller sees the end of file


def _activation(enabled: bool) -> tuple[Callable[[], None], Callable[[], None]]:
    if not enabled:
        return _nothing, _nothing
    import livepatch

    return livepatch.deactivate, livepatch.activate


def _nothing() -> None:
    pass
