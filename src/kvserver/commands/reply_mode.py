"""CLIENT REPLY ON|OFF|SKIP (Redis 7 networking.c): a client may ask not to be answered.

A client in OFF or SKIP mode is recorded in `ServerState.reply_modes` (loop data); the dispatcher
hands such a client's requests to `process_muted`, which runs them one at a time and drops what each
one queued for that client, except while the mode is ON again (CLIENT REPLY ON is answered). SKIP drops
the reply of the next command only. CLIENT REPLY OFF and SKIP themselves are never answered.
What is not covered: a reply that arrives later (a parked blocking command, a pub/sub message) is sent
even in OFF mode (Redis drops those too).

Concurrency: event-loop thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvserver.replies import NO_REPLY, OK, SYNTAX, CommandError, Reply

if TYPE_CHECKING:
    from kvserver.context import CommandContext

OFF = "off"
SKIP = "skip"  # drop the next command's reply
SKIPPING = "skipping"  # the command whose reply is dropped is running


class ReplyModes:
    """Clients not in ON mode: loop state (ServerState.reply_modes), plain data."""

    def __init__(self) -> None:
        self.by_client: dict[Any, str] = {}
        self.inside = False


def client_reply(ctx: CommandContext, mode: bytes) -> Reply:
    """CLIENT REPLY ON|OFF|SKIP."""
    modes: ReplyModes = ctx.server.reply_modes
    wanted = mode.upper()
    if wanted == b"ON":
        modes.by_client.pop(ctx.client, None)
        return OK
    if wanted == b"OFF":
        modes.by_client[ctx.client] = OFF
        return NO_REPLY
    if wanted == b"SKIP":
        if modes.by_client.get(ctx.client) != OFF:
            modes.by_client[ctx.client] = SKIP
        return NO_REPLY
    raise CommandError(SYNTAX)


def process_muted(server: Any, client: Any, commands: list[list[bytes]]) -> None:
    """Run a muted client's requests one by one, dropping their replies as its mode says."""
    modes: ReplyModes = server.reply_modes
    modes.inside = True
    try:
        for argv in commands:
            mode = modes.by_client.get(client)
            if mode == SKIP:
                modes.by_client[client] = mode = SKIPPING
            mark = len(client.out)
            server.process_commands(client, [argv])
            after = modes.by_client.get(client)
            if mode is not None and (after is not None or mode == SKIPPING):
                del client.out[mark:]  # OFF, or the skipped command (not a CLIENT REPLY ON)
            if mode == SKIPPING and modes.by_client.get(client) == SKIPPING:
                del modes.by_client[client]
            if client.close_after_reply:
                break
    finally:
        modes.inside = False


def forget(server: Any, client: Any) -> None:
    server.reply_modes.by_client.pop(client, None)
