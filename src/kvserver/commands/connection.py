"""Connection commands (Redis 7): PING, ECHO, AUTH, HELLO, QUIT, RESET, SELECT, CLIENT ..."""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING

from kvserver.commands.table import Command, command
from kvserver.replies import (
    OK,
    PONG,
    SYNTAX,
    CommandError,
    Reply,
    SimpleString,
    Verbatim,
    wrong_arity,
)

if TYPE_CHECKING:
    from kvserver.context import CommandContext

WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."
NOPASS = (
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?"
)


def ping_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    if len(argv) > 2:
        raise CommandError(wrong_arity("ping"))
    if ctx.server.subscribers:
        from kvserver.commands.pubsub import subscribed_ping

        reply = subscribed_ping(ctx, argv)
        if reply is not None:
            return reply
    return argv[1] if len(argv) == 2 else PONG


def echo_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return argv[1]


def _check_password(ctx: CommandContext, user: bytes, password: bytes) -> None:
    required = ctx.server.config.requirepass
    if required is None:  # the default user has "nopass": any password is accepted (Redis 6+)
        ok = user == b"default"
    else:
        ok = user == b"default" and hmac.compare_digest(password, required.encode())
    if not ok:
        raise CommandError(WRONGPASS)  # a failed AUTH leaves the current authentication as it was
    ctx.client.authenticated = True


def auth_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    if len(argv) > 3:
        raise CommandError("ERR syntax error")
    if len(argv) == 2 and ctx.server.config.requirepass is None:
        raise CommandError(NOPASS)
    user, password = (b"default", argv[1]) if len(argv) == 2 else (argv[1], argv[2])
    _check_password(ctx, user, password)
    return OK


def hello_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    client = ctx.client
    protocol = client.protocol
    i = 1
    if len(argv) > 1:
        try:
            protocol = int(argv[1])
        except ValueError:
            raise CommandError("ERR Protocol version is not an integer or out of range") from None
        if protocol not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
        i = 2
    name: bytes | None = None
    authenticated_here = False
    while i < len(argv):
        option = argv[i].upper()
        if option == b"AUTH" and i + 2 < len(argv):
            _check_password(ctx, argv[i + 1], argv[i + 2])
            authenticated_here = True
            i += 3
        elif option == b"SETNAME" and i + 1 < len(argv):
            name = argv[i + 1]
            i += 2
        else:
            raise CommandError(
                f"ERR Syntax error in HELLO option '{argv[i].decode(errors='replace')}'"
            )
    if not client.authenticated and not authenticated_here:
        raise CommandError(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
            "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time"
        )
    if name is not None:
        _validate_name(name)
        client.name = name or None
    client.protocol = protocol
    from kvserver.server import VERSION

    return {
        b"server": b"redis",
        b"version": VERSION.encode(),
        b"proto": protocol,
        b"id": client.id,
        b"mode": b"standalone",
        b"role": b"master",
        b"modules": [],
    }


def quit_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    ctx.client.close_after_reply = True
    return OK


def reset_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    client = ctx.client
    client.multi = None
    client.multi_error = False
    ctx.server.unwatch_all(client)
    if ctx.server.subscribers:
        from kvserver.commands.pubsub import forget

        forget(ctx.server, client)
    if ctx.server.muted:
        from kvserver.commands import reply_mode

        reply_mode.forget(ctx.server, client)
    ctx.server.select(ctx, 0)
    client.protocol = 2
    client.name = None
    client.authenticated = ctx.server.config.requirepass is None
    return SimpleString("RESET")


def select_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    try:
        index = int(argv[1])
    except ValueError:
        raise CommandError("ERR value is not an integer or out of range") from None
    if not 0 <= index < len(ctx.server.databases):
        raise CommandError("ERR DB index is out of range")
    ctx.server.select(ctx, index)
    return OK


def _validate_name(name: bytes) -> None:
    if any(c <= 0x20 or c > 0x7E for c in name):
        raise CommandError(
            "ERR Client names cannot contain spaces, newlines or special characters."
        )


def client_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    sub = argv[1].upper()
    client = ctx.client
    if sub == b"ID" and len(argv) == 2:
        return client.id
    if sub == b"SETNAME" and len(argv) == 3:
        _validate_name(argv[2])
        client.name = argv[2] or None
        return OK
    if sub == b"GETNAME" and len(argv) == 2:
        return client.name
    if sub == b"LIST":
        now = time.monotonic()
        ids: set[int] | None = None
        if len(argv) >= 4 and argv[2].upper() == b"ID":
            try:
                ids = {int(a) for a in argv[3:]}
            except ValueError:
                raise CommandError("ERR Invalid client ID") from None
        elif len(argv) == 4 and argv[2].upper() == b"TYPE":
            if argv[3].lower() not in (b"normal", b"master", b"replica", b"pubsub"):
                raise CommandError(f"ERR Unknown client type '{argv[3].decode(errors='replace')}'")
            if argv[3].lower() != b"normal":
                return Verbatim("")
        elif len(argv) != 2:
            raise CommandError("ERR syntax error")
        lines = [
            c.info_line(now)
            for c in ctx.server.clients.values()
            if c.sock is not None and (ids is None or c.id in ids)
        ]
        return Verbatim("".join(line + "\n" for line in lines))
    if sub == b"INFO" and len(argv) == 2:
        return Verbatim(client.info_line(time.monotonic()) + "\n")
    if sub == b"SETINFO" and len(argv) == 4:
        attr = argv[2].upper()
        if attr == b"LIB-NAME":
            _validate_name(argv[3])
            client.lib_name = argv[3]
        elif attr == b"LIB-VER":
            _validate_name(argv[3])
            client.lib_ver = argv[3]
        else:
            raise CommandError(f"ERR Unrecognized option '{argv[2].decode(errors='replace')}'")
        return OK
    if sub == b"KILL" and len(argv) >= 3:
        return _client_kill(ctx, argv)
    if sub in (b"NO-EVICT", b"NO-TOUCH") and len(argv) == 3:
        if argv[2].lower() not in (b"on", b"off"):
            raise CommandError(SYNTAX)
        return OK  # no eviction and no LRU/LFU clock here: accepted, nothing to change
    if sub == b"REPLY" and len(argv) == 3:
        from kvserver.commands.reply_mode import client_reply

        return client_reply(ctx, argv[2])
    if sub == b"UNBLOCK" and len(argv) in (3, 4):
        return _client_unblock(ctx, argv)
    raise CommandError(
        f"ERR unknown subcommand or wrong number of arguments for '{argv[1].decode(errors='replace')}'. "
        "Try CLIENT HELP."
    )


