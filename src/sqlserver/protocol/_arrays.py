"""Arrays as (nested) Python lists, over any element codec: text form {1,2,3} and binary form.

Text (array_out/array_in): elements separated by ',', NULL unquoted; an element is double-quoted when
it is empty, is NULL in any case, or holds { } " \\ , or white space, with " and \\ escaped by a
backslash. Input also accepts a leading dimension decoration ("[1:3]={...}") and ignores it.
Binary (array_send): int32 ndim, int32 has-nulls flag, uint32 element oid, ndim x (int32 length, int32
lower bound), then every element in row-major order as int32 length (-1 = NULL) and bytes.
At most 6 dimensions (PostgreSQL's MAXDIM); sub-arrays must have matching dimensions.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Any

from sqlserver.protocol._scalars import bad_binary, invalid_text, utf8
from sqlserver.protocol.errors import (
    DATATYPE_MISMATCH,
    INVALID_TEXT_REPRESENTATION,
    PROGRAM_LIMIT_EXCEEDED,
    PgError,
)

MAXDIM = 6
_HEAD = struct.Struct("!iiI")
_DIM = struct.Struct("!ii")
_I32 = struct.Struct("!i")
_NEEDS_QUOTES = re.compile(r'[{}",\\\s]|^$|^null$', re.I)
_SPACE = " \t\n\r\v\f"

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]


def _shape(value: list[Any]) -> list[int]:
    """Dimensions of a rectangular nested list; [] for an empty array."""
    dims: list[int] = []
    level: list[Any] = [value]
    while level and all(isinstance(x, list | tuple) for x in level):
        sizes = {len(x) for x in level}
        if len(sizes) != 1:
            raise PgError(
                INVALID_TEXT_REPRESENTATION,
                "multidimensional arrays must have sub-arrays with matching dimensions",
            )
        size = sizes.pop()
        if size == 0:
            if dims:  # {{},{}}: PostgreSQL has no empty sub-arrays
                raise PgError(
                    INVALID_TEXT_REPRESENTATION,
                    "multidimensional arrays must not have empty sub-arrays",
                )
            return []
        dims.append(size)
        level = [y for x in level for y in x]
    if any(isinstance(x, list | tuple) for x in level):
        raise PgError(
            INVALID_TEXT_REPRESENTATION,
            "multidimensional arrays must have sub-arrays with matching dimensions",
        )
    if len(dims) > MAXDIM:
        raise PgError(
            PROGRAM_LIMIT_EXCEEDED,
            f"number of array dimensions ({len(dims)}) exceeds the maximum allowed ({MAXDIM})",
        )
    return dims


def _flatten(value: list[Any], depth: int) -> list[Any]:
    items = list(value)
    for _ in range(depth - 1):
        items = [y for x in items for y in x]
    return items


def to_text(value: Any, elem_to_text: Encoder) -> bytes:
    if isinstance(value, str):
        return value.encode()
    _shape(list(value))

    def render(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "{" + ",".join(render(x) for x in v) + "}"
        if v is None:
            return "NULL"
        text = utf8(elem_to_text(v))
        if _NEEDS_QUOTES.search(text):
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text

    return render(list(value)).encode()


def from_text(data: bytes, elem_from_text: Decoder, type_name: str) -> list[Any]:
    text = utf8(data).strip(_SPACE)
    if text.startswith("["):
        eq = text.find("=")
        if eq < 0 or not re.fullmatch(r"(\[\s*-?\d+\s*(:\s*-?\d+\s*)?\])+\s*", text[:eq]):
            raise invalid_text(type_name, data)
        text = text[eq + 1 :].lstrip(_SPACE)
    if not text.startswith("{"):
        raise PgError(
            INVALID_TEXT_REPRESENTATION,
            f'malformed array literal: "{utf8(data)}"',
            detail='Array value must start with "{" or dimension information.',
        )
    value, pos = _parse_level(text, 1, data, elem_from_text, 1)
    if text[pos:].strip(_SPACE):
        raise PgError(
            INVALID_TEXT_REPRESENTATION,
            f'malformed array literal: "{utf8(data)}"',
            detail="Junk after closing right brace.",
        )
    _shape(value)
    return value


def _parse_level(
    text: str, pos: int, data: bytes, dec: Decoder, depth: int
) -> tuple[list[Any], int]:
    """The elements of one {...} level starting after its '{'; returns them and the position after '}'."""

    def malformed() -> PgError:
        return PgError(INVALID_TEXT_REPRESENTATION, f'malformed array literal: "{utf8(data)}"')

    if depth > MAXDIM:
        raise PgError(
            PROGRAM_LIMIT_EXCEEDED,
            f"number of array dimensions exceeds the maximum allowed ({MAXDIM})",
        )
    items: list[Any] = []
    n = len(text)
    while True:
        while pos < n and text[pos] in _SPACE:
            pos += 1
        if pos >= n:
            raise malformed()
        if text[pos] == "}" and not items:
            return items, pos + 1
        if text[pos] == "{":
            sub, pos = _parse_level(text, pos + 1, data, dec, depth + 1)
            items.append(sub)
        else:
            quoted = text[pos] == '"'
            pos += quoted
            chars: list[str] = []
            last_real = 0  # unquoted: trailing white space is not part of the element
            while True:
                if pos >= n:
                    raise malformed()
                c = text[pos]
                if c == "\\":
                    if pos + 1 >= n:
                        raise malformed()
                    chars.append(text[pos + 1])
                    pos += 2
                    last_real = len(chars)
                    continue
                if quoted and c == '"':
                    pos += 1
                    break
                if not quoted and c in ",}":
                    break
                if not quoted and c in '{"':
                    raise malformed()
                chars.append(c)
                pos += 1
                if quoted or c not in _SPACE:
                    last_real = len(chars)
            raw = "".join(chars[: last_real if not quoted else len(chars)])
            if not quoted and raw.lower() == "null":
                items.append(None)
            elif not quoted and not raw:
                raise malformed()
            else:
                items.append(dec(raw.encode()))
        while pos < n and text[pos] in _SPACE:
            pos += 1
        if pos >= n:
            raise malformed()
        if text[pos] == "}":
            return items, pos + 1
        if text[pos] != ",":
            raise malformed()
        pos += 1


def to_binary(
    value: Any, elem_oid: int, elem_to_binary: Encoder, from_text_: Decoder, vector: bool = False
) -> bytes:
    """vector: int2vector/oidvector, always one dimension with lower bound 0, even when empty."""
    if isinstance(value, str | bytes):
        value = from_text_(value.encode() if isinstance(value, str) else value)
    value = list(value)
    dims = [len(value)] if vector else _shape(value)
    items = _flatten(value, len(dims)) if dims else []
    parts = [b""]
    has_null = 0
    for dim in dims:
        parts.append(_DIM.pack(dim, 0 if vector else 1))
    for item in items:
        if item is None:
            has_null = 1
            parts.append(b"\xff\xff\xff\xff")
        else:
            data = elem_to_binary(item)
            parts.append(_I32.pack(len(data)))
            parts.append(data)
    parts[0] = _HEAD.pack(len(dims), has_null, elem_oid)
    return b"".join(parts)


def from_binary(data: bytes, elem_oid: int, elem_from_binary: Decoder, type_name: str) -> list[Any]:
    if len(data) < 12:
        raise bad_binary(type_name, f"expected at least 12 bytes, got {len(data)}")
    ndim, flags, oid = _HEAD.unpack_from(data)
    if not 0 <= ndim <= MAXDIM:
        raise bad_binary(type_name, f"invalid number of dimensions: {ndim}")
    if flags not in (0, 1):
        raise bad_binary(type_name, "invalid array flags")
    if oid != elem_oid:
        raise PgError(
            DATATYPE_MISMATCH,
            f"binary data has array element type {oid} instead of expected {elem_oid}",
        )
    pos = 12
    if len(data) < pos + 8 * ndim:
        raise bad_binary(type_name, "dimensions run past the end")
    dims = [_DIM.unpack_from(data, pos + 8 * i)[0] for i in range(ndim)]
    pos += 8 * ndim
    total = 1
    for d in dims:
        if d < 0:
            raise bad_binary(type_name, f"invalid array dimension {d}")
        total *= d
    if not ndim or total == 0:
        if pos != len(data):
            raise bad_binary(type_name, "data after an empty array")
        return []
    if total * 4 > len(data) - pos:  # every element needs at least its length word
        raise bad_binary(type_name, f"{total} elements cannot fit in {len(data)} bytes")
    items: list[Any] = []
    for _ in range(total):
        if pos + 4 > len(data):
            raise bad_binary(type_name, "insufficient data left in message")
        size = _I32.unpack_from(data, pos)[0]
        pos += 4
        if size == -1:
            items.append(None)
            continue
        if size < 0 or pos + size > len(data):
            raise bad_binary(type_name, f"invalid element length {size}")
        items.append(elem_from_binary(data[pos : pos + size]))
        pos += size
    if pos != len(data):
        raise bad_binary(type_name, "data after the last element")
    for d in reversed(dims[1:]):
        items = [items[i : i + d] for i in range(0, len(items), d)]
    return items
