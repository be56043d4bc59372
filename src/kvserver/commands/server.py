"""Server commands (Redis 7): FLUSHDB, FLUSHALL, INFO, CONFIG, COMMAND, SAVE, BGSAVE, LASTSAVE,
SHUTDOWN, DEBUG, TIME."""

from __future__ import annotations

import fnmatch
import os
import resource
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from kvserver.commands.table import Command, command
from kvserver.config import config_get, config_set
from kvserver.replies import (
    MUST_BE_POSITIVE,
    NO_REPLY,
    NOT_INTEGER,
    OK,
    CommandError,
    Reply,
    SimpleString,
    Verbatim,
)

if TYPE_CHECKING:
    from kvserver.context import CommandContext


def _flush_mode(argv: list[bytes]) -> None:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError("ERR syntax error")


def flushdb_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    _flush_mode(argv)
    _touch_existing(ctx, [ctx.client.db_index])
    ctx.db.clear()
    return OK


def flushall_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    _flush_mode(argv)
    _touch_existing(ctx, range(len(ctx.server.databases)))
    for db in ctx.server.databases:
        db.clear()
    return OK


def _touch_existing(ctx: CommandContext, indexes: Iterable[int]) -> None:
    """FLUSHDB/FLUSHALL invalidate the WATCHes of keys that exist (Redis 7: a watched key that did
    not exist is not changed by a flush)."""
    server = ctx.server
    wanted = set(indexes)
    for index, key in list(server.watched):
        if index in wanted and server.databases[index].lookup(key, ctx.now_ms) is not None:
            server.touch_keys(index, [key])


# --------------------------------------------------------------------------------------------- INFO
def _section_server(server: Any) -> list[str]:
    from kvserver.server import VERSION

    uptime = int(time.time() - server.stats.start_time)
    return [
        f"redis_version:{VERSION}",
        "redis_mode:standalone",
        "kvserver:1",
        f"python_version:{sys.version.split()[0]}",
        f"os:{os.uname().sysname} {os.uname().release} {os.uname().machine}",
        "multiplexing_api:epoll",
        f"process_id:{server.pid}",
        f"run_id:{server.run_id}",
        f"tcp_port:{server.config.port}",
        f"uptime_in_seconds:{uptime}",
        f"uptime_in_days:{uptime // 86400}",
        f"hz:{server.config.hz}",
        f"livepatch:{'yes' if server.config.livepatch else 'no'}",
    ]


def _section_clients(server: Any) -> list[str]:
    connected = sum(1 for c in server.clients.values() if c.sock is not None)
    return [
        f"connected_clients:{connected}",
        f"maxclients:{server.config.maxclients}",
        f"blocked_clients:{len(server.blocking.by_client)}",
        f"watching_clients:{len({c.id for cs in server.watched.values() for c in cs})}",
    ]


def _section_memory(server: Any) -> list[str]:
    rss = _rss_bytes()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return [
        f"used_memory:{rss}",
        f"used_memory_human:{rss / 1024 / 1024:.2f}M",
        f"used_memory_rss:{rss}",
        f"used_memory_peak:{peak}",
        "maxmemory:0",
        "maxmemory_policy:noeviction",
    ]


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _section_persistence(server: Any) -> list[str]:
    p = server.persistence
    aof = server.aof
    return [
        f"loading:{1 if server.loading else 0}",
        f"rdb_changes_since_last_save:{server.dirty}",
        f"rdb_bgsave_in_progress:{1 if p is not None and p.child_pid is not None else 0}",
        f"rdb_last_save_time:{server.last_save}",
        f"rdb_last_bgsave_status:{'ok' if p is None or p.last_bgsave_ok else 'err'}",
        f"rdb_last_save_duration_sec:{p.last_save_duration if p else 0:.3f}",
        f"aof_enabled:{1 if aof is not None else 0}",
        f"aof_fsync_policy:{aof.fsync_policy if aof else server.config.appendfsync}",
        f"aof_generation:{p.generation if p else 0}",
        f"aof_last_write_status:{'ok' if aof is None or aof.last_write_ok else 'err'}",
        f"loaded_keys:{p.loaded_keys if p else 0}",
        f"replayed_commands:{p.replayed_commands if p else 0}",
        f"load_seconds:{p.load_seconds if p else 0:.3f}",
    ]


