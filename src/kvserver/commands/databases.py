"""Commands that move or copy keys between databases (Redis 7.0 db.c): COPY, MOVE, SWAPDB.

WATCH: a command's own key positions are invalidated by the dispatcher in the client's database; these
handlers also touch the keys they change in the *other* database (MOVE, COPY ... DB n), and SWAPDB
touches every watched key of both databases, as Redis's touchAllWatchedKeysInDb does.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvserver.commands.table import Command, command
from kvserver.replies import OK, SYNTAX, CommandError, Reply
from kvserver.types.numbers import parse_int
from kvserver.types.values import copy_value

if TYPE_CHECKING:
    from kvserver.context import CommandContext

OUT_OF_RANGE = "ERR DB index is out of range"
SAME_OBJECT = "ERR source and destination objects are the same"


def _db_index(
    ctx: CommandContext, arg: bytes, error: str = "ERR value is not an integer or out of range"
) -> int:
    index = parse_int(arg, error)
    if index < 0 or index >= len(ctx.server.databases):
        raise CommandError(OUT_OF_RANGE)
    return index


def _touch(ctx: CommandContext, index: int, key: bytes) -> None:
    if ctx.server.watched:
        ctx.server.touch_keys(index, [key])


def copy_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    src, dst = argv[1], argv[2]
    here = ctx.client.db_index
    target = here
    replace = False
    i = 3
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"REPLACE":
            replace = True
        elif opt == b"DB" and i + 1 < len(argv):
            target = _db_index(ctx, argv[i + 1])
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    if src == dst and target == here:
        raise CommandError(SAME_OBJECT)
    db = ctx.db
    value = db.lookup(src, ctx.now_ms)
    if value is None:
        ctx.no_propagation()
        return 0
    dest_db = ctx.server.databases[target]
    if dest_db.lookup(dst, ctx.now_ms) is not None:
        if not replace:
            ctx.no_propagation()
            return 0
        dest_db.delete(dst)
    dest_db.store(dst, copy_value(value), db.get_expire(src))
    if target != here:
        _touch(ctx, target, dst)
    return 1


def move_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    key = argv[1]
    target = parse_int(argv[2])
    if target < 0 or target >= len(ctx.server.databases):
        raise CommandError(OUT_OF_RANGE)
    here = ctx.client.db_index
    if target == here:
        raise CommandError(SAME_OBJECT)
    db = ctx.db
    value = db.lookup(key, ctx.now_ms)
    dest_db = ctx.server.databases[target]
    if value is None or dest_db.lookup(key, ctx.now_ms) is not None:
        ctx.no_propagation()
        return 0
    expire_at = db.get_expire(key)
    db.delete(key)
    dest_db.store(key, value, expire_at)
    _touch(ctx, target, key)
    return 1


def swapdb_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    first = parse_int(argv[1], "ERR invalid first DB index")
    second = parse_int(argv[2], "ERR invalid second DB index")
    count = len(ctx.server.databases)
    if first < 0 or first >= count or second < 0 or second >= count:
        raise CommandError(OUT_OF_RANGE)
    if first != second:
        server = ctx.server
        a, b = server.databases[first], server.databases[second]
        a.swap_with(b)
        for index, key in list(server.watched):
            if index in (first, second) and (key in a or key in b):
                server.touch_keys(index, [key])
    return OK


COMMANDS: list[Command] = [
    command(
        "COPY",
        copy_command,
        -3,
        "write",
        (1, 2, 1),
        "generic",
        summary="Copies the value of a key to a new key.",
    ),
    command(
        "MOVE",
        move_command,
        3,
        "write fast",
        (1, 1, 1),
        "generic",
        summary="Moves a key to another database.",
    ),
    command(
        "SWAPDB",
        swapdb_command,
        3,
        "write fast",
        (0, 0, 0),
        "server",
        summary="Swaps two Redis databases.",
    ),
]
