"""Server side of the codec: bytes from a client in, FrontendMessage out (sans-IO, STYLE.md §1).

    parser = FrontendParser()
    parser.feed(data)
    while (msg := parser.next()) is not None:
        ...                       # a ProtocolViolation means: send its ErrorResponse, close

Phases: the first message of a connection has no type byte (length, code): StartupMessage,
SSLRequest, GSSENCRequest or CancelRequest. After SSLRequest/GSSENCRequest (answered b"N") another
startup-phase message follows; after StartupMessage typed messages follow; after CancelRequest
nothing may follow (the server closes the connection).

Protocol versions: 3.0 is accepted; 3.x with x > 0 is returned as is and the session answers
NegotiateProtocolVersion (see negotiation()); any other major version is a ProtocolViolation.
Limits: startup packets up to 10000 bytes (as PostgreSQL), other messages up to max_message_size
(64 MiB by default; PostgreSQL allows 1 GiB). Format codes in Bind are passed through unchecked: the
layer that converts the values reports an unsupported code (22023) as PostgreSQL does.
"""

from __future__ import annotations

from sqlserver.protocol._wire import (
    MAX_MESSAGE_SIZE,
    MAX_STARTUP_SIZE,
    BodyParser,
    MessageReader,
    check_end,
    read_array,
    read_cstr,
    read_int32,
    read_uint16,
    unpack_int32,
    unpack_uint16,
)
from sqlserver.protocol.errors import ProtocolViolation
from sqlserver.protocol.messages import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    SSL_REQUEST_CODE,
    Bind,
    CancelRequest,
    Close,
    CopyData,
    CopyDone,
    CopyFail,
    Describe,
    Execute,
    Flush,
    FrontendMessage,
    GSSENCRequest,
    NegotiateProtocolVersion,
    Parse,
    PasswordMessage,
    Query,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
)

# Messages without fields are shared instances: parsing them allocates nothing.
_SYNC = Sync()
_FLUSH = Flush()
_TERMINATE = Terminate()
_COPY_DONE = CopyDone()
_EMPTY: tuple[int, ...] = ()


def _query(buf: bytes, p: int, end: int) -> Query:
    sql, p = read_cstr(buf, p, end, "query string")
    check_end(p, end, "Query")
    return Query(sql)


def _parse(buf: bytes, p: int, end: int) -> Parse:
    name, p = read_cstr(buf, p, end, "statement name")
    query, p = read_cstr(buf, p, end, "query string")
    n = read_uint16(buf, p, end, "parameter type count")
    oids = read_array(buf, p + 2, end, "I", 4, n, "parameter types")
    check_end(p + 2 + 4 * n, end, "Parse")
    return Parse(name, query, oids)


def _bind(buf: bytes, p: int, end: int) -> Bind:
    # The hot path of every extended-query round trip: one pass, few calls. Reads that run past
    # the buffer raise struct.error, turned into a ProtocolViolation by the reader; every offset
    # is checked against `end` before it is used, and the message must end exactly at `end`.
    find = buf.find
    i = find(b"\0", p, end)
    j = find(b"\0", i + 1, end) if i >= 0 else -1
    if j < 0:
        raise ProtocolViolation("invalid message format: Bind names are not NUL-terminated")
    portal = buf[p:i].decode() if i > p else ""
    statement = buf[i + 1 : j].decode() if j > i + 1 else ""
    p = j + 3
    if p > end:
        raise ProtocolViolation("invalid message format: Bind parameter format count missing")
    nf = unpack_uint16(buf, j + 1)[0]
    if nf:
        formats = read_array(buf, p, end, "h", 2, nf, "parameter format codes")
        p += 2 * nf
    else:
        formats = _EMPTY
    if p + 2 > end:
        raise ProtocolViolation("invalid message format: Bind parameter count missing")
    n = unpack_uint16(buf, p)[0]
    p += 2
    if nf > 1 and nf != n:
        raise ProtocolViolation(f"bind message has {nf} parameter formats but {n} parameters")
    params: list[bytes | None] = []
    append = params.append
    for _ in range(n):
        if p + 4 > end:
            raise ProtocolViolation("invalid message format: Bind parameters run past its end")
        size = unpack_int32(buf, p)[0]
        p += 4
        if size == -1:
            append(None)
        elif size < 0 or p + size > end:
            raise ProtocolViolation(f"invalid message format: Bind parameter length {size}")
        else:
            append(buf[p : p + size])
            p += size
    if p + 2 > end:
        raise ProtocolViolation("invalid message format: Bind result format count missing")
    nr = unpack_uint16(buf, p)[0]
    p += 2
    if nr:
        results = read_array(buf, p, end, "h", 2, nr, "result format codes")
        p += 2 * nr
    else:
        results = _EMPTY
    check_end(p, end, "Bind")
    return Bind(portal, statement, formats, tuple(params), results)


