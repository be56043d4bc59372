"""Pub/sub (Redis 7 pubsub.c): SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB.

Theory of operation
-------------------
Subscriptions are data of the loop (`ServerState.pubsub`, a `PubSub`): per channel and per pattern the
subscribed clients in subscription order, and per client its channels and patterns. Nothing runs on
its own: PUBLISH appends the encoded message to each receiver's output and asks the loop to send it in
this iteration's before_sleep, so a subscribed connection is an ordinary idle connection between
messages and keeps its subscriptions across every live patch (the data stays; new code serves it).

Messages and (un)subscribe confirmations are written here, already encoded: RESP2 arrays (`*3`,
`*4` for pmessage), RESP3 push frames (`>3`, `>4`). A confirmation is one frame per channel, as Redis
sends it, so handlers append to the client's output and return NO_REPLY.

A RESP2 client with at least one subscription may only run (P)SUBSCRIBE, (P)UNSUBSCRIBE, PING, QUIT
and RESET (`process_subscribed`, called by the dispatcher for such clients only); PING then answers
`["pong", arg]`. RESP3 clients may run anything. RESET and disconnecting drop every subscription.

Concurrency: event-loop thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvserver.commands.table import Command, command
from kvserver.replies import NO_REPLY, CommandError, Reply
from kvserver.types.glob import compile_glob

if TYPE_CHECKING:
    from kvserver.context import CommandContext

ALLOWED_WHILE_SUBSCRIBED = frozenset(
    {b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE", b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"SUNSUBSCRIBE",
     b"PING", b"QUIT", b"RESET"}
)  # fmt: skip


class PubSub:
    """Subscriptions: loop state (ServerState.pubsub), plain data. `by_client` is also referenced by
    ServerState (`subscribers`) for the dispatcher's one-read check; it is mutated in place only."""

    def __init__(self) -> None:
        self.channels: dict[bytes, dict[Any, None]] = {}
        self.patterns: dict[bytes, dict[Any, None]] = {}
        # client -> (its channels, its patterns), both ordered by subscription
        self.by_client: dict[Any, tuple[dict[bytes, None], dict[bytes, None]]] = {}
        self.inside = False  # process_subscribed is dispatching (its nested calls skip the check)


def _bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def _frame(protocol: int, *parts: bytes | int | None) -> bytes:
    out = [(b">" if protocol == 3 else b"*") + b"%d\r\n" % len(parts)]
    for part in parts:
        out.append(b":%d\r\n" % part if isinstance(part, int) else _bulk(part))
    return b"".join(out)


def _count(state: PubSub, client: Any) -> int:
    subs = state.by_client.get(client)
    return 0 if subs is None else len(subs[0]) + len(subs[1])


def _subscribe(ctx: CommandContext, names: list[bytes], pattern: bool) -> Reply:
    state: PubSub = ctx.server.pubsub
    client = ctx.client
    table = state.patterns if pattern else state.channels
    kind = b"psubscribe" if pattern else b"subscribe"
    for name in names:
        subs = state.by_client.setdefault(client, ({}, {}))
        mine = subs[1] if pattern else subs[0]
        if name not in mine:
            mine[name] = None
            table.setdefault(name, {})[client] = None
        client.out.append(_frame(client.protocol, kind, name, _count(state, client)))
    return NO_REPLY


def _unsubscribe(ctx: CommandContext, names: list[bytes], pattern: bool) -> Reply:
    state: PubSub = ctx.server.pubsub
    client = ctx.client
    kind = b"punsubscribe" if pattern else b"unsubscribe"
    subs = state.by_client.get(client)
    if not names:
        names = list(subs[1] if pattern else subs[0]) if subs is not None else []
        if not names:
            client.out.append(_frame(client.protocol, kind, None, _count(state, client)))
            return NO_REPLY
    for name in names:
        _drop(state, client, name, pattern)
        client.out.append(_frame(client.protocol, kind, name, _count(state, client)))
    return NO_REPLY


def _drop(state: PubSub, client: Any, name: bytes, pattern: bool) -> None:
    subs = state.by_client.get(client)
    if subs is None:
        return
    mine = subs[1] if pattern else subs[0]
    if name in mine:
        del mine[name]
        table = state.patterns if pattern else state.channels
        members = table.get(name)
        if members is not None:
            members.pop(client, None)
            if not members:
                del table[name]
    if not subs[0] and not subs[1]:
        del state.by_client[client]


def forget(server: Any, client: Any) -> None:
    """Drop every subscription of `client` (it disconnected, or RESET)."""
    state: PubSub = server.pubsub
    subs = state.by_client.get(client)
    if subs is None:
        return
    for name in list(subs[0]):
        _drop(state, client, name, False)
    for name in list(subs[1]):
        _drop(state, client, name, True)


