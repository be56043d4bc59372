"""Sorted-set commands over several keys or whole ranges (Redis 7.0 t_zset.c): ZUNION, ZINTER, ZDIFF and
their STORE forms, ZINTERCARD, ZRANGESTORE, ZREMRANGEBYSCORE/RANK/LEX, ZRANDMEMBER, ZMPOP.

Inputs of ZUNION/ZINTER/ZDIFF(STORE) and ZINTERCARD may be sets as well as sorted sets (a set member
counts with score 1), as in Redis. Weighted scores follow Redis's arithmetic: `weight * score` that is
NaN (0 * inf) becomes 0, and so does a SUM that is NaN (inf + -inf). Results are ordered by (score,
member) like every sorted set. A STORE with an empty result deletes the destination.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context).
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from kvserver.commands.table import Command, command
from kvserver.commands.zsets import (
    check_range_options,
    lex_bound,
    parse_range_options,
    range_pairs,
    score_bound,
    score_reply,
    with_scores,
    zset_at,
)
from kvserver.replies import NULL_ARRAY, SYNTAX, WRONGTYPE, CommandError, Reply
from kvserver.types.numbers import (
    parse_float,
    parse_int,
    parse_mpop_tail,
    parse_numkeys,
)
from kvserver.types.zset import SortedSet

if TYPE_CHECKING:
    from kvserver.context import CommandContext

MAX_RANDOM_REPLY = 1 << 24  # ZRANDMEMBER with a negative count: at most this many draws per reply


def _members(ctx: CommandContext, key: bytes) -> dict[bytes, float] | None:
    """member -> score of a sorted set or a set (score 1) at `key`; None if missing."""
    value = ctx.db.lookup(key, ctx.now_ms)
    if value is None:
        return None
    if type(value) is SortedSet:
        return {m: s for m, s in value}
    if type(value) is set:
        return dict.fromkeys(value, 1.0)
    raise CommandError(WRONGTYPE)


def _numkeys(argv: list[bytes], index: int) -> int:
    """numkeys of the ZUNION family and ZINTERCARD (their errors differ from LMPOP/ZMPOP's)."""
    numkeys = parse_int(argv[index])
    if numkeys < 1:
        name = argv[0].decode(errors="replace").lower()
        raise CommandError(f"ERR at least 1 input key is needed for '{name}' command")
    if numkeys > len(argv) - index - 1:
        raise CommandError(SYNTAX)
    return numkeys


def _combine(
    ctx: CommandContext, argv: list[bytes], numkeys_index: int, op: str, store: bool
) -> tuple[list[tuple[bytes, float]], bool]:
    """Parse and compute ZUNION/ZINTER/ZDIFF[STORE]: (sorted result pairs, WITHSCORES given)."""
    numkeys = _numkeys(argv, numkeys_index)
    first = numkeys_index + 1
    keys = argv[first : first + numkeys]
    inputs = [_members(ctx, k) for k in keys]
    weights = [1.0] * numkeys
    aggregate = "sum"
    withscores = False
    i = first + numkeys
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        remaining = n - i - 1
        if op != "diff" and opt == b"WEIGHTS" and remaining >= numkeys:
            weights = [
                parse_float(w, "ERR weight value is not a float")
                for w in argv[i + 1 : i + 1 + numkeys]
            ]
            i += 1 + numkeys
        elif op != "diff" and opt == b"AGGREGATE" and remaining >= 1:
            kind = argv[i + 1].upper()
            if kind not in (b"SUM", b"MIN", b"MAX"):
                raise CommandError(SYNTAX)
            aggregate = kind.decode().lower()
            i += 2
        elif opt == b"WITHSCORES" and not store:
            withscores = True
            i += 1
        else:
            raise CommandError(SYNTAX)

    def weighted(score: float, weight: float) -> float:
        value = score * weight
        return 0.0 if math.isnan(value) else value

    result: dict[bytes, float] = {}
    if op == "diff":
        base = inputs[0] or {}
        others = [x for x in inputs[1:] if x]
        result = {m: s for m, s in base.items() if not any(m in o for o in others)}
    elif op == "inter":
        if all(x is not None for x in inputs):
            present = [x for x in inputs if x is not None]
            smallest = min(range(len(present)), key=lambda j: len(present[j]))
            for member in present[smallest]:
                if all(member in x for x in present):
                    total = weighted(present[0][member], weights[0])
                    for x, w in zip(present[1:], weights[1:], strict=True):
                        total = _aggregate(aggregate, total, weighted(x[member], w))
                    result[member] = total
    else:
        for maybe, w in zip(inputs, weights, strict=True):
            if not maybe:
                continue
            for member, score in maybe.items():
                value = weighted(score, w)
                old = result.get(member)
                result[member] = value if old is None else _aggregate(aggregate, old, value)
    pairs = sorted(result.items(), key=lambda p: (p[1], p[0]))
    return pairs, withscores


def _aggregate(kind: str, a: float, b: float) -> float:
    if kind == "sum":
        total = a + b
        return 0.0 if math.isnan(total) else total
    return min(a, b) if kind == "min" else max(a, b)


def _reply(ctx: CommandContext, pairs: list[tuple[bytes, float]], withscores: bool) -> Reply:
    if withscores:
        return with_scores(ctx, pairs)
    return [m for m, _ in pairs]


def _store(ctx: CommandContext, dest: bytes, pairs: list[tuple[bytes, float]]) -> int:
    if pairs:
        ctx.db.store(dest, SortedSet(pairs))
    else:
        ctx.db.delete(dest)
    return len(pairs)


def zunion_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _reply(ctx, *_combine(ctx, argv, 1, "union", False))


def zinter_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _reply(ctx, *_combine(ctx, argv, 1, "inter", False))


def zdiff_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _reply(ctx, *_combine(ctx, argv, 1, "diff", False))


def zunionstore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _store(ctx, argv[1], _combine(ctx, argv, 2, "union", True)[0])


def zinterstore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _store(ctx, argv[1], _combine(ctx, argv, 2, "inter", True)[0])


def zdiffstore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _store(ctx, argv[1], _combine(ctx, argv, 2, "diff", True)[0])


def zintercard_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    numkeys = _numkeys(argv, 1)
    keys = argv[2 : 2 + numkeys]
    limit = 0
    rest = argv[2 + numkeys :]
    if rest:
        if len(rest) != 2 or rest[0].upper() != b"LIMIT":
            raise CommandError(SYNTAX)
        limit = parse_int(rest[1], "ERR LIMIT can't be negative")
        if limit < 0:
            raise CommandError("ERR LIMIT can't be negative")
    inputs = [_members(ctx, k) for k in keys]
    if any(x is None for x in inputs):
        return 0
    present = [x for x in inputs if x is not None]
    present.sort(key=len)
    count = 0
    for member in present[0]:
        if all(member in x for x in present[1:]):
            count += 1
            if limit and count >= limit:
                break
    return count


def zrangestore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    by, reverse, limit, withscores = parse_range_options(argv, 5, allow_by=True)
    if withscores:
        raise CommandError(SYNTAX)
    check_range_options(by, limit, False)
    pairs = range_pairs(ctx, argv[2], argv[3], argv[4], by, reverse, limit)
    return _store(ctx, argv[1], pairs)


def _zremrange(ctx: CommandContext, argv: list[bytes], by: str) -> Reply:
    key = argv[1]
    if by == "index":
        start, stop = parse_int(argv[2]), parse_int(argv[3])
    elif by == "score":
        lo, lo_ex = score_bound(argv[2])
        hi, hi_ex = score_bound(argv[3])
    else:
        lob, lob_ex = lex_bound(argv[2], True)
        hib, hib_ex = lex_bound(argv[3], False)
    z = zset_at(ctx, key)
    if z is None:
        ctx.no_propagation()
        return 0
    if by == "index":
        doomed = z.range_by_index(start, stop)
    elif by == "score":
        doomed = z.range_by_score(lo, lo_ex, hi, hi_ex)
    else:
        doomed = z.range_by_lex(lob, lob_ex, hib, hib_ex)
    for member, _ in doomed:
        z.remove(member)
    if not z:
        ctx.db.delete(key)
    if not doomed:
        ctx.no_propagation()
    return len(doomed)


def zremrangebyrank_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _zremrange(ctx, argv, "index")


def zremrangebyscore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _zremrange(ctx, argv, "score")


def zremrangebylex_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _zremrange(ctx, argv, "lex")


def zrandmember_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    if len(argv) > 4 or (len(argv) == 4 and argv[3].upper() != b"WITHSCORES"):
        raise CommandError(SYNTAX)
    withscores = len(argv) == 4
    if len(argv) == 2:
        z = zset_at(ctx, argv[1])
        if z is None:
            return None
        return _one(z)
    count = parse_int(argv[2])
    if count < -(2**63 - 1) or (withscores and count < -(2**63 - 1) // 2):
        raise CommandError("ERR value is out of range")
    z = zset_at(ctx, argv[1])
    if z is None or count == 0:
        return []
    pairs = list(z)
    if count > 0:
        picked = random.sample(pairs, count) if count < len(pairs) else pairs
        if count < len(pairs):
            random.shuffle(picked)
    else:
        if -count > MAX_RANDOM_REPLY:
            raise CommandError("ERR value is out of range")
        picked = random.choices(pairs, k=-count)
    if withscores:
        return with_scores(ctx, picked)
    return [m for m, _ in picked]


def _one(z: SortedSet) -> bytes:
    member, _ = z.range_by_index(i := random.randrange(len(z)), i)[0]
    return member


def zmpop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    numkeys = parse_numkeys(argv, 1, SYNTAX)
    minimum, count = parse_mpop_tail(argv, 2 + numkeys, (b"MIN", b"MAX"))
    for key in argv[2 : 2 + numkeys]:
        z = zset_at(ctx, key)
        if z is None:
            continue
        pairs = z.pop_min(count) if minimum else z.pop_max(count)
        if not z:
            ctx.db.delete(key)
        ctx.propagate_as([b"ZPOPMIN" if minimum else b"ZPOPMAX", key, b"%d" % len(pairs)])
        out: list[Any] = [[m, score_reply(ctx, s)] for m, s in pairs]
        return [key, out]
    ctx.no_propagation()
    return NULL_ARRAY


def _row(
    name: str, handler: Any, arity: int, flags: str, keys: tuple[int, int, int], summary: str
) -> Command:
    return command(name, handler, arity, flags, keys, "sorted-set", summary=summary)


COMMANDS: list[Command] = [
    _row(
        "ZUNION",
        zunion_command,
        -3,
        "readonly",
        (0, 0, 0),
        "Returns the union of multiple sorted sets.",
    ),
    _row(
        "ZINTER",
        zinter_command,
        -3,
        "readonly",
        (0, 0, 0),
        "Returns the intersect of multiple sorted sets.",
    ),
    _row(
        "ZDIFF",
        zdiff_command,
        -3,
        "readonly",
        (0, 0, 0),
        "Returns the difference between multiple sorted sets.",
    ),
    _row(
        "ZUNIONSTORE",
        zunionstore_command,
        -4,
        "write",
        (1, 1, 1),
        "Stores the union of multiple sorted sets in a key.",
    ),
    _row(
        "ZINTERSTORE",
        zinterstore_command,
        -4,
        "write",
        (1, 1, 1),
        "Stores the intersect of multiple sorted sets in a key.",
    ),
    _row(
        "ZDIFFSTORE",
        zdiffstore_command,
        -4,
        "write",
        (1, 1, 1),
        "Stores the difference of multiple sorted sets in a key.",
    ),
    _row(
        "ZINTERCARD",
        zintercard_command,
        -3,
        "readonly",
        (0, 0, 0),
        "Returns the number of members of the intersect of multiple sorted sets.",
    ),
    _row(
        "ZRANGESTORE",
        zrangestore_command,
        -5,
        "write",
        (1, 2, 1),
        "Stores a range of members from sorted set in a key.",
    ),
    _row(
        "ZREMRANGEBYRANK",
        zremrangebyrank_command,
        4,
        "write",
        (1, 1, 1),
        "Removes members in a sorted set within a range of indexes.",
    ),
    _row(
        "ZREMRANGEBYSCORE",
        zremrangebyscore_command,
        4,
        "write",
        (1, 1, 1),
        "Removes members in a sorted set within a range of scores.",
    ),
    _row(
        "ZREMRANGEBYLEX",
        zremrangebylex_command,
        4,
        "write",
        (1, 1, 1),
        "Removes members in a sorted set within a lexicographical range.",
    ),
    _row(
        "ZRANDMEMBER",
        zrandmember_command,
        -2,
        "readonly",
        (1, 1, 1),
        "Returns one or more random members from a sorted set.",
    ),
    _row(
        "ZMPOP",
        zmpop_command,
        -4,
        "write",
        (2, -1, 1),
        "Returns the highest- or lowest-scoring members from one or more sorted sets after removing them.",
    ),
]