def _kind_and_name(buf: bytes, p: int, end: int, what: str) -> tuple[str, str]:
    if p >= end:
        raise ProtocolViolation(f"invalid message format: empty {what} message")
    kind = chr(buf[p])
    if kind not in ("S", "P"):
        raise ProtocolViolation(f"invalid {what} message subtype {kind!r}")
    name, p = read_cstr(buf, p + 1, end, f"{what} name")
    check_end(p, end, what)
    return kind, name


def _describe(buf: bytes, p: int, end: int) -> Describe:
    return Describe(*_kind_and_name(buf, p, end, "Describe"))


def _close(buf: bytes, p: int, end: int) -> Close:
    return Close(*_kind_and_name(buf, p, end, "Close"))


def _execute(buf: bytes, p: int, end: int) -> Execute:
    i = buf.find(b"\0", p, end)
    if i < 0:
        raise ProtocolViolation("invalid message format: portal name is not NUL-terminated")
    if i + 5 != end:
        raise ProtocolViolation("invalid message format: Execute row limit (int32) is missing")
    return Execute(buf[p:i].decode() if i > p else "", unpack_int32(buf, i + 1)[0])


def _empty(msg: object, what: str) -> BodyParser:
    def parse(buf: bytes, p: int, end: int) -> object:
        check_end(p, end, what)
        return msg

    return parse


def _copy_data(buf: bytes, p: int, end: int) -> CopyData:
    return CopyData(buf[p:end])


def _copy_fail(buf: bytes, p: int, end: int) -> CopyFail:
    reason, p = read_cstr(buf, p, end, "CopyFail message")
    check_end(p, end, "CopyFail")
    return CopyFail(reason)


def _password(buf: bytes, p: int, end: int) -> PasswordMessage:
    return PasswordMessage(buf[p:end])


FRONTEND_PARSERS: dict[int, BodyParser] = {
    ord("Q"): _query,
    ord("P"): _parse,
    ord("B"): _bind,
    ord("D"): _describe,
    ord("E"): _execute,
    ord("C"): _close,
    ord("S"): _empty(_SYNC, "Sync"),
    ord("H"): _empty(_FLUSH, "Flush"),
    ord("X"): _empty(_TERMINATE, "Terminate"),
    ord("d"): _copy_data,
    ord("c"): _empty(_COPY_DONE, "CopyDone"),
    ord("f"): _copy_fail,
    ord("p"): _password,
}

_STARTUP, _TYPED, _CANCELLED = 0, 1, 2


