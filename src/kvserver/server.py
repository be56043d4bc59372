"""Server state and command dispatch: the databases, the clients, the command table, persistence hooks.

Theory of operation
-------------------
The event loop (kvserver.loop) hands every complete request of one client read to `process_commands`.
For each request the dispatcher, in Redis's order (server.c processCommand):
  1. looks the name up in the table (as sent, then upper-cased): unknown -> Redis 7's error line;
  2. checks the arity; 3. checks authentication (NOAUTH) unless the command is flagged `no-auth`;
  4. inside MULTI queues everything except EXEC/DISCARD/MULTI/WATCH/QUIT/RESET (a rejected command marks
     the transaction for EXECABORT);
  5. runs the handler through `call`, which turns CommandError into an error reply once (STYLE.md §4),
     and after a successful `write` command: counts a change, appends it to the AOF buffer (as sent, or
     as the handler asked through ctx.propagate_as) and invalidates WATCHes on its key positions.
Replies are encoded at once into the client's output list; the loop sends them in before_sleep, after
the AOF buffer was written (and fsynced under appendfsync always), so no reply acknowledges a write that
a crash could lose. A handler bug raises a non-CommandError exception: it is logged and answered with
"ERR internal error", and the client and server carry on.

Concurrency: everything here runs on the event-loop thread only.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

from kvserver.client import ClientState
from kvserver.commands import blocking, build_command_table, pubsub, reply_mode, transactions
from kvserver.commands.table import Command
from kvserver.config import Config
from kvserver.keyspace import Keyspace
from kvserver.replies import BLOCKED, NO_REPLY, OK, CommandError, ErrorReply, wrong_arity
from kvserver.resp import BULK_HEADERS, encode_reply

if TYPE_CHECKING:
    from kvserver.aof import AppendOnlyFile

log = logging.getLogger("kvserver")

VERSION = "7.0.0"  # the Redis version we report (HELLO, INFO): the behaviour we follow

_MULTI_EXEMPT = frozenset({b"EXEC", b"DISCARD", b"MULTI", b"WATCH", b"QUIT", b"RESET"})
_OK_BYTES = b"+OK\r\n"
_BULK_HEADERS_SIZE = len(BULK_HEADERS)
NOAUTH = "NOAUTH Authentication required."


def unknown_command_error(argv: list[bytes]) -> str:
    """Redis 7's line: "ERR unknown command 'foo', with args beginning with: 'a' 'b' "."""
    args = ""
    for arg in argv[1:]:
        if len(args) >= 128:
            break
        args += "'" + arg.decode(errors="replace")[: 128 - len(args)] + "' "
    name = argv[0].decode(errors="replace")[:128]
    return f"ERR unknown command '{name}', with args beginning with: {args}".replace(
        "\n", " "
    ).replace("\r", " ")


def _internal_error(name: bytes) -> str:
    return f"ERR internal error while running '{name.decode(errors='replace').lower()}' (see the server log)"


class Stats:
    __slots__ = (
        "commands_processed",
        "connections_received",
        "expired_keys",
        "rejected_connections",
        "start_time",
    )

    def __init__(self) -> None:
        self.commands_processed = 0
        self.connections_received = 0
        self.expired_keys = 0
        self.rejected_connections = 0
        self.start_time = time.time()


