"""Sorted-set commands (Redis 7 t_zset.c) over kvserver.types.zset.SortedSet.

Scores are returned as Python floats (RESP3 doubles; the codec writes RESP2 bulk strings in Redis's
format). WITHSCORES replies differ by protocol like Redis 7: RESP2 gets a flat [member, score, ...]
array, RESP3 an array of [member, score] pairs. An emptied sorted set is deleted.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context); they
mutate the Keyspace's values in place and never block.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from kvserver.commands.keys import parse_cursor, parse_scan_options
from kvserver.commands.table import Command, command
from kvserver.replies import SYNTAX, CommandError, Reply
from kvserver.types.glob import compile_glob
from kvserver.types.numbers import optional_count, parse_float, parse_int
from kvserver.types.zset import ABOVE_ALL_MEMBERS, SortedSet

if TYPE_CHECKING:
    from kvserver.context import CommandContext

NOT_FLOAT_RANGE = "ERR min or max is not a float"
NOT_LEX_RANGE = "ERR min or max not valid string range item"


def zset_at(ctx: CommandContext, key: bytes) -> SortedSet | None:
    return ctx.db.lookup_typed(key, ctx.now_ms, SortedSet)


def _resp3(ctx: CommandContext) -> bool:
    return getattr(ctx.client, "protocol", 2) == 3


def score_reply(ctx: CommandContext, score: float | None) -> Reply:
    """A score as Redis 7.0 sends it: RESP2 bulk text with 17 significant digits (`%.17g`, so 1.1 is
    `1.1000000000000001`; `inf`, `-inf`); RESP3 a double (its text is the codec's, the value the same)."""
    if score is None or _resp3(ctx):
        return score
    return b"%.17g" % score


def with_scores(ctx: CommandContext, pairs: list[tuple[bytes, float]]) -> list[Any]:
    if _resp3(ctx):
        return [[m, s] for m, s in pairs]
    out: list[Any] = []
    for m, s in pairs:
        out += (m, b"%.17g" % s)
    return out


def score_bound(arg: bytes) -> tuple[float, bool]:
    """'(1.5' -> (1.5, exclusive); '-inf', '+inf', '3' -> inclusive."""
    exclusive = arg[:1] == b"("
    if exclusive:
        arg = arg[1:]
    return parse_float(arg, NOT_FLOAT_RANGE), exclusive


def lex_bound(arg: bytes, low: bool) -> tuple[bytes | None, bool]:
    """'-' / '+' -> (None, ...): unbounded; '[x' inclusive; '(x' exclusive."""
    if arg == b"-":
        if low:
            return None, False
        return b"", True  # '-' as an upper bound: nothing is below it
    if arg == b"+":
        if not low:
            return None, False
        return ABOVE_ALL_MEMBERS, False  # '+' as a lower bound: nothing is above it
    if arg[:1] == b"[":
        return arg[1:], False
    if arg[:1] == b"(":
        return arg[1:], True
    raise CommandError(NOT_LEX_RANGE)


def zadd_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    nx = xx = gt = lt = ch = incr = False
    i = 2
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        if opt == b"NX":
            nx = True
        elif opt == b"XX":
            xx = True
        elif opt == b"GT":
            gt = True
        elif opt == b"LT":
            lt = True
        elif opt == b"CH":
            ch = True
        elif opt == b"INCR":
            incr = True
        else:
            break
        i += 1
    pairs = argv[i:]
    if not pairs or len(pairs) % 2:
        raise CommandError(SYNTAX)
    if nx and xx:
        raise CommandError("ERR XX and NX options at the same time are not compatible")
    if (gt and nx) or (lt and nx) or (gt and lt):
        raise CommandError("ERR GT, LT, and/or NX options at the same time are not compatible")
    if incr and len(pairs) > 2:
        raise CommandError("ERR INCR option supports a single increment-element pair")
    scores = [parse_float(pairs[j]) for j in range(0, len(pairs), 2)]
    key = argv[1]
    z = zset_at(ctx, key)
    if z is None:
        if xx:
            ctx.no_propagation()
            return None if incr else 0
        z = SortedSet()
        ctx.db.store(key, z)
    added = changed = 0
    result: float | None = None
    for score, member in zip(scores, pairs[1::2], strict=True):
        old = z.score(member)
        if old is None:
            if xx:
                continue
            if incr:
                result = score
            z.add(member, score)
            added += 1
            continue
        if nx:
            continue
        new = old + score if incr else score
        if incr and math.isnan(new):
            raise CommandError("ERR resulting score is not a number (NaN)")
        if (gt and new <= old) or (lt and new >= old):
            continue
        if incr:
            result = new
        if new != old:
            z.add(member, new)
            changed += 1
    if not z:
        ctx.db.delete(key)  # XX on new members only: nothing was added to the fresh set
    if not (added or changed):
        ctx.no_propagation()
    if incr:
        return score_reply(ctx, result)
    return added + changed if ch else added


def zincrby_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    delta = parse_float(argv[2])
    key = argv[1]
    z = zset_at(ctx, key)
    if z is None:
        z = SortedSet()
        ctx.db.store(key, z)
    old = z.score(argv[3])
    new = delta if old is None else old + delta
    if math.isnan(new):
        if not z:
            ctx.db.delete(key)
        raise CommandError("ERR resulting score is not a number (NaN)")
    z.add(argv[3], new)
    return score_reply(ctx, new)


def zrem_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    z = zset_at(ctx, argv[1])
    if z is None:
        ctx.no_propagation()
        return 0
    removed = sum(1 for m in argv[2:] if z.remove(m))
    if not z:
        ctx.db.delete(argv[1])
    if not removed:
        ctx.no_propagation()
    return removed


def zcard_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    z = zset_at(ctx, argv[1])
    return 0 if z is None else len(z)


def zscore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    z = zset_at(ctx, argv[1])
    return None if z is None else score_reply(ctx, z.score(argv[2]))


def zmscore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    z = zset_at(ctx, argv[1])
    if z is None:
        return [None] * (len(argv) - 2)
    return [score_reply(ctx, z.score(m)) for m in argv[2:]]


def _rank(ctx: CommandContext, argv: list[bytes], reverse: bool) -> Reply:
    withscore = False
    if len(argv) == 4:
        if argv[3].upper() != b"WITHSCORE":
            raise CommandError(SYNTAX)
        withscore = True
    elif len(argv) > 4:
        raise CommandError(SYNTAX)
    z = zset_at(ctx, argv[1])
    rank = None if z is None else z.rank(argv[2], reverse)
    if rank is None or z is None:
        return None
    if withscore:
        return [rank, score_reply(ctx, z.score(argv[2]))]
    return rank


def zrank_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _rank(ctx, argv, False)


def zrevrank_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _rank(ctx, argv, True)


def zcount_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    lo, lo_ex = score_bound(argv[2])
    hi, hi_ex = score_bound(argv[3])
    z = zset_at(ctx, argv[1])
    return 0 if z is None else z.count_by_score(lo, lo_ex, hi, hi_ex)


def zlexcount_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    lo, lo_ex = lex_bound(argv[2], True)
    hi, hi_ex = lex_bound(argv[3], False)
    z = zset_at(ctx, argv[1])
    return 0 if z is None else z.count_by_lex(lo, lo_ex, hi, hi_ex)


def range_pairs(
    ctx: CommandContext,
    key: bytes,
    start: bytes,
    stop: bytes,
    by: str,
    reverse: bool,
    limit: tuple[int, int] | None,
) -> list[tuple[bytes, float]]:
    """The one range engine behind ZRANGE, its older spellings and ZRANGESTORE (zrangeGenericCommand)."""
    offset, count = limit if limit is not None else (0, -1)
    if by == "index":
        lo_i, hi_i = parse_int(start), parse_int(stop)
        z = zset_at(ctx, key)
        return [] if z is None else z.range_by_index(lo_i, hi_i, reverse)
    if by == "score":
        # REV takes the bounds as max then min.
        (lo, lo_ex), (hi, hi_ex) = score_bound(start), score_bound(stop)
        if reverse:
            (lo, lo_ex), (hi, hi_ex) = (hi, hi_ex), (lo, lo_ex)
        z = zset_at(ctx, key)
        return [] if z is None else z.range_by_score(lo, lo_ex, hi, hi_ex, reverse, offset, count)
    if reverse:
        (lob, lob_ex), (hib, hib_ex) = lex_bound(stop, True), lex_bound(start, False)
    else:
        (lob, lob_ex), (hib, hib_ex) = lex_bound(start, True), lex_bound(stop, False)
    z = zset_at(ctx, key)
    return [] if z is None else z.range_by_lex(lob, lob_ex, hib, hib_ex, reverse, offset, count)


def check_range_options(by: str, limit: tuple[int, int] | None, withscores: bool) -> None:
    if limit is not None and by == "index":
        raise CommandError(
            "ERR syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
        )
    if withscores and by == "lex":
        raise CommandError("ERR syntax error, WITHSCORES not supported in combination with BYLEX")


def _zrange(
    ctx: CommandContext,
    key: bytes,
    start: bytes,
    stop: bytes,
    by: str,
    reverse: bool,
    limit: tuple[int, int] | None,
    withscores: bool,
) -> Reply:
    check_range_options(by, limit, withscores)
    pairs = range_pairs(ctx, key, start, stop, by, reverse, limit)
    if withscores:
        return with_scores(ctx, pairs)
    return [m for m, _ in pairs]


def parse_range_options(
    argv: list[bytes], start: int, allow_by: bool
) -> tuple[str, bool, tuple[int, int] | None, bool]:
    by = "index"
    reverse = withscores = False
    limit: tuple[int, int] | None = None
    i = start
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        if opt == b"WITHSCORES":
            withscores = True
        elif opt == b"LIMIT" and i + 2 < n:
            limit = (parse_int(argv[i + 1]), parse_int(argv[i + 2]))
            i += 2
        elif allow_by and opt == b"BYSCORE":
            by = "score"
        elif allow_by and opt == b"BYLEX":
            by = "lex"
        elif allow_by and opt == b"REV":
            reverse = True
        else:
            raise CommandError(SYNTAX)
        i += 1
    return by, reverse, limit, withscores


def zrange_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    by, reverse, limit, withscores = parse_range_options(argv, 4, allow_by=True)
    return _zrange(ctx, argv[1], argv[2], argv[3], by, reverse, limit, withscores)


def zrevrange_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    _, _, limit, withscores = parse_range_options(argv, 4, allow_by=False)
    if limit is not None:
        raise CommandError(SYNTAX)
    return _zrange(ctx, argv[1], argv[2], argv[3], "index", True, None, withscores)


def zrangebyscore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    _, _, limit, withscores = parse_range_options(argv, 4, allow_by=False)
    return _zrange(ctx, argv[1], argv[2], argv[3], "score", False, limit, withscores)


def zrevrangebyscore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    _, _, limit, withscores = parse_range_options(argv, 4, allow_by=False)
    return _zrange(ctx, argv[1], argv[2], argv[3], "score", True, limit, withscores)


def zrangebylex_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    _, _, limit, withscores = parse_range_options(argv, 4, allow_by=False)
    if withscores:
        raise CommandError(SYNTAX)
    return _zrange(ctx, argv[1], argv[2], argv[3], "lex", False, limit, False)


def zrevrangebylex_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    _, _, limit, withscores = parse_range_options(argv, 4, allow_by=False)
    if withscores:
        raise CommandError(SYNTAX)
    return _zrange(ctx, argv[1], argv[2], argv[3], "lex", True, limit, False)


def _zpop(ctx: CommandContext, argv: list[bytes], maximum: bool) -> Reply:
    count = optional_count(argv, 1)
    z = zset_at(ctx, argv[1])
    if z is None or count == 0:
        ctx.no_propagation()
        return []
    pairs = z.pop_max(count) if maximum else z.pop_min(count)
    if not z:
        ctx.db.delete(argv[1])
    if len(argv) == 3:
        return with_scores(ctx, pairs)
    member, score = pairs[0]
    return [member, score_reply(ctx, score)]


def zpopmin_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _zpop(ctx, argv, False)


def zpopmax_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _zpop(ctx, argv, True)


def zscan_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    """ZSCAN: the whole sorted set in one reply (cursor 0), as Redis does for small encodings."""
    parse_cursor(argv[2])
    _count, pattern, _ = parse_scan_options(argv, 3, allow_type=False)
    z = zset_at(ctx, argv[1])
    out: list[Any] = []
    if z is not None:
        match = compile_glob(pattern).fullmatch
        for m, s in z:
            if pattern == b"*" or match(m) is not None:
                out += (m, b"%.17g" % s)  # SCAN replies carry scores as text, even in RESP3
    return [b"0", out]


COMMANDS: list[Command] = [
    command(
        "ZADD",
        zadd_command,
        -4,
        "write fast",
        (1, 1, 1),
        "sorted-set",
        summary="Adds one or more members to a sorted set, or updates their scores. Creates the key if it doesn't exist.",
    ),
    command(
        "ZINCRBY",
        zincrby_command,
        4,
        "write fast",
        (1, 1, 1),
        "sorted-set",
        summary="Increments the score of a member in a sorted set.",
    ),
    command(
        "ZREM",
        zrem_command,
        -3,
        "write fast",
        (1, 1, 1),
        "sorted-set",
        summary="Removes one or more members from a sorted set. Deletes the sorted set if all members were removed.",
    ),
    command(
        "ZCARD",
        zcard_command,
        2,
        "readonly fast",
        (1, 1, 1),
        "sorted-set",
        summary="Returns the number of members in a sorted set.",
    ),
    command(
        "ZSCORE",
        zscore_command,
        3,
        "readonly fast",
        (1, 1, 1),
        "sorted-set",
        summary="Returns the score of a member in a sorted set.",
    ),
    command(
        "ZMSCORE",
        zmscore_command,
        -3,
        "readonly fast",
        (1, 1, 1),
        "sorted-set",
        summary="Returns the score of one or more members in a sorted set.",
    ),
    command(
        "ZRANK",
        zrank_command,
        -3,
        "readonly fast",
        (1, 1, 1),
        "sorted-set",
        summary="Returns the index of a member in a sorted set ordered by ascending scores.",
    ),
    command(
        "ZREVRANK",
        zrevrank_command,
        -3,
        "readonly fast",
        (1, 1, 1),
        "sorted-set",
        summary="Returns the index of a member in a sorted set ordered by descending scores.",
    ),
    command(
        "ZCOUNT",
        zcount_command,
        4,
        "readonly fast",
        (1, 1, 1),
        "sorted-set",
        summary="Returns the count of members in a sorted set that have scores within a range.",
    ),
    command(
        "ZLEXCOUNT",
        zlexcount_command,
        4,
        "readonly fast",
        (1, 1, 1),
        "sorted-set",
        summary="Returns the number of members in a sorted set within a lexicographical range.",
    ),
    command(
        "ZRANGE",
        zrange_command,
        -4,
        "readonly",
        (1, 1, 1),
        "sorted-set",
        summary="Returns members in a sorted set within a range of indexes.",
    ),
    command(
        "ZREVRANGE",
        zrevrange_command,
        -4,
        "readonly",
        (1, 1, 1),
        "sorted-set",
        summary="Returns members in a sorted set within a range of indexes in reverse order.",
    ),
    command(
        "ZRANGEBYSCORE",
        zrangebyscore_command,
        -4,
        "readonly",
        (1, 1, 1),
        "sorted-set",
        summary="Returns members in a sorted set within a range of scores.",
    ),
    command(
        "ZREVRANGEBYSCORE",
        zrevrangebyscore_command,
        -4,
        "readonly",
        (1, 1, 1),
        "sorted-set",
        summary="Returns members in a sorted set within a range of scores in reverse order.",
    ),
    command(
        "ZRANGEBYLEX",
        zrangebylex_command,
        -4,
        "readonly",
        (1, 1, 1),
        "sorted-set",
        summary="Returns members in a sorted set within a lexicographical range.",
    ),
    command(
        "ZREVRANGEBYLEX",
        zrevrangebylex_command,
        -4,
        "readonly",
        (1, 1, 1),
        "sorted-set",
        summary="Returns members in a sorted set within a lexicographical range in reverse order.",
    ),
    command(
        "ZPOPMIN",
        zpopmin_command,
        -2,
        "write fast",
        (1, 1, 1),
        "sorted-set",
        summary="Returns the lowest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.",
    ),
    command(
        "ZPOPMAX",
        zpopmax_command,
        -2,
        "write fast",
        (1, 1, 1),
        "sorted-set",
        summary="Returns the highest-scoring members from a sorted set after removing them. Deletes the sorted set if the last member was popped.",
    ),
    command(
        "ZSCAN",
        zscan_command,
        -3,
        "readonly",
        (1, 1, 1),
        "sorted-set",
        summary="Iterates over members and scores of a sorted set.",
    ),
]
