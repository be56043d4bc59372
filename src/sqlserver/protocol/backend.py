"""Server side of the codec: BackendMessage in, bytes out; plus the hot-path encoders.

    encode(msg) -> bytes                       any backend message (the general, dataclass path)
    data_row(values) -> bytes                  DataRow from already-converted column values
    command_complete(tag) -> bytes             CommandComplete, cached for repeated tags
    row_description(fields) -> bytes           RowDescription (cache it per prepared statement)
    READY_IDLE / READY_IN_TX / READY_FAILED, ready_for_query(status), BIND_COMPLETE, PARSE_COMPLETE,
    CLOSE_COMPLETE, NO_DATA, PORTAL_SUSPENDED, EMPTY_QUERY_RESPONSE, AUTH_OK, COPY_DONE: constants.

The fast encoders produce exactly the bytes encode() produces for the same message (the tests check
it); they exist because a pgbench -S round trip sends BindComplete, a DataRow, CommandComplete and
ReadyForQuery, and building dataclasses for each costs more than the rest of the encoding.

The client side (BackendParser, encode_frontend) lives in _client.py and is re-exported here.
All functions are pure and thread-safe.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from sqlserver.protocol._client import BackendParser, encode_frontend
from sqlserver.protocol._wire import cstr, frame, pack_int16, pack_int32
from sqlserver.protocol.messages import (
    PROTOCOL_3_0,
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    BackendMessage,
    BindComplete,
    CloseComplete,
    CommandComplete,
    CopyData,
    CopyDone,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    FieldDescription,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    ParseComplete,
    PortalSuspended,
    ReadyForQuery,
    RowDescription,
)

__all__ = [
    "AUTH_OK",
    "BIND_COMPLETE",
    "CLOSE_COMPLETE",
    "COPY_DONE",
    "EMPTY_QUERY_RESPONSE",
    "NO_DATA",
    "PARSE_COMPLETE",
    "PORTAL_SUSPENDED",
    "READY_FAILED",
    "READY_IDLE",
    "READY_IN_TX",
    "BackendParser",
    "command_complete",
    "data_row",
    "encode",
    "encode_frontend",
    "ready_for_query",
    "row_description",
]

READY_IDLE = b"Z\x00\x00\x00\x05I"
READY_IN_TX = b"Z\x00\x00\x00\x05T"
READY_FAILED = b"Z\x00\x00\x00\x05E"
PARSE_COMPLETE = b"1\x00\x00\x00\x04"
BIND_COMPLETE = b"2\x00\x00\x00\x04"
CLOSE_COMPLETE = b"3\x00\x00\x00\x04"
NO_DATA = b"n\x00\x00\x00\x04"
PORTAL_SUSPENDED = b"s\x00\x00\x00\x04"
EMPTY_QUERY_RESPONSE = b"I\x00\x00\x00\x04"
COPY_DONE = b"c\x00\x00\x00\x04"
AUTH_OK = b"R\x00\x00\x00\x08\x00\x00\x00\x00"
SSL_REFUSED = b"N"

_READY = {"I": READY_IDLE, "T": READY_IN_TX, "E": READY_FAILED}
_NULL = b"\xff\xff\xff\xff"
# RowDescription field: table oid, column number, type oid, type size, type modifier, format.
_FIELD = struct.Struct("!IhIhih")
_DATA_ROW_HEAD = struct.Struct("!cih").pack


def ready_for_query(status: str) -> bytes:
    """ReadyForQuery for status "I", "T" or "E"."""
    return _READY[status]


def data_row(values: Sequence[bytes | None]) -> bytes:
    """A DataRow from column values already in their wire format (None = NULL)."""
    parts: list[bytes] = [b""]
    append = parts.append
    size = 6  # length field + column count
    for v in values:
        if v is None:
            append(_NULL)
            size += 4
        else:
            n = len(v)
            append(pack_int32(n))
            append(v)
            size += 4 + n
    parts[0] = _DATA_ROW_HEAD(b"D", size, len(values))
    return b"".join(parts)


_TAGS: dict[str, bytes] = {}
_TAG_CACHE_LIMIT = 4096  # tags like "INSERT 0 1" repeat; row counts make the set unbounded


def command_complete(tag: str) -> bytes:
    """CommandComplete("SELECT 1", "INSERT 0 1", "BEGIN", ...)."""
    out = _TAGS.get(tag)
    if out is None:
        out = frame(b"C", cstr(tag))
        if len(_TAGS) < _TAG_CACHE_LIMIT:
            _TAGS[tag] = out
    return out


def _field(f: FieldDescription) -> bytes:
    return cstr(f.name) + _FIELD.pack(
        f.table_oid, f.column_attr, f.type_oid, f.type_size, f.type_modifier, f.format
    )


def row_description(fields: Sequence[FieldDescription]) -> bytes:
    return frame(b"T", pack_int16(len(fields)) + b"".join(_field(f) for f in fields))


def _notice_fields(m: ErrorResponse | NoticeResponse) -> bytes:
    parts = [b"S", cstr(m.severity), b"V", cstr(m.severity), b"C", cstr(m.sqlstate)]
    parts += [b"M", cstr(m.message)]
    if m.detail is not None:
        parts += [b"D", cstr(m.detail)]
    if m.hint is not None:
        parts += [b"H", cstr(m.hint)]
    if m.position is not None:
        parts += [b"P", cstr(str(m.position))]
    for code, value in m.extra:
        if len(code) != 1 or code in "SVCMDHP\0" or not code.isascii():
            raise ValueError(f"invalid extra error field code {code!r}")
        parts += [code.encode(), cstr(value)]
    parts.append(b"\0")
    return b"".join(parts)


def _auth(code: int, payload: bytes = b"") -> bytes:
    return frame(b"R", pack_int32(code) + payload)


def _copy_response(type_byte: bytes, m: CopyInResponse | CopyOutResponse) -> bytes:
    body = bytes([m.format]) + pack_int16(len(m.column_formats))
    body += b"".join(pack_int16(f) for f in m.column_formats)
    return frame(type_byte, body)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    AuthenticationOk: lambda m: AUTH_OK,
    AuthenticationCleartextPassword: lambda m: _auth(3),
    AuthenticationMD5Password: lambda m: _auth(5, m.salt),
    AuthenticationSASL: lambda m: _auth(10, b"".join(cstr(x) for x in m.mechanisms) + b"\0"),
    AuthenticationSASLContinue: lambda m: _auth(11, m.data),
    AuthenticationSASLFinal: lambda m: _auth(12, m.data),
    ParameterStatus: lambda m: frame(b"S", cstr(m.name) + cstr(m.value)),
    BackendKeyData: lambda m: frame(b"K", pack_int32(m.pid) + pack_int32(m.key)),
    ReadyForQuery: lambda m: _READY[m.status],
    RowDescription: lambda m: row_description(m.fields),
    DataRow: lambda m: data_row(m.values),
    CommandComplete: lambda m: command_complete(m.tag),
    EmptyQueryResponse: lambda m: EMPTY_QUERY_RESPONSE,
    ErrorResponse: lambda m: frame(b"E", _notice_fields(m)),
    NoticeResponse: lambda m: frame(b"N", _notice_fields(m)),
    ParseComplete: lambda m: PARSE_COMPLETE,
    BindComplete: lambda m: BIND_COMPLETE,
    CloseComplete: lambda m: CLOSE_COMPLETE,
    NoData: lambda m: NO_DATA,
    ParameterDescription: lambda m: frame(
        b"t", pack_int16(len(m.oids)) + struct.pack(f"!{len(m.oids)}I", *m.oids)
    ),
    PortalSuspended: lambda m: PORTAL_SUSPENDED,
    CopyInResponse: lambda m: _copy_response(b"G", m),
    CopyOutResponse: lambda m: _copy_response(b"H", m),
    CopyData: lambda m: frame(b"d", m.data),
    CopyDone: lambda m: COPY_DONE,
    NegotiateProtocolVersion: lambda m: frame(
        b"v",
        # PostgreSQL writes the whole version code (3 << 16 | minor) here, and libpq reads it so.
        pack_int32(PROTOCOL_3_0 | m.newest_minor)
        + pack_int32(len(m.unrecognized))
        + b"".join(cstr(o) for o in m.unrecognized),
    ),
    NotificationResponse: lambda m: frame(
        b"A", pack_int32(m.pid) + cstr(m.channel) + cstr(m.payload)
    ),
}


def encode(msg: BackendMessage) -> bytes:
    """The wire bytes of one backend message. Raises ValueError for a value the wire cannot carry."""
    try:
        encoder = _ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"not a backend message: {msg!r}") from None
    return encoder(msg)


def encode_all(msgs: Sequence[BackendMessage]) -> bytes:
    return b"".join(encode(m) for m in msgs)
