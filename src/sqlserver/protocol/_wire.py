"""Framing shared by both parsers and all encoders: the receive buffer, field readers, field writers.

Theory of operation
-------------------
A typed message is a type byte, an int32 length that counts itself but not the type byte, and a body.
MessageReader keeps one receive buffer and a cursor. The common case on a server is that one recv()
holds whole messages (a Bind+Execute+Sync batch): feed() then keeps the received bytes object as is
and the parsers read fields straight out of it with struct.unpack_from and bytes.find, in one pass,
with no copy of the buffer. Only when a message is split across receives does the buffer become a
bytearray (amortised appends); each message is then copied out once before it is parsed, so field
values are always bytes, never views into a buffer that changes.

Bounded memory and no hangs: the type byte is checked as soon as it arrives and the length as soon as
its 4 bytes arrive, so a bad header fails at once instead of waiting for a body that never comes, and
no body larger than max_message_size is ever waited for. Once a parser has raised ProtocolViolation it
stays broken and raises the same error again: the connection must be closed.

Every body is parsed by a function (buf, start, end) -> message that must consume exactly [start, end);
field readers raise ProtocolViolation on anything that runs past `end`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from sqlserver.protocol.errors import ProtocolViolation

# PostgreSQL accepts up to 1 GiB (PQ_LARGE_MESSAGE_LIMIT); a Python server holding several such
# messages at once would exhaust memory long before, so the default is smaller and documented.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
# PostgreSQL's MAX_STARTUP_PACKET_LENGTH.
MAX_STARTUP_SIZE = 10000
# Compact a bytearray buffer once this much of its front has been consumed.
_COMPACT_AT = 1 << 16

INT16 = struct.Struct("!h")
UINT16 = struct.Struct("!H")
INT32 = struct.Struct("!i")
HEADER = struct.Struct("!ci")  # type byte, length
unpack_int16 = INT16.unpack_from
unpack_uint16 = UINT16.unpack_from
unpack_int32 = INT32.unpack_from
pack_int16 = INT16.pack
pack_uint16 = UINT16.pack
pack_int32 = INT32.pack
pack_header = HEADER.pack

Buffer = bytes | bytearray
BodyParser = Callable[[bytes, int, int], Any]


def frame(type_byte: bytes, body: bytes) -> bytes:
    """One typed message: type byte, length (including itself), body."""
    return pack_header(type_byte, len(body) + 4) + body


def cstr(text: str) -> bytes:
    """A NUL-terminated UTF-8 string; refuses an embedded NUL (it would end the string early)."""
    data = text.encode()
    if b"\0" in data:
        raise ValueError(f"a protocol string may not contain a NUL character: {text!r}")
    return data + b"\0"


def read_cstr(buf: bytes, p: int, end: int, what: str) -> tuple[str, int]:
    """The NUL-terminated UTF-8 string at p, and the position after its NUL."""
    i = buf.find(b"\0", p, end)
    if i < 0:
        raise ProtocolViolation(f"invalid message format: {what} is not NUL-terminated")
    try:
        return buf[p:i].decode(), i + 1
    except UnicodeDecodeError:
        raise ProtocolViolation(f"invalid message format: {what} is not valid UTF-8") from None


def read_int16(buf: bytes, p: int, end: int, what: str) -> int:
    if p + 2 > end:
        raise ProtocolViolation(f"invalid message format: {what} (int16) runs past the message end")
    return int(unpack_int16(buf, p)[0])


def read_uint16(buf: bytes, p: int, end: int, what: str) -> int:
    if p + 2 > end:
        raise ProtocolViolation(f"invalid message format: {what} (int16) runs past the message end")
    return int(unpack_uint16(buf, p)[0])


def read_int32(buf: bytes, p: int, end: int, what: str) -> int:
    if p + 4 > end:
        raise ProtocolViolation(f"invalid message format: {what} (int32) runs past the message end")
    return int(unpack_int32(buf, p)[0])


def read_array(
    buf: bytes, p: int, end: int, fmt: str, size: int, n: int, what: str
) -> tuple[Any, ...]:
    """n fixed-size items (struct code fmt) at p; the caller advances p by n * size."""
    if n < 0 or p + n * size > end:
        raise ProtocolViolation(f"invalid message format: {n} {what} run past the message end")
    return struct.unpack_from(f"!{n}{fmt}", buf, p) if n else ()


def check_end(p: int, end: int, what: str) -> None:
    if p != end:
        raise ProtocolViolation(
            f"invalid message format: {what} message has {end - p} bytes after its last field"
        )


def type_name(t: int) -> str:
    c = chr(t)
    return repr(c) if c.isprintable() and t < 128 else f"0x{t:02x}"


class MessageReader:
    """The receive buffer and typed-message framing; subclasses choose the body parsers.

    Not thread-safe: one reader belongs to one connection, used by one thread at a time.
    """

    __slots__ = ("_broken", "_buf", "_parsers", "_pos", "max_message_size")

    def __init__(
        self, parsers: dict[int, BodyParser], max_message_size: int = MAX_MESSAGE_SIZE
    ) -> None:
        self._buf: Buffer = b""
        self._pos = 0
        self._parsers = parsers
        self._broken: ProtocolViolation | None = None
        self.max_message_size = max_message_size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes (any length, including b"")."""
        buf = self._buf
        if self._pos >= len(buf):
            self._buf = data if type(data) is bytes else bytes(data)
            self._pos = 0
        elif type(buf) is bytes:
            grown = bytearray(memoryview(buf)[self._pos :])
            grown += data
            self._buf = grown
            self._pos = 0
        else:
            buf += data  # bytearray: in place, amortised

    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a message."""
        return len(self._buf) - self._pos

    def _fail(self, error: ProtocolViolation) -> ProtocolViolation:
        self._broken = error
        return error

    def _typed(self) -> Any:
        """The next typed message, or None when it is not complete yet."""
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if size - pos < 5:
            if self._broken is not None:
                raise self._broken
            if size > pos and buf[pos] not in self._parsers:
                raise self._fail(self._unknown(buf[pos]))
            return None
        if self._broken is not None:
            raise self._broken
        t = buf[pos]
        length = unpack_int32(buf, pos + 1)[0]
        parse = self._parsers.get(t)
        if parse is None:
            raise self._fail(self._unknown(t))
        if length < 4 or length > self.max_message_size:
            raise self._fail(
                ProtocolViolation(
                    f"invalid message length {length} for message type {type_name(t)}",
                    hint=f"a message is 4 to {self.max_message_size} bytes long",
                )
            )
        end = pos + 1 + length
        if end > size:
            return None
        try:
            if type(buf) is bytes:
                msg = parse(buf, pos + 5, end)
            else:
                with memoryview(buf) as view:
                    chunk = bytes(view[pos:end])
                msg = parse(chunk, 5, len(chunk))
        except ProtocolViolation as e:
            raise self._fail(e) from None
        except (struct.error, UnicodeDecodeError, IndexError):
            # The fast body parsers let a read past the buffer or bad UTF-8 surface as these.
            raise self._fail(
                ProtocolViolation(f"invalid message format: malformed {type_name(t)} message")
            ) from None
        # _advance, inlined: this runs once per message.
        if end >= size:
            self._buf = b""
            self._pos = 0
        elif end >= _COMPACT_AT and type(buf) is bytearray:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end
        return msg

    def _advance(self, end: int) -> None:
        buf = self._buf
        if end >= len(buf):
            self._buf = b""
            self._pos = 0
        elif end >= _COMPACT_AT and type(buf) is bytearray:
            del buf[:end]
            self._pos = 0
        else:
            self._pos = end

    def _unknown(self, t: int) -> ProtocolViolation:
        return ProtocolViolation(f"invalid message type {type_name(t)}")
