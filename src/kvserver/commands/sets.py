"""Set commands (Redis 7 t_set.c). A set is a Python set[bytes]; an emptied set is deleted.

Random picks copy the members to a tuple first (a Python set cannot be indexed), so SRANDMEMBER and
SPOP with a count are O(N) where Redis is O(count). SPOP without a count on a large set uses set.pop(),
O(1): an arbitrary member in hash order, which string-hash randomisation makes unpredictable but not
uniformly random (documented in docs/kvserver-commands.md). SPOP is logged as SREM of the members it
chose, so a replay removes the same ones.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context); they
mutate the Keyspace's values in place and never block.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from kvserver.commands.keys import parse_cursor, parse_scan_options
from kvserver.commands.table import Command, command
from kvserver.replies import SYNTAX, CommandError, Reply
from kvserver.types.glob import compile_glob
from kvserver.types.numbers import optional_count, parse_int, parse_numkeys

if TYPE_CHECKING:
    from kvserver.context import CommandContext

SPOP_POP_THRESHOLD = (
    512  # above this size SPOP (no count) takes set.pop() instead of copying the set
)
MAX_RANDOM_REPLY = 1 << 24  # SRANDMEMBER with a negative count: at most this many draws per reply


def _set(ctx: CommandContext, key: bytes) -> set[bytes] | None:
    return ctx.db.lookup_typed(key, ctx.now_ms, set)


def sadd_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    s = _set(ctx, argv[1])
    if s is None:
        s = set()
        ctx.db.store(argv[1], s)
    before = len(s)
    s.update(argv[2:])
    added = len(s) - before
    if not added:
        ctx.no_propagation()
    return added


def srem_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    s = _set(ctx, argv[1])
    if s is None:
        ctx.no_propagation()
        return 0
    before = len(s)
    s.difference_update(argv[2:])
    removed = before - len(s)
    if not s:
        ctx.db.delete(argv[1])
    if not removed:
        ctx.no_propagation()
    return removed


def smembers_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    s = _set(ctx, argv[1])
    return set() if s is None else set(s)


def sismember_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    s = _set(ctx, argv[1])
    return int(s is not None and argv[2] in s)


def smismember_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    s = _set(ctx, argv[1]) or set()
    return [int(m in s) for m in argv[2:]]


def scard_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    s = _set(ctx, argv[1])
    return 0 if s is None else len(s)


def spop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    count = optional_count(argv, None)
    key = argv[1]
    s = _set(ctx, key)
    ctx.no_propagation()
    if s is None:
        return None if count is None else set()
    if count is None:
        if len(s) > SPOP_POP_THRESHOLD:
            member = s.pop()
        else:
            member = random.choice(tuple(s))
            s.discard(member)
        chosen = [member]
    elif count >= len(s):
        chosen = list(s)
        s.clear()
    else:
        chosen = random.sample(tuple(s), count)
        s.difference_update(chosen)
    if not s:
        ctx.db.delete(key)
    if chosen:
        ctx.propagate_as([b"SREM", key, *chosen])
    return chosen[0] if count is None else set(chosen)


def srandmember_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    if len(argv) > 3:
        raise CommandError(SYNTAX)
    count = None if len(argv) == 2 else parse_int(argv[2])
    if count is not None and -count > MAX_RANDOM_REPLY:
        # Repeats make the reply as long as asked, whatever the set's size: refuse absurd requests
        # before building them (Redis refuses below -LONG_MAX/2 and would try the rest).
        raise CommandError("ERR value is out of range")
    s = _set(ctx, argv[1])
    if s is None:
        return None if count is None else []
    members = tuple(s)
    if count is None:
        return random.choice(members)
    if count >= 0:
        return random.sample(members, min(count, len(members)))
    # Negative count: |count| independent draws, repeats allowed.
    return random.choices(members, k=-count)


def _operands(ctx: CommandContext, keys: list[bytes]) -> list[set[bytes]]:
    """Every operand set (missing keys are empty); WRONGTYPE if any key holds another type."""
    return [_set(ctx, k) or set() for k in keys]


def _combine(op: str, sets: list[set[bytes]]) -> set[bytes]:
    if op == "inter":
        if any(not s for s in sets):
            return set()
        ordered = sorted(sets, key=len)  # smallest first, like Redis
        return ordered[0].intersection(*ordered[1:])
    if op == "union":
        return set().union(*sets)
    return sets[0].difference(*sets[1:])


def sintercard_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    numkeys = parse_numkeys(argv, 1)
    rest = argv[2 + numkeys :]
    limit = 0
    if rest:
        if len(rest) != 2 or rest[0].upper() != b"LIMIT":
            raise CommandError(SYNTAX)
        limit = parse_int(rest[1], "ERR LIMIT can't be negative")
        if limit < 0:
            raise CommandError("ERR LIMIT can't be negative")
    sets = _operands(ctx, argv[2 : 2 + numkeys])
    if any(not s for s in sets):
        return 0
    sets.sort(key=len)
    count = 0
    for member in sets[0]:
        if all(member in other for other in sets[1:]):
            count += 1
            if count == limit:
                break
    return count


def sinter_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _combine("inter", _operands(ctx, argv[1:]))


def sunion_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _combine("union", _operands(ctx, argv[1:]))


def sdiff_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _combine("diff", _operands(ctx, argv[1:]))


def _store(ctx: CommandContext, argv: list[bytes], op: str) -> Reply:
    result = _combine(op, _operands(ctx, argv[2:]))
    dest = argv[1]
    if result:
        ctx.db.store(dest, result)
    else:
        ctx.db.delete(dest)  # an empty result deletes the destination (Redis semantics)
    return len(result)


def sinterstore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _store(ctx, argv, "inter")


def sunionstore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _store(ctx, argv, "union")


def sdiffstore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _store(ctx, argv, "diff")


def smove_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    src, dst, member = argv[1], argv[2], argv[3]
    source = _set(ctx, src)
    target = _set(ctx, dst)  # WRONGTYPE on either key before anything moves
    if source is None or member not in source:
        ctx.no_propagation()
        return 0
    if src == dst:
        ctx.no_propagation()
        return 1
    source.discard(member)
    if not source:
        ctx.db.delete(src)
    if target is not None and member in target:
        # Only the source changed: Redis touches (WATCH) and propagates that alone, as an SREM.
        ctx.no_propagation()
        srem = [b"SREM", src, member]
        ctx.server.after_write(ctx.client.db_index, ctx.server.table[b"SREM"], srem, [srem])
        return 1
    if target is None:
        target = set()
        ctx.db.store(dst, target)
    target.add(member)
    return 1


def sscan_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    """SSCAN: the whole set in one reply (cursor 0), as Redis does for small encodings."""
    parse_cursor(argv[2])
    _count, pattern, _ = parse_scan_options(argv, 3, allow_type=False)
    s = _set(ctx, argv[1])
    if s is None:
        return [b"0", []]
    match = compile_glob(pattern).fullmatch
    return [b"0", [m for m in s if pattern == b"*" or match(m) is not None]]


COMMANDS: list[Command] = [
    command(
        "SINTERCARD",
        sintercard_command,
        -3,
        "readonly",
        (0, 0, 0),
        "set",
        summary="Returns the number of members of the intersect of multiple sets.",
    ),
    command(
        "SADD",
        sadd_command,
        -3,
        "write fast",
        (1, 1, 1),
        "set",
        summary="Adds one or more members to a set. Creates the key if it doesn't exist.",
    ),
    command(
        "SREM",
        srem_command,
        -3,
        "write fast",
        (1, 1, 1),
        "set",
        summary="Removes one or more members from a set. Deletes the set if the last member was removed.",
    ),
    command(
        "SMEMBERS",
        smembers_command,
        2,
        "readonly",
        (1, 1, 1),
        "set",
        summary="Returns all members of a set.",
    ),
    command(
        "SISMEMBER",
        sismember_command,
        3,
        "readonly fast",
        (1, 1, 1),
        "set",
        summary="Determines whether a member belongs to a set.",
    ),
    command(
        "SMISMEMBER",
        smismember_command,
        -3,
        "readonly fast",
        (1, 1, 1),
        "set",
        summary="Determines whether multiple members belong to a set.",
    ),
    command(
        "SCARD",
        scard_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "set",
        summary="Returns the number of members in a set.",
    ),
    command(
        "SPOP",
        spop_command,
        -2,
        "write fast",
        (1, 1, 1),
        "set",
        summary="Returns one or more random members from a set after removing them. Deletes the set if the last member was popped.",
    ),
    command(
        "SRANDMEMBER",
        srandmember_command,
        -2,
        "readonly",
        (1, 1, 1),
        "set",
        summary="Get one or multiple random members from a set",
    ),
    command(
        "SINTER",
        sinter_command,
        -2,
        "readonly",
        (1, -1, 1),
        "set",
        summary="Returns the intersect of multiple sets.",
    ),
    command(
        "SUNION",
        sunion_command,
        -2,
        "readonly",
        (1, -1, 1),
        "set",
        summary="Returns the union of multiple sets.",
    ),
    command(
        "SDIFF",
        sdiff_command,
        -2,
        "readonly",
        (1, -1, 1),
        "set",
        summary="Returns the difference of multiple sets.",
    ),
    command(
        "SINTERSTORE",
        sinterstore_command,
        -3,
        "write",
        (1, -1, 1),
        "set",
        summary="Stores the intersect of multiple sets in a key.",
    ),
    command(
        "SUNIONSTORE",
        sunionstore_command,
        -3,
        "write",
        (1, -1, 1),
        "set",
        summary="Stores the union of multiple sets in a key.",
    ),
    command(
        "SDIFFSTORE",
        sdiffstore_command,
        -3,
        "write",
        (1, -1, 1),
        "set",
        summary="Stores the difference of multiple sets in a key.",
    ),
    command(
        "SMOVE",
        smove_command,
        4,
        "write fast",
        (1, 2, 1),
        "set",
        summary="Moves a member from one set to another.",
    ),
    command(
        "SSCAN",
        sscan_command,
        -3,
        "readonly",
        (1, 1, 1),
        "set",
        summary="Iterates over members of a set.",
    ),
]
