"""What a command handler sees: the server, the calling client, its selected database, and the clock.

CONTRACT between the dispatcher (kvserver core) and the handlers (commands/*.py):
- `ctx.db` is the client's selected `Keyspace` (kvserver.keyspace), `ctx.server.databases[i]` any other.
- `ctx.now_ms` is the wall clock in milliseconds, read once when the command started (Redis semantics:
  a command sees one instant; expiry and TTL arithmetic use it).
- A successful command flagged `write` is appended to the append-only file as the client sent it, unless
  the handler calls `ctx.propagate_as(argv)` (e.g. SET ... EX 10 -> SET ... PXAT <absolute ms>, so a replay
  later does not extend the TTL) or `ctx.no_propagation()` (nothing changed, e.g. SET NX on an existing key).
  A handler may call propagate_as several times to log several commands.
- `ctx.client.protocol` is 2 or 3 (HELLO); most handlers never look at it: the codec adapts replies.
- A read-only command that may run for seconds (KEYS over millions of keys) calls
  `ctx.check_shutdown()` every few tens of thousands of items: after a SIGTERM/SIGINT it raises
  CommandError, the client gets that error, and the server shuts down without waiting for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvserver.replies import CommandError

if TYPE_CHECKING:
    from kvserver.keyspace import Keyspace


@dataclass
class CommandContext:
    server: Any  # kvserver.server.ServerState (kept Any to avoid an import cycle)
    client: Any  # kvserver.client.ClientState
    now_ms: int
    propagation: list[list[bytes]] | None = None  # None: log argv as sent; []: log nothing
    _extra: dict[str, Any] = field(default_factory=dict)

    @property
    def db(self) -> Keyspace:
        return self.server.databases[self.client.db_index]

    def propagate_as(self, argv: list[bytes]) -> None:
        if self.propagation is None:
            self.propagation = []
        self.propagation.append(argv)

    def no_propagation(self) -> None:
        self.propagation = []

    def check_shutdown(self) -> None:
        """Raise CommandError if a SIGTERM/SIGINT asked the server to stop (loop thread only).

        Signal handlers run between bytecodes of the loop thread and only set a flag (STYLE.md §8), so
        a long command notices it here; its writes so far stay (call this only where stopping is safe).
        """
        loop = self.server.loop
        if loop is not None and loop.stop_requested:
            raise CommandError("ERR the server is shutting down (SIGTERM): command abandoned")
