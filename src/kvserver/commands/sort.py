"""SORT and SORT_RO (Redis 7.0 sort.c): sort a list, set or sorted set, optionally by external keys.

    SORT key [BY pattern] [LIMIT offset count] [GET pattern ...] [ASC|DESC] [ALPHA] [STORE destination]

Patterns: the first `*` is replaced by the element; `pattern->field` reads a hash field; GET `#` is the
element itself. A BY pattern without `*` means "do not sort" (the container's own order; a set's order
is then arbitrary, as in Redis). Numeric sorting parses each weight as a double (a missing weight is 0)
and breaks ties by the element's bytes, so the result is deterministic, as Redis's is; ALPHA compares
bytes (Redis's strcoll in the C locale). STORE writes a list (deleting the destination when empty).

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context).
"""

from __future__ import annotations

import functools
from collections import deque
from typing import TYPE_CHECKING, Any

from kvserver.commands.table import Command, command
from kvserver.replies import SYNTAX, WRONGTYPE, CommandError, Reply
from kvserver.types.numbers import parse_float, parse_int
from kvserver.types.zset import SortedSet

if TYPE_CHECKING:
    from kvserver.context import CommandContext

NOT_DOUBLE = "ERR One or more scores can't be converted into double"


def _lookup_pattern(ctx: CommandContext, pattern: bytes, element: bytes) -> bytes | None:
    """Redis's lookupKeyByPattern: the string (or hash field) a BY/GET pattern names for `element`."""
    if pattern == b"#":
        return element
    star = pattern.find(b"*")
    if star < 0:
        return None
    field: bytes | None = None
    arrow = pattern.find(b"->", star + 1)
    if arrow >= 0 and arrow + 2 < len(pattern):
        field = pattern[arrow + 2 :]
        key_pattern = pattern[:arrow]
    else:
        key_pattern = pattern
    key = key_pattern[:star] + element + key_pattern[star + 1 :]
    value = ctx.db.lookup(key, ctx.now_ms)
    if value is None:
        return None
    if field is not None:
        if type(value) is not dict:
            return None
        result: bytes | None = value.get(field)
        return result
    if type(value) is not bytes:
        return None
    return value


def _sort(ctx: CommandContext, argv: list[bytes], readonly: bool) -> Reply:
    key = argv[1]
    desc = alpha = False
    offset, count = 0, -1
    by: bytes | None = None
    gets: list[bytes] = []
    store: bytes | None = None
    i = 2
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        left = n - i - 1
        if opt == b"ASC":
            desc = False
        elif opt == b"DESC":
            desc = True
        elif opt == b"ALPHA":
            alpha = True
        elif opt == b"LIMIT" and left >= 2:
            offset, count = parse_int(argv[i + 1]), parse_int(argv[i + 2])
            i += 2
        elif opt == b"STORE" and left >= 1 and not readonly:
            store = argv[i + 1]
            i += 1
        elif opt == b"BY" and left >= 1:
            by = argv[i + 1]
            i += 1
        elif opt == b"GET" and left >= 1:
            gets.append(argv[i + 1])
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    value = ctx.db.lookup(key, ctx.now_ms)
    if value is None:
        elements: list[bytes] = []
    elif type(value) is deque or type(value) is set:
        elements = list(value)
    elif type(value) is SortedSet:
        elements = [m for m, _ in value]
    else:
        raise CommandError(WRONGTYPE)
    dont_sort = by is not None and b"*" not in by
    if dont_sort and type(value) is set and store is not None:
        # Redis sorts a set anyway here, so what STORE writes (and replicates) is deterministic.
        dont_sort, alpha, by = False, True, None
    if dont_sort and desc and type(value) is not set:
        elements.reverse()
    if not dont_sort:
        elements = _sorted(ctx, elements, by, alpha, desc)
    start = max(offset, 0)
    if start >= len(elements):
        window: list[bytes] = []
    else:
        end = len(elements) if count < 0 else min(len(elements), start + count)
        window = elements[start:end]
    if gets:
        out: list[Any] = [_lookup_pattern(ctx, g, e) for e in window for g in gets]
    else:
        out = list(window)
    if store is None:
        ctx.no_propagation()
        return out
    if ctx.server.watched:
        ctx.server.touch_keys(ctx.client.db_index, [store])
    if out:
        ctx.db.store(store, deque(b"" if x is None else x for x in out))
    else:
        ctx.db.delete(store)
    return len(out)


def _sorted(
    ctx: CommandContext, elements: list[bytes], by: bytes | None, alpha: bool, desc: bool
) -> list[bytes]:
    weights: list[Any]
    weights = [_lookup_pattern(ctx, by, e) for e in elements] if by is not None else list(elements)
    if not alpha:
        numeric: list[float] = []
        for w in weights:
            if w is None:
                numeric.append(0.0)
                continue
            try:
                numeric.append(parse_float(w))
            except CommandError:
                raise CommandError(NOT_DOUBLE) from None
        pairs = sorted(zip(numeric, elements, strict=True), reverse=desc)
        return [e for _, e in pairs]
    if by is None:
        return sorted(elements, reverse=desc)

    def compare(a: tuple[bytes | None, bytes], b: tuple[bytes | None, bytes]) -> int:
        wa, wb = a[0], b[0]
        if wa is None or wb is None:
            cmp = 0 if wa is wb else (-1 if wa is None else 1)
        else:
            cmp = (wa > wb) - (wa < wb)
        return -cmp if desc else cmp

    pairs2 = sorted(zip(weights, elements, strict=True), key=functools.cmp_to_key(compare))
    return [e for _, e in pairs2]


def sort_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _sort(ctx, argv, readonly=False)


def sort_ro_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _sort(ctx, argv, readonly=True)


COMMANDS: list[Command] = [
    command("SORT", sort_command, -2, "write", (1, 1, 1), "generic",
            summary="Sorts the elements in a list, a set, or a sorted set, optionally storing the result."),
    command("SORT_RO", sort_ro_command, -2, "readonly", (1, 1, 1), "generic",
            summary="Returns the sorted elements of a list, a set, or a sorted set."),
]  # fmt: skip
