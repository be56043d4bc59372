"""The PostgreSQL v3 codec: round trips through a fake link, the startup phase, limits, errors.

Arbitrary and near-miss input is in test_codec_fuzz.py; the public surface in test_codec_api.py.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlserver.protocol import (
    AUTH_OK,
    BIND_COMPLETE,
    CLOSE_COMPLETE,
    COPY_DONE,
    EMPTY_QUERY_RESPONSE,
    MAX_MESSAGE_SIZE,
    NO_DATA,
    PARSE_COMPLETE,
    PORTAL_SUSPENDED,
    PROTOCOL_3_0,
    READY_FAILED,
    READY_IDLE,
    READY_IN_TX,
    AuthenticationOk,
    BackendParser,
    Bind,
    BindComplete,
    CancelRequest,
    CloseComplete,
    CommandComplete,
    CopyData,
    CopyDone,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    Execute,
    FieldDescription,
    FrontendParser,
    GSSENCRequest,
    NegotiateProtocolVersion,
    NoData,
    ParseComplete,
    PgError,
    PortalSuspended,
    ProtocolViolation,
    Query,
    ReadyForQuery,
    RowDescription,
    SSLRequest,
    StartupMessage,
    Sync,
    command_complete,
    data_row,
    encode,
    encode_frontend,
    negotiation,
    parse_password,
    parse_sasl_initial,
    parse_sasl_response,
    password_message,
    ready_for_query,
    row_description,
    sasl_initial_response,
)
from tests.sqlserver.codec_helpers import (
    FakeLink,
    backend_messages,
    drain,
    encode_stream,
    frontend_streams,
    startup_messages,
)

STARTUP = StartupMessage(PROTOCOL_3_0, {"user": "postgres", "database": "db"})


def typed_parser() -> FrontendParser:
    """A server parser past the startup phase."""
    parser = FrontendParser()
    parser.feed(encode_frontend(STARTUP))
    assert parser.next() == STARTUP
    return parser


def violation(parser: FrontendParser | BackendParser, data: bytes) -> ProtocolViolation:
    parser.feed(data)
    with pytest.raises(ProtocolViolation) as info:
        while parser.next() is not None:
            pass
    err = info.value
    assert err.sqlstate == "08P01" and err.severity == "FATAL" and err.fatal
    # The parser stays broken: the connection must be closed, nothing more is read from it.
    with pytest.raises(ProtocolViolation):
        parser.next()
    return err


# ------------------------------------------------------------------------------ round trips
# deadline=None on every property: on a busy shared machine timing must not fail a test.
@settings(deadline=None)
@given(frontend_streams, st.lists(st.integers(0, 2000), max_size=6))
def test_client_messages_arrive_unchanged_however_the_bytes_are_cut(messages, cuts) -> None:
    assert FakeLink().client_sends(messages, cuts) == messages


@settings(deadline=None)
@given(st.lists(backend_messages, max_size=10), st.lists(st.integers(0, 2000), max_size=6))
def test_server_messages_arrive_unchanged_however_the_bytes_are_cut(messages, cuts) -> None:
    assert FakeLink().server_sends(messages, cuts) == messages


def test_every_cut_of_an_extended_query_batch_gives_the_same_messages() -> None:
    batch = [
        STARTUP,
        Bind("", "stmt1", (0,), (b"42",), (1,)),
        Execute("", 0),
        Sync(),
        Query("select 'x'"),
    ]
    data = encode_stream(batch)
    for cut in range(len(data) + 1):
        assert FakeLink().client_sends(batch, [cut]) == batch
    # Byte by byte, as the slowest network would deliver it.
    assert FakeLink().client_sends(batch, range(len(data))) == batch


def test_a_large_message_fed_in_small_pieces_is_parsed_once() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    parser = typed_parser()
    data = encode_frontend(CopyData(payload))
    got = []
    for i in range(0, len(data), 1000):
        parser.feed(data[i : i + 1000])
        got += drain(parser)
        assert parser.buffered() == min(i + 1000, len(data)) or got
    assert got == [CopyData(payload)]
    assert parser.buffered() == 0


# -------------------------------------------------------------------------- startup phase
def test_ssl_and_gssenc_requests_are_followed_by_a_startup_message() -> None:
    parser = FrontendParser()
    parser.feed(encode_frontend(SSLRequest()) + encode_frontend(GSSENCRequest()))
    assert parser.next() == SSLRequest()
    assert parser.in_startup
    assert parser.next() == GSSENCRequest()
    parser.feed(encode_frontend(STARTUP) + encode_frontend(Sync()))
    assert parser.next() == STARTUP
    assert not parser.in_startup
    assert parser.next() == Sync()
    assert parser.next() is None


def test_a_cancel_request_is_the_only_message_of_its_connection() -> None:
    parser = FrontendParser()
    parser.feed(encode_frontend(CancelRequest(1234, -99)))
    assert parser.next() == CancelRequest(1234, -99)
    assert parser.next() is None
    err = violation(parser, b"Q")
    assert "CancelRequest" in err.message


@settings(deadline=None)
@given(startup_messages)
def test_minor_versions_above_zero_are_negotiated_down(msg: StartupMessage) -> None:
    answer = negotiation(msg)
    if msg.minor == 0 and not any(k.startswith("_pq_.") for k in msg.params):
        assert answer is None
    else:
        assert answer is not None and answer.newest_minor == 0
        assert set(answer.unrecognized) == {k for k in msg.params if k.startswith("_pq_.")}


def test_protocol_3_2_with_an_option_gets_negotiate_protocol_version() -> None:
    msg = StartupMessage(PROTOCOL_3_0 | 2, {"user": "u", "_pq_.compression": "on"})
    parser = FrontendParser()
    parser.feed(encode_frontend(msg))
    assert parser.next() == msg
    assert negotiation(msg) == NegotiateProtocolVersion(0, ("_pq_.compression",))


@pytest.mark.parametrize("version", [(2, 0), (1, 0), (4, 0), (0, 3)])
def test_other_major_versions_are_refused(version: tuple[int, int]) -> None:
    code = version[0] << 16 | version[1]
    err = violation(FrontendParser(), encode_frontend(StartupMessage(code, {"user": "u"})))
    assert f"unsupported frontend protocol {version[0]}.{version[1]}" in err.message


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x00\x00\x00\x07abc", "invalid length of startup packet: 7"),
        (b"\x00\x01\x00\x00", "invalid length of startup packet: 65536"),
        (b"\xff\xff\xff\xff", "invalid length of startup packet: -1"),
        (b"\x00\x00\x00\x0c\x00\x03\x00\x00user", "expected terminator"),
        (b"\x00\x00\x00\x0d\x00\x03\x00\x00user\x00", "value of startup parameter 'user'"),
        (b"\x00\x00\x00\x0d\x00\x03\x00\x00\x00\x00\x00\x00\x00", "after its last field"),
        (b"\x00\x00\x00\x0c\x04\xd2\x16\x2f\x00\x00\x00\x00", "after its last field"),  # SSL + junk
        (b"\x00\x00\x00\x10\x00\x03\x00\x00\xff\xfe\x00x\x00\x00\x00\x00", "UTF-8"),
    ],
)
def test_bad_startup_packets_are_protocol_violations(data: bytes, words: str) -> None:
    assert words in violation(FrontendParser(), data).message


# ------------------------------------------------------------------------- typed messages
@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"!", "invalid message type '!'"),  # refused at its first byte, no waiting
        (b"\x00", "invalid message type 0x00"),
        (b"Q\x00\x00\x00\x03", "invalid message length 3"),
        (b"Q\xff\xff\xff\xfc", "invalid message length -4"),
        (b"d\x04\x00\x00\x01", f"invalid message length {0x04000001}"),  # just over 64 MiB
        (b"Q\x00\x00\x00\x08abcd", "not NUL-terminated"),
        (b"S\x00\x00\x00\x05x", "after its last field"),
        (b"Q\x00\x00\x00\x07\xc3\x28\x00", "not valid UTF-8"),
        (b"D\x00\x00\x00\x06X\x00", "invalid Describe message subtype 'X'"),
        (b"C\x00\x00\x00\x04", "empty Close message"),
        (b"E\x00\x00\x00\x07\x00\x00\x00", "row limit"),
        (b"B\x00\x00\x00\x0e\x00\x00\x00\x02\x00\x00\x00\x00\x00\x01", "2 parameter formats"),
        (
            b"B\x00\x00\x00\x10\x00\x00\x00\x00\x00\x01\x00\x00\x00\x09\x00\x00",
            "parameter length 9",
        ),
        (b"B\x00\x00\x00\x10\x00\x00\x00\x00\x00\x01\xff\xff\xff\xfe\x00\x00", "length -2"),
        (b"P\x00\x00\x00\x0b\x00\x00\x00\x05\x00\x00\x00", "5 parameter types run past"),
    ],
)
def test_bad_typed_messages_are_protocol_violations(data: bytes, words: str) -> None:
    assert words in violation(typed_parser(), data).message


def test_messages_before_a_violation_are_still_returned() -> None:
    parser = typed_parser()
    parser.feed(encode_frontend(Sync()) + encode_frontend(Query("select 1")) + b"!junk")
    assert parser.next() == Sync()
    assert parser.next() == Query("select 1")
    with pytest.raises(ProtocolViolation):
        parser.next()


def test_the_size_limit_is_a_parameter() -> None:
    parser = FrontendParser(max_message_size=100)
    parser.feed(encode_frontend(STARTUP))
    parser.next()
    # The limit applies to the length field, which counts itself but not the type byte.
    parser.feed(encode_frontend(CopyData(b"x" * 96)))
    assert parser.next() == CopyData(b"x" * 96)
    err = violation(parser, encode_frontend(CopyData(b"x" * 97))[:5])
    assert "invalid message length 101" in err.message and "4 to 100" in (err.hint or "")
    assert MAX_MESSAGE_SIZE == 64 * 1024 * 1024


def test_a_violation_becomes_a_fatal_error_response_the_client_reads() -> None:
    err = violation(typed_parser(), b"?")
    client = BackendParser()
    client.feed(encode(err.to_message()))
    msg = client.next()
    assert isinstance(msg, ErrorResponse)
    assert (msg.severity, msg.sqlstate, msg.message) == ("FATAL", "08P01", err.message)


def test_bind_carries_nulls_and_binary_values() -> None:
    bind = Bind("portal", "stmt", (1, 0), (b"\x00\x00\x00\x2a", None), (1,))
    parser = typed_parser()
    parser.feed(encode_frontend(bind))
    got = parser.next()
    assert got == bind
    assert isinstance(got, Bind) and type(got.params[0]) is bytes


def test_a_negative_execute_limit_is_kept_as_sent() -> None:
    parser = typed_parser()
    parser.feed(encode_frontend(Execute("", -1)))
    assert parser.next() == Execute("", -1)


# --------------------------------------------------------------------------- password messages
def test_sasl_initial_response_round_trip() -> None:
    msg = sasl_initial_response("SCRAM-SHA-256", b"n,,n=,r=abc")
    assert parse_sasl_initial(msg.data) == ("SCRAM-SHA-256", b"n,,n=,r=abc")
    no_data = b"SCRAM-SHA-256\x00\xff\xff\xff\xff"
    assert parse_sasl_initial(no_data) == ("SCRAM-SHA-256", b"")
    assert parse_sasl_response(b"c=biws,r=x,p=y") == b"c=biws,r=x,p=y"
    assert parse_password(password_message("s3cret").data) == "s3cret"


@pytest.mark.parametrize(
    "data",
    [b"SCRAM", b"SCRAM\x00\x00\x00", b"SCRAM\x00\x00\x00\x00\x05ab", b"SCRAM\x00\xff\xff\xff\xf0"],
)
def test_bad_sasl_initial_responses_are_violations(data: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        parse_sasl_initial(data)


def test_a_password_without_its_nul_is_a_violation() -> None:
    with pytest.raises(ProtocolViolation):
        parse_password(b"secret")


# ------------------------------------------------------------------------------ fast encoders
@settings(deadline=None)
@given(st.lists(st.none() | st.binary(max_size=300), max_size=20))
def test_data_row_is_what_encode_writes(values) -> None:
    assert data_row(values) == encode(DataRow(tuple(values)))


@settings(deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0")))
def test_command_complete_is_what_encode_writes(tag: str) -> None:
    assert command_complete(tag) == encode(CommandComplete(tag))
    assert command_complete(tag) == encode(CommandComplete(tag))  # the cached copy too


def test_constants_are_what_encode_writes() -> None:
    assert READY_IDLE == encode(ReadyForQuery("I")) == ready_for_query("I")
    assert READY_IN_TX == encode(ReadyForQuery("T")) == ready_for_query("T")
    assert READY_FAILED == encode(ReadyForQuery("E")) == ready_for_query("E")
    pairs = [
        (BIND_COMPLETE, BindComplete()),
        (PARSE_COMPLETE, ParseComplete()),
        (CLOSE_COMPLETE, CloseComplete()),
        (NO_DATA, NoData()),
        (PORTAL_SUSPENDED, PortalSuspended()),
        (EMPTY_QUERY_RESPONSE, EmptyQueryResponse()),
        (COPY_DONE, CopyDone()),
        (AUTH_OK, AuthenticationOk()),
    ]
    for constant, msg in pairs:
        parser = BackendParser()
        parser.feed(constant)
        assert parser.next() == msg


def test_row_description_is_what_encode_writes() -> None:
    fields = (FieldDescription("aid", 16384, 1, 23, 4, -1, 1), FieldDescription("x"))
    assert row_description(fields) == encode(RowDescription(fields))


def test_encoders_refuse_what_the_wire_cannot_carry() -> None:
    with pytest.raises(ValueError, match="NUL"):
        encode(CommandComplete("a\0b"))
    with pytest.raises(ValueError, match="NUL"):
        encode_frontend(Query("select '\0'"))
    with pytest.raises(ValueError):
        ReadyForQuery("X")
    with pytest.raises(TypeError):
        encode(Query("not a backend message"))  # type: ignore[arg-type]


def test_pg_error_carries_its_sqlstate_to_the_error_response() -> None:
    err = PgError("23505", "duplicate key", detail="Key (id)=(1) exists.", hint="h", position=7)
    msg = err.to_message()
    assert msg == ErrorResponse("ERROR", "23505", "duplicate key", "Key (id)=(1) exists.", "h", 7)
    assert not err.fatal
    client = BackendParser()
    client.feed(encode(msg))
    assert client.next() == msg
    with pytest.raises(ValueError):
        PgError("2350", "bad sqlstate")
