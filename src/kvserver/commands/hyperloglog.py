"""PFADD, PFCOUNT, PFMERGE (Redis 7.0 hyperloglog.c) over kvserver.types.hyperloglog, which computes
exactly what Redis computes. An HLL is a string value: TYPE says string, GET returns its bytes, and a
string that is not an HLL is refused with Redis's "WRONGTYPE Key is not a valid HyperLogLog string
value.".

PFCOUNT of one key refreshes the cardinality cached in the value (as Redis does) without logging
anything: the cache is derived data, a replay recomputes it.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvserver.commands.table import Command, command
from kvserver.replies import OK, CommandError, Reply
from kvserver.types import hyperloglog as hll

if TYPE_CHECKING:
    from kvserver.context import CommandContext

NOT_HLL = "WRONGTYPE Key is not a valid HyperLogLog string value."
CORRUPTED = "INVALIDOBJ Corrupted HLL object detected"


def _registers(value: bytes) -> bytearray:
    try:
        return hll.decode(value)
    except hll.InvalidHLL as exc:
        raise CommandError(CORRUPTED if exc.corrupted else NOT_HLL) from None


def _load(ctx: CommandContext, key: bytes) -> tuple[bytes | None, bytearray | None]:
    value: bytes | None = ctx.db.lookup_typed(key, ctx.now_ms, bytes)
    if value is None:
        return None, None
    return value, _registers(value)


def _sparse_max(ctx: CommandContext) -> int:
    """hll-sparse-max-bytes as set by CONFIG SET (an otherwise unknown parameter), default 3000."""
    raw = ctx.server.config.extra.get("hll-sparse-max-bytes")
    if raw is not None and raw.isdigit():
        return int(raw)
    return hll.SPARSE_MAX_BYTES


def pfadd_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    key = argv[1]
    old, regs = _load(ctx, key)
    created = regs is None
    if regs is None:
        regs = hll.empty_registers()
    changed = False
    for element in argv[2:]:
        index, run = hll.register_of(element)
        if run > regs[index]:
            regs[index] = run
            changed = True
    if not (created or changed):
        ctx.no_propagation()
        return 0
    new = hll.encode(
        regs, dense=old is not None and hll.is_dense(old), sparse_max_bytes=_sparse_max(ctx)
    )
    new = hll.keep_stale_cache(new, old)
    if old is None:
        ctx.db.store(key, new)
    else:
        ctx.db.replace(key, new)
    return 1


def pfcount_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    if len(argv) == 2:
        value, regs = _load(ctx, argv[1])
        if value is None or regs is None:
            return 0
        cached = hll.cached_count(value)
        if cached is not None:
            return cached
        result = hll.count(regs)
        refreshed = hll.encode(
            regs, result, dense=hll.is_dense(value), sparse_max_bytes=_sparse_max(ctx)
        )
        ctx.db.replace(argv[1], refreshed)
        return result
    merged = hll.empty_registers()
    for key in argv[1:]:
        _, regs = _load(ctx, key)
        if regs is not None:
            merged = bytearray(map(max, merged, regs))
    return hll.count(merged)


def pfmerge_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    dest = argv[1]
    merged = hll.empty_registers()
    dest_exists = False
    for key in argv[1:]:
        _value, regs = _load(ctx, key)
        if regs is None:
            continue
        if key == dest:
            dest_exists = True
        merged = bytearray(map(max, merged, regs))
    new = hll.encode(merged)
    if dest_exists:
        ctx.db.replace(dest, new)
    else:
        ctx.db.store(dest, new)
    return OK


COMMANDS: list[Command] = [
    command("PFADD", pfadd_command, -2, "write fast", (1, 1, 1), "hyperloglog",
            summary="Adds elements to a HyperLogLog key. Creates the key if it doesn't exist."),
    command("PFCOUNT", pfcount_command, -2, "readonly", (1, -1, 1), "hyperloglog",
            summary="Returns the approximated cardinality of the set(s) observed by the HyperLogLog key(s)."),
    command("PFMERGE", pfmerge_command, -2, "write", (1, -1, 1), "hyperloglog",
            summary="Merges one or more HyperLogLog values into a single key."),
]  # fmt: skip
