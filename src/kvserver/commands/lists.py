"""List commands (Redis 7 t_list.c). A list is a collections.deque[bytes]: O(1) at both ends,
O(n) by index like Redis's quicklist. An emptied list is deleted.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context); they
mutate the Keyspace's values in place and never block.
"""

from __future__ import annotations

from collections import deque
from itertools import islice
from typing import TYPE_CHECKING

from kvserver.commands.table import Command, command
from kvserver.replies import NO_SUCH_KEY, NULL_ARRAY, OK, SYNTAX, CommandError, Reply, wrong_arity
from kvserver.types.numbers import (
    INT64_MIN,
    optional_count,
    parse_int,
    parse_mpop_tail,
    parse_numkeys,
)

if TYPE_CHECKING:
    from kvserver.context import CommandContext


def _list(ctx: CommandContext, key: bytes) -> deque[bytes] | None:
    return ctx.db.lookup_typed(key, ctx.now_ms, deque)


def _push(ctx: CommandContext, argv: list[bytes], left: bool, only_existing: bool) -> Reply:
    lst = _list(ctx, argv[1])
    if lst is None:
        if only_existing:
            ctx.no_propagation()
            return 0
        lst = deque()
        ctx.db.store(argv[1], lst)
    if left:
        lst.extendleft(argv[2:])
    else:
        lst.extend(argv[2:])
    return len(lst)


def lpush_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _push(ctx, argv, True, False)


def rpush_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _push(ctx, argv, False, False)


def lpushx_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _push(ctx, argv, True, True)


def rpushx_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _push(ctx, argv, False, True)


def _pop(ctx: CommandContext, argv: list[bytes], left: bool) -> Reply:
    if len(argv) > 3:  # Redis answers an arity error here (SPOP and ZPOPMIN say "syntax error")
        raise CommandError(wrong_arity(argv[0].decode(errors="replace")))
    count = optional_count(argv, None)
    lst = _list(ctx, argv[1])
    if lst is None:
        ctx.no_propagation()
        return None if count is None else NULL_ARRAY
    pop = lst.popleft if left else lst.pop
    if count is None:
        value = pop()
        out: Reply = value
    else:
        out = [pop() for _ in range(min(count, len(lst)))]
        if not out:
            ctx.no_propagation()
    if not lst:
        ctx.db.delete(argv[1])
    return out


def lmpop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    """LMPOP numkeys key [key ...] LEFT|RIGHT [COUNT count]: pop from the first non-empty list;
    logged as LPOP/RPOP key count, as Redis propagates it."""
    numkeys = parse_numkeys(argv, 1, SYNTAX)
    left, count = parse_mpop_tail(argv, 2 + numkeys, (b"LEFT", b"RIGHT"))
    for key in argv[2 : 2 + numkeys]:
        lst = _list(ctx, key)
        if lst is None:
            continue
        pop = lst.popleft if left else lst.pop
        out = [pop() for _ in range(min(count, len(lst)))]
        if not lst:
            ctx.db.delete(key)
        ctx.propagate_as([b"LPOP" if left else b"RPOP", key, b"%d" % len(out)])
        return [key, out]
    ctx.no_propagation()
    return NULL_ARRAY


def lpop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _pop(ctx, argv, True)


def rpop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _pop(ctx, argv, False)


def llen_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    lst = _list(ctx, argv[1])
    return 0 if lst is None else len(lst)


def lindex_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    index = parse_int(argv[2])
    lst = _list(ctx, argv[1])
    if lst is None:
        return None
    if -len(lst) <= index < len(lst):
        return lst[index]
    return None


def lset_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    index = parse_int(argv[2])
    lst = _list(ctx, argv[1])
    if lst is None:
        raise CommandError(NO_SUCH_KEY)
    if not -len(lst) <= index < len(lst):
        raise CommandError("ERR index out of range")
    lst[index] = argv[3]
    return OK


def _clamp(start: int, stop: int, n: int) -> tuple[int, int]:
    """Redis's LRANGE/LTRIM index normalisation: a half-open [start, stop) window, maybe empty."""
    if start < 0:
        start = max(n + start, 0)
    if stop < 0:
        stop = n + stop
    stop = min(stop, n - 1)
    if start > stop or start >= n:
        return 0, 0
    return start, stop + 1


