"""Hash commands (Redis 7 t_hash.c). A hash is a dict[bytes, bytes]; an emptied hash is deleted.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context); they
mutate the Keyspace's values in place and never block.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING

from kvserver.commands.keys import parse_cursor, parse_scan_options
from kvserver.commands.table import Command, command
from kvserver.replies import OK, OVERFLOW, SYNTAX, CommandError, Reply, wrong_arity
from kvserver.types.glob import compile_glob
from kvserver.types.numbers import INT64_MAX, INT64_MIN, format_float, parse_float, parse_int

if TYPE_CHECKING:
    from kvserver.context import CommandContext


def _hash(ctx: CommandContext, key: bytes) -> dict[bytes, bytes] | None:
    return ctx.db.lookup_typed(key, ctx.now_ms, dict)


def _hash_for_write(ctx: CommandContext, key: bytes) -> dict[bytes, bytes]:
    h = _hash(ctx, key)
    if h is None:
        h = {}
        ctx.db.store(key, h)
    return h


def _hset(ctx: CommandContext, argv: list[bytes]) -> int:
    if len(argv) % 2:
        raise CommandError(wrong_arity(argv[0].decode(errors="replace")))
    h = _hash_for_write(ctx, argv[1])
    before = len(h)
    for i in range(2, len(argv), 2):
        h[argv[i]] = argv[i + 1]
    return len(h) - before


def hset_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _hset(ctx, argv)


def hmset_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    _hset(ctx, argv)
    return OK


def hsetnx_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash_for_write(ctx, argv[1])
    if argv[2] in h:
        ctx.no_propagation()
        return 0
    h[argv[2]] = argv[3]
    return 1


def hget_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash(ctx, argv[1])
    return None if h is None else h.get(argv[2])


def hmget_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash(ctx, argv[1])
    if h is None:
        return [None] * (len(argv) - 2)
    return [h.get(f) for f in argv[2:]]


def hdel_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash(ctx, argv[1])
    if h is None:
        ctx.no_propagation()
        return 0
    deleted = 0
    for f in argv[2:]:
        if h.pop(f, None) is not None:
            deleted += 1
    if not h:
        ctx.db.delete(argv[1])
    if not deleted:
        ctx.no_propagation()
    return deleted


def hexists_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash(ctx, argv[1])
    return int(h is not None and argv[2] in h)


def hgetall_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash(ctx, argv[1])
    return {} if h is None else dict(h)


def hkeys_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash(ctx, argv[1])
    return [] if h is None else list(h)


def hvals_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash(ctx, argv[1])
    return [] if h is None else list(h.values())


def hlen_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash(ctx, argv[1])
    return 0 if h is None else len(h)


def hstrlen_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    h = _hash(ctx, argv[1])
    return 0 if h is None else len(h.get(argv[2], b""))


def hincrby_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    delta = parse_int(argv[3])
    h = _hash_for_write(ctx, argv[1])
    old = h.get(argv[2])
    current = 0 if old is None else parse_int(old, "ERR hash value is not an integer")
    result = current + delta
    if result > INT64_MAX or result < INT64_MIN:
        _drop_if_empty(ctx, argv[1], h)
        raise CommandError(OVERFLOW)
    h[argv[2]] = b"%d" % result
    return result


def hincrbyfloat_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    delta = parse_float(argv[3])
    if math.isinf(delta):
        raise CommandError("ERR value is NaN or Infinity")
    h = _hash_for_write(ctx, argv[1])
    old = h.get(argv[2])
    current = 0.0 if old is None else parse_float(old, "ERR hash value is not a float")
    result = current + delta
    if math.isnan(result) or math.isinf(result):
        _drop_if_empty(ctx, argv[1], h)
        raise CommandError("ERR increment would produce NaN or Infinity")
    text = format_float(result)
    h[argv[2]] = text
    ctx.propagate_as([b"HSET", argv[1], argv[2], text])
    return text


def _drop_if_empty(ctx: CommandContext, key: bytes, h: dict[bytes, bytes]) -> None:
    # A failed increment must not leave behind the empty hash _hash_for_write created.
    if not h:
        ctx.db.delete(key)


def hrandfield_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    """HRANDFIELD key [count [WITHVALUES]]: positive count distinct fields, negative repeats allowed.
    O(N) per call (the hash is copied to pick at random; Redis is O(count))."""
    if len(argv) > 4 or (len(argv) == 4 and argv[3].upper() != b"WITHVALUES"):
        raise CommandError(SYNTAX)
    withvalues = len(argv) == 4
    if len(argv) == 2:
        h = _hash(ctx, argv[1])
        return None if not h else random.choice(list(h))
    count = parse_int(argv[2])
    if count < -INT64_MAX or (withvalues and count < -INT64_MAX // 2):
        raise CommandError("ERR value is out of range")
    h = _hash(ctx, argv[1])
    if not h or count == 0:
        return []
    items = list(h.items())
    if count > 0:
        picked = items if count >= len(items) else random.sample(items, count)
    else:
        if -count > MAX_RANDOM_REPLY:
            raise CommandError("ERR value is out of range")
        picked = random.choices(items, k=-count)
    if not withvalues:
        return [f for f, _ in picked]
    if getattr(ctx.client, "protocol", 2) == 3:
        return [[f, v] for f, v in picked]
    return [x for pair in picked for x in pair]


def hscan_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    """HSCAN: the whole hash in one reply (cursor 0), as Redis does for small encodings."""
    parse_cursor(argv[2])
    _count, pattern, _ = parse_scan_options(argv, 3, allow_type=False)
    h = _hash(ctx, argv[1])
    out: list[bytes] = []
    if h is not None:
        match = compile_glob(pattern).fullmatch
        for f, v in h.items():
            if pattern == b"*" or match(f) is not None:
                out += (f, v)
    return [b"0", out]


MAX_RANDOM_REPLY = 1 << 24  # HRANDFIELD with a negative count: at most this many draws per reply

COMMANDS: list[Command] = [
    command(
        "HRANDFIELD",
        hrandfield_command,
        -2,
        "readonly",
        (1, 1, 1),
        "hash",
        summary="Returns one or more random fields from a hash.",
    ),
    command(
        "HSET",
        hset_command,
        -4,
        "write fast",
        (1, 1, 1),
        "hash",
        summary="Creates or modifies the value of a field in a hash.",
    ),
    command(
        "HMSET",
        hmset_command,
        -4,
        "write fast",
        (1, 1, 1),
        "hash",
        summary="Sets the values of multiple fields.",
    ),
    command(
        "HSETNX",
        hsetnx_command,
        4,
        "write fast",
        (1, 1, 1),
        "hash",
        summary="Sets the value of a field in a hash only when the field doesn't exist.",
    ),
    command(
        "HGET",
        hget_command,
        3,
        "readonly fast",
        (1, 1, 1),
        "hash",
        summary="Returns the value of a field in a hash.",
    ),
    command(
        "HMGET",
        hmget_command,
        -3,
        "readonly fast",
        (1, 1, 1),
        "hash",
        summary="Returns the values of all fields in a hash.",
    ),
    command(
        "HDEL",
        hdel_command,
        -3,
        "write fast",
        (1, 1, 1),
        "hash",
        summary="Deletes one or more fields and their values from a hash. Deletes the hash if no fields remain.",
    ),
    command(
        "HEXISTS",
        hexists_command,
        3,
        "readonly fast",
        (1, 1, 1),
        "hash",
        summary="Determines whether a field exists in a hash.",
    ),
    command(
        "HGETALL",
        hgetall_command,
        2,
        "readonly",
        (1, 1, 1),
        "hash",
        summary="Returns all fields and values in a hash.",
    ),
    command(
        "HKEYS",
        hkeys_command,
        2,
        "readonly",
        (1, 1, 1),
        "hash",
        summary="Returns all fields in a hash.",
    ),
    command(
        "HVALS",
        hvals_command,
        2,
        "readonly",
        (1, 1, 1),
        "hash",
        summary="Returns all values in a hash.",
    ),
    command(
        "HLEN",
        hlen_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "hash",
        summary="Returns the number of fields in a hash.",
    ),
    command(
        "HSTRLEN",
        hstrlen_command,
        3,
        "readonly fast",
        (1, 1, 1),
        "hash",
        summary="Returns the length of the value of a field.",
    ),
    command(
        "HINCRBY",
        hincrby_command,
        4,
        "write fast",
        (1, 1, 1),
        "hash",
        summary="Increments the integer value of a field in a hash by a number. Uses 0 as initial value if the field doesn't exist.",
    ),
    command(
        "HINCRBYFLOAT",
        hincrbyfloat_command,
        4,
        "write fast",
        (1, 1, 1),
        "hash",
        summary="Increments the floating point value of a field by a number. Uses 0 as initial value if the field doesn't exist.",
    ),
    command(
        "HSCAN",
        hscan_command,
        -3,
        "readonly",
        (1, 1, 1),
        "hash",
        summary="Iterates over fields and values of a hash.",
    ),
]
