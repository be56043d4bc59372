"""Every limit on untrusted input to the patch tools and the agent, in one place, and the JSON reader that
enforces them.

Untrusted input: `.lpatch` files (read by `livepatch inspect`/`apply` and, inside a request, by the agent),
control-socket request lines (read by the agent) and reply lines (read by the CLI), package sources read
by `livepatch diff`. docs/cli.md and docs/patch-format.md list these values; change them here only.

Why the JSON limits: CPython's `json` recurses once per nesting level (100,000 `[` raise RecursionError,
not a JSON error) and refuses integers of more than 4300 digits with a bare ValueError. `loads_json`
turns both into one `JSONLimitError` with a message that says what is wrong (never a traceback), and
enforces the explicit limits: integer digits while decoding, nesting depth on the decoded value (an
iterative walk of its containers) or, past what the decoder can nest, from the text itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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

_DEPTH_SCAN_BYTES = 1 << 20  # how much of a too-deep document is scanned to say how deep it is
_BRACKETS = bytes(range(256)).translate(None, b"[]{}")  # every byte except the brackets
_DEPTH_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JSONLimitError(ValueError):
    """A JSON document that is malformed or over a limit; the message says which and where."""


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in the JSON text `data` (outside strings); for error
    messages. Drops escaped backslashes, then escaped quotes (left to right, as a decoder pairs them), so
    every remaining quote opens or closes a string and the pieces between every second quote are
    outside strings; only the brackets left are walked in Python."""
    unescaped = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.split(b'"')[::2]).translate(None, _BRACKETS)
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _calling(between: Callable[[], None]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def hook(obj: dict[str, Any]) -> dict[str, Any]:
        between()
        return obj

    return hook


def value_depth(
    value: Any, limit: int | None = None, between: Callable[[], None] | None = None
) -> int:
    """The nesting depth of a decoded value (a scalar is 0, `[]` is 1), without recursion. Walks one
    level of containers at a time (no per-object bookkeeping: ~0.09 ms for a 115 kB patch, where a
    stack of (object, depth) pairs took 0.18); past `limit` levels it stops and returns limit + 1.
    `between` (if given) is called after each level."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if limit is not None and depth > limit:
            return depth
        below: list[Any] = []
        for obj in level:
            below.extend(
                c
                for c in (obj.values() if isinstance(obj, dict) else obj)
                if isinstance(c, _CONTAINERS)
            )
        level = below
        if between is not None:
            between()
    return depth


_CONTAINERS = (dict, list)


def _too_deep(depth: int, at_least: str = "") -> JSONLimitError:
    return JSONLimitError(
        f"nested {at_least}{depth} levels deep, over the limit of {MAX_JSON_DEPTH}"
    )


def _parse_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_JSON_INT_DIGITS:
        raise JSONLimitError(
            f"an integer has {digits} digits, over the limit of {MAX_JSON_INT_DIGITS}"
        )
    return int(text)


def _parse_constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not valid JSON")


def loads_json(data: bytes | str, between: Callable[[], None] | None = None) -> Any:
    """Decode one JSON document within the limits above. Raises JSONLimitError (a ValueError) for
    anything that is not UTF-8 JSON within the limits; never RecursionError. `between` (if given) is
    called as each JSON object is decoded (json's object_hook: the decoder calls back into Python, so
    one long C call becomes pieces a pacer can pause between; +0.02 ms for a 115 kB patch), between the
    decoding and the depth check, and between the levels of the depth check (the control thread's
    runtime.pacing.Pacer)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONLimitError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_constant=_parse_constant,
            object_hook=None if between is None else _calling(between),
        )
    except JSONLimitError:
        raise
    except RecursionError:
        # The C decoder recurses once per level and stops at the interpreter's recursion limit. The
        # depth for the message is measured on a bounded prefix (a lower bound for longer documents).
        prefix = raw[:_DEPTH_SCAN_BYTES]
        at_least = "" if len(prefix) == len(raw) else "at least "
        raise _too_deep(json_depth(prefix), at_least) from None
    except json.JSONDecodeError as exc:
        at_end = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        hint = " (it looks truncated)" if at_end else ""
        raise JSONLimitError(
            f"bad JSON at line {exc.lineno} column {exc.colno}: {exc.msg}{hint}"
        ) from exc
    except ValueError as exc:  # a backstop: _parse_int should catch the integers CPython refuses
        raise JSONLimitError(f"cannot be decoded: {exc}") from exc
    if between is not None:
        between()
    if value_depth(value, MAX_JSON_DEPTH, between) > MAX_JSON_DEPTH:
        raise _too_deep(value_depth(value))  # the whole depth, for the message
    return value
