"""A sans-IO RESP2/RESP3 codec: bytes in, commands out; reply values in, bytes out (STYLE.md §1).

No sockets, no threads, no global state: the event-loop server, the tests and lpbench's benchmark driver
share it. Importing this module starts nothing.

Public API
----------
Requests (server side):
    RequestParser(limits=Limits(), use_hiredis=None, use_native=None)
        .feed(data)            append received bytes
        .commands() -> list[list[bytes]]
                               every complete command now in the buffer, in order (possibly []);
                               raises ProtocolError (and stays broken: close the connection)
        .pending_error         a ProtocolError found after the commands just returned (reply to
                               those, then send this error and close), else None
        .buffered() -> int     bytes received but not yet part of a complete command
        .parse(data)           feed(data) then commands() in one call (the event loop's hot path)
    PythonRequestParser / HiredisRequestParser / NativeRequestParser
                               the three implementations (same behaviour; see below)
    ProtocolError(reason)      .reply is the error line to send: b"-ERR Protocol error: <reason>\r\n"
    Limits(max_bulk_len, max_multibulk_len, max_inline_len, query_buffer_limit)

Replies (server side):
    encode_reply(value, protocol=2) -> bytes    value as described in kvserver.replies
    format_double(x) -> bytes                   Redis 7 formatting: 3 (not 3.0), 1.5, inf, -inf, nan

Client side (tests, benchmark driver):
    encode_command(*args) -> bytes              a multibulk request; args are bytes/str/int/float
    ReplyParser(use_hiredis=None)               .feed(data); .replies() -> list of decoded replies
        decoded: int, bytes, None, list, dict, set, float, bool, SimpleString, ErrorReply (never raised);
        use_hiredis=True: faster, status replies as bytes and sets as lists

Request grammar (what redis-server's processInputBuffer accepts):
- A request starting with "*" is a multibulk: "*<n>\\r\\n" then n times "$<len>\\r\\n<len bytes>\\r\\n".
  n <= 0 is an empty request and is skipped. Every element must be a bulk string ("$").
- Anything else is an inline command: one line split on blanks, with "..." and '...' quoting; blank lines
  are skipped.
- Limits (Limits): a bulk length above max_bulk_len, a count above max_multibulk_len, an inline line or a
  length line longer than max_inline_len without a newline, or more than query_buffer_limit bytes waiting
  for one command, raise ProtocolError. The checks run as soon as the offending header is in the buffer.

Theory of operation (why three parsers give one behaviour)
----------------------------------------------------------
PythonRequestParser is the reference: a cursor over one bytes buffer. The two accelerators are not
second grammars: each takes a buffer only when it can show that the reference parser would read it the
same way, and otherwise hands the whole buffer to the reference parser. Both take only buffers small
enough that no limit can be exceeded inside them.

NativeRequestParser (the default when the C module kvserver._respfast was built at install time)
accepts exactly a run of complete plain multibulk requests: "*k", then k times "$len" and the payload,
numbers as digits without sign, blank or leading zero. The reference parser reads such a buffer the same
way by construction (_respfast.c gives the argument); it is the fast path, about 2,500 machine
instructions per unpipelined request (callgrind) against about 6,000 for the split check and 13,500 for
hiredis with its checks below, and about 900 against 5,500 per command of a 16-deep pipeline.

HiredisRequestParser (without the C module) first tries a split on CRLF for a lone request whose
payloads hold no CRLF: the pieces must be exactly "*k", k times "$len" and a payload of that length,
the canonical encoding of those payloads. Otherwise it hands hiredis a buffer only when that buffer (a)
starts with "*", (b) ends with CRLF. It accepts hiredis's
result only if (1) hiredis holds no partial message afterwards (probed by feeding "*0\r\n", which an
idle reader answers with [] and a busy one cannot), (2) every element is bytes, and (3) outside the
payloads the buffer holds only "*", "$", digits, CR and LF: deleting those bytes from the buffer and from
the joined payloads leaves the same length. Both parsers read lengths identically (no sign, blank or
leading zero; checked) and neither inspects the two bytes after a payload, so (1)-(3) mean every header is
a "*" array or a "$" bulk where the reference parser reads it, and the two parses are the same. (3)
replaced a count of "\r\n$" per element, which payloads containing "\r\n$" or "\r\n*" could fool: a
RESP3 push (">3 ... SET k v") after a first request ran as SET where the reference parser refuses it.
Anything else (an inline command, a partial command, a protocol error, a non-bulk element, a payload-free
type, a large buffer) goes to the reference parser.

The reference parser is incremental (issue 10: a client trickling the arguments of a 1,000,000-argument
request made every read re-parse the request from its start, stalling every other client): it keeps the
arguments already read of a request being received, and the cost of a read is proportional to the bytes
it brings. Once a request is half received, every read goes to the reference parser until the request
is complete (the fast paths only ever see a buffer that starts at a request boundary), so the
accelerators' argument above is unchanged. tests/kvserver/test_protocol.py feeds the same bytes cut at
every point and at random points and requires what the reference parser reads from them whole.

tests/kvserver/test_protocol.py holds all three to the same results on arbitrary bytes, on valid
requests cut at every point, and on valid requests with bytes replaced, inserted or deleted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from typing import Any

from kvserver.replies import ErrorReply, SimpleString, Verbatim, _NullArray

_hiredis: Any
try:  # hiredis is a declared dependency, but the codec must work (slower) without it
    import hiredis as _hiredis
except ImportError:  # pragma: no cover - exercised only on installations without hiredis
    _hiredis = None

HAVE_HIREDIS = _hiredis is not None

try:  # built from src/kvserver/_respfast.c when a C compiler was there at install time
    from kvserver._respfast import encode_request as _native_encode
    from kvserver._respfast import parse_requests as _native_parse
except ImportError:  # pragma: no cover - exercised only on installations without the C module
    _native_parse = None  # type: ignore[assignment]
    _native_encode = None  # type: ignore[assignment]

HAVE_NATIVE = _native_parse is not None

__all__ = [
    "BULK_HEADERS",
    "HAVE_HIREDIS",
    "HAVE_NATIVE",
    "HiredisRequestParser",
    "Limits",
    "NativeRequestParser",
    "ProtocolError",
    "PythonRequestParser",
    "ReplyParser",
    "RequestParser",
    "encode_command",
    "encode_reply",
    "format_double",
]


class ProtocolError(Exception):
    """The client broke the protocol. The connection cannot be resynchronised: reply, then close it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reply = b"-ERR Protocol error: " + reason.encode() + b"\r\n"


