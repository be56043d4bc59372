"""One connected client: its socket, codec state, pending replies, session and transaction state.

Concurrency: owned by the event-loop thread; nothing else reads or writes a ClientState.
Handlers see it as `ctx.client` (kvserver.context): `protocol`, `db_index`, `name`, `id`, `authenticated`.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from kvserver.context import CommandContext
from kvserver.resp import Limits, RequestParser


class ClientContext(CommandContext):
    """The context a client's commands run with: `db` is a plain attribute here, not the base class's
    property, saving a lookup per command. The dispatcher sets it before each batch and
    `ServerState.select` whenever the client's db_index changes, so it always equals the property."""

    db: Any = None  # shadows the property; set per instance


class ClientState:
    __slots__ = (
        "addr",
        "authenticated",
        "close_after_reply",
        "created",
        "ctx",
        "db_index",
        "dirty_cas",
        "fd",
        "id",
        "last_cmd",
        "last_interaction",
        "lib_name",
        "lib_ver",
        "multi",
        "multi_error",
        "name",
        "out",
        "out_pending",
        "parser",
        "protocol",
        "sock",
        "watched",
        "writable_registered",
    )

    def __init__(
        self,
        client_id: int,
        sock: socket.socket | None,
        addr: str,
        limits: Limits,
        server: Any,
        authenticated: bool,
    ) -> None:
        self.id = client_id
        self.sock = sock
        self.fd = sock.fileno() if sock is not None else -1
        self.addr = addr
        self.parser = RequestParser(limits)
        self.out: list[bytes] = []  # encoded reply pieces not sent yet (joined for one send())
        self.out_pending = b""  # bytes the kernel did not take yet (slow reader)
        self.writable_registered = False
        self.protocol = 2
        self.db_index = 0
        self.name: bytes | None = None
        self.lib_name: bytes | None = None
        self.lib_ver: bytes | None = None
        self.authenticated = authenticated
        self.close_after_reply = False
        self.multi: list[tuple[Any, list[bytes]]] | None = (
            None  # queued (command, argv) inside MULTI
        )
        self.multi_error = False  # a queued command was rejected: EXEC answers EXECABORT
        self.dirty_cas = False  # a WATCHed key was written: EXEC answers a null array
        self.watched: set[tuple[int, bytes]] = set()
        self.created = time.monotonic()
        self.last_interaction = self.created
        self.last_cmd = b"NULL"
        # One reusable context per client: no allocation per command on the hot path.
        self.ctx = ClientContext(server=server, client=self, now_ms=0)
        self.ctx.db = server.databases[0]  # then kept in step by ServerState.select

    def buffered_bytes(self) -> int:
        """Bytes this client holds in buffers: a request not complete yet, replies not sent yet."""
        return self.parser.buffered() + len(self.out_pending) + sum(map(len, self.out))

    def release_buffers(self) -> None:
        """Drop what a closed client holds (a half-received request, unsent replies) now.

        A ClientState is part of a reference cycle (self.ctx.client is self), so without this its
        buffers would live until the cyclic garbage collector's next full pass, which may not come
        for a long time: 100 clients that closed with half a 1 MB value each kept 50 MB (issue 10).
        """
        self.parser = RequestParser(Limits())  # a closed client parses nothing more
        self.out.clear()
        self.out_pending = b""

    def local_addr(self) -> str:
        """The server's end of the connection, ip:port (CLIENT LIST laddr=, CLIENT KILL LADDR)."""
        try:
            host, port = self.sock.getsockname()[:2]  # type: ignore[union-attr]
        except (OSError, AttributeError, ValueError):
            return ""
        return f"{host}:{port}"

    def info_line(self, now: float) -> str:
        """One CLIENT LIST line (Redis's field names; fields kvserver does not track are omitted)."""
        name = (self.name or b"").decode(errors="replace")
        server = self.ctx.server
        subs = server.pubsub.by_client.get(self, ((), ()))
        # Redis's order: P (pub/sub), x (MULTI), b (blocked)
        flags = "P" if subs[0] or subs[1] else ""
        flags += "x" if self.multi is not None else ""
        flags += "b" if self in server.blocking.by_client else ""
        return (
            f"id={self.id} addr={self.addr} laddr={self.local_addr()} fd={self.fd} name={name} "
            f"age={int(now - self.created)} idle={int(now - self.last_interaction)} flags={flags or 'N'} "
            f"db={self.db_index} sub={len(subs[0])} psub={len(subs[1])} ssub=0 multi={len(self.multi) if self.multi is not None else -1} "
            f"qbuf={self.parser.buffered()} obl={sum(map(len, self.out))} oll={len(self.out)} "
            f"omem={len(self.out_pending)} resp={self.protocol} "
            f"cmd={self.last_cmd.decode(errors='replace').lower()} user=default "
            f"lib-name={(self.lib_name or b'').decode(errors='replace')} "
            f"lib-ver={(self.lib_ver or b'').decode(errors='replace')}"
        )