class ServerState:
    """Everything the handlers may reach through ctx.server. Event-loop thread only."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.databases: list[Keyspace] = [Keyspace() for _ in range(config.databases)]
        self.table: dict[bytes, Command] = build_command_table()
        self.clients: dict[int, ClientState] = {}
        self.next_client_id = 1
        self.watched: dict[tuple[int, bytes], set[ClientState]] = {}
        # Clients parked by blocking commands (loop state: survives live patches as data). The two
        # dicts are the dispatcher's one-read checks; kvserver.commands.blocking mutates them in place.
        self.blocking = blocking.Blocking()
        self.blocked_clients = self.blocking.by_client
        self.blocked_keys = self.blocking.by_key
        # Pub/sub subscriptions (loop state, kvserver.commands.pubsub); `subscribers` is the
        # dispatcher's one-read check for RESP2 clients in the subscribed context.
        self.pubsub = pubsub.PubSub()
        self.subscribers = self.pubsub.by_client
        # CLIENT REPLY OFF/SKIP (kvserver.commands.reply_mode); `muted` is the dispatcher's check.
        self.reply_modes = reply_mode.ReplyModes()
        self.muted = self.reply_modes.by_client
        self.stats = Stats()
        self.aof: AppendOnlyFile | None = None
        self.persistence: Any = None  # kvserver.persistence.Persistence, set when --dir is given
        self.dirty = 0  # changes since the last successful snapshot
        self.last_save = int(time.time())
        self.exec_propagation: list[tuple[int, list[bytes]]] | None = None  # collecting inside EXEC
        self.loop: Any = None  # kvserver.loop.EventLoop, for SHUTDOWN and the self-pipe
        self.loading = False
        # The wall clock in ms, read once per event-loop iteration (kvserver.loop): what ctx.now_ms
        # is for every command of that iteration.
        self.now_ms = int(time.time() * 1000)
        self.pid = os.getpid()
        self.run_id = os.urandom(20).hex()
        self._write_names = frozenset(n for n, c in self.table.items() if "write" in c.flags)
        # The hot path's view of the table: (handler, arity, is_write, row). Handlers are patched in place
        # (their __code__ is swapped), so holding the function objects here stays correct.
        # INFO commandstats: [calls, rejected_calls, failed_calls] per command, one list per row so
        # the hot path bumps a counter without a dict lookup.
        self.command_stats: dict[bytes, list[int]] = {n: [0, 0, 0] for n in self.table}
        self._dispatch: dict[bytes, tuple[Any, int, bool, Command, list[int]]] = {
            n: (c.handler, c.arity, n in self._write_names, c, self.command_stats[n])
            for n, c in self.table.items()
        }

    # ------------------------------------------------------------------------------------ clients
    def new_client(self, sock: Any, addr: str) -> ClientState:
        client = ClientState(
            self.next_client_id,
            sock,
            addr,
            self.config.limits(),
            self,
            authenticated=self.config.requirepass is None,
        )
        self.next_client_id += 1
        self.clients[client.id] = client
        self.stats.connections_received += 1
        return client

    def forget_client(self, client: ClientState) -> None:
        self.unwatch_all(client)
        if self.blocked_clients:
            blocking.forget(self, client)
        if self.subscribers:
            pubsub.forget(self, client)
        if self.muted:
            reply_mode.forget(self, client)
        self.clients.pop(client.id, None)

    # ----------------------------------------------------------------------------------- dispatch
    def process_commands(self, client: ClientState, commands: list[list[bytes]]) -> None:
        """Execute one read's worth of requests; replies go to client.out (the hot path).

        The handler call below is `call()` inlined (keep the two in step): one Python call less per
        command, and the common replies (+OK, bulk, null) are encoded without a function call.
        Every line here runs once per request, so each one was weighed (about 1,000 machine
        instructions per Python-level operation): see docs/performance.md before adding one.
        """
        blocked = self.blocked_clients
        if blocked and client in blocked:
            blocked[client].backlog.extend(commands)  # a parked client's requests wait their turn
            return
        muted = self.muted
        if muted and client in muted and not self.reply_modes.inside:
            reply_mode.process_muted(self, client, commands)  # CLIENT REPLY OFF/SKIP
            return
        subscribers = self.subscribers
        if subscribers and client in subscribers and not self.pubsub.inside:
            pubsub.process_subscribed(self, client, commands)  # RESP2: a restricted context
            return
        table = self._dispatch
        append = client.out.append
        ctx = client.ctx
        ctx.now_ms = self.now_ms  # ctx.db is kept in step by select(), the only writer of db_index
        executed = 0
        pending = iter(commands)
        for argv in pending:
            if client.close_after_reply:
                break  # after QUIT or SHUTDOWN nothing more is executed
            row = table.get(argv[0])
            if row is None:
                row = table.get(argv[0].upper())
                if row is None:
                    self._reject(client, unknown_command_error(argv))
                    continue
            handler, arity, is_write, cmd, counts = row
            # Exact-arity match first: the common case costs one len() and one comparison.
            if len(argv) != arity and (arity > 0 or len(argv) < -arity):
                counts[1] += 1
                error = wrong_arity(cmd.name.decode())
                if cmd.name == b"EXEC":
                    error = transactions.abort_exec(self, client, error)
                self._reject(client, error)
                continue
            if not client.authenticated and "no-auth" not in cmd.flags:
                counts[1] += 1
                self._reject(client, NOAUTH)
                continue
            if client.multi is not None and cmd.name not in _MULTI_EXEMPT:
                if "no-multi" in cmd.flags:
                    counts[1] += 1
                    self._reject(client, "ERR Command not allowed inside a transaction")
                    continue
                client.multi.append((cmd, argv))
                append(b"+QUEUED\r\n")
                continue
            executed += 1
            counts[0] += 1
            # Before the handler runs: CLIENT LIST shows the caller's own command.
            client.last_cmd = cmd.name
            if is_write:
                ctx.propagation = None
            try:
                reply = handler(ctx, argv)
            except CommandError as exc:
                counts[2] += 1
                append(b"-" + exc.message.replace("\r", " ").replace("\n", " ").encode() + b"\r\n")
                continue
            except Exception:
                log.exception("command %r failed; the client and the server carry on", cmd.name)
                append(encode_reply(ErrorReply(_internal_error(cmd.name))))
                continue
            if is_write:
                propagation = ctx.propagation
                if propagation is None:
                    if not self.watched and not self.loading and not self.blocked_keys:
                        # after_write's whole effect when nothing watches or replays (the benchmark's
                        # case): a Python call less per write. (exec_propagation is only set inside
                        # EXEC, whose commands go through call(), not through here.)
                        self.dirty += 1
                        aof = (
                            self.aof
                        )  # read per write: CONFIG SET appendonly may change it mid-read
                        if aof is not None:
                            aof.feed_one(client.db_index, argv)
                    else:
                        self.after_write(client.db_index, cmd, argv, [argv])
                elif propagation:
                    self.after_write(client.db_index, cmd, argv, propagation)
            if reply is OK:
                append(_OK_BYTES)
            elif type(reply) is bytes:
                # Three pieces, joined once per read by the loop: no intermediate bytes objects.
                size = len(reply)
                append(BULK_HEADERS[size] if size < _BULK_HEADERS_SIZE else b"$%d\r\n" % size)
                append(reply)
                append(b"\r\n")
            elif reply is None:
                append(b"_\r\n" if client.protocol == 3 else b"$-1\r\n")
            elif reply is BLOCKED:
                blocked[client].backlog.extend(pending)  # parked: the rest waits for its answer
                break
            elif reply is NO_REPLY:
                if client in muted and not self.reply_modes.inside:
                    # CLIENT REPLY OFF/SKIP in the middle of a read: the rest of it is answered as
                    # the new mode says (pipelined requests after it were answered before).
                    reply_mode.process_muted(self, client, list(pending))
                    break
            else:
                append(encode_reply(reply, client.protocol))
        if executed:
            self.stats.commands_processed += executed
        if self.blocking.ready:
            blocking.serve_ready(self)

    def _reject(self, client: ClientState, message: str) -> None:
        """A command refused before it ran; inside MULTI it dooms the transaction (EXECABORT)."""
        if client.multi is not None:
            client.multi_error = True
        client.out.append(b"-" + message.encode() + b"\r\n")

    def select(self, ctx: Any, index: int) -> None:
        """Switch the client of ctx to database `index` (SELECT, RESET): keeps ctx.db in step.

        The only writer of db_index: the dispatcher relies on the client's ctx.db being current."""
        client = ctx.client
        client.db_index = index
        client.ctx.db = self.databases[index]

    def call(self, client: ClientState, cmd: Command, argv: list[bytes]) -> Any:
        """Run one command's handler; propagate and invalidate WATCHes after a successful write."""
        ctx = client.ctx
        ctx.db = self.databases[client.db_index]
        is_write = cmd.name in self._write_names
        if is_write:
            ctx.propagation = None
        self.stats.commands_processed += 1
        counts = self.command_stats.get(cmd.name)
        if counts is not None:
            counts[0] += 1
        client.last_cmd = cmd.name
        try:
            reply = cmd.handler(ctx, argv)
        except CommandError as exc:
            if counts is not None:
                counts[2] += 1
            return ErrorReply(exc.message)
        except Exception:
            log.exception("command %r failed; the client and the server carry on", cmd.name)
            return ErrorReply(_internal_error(cmd.name))
        if is_write:
            propagation = ctx.propagation
            if propagation is None:
                self.after_write(client.db_index, cmd, argv, [argv])
            elif propagation:
                self.after_write(client.db_index, cmd, argv, propagation)
        return reply

    def after_write(
        self, db_index: int, cmd: Command, argv: list[bytes], logged: list[list[bytes]]
    ) -> None:
        self.dirty += 1
        if self.watched or self.blocked_keys:
            keys = [argv[i] for i in cmd.key_positions(len(argv)) if i < len(argv)]
            self.touch_keys(db_index, keys)
            if self.blocked_keys:
                blocking.signal_keys(self, db_index, cmd.name, keys)
        if self.loading:
            return
        if self.exec_propagation is not None:
            self.exec_propagation.extend((db_index, a) for a in logged)
        elif self.aof is not None:
            self.aof.feed(db_index, logged)

    # -------------------------------------------------------------------------------------- WATCH
    def watch(self, client: ClientState, keys: list[bytes]) -> None:
        for key in keys:
            item = (client.db_index, key)
            if item not in client.watched:
                client.watched.add(item)
                self.watched.setdefault(item, set()).add(client)

    def unwatch_all(self, client: ClientState) -> None:
        for item in client.watched:
            watchers = self.watched.get(item)
            if watchers is not None:
                watchers.discard(client)
                if not watchers:
                    del self.watched[item]
        client.watched.clear()
        client.dirty_cas = False

    def touch_keys(self, db_index: int, keys: list[bytes]) -> None:
        for key in keys:
            for c in self.watched.get((db_index, key), ()):
                c.dirty_cas = True

    def touch_database(self, db_index: int | None) -> None:
        """FLUSHDB/FLUSHALL: every WATCH on that database (None: all) is invalidated."""
        for (idx, _), watchers in self.watched.items():
            if db_index is None or idx == db_index:
                for c in watchers:
                    c.dirty_cas = True

    # --------------------------------------------------------------------------------------- cron
    def cron(self, now_ms: int) -> None:
        """Periodic work (config.hz times a second): bounded active expiry, persistence bookkeeping."""
        budget = self.config.active_expire_keys
        for db in self.databases:
            if db.expires_count():
                self.stats.expired_keys += db.active_expire_cycle(now_ms, budget)
        if self.persistence is not None:
            self.persistence.cron(now_ms)
        if self.blocked_clients:
            blocking.expire(self, now_ms)

    def run_replay_command(self, client: ClientState, argv: list[bytes]) -> Any:
        """Execute one logged command while loading (no propagation back into the log)."""
        cmd = self.table.get(argv[0].upper())
        if cmd is None:
            raise ValueError(f"unknown command {argv[0]!r} in the append-only file")
        client.ctx.now_ms = int(time.time() * 1000)
        return self.call(client, cmd, argv)
