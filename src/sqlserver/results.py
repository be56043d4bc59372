"""SQLite values <-> PostgreSQL types: OIDs of declared types, value encoders, parameter decoders.

SQLite stores five kinds of values (NULL, int, float, str, bytes); the PostgreSQL type of a column
comes from its declared type (kept as PostgreSQL's name by rewrite.py) or from type inference
(infer.py). An encoder turns one stored value into the wire form of that type, text or binary; a
decoder turns one Bind parameter into the value SQLite should store. Unknown values are sent as
text; a value that does not fit its column's type (SQLite does not enforce types) is sent in the
form it has.

Concurrency: pure functions and constant tables; any thread.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
import uuid
from collections.abc import Callable
from typing import Any

from sqlserver.protocol.errors import (
    INVALID_BINARY_REPRESENTATION,
    INVALID_TEXT_REPRESENTATION,
    PgError,
)

BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, REGPROC, TEXT, OID = (
    16,
    17,
    18,
    19,
    20,
    21,
    23,
    24,
    25,
    26,
)
JSON, XML, FLOAT4, FLOAT8, UNKNOWN = 114, 142, 700, 701, 705
BPCHAR, VARCHAR, DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = (
    1042,
    1043,
    1082,
    1083,
    1114,
    1184,
    1186,
    1266,
)
NUMERIC, UUID, JSONB, REGCLASS, REGTYPE = 1700, 2950, 3802, 2205, 2206
INT2VECTOR, OIDVECTOR, PG_NODE_TREE = 22, 30, 194
TEXT_ARRAY, INT4_ARRAY, NAME_ARRAY, OID_ARRAY, CHAR_ARRAY, INT2_ARRAY = (
    1009,
    1007,
    1003,
    1028,
    1002,
    1005,
)

# PostgreSQL name and typlen of each type this server reports (pg_type and RowDescription).
TYPES: dict[int, tuple[str, int]] = {
    BOOL: ("bool", 1),
    BYTEA: ("bytea", -1),
    CHAR: ("char", 1),
    NAME: ("name", 64),
    INT8: ("int8", 8),
    INT2: ("int2", 2),
    INT4: ("int4", 4),
    REGPROC: ("regproc", 4),
    TEXT: ("text", -1),
    OID: ("oid", 4),
    JSON: ("json", -1),
    FLOAT4: ("float4", 4),
    FLOAT8: ("float8", 8),
    UNKNOWN: ("unknown", -2),
    BPCHAR: ("bpchar", -1),
    VARCHAR: ("varchar", -1),
    DATE: ("date", 4),
    TIME: ("time", 8),
    TIMESTAMP: ("timestamp", 8),
    TIMESTAMPTZ: ("timestamptz", 8),
    INTERVAL: ("interval", 16),
    TIMETZ: ("timetz", 12),
    NUMERIC: ("numeric", -1),
    UUID: ("uuid", 16),
    JSONB: ("jsonb", -1),
    REGCLASS: ("regclass", 4),
    REGTYPE: ("regtype", 4),
    INT2VECTOR: ("int2vector", -1),
    OIDVECTOR: ("oidvector", -1),
    PG_NODE_TREE: ("pg_node_tree", -1),
    TEXT_ARRAY: ("_text", -1),
    INT4_ARRAY: ("_int4", -1),
    NAME_ARRAY: ("_name", -1),
    OID_ARRAY: ("_oid", -1),
    CHAR_ARRAY: ("_char", -1),
    INT2_ARRAY: ("_int2", -1),
    XML: ("xml", -1),
}
# SQL-standard names format_type() shows (psql's \d).
DISPLAY_NAMES = {
    BOOL: "boolean",
    INT8: "bigint",
    INT2: "smallint",
    INT4: "integer",
    FLOAT4: "real",
    FLOAT8: "double precision",
    BPCHAR: "character",
    VARCHAR: "character varying",
    TIMESTAMP: "timestamp without time zone",
    TIMESTAMPTZ: "timestamp with time zone",
    TIME: "time without time zone",
    TIMETZ: "time with time zone",
}

_DECLARED: dict[str, int] = {
    "int4": INT4,
    "int": INT4,
    "integer": INT4,
    "int8": INT8,
    "bigint": INT8,
    "int2": INT2,
    "smallint": INT2,
    "float8": FLOAT8,
    "double precision": FLOAT8,
    "double": FLOAT8,
    "float": FLOAT8,
    "float4": FLOAT4,
    "real": FLOAT4,
    "numeric": NUMERIC,
    "decimal": NUMERIC,
    "text": TEXT,
    "varchar": VARCHAR,
    "character varying": VARCHAR,
    "bpchar": BPCHAR,
    "char": BPCHAR,
    "character": BPCHAR,
    "bool": BOOL,
    "boolean": BOOL,
    "timestamp": TIMESTAMP,
    "datetime": TIMESTAMP,
    "timestamptz": TIMESTAMPTZ,
    "date": DATE,
    "time": TIME,
    "timetz": TIMETZ,
    "bytea": BYTEA,
    "blob": BYTEA,
    "json": JSON,
    "jsonb": JSONB,
    "uuid": UUID,
    "interval": INTERVAL,
    "oid": OID,
    "name": NAME,
    "int2vector": INT2VECTOR,
    "_int2": INT2_ARRAY,
    "_text": TEXT_ARRAY,
    "regclass": REGCLASS,
    "regtype": REGTYPE,
    "regproc": REGPROC,
    "xml": XML,
}


def declared_oid(decltype: str | None) -> int:
    """The OID of a column's declared type as PRAGMA table_info reports it (0 if unknown).

    "INTEGER" (as SQLite spells it in PRAGMA table_info) is the rowid alias rewrite.py makes of a
    bigint primary key: int8.
    """
    if not decltype:
        return 0
    if decltype == "INTEGER":
        return INT8
    base = decltype.split("(", 1)[0].strip().lower()
    return _DECLARED.get(base, 0)


def oid_of_value(v: Any) -> int:
    """The type of a value whose column type nobody declared (expressions SQLite computed)."""
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return INT8
    if isinstance(v, float):
        return FLOAT8
    if isinstance(v, bytes):
        return BYTEA
    return TEXT


def type_size(oid: int) -> int:
    t = TYPES.get(oid)
    return t[1] if t else -1


# --------------------------------------------------------------------------------------------
# Encoders: stored value -> wire bytes (never given None: the caller sends NULL itself)
# --------------------------------------------------------------------------------------------

Encoder = Callable[[Any], bytes]


def _text_any(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, bytes):
        return b"\\x" + v.hex().encode()
    if isinstance(v, float):
        return _text_float(v)
    return str(v).encode()


def _text_int(v: Any) -> bytes:
    return str(v).encode() if type(v) is int else _text_any(v)


def _text_float(v: Any) -> bytes:
    if isinstance(v, float):
        if math.isinf(v):
            return b"Infinity" if v > 0 else b"-Infinity"
        if math.isnan(v):
            return b"NaN"
        return repr(v).encode()
    return str(v).encode()


# numeric is stored as SQLite's REAL (a double) or INTEGER. A double holds any decimal of up to 15
# significant digits (DBL_DIG) closely enough that printing it with 15 significant digits gives that
# decimal back: 0.1 + 0.2 stored as a double reads back as 0.3, as PostgreSQL's numeric says, not as
# 0.30000000000000004. A declared scale (numeric(p,s)) is then applied as PostgreSQL does: 1.5 in a
# numeric(10,2) column reads back as 1.50.
_WIDE = decimal.Context(prec=1000)  # quantize never runs out of digits


def decimal_of(v: Any) -> decimal.Decimal:
    """A stored numeric value as the decimal it stands for (see above)."""
    if isinstance(v, float):
        if math.isnan(v):
            return decimal.Decimal("NaN")
        if math.isinf(v):
            return decimal.Decimal("Infinity" if v > 0 else "-Infinity")
        return decimal.Decimal(format(v, ".15g"))
    if isinstance(v, decimal.Decimal):
        return v
    return decimal.Decimal(str(v).strip())


def _scaled(v: Any, scale: int | None) -> decimal.Decimal:
    d = decimal_of(v)
    if scale is None or not d.is_finite():
        return d
    return d.quantize(decimal.Decimal(1).scaleb(-scale), context=_WIDE)


def _text_numeric(v: Any, scale: int | None = None) -> bytes:
    try:
        d = _scaled(v, scale)
    except (decimal.InvalidOperation, ValueError):
        return str(v).encode()  # not a number (SQLite stores what it is given): sent as it is
    if d.is_nan():
        return b"NaN"
    return format(d, "f").encode()


def numeric_scale(typmod: int) -> int | None:
    """The scale of a numeric(p,s) type modifier (PostgreSQL's: ((p << 16) | s) + 4), or None."""
    return (typmod - 4) & 0xFFFF if typmod >= 4 else None


def numeric_typmod(decltype: str | None) -> int:
    """PostgreSQL's type modifier of a declared "numeric(p,s)" / "numeric(p)" / "decimal(...)", else -1."""
    if not decltype or "(" not in decltype:
        return -1
    base, _, rest = decltype.partition("(")
    if base.strip().lower() not in ("numeric", "decimal"):
        return -1
    try:
        parts = [int(x) for x in rest.rstrip(") ").split(",")]
    except ValueError:
        return -1
    precision, scale = [*parts, 0][:2]
    return ((precision << 16) | scale) + 4


def _text_bool(v: Any) -> bytes:
    return b"t" if v in (1, "1", "t", "true", "TRUE", "True", "on", "yes") else b"f"


def _text_bytea(v: Any) -> bytes:
    if isinstance(v, str):
        if v.startswith("\\x"):
            return v.encode()  # a bytea literal stored as its text form (SQL text, not a parameter)
        v = v.encode()
    return b"\\x" + bytes(v).hex().encode()


def _text_timestamptz(v: Any) -> bytes:
    s = str(v)
    if len(s) >= 19 and s[-3] not in "+-" and not s.endswith("Z") and "+" not in s[19:]:
        s += "+00"
    return s.replace("T", " ", 1).encode()


def _text_timestamp(v: Any) -> bytes:
    return str(v).replace("T", " ", 1).encode()


TEXT_ENCODERS: dict[int, Encoder] = {
    INT2: _text_int,
    INT4: _text_int,
    INT8: _text_int,
    OID: _text_int,
    BOOL: _text_bool,
    FLOAT4: _text_float,
    FLOAT8: _text_float,
    NUMERIC: _text_numeric,
    BYTEA: _text_bytea,
    TIMESTAMPTZ: _text_timestamptz,
    TIMESTAMP: _text_timestamp,
}

_I16, _I32, _I64, _U32 = (
    struct.Struct("!h"),
    struct.Struct("!i"),
    struct.Struct("!q"),
    struct.Struct("!I"),
)
_F32, _F64 = struct.Struct("!f"), struct.Struct("!d")
_EPOCH_DATE = dt.date(2000, 1, 1)
_EPOCH = dt.datetime(2000, 1, 1)


def _bin_int(s: struct.Struct) -> Encoder:
    pack = s.pack

    def enc(v: Any) -> bytes:
        return pack(int(v))

    return enc


def _bin_float(s: struct.Struct) -> Encoder:
    pack = s.pack

    def enc(v: Any) -> bytes:
        return pack(float(v))

    return enc


def _bin_text(v: Any) -> bytes:
    return v.encode() if isinstance(v, str) else _text_any(v)


def _bin_bytea(v: Any) -> bytes:
    if isinstance(v, str):
        return bytes.fromhex(v[2:]) if v.startswith("\\x") else v.encode()
    return bytes(v)


def _bin_bool(v: Any) -> bytes:
    return b"\x01" if _text_bool(v) == b"t" else b"\x00"


def _bin_jsonb(v: Any) -> bytes:
    return b"\x01" + _bin_text(v)


def _bin_uuid(v: Any) -> bytes:
    return v if isinstance(v, bytes) and len(v) == 16 else uuid.UUID(str(v)).bytes


def parse_timestamp(v: Any) -> dt.datetime:
    s = str(v).strip().replace("T", " ")
    if s.endswith("+00") or s.endswith("+00:00") or s.endswith("Z"):
        s = s.split("+")[0].rstrip("Z")
    return dt.datetime.fromisoformat(s)


def _bin_timestamp(v: Any) -> bytes:
    delta = parse_timestamp(v).replace(tzinfo=None) - _EPOCH
    return _I64.pack((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


def _bin_date(v: Any) -> bytes:
    return _I32.pack((dt.date.fromisoformat(str(v)[:10]) - _EPOCH_DATE).days)


def _bin_numeric(v: Any, scale: int | None = None) -> bytes:
    d = _scaled(v, scale)
    if d.is_nan():
        return struct.pack("!hhhh", 0, 0, 0xC000, 0)
    sign, digits, exp_ = d.as_tuple()
    assert isinstance(exp_, int)
    dscale = max(0, -exp_)
    text = "".join(map(str, digits))
    # pad the integer and fraction parts to whole base-10000 groups
    int_len = len(text) + exp_ if exp_ < 0 else len(text)
    int_part = text[:int_len] if exp_ < 0 else text + "0" * exp_
    frac_part = text[int_len:] if exp_ < 0 else ""
    if int_len < 0:
        frac_part, int_part = "0" * -int_len + text, ""
    int_part = int_part.lstrip("0")
    int_part = "0" * (-len(int_part) % 4) + int_part
    frac_part = frac_part + "0" * (-len(frac_part) % 4)
    groups = [int(int_part[i : i + 4]) for i in range(0, len(int_part), 4)]
    weight = len(groups) - 1
    groups += [int(frac_part[i : i + 4]) for i in range(0, len(frac_part), 4)]
    while groups and groups[-1] == 0:
        groups.pop()
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    if not groups:
        weight = 0
    return struct.pack(
        f"!hhhh{len(groups)}h", len(groups), weight, 0x4000 if sign else 0, dscale, *groups
    )


BINARY_ENCODERS: dict[int, Encoder] = {
    INT2: _bin_int(_I16),
    INT4: _bin_int(_I32),
    INT8: _bin_int(_I64),
    OID: _bin_int(_U32),
    REGCLASS: _bin_int(_U32),
    REGTYPE: _bin_int(_U32),
    REGPROC: _bin_int(_U32),
    FLOAT4: _bin_float(_F32),
    FLOAT8: _bin_float(_F64),
    BOOL: _bin_bool,
    BYTEA: _bin_bytea,
    TEXT: _bin_text,
    VARCHAR: _bin_text,
    BPCHAR: _bin_text,
    NAME: _bin_text,
    JSON: _bin_text,
    CHAR: _bin_text,
    UNKNOWN: _bin_text,
    JSONB: _bin_jsonb,
    UUID: _bin_uuid,
    TIMESTAMP: _bin_timestamp,
    TIMESTAMPTZ: _bin_timestamp,
    DATE: _bin_date,
    NUMERIC: _bin_numeric,
}


def encoder(oid: int, binary: bool, typmod: int = -1) -> Encoder:
    """The encoder of one result column (binary falls back to text for types without one); typmod:
    the column's type modifier (numeric(p,s): values are sent with scale s)."""
    if oid == NUMERIC and typmod >= 4:
        scale = numeric_scale(typmod)
        enc = _bin_numeric if binary else _text_numeric
        return lambda v: enc(v, scale)
    if binary:
        return BINARY_ENCODERS.get(oid, _bin_text)
    return TEXT_ENCODERS.get(oid, _text_any)


# --------------------------------------------------------------------------------------------
# Parameter decoders: Bind's bytes -> the value SQLite stores
# --------------------------------------------------------------------------------------------

Decoder = Callable[[bytes], Any]


def _dec_text(b: bytes) -> Any:
    return b.decode()


def _dec_int(b: bytes) -> Any:
    return int(b)


def _dec_float(b: bytes) -> Any:
    return float(b)


def _dec_numeric(b: bytes) -> Any:
    s = b.decode().strip()
    try:
        return int(s)
    except ValueError:
        return float(s)


def _dec_bool(b: bytes) -> Any:
    s = b.strip().lower()
    if s in (b"t", b"true", b"1", b"on", b"y", b"yes"):
        return 1
    if s in (b"f", b"false", b"0", b"off", b"n", b"no"):
        return 0
    raise ValueError(s)


def _dec_bytea(b: bytes) -> Any:
    if b.startswith(b"\\x"):
        return bytes.fromhex(b[2:].decode())
    return b.decode("unicode_escape").encode("latin-1") if b"\\" in b else bytes(b)


def _bin_dec_numeric(b: bytes) -> Any:
    n, weight, sign, dscale = struct.unpack_from("!hhHh", b)
    if sign == 0xC000:
        return float("nan")
    groups = struct.unpack_from(f"!{n}h", b, 8)
    value = decimal.Decimal(0)
    for i, g in enumerate(groups):
        value += decimal.Decimal(g).scaleb(4 * (weight - i))
    if sign == 0x4000:
        value = -value
    return int(value) if dscale == 0 else float(value)


def _bin_dec_timestamp(b: bytes) -> Any:
    return str(_EPOCH + dt.timedelta(microseconds=_I64.unpack(b)[0]))


TEXT_DECODERS: dict[int, Decoder] = {
    INT2: _dec_int,
    INT4: _dec_int,
    INT8: _dec_int,
    OID: _dec_int,
    FLOAT4: _dec_float,
    FLOAT8: _dec_float,
    NUMERIC: _dec_numeric,
    BOOL: _dec_bool,
    BYTEA: _dec_bytea,
}
BINARY_DECODERS: dict[int, Decoder] = {
    INT2: lambda b: _I16.unpack(b)[0],
    INT4: lambda b: _I32.unpack(b)[0],
    INT8: lambda b: _I64.unpack(b)[0],
    OID: lambda b: _U32.unpack(b)[0],
    FLOAT4: lambda b: _F32.unpack(b)[0],
    FLOAT8: lambda b: _F64.unpack(b)[0],
    BOOL: lambda b: 1 if b == b"\x01" else 0,
    BYTEA: bytes,
    JSONB: lambda b: b[1:].decode(),
    UUID: lambda b: str(uuid.UUID(bytes=b)),
    NUMERIC: _bin_dec_numeric,
    DATE: lambda b: str(_EPOCH_DATE + dt.timedelta(days=_I32.unpack(b)[0])),
    TIMESTAMP: _bin_dec_timestamp,
    TIMESTAMPTZ: _bin_dec_timestamp,
}


def decoder(oid: int, binary: bool) -> Decoder:
    if binary:
        return BINARY_DECODERS.get(oid, _dec_text)
    return TEXT_DECODERS.get(oid, _dec_text)


def decode_params(
    params: tuple[bytes | None, ...], oids: tuple[int, ...], formats: tuple[int, ...]
) -> list[Any]:
    """Bind's parameters as SQLite values; raises PgError 22P02/22P03 for a malformed one."""
    n = len(params)
    if len(formats) == 1:
        formats = formats * n
    out: list[Any] = []
    for i, raw in enumerate(params):
        if raw is None:
            out.append(None)
            continue
        binary = bool(formats[i]) if formats else False
        oid = oids[i] if i < len(oids) else 0
        try:
            out.append(decoder(oid, binary)(raw))
        except Exception:
            name = TYPES.get(oid, ("text", 0))[0]
            raise PgError(
                INVALID_BINARY_REPRESENTATION if binary else INVALID_TEXT_REPRESENTATION,
                f"invalid input for parameter ${i + 1} of type {name}: {bytes(raw[:40])!r}",
            ) from None
    return out
