"""PostgreSQL types: OIDs, names and sizes (for RowDescription and the catalog), and their codecs.

    encode_text(oid, value) -> bytes       decode_text(oid, data) -> value
    encode_binary(oid, value) -> bytes     decode_binary(oid, data) -> value
    encoder(oid, format) / decoder(oid, format) -> the function itself (cache it per column: the
                                           lookup then costs nothing on the hot path)

Python values: bool, int, float, decimal.Decimal (numeric), str (text types, json, jsonb as JSON
text), bytes (bytea), datetime.date, datetime.time, datetime.datetime (naive for timestamp, aware UTC
for timestamptz; 'infinity' is DATE_INFINITY, TIMESTAMP_INFINITY... see _datetimes.py), uuid.UUID,
list (arrays, nested for several dimensions; int2vector/oidvector as a flat list).

Unknown OIDs (including 0, "unspecified") are handled as text; their binary format is refused with
0A000. A str given to an encoder for a non-text type is taken as that type's text form (values come
from SQLite, which may hold text in any column). Decoders raise PgError with PostgreSQL's SQLSTATEs.
All functions are pure and thread-safe.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

from sqlserver.protocol import _arrays, _datetimes, _numeric
from sqlserver.protocol import _scalars as s
from sqlserver.protocol._datetimes import (
    DATE_INFINITY as DATE_INFINITY,
)
from sqlserver.protocol._datetimes import (
    DATE_NEG_INFINITY as DATE_NEG_INFINITY,
)
from sqlserver.protocol._datetimes import (
    TIMESTAMP_INFINITY as TIMESTAMP_INFINITY,
)
from sqlserver.protocol._datetimes import (
    TIMESTAMP_NEG_INFINITY as TIMESTAMP_NEG_INFINITY,
)
from sqlserver.protocol._datetimes import (
    TIMESTAMPTZ_INFINITY as TIMESTAMPTZ_INFINITY,
)
from sqlserver.protocol._datetimes import (
    TIMESTAMPTZ_NEG_INFINITY as TIMESTAMPTZ_NEG_INFINITY,
)
from sqlserver.protocol._datetimes import (
    InfiniteDate as InfiniteDate,
)
from sqlserver.protocol._datetimes import (
    InfiniteDatetime as InfiniteDatetime,
)
from sqlserver.protocol.errors import FEATURE_NOT_SUPPORTED, INVALID_PARAMETER_VALUE, PgError
from sqlserver.protocol.messages import FieldDescription

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]

# fmt: off
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT2VECTOR, INT4, REGPROC, TEXT = 16, 17, 18, 19, 20, 21, 22, 23, 24, 25
OID, TID, XID, CID, OIDVECTOR, JSON, XML, PG_NODE_TREE = 26, 27, 28, 29, 30, 114, 142, 194
FLOAT4, FLOAT8, UNKNOWN, MONEY, INET, CIDR, ACLITEM = 700, 701, 705, 790, 869, 650, 1033
BPCHAR, VARCHAR, DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1042, 1043, 1082, 1083, 1114, 1184, 1186, 1266
BIT, VARBIT, NUMERIC, REFCURSOR = 1560, 1562, 1700, 1790
REGPROCEDURE, REGOPER, REGOPERATOR, REGCLASS, REGTYPE = 2202, 2203, 2204, 2205, 2206
RECORD, CSTRING, ANY, ANYARRAY, VOID, TRIGGER, ANYELEMENT = 2249, 2275, 2276, 2277, 2278, 2279, 2283
UUID, PG_LSN, JSONB, JSONPATH, REGNAMESPACE, REGROLE, XID8 = 2950, 3220, 3802, 4072, 4089, 4096, 5069
BOOL_ARRAY, BYTEA_ARRAY, CHAR_ARRAY, NAME_ARRAY, INT2_ARRAY, INT2VECTOR_ARRAY = 1000, 1001, 1002, 1003, 1005, 1006
INT4_ARRAY, REGPROC_ARRAY, TEXT_ARRAY, OID_ARRAY, BPCHAR_ARRAY, VARCHAR_ARRAY = 1007, 1008, 1009, 1028, 1014, 1015
INT8_ARRAY, FLOAT4_ARRAY, FLOAT8_ARRAY, ACLITEM_ARRAY, JSON_ARRAY = 1016, 1021, 1022, 1034, 199
DATE_ARRAY, TIME_ARRAY, TIMESTAMP_ARRAY, TIMESTAMPTZ_ARRAY, NUMERIC_ARRAY = 1182, 1183, 1115, 1185, 1231
CSTRING_ARRAY, REGTYPE_ARRAY, REGCLASS_ARRAY, UUID_ARRAY, JSONB_ARRAY = 1263, 2211, 2210, 2951, 3807
# fmt: on


class TypeInfo(NamedTuple):
    """One pg_type row's essentials: typlen (-1 varlena, -2 C string), typcategory, typelem, typarray."""

    oid: int
    name: str
    size: int
    category: str
    elem: int = 0
    array: int = 0