def lrange_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    start = parse_int(argv[2])
    stop = parse_int(argv[3])
    lst = _list(ctx, argv[1])
    if lst is None:
        return []
    n = len(lst)
    lo, hi = _clamp(start, stop, n)
    if hi - lo == n:
        return list(lst)
    if lo > n - hi:  # nearer the tail: walk from the right end
        out = list(islice(reversed(lst), n - hi, n - lo))
        out.reverse()
        return out
    return list(islice(lst, lo, hi))


def ltrim_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    start = parse_int(argv[2])
    stop = parse_int(argv[3])
    lst = _list(ctx, argv[1])
    if lst is None:
        return OK
    n = len(lst)
    lo, hi = _clamp(start, stop, n)
    if hi <= lo:
        ctx.db.delete(argv[1])
        return OK
    for _ in range(n - hi):
        lst.pop()
    for _ in range(lo):
        lst.popleft()
    return OK


def linsert_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    where = argv[2].upper()
    if where not in (b"BEFORE", b"AFTER"):
        raise CommandError(SYNTAX)
    lst = _list(ctx, argv[1])
    if lst is None:
        ctx.no_propagation()
        return 0
    try:
        index = lst.index(argv[3])
    except ValueError:
        ctx.no_propagation()
        return -1
    lst.insert(index if where == b"BEFORE" else index + 1, argv[4])
    return len(lst)


def lpos_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    rank = 1
    count: int | None = None
    maxlen = 0
    i = 3
    while i < len(argv):
        opt = argv[i].upper()
        if i + 1 >= len(argv):
            raise CommandError(SYNTAX)
        if opt == b"RANK":
            rank = parse_int(argv[i + 1])
            if rank == 0:
                raise CommandError(
                    "ERR RANK can't be zero: use 1 to start from the first match, 2 from the "
                    "second ... or use negative to start from the last match"
                )
            if rank == INT64_MIN:
                raise CommandError("ERR value is out of range")
        elif opt == b"COUNT":
            count = parse_int(argv[i + 1], "ERR COUNT can't be negative")
            if count < 0:
                raise CommandError("ERR COUNT can't be negative")
        elif opt == b"MAXLEN":
            maxlen = parse_int(argv[i + 1], "ERR MAXLEN can't be negative")
            if maxlen < 0:
                raise CommandError("ERR MAXLEN can't be negative")
        else:
            raise CommandError(SYNTAX)
        i += 2
    lst = _list(ctx, argv[1])
    if lst is None:
        return None if count is None else []
    element = argv[2]
    n = len(lst)
    limit = maxlen or n
    wanted = 1 if count is None else (count or n)
    skip = abs(rank) - 1
    found: list[int] = []
    items = reversed(lst) if rank < 0 else iter(lst)
    for seen, value in enumerate(islice(items, limit)):
        if value == element:
            if skip:
                skip -= 1
                continue
            found.append(n - 1 - seen if rank < 0 else seen)
            if len(found) >= wanted:
                break
    if count is None:
        return found[0] if found else None
    return found


def lrem_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    count = parse_int(argv[2])
    lst = _list(ctx, argv[1])
    if lst is None:
        ctx.no_propagation()
        return 0
    element = argv[3]
    limit = abs(count) or len(lst)
    kept: list[bytes] = []
    removed = 0
    source = reversed(lst) if count < 0 else iter(lst)
    for value in source:
        if removed < limit and value == element:
            removed += 1
        else:
            kept.append(value)
    if not removed:
        ctx.no_propagation()
        return 0
    if count < 0:
        kept.reverse()
    lst.clear()
    lst.extend(kept)
    if not lst:
        ctx.db.delete(argv[1])
    return removed


