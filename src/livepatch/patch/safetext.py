"""Showing untrusted text: a patch's id, description, module and definition names, refusal texts, and the
reasons built from them travel from a patch author to an operator's terminal and to the server's log.

A terminal obeys escape sequences: a description holding "\\x1b[1A\\x1b[2K signature: valid" would erase a
line and draw a fake one. `printable()` is the ONE place that makes such text inert; every renderer of the
`livepatch` command and the agent's log (`EscapeControls`) go through it. It replaces every character
of Unicode categories Cc (C0/C1 controls, DEL: escapes, carriage return, newline, backspace), Cf (format:
bidirectional overrides that reorder what is shown), Zl/Zp (line and paragraph separators) and Cs/Co/Cn
(surrogates, private use, unassigned) by a Python-style escape (`\\x1b`, `\\u202e`); everything else is kept, so ordinary text, including
non-ASCII letters, reads as it was written. `keep_newlines=True` keeps "\\n" (multi-line texts shown on
their own lines, like a description).
"""

from __future__ import annotations

import logging
import unicodedata
from functools import lru_cache

__all__ = ["EscapeControls", "printable"]

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@lru_cache(maxsize=4096)
def _escape_char(ch: str) -> str:
    if unicodedata.category(ch) not in _UNSAFE_CATEGORIES:
        return ch
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """`text` (str() of it when not a string) with every control or format character escaped."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable() and (not keep_newlines or "\n" not in s):
        return (
            s  # the common case: nothing to escape (str.isprintable is false for every unsafe char)
        )
    if keep_newlines:
        return "\n".join(printable(line) for line in s.split("\n"))
    return "".join(_escape_char(ch) for ch in s)


class EscapeControls(logging.Filter):
    """A logging filter that passes every string argument of a record through `printable()`, so patch
    ids and reasons land in the server's log as inert text. Attach it to the loggers that log them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(printable(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: printable(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        if isinstance(record.msg, str) and not record.args:
            record.msg = printable(record.msg)
        return True
