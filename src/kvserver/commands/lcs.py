"""LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN] (Redis 7.0 t_string.c lcsCommand).

The dynamic-programming table and the walk back through it are Redis's, step for step, so IDX reports
the same ranges in the same order (last match first). Missing keys are empty strings.

Limit (kvserver only): the table has len(a) * len(b) cells, filled in Python; above `MAX_CELLS` the
command is refused with an error saying so, instead of stalling the event loop for seconds (Redis has
no such limit: it is C and allocates the table, refusing only sizes that overflow).

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context).
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING, Any

from kvserver.commands.table import Command, command
from kvserver.replies import SYNTAX, CommandError, Reply
from kvserver.types.numbers import parse_int

if TYPE_CHECKING:
    from kvserver.context import CommandContext

MAX_CELLS = 4_000_000


def _operand(ctx: CommandContext, key: bytes) -> bytes:
    value = ctx.db.lookup(key, ctx.now_ms)
    if value is None:
        return b""
    if type(value) is not bytes:
        raise CommandError("ERR The specified keys must contain string values")
    return value


def _table(a: bytes, b: bytes) -> list[array[int]]:
    rows = [array("I", bytes(4 * (len(b) + 1)))]
    for i in range(1, len(a) + 1):
        prev = rows[-1]
        row = array("I", prev)
        ai = a[i - 1]
        left = 0
        for j in range(1, len(b) + 1):
            if ai == b[j - 1]:
                left = prev[j - 1] + 1
            else:
                up = prev[j]
                left = up if up > left else left
            row[j] = left
        rows.append(row)
    return rows


def lcs_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    a = _operand(ctx, argv[1])
    b = _operand(ctx, argv[2])
    get_len = get_idx = withmatchlen = False
    minmatchlen = 0
    i = 3
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        if opt == b"IDX":
            get_idx = True
        elif opt == b"LEN":
            get_len = True
        elif opt == b"WITHMATCHLEN":
            withmatchlen = True
        elif opt == b"MINMATCHLEN" and i + 1 < n:
            minmatchlen = max(parse_int(argv[i + 1]), 0)
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    if get_len and get_idx:
        raise CommandError("ERR If you want both the length and indexes, please just use IDX.")
    if len(a) * len(b) > MAX_CELLS:
        raise CommandError(
            f"ERR LCS of strings this long is refused by kvserver: len(a) * len(b) must be at most "
            f"{MAX_CELLS} (it is {len(a) * len(b)})"
        )
    dp = _table(a, b)
    length = dp[len(a)][len(b)]
    if get_len:
        return length
    result = bytearray(length)
    matches: list[Any] = []
    alen = len(a)
    i, j = len(a), len(b)
    idx = length
    arange_start = alen
    arange_end = brange_start = brange_end = 0
    while i > 0 and j > 0:
        emit = False
        if a[i - 1] == b[j - 1]:
            result[idx - 1] = a[i - 1]
            if arange_start == alen:
                arange_start = arange_end = i - 1
                brange_start = brange_end = j - 1
            elif arange_start == i and brange_start == j:
                arange_start -= 1
                brange_start -= 1
            else:
                emit = True
            if arange_start == 0 or brange_start == 0:
                emit = True
            idx -= 1
            i -= 1
            j -= 1
        else:
            if dp[i - 1][j] > dp[i][j - 1]:
                i -= 1
            else:
                j -= 1
            if arange_start != alen:
                emit = True
        if emit:
            match_len = arange_end - arange_start + 1
            if get_idx and (minmatchlen == 0 or match_len >= minmatchlen):
                entry: list[Any] = [[arange_start, arange_end], [brange_start, brange_end]]
                if withmatchlen:
                    entry.append(match_len)
                matches.append(entry)
            arange_start = alen
    if get_idx:
        return {b"matches": matches, b"len": length}
    return bytes(result)


COMMANDS: list[Command] = [
    command("LCS", lcs_command, -3, "readonly", (1, 2, 1), "string",
            summary="Finds the longest common substring."),
]  # fmt: skip