# (oid, name, typlen, typcategory, array oid)
_BASE = [
    (BOOL, "bool", 1, "B", BOOL_ARRAY), (BYTEA, "bytea", -1, "U", BYTEA_ARRAY),
    (CHAR, "char", 1, "Z", CHAR_ARRAY), (NAME, "name", 64, "S", NAME_ARRAY),
    (INT8, "int8", 8, "N", INT8_ARRAY), (INT2, "int2", 2, "N", INT2_ARRAY),
    (INT2VECTOR, "int2vector", -1, "A", INT2VECTOR_ARRAY), (INT4, "int4", 4, "N", INT4_ARRAY),
    (REGPROC, "regproc", 4, "N", REGPROC_ARRAY), (TEXT, "text", -1, "S", TEXT_ARRAY),
    (OID, "oid", 4, "N", OID_ARRAY), (TID, "tid", 6, "U", 1010), (XID, "xid", 4, "U", 1011),
    (CID, "cid", 4, "U", 1012), (OIDVECTOR, "oidvector", -1, "A", 1013),
    (JSON, "json", -1, "U", JSON_ARRAY), (XML, "xml", -1, "U", 143),
    (PG_NODE_TREE, "pg_node_tree", -1, "Z", 0), (FLOAT4, "float4", 4, "N", FLOAT4_ARRAY),
    (FLOAT8, "float8", 8, "N", FLOAT8_ARRAY), (UNKNOWN, "unknown", -2, "X", 0),
    (MONEY, "money", 8, "N", 791), (INET, "inet", -1, "I", 1041), (CIDR, "cidr", -1, "I", 651),
    (ACLITEM, "aclitem", 12, "U", ACLITEM_ARRAY), (BPCHAR, "bpchar", -1, "S", BPCHAR_ARRAY),
    (VARCHAR, "varchar", -1, "S", VARCHAR_ARRAY), (DATE, "date", 4, "D", DATE_ARRAY),
    (TIME, "time", 8, "D", TIME_ARRAY), (TIMESTAMP, "timestamp", 8, "D", TIMESTAMP_ARRAY),
    (TIMESTAMPTZ, "timestamptz", 8, "D", TIMESTAMPTZ_ARRAY), (INTERVAL, "interval", 16, "T", 1187),
    (TIMETZ, "timetz", 12, "D", 1270), (BIT, "bit", -1, "V", 1561), (VARBIT, "varbit", -1, "V", 1563),
    (NUMERIC, "numeric", -1, "N", NUMERIC_ARRAY), (REFCURSOR, "refcursor", -1, "U", 2201),
    (REGPROCEDURE, "regprocedure", 4, "N", 2207), (REGOPER, "regoper", 4, "N", 2208),
    (REGOPERATOR, "regoperator", 4, "N", 2209), (REGCLASS, "regclass", 4, "N", REGCLASS_ARRAY),
    (REGTYPE, "regtype", 4, "N", REGTYPE_ARRAY), (RECORD, "record", -1, "P", 2287),
    (CSTRING, "cstring", -2, "P", CSTRING_ARRAY), (ANY, "any", 4, "P", 0),
    (ANYARRAY, "anyarray", -1, "P", 0), (VOID, "void", 4, "P", 0), (TRIGGER, "trigger", 4, "P", 0),
    (ANYELEMENT, "anyelement", 4, "P", 0), (UUID, "uuid", 16, "U", UUID_ARRAY),
    (PG_LSN, "pg_lsn", 8, "U", 3221), (JSONB, "jsonb", -1, "U", JSONB_ARRAY),
    (JSONPATH, "jsonpath", -1, "U", 4073), (REGNAMESPACE, "regnamespace", 4, "N", 4090),
    (REGROLE, "regrole", 4, "N", 4097), (XID8, "xid8", 8, "U", 271),
]  # fmt: skip

TYPES: dict[int, TypeInfo] = {}
# typelem of the non-array types that still have one (fixed-length "arrays" in pg_type).
_ELEM = {INT2VECTOR: INT2, OIDVECTOR: OID, NAME: CHAR}
for _oid, _name, _size, _cat, _arr in _BASE:
    TYPES[_oid] = TypeInfo(_oid, _name, _size, _cat, _ELEM.get(_oid, 0), _arr)
    if _arr:
        # pg_type: every array type is category A except _record (P, a pseudo-type).
        _arr_cat = "P" if _oid == RECORD else "A"
        TYPES[_arr] = TypeInfo(_arr, "_" + _name, -1, _arr_cat, _oid, 0)

