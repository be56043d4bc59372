"""The codec under arbitrary and near-miss input (issue 11: "arbitrary bytes give messages or a
protocol error that closes only that client").

For any bytes, in the startup phase or after it, on the server side and the client side:
- the parser returns messages and then either None (needs more data) or one ProtocolViolation,
  never another exception and never an endless stream (drain() bounds it);
- cutting the same bytes at arbitrary points gives the same outcome, violation included;
- the server parser is exact: every message it accepts re-encodes to exactly the bytes it consumed,
  so nothing is skipped, guessed or repaired;
- memory is bounded: a parser waiting for more data holds at most one message of the size limit.
Near-miss input is a valid stream with one byte flipped, inserted or deleted, or cut short.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sqlserver.protocol import (
    PROTOCOL_3_0,
    BackendParser,
    FrontendParser,
    ProtocolViolation,
    StartupMessage,
    encode,
    encode_frontend,
)
from tests.sqlserver.codec_helpers import (
    backend_messages,
    drain,
    encode_stream,
    feed_in_pieces,
    frontend_streams,
    outcome,
)

STARTUP_BYTES = encode_frontend(StartupMessage(PROTOCOL_3_0, {"user": "u"}))
cuts = st.lists(st.integers(0, 400), max_size=8)


def typed_parser(max_message_size: int | None = None) -> FrontendParser:
    parser = FrontendParser() if max_message_size is None else FrontendParser(max_message_size)
    parser.feed(STARTUP_BYTES)
    assert parser.next() is not None
    return parser


def check_exact(data: bytes, startup: bool) -> list[Any]:
    """Parse data fed whole; every accepted message must re-encode to the bytes it used."""
    parser = FrontendParser() if startup else typed_parser()
    parser.feed(data)
    items: list[Any] = []
    while True:
        before = parser.buffered()
        try:
            msg = parser.next()
        except ProtocolViolation as e:
            items.append(e)
            return items
        if msg is None:
            return items
        consumed = data[len(data) - before : len(data) - parser.buffered()]
        # A startup packet naming a parameter twice keeps the last value, so it cannot re-encode
        # to the same bytes; its body holds 2 NULs per name/value pair and a terminator.
        pairs = (consumed[8:].count(b"\0") - 1) // 2
        if not (isinstance(msg, StartupMessage) and len(msg.params) < pairs):
            assert encode_frontend(msg) == consumed, (msg, consumed)
        items.append(msg)
        assert len(items) <= len(data)


def check_server_side(data: bytes, pieces: list[int], startup: bool) -> None:
    whole = check_exact(data, startup)
    parser = FrontendParser() if startup else typed_parser()
    assert outcome(feed_in_pieces(parser, data, pieces)) == outcome(whole)


def check_client_side(data: bytes, pieces: list[int]) -> None:
    parser = BackendParser()
    parser.feed(data)
    whole = drain(parser)
    assert outcome(feed_in_pieces(BackendParser(), data, pieces)) == outcome(whole)


# ------------------------------------------------------------------------------ arbitrary bytes
# deadline=None on every property: on a busy shared machine timing must not fail a test.
@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=300), cuts, st.booleans())
def test_arbitrary_bytes_to_the_server(data: bytes, pieces: list[int], startup: bool) -> None:
    check_server_side(data, pieces, startup)


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=300), cuts)
def test_arbitrary_bytes_to_the_client(data: bytes, pieces: list[int]) -> None:
    check_client_side(data, pieces)


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(b"QPBDECSHXdcfp"), st.binary(max_size=40)), min_size=1, max_size=6
    ),
    cuts,
)
def test_known_types_with_arbitrary_bodies(
    frames: list[tuple[int, bytes]], pieces: list[int]
) -> None:
    # Arbitrary bytes rarely form a valid header; these do, so the body parsers get exercised.
    data = b"".join(bytes([t]) + (len(body) + 4).to_bytes(4, "big") + body for t, body in frames)
    check_server_side(data, pieces, startup=False)


@settings(deadline=None)
@given(st.binary(max_size=200), st.integers(8, 64))
def test_a_waiting_parser_holds_at_most_one_message_of_the_limit(data: bytes, limit: int) -> None:
    parser = typed_parser(limit)
    parser.feed(data)
    result = drain(parser)
    if not result or not isinstance(result[-1], ProtocolViolation):
        assert parser.buffered() <= limit + 1  # the type byte is not counted by the length


# -------------------------------------------------------------------------------- near misses
mutations = st.sampled_from(["flip", "insert", "delete", "truncate"])


def mutate(data: bytes, kind: str, where: int, byte: int) -> bytes:
    if not data:
        return bytes([byte])
    i = where % len(data)
    if kind == "flip":
        return data[:i] + bytes([data[i] ^ (byte or 1)]) + data[i + 1 :]
    if kind == "insert":
        return data[:i] + bytes([byte]) + data[i:]
    if kind == "delete":
        return data[:i] + data[i + 1 :]
    return data[:i]


@settings(deadline=None, max_examples=300)
@given(frontend_streams, mutations, st.integers(0, 10**6), st.integers(0, 255), cuts)
def test_near_miss_client_streams(messages, kind, where, byte, pieces) -> None:
    data = mutate(encode_stream(messages), kind, where, byte)
    check_server_side(data, pieces, startup=True)


@settings(deadline=None, max_examples=300)
@given(st.lists(backend_messages, min_size=1, max_size=8), mutations, st.integers(0, 10**6),
       st.integers(0, 255), cuts)  # fmt: skip
def test_near_miss_server_streams(messages, kind, where, byte, pieces) -> None:
    data = mutate(b"".join(encode(m) for m in messages), kind, where, byte)
    check_client_side(data, pieces)


@settings(deadline=None)
@given(frontend_streams)
def test_a_truncated_stream_gives_a_prefix_of_the_messages(messages) -> None:
    data = encode_stream(messages)
    for end in range(0, len(data), max(1, len(data) // 40)):
        got = check_exact(data[:end], startup=True)
        assert got == messages[: len(got)]  # no violation, only fewer messages
