"""Test helpers for the PostgreSQL codec: message strategies and a fake link (STYLE.md §15).

FakeLink joins a client codec (encode_frontend + BackendParser) and a server codec (FrontendParser +
encode) through an in-memory byte pipe that can be cut at chosen points, the way h11's tests join
two Connections. drain() reads every message a parser can give, and records a ProtocolViolation as
the last item instead of raising it, so two runs can be compared outcome for outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

from sqlserver.protocol import (
    PROTOCOL_3_0,
    AuthenticationCleartextPassword,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    BackendParser,
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
    FrontendParser,
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
    ProtocolViolation,
    Query,
    ReadyForQuery,
    RowDescription,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
    encode,
    encode_frontend,
)

# Strings the wire can carry: UTF-8 encodable, no NUL.
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=20)
int32s = st.integers(-(2**31), 2**31 - 1)
uint32s = st.integers(0, 2**32 - 1)
int16s = st.integers(-(2**15), 2**15 - 1)
formats = st.sampled_from([0, 1])
values = st.one_of(st.none(), st.binary(max_size=24))
small = {"max_size": 6}

startup_messages = st.builds(
    StartupMessage,
    st.sampled_from([PROTOCOL_3_0, PROTOCOL_3_0 | 1, PROTOCOL_3_0 | 2]),
    st.dictionaries(texts.filter(bool), texts, max_size=4),
)
first_messages = st.one_of(
    startup_messages,
    st.builds(CancelRequest, int32s, int32s),
    st.just(SSLRequest()),
    st.just(GSSENCRequest()),
)
typed_frontend_messages = st.one_of(
    st.builds(Query, texts),
    st.builds(Parse, texts, texts, st.lists(uint32s, **small).map(tuple)),
    st.builds(
        Bind,
        texts,
        texts,
        st.lists(formats, max_size=1).map(tuple),
        st.lists(values, **small).map(tuple),
        st.lists(formats, **small).map(tuple),
    ),
    st.builds(Describe, st.sampled_from("SP"), texts),
    st.builds(Execute, texts, int32s),
    st.builds(Close, st.sampled_from("SP"), texts),
    st.just(Sync()),
    st.just(Flush()),
    st.just(Terminate()),
    st.builds(CopyData, st.binary(max_size=40)),
    st.just(CopyDone()),
    st.builds(CopyFail, texts),
    st.builds(PasswordMessage, st.binary(max_size=40)),
)
# A Bind whose format list has one code per parameter.
bind_per_param = st.lists(st.tuples(formats, values), **small).map(
    lambda pairs: Bind("p", "s", tuple(f for f, _ in pairs), tuple(v for _, v in pairs), (1,))
)
frontend_streams = st.tuples(
    startup_messages, st.lists(st.one_of(typed_frontend_messages, bind_per_param), max_size=8)
).map(lambda t: [t[0], *t[1]])

fields = st.builds(FieldDescription, texts, uint32s, int16s, uint32s, int16s, int32s, formats)
notice_kwargs: dict[str, Any] = {
    "severity": st.sampled_from(["ERROR", "FATAL", "NOTICE", "WARNING"]),
    "sqlstate": st.from_regex(r"[0-9A-Z]{5}", fullmatch=True),
    "message": texts,
    "detail": st.none() | texts,
    "hint": st.none() | texts,
    "position": st.none() | st.integers(1, 10**6),
    "extra": st.lists(st.tuples(st.sampled_from("WFLRsn"), texts), max_size=2).map(tuple),
}
backend_messages = st.one_of(
    st.just(AuthenticationOk()),
    st.just(AuthenticationCleartextPassword()),
    st.builds(AuthenticationMD5Password, st.binary(min_size=4, max_size=4)),
    st.builds(AuthenticationSASL, st.lists(texts.filter(bool), max_size=3).map(tuple)),
    st.builds(AuthenticationSASLContinue, st.binary(max_size=30)),
    st.builds(AuthenticationSASLFinal, st.binary(max_size=30)),
    st.builds(ParameterStatus, texts, texts),
    st.builds(BackendKeyData, int32s, int32s),
    st.builds(ReadyForQuery, st.sampled_from("ITE")),
    st.builds(RowDescription, st.lists(fields, max_size=4).map(tuple)),
    st.builds(DataRow, st.lists(values, **small).map(tuple)),
    st.builds(CommandComplete, texts),
    st.just(EmptyQueryResponse()),
    st.builds(ErrorResponse, **notice_kwargs),
    st.builds(NoticeResponse, **notice_kwargs),
    st.just(ParseComplete()),
    st.just(BindComplete()),
    st.just(CloseComplete()),
    st.just(NoData()),
    st.builds(ParameterDescription, st.lists(uint32s, **small).map(tuple)),
    st.just(PortalSuspended()),
    st.builds(CopyInResponse, formats, st.lists(formats, **small).map(tuple)),
    st.builds(CopyOutResponse, formats, st.lists(formats, **small).map(tuple)),
    st.builds(CopyData, st.binary(max_size=40)),
    st.just(CopyDone()),
    st.builds(NegotiateProtocolVersion, st.integers(0, 5), st.lists(texts, max_size=3).map(tuple)),
    st.builds(NotificationResponse, int32s, texts, texts),
)


def encode_stream(messages: Sequence[Any]) -> bytes:
    return b"".join(encode_frontend(m) for m in messages)


def drain(parser: FrontendParser | BackendParser, limit: int = 100_000) -> list[Any]:
    """Every message the parser can give now; a ProtocolViolation ends the list as its last item."""
    out: list[Any] = []
    for _ in range(limit):
        try:
            msg = parser.next()
        except ProtocolViolation as e:
            out.append(e)
            return out
        if msg is None:
            return out
        out.append(msg)
    raise AssertionError(f"parser gave more than {limit} messages: it does not advance")


def feed_in_pieces(
    parser: FrontendParser | BackendParser, data: bytes, cuts: Sequence[int]
) -> list[Any]:
    """Feed data cut at the given offsets, draining after each piece, as a server loop does."""
    out: list[Any] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        parser.feed(data[start:cut])
        start = max(start, cut)
        out += drain(parser)
        if out and isinstance(out[-1], ProtocolViolation):
            break
    return out


def outcome(items: list[Any]) -> list[Any]:
    """Comparable form of a drain() result (a violation compares by its message)."""
    return [("violation", i.message) if isinstance(i, ProtocolViolation) else i for i in items]


class FakeLink:
    """A client codec and a server codec joined by an in-memory pipe."""

    def __init__(self) -> None:
        self.server = FrontendParser()
        self.client = BackendParser()

    def client_sends(self, messages: Sequence[Any], cuts: Sequence[int] = ()) -> list[Any]:
        """What the server parses from these client messages, delivered cut at `cuts`."""
        return feed_in_pieces(self.server, encode_stream(messages), cuts)

    def server_sends(self, messages: Sequence[Any], cuts: Sequence[int] = ()) -> list[Any]:
        """What the client parses from these server messages, delivered cut at `cuts`."""
        return feed_in_pieces(self.client, b"".join(encode(m) for m in messages), cuts)