# SQL spellings of type names (as in CAST(x AS ...), column definitions and ::casts).
_ALIASES = {
    "integer": "int4", "int": "int4", "smallint": "int2", "bigint": "int8", "real": "float4",
    "double precision": "float8", "float": "float8", "boolean": "bool", "decimal": "numeric",
    "character varying": "varchar", "character": "bpchar", "char": "bpchar", '"char"': "char",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "time without time zone": "time", "time with time zone": "timetz", "serial": "int4",
    "bigserial": "int8", "smallserial": "int2", "serial4": "int4", "serial8": "int8",
    "bit varying": "varbit", "int4": "int4",
}  # fmt: skip
BY_NAME: dict[str, TypeInfo] = {t.name: t for t in TYPES.values()}


def type_by_name(name: str) -> TypeInfo | None:
    """The type a SQL type name denotes ("integer", "varchar(10)", "text[]", "pg_catalog.int8")."""
    text = " ".join(name.lower().split())
    text = text.removeprefix("pg_catalog.")
    array = text.endswith("[]")
    text = text.removesuffix("[]").strip()
    if "(" in text:  # drop a type modifier: varchar(10), numeric(10,2), timestamp(3) with time zone
        head, _, rest = text.partition("(")
        text = (head.strip() + " " + rest.partition(")")[2].strip()).strip()
    info = BY_NAME.get(_ALIASES.get(text, text))
    if info is not None and array:
        return TYPES.get(info.array)
    return info


def type_size(oid: int) -> int:
    info = TYPES.get(oid)
    return info.size if info is not None else -1


def field_description(
    name: str,
    oid: int,
    format: int = 0,
    table_oid: int = 0,
    column_attr: int = 0,
    type_modifier: int = -1,
) -> FieldDescription:
    """A RowDescription field with the type's size filled in."""
    return FieldDescription(
        name, table_oid, column_attr, oid, type_size(oid), type_modifier, format
    )


def infer_oid(value: Any) -> int:
    """The type a bare Python value is reported as when no column type is known."""
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT8
    if isinstance(value, float):
        return FLOAT8
    if isinstance(value, Decimal):
        return NUMERIC
    if isinstance(value, bytes | bytearray):
        return BYTEA
    if isinstance(value, dt.datetime):
        return TIMESTAMPTZ if value.tzinfo is not None else TIMESTAMP
    if isinstance(value, dt.date):
        return DATE
    if isinstance(value, dt.time):
        return TIME
    if isinstance(value, uuid.UUID):
        return UUID
    return TEXT


# ------------------------------------------------------------------------------------ codecs table
class Codec(NamedTuple):
    to_text: Encoder
    from_text: Decoder
    to_binary: Encoder
    from_binary: Decoder


def _unsupported_binary(oid: int) -> Codec:
    def refuse(_: Any) -> Any:
        name = TYPES[oid].name if oid in TYPES else f"oid {oid}"
        raise PgError(
            FEATURE_NOT_SUPPORTED,
            f"binary format for type {name} is not supported",
            hint="request this column or parameter in text format",
        )

    return Codec(s.text_to_text, s.text_from_text, refuse, refuse)


_TEXT = Codec(s.text_to_text, s.text_from_text, s.text_to_text, s.text_from_text)


def _from_int_codec(c: s.IntCodec) -> Codec:
    return Codec(c.to_text, c.from_text, c.to_binary, c.from_binary)


def _vector(elem: s.IntCodec, elem_oid: int) -> Codec:
    def to_text(v: Any) -> bytes:
        return v.encode() if isinstance(v, str) else " ".join(str(int(x)) for x in v).encode()

    def from_text(data: bytes) -> list[int]:
        return [elem.from_text(x) for x in data.split()]

    return Codec(
        to_text,
        from_text,
        lambda v: _arrays.to_binary(v, elem_oid, elem.to_binary, from_text, vector=True),
        lambda d: _arrays.from_binary(
            d, elem_oid, elem.from_binary, TYPES[elem_oid].name + "vector"
        ),
    )


_INT2, _INT4, _INT8 = (
    s.IntCodec("smallint", "h"),
    s.IntCodec("integer", "i"),
    s.IntCodec("bigint", "q"),
)
_OID = s.IntCodec("oid", "I")
_F4, _F8 = s.FloatCodec("real", "f", 6), s.FloatCodec("double precision", "d", 15)
_TS, _TSTZ = _datetimes.TimestampCodec(False), _datetimes.TimestampCodec(True)