def _section_stats(server: Any) -> list[str]:
    s = server.stats
    return [
        f"total_connections_received:{s.connections_received}",
        f"total_commands_processed:{s.commands_processed}",
        f"rejected_connections:{s.rejected_connections}",
        f"expired_keys:{s.expired_keys}",
    ]


def _section_keyspace(server: Any) -> list[str]:
    return [
        f"db{i}:keys={len(db)},expires={db.expires_count()},avg_ttl=0"
        for i, db in enumerate(server.databases)
        if len(db)
    ]


def _section_replication(server: Any) -> list[str]:
    return ["role:master", "connected_slaves:0", "master_repl_offset:0"]


def _section_cpu(server: Any) -> list[str]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return [
        f"used_cpu_sys:{own.ru_stime:.6f}",
        f"used_cpu_user:{own.ru_utime:.6f}",
        f"used_cpu_sys_children:{children.ru_stime:.6f}",
        f"used_cpu_user_children:{children.ru_utime:.6f}",
    ]


def _section_commandstats(server: Any) -> list[str]:
    """Calls, rejected calls (arity, NOAUTH, refused in MULTI) and failed calls (an error reply) per
    command; kvserver does not time commands, so Redis's usec fields are absent."""
    return [
        f"cmdstat_{name.decode().lower()}:calls={c[0]},rejected_calls={c[1]},failed_calls={c[2]}"
        for name, c in sorted(server.command_stats.items())
        if any(c)
    ]


# In Redis's order; DEFAULT is what INFO without arguments (or "default") shows, "all" adds the rest.
SECTIONS = {
    "server": _section_server,
    "clients": _section_clients,
    "memory": _section_memory,
    "persistence": _section_persistence,
    "stats": _section_stats,
    "replication": _section_replication,
    "cpu": _section_cpu,
    "commandstats": _section_commandstats,
    "keyspace": _section_keyspace,
}
DEFAULT = [n for n in SECTIONS if n != "commandstats"]


def info_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    wanted = {a.decode(errors="replace").lower() for a in argv[1:]}
    if not wanted:
        wanted = {"default"}
    if wanted & {"all", "everything"}:
        names = list(SECTIONS)
    else:
        if "default" in wanted:
            wanted |= set(DEFAULT)
        names = [n for n in SECTIONS if n in wanted]
    parts = []
    for name in names:
        lines = SECTIONS[name](ctx.server)
        title = "CPU" if name == "cpu" else name.capitalize()
        parts.append(f"# {title}\r\n" + "".join(line + "\r\n" for line in lines))
    return Verbatim("\r\n".join(parts))


# ------------------------------------------------------------------------------------------- CONFIG
def config_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    sub = argv[1].upper()
    config = ctx.server.config
    if sub == b"GET" and len(argv) >= 3:
        found = config_get(config, [a.decode(errors="replace") for a in argv[2:]])
        return {k.encode(): v.encode() for k, v in found.items()}
    if sub == b"SET" and len(argv) >= 4 and len(argv) % 2 == 0:
        for i in range(2, len(argv), 2):
            name = argv[i].decode(errors="replace")
            error = config_set(config, name, argv[i + 1].decode(errors="replace"))
            if error:
                raise CommandError(error)
            if name.lower() == "appendfsync" and ctx.server.aof is not None:
                ctx.server.aof.set_policy(config.appendfsync)
        return OK
    if sub == b"RESETSTAT" and len(argv) == 2:
        stats = ctx.server.stats
        stats.commands_processed = stats.connections_received = stats.expired_keys = 0
        stats.rejected_connections = 0
        for counts in ctx.server.command_stats.values():
            counts[:] = [0, 0, 0]
        return OK
    if sub == b"REWRITE" and len(argv) == 2:
        raise CommandError("ERR The server is running without a config file")
    raise CommandError(
        f"ERR unknown subcommand or wrong number of arguments for '{argv[1].decode(errors='replace')}'. "
        "Try CONFIG HELP."
    )


