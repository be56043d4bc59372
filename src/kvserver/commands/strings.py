"""String commands (Redis 7 t_string.c): GET, SET and friends, counters, ranges.

Values are bytes. Counters are stored as their decimal text (Redis keeps an int encoding; the reply
bytes are identical). GET, SET and INCR are the hot path: one dict lookup, no copies, shared replies.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context); they
mutate the Keyspace's values in place and never block.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from kvserver.commands.table import Command, command
from kvserver.replies import (
    NOT_FLOAT,
    OK,
    OVERFLOW,
    SYNTAX,
    WRONGTYPE,
    CommandError,
    Reply,
    wrong_arity,
)
from kvserver.types.numbers import (
    INT64_MAX,
    INT64_MIN,
    format_float,
    parse_expire,
    parse_float,
    parse_int,
)

if TYPE_CHECKING:
    from kvserver.context import CommandContext

MAX_STRING = (
    512 * 1024 * 1024
)  # default proto-max-bulk-len: the largest string SETRANGE/APPEND build
TOO_BIG = "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
_EXPIRE_OPTIONS = (b"EX", b"PX", b"EXAT", b"PXAT")


def _max_string(ctx: CommandContext) -> int:
    """The configured proto-max-bulk-len (Redis's checkStringLength limit), default 512 MiB."""
    config = getattr(ctx.server, "config", None)
    return int(getattr(config, "proto_max_bulk_len", MAX_STRING))


def _get_string(ctx: CommandContext, key: bytes) -> bytes | None:
    value = ctx.db.lookup(key, ctx.now_ms)
    if value is None or type(value) is bytes:
        return value
    raise CommandError(WRONGTYPE)


def get_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    value = ctx.db.lookup(argv[1], ctx.now_ms)
    if value is None or type(value) is bytes:
        return value
    raise CommandError(WRONGTYPE)


def set_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    key = argv[1]
    db = ctx.db
    if len(argv) == 3:  # the plain SET: no option parsing at all
        db.store(key, argv[2])
        return OK
    nx = xx = get = keepttl = False
    expire_at: int | None = None
    expire_kind = ""
    i = 3
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        if opt == b"NX" and not xx:
            nx = True
        elif opt == b"XX" and not nx:
            xx = True
        elif opt == b"GET":
            get = True
        elif opt == b"KEEPTTL" and not expire_kind:
            keepttl = True
        elif opt in _EXPIRE_OPTIONS and expire_kind in ("", opt.decode()) and not keepttl:
            # Redis accepts the same expiry option twice (the last wins), not two different ones.
            if i + 1 >= n:
                raise CommandError(SYNTAX)
            expire_kind = opt.decode()
            i += 1
            expire_at = parse_expire(
                argv[i], opt in (b"EX", b"EXAT"), opt in (b"EXAT", b"PXAT"), ctx.now_ms, "set"
            )
        else:
            raise CommandError(SYNTAX)
        i += 1
    old = db.lookup(key, ctx.now_ms)
    if get and old is not None and type(old) is not bytes:
        raise CommandError(WRONGTYPE)
    if (nx and old is not None) or (xx and old is None):
        ctx.no_propagation()
        return old if get else None
    if keepttl:
        if old is None:
            db.store(key, argv[2])
        else:
            db.replace(key, argv[2])
    else:
        db.store(key, argv[2], expire_at)
    if expire_at is not None and expire_kind != "PXAT":
        # A replay must not restart the TTL: log the absolute time.
        ctx.propagate_as([b"SET", key, argv[2], b"PXAT", b"%d" % expire_at])
    return old if get else OK


def setnx_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    db = ctx.db
    if db.lookup(argv[1], ctx.now_ms) is not None:
        ctx.no_propagation()
        return 0
    db.store(argv[1], argv[2])
    return 1


def _set_with_ttl(ctx: CommandContext, argv: list[bytes], seconds: bool, name: str) -> Reply:
    expire_at = parse_expire(argv[2], seconds, False, ctx.now_ms, name)
    ctx.db.store(argv[1], argv[3], expire_at)
    ctx.propagate_as([b"SET", argv[1], argv[3], b"PXAT", b"%d" % expire_at])
    return OK


def setex_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _set_with_ttl(ctx, argv, True, "setex")


def psetex_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _set_with_ttl(ctx, argv, False, "psetex")


def getset_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    old = _get_string(ctx, argv[1])
    ctx.db.store(argv[1], argv[2])
    return old


def getdel_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    old = _get_string(ctx, argv[1])
    if old is None:
        ctx.no_propagation()
        return None
    ctx.db.delete(argv[1])
    return old


def getex_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    key = argv[1]
    db = ctx.db
    expire_at: int | None = None
    expire_kind = b""
    persist = False
    n = len(argv)
    i = 2
    while i < n:
        opt = argv[i].upper()
        if opt in _EXPIRE_OPTIONS and expire_kind in (b"", opt) and not persist:
            if i + 1 >= n:
                raise CommandError(SYNTAX)
            expire_kind = opt
            i += 1
            expire_at = parse_expire(
                argv[i], opt in (b"EX", b"EXAT"), opt in (b"EXAT", b"PXAT"), ctx.now_ms, "getex"
            )
        elif opt == b"PERSIST" and not expire_kind:
            persist = True
        else:
            raise CommandError(SYNTAX)
        i += 1
    value = _get_string(ctx, key)
    ctx.no_propagation()
    if value is None:
        return None
    if expire_at is not None:
        if expire_at <= ctx.now_ms:
            db.delete(key)
            ctx.propagate_as([b"DEL", key])
        else:
            db.set_expire(key, expire_at)
            ctx.propagate_as([b"PEXPIREAT", key, b"%d" % expire_at])
    elif persist and db.persist(key):
        ctx.propagate_as([b"PERSIST", key])
    return value


def mget_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    lookup = ctx.db.lookup
    now = ctx.now_ms
    out: list[bytes | None] = []
    for key in argv[1:]:
        value = lookup(key, now)
        out.append(value if type(value) is bytes else None)
    return out


def mset_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    if len(argv) % 2 == 0:
        raise CommandError(wrong_arity("mset"))
    store = ctx.db.store
    for i in range(1, len(argv), 2):
        store(argv[i], argv[i + 1])
    return OK


def msetnx_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    if len(argv) % 2 == 0:
        raise CommandError(wrong_arity("msetnx"))
    db = ctx.db
    now = ctx.now_ms
    for i in range(1, len(argv), 2):
        if db.lookup(argv[i], now) is not None:
            ctx.no_propagation()
            return 0
    for i in range(1, len(argv), 2):
        db.store(argv[i], argv[i + 1])
    return 1


def _incr(ctx: CommandContext, key: bytes, delta: int, overflow: str = OVERFLOW) -> int:
    db = ctx.db
    value = db.lookup(key, ctx.now_ms)
    if value is None:
        current = 0
    elif type(value) is bytes:
        current = parse_int(value)
    else:
        raise CommandError(WRONGTYPE)
    result = current + delta
    if result > INT64_MAX or result < INT64_MIN:
        raise CommandError(overflow)
    # INCR keeps the TTL (Redis overwrites the value in place).
    db.replace(key, b"%d" % result)
    return result


def incr_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _incr(ctx, argv[1], 1)


def decr_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _incr(ctx, argv[1], -1)


def incrby_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _incr(ctx, argv[1], parse_int(argv[2]))


def decrby_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    delta = parse_int(argv[2])
    if delta == INT64_MIN:
        raise CommandError("ERR decrement would overflow")
    return _incr(ctx, argv[1], -delta)


def incrbyfloat_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    key = argv[1]
    db = ctx.db
    delta = parse_float(argv[2])
    value = db.lookup(key, ctx.now_ms)
    if value is None:
        current = 0.0
    elif type(value) is bytes:
        current = parse_float(value, NOT_FLOAT)
    else:
        raise CommandError(WRONGTYPE)
    result = current + delta
    if math.isnan(result) or math.isinf(result):
        raise CommandError("ERR increment would produce NaN or Infinity")
    text = format_float(result)
    db.replace(key, text)
    # Float formatting may differ between versions: log the exact result, as Redis does.
    ctx.propagate_as([b"SET", key, text, b"KEEPTTL"])
    return text


def append_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    key = argv[1]
    old = _get_string(ctx, key)
    if old is None:
        ctx.db.store(key, argv[2])
        return len(argv[2])
    if len(old) + len(argv[2]) > _max_string(ctx):
        raise CommandError(TOO_BIG)
    new = old + argv[2]
    ctx.db.replace(key, new)
    return len(new)


def strlen_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    value = _get_string(ctx, argv[1])
    return 0 if value is None else len(value)


def getrange_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    start = parse_int(argv[2])
    end = parse_int(argv[3])
    value = _get_string(ctx, argv[1])
    if value is None:
        return b""
    n = len(value)
    # Redis 7 (t_string.c getrangeCommand): both negative and start > end is empty.
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start = max(n + start, 0)
    if end < 0:
        end = max(n + end, 0)
    end = min(end, n - 1)
    if n == 0 or start > end:
        return b""
    return value[start : end + 1]


def setrange_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    key = argv[1]
    offset = parse_int(argv[2])
    patch = argv[3]
    if offset < 0:
        raise CommandError("ERR offset is out of range")
    old = _get_string(ctx, key)
    if not patch:
        ctx.no_propagation()
        return 0 if old is None else len(old)
    if offset + len(patch) > _max_string(ctx):
        raise CommandError(TOO_BIG)
    base = old or b""
    if len(base) < offset:
        base += b"\x00" * (offset - len(base))
    new = base[:offset] + patch + base[offset + len(patch) :]
    if old is None:
        ctx.db.store(key, new)
    else:
        ctx.db.replace(key, new)
    return len(new)


COMMANDS: list[Command] = [
    command(
        "GET",
        get_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "string",
        summary="Returns the string value of a key.",
    ),
    command(
        "SET",
        set_command,
        -3,
        "write",
        (1, 1, 1),
        "string",
        summary="Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
    ),
    command(
        "SETNX",
        setnx_command,
        3,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Set the string value of a key only when the key doesn't exist.",
    ),
    command(
        "SETEX",
        setex_command,
        4,
        "write",
        (1, 1, 1),
        "string",
        summary="Sets the string value and expiration time of a key. Creates the key if it doesn't exist.",
    ),
    command(
        "PSETEX",
        psetex_command,
        4,
        "write",
        (1, 1, 1),
        "string",
        summary="Sets both string value and expiration time in milliseconds of a key. The key is created if it doesn't exist.",
    ),
    command(
        "GETSET",
        getset_command,
        3,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Returns the previous string value of a key after setting it to a new value.",
    ),
    command(
        "GETDEL",
        getdel_command,
        2,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Returns the string value of a key after deleting the key.",
    ),
    command(
        "GETEX",
        getex_command,
        -2,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Returns the string value of a key after setting its expiration time.",
    ),
    command(
        "MGET",
        mget_command,
        -2,
        "readonly fast",
        (1, -1, 1),
        "string",
        summary="Atomically returns the string values of one or more keys.",
    ),
    command(
        "MSET",
        mset_command,
        -3,
        "write",
        (1, -1, 2),
        "string",
        summary="Atomically creates or modifies the string values of one or more keys.",
    ),
    command(
        "MSETNX",
        msetnx_command,
        -3,
        "write",
        (1, -1, 2),
        "string",
        summary="Atomically modifies the string values of one or more keys only when all keys don't exist.",
    ),
    command(
        "INCR",
        incr_command,
        2,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
    ),
    command(
        "DECR",
        decr_command,
        2,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't exist.",
    ),
    command(
        "INCRBY",
        incrby_command,
        3,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Increments the integer value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
    ),
    command(
        "DECRBY",
        decrby_command,
        3,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Decrements a number from the integer value of a key. Uses 0 as initial value if the key doesn't exist.",
    ),
    command(
        "INCRBYFLOAT",
        incrbyfloat_command,
        3,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Increment the floating point value of a key by a number. Uses 0 as initial value if the key doesn't exist.",
    ),
    command(
        "APPEND",
        append_command,
        3,
        "write fast",
        (1, 1, 1),
        "string",
        summary="Appends a string to the value of a key. Creates the key if it doesn't exist.",
    ),
    command(
        "STRLEN",
        strlen_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "string",
        summary="Returns the length of a string value.",
    ),
    command(
        "GETRANGE",
        getrange_command,
        4,
        "readonly",
        (1, 1, 1),
        "string",
        summary="Returns a substring of the string stored at a key.",
    ),
    command(
        "SETRANGE",
        setrange_command,
        4,
        "write",
        (1, 1, 1),
        "string",
        summary="Overwrites a part of a string value with another by an offset. Creates the key if it doesn't exist.",
    ),
]