CODECS: dict[int, Codec] = {
    BOOL: Codec(s.bool_to_text, s.bool_from_text, s.bool_to_binary, s.bool_from_binary),
    BYTEA: Codec(s.bytea_to_text, s.bytea_from_text, s.bytea_to_binary, bytes),
    INT2: _from_int_codec(_INT2),
    INT4: _from_int_codec(_INT4),
    INT8: _from_int_codec(_INT8),
    OID: _from_int_codec(_OID),
    FLOAT4: Codec(_F4.to_text, _F4.from_text, _F4.to_binary, _F4.from_binary),
    FLOAT8: Codec(_F8.to_text, _F8.from_text, _F8.to_binary, _F8.from_binary),
    NUMERIC: Codec(_numeric.to_text, _numeric.from_text, _numeric.to_binary, _numeric.from_binary),
    DATE: Codec(_datetimes.date_to_text, _datetimes.date_from_text, _datetimes.date_to_binary,
                _datetimes.date_from_binary),
    TIME: Codec(_datetimes.time_to_text, _datetimes.time_from_text, _datetimes.time_to_binary,
                _datetimes.time_from_binary),
    TIMESTAMP: Codec(_TS.to_text, _TS.from_text, _TS.to_binary, _TS.from_binary),
    TIMESTAMPTZ: Codec(_TSTZ.to_text, _TSTZ.from_text, _TSTZ.to_binary, _TSTZ.from_binary),
    UUID: Codec(s.uuid_to_text, s.uuid_from_text, s.uuid_to_binary, s.uuid_from_binary),
    JSON: Codec(s.text_to_text, s.json_from_text, s.text_to_text, s.json_from_text),
    JSONB: Codec(s.text_to_text, s.jsonb_from_text, s.jsonb_to_binary, s.jsonb_from_binary),
    INT2VECTOR: _vector(_INT2, INT2),
    OIDVECTOR: _vector(_OID, OID),
}  # fmt: skip
for _oid in (TEXT, VARCHAR, BPCHAR, NAME, CHAR, UNKNOWN, XML, PG_NODE_TREE, REFCURSOR, CSTRING):
    CODECS[_oid] = _TEXT
# reg* types are oids on the wire in binary; their text form is a name this layer cannot resolve.
for _oid in (
    REGPROC,
    REGPROCEDURE,
    REGOPER,
    REGOPERATOR,
    REGCLASS,
    REGTYPE,
    REGNAMESPACE,
    REGROLE,
    XID,
    CID,
):
    CODECS[_oid] = Codec(s.text_to_text, s.text_from_text, _OID.to_binary, _OID.from_binary)


def _array_codec(array_oid: int, elem_oid: int, elem: Codec) -> Codec:
    name = TYPES[elem_oid].name + "[]"

    def from_text(data: bytes) -> list[Any]:
        return _arrays.from_text(data, elem.from_text, name)

    return Codec(
        lambda v: _arrays.to_text(v, elem.to_text),
        from_text,
        lambda v: _arrays.to_binary(v, elem_oid, elem.to_binary, from_text),
        lambda d: _arrays.from_binary(d, elem_oid, elem.from_binary, name),
    )


for _info in list(TYPES.values()):
    if _info.category == "A" and _info.elem in CODECS and _info.oid not in CODECS:
        CODECS[_info.oid] = _array_codec(_info.oid, _info.elem, CODECS[_info.elem])


def codec(oid: int) -> Codec:
    found = CODECS.get(oid)
    return found if found is not None else _unsupported_binary(oid)


def encoder(oid: int, format: int = 0) -> Encoder:
    """The function turning a Python value into the wire form of type oid in this format."""
    c = codec(oid)
    return c.to_binary if _check_format(format) else c.to_text


def decoder(oid: int, format: int = 0) -> Decoder:
    """The function turning the wire form of type oid in this format into a Python value."""
    c = codec(oid)
    return c.from_binary if _check_format(format) else c.from_text


def _check_format(format: int) -> bool:
    if format not in (0, 1):
        raise PgError(INVALID_PARAMETER_VALUE, f"unsupported format code: {format}")
    return format == 1


def encode_text(oid: int, value: Any) -> bytes:
    return codec(oid).to_text(value)


def decode_text(oid: int, data: bytes) -> Any:
    return codec(oid).from_text(data)


def encode_binary(oid: int, value: Any) -> bytes:
    return codec(oid).to_binary(value)


def decode_binary(oid: int, data: bytes) -> Any:
    return codec(oid).from_binary(data)
