"""The command table: every command is a row of data (STYLE.md §5; Redis server.c / commands/*.json).

Each handler module declares its rows in a module-level `COMMANDS: list[Command]`; `build_table()` collects
them into one dict keyed by upper-case name. Handlers are plain functions named `<verb>_command`:

    def get_command(ctx: CommandContext, argv: list[bytes]) -> Reply

`argv[0]` is the command name as the client sent it. Arity follows Redis: N > 0 means exactly N arguments
(name included), -N means at least N; the dispatcher checks it before calling the handler.

Flags (a flag's meaning is written here once):
    write      may modify the keyspace: refused under OOM/readonly, propagated to the append-only file
    readonly   reads the keyspace only
    fast       O(1) or O(log N): never blocks the loop for long
    admin      server administration (CONFIG, SAVE, SHUTDOWN, DEBUG)
    noscript   irrelevant here, kept for COMMAND INFO fidelity
    loading    allowed while loading the data set
    stale      allowed regardless of replication state
    no-auth    allowed before AUTH (AUTH, HELLO, QUIT)
    no-multi   refused inside MULTI (WATCH, MULTI itself)
    pubsub     unused for now

Key positions (first_key, last_key, step) are Redis's: last_key -1 means "up to the last argument";
they drive WATCH invalidation and COMMAND INFO / COMMAND GETKEYS.
Subcommands (CONFIG GET, CLIENT LIST, ...) are dispatched by their parent's handler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvserver.context import CommandContext

Handler = Callable[["CommandContext", list[bytes]], Any]


@dataclass(frozen=True)
class Command:
    name: bytes  # upper case, e.g. b"GET"
    handler: Handler
    arity: int
    flags: frozenset[str] = field(default_factory=frozenset)
    first_key: int = 0
    last_key: int = 0
    step: int = 0
    group: str = "generic"  # "string", "list", "hash", "set", "sorted-set", "bitmap", "hyperloglog", "generic", "connection", "server", "transactions", "scripting"
    summary: str = ""

    def key_positions(self, argc: int) -> range:
        if self.first_key == 0:
            return range(0)
        last = self.last_key if self.last_key >= 0 else argc + self.last_key
        return range(self.first_key, last + 1, self.step or 1)


def command(
    name: str,
    handler: Handler,
    arity: int,
    flags: str = "",
    keys: tuple[int, int, int] = (0, 0, 0),
    group: str = "generic",
    summary: str = "",
) -> Command:
    """Shorthand for a table row: command("GET", get_command, 2, "readonly fast", (1, 1, 1), "string")."""
    return Command(
        name=name.upper().encode(),
        handler=handler,
        arity=arity,
        flags=frozenset(flags.split()),
        first_key=keys[0],
        last_key=keys[1],
        step=keys[2],
        group=group,
        summary=summary,
    )


def build_table(rows: Iterable[Command]) -> dict[bytes, Command]:
    table: dict[bytes, Command] = {}
    for row in rows:
        if row.name in table:
            raise ValueError(f"command {row.name!r} is declared twice")
        table[row.name] = row
    return table
