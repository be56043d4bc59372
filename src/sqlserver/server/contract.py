"""What the network layer needs from the session layer (SQL_INTERFACES.md), as typing Protocols.

The network layer moves bytes and threads; everything PostgreSQL (startup, auth, statements, COPY,
CancelRequest routing) happens inside `Session.receive`. These protocols name the few members the
policies use, so that the policy tests can drive them with a small line-protocol double and the real
`sqlserver` session satisfies them unchanged.
"""

from __future__ import annotations

from typing import Protocol


class NetSession(Protocol):
    """One client's protocol state (sans-IO). Concurrency: `receive`, `idle`, `status`, `closed`,
    `take_backed_out` and `close` are called by the one thread serving the connection at that moment; `cancel` from any thread."""

    def receive(self, data: bytes) -> bytes: ...

    @property
    def idle(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def take_backed_out(self) -> bytes | None: ...

    def cancel(self) -> None: ...

    def close(self) -> None: ...


class SessionFactory(Protocol):
    """Shared server state: makes sessions; `shutdown` once, after every connection is closed."""

    def new_session(self, peer: str) -> NetSession: ...

    def shutdown(self) -> None: ...
