"""One client connection (socket + session) and the table of all of them.

Ownership rule (why closing is safe without a lock per request): at any moment exactly one thread
serves a connection -- its connection thread (thread-per-connection), or the pool worker that took it
from its group's poll set. Only that thread reads, writes and closes the socket. Other threads (the
shutdown path) only call `interrupt()`: `shutdown(SHUT_RDWR)` wakes a blocked `recv` with end-of-file
without freeing the descriptor under the serving thread's feet, and `session.cancel()` stops a running
statement. The table only counts connections (for --max-connections) and lists them for shutdown.
"""

from __future__ import annotations

import logging
import socket
import threading

from sqlserver.server.contract import NetSession, SessionFactory

log = logging.getLogger("sqlserver.server")

# One recv per request in the common case: a pgbench transaction or a psycopg pipeline is a few hundred
# bytes; COPY streams arrive in as many reads as they need.
READ_SIZE = 64 * 1024


class Connection:
    """A client socket and (from its first bytes on) its session."""

    __slots__ = ("_closed", "peer", "pending", "session", "sock", "table")

    def __init__(self, sock: socket.socket, peer: str, table: ConnectionTable) -> None:
        self.sock = sock
        self.peer = peer
        self.table = table
        self.session: NetSession | None = None
        # A request that backed out (sqlserver/blocking.py): run again, before reading the socket,
        # once the pending patch is over.
        self.pending: bytes | None = None
        self._closed = False

    def open_session(self, state: SessionFactory) -> NetSession:
        """The session, created on first use by the serving thread (not the acceptor: creating one may
        open a database connection, which must not hold up accepting others)."""
        session = self.session
        if session is None:
            session = self.session = state.new_session(self.peer)
        return session

    def serve_once(self, state: SessionFactory) -> bool:
        """Read what the client sent (one recv, blocking; or the request that backed out), run it,
        send the replies with one sendall (or all three in C, sqlserver/native.py). Returns False when the connection is finished (end of
        file, error, or the session closed); `pending` is set again if the request backed out."""
        data = self.pending
        if data is not None:
            self.pending = None
            return self.respond(state, data)
        session = self.session
        native = getattr(session, "native", None)  # the C fast path, once authenticated (native.py)
        try:
            if native is None:
                data = self.sock.recv(READ_SIZE)
            else:
                # recv, answer a prepared SELECT, send -- one GIL release; other bytes come back
                data = native.serve(self.sock.fileno())
                if data is None:
                    return not session.closed  # type: ignore[union-attr]
        except OSError:
            return False  # reset by the client or interrupted by shutdown: nothing to answer
        if not data:
            return False
        return self.respond(state, data)

    def respond(self, state: SessionFactory, data: bytes) -> bool:
        """Run `data` through the session and send the reply; False when the connection is finished."""
        session = self.session or self.open_session(state)
        try:
            out = session.receive(data)
        except Exception:
            # The session turns every bad input into an ErrorResponse; reaching here is a bug in the
            # server, not the client's fault: log it once with its traceback, drop only this client.
            log.exception("session %s failed; closing its connection", self.peer)
            return False
        if not out:
            self.pending = session.take_backed_out()
        else:
            try:
                self.sock.sendall(out)
            except OSError:
                return False  # the client went away; its session is closed by the caller
        return not session.closed

    def interrupt(self) -> None:
        """Any thread (shutdown): stop the running statement and wake the serving thread's read."""
        session = self.session
        if session is not None:
            try:
                session.cancel()
            except Exception:
                log.exception("cancel of %s failed during shutdown", self.peer)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed or never connected: the serving thread sees EOF either way

    def close(self) -> None:
        """The serving thread (or the shutdown path, once no thread serves it): release everything."""
        if self._closed:
            return
        self._closed = True
        if self.session is not None:
            try:
                self.session.close()
            except Exception:
                log.exception("closing the session of %s failed", self.peer)
        try:
            self.sock.close()
        finally:
            self.table.remove(self)


class ConnectionTable:
    """Live connections: the count --max-connections limits, the list shutdown interrupts. Thread-safe."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._live: set[Connection] = set()

    def admit(self, sock: socket.socket, peer: str) -> Connection | None:
        """A Connection for an accepted socket, or None when the server is full (the caller rejects)."""
        with self._lock:
            if len(self._live) >= self.max_connections:
                return None
            conn = Connection(sock, peer, self)
            self._live.add(conn)
            return conn

    def remove(self, conn: Connection) -> None:
        with self._lock:
            self._live.discard(conn)

    def __len__(self) -> int:
        return len(self._live)

    def snapshot(self) -> list[Connection]:
        with self._lock:
            return list(self._live)