# ------------------------------------------------------------------------------------------ COMMAND
def _command_info(cmd: Command) -> list[Any]:
    return [
        cmd.name.lower(),
        cmd.arity,
        {SimpleString(f) for f in sorted(cmd.flags)},
        cmd.first_key,
        cmd.last_key,
        cmd.step,
        {SimpleString("@" + cmd.group)},
        [],
        [],
        [],
    ]


def _command_docs(cmd: Command) -> dict[bytes, Any]:
    return {
        b"summary": cmd.summary.encode() or cmd.name.lower(),
        b"since": b"1.0.0",
        b"group": cmd.group.encode(),
    }


def command_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    table = ctx.server.table
    if len(argv) == 1:
        return [_command_info(c) for c in table.values()]
    sub = argv[1].upper()
    if sub == b"COUNT" and len(argv) == 2:
        return len(table)
    if sub == b"INFO":
        names = argv[2:] or list(table)
        return [_command_info(table[n.upper()]) if n.upper() in table else None for n in names]
    if sub == b"DOCS":
        names = argv[2:] or list(table)
        return {n.lower(): _command_docs(table[n.upper()]) for n in names if n.upper() in table}
    if sub == b"LIST" and len(argv) in (2, 5):
        names = [c.name.lower() for c in table.values()]
        if len(argv) == 5:
            kind, value = argv[3].upper(), argv[4].decode(errors="replace")
            if argv[2].upper() != b"FILTERBY" or kind not in (b"PATTERN", b"ACLCAT", b"MODULE"):
                raise CommandError("ERR syntax error")
            if kind == b"PATTERN":
                names = [n for n in names if fnmatch.fnmatchcase(n.decode(), value.lower())]
            elif kind == b"ACLCAT":
                names = [c.name.lower() for c in table.values() if c.group == value.lower()]
            else:
                names = []
        return names
    if sub == b"GETKEYS" and len(argv) >= 3:
        cmd = table.get(argv[2].upper())
        if cmd is None:
            raise CommandError("ERR Invalid command specified")
        args = argv[2:]
        if (cmd.arity > 0 and len(args) != cmd.arity) or len(args) < -cmd.arity:
            raise CommandError("ERR Invalid number of arguments specified for command")
        keys = [args[i] for i in cmd.key_positions(len(args)) if i < len(args)]
        if not keys:
            raise CommandError("ERR The command has no key arguments")
        return keys
    raise CommandError(
        f"ERR unknown subcommand or wrong number of arguments for '{argv[1].decode(errors='replace')}'. "
        "Try COMMAND HELP."
    )


# ------------------------------------------------------------------------------------- persistence
def _persistence(ctx: CommandContext) -> Any:
    p = ctx.server.persistence
    if p is None:
        raise CommandError("ERR persistence is disabled: start kvserver with --dir DIR")
    return p


def save_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    from kvserver.persistence import PersistenceError

    try:
        _persistence(ctx).save()
    except PersistenceError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"ERR snapshot failed: {exc}") from None
    return OK


def bgsave_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    from kvserver.persistence import PersistenceError

    if len(argv) > 2 or (len(argv) == 2 and argv[1].upper() != b"SCHEDULE"):
        raise CommandError("ERR syntax error")
    try:
        _persistence(ctx).bgsave()
    except PersistenceError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"ERR cannot start a background save: {exc}") from None
    return SimpleString("Background saving started")


def lastsave_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return int(ctx.server.last_save)


def shutdown_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    save: bool | None = None
    for arg in argv[1:]:
        option = arg.upper()
        if option == b"NOSAVE":
            save = False
        elif option == b"SAVE":
            save = True
        elif option in (b"NOW", b"FORCE", b"ABORT"):
            continue
        else:
            raise CommandError("ERR syntax error")
    loop = ctx.server.loop
    if loop is None:
        raise CommandError("ERR shutdown is not available here")
    error = loop.shutdown(save)
    if error:
        raise CommandError(error)
    ctx.client.close_after_reply = True
    return NO_REPLY  # Redis closes the connection without a reply


