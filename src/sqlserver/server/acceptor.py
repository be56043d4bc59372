"""The acceptor: accepts connections and hands them to the connection policy.

Theory of operation
-------------------
One thread (the main thread under the CLI) polls the listening socket and a self-pipe. Accepted sockets
get TCP_NODELAY (replies are whole messages; Nagle would add 40 ms to every pipelined reply) and are
admitted into the ConnectionTable; past --max-connections the socket goes to `reject_later` (PostgreSQL's
53300). The policy's `dispatch` then owns the connection.

The self-pipe is written by `wakeup()`: the signal handlers (SIGTERM/SIGINT only set a flag and write a
byte, STYLE.md #8) and the livepatch wake-up hook. When the poll is interrupted that way the acceptor
passes its quiescence point (MariaDB: the acceptor's `select()` interrupted by the trigger), so a global
patch never waits for a connection that is not coming. Under livepatch the acceptor is a managed thread
with CRITICAL priority: like a pool's listener it parks last.

Concurrency: `serve` on one thread; `wakeup` and `request_stop` from any thread or a signal handler.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
from contextlib import ExitStack
from typing import Protocol

from sqlserver.server.connection import Connection, ConnectionTable
from sqlserver.server.contract import SessionFactory
from sqlserver.server.reject import reject_later

log = logging.getLogger("sqlserver.server")

ACCEPT_BATCH = 64  # accepts per wake-up, so a connection storm cannot starve the self-pipe


class Policy(Protocol):
    """A connection policy (per_connection.ThreadPerConnection, pool.ThreadPool)."""

    def start(self) -> None:
        """Create the policy's long-lived threads (before the first dispatch)."""

    def dispatch(self, conn: Connection) -> None:
        """Acceptor thread: take ownership of a newly accepted connection. Must not block."""

    def stop(self, timeout: float) -> None:
        """Stop serving: interrupt every connection, join the threads (at most `timeout` s)."""


class Acceptor:
    def __init__(
        self,
        listener: socket.socket,
        policy: Policy,
        table: ConnectionTable,
        state: SessionFactory,
    ) -> None:
        self.listener = listener
        self.policy = policy
        self.table = table
        self.state = state
        listener.setblocking(False)
        self._rpipe, self._wpipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(listener.fileno(), select.POLLIN)
        self._poll.register(self._rpipe, select.POLLIN)
        self._stop_requested = False
        self.accepted = 0

    # ---------------------------------------------------------------------------- any thread
    def wakeup(self) -> None:
        """Interrupt the poll (livepatch wake-up hook; any thread; async-signal-safe enough: one write)."""
        try:
            os.write(self._wpipe, b"x")
        except OSError:
            pass  # the pipe is full (a wake-up is already pending) or closed at exit

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: stop accepting at the next iteration (the handler only enqueues)."""
        self._stop_requested = True
        self.wakeup()

    # ---------------------------------------------------------------------------- acceptor thread
    def serve(self, livepatch_enabled: bool) -> None:
        """Accept until request_stop; then close the listening socket. Does not stop the policy."""
        with ExitStack() as stack:
            if livepatch_enabled:
                import livepatch

                stack.enter_context(
                    livepatch.managed_thread(role="acceptor", priority=livepatch.Priority.CRITICAL)
                )
                livepatch.add_wakeup_hook(self.wakeup)
                stack.callback(livepatch.remove_wakeup_hook, self.wakeup)
                quiescence_point = livepatch.quiescence_point
            else:
                quiescence_point = None
            self._loop(quiescence_point)
        self.listener.close()
        os.close(self._rpipe)
        os.close(self._wpipe)

    def _loop(self, quiescence_point: object) -> None:
        listen_fd = self.listener.fileno()
        while not self._stop_requested:
            try:
                events = self._poll.poll()
            except InterruptedError:
                events = []
            interrupted = False
            for fd, _mask in events:
                if fd == listen_fd:
                    self._accept_some()
                else:
                    interrupted = True
                    self._drain()
            if interrupted and quiescence_point is not None and not self._stop_requested:
                quiescence_point()  # type: ignore[operator]

    def _drain(self) -> None:
        try:
            while os.read(self._rpipe, 4096):
                pass
        except BlockingIOError:
            pass

    def _accept_some(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: the pending connection stays in the backlog; say so once
                    # per burst rather than spin (the operator raises `ulimit -n` or lowers load).
                    log.error("cannot accept a connection: %s (raise ulimit -n?)", exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue  # the client gave up while queued: nothing to do
                raise
            sock.setblocking(True)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            self.accepted += 1
            conn = self.table.admit(sock, peer)
            if conn is None:
                reject_later(sock, peer, self.state)
                continue
            try:
                self.policy.dispatch(conn)
            except Exception:
                # e.g. no thread can be started (resource limits): this client only is turned away.
                log.exception("cannot serve %s; closing it", peer)
                conn.close()
