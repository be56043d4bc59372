"""Text and binary codecs of the scalar types except date/time (see _datetimes.py).

Each type has four functions: to_text(value) -> bytes, from_text(bytes) -> value, to_binary(value) ->
bytes, from_binary(bytes) -> value, following PostgreSQL 15's typinput/typoutput/typsend/typreceive.
Input errors raise PgError with PostgreSQL's SQLSTATE and wording: 22P02 invalid text, 22003 out of
range, 22P03 bad binary data, 22021 invalid UTF-8.

Encoders are lenient about where a value comes from (SQLite's dynamic typing): a str given for a
non-text type is taken as that type's text form (sent as is in text format, parsed then sent in
binary format).
"""

from __future__ import annotations

import json
import math
import re
import struct
import uuid
from decimal import Decimal
from typing import Any

from sqlserver.protocol.errors import (
    CHARACTER_NOT_IN_REPERTOIRE,
    INVALID_BINARY_REPRESENTATION,
    INVALID_TEXT_REPRESENTATION,
    NUMERIC_VALUE_OUT_OF_RANGE,
    UNTRANSLATABLE_CHARACTER,
    PgError,
)


def invalid_text(type_name: str, data: bytes | str) -> PgError:
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    return PgError(
        INVALID_TEXT_REPRESENTATION, f'invalid input syntax for type {type_name}: "{text}"'
    )


def out_of_range(type_name: str, data: object) -> PgError:
    return PgError(
        NUMERIC_VALUE_OUT_OF_RANGE, f'value "{data}" is out of range for type {type_name}'
    )


def bad_binary(type_name: str, why: str) -> PgError:
    return PgError(
        INVALID_BINARY_REPRESENTATION, f"incorrect binary data format for type {type_name}: {why}"
    )