@dataclass(frozen=True)
class Limits:
    """Per-client input limits (defaults are Redis 7's, except query_buffer_limit: see docs/kvserver.md)."""

    max_bulk_len: int = 512 * 1024 * 1024  # proto-max-bulk-len
    max_multibulk_len: int = 1024 * 1024  # Redis: 1024*1024 for unauthenticated clients
    max_inline_len: int = 64 * 1024  # PROTO_INLINE_MAX_SIZE
    query_buffer_limit: int = 1024 * 1024 * 1024  # client-query-buffer-limit

    def __post_init__(self) -> None:
        for name in ("max_bulk_len", "max_multibulk_len", "max_inline_len", "query_buffer_limit"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


_INT_MAX_DIGITS = 18  # lengths above 10**18 are invalid anyway; keeps int() bounded


def _parse_length(line: bytes) -> int | None:
    """Redis's string2ll for length lines: optional '-', digits, no leading zeros, no blanks."""
    digits = line[1:] if line[:1] == b"-" else line
    if (
        not digits
        or not digits.isdigit()
        or len(digits) > _INT_MAX_DIGITS
        or (digits[0] == 0x30 and len(digits) > 1)
    ):
        return None
    return int(line)


def _split_inline(line: bytes) -> list[bytes]:
    """Split an inline command line like Redis's sdssplitargs (blanks, "double" and 'single' quotes)."""
    if b'"' not in line and b"'" not in line:
        return line.split()
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in b" \t\n\r\v\f":
            i += 1
        if i >= n:
            return args
        current = bytearray()
        in_dq = in_sq = False
        while True:
            if in_dq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if c == 0x5C and i + 3 < n and line[i + 1] == 0x78 and _is_hex(line[i + 2 : i + 4]):
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 3
                elif c == 0x5C and i + 1 < n:
                    i += 1
                    current.append(_ESCAPES.get(line[i], line[i]))
                elif c == 0x22:
                    # a closing quote must be followed by a blank or the end
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    in_dq = False
                    i += 1
                    break
                else:
                    current.append(c)
            elif in_sq:
                if i >= n:
                    raise ProtocolError("unbalanced quotes in request")
                c = line[i]
                if c == 0x5C and i + 1 < n and line[i + 1] == 0x27:
                    i += 1
                    current.append(0x27)
                elif c == 0x27:
                    if i + 1 < n and line[i + 1] not in b" \t\n\r\v\f":
                        raise ProtocolError("unbalanced quotes in request")
                    in_sq = False
                    i += 1
                    break
                else:
                    current.append(c)
            else:
                if i >= n:
                    break
                c = line[i]
                if c in b" \t\n\r\v\f":
                    break
                if c == 0x22:
                    in_dq = True
                elif c == 0x27:
                    in_sq = True
                else:
                    current.append(c)
            i += 1
        args.append(bytes(current))


_ESCAPES = {0x6E: 0x0A, 0x72: 0x0D, 0x74: 0x09, 0x62: 0x08, 0x61: 0x07}


def _is_hex(b: bytes) -> bool:
    return len(b) == 2 and all(c in b"0123456789abcdefABCDEF" for c in b)


_SMALL_READ = (
    1024  # a read this small is appended to the previous one (PythonRequestParser.feed) ...
)
_TAIL_MAX = 4096  # ... while that stays this small (the newline check rescans it: keep it short)


class PythonRequestParser:
    """The reference request parser (pure Python). Not thread-safe: one per connection, one thread.

    Incremental: the cost of a call is proportional to the bytes received since the last one, never to
    the size of the request being received (a client trickling the arguments of a 1,000,000-argument
    request must not make every read re-read the arguments before). Between calls it keeps
    - the arguments already read of the request being received (`_args`, with `_left` still to come),
    - the length of a bulk whose "$<len>" line was read but whose payload is incomplete (`_bulk`),
    - the unread bytes, which start at an element (or request) boundary: at most one partial line
      (bounded by max_inline_len) or one partial payload, plus the chunks received since (`_chunks`).
    Chunks are joined only once the buffer can make progress: `_need` bytes for a payload (so a large
    value arriving in many reads is copied O(1) times), or a newline for a line (`_wait_newline`: a
    read without one is checked for a newline and for the limits, nothing else). Small reads are
    appended to the previous chunk (a bytearray of up to 4 KB) rather than kept one object each.
    """

    __slots__ = (
        "_args",
        "_buf",
        "_bulk",
        "_checked",
        "_chunks",
        "_chunks_len",
        "_idle",
        "_left",
        "_limits",
        "_need",
        "_partial",
        "_wait_newline",
        "pending_error",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self._buf = b""  # unread bytes already joined; they start at an element boundary
        self._chunks: list[bytes | bytearray] = []  # received since, not joined yet
        self._chunks_len = 0
        self._need = 0  # unread bytes needed before parsing can make progress
        self._wait_newline = False  # ... and a newline (the unread bytes start with a partial line)
        self._checked = 0  # chunks already searched for that newline
        self._args: list[bytes] | None = None  # the request being received: arguments read so far
        self._left = 0  # its arguments still to come
        self._bulk = -1  # length of the bulk whose "$<len>" line was read, payload still incomplete
        self._partial = 0  # bytes of the request being received that were read already
        self._idle = True  # idle(), kept up to date: the accelerated parsers test it once per read
        self._limits = limits or Limits()
        # Set when a protocol error follows complete commands in one buffer: those are returned
        # first (Redis runs them before answering the error); the caller then reports this error.
        self.pending_error: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        n = len(data)
        self._chunks_len += n
        self._idle = False
        chunks = self._chunks
        if n < _SMALL_READ and chunks and len(chunks[-1]) + n <= _TAIL_MAX:
            # Small reads while waiting for more (a payload, a newline) go into one bytearray: a
            # bytes object per read costs ~40 bytes of memory per read, 40x a byte sent at a time.
            last = chunks[-1]
            if type(last) is bytearray:
                last += data
            else:
                chunks[-1] = bytearray(last) + data
        else:
            chunks.append(bytes(data))

    def buffered(self) -> int:
        """Bytes received that are not part of a complete command yet (CLIENT LIST's qbuf)."""
        return self._partial + len(self._buf) + self._chunks_len

    def idle(self) -> bool:
        """Nothing buffered, no request half received, no error pending (the fast paths' condition)."""
        return self._idle

    def parse(self, data: bytes) -> list[list[bytes]]:
        """feed(data), then commands(): one call for the event loop's common case (a read that came whole)."""
        self.feed(data)
        return self.commands()

    def _consolidate(self) -> bytes:
        if self._chunks:
            joined = b"".join(self._chunks)
            self._buf = self._buf + joined if self._buf else joined
            self._chunks.clear()
            self._chunks_len = 0
            self._checked = 0
        return self._buf

    def _can_progress(self, unread: int) -> bool:
        """False when the new chunks cannot complete what the parser waits for (checked in O(new bytes))."""
        if unread < self._need:
            return False
        if not self._wait_newline:
            return True
        chunks = self._chunks
        for i in range(self._checked, len(chunks)):
            if b"\n" in chunks[i]:
                return True
        self._checked = max(0, len(chunks) - 1)  # the last chunk may still grow (feed): look again
        # A line longer than any limit allows: parse now, which raises the error that line deserves.
        return unread > self._limits.max_inline_len

    def commands(self) -> list[list[bytes]]:
        limit = self._limits.query_buffer_limit
        unread = len(self._buf) + self._chunks_len
        if not self._can_progress(unread):
            if self._partial + unread > limit:
                raise ProtocolError("query buffer limit exceeded")
            return []
        if self.pending_error is not None:
            raise self.pending_error
        out: list[list[bytes]] = []
        buf = self._consolidate()
        try:
            pos = self._parse_into(buf, out)
        except ProtocolError as exc:
            if not out:
                raise
            self.pending_error = exc
            self._buf = b""
            return out
        if pos:
            buf = self._buf = buf[pos:]
        if self._partial + len(buf) > limit:
            raise ProtocolError("query buffer limit exceeded")
        self._idle = not buf and self._args is None
        return out

    def _parse_into(self, buf: bytes, out: list[list[bytes]]) -> int:
        """Append the commands completed by buf to out; return the offset of the first unread byte.

        buf starts where the last call stopped: inside the request in self._args (at an element, or
        at the payload of a bulk of length self._bulk), or at a request boundary.
        """
        limits = self._limits
        end = len(buf)
        pos = 0
        args = self._args
        left = self._left
        bulk = self._bulk
        start = -self._partial  # where the request being received started, relative to buf
        self._wait_newline = False
        self._need = 0
        while True:
            if args is None:  # at a request boundary
                if pos >= end:
                    break
                start = pos
                if buf[pos] != 0x2A:  # not "*": inline command
                    nl = buf.find(b"\n", pos)
                    if nl < 0:
                        if end - pos > limits.max_inline_len:
                            raise ProtocolError("too big inline request")
                        self._wait_line(pos, end)
                        break
                    if nl - pos > limits.max_inline_len:
                        raise ProtocolError("too big inline request")
                    line = buf[pos:nl]
                    pos = nl + 1
                    inline = _split_inline(line[:-1] if line.endswith(b"\r") else line)
                    if inline:
                        out.append(inline)
                    continue
                crlf = buf.find(b"\r\n", pos)
                if crlf < 0:
                    if end - pos > limits.max_inline_len:
                        raise ProtocolError("too big mbulk count string")
                    self._wait_line(pos, end)
                    break
                count = _parse_length(buf[pos + 1 : crlf])
                if count is None or count > limits.max_multibulk_len:
                    raise ProtocolError("invalid multibulk length")
                pos = crlf + 2
                if count <= 0:
                    continue
                args = []
                left = count
            # Inside a request: its elements, as far as buf goes.
            while left:
                if bulk < 0:
                    if pos >= end:
                        self._need = 1
                        break
                    if buf[pos] != 0x24:  # "$"
                        raise ProtocolError(f"expected '$', got '{chr(buf[pos])}'")
                    crlf = buf.find(b"\r\n", pos)
                    if crlf < 0:
                        if end - pos > limits.max_inline_len:
                            raise ProtocolError("too big bulk count string")
                        self._wait_line(pos, end)
                        break
                    size = _parse_length(buf[pos + 1 : crlf])
                    if size is None or size < 0 or size > limits.max_bulk_len:
                        raise ProtocolError("invalid bulk length")
                    pos = crlf + 2
                    bulk = size
                if pos + bulk + 2 > end:
                    self._need = bulk + 2
                    break
                args.append(buf[pos : pos + bulk])
                pos += bulk + 2  # like Redis, the two bytes after the payload are not inspected
                bulk = -1
                left -= 1
            if left:
                break  # the rest of this request has not arrived yet
            out.append(args)
            args = None
        self._args = args
        self._left = left
        self._bulk = bulk
        self._partial = pos - start if args is not None else 0
        return pos

    def _wait_line(self, pos: int, end: int) -> None:
        """The unread bytes from pos start a line whose newline has not arrived."""
        self._need = end - pos + 1
        self._wait_newline = True
        self._checked = 0


_FAST_MAX = 64 * 1024  # largest buffer handed to hiredis
_LEN_HEADER = [b"$%d" % i for i in range(4096)]  # the split fast path's bulk headers, by length
_SPLIT_MAX_PARTS = 2 * 64 + 3  # the split fast path takes requests of up to 64 arguments
# The array header a single request split into n pieces must start with (n = 2k + 2 for k arguments);
# None where no single request of >= 1 argument splits into n pieces (None equals no bytes).
_ARRAY_HEADER_FOR_PARTS: list[bytes | None] = [
    b"*%d" % ((n - 2) // 2) if n >= 4 and n % 2 == 0 else None for n in range(_SPLIT_MAX_PARTS)
]
_STRUCTURAL = b"*$0123456789\r\n"  # the only bytes of a canonical request outside its payloads


def _fast_limit(limits: Limits) -> int:
    """The largest buffer for a fast path: below it no limit can be exceeded inside a complete
    buffer (an element takes >= 6 bytes, "$0\r\n" and two more)."""
    return min(_FAST_MAX, limits.max_bulk_len, 6 * limits.max_multibulk_len, limits.max_inline_len)


class _AcceleratedRequestParser:
    """What the accelerated parsers share: the reference parser as fallback and the buffering around it.

    A subclass supplies `_fast(buf)`: buf's requests if it can show the reference parser reads buf the
    same way, else None (the reference parser then takes buf whole). Not thread-safe: one per
    connection, one thread.
    """

    __slots__ = ("_fallback", "_fast_max", "pending_error")

    def __init__(self, limits: Limits | None = None) -> None:
        limits = limits or Limits()
        self._fallback = PythonRequestParser(limits)
        self.pending_error: ProtocolError | None = None
        self._fast_max = _fast_limit(limits)

    def feed(self, data: bytes) -> None:
        self._fallback.feed(data)

    def buffered(self) -> int:
        return self._fallback.buffered()

    def parse(self, data: bytes) -> list[list[bytes]]:
        """feed(data), then commands(), in one call (the event loop's hot path).

        When nothing is buffered from earlier reads (the usual case: each read holds whole requests)
        data goes straight to the fast path, without a trip through the reference parser's chunk list.
        """
        fb = self._fallback
        if fb._idle:  # fb.idle(), inline: this runs once per read
            out = self._fast(data)
            if out is not None:
                return out
        # Not for the fast path (partial, inline, large or malformed, or the rest of a request begun
        # earlier): the reference parser decides, reading only what it has not read yet.
        fb.feed(data)
        return self._slow()

    def commands(self) -> list[list[bytes]]:
        fb = self._fallback
        chunks = fb._chunks
        if (
            len(chunks) == 1
            and type(chunks[0]) is bytes
            and not fb._buf
            and fb._args is None
            and fb.pending_error is None
        ):
            # The common case: the buffer is exactly what one recv() returned, at a request boundary.
            out = self._fast(chunks[0])
            if out is not None:
                chunks.clear()
                fb._chunks_len = 0
                fb._need = 0
                fb._wait_newline = False
                fb._idle = True
                return out
        return self._slow()

    def _fast(self, buf: bytes) -> list[list[bytes]] | None:
        raise NotImplementedError

    def _slow(self) -> list[list[bytes]]:
        out = self._fallback.commands()
        self.pending_error = self._fallback.pending_error
        return out


class HiredisRequestParser(_AcceleratedRequestParser):
    """The accelerated request parser: hiredis for the common case, the reference parser otherwise.

    Same contract and behaviour as PythonRequestParser (see the module's theory of operation).
    """

    __slots__ = ("_reader",)

    def __init__(self, limits: Limits | None = None) -> None:
        if _hiredis is None:
            raise RuntimeError("hiredis is not installed")
        super().__init__(limits)
        self._reader = _hiredis.Reader()

    def _fast(self, buf: bytes) -> list[list[bytes]] | None:
        """buf's requests if buf is complete and canonical (see the theory above), else None.

        A lone CRLF-free request is checked by splitting; anything else goes through hiredis and
        its exactness checks. The one-message case is told apart with a second gets() instead of a
        list(iter(...)) round (each Python-level call here is paid once per request).
        """
        if len(buf) > self._fast_max:
            return None
        # One request whose payloads hold no CRLF (most requests that come alone, unpipelined):
        # split on CRLF and check that the pieces are exactly "*k", then k times "$len" and a
        # payload of that length, then nothing. That is the canonical encoding of those payloads,
        # which every parser reads the same way; the split costs less than hiredis's checks below.
        parts = buf.split(b"\r\n")
        n = len(parts)
        try:
            if n < _SPLIT_MAX_PARTS and parts[0] == _ARRAY_HEADER_FOR_PARTS[n] and not parts[-1]:
                # One request (unpipelined): the common shapes unrolled.
                if n == 6:  # GET key
                    if (
                        parts[1] == _LEN_HEADER[len(parts[2])]
                        and parts[3] == _LEN_HEADER[len(parts[4])]
                    ):
                        return [[parts[2], parts[4]]]
                elif n == 8:  # SET key value
                    if (
                        parts[1] == _LEN_HEADER[len(parts[2])]
                        and parts[3] == _LEN_HEADER[len(parts[4])]
                        and parts[5] == _LEN_HEADER[len(parts[6])]
                    ):
                        return [[parts[2], parts[4], parts[6]]]
                else:
                    args = parts[2:-1:2]
                    if parts[1:-1:2] == list(map(_LEN_HEADER.__getitem__, map(len, args))):
                        return [args]
        except IndexError:
            pass  # a payload longer than the header table: hiredis below
        if not (buf and buf[0] == 0x2A and buf[-1] == 0x0A and buf[-2] == 0x0D):
            return None
        reader = self._reader
        reader.feed(buf)
        gets = reader.gets
        try:
            first = gets()
            second = gets()
            if second is False:
                if first is False:
                    raise ValueError  # not even one complete message
                out: list[list[bytes]] = [first]
                # Requests are arrays of bulk strings only: join raises TypeError on a non-bytes
                # element (int, nil, nested array ...) or on a message that is not a container.
                payloads = b"".join(first)
            else:
                out = [first, second]
                out.extend(iter(gets, False))  # a C-level loop over the remaining messages
                payloads = b"".join(chain.from_iterable(out))
            # Probe: hiredis answers a lone "*0" with [] only when it holds no partial message (a
            # partial one would swallow the probe and return something else, or nothing yet).
            reader.feed(b"*0\r\n")
            if gets() != [] or reader.has_data():
                raise ValueError
            # Exactness: outside the payloads, a request holds only "*", "$", digits and CRLF. Any
            # other header type byte ("+", "=", ">" push, "~" set, "%" map ...: hiredis turns some
            # of those into bytes or lists too) is one more byte left after deleting the structural
            # ones from buf than from the payloads alone. Byte counts add up over concatenation, so
            # no payload content can compensate (a count of "\r\n$" could be fooled that way).
            if len(buf.translate(None, _STRUCTURAL)) != len(payloads.translate(None, _STRUCTURAL)):
                raise ValueError
        except (ValueError, TypeError, _hiredis.ProtocolError):
            self._reader = _hiredis.Reader()
            return None
        if not all(out):  # "*0" is an empty request: skipped, like the reference parser does
            out = [msg for msg in out if msg]
        return out


class NativeRequestParser(_AcceleratedRequestParser):
    """The C fast path (kvserver._respfast) for complete plain buffers, the reference parser otherwise.

    Same contract and behaviour as PythonRequestParser: _respfast.c says why every buffer it accepts
    is read the same way; everything else (a partial request, an inline command, anything unusual)
    goes to the reference parser whole. About 5x cheaper per request than the hiredis path, whose
    result has to be checked for exactness after the fact.
    """

    __slots__ = ("_max_args",)

    def __init__(self, limits: Limits | None = None) -> None:
        if _native_parse is None:
            raise RuntimeError("kvserver._respfast is not built (no C compiler at install time?)")
        super().__init__(limits)
        self._max_args = (limits or Limits()).max_multibulk_len

    def _fast(self, buf: bytes) -> list[list[bytes]] | None:
        if len(buf) > self._fast_max:
            return None
        return _native_parse(buf, self._max_args)


def RequestParser(
    limits: Limits | None = None, use_hiredis: bool | None = None, use_native: bool | None = None
) -> Any:
    """The best available request parser: the C fast path, else hiredis, else pure Python."""
    if use_native is None:
        use_native = HAVE_NATIVE
    if use_native:
        return NativeRequestParser(limits)
    if use_hiredis is None:
        use_hiredis = HAVE_HIREDIS
    return HiredisRequestParser(limits) if use_hiredis else PythonRequestParser(limits)


# ---------------------------------------------------------------------------------------------------
# Reply encoding
# ---------------------------------------------------------------------------------------------------

_OK = b"+OK\r\n"
_NULL2 = b"$-1\r\n"
_NULL3 = b"_\r\n"
_SMALL_INTS = [b":%d\r\n" % i for i in range(-1, 1024)]
# "$<n>\r\n" for n < len(BULK_HEADERS): reply encoders (here and the dispatcher's inline encoding)
# look the header up instead of formatting it.
BULK_HEADERS = [b"$%d\r\n" % i for i in range(1024)]


def format_double(x: float) -> bytes:
    """Redis 7's double formatting: shortest round-trip repr, integral values without ".0"."""
    if math.isinf(x):
        return b"inf" if x > 0 else b"-inf"
    if math.isnan(x):
        return b"nan"
    if x.is_integer() and abs(x) < 1e17:
        return b"%d" % int(x)
    return repr(x).encode()


def encode_reply(value: Any, protocol: int = 2) -> bytes:
    """Encode one handler result (kvserver.replies) for RESP2 or RESP3."""
    parts: list[bytes] = []
    _encode(value, protocol, parts)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _encode(value: Any, protocol: int, out: list[bytes]) -> None:
    t = type(value)
    if t is bytes:
        out.append(b"$%d\r\n%s\r\n" % (len(value), value))
    elif t is int:
        out.append(_SMALL_INTS[value + 1] if -1 <= value < 1023 else b":%d\r\n" % value)
    elif value is None:
        out.append(_NULL3 if protocol == 3 else _NULL2)
    elif t is SimpleString or isinstance(value, SimpleString):
        out.append(_OK if value == "OK" else b"+" + value.encode() + b"\r\n")
    elif t is list or t is tuple:
        out.append(b"*%d\r\n" % len(value))
        if len(value) > 2:
            # Arrays of bulk strings (LRANGE, MGET, KEYS ...) in one C-level pass; any other element
            # type makes the concatenation raise TypeError, and the general loop below takes over.
            try:
                out.append(
                    b"\r\n".join(
                        [
                            BULK_HEADERS[len(x)] + x
                            if len(x) < len(BULK_HEADERS)
                            else b"$%d\r\n%s" % (len(x), x)
                            for x in value
                        ]
                    )
                )
                out.append(b"\r\n")
                return
            except TypeError:
                pass
        for item in value:
            if type(item) is bytes:  # the common element (LRANGE, MGET ...): no call per element
                out.append(b"$%d\r\n%s\r\n" % (len(item), item))
            else:
                _encode(item, protocol, out)
    elif t is ErrorReply:
        out.append(b"-" + _one_line(value.message) + b"\r\n")
    elif t is bool:
        if protocol == 3:
            out.append(b"#t\r\n" if value else b"#f\r\n")
        else:
            out.append(b":1\r\n" if value else b":0\r\n")
    elif t is float:
        text = format_double(value)
        out.append(b",%s\r\n" % text if protocol == 3 else b"$%d\r\n%s\r\n" % (len(text), text))
    elif t is dict:
        out.append(b"%%%d\r\n" % len(value) if protocol == 3 else b"*%d\r\n" % (2 * len(value)))
        for k, v in value.items():
            _encode(k, protocol, out)
            _encode(v, protocol, out)
    elif t is set or t is frozenset:
        out.append(b"~%d\r\n" % len(value) if protocol == 3 else b"*%d\r\n" % len(value))
        for item in value:
            _encode(item, protocol, out)
    elif t is Verbatim:
        data = value.text.encode()
        if protocol == 3:
            out.append(b"=%d\r\n%s:%s\r\n" % (len(data) + 4, value.format.encode()[:3], data))
        else:
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    elif t is _NullArray:
        out.append(_NULL3 if protocol == 3 else b"*-1\r\n")
    elif t is str:  # a handler returned text: send it as a bulk string
        _encode(value.encode(), protocol, out)
    elif isinstance(value, bytes | bytearray | memoryview):
        _encode(bytes(value), protocol, out)
    elif isinstance(value, int):  # IntEnum and friends
        _encode(int(value), protocol, out)
    else:
        raise TypeError(f"cannot encode a {t.__name__} as a RESP reply")


def _one_line(message: str) -> bytes:
    # An error line must not contain CR/LF (Redis replaces them with spaces).
    return message.replace("\r", " ").replace("\n", " ").encode()


def encode_request(argv: list[bytes]) -> bytes:
    """`encode_command(*argv)` for a parsed request (a list of bytes): the append-only file's record.

    In C when kvserver._respfast is built (about a tenth of the Python version's time: the AOF's cost
    per write was a third of kvserver's SET throughput at `-P 16`); the same bytes either way."""
    if _native_encode is not None:
        encoded = _native_encode(argv)
        if encoded is not None:
            return encoded
    return encode_command(*argv)


def encode_command(*args: bytes | str | int | float) -> bytes:
    """A multibulk request, the way redis-cli and redis-benchmark send commands."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, bytes):
            b = a
        elif isinstance(a, str):
            b = a.encode()
        elif isinstance(a, float):
            b = format_double(a)
        else:
            b = str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------------
# Reply parsing (client side)
# ---------------------------------------------------------------------------------------------------


class _Incomplete(Exception):
    pass


_NEED_MORE = object()


class ReplyParser:
    """Decode RESP2/RESP3 replies (client side). Not thread-safe. Errors are returned as ErrorReply.

    Attribute types, push messages and verbatim strings are decoded to their payload (RESP3 `|`
    attributes are skipped; `>` push is returned as a list; `=` verbatim as bytes without "txt:").
    use_hiredis=True decodes with hiredis (several times faster, for benchmark drivers) with two
    differences: status replies come back as bytes (not SimpleString) and RESP3 sets as lists.
    The default (None or False) is the pure-Python decoder.
    """

    def __init__(self, use_hiredis: bool | None = None) -> None:
        self._buf = b""
        self._pos = 0
        self._reader: Any = None
        if use_hiredis:
            if _hiredis is None:
                raise RuntimeError("hiredis is not installed")
            self._reader = _hiredis.Reader(replyError=ErrorReply, notEnoughData=_NEED_MORE)

    def feed(self, data: bytes) -> None:
        if self._reader is not None:
            self._reader.feed(data)
            return
        self._buf = self._buf[self._pos :] + data
        self._pos = 0

    def replies(self) -> list[Any]:
        if self._reader is not None:
            return list(iter(self._reader.gets, _NEED_MORE))
        out = []
        while self._pos < len(self._buf):
            try:
                value, pos = self._parse(self._pos)
            except _Incomplete:
                break
            self._pos = pos
            out.append(value)
        return out

    def _line(self, pos: int) -> tuple[bytes, int]:
        crlf = self._buf.find(b"\r\n", pos)
        if crlf < 0:
            raise _Incomplete
        return self._buf[pos:crlf], crlf + 2

    def _parse(self, pos: int) -> tuple[Any, int]:
        buf = self._buf
        if pos >= len(buf):
            raise _Incomplete
        kind = buf[pos : pos + 1]
        line, pos = self._line(pos + 1)
        if kind == b"+":
            return SimpleString(line.decode()), pos
        if kind == b"-":
            return ErrorReply(line.decode(errors="replace")), pos
        if kind == b":":
            return int(line), pos
        if kind in (b"$", b"=", b"!"):
            size = int(line)
            if size < 0:
                return None, pos
            if pos + size + 2 > len(buf):
                raise _Incomplete
            data = buf[pos : pos + size]
            if kind == b"=":
                data = data[4:]
            elif kind == b"!":
                return ErrorReply(data.decode(errors="replace")), pos + size + 2
            return data, pos + size + 2
        if kind in (b"*", b"~", b">"):
            count = int(line)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return (set(items) if kind == b"~" else items), pos
        if kind in (b"%", b"|"):
            result = {}
            for _ in range(int(line)):
                k, pos = self._parse(pos)
                v, pos = self._parse(pos)
                result[k] = v
            if kind == b"|":  # an attribute precedes the real reply
                return self._parse(pos)
            return result, pos
        if kind == b"_":
            return None, pos
        if kind == b",":
            return float(line), pos
        if kind == b"#":
            return line == b"t", pos
        if kind == b"(":
            return int(line), pos
        raise ValueError(f"unknown RESP type byte {kind!r}")
