"""Transactions (Redis 7 multi.c): MULTI, EXEC, DISCARD, WATCH, UNWATCH.

The dispatcher (kvserver.server) queues commands while `client.multi` is a list and marks
`client.multi_error` when one is rejected (unknown, wrong arity, NOAUTH). WATCH registers (db, key) pairs;
a successful write command touching a watched key (by its key positions), FLUSHDB or FLUSHALL sets the
watcher's `dirty_cas`, and EXEC then answers a null array without running anything.
A transaction's writes reach the append-only file wrapped in MULTI ... EXEC, in one buffer, so a torn
tail can never replay half of one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvserver.commands.table import Command, command
from kvserver.replies import NULL_ARRAY, OK, CommandError, Reply

if TYPE_CHECKING:
    from kvserver.context import CommandContext

EXECABORT = "EXECABORT Transaction discarded because of previous errors."


def abort_exec(server: Any, client: Any, error: str) -> str:
    """EXEC rejected before it ran (wrong arity), in MULTI or not: Redis discards any transaction,
    forgets the WATCHes and answers EXECABORT with the reason (rejectCommand -> execCommandAbort)."""
    client.multi = None
    client.multi_error = False
    server.unwatch_all(client)
    reason = error[4:] if error.startswith("ERR ") else error
    return f"EXECABORT Transaction discarded because of: {reason}"


def multi_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    client = ctx.client
    if client.multi is not None:
        raise CommandError("ERR MULTI calls can not be nested")
    client.multi = []
    client.multi_error = False
    return OK


def discard_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    client = ctx.client
    if client.multi is None:
        raise CommandError("ERR DISCARD without MULTI")
    client.multi = None
    client.multi_error = False
    ctx._extra.pop("watched_alive", None)
    ctx.server.unwatch_all(client)
    return OK


def exec_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    client = ctx.client
    server = ctx.server
    queued = client.multi
    if queued is None:
        raise CommandError("ERR EXEC without MULTI")
    client.multi = None
    if client.multi_error:
        client.multi_error = False
        server.unwatch_all(client)
        raise CommandError(EXECABORT)
    expired = _watched_key_expired(ctx)
    if client.dirty_cas or expired:
        server.unwatch_all(client)
        return NULL_ARRAY
    server.unwatch_all(client)  # like Redis: unwatch before running, so our own writes don't matter
    replies: list[Reply] = []
    collected: list[tuple[int, list[bytes]]] = []
    server.exec_propagation = collected
    try:
        for cmd, cmd_argv in queued:
            reply = server.call(client, cmd, cmd_argv)
            replies.append(reply)
    finally:
        server.exec_propagation = None
    if collected and server.aof is not None and not server.loading:
        server.aof.feed_transaction(collected)
    return replies


def watch_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    if ctx.client.multi is not None:
        raise CommandError("ERR WATCH inside MULTI is not allowed")
    # The keys alive now: one that is gone at EXEC without being touched expired meanwhile, and
    # Redis 7 counts that as a change (a deletion by a command or a flush touches it anyway).
    alive = ctx._extra.setdefault("watched_alive", set())
    if not ctx.client.watched:
        alive.clear()  # a new WATCH session (what an earlier one left, e.g. before RESET, is void)
    for key in argv[1:]:
        item = (ctx.client.db_index, key)
        if item not in ctx.client.watched and ctx.db.lookup(key, ctx.now_ms) is not None:
            alive.add(item)
    ctx.server.watch(ctx.client, argv[1:])
    return OK


def _watched_key_expired(ctx: CommandContext) -> bool:
    """A key alive at WATCH that no longer exists (only expiry removes a key without a touch)."""
    alive = ctx._extra.pop("watched_alive", None)
    if not alive:
        return False
    databases = ctx.server.databases
    return any(
        item in ctx.client.watched and databases[item[0]].lookup(item[1], ctx.now_ms) is None
        for item in alive
    )


def unwatch_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    ctx._extra.pop("watched_alive", None)
    ctx.server.unwatch_all(ctx.client)
    return OK


COMMANDS: list[Command] = [
    command(
        "MULTI",
        multi_command,
        1,
        "fast loading stale no-multi",
        group="transactions",
        summary="Starts a transaction.",
    ),
    command(
        "EXEC",
        exec_command,
        1,
        "loading stale",
        group="transactions",
        summary="Executes all commands in a transaction.",
    ),
    command(
        "DISCARD",
        discard_command,
        1,
        "fast loading stale",
        group="transactions",
        summary="Discards a transaction.",
    ),
    command(
        "WATCH",
        watch_command,
        -2,
        "fast loading stale no-multi",
        (1, -1, 1),
        group="transactions",
        summary="Monitors changes to keys to determine the execution of a transaction.",
    ),
    command(
        "UNWATCH",
        unwatch_command,
        1,
        "fast loading stale",
        group="transactions",
        summary="Forgets about watched keys of a transaction.",
    ),
]
