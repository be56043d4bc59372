"""Keyspace commands (Redis 7 db.c / expire.c): DEL, EXISTS, the EXPIRE family, TTL, TYPE, RENAME,
KEYS, SCAN, DBSIZE, RANDOMKEY.

Expiry times are absolute Unix milliseconds (ctx.now_ms is the command's one instant). Every EXPIRE
variant is logged as PEXPIREAT, so a replay of the append-only file never extends a TTL; an expiry
already in the past deletes the key and is logged as DEL, as Redis does.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context); they
mutate the Keyspace's values in place and never block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvserver.commands.table import Command, command
from kvserver.keyspace import type_name
from kvserver.replies import NO_SUCH_KEY, OK, SYNTAX, CommandError, Reply, SimpleString
from kvserver.types.glob import compile_glob
from kvserver.types.numbers import INT64_MAX, INT64_MIN, parse_int

if TYPE_CHECKING:
    from kvserver.context import CommandContext

_TYPE_REPLIES = {
    name: SimpleString(name.decode()) for name in (b"string", b"list", b"hash", b"set", b"zset")
}
_NONE = SimpleString("none")


def del_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _delete_keys(ctx, argv)


def unlink_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    # Redis frees values in a background thread; here freeing happens at once, like DEL.
    return _delete_keys(ctx, argv)


def _delete_keys(ctx: CommandContext, argv: list[bytes]) -> int:
    db = ctx.db
    now = ctx.now_ms
    deleted = 0
    for key in argv[1:]:
        if db.lookup(key, now) is not None:
            db.delete(key)
            deleted += 1
    if not deleted:
        ctx.no_propagation()
    return deleted


def exists_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    lookup = ctx.db.lookup
    now = ctx.now_ms
    return sum(1 for key in argv[1:] if lookup(key, now) is not None)


def _expire(ctx: CommandContext, argv: list[bytes], seconds: bool, absolute: bool) -> Reply:
    name = argv[0].decode(errors="replace").lower()
    key = argv[1]
    nx = xx = gt = lt = False
    for raw in argv[3:]:
        opt = raw.upper()
        if opt == b"NX":
            nx = True
        elif opt == b"XX":
            xx = True
        elif opt == b"GT":
            gt = True
        elif opt == b"LT":
            lt = True
        else:
            raise CommandError(f"ERR Unsupported option {raw.decode(errors='replace')}")
    if nx and (xx or gt or lt):
        raise CommandError("ERR NX and XX, GT or LT options at the same time are not compatible")
    if gt and lt:
        raise CommandError("ERR GT and LT options at the same time are not compatible")
    when = parse_int(argv[2])
    invalid = f"ERR invalid expire time in '{name}' command"
    if seconds:
        # C's LLONG_MIN / 1000 truncates toward zero (-9223372036854775); Python's // floors.
        if when > INT64_MAX // 1000 or when < -(-INT64_MIN // 1000):
            raise CommandError(invalid)
        when *= 1000
    if not absolute:
        if when > INT64_MAX - ctx.now_ms:
            raise CommandError(invalid)
        when += ctx.now_ms
    db = ctx.db
    ctx.no_propagation()
    if db.lookup(key, ctx.now_ms) is None:
        return 0
    current = db.get_expire(key)
    if nx and current is not None:
        return 0
    if xx and current is None:
        return 0
    # A key without a TTL has an infinite one: GT never beats it, LT always does.
    if gt and (current is None or when <= current):
        return 0
    if lt and current is not None and when >= current:
        return 0
    if when <= ctx.now_ms:
        db.delete(key)
        ctx.propagate_as([b"DEL", key])
        return 1
    db.set_expire(key, when)
    ctx.propagate_as([b"PEXPIREAT", key, b"%d" % when])
    return 1


def expire_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _expire(ctx, argv, True, False)


def pexpire_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _expire(ctx, argv, False, False)


def expireat_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _expire(ctx, argv, True, True)


def pexpireat_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _expire(ctx, argv, False, True)


def _ttl(ctx: CommandContext, key: bytes, ms: bool, absolute: bool = False) -> int:
    db = ctx.db
    if db.lookup(key, ctx.now_ms) is None:
        return -2
    when = db.get_expire(key)
    if when is None:
        return -1
    if absolute:
        return when if ms else (when + 500) // 1000  # Redis rounds to the nearest second
    left = max(when - ctx.now_ms, 0)
    return left if ms else (left + 500) // 1000


def ttl_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _ttl(ctx, argv[1], False)


def pttl_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _ttl(ctx, argv[1], True)


def expiretime_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _ttl(ctx, argv[1], False, absolute=True)


def pexpiretime_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _ttl(ctx, argv[1], True, absolute=True)


def persist_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    db = ctx.db
    if db.lookup(argv[1], ctx.now_ms) is not None and db.persist(argv[1]):
        return 1
    ctx.no_propagation()
    return 0


def type_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    value = ctx.db.lookup(argv[1], ctx.now_ms)
    if value is None:
        return _NONE
    return _TYPE_REPLIES.get(type_name(value), _NONE)


def _rename(ctx: CommandContext, argv: list[bytes], nx: bool) -> Reply:
    src, dst = argv[1], argv[2]
    db = ctx.db
    now = ctx.now_ms
    value = db.lookup(src, now)
    if value is None:
        raise CommandError(NO_SUCH_KEY)
    if src == dst:
        ctx.no_propagation()
        return 0 if nx else OK
    if nx and db.lookup(dst, now) is not None:
        ctx.no_propagation()
        return 0
    expire_at = db.get_expire(src)
    db.delete(src)
    db.store(dst, value, expire_at)
    return 1 if nx else OK


def rename_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _rename(ctx, argv, False)


def renamenx_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _rename(ctx, argv, True)


_KEYS_BATCH = 65536  # keys matched between two checks for a shutdown (a few ms of work)


def _live_matching(ctx: CommandContext, keys: list[bytes], pattern: bytes) -> list[bytes]:
    """The keys that match pattern and are live (KEYS, SCAN), in batches: over millions of keys this
    runs for seconds, and a SIGTERM must not wait for it. Checked before each batch, the first too:
    a pipeline of KEYS after a SIGTERM stops at once."""
    db = ctx.db
    now = ctx.now_ms
    match = compile_glob(pattern).fullmatch if pattern != b"*" else None
    lookup = db.lookup
    out: list[bytes] = []
    for i in range(0, len(keys), _KEYS_BATCH):
        ctx.check_shutdown()
        batch = keys[i : i + _KEYS_BATCH]
        if match is not None:
            batch = [k for k in batch if match(k) is not None]
        out += [k for k in batch if lookup(k, now) is not None]
    return out


def keys_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _live_matching(ctx, ctx.db.keys_snapshot(), argv[1])


def parse_scan_options(argv: list[bytes], start: int, allow_type: bool) -> tuple[int, bytes, bytes]:
    """COUNT, MATCH and (SCAN only) TYPE options shared by SCAN and HSCAN/SSCAN/ZSCAN."""
    count = 10
    pattern = b"*"
    kind = b""
    i = start
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        if i + 1 >= n:
            raise CommandError(SYNTAX)
        if opt == b"COUNT":
            count = parse_int(argv[i + 1])
            if count < 1:
                raise CommandError(SYNTAX)
        elif opt == b"MATCH":
            pattern = argv[i + 1]
        elif opt == b"TYPE" and allow_type:
            kind = argv[i + 1].lower()
        else:
            raise CommandError(SYNTAX)
        i += 2
    return count, pattern, kind


def parse_cursor(arg: bytes) -> int:
    if not arg.isdigit():
        raise CommandError("ERR invalid cursor")
    cursor = int(arg)
    if cursor >= 2**64:
        raise CommandError("ERR invalid cursor")
    return cursor


def scan_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    cursor = parse_cursor(argv[1])
    count, pattern, kind = parse_scan_options(argv, 2, allow_type=True)
    db = ctx.db
    next_cursor, keys = db.scan(cursor, count)
    keys = _live_matching(ctx, keys, pattern)  # a COUNT of millions is a KEYS
    if kind:
        keys = [k for k in keys if type_name(db.lookup(k, ctx.now_ms)) == kind]
    return [b"%d" % next_cursor, keys]


def dbsize_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return len(ctx.db)


def randomkey_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return ctx.db.random_key(ctx.now_ms)


COMMANDS: list[Command] = [
    command(
        "DEL", del_command, -2, "write", (1, -1, 1), "generic", summary="Deletes one or more keys."
    ),
    command(
        "UNLINK",
        unlink_command,
        -2,
        "write fast",
        (1, -1, 1),
        "generic",
        summary="Asynchronously deletes one or more keys.",
    ),
    command(
        "EXISTS",
        exists_command,
        -2,
        "readonly fast",
        (1, -1, 1),
        "generic",
        summary="Determines whether one or more keys exist.",
    ),
    command(
        "EXPIRE",
        expire_command,
        -3,
        "write fast",
        (1, 1, 1),
        "generic",
        summary="Sets the expiration time of a key in seconds.",
    ),
    command(
        "PEXPIRE",
        pexpire_command,
        -3,
        "write fast",
        (1, 1, 1),
        "generic",
        summary="Sets the expiration time of a key in milliseconds.",
    ),
    command(
        "EXPIREAT",
        expireat_command,
        -3,
        "write fast",
        (1, 1, 1),
        "generic",
        summary="Sets the expiration time of a key to a Unix timestamp.",
    ),
    command(
        "PEXPIREAT",
        pexpireat_command,
        -3,
        "write fast",
        (1, 1, 1),
        "generic",
        summary="Sets the expiration time of a key to a Unix milliseconds timestamp.",
    ),
    command(
        "TTL",
        ttl_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "generic",
        summary="Returns the expiration time in seconds of a key.",
    ),
    command(
        "PTTL",
        pttl_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "generic",
        summary="Returns the expiration time in milliseconds of a key.",
    ),
    command(
        "EXPIRETIME",
        expiretime_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "generic",
        summary="Returns the expiration time of a key as a Unix timestamp.",
    ),
    command(
        "PEXPIRETIME",
        pexpiretime_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "generic",
        summary="Returns the expiration time of a key as a Unix milliseconds timestamp.",
    ),
    command(
        "PERSIST",
        persist_command,
        2,
        "write fast",
        (1, 1, 1),
        "generic",
        summary="Removes the expiration time of a key.",
    ),
    command(
        "TYPE",
        type_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "generic",
        summary="Determines the type of value stored at a key.",
    ),
    command(
        "RENAME",
        rename_command,
        3,
        "write",
        (1, 2, 1),
        "generic",
        summary="Renames a key and overwrites the destination.",
    ),
    command(
        "RENAMENX",
        renamenx_command,
        3,
        "write fast",
        (1, 2, 1),
        "generic",
        summary="Renames a key only when the target key name doesn't exist.",
    ),
    command(
        "KEYS",
        keys_command,
        2,
        "readonly",
        (0, 0, 0),
        "generic",
        summary="Returns all key names that match a pattern.",
    ),
    command(
        "SCAN",
        scan_command,
        -2,
        "readonly",
        (0, 0, 0),
        "generic",
        summary="Iterates over the key names in the database.",
    ),
    command(
        "DBSIZE",
        dbsize_command,
        1,
        "readonly fast",
        (0, 0, 0),
        "server",
        summary="Returns the number of keys in the database.",
    ),
    command(
        "RANDOMKEY",
        randomkey_command,
        1,
        "readonly",
        (0, 0, 0),
        "generic",
        summary="Returns a random key name from the database.",
    ),
]
