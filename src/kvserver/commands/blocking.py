"""Blocking pops (Redis 7 blocked.c, t_list.c, t_zset.c): BLPOP, BRPOP, BLMPOP, BLMOVE, BRPOPLPUSH,
BZPOPMIN, BZPOPMAX, BZMPOP; and parking, waking and timing out the clients that wait.

Theory of operation
-------------------
A blocked client is *data of the event loop*, never a thread: `ServerState.blocking` (a `Blocking`)
holds, per parked client, a `Parked` record (command, arguments, database, keys, deadline, and the
requests that arrived after it: the client's backlog), and per (db, key) the parked clients in arrival
order. A live patch sees only data here, so it goes through with clients blocked, and a parked client
is served by the new code.

1. A blocking handler first tries to serve at once, exactly like its non-blocking twin (and is logged
   as that twin: BLPOP as LPOP, BLMOVE as LMOVE, BZPOPMIN as ZPOPMIN ...). If nothing is there, it
   parks the client (`park`) and returns `BLOCKED`: the dispatcher sends nothing and keeps the rest of
   that read's requests in the backlog. Inside MULTI/EXEC, while loading, or for a client without a
   socket it never parks: it answers what its twin answers for "empty" (Redis: CLIENT_DENY_BLOCKING).
2. Every write on a key a client waits for marks that key ready (`signal_keys`, from
   ServerState.after_write; commands whose writes the key positions do not show, such as SWAPDB, MOVE,
   COPY ... DB, SORT ... STORE, mark every waited-for key). After each batch of requests (and so after
   a whole EXEC, never inside one), `serve_ready` takes the ready keys in the order they became ready
   and re-runs, for each, the parked commands waiting on it, first parked first: a re-run that finds
   something answers the client, unparks it and runs its backlog; one that finds nothing (the key was
   emptied or retyped again) leaves it parked. A re-run may write keys others wait for (BLMOVE): the
   loop runs until no key is ready. Re-running treats a waited-for key of the wrong type as empty
   (Redis only serves a client from a key of its kind); other errors (BLMOVE's destination of the wrong
   type) are the client's answer.
3. Deadlines are checked by the cron (`expire`, 10 times a second at hz 10, like Redis's resolution):
   a timed-out client gets a null array. CLIENT UNBLOCK answers it the timeout reply or an error;
   a client that disconnects is forgotten (`forget`).

Concurrency: event-loop thread only, like every handler.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvserver.commands.lists import lmove_command, lmpop_command
from kvserver.commands.table import Command, command
from kvserver.commands.zsetops import zmpop_command
from kvserver.commands.zsets import score_reply
from kvserver.replies import BLOCKED, NULL_ARRAY, SYNTAX, WRONGTYPE, CommandError, Reply
from kvserver.types.numbers import parse_mpop_tail, parse_numkeys
from kvserver.types.zset import SortedSet

if TYPE_CHECKING:
    from kvserver.context import CommandContext

TIMEOUT_NOT_FLOAT = "ERR timeout is not a float or out of range"
TIMEOUT_NEGATIVE = "ERR timeout is negative"
TIMEOUT_RANGE = "ERR timeout is out of range"
UNBLOCKED_ERROR = "UNBLOCKED client unblocked via CLIENT UNBLOCK"
LLONG_MAX = 2**63 - 1
# Writes whose key positions do not name every key they create or move: they make every waited-for
# key ready (a spurious wake-up costs one re-run that finds nothing).
WAKE_ALL = frozenset({b"SWAPDB", b"MOVE", b"COPY", b"SORT", b"FLUSHALL", b"FLUSHDB", b"RESTORE"})


@dataclass(eq=False)
class Parked:
    client: Any  # kvserver.client.ClientState
    cmd: Command
    argv: list[bytes]
    db_index: int
    keys: list[bytes]
    deadline_ms: int  # 0: no timeout
    backlog: list[list[bytes]] = field(default_factory=list)  # requests that came after, in order


class Blocking:
    """The parked clients and the ready keys: loop state (ServerState.blocking), plain data.

    `by_client` and `by_key` are also referenced by ServerState so the dispatcher's checks cost one
    attribute read; they are only ever mutated in place, never rebound."""

    def __init__(self) -> None:
        self.by_client: dict[Any, Parked] = {}
        self.by_key: dict[tuple[int, bytes], dict[Any, None]] = {}  # ordered: first parked first
        self.ready: dict[tuple[int, bytes], None] = {}  # ordered: first ready first
        self.serving = False


# ------------------------------------------------------------------------------------ the state
def park(
    ctx: CommandContext, argv: list[bytes], keys: list[bytes], timeout_ms: int, empty: Reply
) -> Reply:
    """Park the calling client, running `argv`, on `keys` (where it may not block: answer `empty`)."""
    server = ctx.server
    client = ctx.client
    ctx.no_propagation()
    state: Blocking = server.blocking
    if client in state.by_client:
        return BLOCKED  # a re-run that found nothing: it stays parked where it was
    if server.exec_propagation is not None or server.loading or client.sock is None:
        return empty
    deadline = server.now_ms + timeout_ms if timeout_ms else 0
    cmd = server.table[argv[0].upper()]
    parked = Parked(client, cmd, argv, client.db_index, keys, deadline)
    state.by_client[client] = parked
    for key in dict.fromkeys(keys):
        state.by_key.setdefault((client.db_index, key), {})[client] = None
    return BLOCKED


def _unpark(state: Blocking, parked: Parked) -> None:
    state.by_client.pop(parked.client, None)
    for key in dict.fromkeys(parked.keys):
        waiters = state.by_key.get((parked.db_index, key))
        if waiters is not None:
            waiters.pop(parked.client, None)
            if not waiters:
                del state.by_key[(parked.db_index, key)]


def signal_keys(server: Any, db_index: int, name: bytes, keys: list[bytes]) -> None:
    """A write ran (after_write): mark the waited-for keys among `keys` ready."""
    state: Blocking = server.blocking
    if name in WAKE_ALL:
        for item in state.by_key:
            state.ready[item] = None
        return
    for key in keys:
        item = (db_index, key)
        if item in state.by_key:
            state.ready[item] = None


def serve_ready(server: Any) -> None:
    """Re-run the commands parked on ready keys (after a batch of requests; see the theory above)."""
    state: Blocking = server.blocking
    if state.serving:
        return  # a backlog run inside serving: the outer loop picks its ready keys up
    state.serving = True
    try:
        while state.ready:
            item = next(iter(state.ready))
            del state.ready[item]
            for client in list(state.by_key.get(item, ())):
                parked = state.by_client.get(client)
                if parked is None or client.sock is None:
                    continue
                if server.databases[item[0]].lookup(item[1], server.now_ms) is None:
                    break  # emptied (or never filled: MULTI ... LPUSH ... DEL ... EXEC)
                client.ctx.now_ms = server.now_ms
                reply = server.call(client, parked.cmd, parked.argv)
                if reply is not BLOCKED:
                    _answer(server, parked, reply)
    finally:
        state.serving = False


def _answer(server: Any, parked: Parked, reply: Reply) -> None:
    """Unpark, send `reply`, then run what the client sent while it waited."""
    from kvserver.resp import encode_reply

    state: Blocking = server.blocking
    _unpark(state, parked)
    client = parked.client
    client.out.append(encode_reply(reply, client.protocol))
    if parked.backlog:
        server.process_commands(client, parked.backlog)
    if server.loop is not None:
        server.loop.schedule_send(client)


def expire(server: Any, now_ms: int) -> None:
    """Cron: answer the clients whose timeout passed with a null array."""
    state: Blocking = server.blocking
    late = [p for p in state.by_client.values() if p.deadline_ms and p.deadline_ms <= now_ms]
    for parked in late:
        _answer(server, parked, NULL_ARRAY)
    if late:
        serve_ready(server)


def unblock(server: Any, client_id: int, error: bool) -> bool:
    """CLIENT UNBLOCK: answer a parked client now (the timeout reply, or an UNBLOCKED error)."""
    from kvserver.replies import ErrorReply

    state: Blocking = server.blocking
    for parked in state.by_client.values():
        if parked.client.id == client_id:
            _answer(server, parked, ErrorReply(UNBLOCKED_ERROR) if error else NULL_ARRAY)
            return True
    return False


def forget(server: Any, client: Any) -> None:
    """A parked client disconnected."""
    parked = server.blocking.by_client.get(client)
    if parked is not None:
        _unpark(server.blocking, parked)


def is_blocked(server: Any, client: Any) -> bool:
    return client in server.blocking.by_client


# ----------------------------------------------------------------------------------- arguments
def parse_timeout(arg: bytes, now_ms: int) -> int:
    """A blocking command's timeout (seconds, a float) in ms, as Redis 7.0 computes it: ceil(s * 1000)
    cast to a 64-bit integer, where x86 turns anything out of range (inf, 1e300) into LLONG_MIN, so
    those are "negative" too; a deadline past LLONG_MAX is "out of range"."""
    try:
        seconds = float(arg)
    except ValueError:
        raise CommandError(TIMEOUT_NOT_FLOAT) from None
    if math.isnan(seconds) or arg.strip() != arg:
        raise CommandError(TIMEOUT_NOT_FLOAT)
    ms = seconds * 1000.0
    if not -(2.0**63) <= ms < 2.0**63:
        raise CommandError(TIMEOUT_NEGATIVE)
    timeout = math.ceil(ms)
    if timeout < 0:
        raise CommandError(TIMEOUT_NEGATIVE)
    if timeout > LLONG_MAX - now_ms:
        raise CommandError(TIMEOUT_RANGE)
    return timeout


def _retrying(ctx: CommandContext) -> bool:
    return ctx.client in ctx.server.blocking.by_client


def _first_ready(ctx: CommandContext, keys: list[bytes], kind: type) -> bytes | None:
    """The first of `keys` holding a non-empty `kind`. A key of another type is WRONGTYPE on the first
    run and empty on a re-run (a parked client is served only by a key of its kind, as in Redis)."""
    retrying = _retrying(ctx)
    for key in keys:
        value = ctx.db.lookup(key, ctx.now_ms)
        if value is None:
            continue
        if type(value) is not kind:
            if retrying:
                continue
            raise CommandError(WRONGTYPE)
        if value:
            return key
    return None


# ------------------------------------------------------------------------------------ handlers
def _bpop(ctx: CommandContext, argv: list[bytes], left: bool) -> Reply:
    timeout = parse_timeout(argv[-1], ctx.now_ms)
    keys = argv[1:-1]
    key = _first_ready(ctx, keys, deque)
    if key is None:
        return park(ctx, argv, keys, timeout, NULL_ARRAY)
    lst = ctx.db.lookup(key, ctx.now_ms)
    value = lst.popleft() if left else lst.pop()
    if not lst:
        ctx.db.delete(key)
    ctx.propagate_as([b"LPOP" if left else b"RPOP", key])
    return [key, value]


def blpop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bpop(ctx, argv, True)


def brpop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bpop(ctx, argv, False)


def _side(arg: bytes) -> bytes:
    side = arg.upper()
    if side not in (b"LEFT", b"RIGHT"):
        raise CommandError(SYNTAX)
    return side


def _bmove(ctx: CommandContext, argv: list[bytes], src_side: bytes, dst_side: bytes) -> Reply:
    timeout = parse_timeout(argv[-1], ctx.now_ms)
    src, dst = argv[1], argv[2]
    if _first_ready(ctx, [src], deque) is None:
        return park(ctx, argv, [src], timeout, None)
    twin = [b"LMOVE", src, dst, src_side, dst_side]
    reply = lmove_command(ctx, twin)
    ctx.propagate_as(twin)
    return reply


def blmove_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bmove(ctx, argv, _side(argv[3]), _side(argv[4]))


def brpoplpush_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bmove(ctx, argv, b"RIGHT", b"LEFT")


def _bmpop(
    ctx: CommandContext, argv: list[bytes], kind: type, twin: bytes, sides: tuple[bytes, bytes]
) -> Reply:
    """BLMPOP / BZMPOP timeout numkeys key [key ...] side [COUNT n]: the twin on the first ready key."""
    timeout = parse_timeout(argv[1], ctx.now_ms)
    numkeys = parse_numkeys(argv, 2, SYNTAX)
    parse_mpop_tail(argv, 3 + numkeys, sides)
    keys = argv[3 : 3 + numkeys]
    key = _first_ready(ctx, keys, kind)
    if key is None:
        return park(ctx, argv, keys, timeout, NULL_ARRAY)
    handler = lmpop_command if kind is deque else zmpop_command
    return handler(ctx, [twin, b"1", key, *argv[3 + numkeys :]])


def blmpop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bmpop(ctx, argv, deque, b"LMPOP", (b"LEFT", b"RIGHT"))


def bzmpop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bmpop(ctx, argv, SortedSet, b"ZMPOP", (b"MIN", b"MAX"))


def _bzpop(ctx: CommandContext, argv: list[bytes], maximum: bool) -> Reply:
    timeout = parse_timeout(argv[-1], ctx.now_ms)
    keys = argv[1:-1]
    key = _first_ready(ctx, keys, SortedSet)
    if key is None:
        return park(ctx, argv, keys, timeout, NULL_ARRAY)
    z = ctx.db.lookup(key, ctx.now_ms)
    member, score = (z.pop_max(1) if maximum else z.pop_min(1))[0]
    if not z:
        ctx.db.delete(key)
    ctx.propagate_as([b"ZPOPMAX" if maximum else b"ZPOPMIN", key])
    return [key, member, score_reply(ctx, score)]


def bzpopmin_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bzpop(ctx, argv, False)


def bzpopmax_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bzpop(ctx, argv, True)


def _row(
    name: str, handler: Any, arity: int, keys: tuple[int, int, int], group: str, summary: str
) -> Command:
    return command(name, handler, arity, "write noscript blocking", keys, group, summary)


COMMANDS: list[Command] = [
    _row("BLPOP", blpop_command, -3, (1, -2, 1), "list",
         "Removes and returns the first element in a list. Blocks until an element is available otherwise."),
    _row("BRPOP", brpop_command, -3, (1, -2, 1), "list",
         "Removes and returns the last element in a list. Blocks until an element is available otherwise."),
    _row("BLMOVE", blmove_command, 6, (1, 2, 1), "list",
         "Pops an element from a list, pushes it to another list and returns it. Blocks until an element is available otherwise."),
    _row("BRPOPLPUSH", brpoplpush_command, 4, (1, 2, 1), "list",
         "Pops an element from a list, pushes it to another list and returns it. Block until an element is available otherwise."),
    _row("BLMPOP", blmpop_command, -5, (0, 0, 0), "list",
         "Pops the first element from one of multiple lists. Blocks until an element is available otherwise."),
    _row("BZPOPMIN", bzpopmin_command, -3, (1, -2, 1), "sorted-set",
         "Removes and returns the member with the lowest score from one or more sorted sets. Blocks until a member is available otherwise."),
    _row("BZPOPMAX", bzpopmax_command, -3, (1, -2, 1), "sorted-set",
         "Removes and returns the member with the highest score from one or more sorted sets. Blocks until a member available otherwise."),
    _row("BZMPOP", bzmpop_command, -5, (0, 0, 0), "sorted-set",
         "Removes and returns a member by score from one or more sorted sets. Blocks until a member is available otherwise."),
]  # fmt: skip