def utf8(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise PgError(
            CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8"'
        ) from None


def check_size(type_name: str, data: bytes, size: int) -> None:
    if len(data) != size:
        raise bad_binary(type_name, f"expected {size} bytes, got {len(data)}")


# ---------------------------------------------------------------------------------------------- bool
_TRUE = ("true", "yes", "on")
_FALSE = ("false", "no", "off")


def bool_from_text(data: bytes) -> bool:
    # PostgreSQL's parse_bool: t/true/y/yes/on/1 and f/false/n/no/off/0, any unique prefix, any case.
    word = data.decode("ascii", "replace").strip().lower()
    if word in ("1", "0"):
        return word == "1"
    if word and word != "o":
        if any(w.startswith(word) for w in _TRUE):
            return True
        if any(w.startswith(word) for w in _FALSE):
            return False
    raise invalid_text("boolean", data)


def bool_to_text(v: Any) -> bytes:
    if isinstance(v, str):
        v = bool_from_text(v.encode())
    return b"t" if v else b"f"


def bool_to_binary(v: Any) -> bytes:
    if isinstance(v, str):
        v = bool_from_text(v.encode())
    return b"\x01" if v else b"\x00"


def bool_from_binary(data: bytes) -> bool:
    check_size("boolean", data, 1)
    return data != b"\x00"


# ------------------------------------------------------------------------------------------ integers
_INT_RE = re.compile(rb"\s*[+-]?[0-9]+\s*")


class IntCodec:
    """int2/int4/int8/oid (oid is unsigned 32-bit)."""

    def __init__(self, name: str, fmt: str) -> None:
        self.name = name
        self.struct = struct.Struct("!" + fmt)
        bits = self.struct.size * 8
        self.lo: int = 0 if fmt.isupper() else -(2 ** (bits - 1))
        self.hi: int = 2**bits - 1 if fmt.isupper() else 2 ** (bits - 1) - 1

    def from_text(self, data: bytes) -> int:
        if _INT_RE.fullmatch(data) is None:
            raise invalid_text(self.name, data)
        v = int(data)
        if not self.lo <= v <= self.hi:
            raise out_of_range(self.name, data.decode().strip())
        return v

    def to_text(self, v: Any) -> bytes:
        if type(v) is int:
            return str(v).encode()
        if isinstance(v, str):
            return v.encode()
        return str(self._coerce(v)).encode()

    def to_binary(self, v: Any) -> bytes:
        v = v if type(v) is int else self._coerce(v)
        if not self.lo <= v <= self.hi:
            raise out_of_range(self.name, v)
        return self.struct.pack(v)

    def from_binary(self, data: bytes) -> int:
        check_size(self.name, data, self.struct.size)
        return int(self.struct.unpack(data)[0])

    def _coerce(self, v: Any) -> int:
        if isinstance(v, str | bytes):
            return self.from_text(v.encode() if isinstance(v, str) else v)
        if isinstance(v, float | Decimal):
            if not math.isfinite(v):
                raise out_of_range(self.name, v)
            return round(v)  # as float8 -> int (rint): half to even
        return int(v)


# ---------------------------------------------------------------------------------------- floats
_FLOAT_RE = re.compile(
    rb"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)\s*", re.I
)


class FloatCodec:
    """float4 / float8 with PostgreSQL 12+ output: shortest exact digits, NaN, Infinity."""

    def __init__(self, name: str, fmt: str, digits: int) -> None:
        self.name = name
        self.struct = struct.Struct("!" + fmt)
        self.digits = digits  # FLT_DIG / DBL_DIG: exponent where output switches to e-notation
        self.single = fmt == "f"

    def from_text(self, data: bytes) -> float:
        if _FLOAT_RE.fullmatch(data) is None:
            raise invalid_text(self.name, data)
        v = float(data)
        word = data.strip().lower().lstrip(b"+-")
        if math.isinf(v) and not word.startswith(b"inf"):
            raise out_of_range(self.name, data.decode().strip())
        if self.single:
            try:
                v = self.struct.unpack(self.struct.pack(v))[0]
            except OverflowError:
                raise out_of_range(self.name, data.decode().strip()) from None
        return v

    def to_text(self, v: Any) -> bytes:
        if isinstance(v, str):
            return v.encode()
        v = float(v)
        if math.isnan(v):
            return b"NaN"
        if math.isinf(v):
            return b"Infinity" if v > 0 else b"-Infinity"
        return _shortest(v, self.single, self.digits).encode()

    def to_binary(self, v: Any) -> bytes:
        if isinstance(v, str | bytes):
            v = self.from_text(v.encode() if isinstance(v, str) else v)
        try:
            return self.struct.pack(float(v))
        except OverflowError:
            raise out_of_range(self.name, v) from None

    def from_binary(self, data: bytes) -> float:
        check_size(self.name, data, self.struct.size)
        return float(self.struct.unpack(data)[0])


_F32 = struct.Struct("!f")


def _shortest(v: float, single: bool, switch: int) -> str:
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    if single:
        # The fewest significant digits that read back as the same float4 (as PostgreSQL's ryu).
        for p in range(1, 10):
            s = f"{v:.{p - 1}e}"
            try:
                if _F32.unpack(_F32.pack(float(s)))[0] == v:
                    break
            except OverflowError:  # rounded up past the largest float4 (3.4028235e+38)
                continue
    else:
        s = repr(v)  # Python's repr is already the shortest round-tripping digit string
    sign, digits, exp = Decimal(s).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    e10 = len(digits) - 1 + int(exp)  # exponent of the first digit
    out = "-" if sign else ""
    if e10 < -4 or e10 >= switch:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{out}{mant}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    if e10 < 0:
        return f"{out}0.{'0' * (-e10 - 1)}{ds}"
    if len(ds) <= e10 + 1:
        return out + ds + "0" * (e10 + 1 - len(ds))
    return f"{out}{ds[: e10 + 1]}.{ds[e10 + 1 :]}"


# -------------------------------------------------------------------------------------- text, bytea
def text_from_text(data: bytes) -> str:
    return utf8(data)


def text_to_text(v: Any) -> bytes:
    if type(v) is str:
        return v.encode()
    if isinstance(v, bytes | bytearray):
        return bytes(v)
    return str(v).encode()


_HEX_RE = re.compile(rb"(?:\s*[0-9a-fA-F]{2})*\s*")


def bytea_from_text(data: bytes) -> bytes:
    if data.startswith(b"\\x"):
        body = data[2:]
        if _HEX_RE.fullmatch(body) is None:
            raise invalid_text("bytea", data)
        return bytes.fromhex(body.decode("ascii"))
    # Escape format: \\ is a backslash, \ooo an octal byte, anything else literal.
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c != 0x5C:
            out.append(c)
            i += 1
        elif data[i + 1 : i + 2] == b"\\":
            out.append(0x5C)
            i += 2
        elif re.fullmatch(rb"[0-3][0-7][0-7]", data[i + 1 : i + 4]):
            out.append(int(data[i + 1 : i + 4], 8))
            i += 4
        else:
            raise invalid_text("bytea", data)
    return bytes(out)


def bytea_to_text(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    return b"\\x" + bytes(v).hex().encode()


def bytea_to_binary(v: Any) -> bytes:
    return bytea_from_text(v.encode()) if isinstance(v, str) else bytes(v)


# ------------------------------------------------------------------------------------- uuid, json
def uuid_from_text(data: bytes) -> uuid.UUID:
    text = data.decode("ascii", "replace").strip()
    if not re.fullmatch(r"\{?[0-9a-fA-F]{4}(?:-?[0-9a-fA-F]{4}){7}\}?", text) or (
        text.startswith("{") != text.endswith("}")
    ):
        raise invalid_text("uuid", data)
    return uuid.UUID(text)


def uuid_to_text(v: Any) -> bytes:
    return v.encode() if isinstance(v, str) else str(v).encode()


def uuid_to_binary(v: Any) -> bytes:
    if isinstance(v, str):
        v = uuid_from_text(v.encode())
    return bytes(v.bytes) if isinstance(v, uuid.UUID) else bytes(v)


def uuid_from_binary(data: bytes) -> uuid.UUID:
    check_size("uuid", data, 16)
    return uuid.UUID(bytes=bytes(data))


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def json_from_text(data: bytes, type_name: str = "json") -> str:
    text = utf8(data)
    try:
        json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        raise invalid_text(type_name, data) from None
    return text


def jsonb_from_text(data: bytes) -> str:
    """jsonb input: the JSON text as PostgreSQL's jsonb writes it back (see _jsonb_text)."""
    text = utf8(data)
    try:
        value = json.loads(
            text, parse_float=Decimal, parse_int=Decimal, parse_constant=_reject_constant
        )
    except (ValueError, RecursionError):
        raise invalid_text("jsonb", data) from None
    out = _jsonb_text(value)
    if "\\u0000" in out.replace("\\\\", ""):  # jsonb text cannot hold NUL (json can)
        raise PgError(
            UNTRANSLATABLE_CHARACTER,
            "unsupported Unicode escape sequence",
            detail="\\u0000 cannot be converted to text.",
        )
    return out


def _jsonb_text(v: Any) -> str:
    # jsonb stores numbers as numeric (1e2 -> 100, 1.50 stays), keeps the last of duplicate keys,
    # orders keys by length then bytes, and writes ", " and ": " separators.
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
        return "{" + ", ".join(f"{_jsonb_text(k)}: {_jsonb_text(v[k])}" for k in keys) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_jsonb_text(x) for x in v) + "]"
    if isinstance(v, Decimal):
        return format(v if v else abs(v), "f")  # no negative zero
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    return json.dumps(v)


def jsonb_to_binary(v: Any) -> bytes:
    return b"\x01" + text_to_text(v)


def jsonb_from_binary(data: bytes) -> str:
    if data[:1] != b"\x01":
        raise bad_binary("jsonb", f"unsupported jsonb version number {data[:1].hex() or 'none'}")
    return jsonb_from_text(data[1:])