def publish(server: Any, channel: bytes, message: bytes) -> int:
    """Deliver to the channel's subscribers, then to the matching patterns'; the number of receivers
    (a client subscribed both ways receives, and counts, twice, as in Redis)."""
    state: PubSub = server.pubsub
    loop = server.loop
    receivers = 0
    for client in state.channels.get(channel, ()):
        client.out.append(_frame(client.protocol, b"message", channel, message))
        receivers += 1
        if loop is not None:
            loop.schedule_send(client)
    for pattern, clients in state.patterns.items():
        if pattern != b"*" and compile_glob(pattern).fullmatch(channel) is None:
            continue
        for client in clients:
            client.out.append(_frame(client.protocol, b"pmessage", pattern, channel, message))
            receivers += 1
            if loop is not None:
                loop.schedule_send(client)
    return receivers


def process_subscribed(server: Any, client: Any, commands: list[list[bytes]]) -> None:
    """Dispatch for a RESP2 client in the subscribed context: refuse what Redis refuses there."""
    state: PubSub = server.pubsub
    state.inside = True
    try:
        for argv in commands:
            name = argv[0].upper()
            if (
                client in state.by_client
                and client.protocol == 2
                and name in server.table
                and name not in ALLOWED_WHILE_SUBSCRIBED
            ):
                shown = argv[0].decode(errors="replace").lower()
                client.out.append(
                    f"-ERR Can't execute '{shown}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / "
                    "PING / QUIT / RESET are allowed in this context\r\n".encode()
                )
                continue
            server.process_commands(client, [argv])
            if client.close_after_reply:
                break
    finally:
        state.inside = False


def subscribed_ping(ctx: CommandContext, argv: list[bytes]) -> Reply | None:
    """PING of a RESP2 client in the subscribed context: ["pong", arg] (None: not in that context)."""
    client = ctx.client
    if client.protocol == 2 and client in ctx.server.pubsub.by_client:
        return [b"pong", argv[1] if len(argv) == 2 else b""]
    return None


# ------------------------------------------------------------------------------------ handlers
def subscribe_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _subscribe(ctx, argv[1:], False)


def psubscribe_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _subscribe(ctx, argv[1:], True)


def unsubscribe_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _unsubscribe(ctx, argv[1:], False)


def punsubscribe_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _unsubscribe(ctx, argv[1:], True)


def publish_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return publish(ctx.server, argv[1], argv[2])


def pubsub_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    state: PubSub = ctx.server.pubsub
    sub = argv[1].upper()
    if sub in (b"CHANNELS", b"SHARDCHANNELS") and len(argv) <= 3:
        if sub == b"SHARDCHANNELS":
            return []  # no shard channels (cluster only)
        if len(argv) == 2 or argv[2] == b"*":
            return list(state.channels)
        match = compile_glob(argv[2]).fullmatch
        return [c for c in state.channels if match(c) is not None]
    if sub in (b"NUMSUB", b"SHARDNUMSUB"):
        out: list[Any] = []
        for channel in argv[2:]:
            out += [channel, len(state.channels.get(channel, ())) if sub == b"NUMSUB" else 0]
        return out
    if sub == b"NUMPAT" and len(argv) == 2:
        return len(state.patterns)
    if sub == b"HELP" and len(argv) == 2:
        return [
            b"PUBSUB <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
            b"CHANNELS [<pattern>]",
            b"    Return the currently active channels matching a <pattern> (default: '*').",
            b"NUMPAT",
            b"    Return number of subscriptions to patterns.",
            b"NUMSUB [<channel> ...]",
            b"    Return the number of subscribers for the specified channels, excluding",
            b"    pattern subscriptions(default: no channels).",
            b"HELP",
            b"    Print this help.",
        ]
    raise CommandError(
        f"ERR unknown subcommand or wrong number of arguments for '{argv[1].decode(errors='replace')}'. "
        "Try PUBSUB HELP."
    )


def _row(name: str, handler: Any, arity: int, flags: str, summary: str) -> Command:
    return command(name, handler, arity, flags, (0, 0, 0), "pubsub", summary)


COMMANDS: list[Command] = [
    _row("SUBSCRIBE", subscribe_command, -2, "pubsub noscript loading stale",
         "Listens for messages published to channels."),
    _row("PSUBSCRIBE", psubscribe_command, -2, "pubsub noscript loading stale",
         "Listens for messages published to channels that match one or more patterns."),
    _row("UNSUBSCRIBE", unsubscribe_command, -1, "pubsub noscript loading stale",
         "Stops listening to messages posted to channels."),
    _row("PUNSUBSCRIBE", punsubscribe_command, -1, "pubsub noscript loading stale",
         "Stops listening to messages published to channels that match one or more patterns."),
    _row("PUBLISH", publish_command, 3, "pubsub loading stale fast", "Posts a message to a channel."),
    _row("PUBSUB", pubsub_command, -2, "pubsub loading stale",
         "A container for Pub/Sub commands (CHANNELS, NUMSUB, NUMPAT, SHARDCHANNELS, SHARDNUMSUB)."),
]  # fmt: skip