# ------------------------------------------------------------------------------------------- DEBUG
def debug_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    sub = argv[1].upper()
    if sub == b"SLEEP" and len(argv) == 3:
        try:
            seconds = float(argv[2])
        except ValueError:
            raise CommandError("ERR value is not a valid float") from None
        time.sleep(max(0.0, seconds))  # blocks the whole server, exactly like Redis
        return OK
    if sub == b"POPULATE" and 3 <= len(argv) <= 5:
        return _debug_populate(ctx, argv)
    if sub == b"JMAP" or sub == b"RELOAD":
        raise CommandError(f"ERR DEBUG {sub.decode()} is not supported by kvserver")
    raise CommandError(
        f"ERR unknown subcommand or wrong number of arguments for '{argv[1].decode(errors='replace')}'. "
        "Try DEBUG HELP."
    )


def _debug_populate(ctx: CommandContext, argv: list[bytes]) -> Reply:
    """DEBUG POPULATE count [prefix] [size]: "<prefix>:<n>" -> "value:<n>", existing keys kept.

    Not propagated to the AOF (as in Redis): a test-data helper, not a write users rely on.
    """
    try:
        count = int(argv[2])
        size = int(argv[4]) if len(argv) == 5 else 0
    except ValueError:
        raise CommandError(NOT_INTEGER) from None
    if count < 0 or size < 0:
        raise CommandError(MUST_BE_POSITIVE)
    prefix = argv[3] if len(argv) >= 4 else b"key"
    db = ctx.db
    store = db.store
    contains = db.__contains__
    for i in range(count):
        key = b"%s:%d" % (prefix, i)
        if contains(key):
            continue
        value = b"value:%d" % i
        if size:
            value = value[:size] if len(value) >= size else value + b"\x00" * (size - len(value))
        store(key, value)
    ctx.server.dirty += count
    return OK


def time_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    now = time.time_ns() // 1000
    return [str(now // 1_000_000).encode(), str(now % 1_000_000).encode()]


COMMANDS: list[Command] = [
    command(
        "FLUSHDB",
        flushdb_command,
        -1,
        "write",
        group="server",
        summary="Removes all keys from the current database.",
    ),
    command(
        "FLUSHALL",
        flushall_command,
        -1,
        "write",
        group="server",
        summary="Removes all keys from all databases.",
    ),
    command(
        "INFO",
        info_command,
        -1,
        "loading stale",
        group="server",
        summary="Returns information and statistics about the server.",
    ),
    command(
        "CONFIG",
        config_command,
        -2,
        "admin loading stale",
        group="server",
        summary="A container for server configuration commands.",
    ),
    command(
        "COMMAND",
        command_command,
        -1,
        "loading stale",
        group="server",
        summary="Returns detailed information about all commands.",
    ),
    command(
        "SAVE",
        save_command,
        1,
        "admin noscript no-multi",
        group="server",
        summary="Synchronously saves the database(s) to disk.",
    ),
    command(
        "BGSAVE",
        bgsave_command,
        -1,
        "admin noscript no-multi",
        group="server",
        summary="Asynchronously saves the database(s) to disk.",
    ),
    command(
        "LASTSAVE",
        lastsave_command,
        1,
        "fast loading stale",
        group="server",
        summary="Returns the Unix timestamp of the last successful save to disk.",
    ),
    command(
        "SHUTDOWN",
        shutdown_command,
        -1,
        "admin noscript loading stale no-multi",
        group="server",
        summary="Synchronously saves the database(s) to disk and shuts down the server.",
    ),
    command(
        "DEBUG",
        debug_command,
        -2,
        "admin noscript loading stale",
        group="server",
        summary="A container for debugging commands.",
    ),
    command(
        "TIME",
        time_command,
        1,
        "fast loading stale",
        group="server",
        summary="Returns the server time.",
    ),
]