def _client_unblock(ctx: CommandContext, argv: list[bytes]) -> Reply:
    """CLIENT UNBLOCK id [TIMEOUT|ERROR]: 1 if that client was parked by a blocking command."""
    from kvserver.commands import blocking

    try:
        client_id = int(argv[2])
    except ValueError:
        raise CommandError("ERR value is not an integer or out of range") from None
    mode = argv[3].upper() if len(argv) == 4 else b"TIMEOUT"
    if mode not in (b"TIMEOUT", b"ERROR"):
        raise CommandError("ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR")
    return int(blocking.unblock(ctx.server, client_id, mode == b"ERROR"))


_CLIENT_TYPES = (b"normal", b"master", b"replica", b"slave", b"pubsub")


def _client_kill(ctx: CommandContext, argv: list[bytes]) -> Reply:
    """CLIENT KILL ip:port (old form: OK or "No such client"), or CLIENT KILL <filter value> ...
    (ID, TYPE, ADDR, LADDR, USER, SKIPME; every filter must match, as in Redis; the caller is spared
    unless SKIPME no): the number killed. The victims are closed after this iteration's replies."""
    server = ctx.server
    me = ctx.client
    clients = [c for c in server.clients.values() if c.sock is not None]
    if len(argv) == 3:
        victims = [c for c in clients if c.addr.encode() == argv[2]]
        if not victims:
            raise CommandError("ERR No such client")
    else:
        if len(argv) % 2:
            raise CommandError(SYNTAX)
        skipme = True
        for i in range(2, len(argv), 2):
            option, value = argv[i].upper(), argv[i + 1]
            if option == b"ID":
                try:
                    wanted = int(value)
                except ValueError:
                    wanted = 0
                if wanted <= 0:
                    raise CommandError("ERR client-id should be greater than 0")
                clients = [c for c in clients if c.id == wanted]
            elif option == b"TYPE":
                kind = value.lower()
                if kind not in _CLIENT_TYPES:
                    text = value.decode(errors="replace")
                    raise CommandError(f"ERR Unknown client type '{text}'")
                subscribers = server.pubsub.by_client
                if kind == b"normal":
                    clients = [c for c in clients if c not in subscribers]
                elif kind == b"pubsub":
                    clients = [c for c in clients if c in subscribers]
                else:
                    clients = []  # no replicas or masters here
            elif option == b"ADDR":
                clients = [c for c in clients if c.addr.encode() == value]
            elif option == b"LADDR":
                clients = [c for c in clients if c.local_addr().encode() == value]
            elif option == b"USER":
                if value != b"default":
                    raise CommandError(f"ERR No such user '{value.decode(errors='replace')}'")
            elif option == b"SKIPME":
                skipme = _yes_no(value)
            else:
                raise CommandError(SYNTAX)
        victims = [c for c in clients if not (skipme and c is me)]
    for victim in victims:
        victim.close_after_reply = True
        if server.loop is not None and victim is not me:
            server.loop.schedule_close(victim)
    return OK if len(argv) == 3 else len(victims)


def _yes_no(value: bytes) -> bool:
    answer = value.lower()
    if answer not in (b"yes", b"no"):
        raise CommandError(SYNTAX)
    return answer == b"yes"


COMMANDS: list[Command] = [
    command(
        "PING",
        ping_command,
        -1,
        "fast stale",
        group="connection",
        summary="Returns the server's liveliness response.",
    ),
    command(
        "ECHO",
        echo_command,
        2,
        "fast stale",
        group="connection",
        summary="Returns the given string.",
    ),
    command(
        "AUTH",
        auth_command,
        -2,
        "no-auth fast stale no-multi",
        group="connection",
        summary="Authenticates the connection.",
    ),
    command(
        "HELLO",
        hello_command,
        -1,
        "no-auth fast stale no-multi",
        group="connection",
        summary="Handshakes with the server (RESP2/RESP3).",
    ),
    command(
        "QUIT",
        quit_command,
        -1,
        "no-auth fast stale",
        group="connection",
        summary="Closes the connection.",
    ),
    command(
        "RESET",
        reset_command,
        1,
        "no-auth fast stale",
        group="connection",
        summary="Resets the connection.",
    ),
    command(
        "SELECT",
        select_command,
        2,
        "fast loading stale",
        group="connection",
        summary="Changes the selected database.",
    ),
    command(
        "CLIENT",
        client_command,
        -2,
        "admin stale",
        group="connection",
        summary="A container for client connection commands.",
    ),
]