class FrontendParser(MessageReader):
    """Parses what a client sends. One per connection; not thread-safe (one thread at a time).

    feed(data) appends bytes; next() returns the next complete message or None (need more data), or
    raises ProtocolViolation (08P01, FATAL) and keeps raising it: close the connection.
    """

    __slots__ = ("_phase",)

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        super().__init__(FRONTEND_PARSERS, max_message_size)
        self._phase = _STARTUP

    @property
    def in_startup(self) -> bool:
        """True until a StartupMessage has been parsed (the next message has no type byte)."""
        return self._phase == _STARTUP

    def next(self) -> FrontendMessage | None:
        if self._phase == _TYPED:
            return self._typed()
        if self._broken is not None:
            raise self._broken
        if self._phase == _CANCELLED:
            if self.buffered():
                raise self._fail(ProtocolViolation("no message may follow a CancelRequest"))
            return None
        return self._startup()

    def _startup(self) -> FrontendMessage | None:
        buf, pos = self._buf, self._pos
        if len(buf) - pos < 4:
            return None
        length = unpack_int32(buf, pos)[0]
        if length < 8 or length > MAX_STARTUP_SIZE:
            raise self._fail(
                ProtocolViolation(
                    f"invalid length of startup packet: {length}",
                    hint=f"a startup packet is 8 to {MAX_STARTUP_SIZE} bytes long",
                )
            )
        end = pos + length
        if end > len(buf):
            return None
        body = bytes(buf[pos + 4 : end])
        try:
            msg = _startup_message(body)
        except ProtocolViolation as e:
            raise self._fail(e) from None
        self._advance(end)
        if isinstance(msg, StartupMessage):
            self._phase = _TYPED
        elif isinstance(msg, CancelRequest):
            self._phase = _CANCELLED
        return msg


def _startup_message(body: bytes) -> FrontendMessage:
    """The message in a startup packet's body (code + payload, length already removed)."""
    code = unpack_int32(body, 0)[0]
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
        check_end(4, len(body), "SSLRequest" if code == SSL_REQUEST_CODE else "GSSENCRequest")
        return SSLRequest() if code == SSL_REQUEST_CODE else GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        check_end(12, len(body), "CancelRequest")
        return CancelRequest(unpack_int32(body, 4)[0], unpack_int32(body, 8)[0])
    major, minor = (code >> 16) & 0xFFFF, code & 0xFFFF
    if major != 3:
        raise ProtocolViolation(
            f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0",
            hint="use a client that speaks protocol version 3 (PostgreSQL 7.4 and later)",
        )
    if body[-1] != 0:
        raise ProtocolViolation("invalid startup packet layout: expected terminator as last byte")
    params: dict[str, str] = {}
    p, end = 4, len(body)
    while True:
        if p >= end:
            raise ProtocolViolation(
                "invalid startup packet layout: expected terminator as last byte"
            )
        if body[p] == 0:
            check_end(p + 1, end, "StartupMessage")
            break
        name, p = read_cstr(body, p, end, "startup parameter name")
        value, p = read_cstr(body, p, end, f"value of startup parameter {name!r}")
        params[name] = value
    return StartupMessage(code, params)


def negotiation(msg: StartupMessage) -> NegotiateProtocolVersion | None:
    """What PostgreSQL answers first to this StartupMessage, if anything.

    A 3.x client with x > 0, or one sending protocol options ("_pq_." parameters, none of which this
    server knows), gets NegotiateProtocolVersion(0, those options) and the session continues at 3.0.
    """
    options = tuple(name for name in msg.params if name.startswith("_pq_."))
    if msg.minor == 0 and not options:
        return None
    return NegotiateProtocolVersion(0, options)


def parse_password(data: bytes) -> str:
    """The password in a PasswordMessage (cleartext or "md5..." hash), NUL-terminated."""
    text, p = read_cstr(data, 0, len(data), "password")
    check_end(p, len(data), "PasswordMessage")
    return text


def parse_sasl_initial(data: bytes) -> tuple[str, bytes]:
    """(mechanism, initial client response) of a SASLInitialResponse (no response: b"")."""
    mechanism, p = read_cstr(data, 0, len(data), "SASL mechanism name")
    size = read_int32(data, p, len(data), "SASL response length")
    p += 4
    if size == -1:
        check_end(p, len(data), "SASLInitialResponse")
        return mechanism, b""
    if size < 0:
        raise ProtocolViolation(f"invalid SASL response length {size}")
    check_end(p + size, len(data), "SASLInitialResponse")
    return mechanism, bytes(data[p:])


def parse_sasl_response(data: bytes) -> bytes:
    """The payload of a SASLResponse (the whole message body)."""
    return bytes(data)
