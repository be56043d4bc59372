"""Wire the network layer together: listen, pick the policy, announce readiness, serve, shut down.

Shutdown (SIGTERM/SIGINT, or `Server.request_stop` from a test): the signal handler only sets a flag and
writes the acceptor's self-pipe (STYLE.md #8); the acceptor returns and closes the listening socket (no
new clients), the policy interrupts every connection (running statements are cancelled, blocked reads
see end-of-file) and joins its threads, then the shared state is shut down. Exit status 0.
"""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass

from sqlserver.server.acceptor import Acceptor, Policy
from sqlserver.server.connection import ConnectionTable
from sqlserver.server.contract import SessionFactory
from sqlserver.server.per_connection import ThreadPerConnection
from sqlserver.server.pool import ThreadPool

log = logging.getLogger("sqlserver.server")

POLICIES = ("thread-per-connection", "pool")
STOP_TIMEOUT_S = 10.0  # how long shutdown waits for cancelled statements to return


@dataclass(frozen=True)
class NetOptions:
    """The network layer's part of the configuration (SqlConfig carries the same fields)."""

    host: str = "127.0.0.1"
    port: int = 5432
    policy: str = "thread-per-connection"
    pool_groups: int = 3
    pool_quiescence: str = "priority"  # "naive": experiment only (pool.py)
    thread_cache: int = 8
    max_connections: int = 100
    livepatch: bool = True

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"--policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.pool_groups < 1:
            raise ValueError("--pool-groups must be at least 1")
        if self.thread_cache < 0:
            raise ValueError("--thread-cache must be 0 or more")
        if self.max_connections < 1:
            raise ValueError("--max-connections must be at least 1")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket (OSError when the address is taken or invalid)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


class Server:
    """One listening server. `serve` on one thread (the main thread when signals are installed);
    `request_stop` from any thread or signal handler."""

    def __init__(self, state: SessionFactory, listener: socket.socket, options: NetOptions) -> None:
        self.state = state
        self.options = options
        self.table = ConnectionTable(options.max_connections)
        self.policy: Policy
        if options.policy == "pool":
            self.policy = ThreadPool(
                state,
                self.table,
                options.pool_groups,
                livepatch_enabled=options.livepatch,
                naive=options.pool_quiescence == "naive",
            )
        else:
            self.policy = ThreadPerConnection(
                state, self.table, options.thread_cache, livepatch_enabled=options.livepatch
            )
        self.acceptor = Acceptor(listener, self.policy, self.table, state)
        self.address: tuple[str, int] = listener.getsockname()[:2]

    def request_stop(self) -> None:
        self.acceptor.request_stop()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.request_stop())

    def serve(self, on_ready: Callable[[], None] | None = None) -> int:
        """Serve until request_stop; returns the exit status (0)."""
        self.policy.start()
        if on_ready is not None:
            on_ready()
        try:
            self.acceptor.serve(self.options.livepatch)
        finally:
            self.policy.stop(STOP_TIMEOUT_S)
            try:
                self.state.shutdown()
            except Exception:
                log.exception("shutting down the server state failed")
        return 0
