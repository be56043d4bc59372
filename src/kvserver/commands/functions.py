"""FUNCTION (Redis 7.0 functions.c), the part that needs no scripting engine: the library is always
empty. FLUSH succeeds, LIST answers an empty array, STATS an idle engine; LOAD, DELETE, DUMP and RESTORE
answer an error saying functions are not supported (a later round brings Lua). Test suites and clients
call FUNCTION FLUSH in their setup, so it must not fail.

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kvserver.commands.table import Command, command
from kvserver.replies import OK, SYNTAX, CommandError, Reply, SimpleString

if TYPE_CHECKING:
    from kvserver.context import CommandContext

NOT_SUPPORTED = "ERR kvserver has no scripting engine yet: FUNCTION {sub} is not supported"


def function_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    sub = argv[1].upper()
    rest = argv[2:]
    if sub == b"FLUSH":
        if len(rest) > 1 or (rest and rest[0].upper() not in (b"ASYNC", b"SYNC")):
            raise CommandError("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
        return OK
    if sub == b"LIST":
        i = 0
        while i < len(rest):
            opt = rest[i].upper()
            if opt == b"WITHCODE":
                i += 1
            elif opt == b"LIBRARYNAME" and i + 1 < len(rest):
                i += 2
            else:
                raise CommandError(f"ERR Unknown argument {rest[i].decode(errors='replace')}")
        return []
    if sub == b"STATS" and not rest:
        return {
            b"running_script": None,
            b"engines": {b"LUA": {b"libraries_count": 0, b"functions_count": 0}},
        }
    if sub == b"HELP" and not rest:
        return [SimpleString("FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"),
                SimpleString("FLUSH [ASYNC|SYNC]"), SimpleString("LIST [WITHCODE] [LIBRARYNAME <pattern>]"),
                SimpleString("STATS"), SimpleString("HELP")]  # fmt: skip
    if sub in (b"LOAD", b"DELETE", b"DUMP", b"RESTORE", b"KILL"):
        raise CommandError(NOT_SUPPORTED.format(sub=sub.decode()))
    if sub in (b"FLUSH", b"STATS", b"HELP"):
        raise CommandError(SYNTAX)
    name = argv[1].decode(errors="replace")
    raise CommandError(f"ERR unknown subcommand '{name}'. Try FUNCTION HELP.")


COMMANDS: list[Command] = [
    command("FUNCTION", function_command, -2, "noscript", (0, 0, 0), "scripting",
            summary="A container for function commands."),
]  # fmt: skip
