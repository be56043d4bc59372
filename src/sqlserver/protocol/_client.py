"""Client side of the codec (tests, lpbench drivers): FrontendMessage out, BackendMessage in.

Re-exported by backend.py. BackendParser is as strict as FrontendParser: every body must be consumed
exactly, or ProtocolViolation. Before the first typed message a client that sent SSLRequest or
GSSENCRequest reads the server's one-byte answer with next_byte().
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from sqlserver.protocol._wire import (
    MAX_MESSAGE_SIZE,
    BodyParser,
    MessageReader,
    check_end,
    cstr,
    frame,
    pack_int16,
    pack_int32,
    pack_uint16,
    read_array,
    read_cstr,
    read_int16,
    read_int32,
    unpack_int32,
)
from sqlserver.protocol.errors import ProtocolViolation
from sqlserver.protocol.messages import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    BackendMessage,
    Bind,
    BindComplete,
    CancelRequest,
    Close,
    CloseComplete,
    CommandComplete,
    CopyData,
    CopyDone,
    CopyFail,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    Describe,
    EmptyQueryResponse,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    FrontendMessage,
    GSSENCRequest,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    Parse,
    ParseComplete,
    PasswordMessage,
    PortalSuspended,
    Query,
    ReadyForQuery,
    RowDescription,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
)

# ------------------------------------------------------------------------------------------------
# Encoding what a client sends
# ------------------------------------------------------------------------------------------------


def _startup(m: StartupMessage) -> bytes:
    body = pack_int32(m.protocol) + b"".join(cstr(k) + cstr(v) for k, v in m.params.items()) + b"\0"
    return pack_int32(len(body) + 4) + body


def _bind(m: Bind) -> bytes:
    parts = [cstr(m.portal), cstr(m.statement), pack_uint16(len(m.param_formats))]
    parts += [pack_int16(f) for f in m.param_formats]
    parts.append(pack_uint16(len(m.params)))
    for v in m.params:
        if v is None:
            parts.append(pack_int32(-1))
        else:
            parts += [pack_int32(len(v)), bytes(v)]
    parts.append(pack_uint16(len(m.result_formats)))
    parts += [pack_int16(f) for f in m.result_formats]
    return frame(b"B", b"".join(parts))


_FRONTEND_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    StartupMessage: _startup,
    SSLRequest: lambda m: pack_int32(8) + pack_int32(SSL_REQUEST_CODE),
    GSSENCRequest: lambda m: pack_int32(8) + pack_int32(GSSENC_REQUEST_CODE),
    CancelRequest: lambda m: (
        pack_int32(16) + pack_int32(CANCEL_REQUEST_CODE) + pack_int32(m.pid) + pack_int32(m.key)
    ),
    Query: lambda m: frame(b"Q", cstr(m.sql)),
    Parse: lambda m: frame(
        b"P",
        cstr(m.name)
        + cstr(m.query)
        + pack_uint16(len(m.param_oids))
        + struct.pack(f"!{len(m.param_oids)}I", *m.param_oids),
    ),
    Bind: _bind,
    Describe: lambda m: frame(b"D", m.kind.encode() + cstr(m.name)),
    Execute: lambda m: frame(b"E", cstr(m.portal) + pack_int32(m.max_rows)),
    Close: lambda m: frame(b"C", m.kind.encode() + cstr(m.name)),
    Sync: lambda m: b"S\0\0\0\x04",
    Flush: lambda m: b"H\0\0\0\x04",
    Terminate: lambda m: b"X\0\0\0\x04",
    CopyData: lambda m: frame(b"d", bytes(m.data)),
    CopyDone: lambda m: b"c\0\0\0\x04",
    CopyFail: lambda m: frame(b"f", cstr(m.message)),
    PasswordMessage: lambda m: frame(b"p", bytes(m.data)),
}


def encode_frontend(msg: FrontendMessage) -> bytes:
    """The wire bytes of one client message. Raises ValueError for a value the wire cannot carry."""
    try:
        encoder = _FRONTEND_ENCODERS[type(msg)]
    except KeyError:
        raise TypeError(f"not a frontend message: {msg!r}") from None
    return encoder(msg)


def sasl_initial_response(mechanism: str, data: bytes) -> PasswordMessage:
    """The 'p' message a client sends to start SASL."""
    return PasswordMessage(cstr(mechanism) + pack_int32(len(data)) + data)


def password_message(password: str) -> PasswordMessage:
    """The 'p' message carrying a cleartext password or an "md5..." hash."""
    return PasswordMessage(cstr(password))


# ------------------------------------------------------------------------------------------------
# Parsing what a server sends
# ------------------------------------------------------------------------------------------------


def _auth(buf: bytes, p: int, end: int) -> BackendMessage:
    code = read_int32(buf, p, end, "authentication code")
    p += 4
    if code == 0:
        check_end(p, end, "AuthenticationOk")
        return AuthenticationOk()
    if code == 3:
        check_end(p, end, "AuthenticationCleartextPassword")
        return AuthenticationCleartextPassword()
    if code == 5:
        check_end(p + 4, end, "AuthenticationMD5Password")
        return AuthenticationMD5Password(buf[p:end])
    if code == 10:
        mechanisms = []
        while True:
            if p >= end:
                raise ProtocolViolation("invalid message format: SASL mechanism list unterminated")
            if buf[p] == 0:
                check_end(p + 1, end, "AuthenticationSASL")
                break
            name, p = read_cstr(buf, p, end, "SASL mechanism")
            mechanisms.append(name)
        return AuthenticationSASL(tuple(mechanisms))
    if code == 11:
        return AuthenticationSASLContinue(buf[p:end])
    if code == 12:
        return AuthenticationSASLFinal(buf[p:end])
    raise ProtocolViolation(f"unsupported authentication request {code}")


def _parameter_status(buf: bytes, p: int, end: int) -> ParameterStatus:
    name, p = read_cstr(buf, p, end, "parameter name")
    value, p = read_cstr(buf, p, end, "parameter value")
    check_end(p, end, "ParameterStatus")
    return ParameterStatus(name, value)


def _key_data(buf: bytes, p: int, end: int) -> BackendKeyData:
    check_end(p + 8, end, "BackendKeyData")
    return BackendKeyData(unpack_int32(buf, p)[0], unpack_int32(buf, p + 4)[0])


def _ready(buf: bytes, p: int, end: int) -> ReadyForQuery:
    check_end(p + 1, end, "ReadyForQuery")
    status = chr(buf[p])
    if status not in ("I", "T", "E"):
        raise ProtocolViolation(f"invalid transaction status {status!r} in ReadyForQuery")
    return ReadyForQuery(status)


_FIELD = struct.Struct("!IhIhih")


def _row_description(buf: bytes, p: int, end: int) -> RowDescription:
    n = read_int16(buf, p, end, "field count")
    p += 2
    fields = []
    for _ in range(max(n, 0)):
        name, p = read_cstr(buf, p, end, "field name")
        if p + 18 > end:
            raise ProtocolViolation(
                "invalid message format: RowDescription field runs past its end"
            )
        fields.append(FieldDescription(name, *_FIELD.unpack_from(buf, p)))
        p += 18
    check_end(p, end, "RowDescription")
    return RowDescription(tuple(fields))


def _data_row(buf: bytes, p: int, end: int) -> DataRow:
    n = read_int16(buf, p, end, "column count")
    p += 2
    values: list[bytes | None] = []
    for _ in range(max(n, 0)):
        size = read_int32(buf, p, end, "column length")
        p += 4
        if size == -1:
            values.append(None)
        elif size < 0 or p + size > end:
            raise ProtocolViolation(f"invalid message format: DataRow column length {size}")
        else:
            values.append(buf[p : p + size])
            p += size
    check_end(p, end, "DataRow")
    return DataRow(tuple(values))


def _tag(buf: bytes, p: int, end: int) -> CommandComplete:
    tag, p = read_cstr(buf, p, end, "command tag")
    check_end(p, end, "CommandComplete")
    return CommandComplete(tag)


def _notice_fields(buf: bytes, p: int, end: int) -> dict[str, Any]:
    fields: dict[str, str] = {}
    extra: list[tuple[str, str]] = []
    while True:
        if p >= end:
            raise ProtocolViolation("invalid message format: error fields unterminated")
        code = chr(buf[p])
        if code == "\0":
            check_end(p + 1, end, "ErrorResponse")
            break
        value, p = read_cstr(buf, p + 1, end, f"error field {code!r}")
        if code in "SCMDHP":
            fields[code] = value
        elif code != "V":
            extra.append((code, value))
    position = fields.get("P")
    if position is not None and not position.isdigit():
        raise ProtocolViolation(f"invalid error position {position!r}")
    return {
        "severity": fields.get("S", ""),
        "sqlstate": fields.get("C", ""),
        "message": fields.get("M", ""),
        "detail": fields.get("D"),
        "hint": fields.get("H"),
        "position": None if position is None else int(position),
        "extra": tuple(extra),
    }


def _param_description(buf: bytes, p: int, end: int) -> ParameterDescription:
    n = read_int16(buf, p, end, "parameter count")
    oids = read_array(buf, p + 2, end, "I", 4, n, "parameter types")
    check_end(p + 2 + 4 * n, end, "ParameterDescription")
    return ParameterDescription(oids)


def _copy_response(cls: type) -> BodyParser:
    def parse(buf: bytes, p: int, end: int) -> Any:
        if p >= end:
            raise ProtocolViolation("invalid message format: empty copy response")
        fmt = buf[p]
        n = read_int16(buf, p + 1, end, "column count")
        formats = read_array(buf, p + 3, end, "h", 2, n, "column formats")
        check_end(p + 3 + 2 * n, end, cls.__name__)
        try:
            return cls(fmt, formats)
        except ValueError as e:
            raise ProtocolViolation(f"invalid message format: {e}") from None

    return parse


def _negotiate(buf: bytes, p: int, end: int) -> NegotiateProtocolVersion:
    version = read_int32(buf, p, end, "newest protocol version")
    if version >> 16 != 3:
        raise ProtocolViolation(
            f"NegotiateProtocolVersion offers protocol {version >> 16}.x, not 3"
        )
    n = read_int32(buf, p + 4, end, "option count")
    p += 8
    if n < 0 or n > end - p:
        raise ProtocolViolation(f"invalid option count {n} in NegotiateProtocolVersion")
    options = []
    for _ in range(n):
        name, p = read_cstr(buf, p, end, "option name")
        options.append(name)
    check_end(p, end, "NegotiateProtocolVersion")
    return NegotiateProtocolVersion(version & 0xFFFF, tuple(options))


def _notification(buf: bytes, p: int, end: int) -> NotificationResponse:
    pid = read_int32(buf, p, end, "process id")
    channel, p = read_cstr(buf, p + 4, end, "channel")
    payload, p = read_cstr(buf, p, end, "payload")
    check_end(p, end, "NotificationResponse")
    return NotificationResponse(pid, channel, payload)


def _empty(msg: object, what: str) -> BodyParser:
    def parse(buf: bytes, p: int, end: int) -> object:
        check_end(p, end, what)
        return msg

    return parse


BACKEND_PARSERS: dict[int, BodyParser] = {
    ord("R"): _auth,
    ord("S"): _parameter_status,
    ord("K"): _key_data,
    ord("Z"): _ready,
    ord("T"): _row_description,
    ord("D"): _data_row,
    ord("C"): _tag,
    ord("I"): _empty(EmptyQueryResponse(), "EmptyQueryResponse"),
    ord("E"): lambda b, p, e: ErrorResponse(**_notice_fields(b, p, e)),
    ord("N"): lambda b, p, e: NoticeResponse(**_notice_fields(b, p, e)),
    ord("1"): _empty(ParseComplete(), "ParseComplete"),
    ord("2"): _empty(BindComplete(), "BindComplete"),
    ord("3"): _empty(CloseComplete(), "CloseComplete"),
    ord("n"): _empty(NoData(), "NoData"),
    ord("t"): _param_description,
    ord("s"): _empty(PortalSuspended(), "PortalSuspended"),
    ord("G"): _copy_response(CopyInResponse),
    ord("H"): _copy_response(CopyOutResponse),
    ord("d"): lambda b, p, e: CopyData(b[p:e]),
    ord("c"): _empty(CopyDone(), "CopyDone"),
    ord("v"): _negotiate,
    ord("A"): _notification,
}


class BackendParser(MessageReader):
    """Parses what a server sends (client side). One per connection; one thread at a time.

    feed(data); next() -> BackendMessage | None (None = need more data); ProtocolViolation if the
    server broke the protocol (the parser then stays broken).
    """

    __slots__ = ()

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        super().__init__(BACKEND_PARSERS, max_message_size)

    def next(self) -> BackendMessage | None:
        return self._typed()

    def next_byte(self) -> bytes | None:
        """The one-byte answer to SSLRequest/GSSENCRequest (b"N" or b"S"), or None if not there yet."""
        if self._broken is not None:
            raise self._broken
        if self.buffered() < 1:
            return None
        byte = bytes(self._buf[self._pos : self._pos + 1])
        self._advance(self._pos + 1)
        return byte
