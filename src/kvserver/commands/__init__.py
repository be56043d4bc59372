"""Assembles the command table from every command module's `COMMANDS` list (STYLE.md §5).

Modules are imported by name; a module that does not exist yet (the data-type groups are written in
parallel) is skipped, but an import error *inside* a module is raised: a broken module must not silently
drop its commands.
"""

from __future__ import annotations

import importlib

from kvserver.commands.table import Command, build_table

MODULES = (
    "connection",
    "server",
    "transactions",
    "strings",
    "keys",
    "hashes",
    "lists",
    "sets",
    "zsets",
    "zsetops",
    "databases",
    "sort",
    "dump",
    "functions",
    "bitmaps",
    "hyperloglog",
    "lcs",
    "blocking",
    "pubsub",
)


def all_commands() -> list[Command]:
    rows: list[Command] = []
    for name in MODULES:
        qualified = f"kvserver.commands.{name}"
        try:
            module = importlib.import_module(qualified)
        except ModuleNotFoundError as exc:
            if exc.name != qualified:
                raise
            continue
        rows.extend(module.COMMANDS)
    return rows


def build_command_table() -> dict[bytes, Command]:
    return build_table(all_commands())