def _move(ctx: CommandContext, src: bytes, dst: bytes, from_left: bool, to_left: bool) -> Reply:
    source = _list(ctx, src)
    if source is None:
        ctx.no_propagation()
        return None
    target = _list(ctx, dst)  # WRONGTYPE on the destination before anything moves (Redis order)
    value = source.popleft() if from_left else source.pop()
    if not source and src != dst:
        ctx.db.delete(src)
    if target is None:
        if src == dst:
            target = source
        else:
            target = deque()
            ctx.db.store(dst, target)
    if to_left:
        target.appendleft(value)
    else:
        target.append(value)
    return value


def _side(arg: bytes) -> bool:
    side = arg.upper()
    if side == b"LEFT":
        return True
    if side == b"RIGHT":
        return False
    raise CommandError(SYNTAX)


def lmove_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _move(ctx, argv[1], argv[2], _side(argv[3]), _side(argv[4]))


def rpoplpush_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _move(ctx, argv[1], argv[2], False, True)


COMMANDS: list[Command] = [
    command(
        "LMPOP",
        lmpop_command,
        -4,
        "write",
        (2, -1, 1),
        "list",
        summary="Returns multiple elements from a list after removing them. Deletes the list if the last element was popped.",
    ),
    command(
        "LPUSH",
        lpush_command,
        -3,
        "write fast",
        (1, 1, 1),
        "list",
        summary="Prepends one or more elements to a list. Creates the key if it doesn't exist.",
    ),
    command(
        "RPUSH",
        rpush_command,
        -3,
        "write fast",
        (1, 1, 1),
        "list",
        summary="Appends one or more elements to a list. Creates the key if it doesn't exist.",
    ),
    command(
        "LPUSHX",
        lpushx_command,
        -3,
        "write fast",
        (1, 1, 1),
        "list",
        summary="Prepends one or more elements to a list only when the list exists.",
    ),
    command(
        "RPUSHX",
        rpushx_command,
        -3,
        "write fast",
        (1, 1, 1),
        "list",
        summary="Appends an element to a list only when the list exists.",
    ),
    command(
        "LPOP",
        lpop_command,
        -2,
        "write fast",
        (1, 1, 1),
        "list",
        summary="Returns the first elements in a list after removing it. Deletes the list if the last element was popped.",
    ),
    command(
        "RPOP",
        rpop_command,
        -2,
        "write fast",
        (1, 1, 1),
        "list",
        summary="Returns and removes the last elements of a list. Deletes the list if the last element was popped.",
    ),
    command(
        "LLEN",
        llen_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "list",
        summary="Returns the length of a list.",
    ),
    command(
        "LINDEX",
        lindex_command,
        3,
        "readonly",
        (1, 1, 1),
        "list",
        summary="Returns an element from a list by its index.",
    ),
    command(
        "LSET",
        lset_command,
        4,
        "write",
        (1, 1, 1),
        "list",
        summary="Sets the value of an element in a list by its index.",
    ),
    command(
        "LRANGE",
        lrange_command,
        4,
        "readonly",
        (1, 1, 1),
        "list",
        summary="Returns a range of elements from a list.",
    ),
    command(
        "LTRIM",
        ltrim_command,
        4,
        "write",
        (1, 1, 1),
        "list",
        summary="Removes elements from both ends a list. Deletes the list if all elements were trimmed.",
    ),
    command(
        "LINSERT",
        linsert_command,
        5,
        "write",
        (1, 1, 1),
        "list",
        summary="Inserts an element before or after another element in a list.",
    ),
    command(
        "LPOS",
        lpos_command,
        -3,
        "readonly",
        (1, 1, 1),
        "list",
        summary="Returns the index of matching elements in a list.",
    ),
    command(
        "LREM",
        lrem_command,
        4,
        "write",
        (1, 1, 1),
        "list",
        summary="Removes elements from a list. Deletes the list if the last element was removed.",
    ),
    command(
        "LMOVE",
        lmove_command,
        5,
        "write",
        (1, 2, 1),
        "list",
        summary="Returns an element after popping it from one list and pushing it to another. Deletes the list if the last element was moved.",
    ),
    command(
        "RPOPLPUSH",
        rpoplpush_command,
        3,
        "write",
        (1, 2, 1),
        "list",
        summary="Returns the last element of a list after removing and pushing it to another list. Deletes the list if the last element was popped.",
    ),
]
