"""Every limit on untrusted input to the patch tools and the agent, in one place, and the JSON reader that
enforces them.

Untrusted input: `.lpatch` files (read by `livepatch inspect`/`apply` and, inside a request, by the agent),
control-socket request lines (read by the agent) and reply lines (read by the CLI), package sources read
by `livepatch diff`. docs/cli.md and docs/patch-format.md list these values; change them here only.

Why the JSON limits: CPython's `json` recurses once per nesting level (100,000 `[` raise RecursionError,
not a JSON error) and refuses integers of more than 4300 digits with a bare ValueError. `loads_json`
checks both before and while decoding, so every malformed document becomes one `JSONLimitError` with a
message that says what is wrong: never a traceback.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

MAX_FILE_BYTES = 16 * 1024 * 1024  # a .lpatch file (refused before it is parsed)
MAX_REQUEST_BYTES = (
    MAX_FILE_BYTES + 64 * 1024
)  # one control request line: one patch plus small fields
MAX_REPLY_BYTES = 64 * 1024 * 1024  # one reply line (a long history with events)
MAX_JSON_DEPTH = 64  # nesting of arrays/objects; the deepest legitimate document nests 7 levels
MAX_JSON_INT_DIGITS = 64  # digits of one JSON integer (timestamps in ns have 19)
MAX_SOURCE_BYTES = 4 * 1024 * 1024  # one module's source (diff) and the hooks file
MAX_PACKAGE_FILES = 10_000  # modules in one package version (diff)

# A JSON string (the scanner below must not count brackets inside strings).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte except the brackets
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JSONLimitError(ValueError):
    """A JSON document that is malformed or over a limit; the message says which and where."""


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in `data` (outside strings). Linear, C-speed scanning:
    only the brackets left after removing strings are walked in Python."""
    brackets = _STRING.sub(b"", data).translate(None, _BRACKETS)
    if len(brackets) <= MAX_JSON_DEPTH:
        return len(brackets)  # cannot nest deeper than the number of brackets
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_JSON_INT_DIGITS:
        raise JSONLimitError(
            f"an integer has {digits} digits, over the limit of {MAX_JSON_INT_DIGITS}"
        )
    return int(text)


def _parse_constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not valid JSON")


def loads_json(data: bytes | str) -> Any:
    """Decode one JSON document within the limits above. Raises JSONLimitError (a ValueError) for
    anything that is not UTF-8 JSON within the limits; never RecursionError."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise JSONLimitError(f"nested {depth} levels deep, over the limit of {MAX_JSON_DEPTH}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONLimitError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        return json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except JSONLimitError:
        raise
    except json.JSONDecodeError as exc:
        at_end = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        hint = " (it looks truncated)" if at_end else ""
        raise JSONLimitError(
            f"bad JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}"
        ) from exc
    except (RecursionError, ValueError) as exc:  # a backstop: the checks above should catch these
        raise JSONLimitError(f"cannot be decoded: {exc}") from exc
