"""The sans-IO RESP codec: both request parsers (hiredis-accelerated and pure Python) behave the same."""

from __future__ import annotations

import itertools
import math
import os

import hiredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvserver.replies import NULL_ARRAY, ErrorReply, SimpleString, Verbatim
from kvserver.resp import (
    HAVE_NATIVE,
    HiredisRequestParser,
    Limits,
    NativeRequestParser,
    ProtocolError,
    PythonRequestParser,
    ReplyParser,
    encode_command,
    encode_reply,
    encode_request,
    format_double,
)

# The C fast path is optional at install time, but CI builds it: LIVEPATCH_REQUIRE_TOOLS=1 makes a
# missing one a failure (test_native_parser_is_built) instead of a silently smaller matrix.
PARSERS = [PythonRequestParser, HiredisRequestParser] + (
    [NativeRequestParser] if HAVE_NATIVE else []
)
ACCELERATED = PARSERS[1:]


def parse_all(parser_cls, data: bytes, limits: Limits | None = None, step: int | None = None):
    """Feed data (in steps of `step` bytes, or at once); return (commands, error reason or None)."""
    parser = parser_cls(limits)
    out: list[list[bytes]] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    try:
        for chunk in chunks:
            parser.feed(chunk)
            out.extend(parser.commands())
            if parser.pending_error is not None:
                return out, parser.pending_error.reason
    except ProtocolError as exc:
        return out, exc.reason
    return out, None


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_multibulk_and_inline_mixed(parser_cls):
    data = (
        encode_command("SET", "k", b"v\r\nwith crlf")
        + b"PING\r\n"
        + b"\r\n"  # a blank inline line is skipped
        + b"*0\r\n"  # an empty multibulk is skipped
        + b"*-1\r\n"
        + encode_command("GET", "k")
        + b"  echo   spaced\n"
    )
    expected = [[b"SET", b"k", b"v\r\nwith crlf"], [b"PING"], [b"GET", b"k"], [b"echo", b"spaced"]]
    assert parse_all(parser_cls, data) == (expected, None)
    # The same stream cut at every possible place gives the same commands.
    for step in (1, 2, 3, 7, 16):
        assert parse_all(parser_cls, data, step=step) == (expected, None)


@pytest.mark.parametrize("parser_cls", PARSERS)
@pytest.mark.parametrize(
    ("line", "args"),
    [
        (b'set a "b c"', [b"set", b"a", b"b c"]),
        (b"set a 'b c'", [b"set", b"a", b"b c"]),
        (b'echo "\\x41\\n\\"q\\""', [b"echo", b'A\n"q"']),
        (b"echo 'it\\'s'", [b"echo", b"it's"]),
        (b'echo ""', [b"echo", b""]),
        (b"\tping\t", [b"ping"]),
    ],
)
def test_inline_quoting(parser_cls, line, args):
    assert parse_all(parser_cls, line + b"\r\n") == ([args], None)


@pytest.mark.parametrize("parser_cls", PARSERS)
@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'set a "b\r\n', "unbalanced quotes in request"),
        (b'set a "b"c\r\n', "unbalanced quotes in request"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*01\r\n", "invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"*1\r\n:1\r\n", "expected '$', got ':'"),
        (b"*1\r\n$-1\r\n", "invalid bulk length"),
        (b"*1\r\n$abc\r\n", "invalid bulk length"),
        (b"*2\r\n$3\r\nGET\r\n*1\r\n", "expected '$', got '*'"),
    ],
)
def test_protocol_errors(parser_cls, data, reason):
    assert parse_all(parser_cls, data) == ([], reason)


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_commands_before_an_error_are_returned_first(parser_cls):
    data = encode_command("SET", "a", "1") + encode_command("GET", "a") + b"*1\r\n+x\r\n"
    commands, reason = parse_all(parser_cls, data)
    assert commands == [[b"SET", b"a", b"1"], [b"GET", b"a"]]
    assert reason == "expected '$', got '+'"


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_limits_are_checked_as_soon_as_the_header_arrives(parser_cls):
    limits = Limits(
        max_bulk_len=100, max_multibulk_len=10, max_inline_len=50, query_buffer_limit=1000
    )
    # Only the header of an oversized bulk: rejected without waiting for its payload.
    assert parse_all(parser_cls, b"*1\r\n$101\r\n", limits) == ([], "invalid bulk length")
    assert parse_all(parser_cls, b"*1\r\n$100\r\n", limits) == ([], None)
    assert parse_all(parser_cls, b"*11\r\n", limits) == ([], "invalid multibulk length")
    assert parse_all(parser_cls, b"x" * 51, limits) == ([], "too big inline request")
    assert parse_all(parser_cls, b"*1\r\n$" + b"1" * 60, limits) == (
        [],
        "too big bulk count string",
    )
    assert parse_all(parser_cls, b"*" + b"1" * 60, limits) == ([], "too big mbulk count string")
    # A request may be long as a whole, one value at a time.
    big = encode_command(*(["x" * 100] * 9))
    assert parse_all(parser_cls, big, limits, step=64) == ([[b"x" * 100] * 9], None)


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_query_buffer_limit(parser_cls):
    limits = Limits(max_bulk_len=10_000, query_buffer_limit=1000)
    data = b"*1\r\n$5000\r\n" + b"a" * 2000
    assert parse_all(parser_cls, data, limits, step=100) == ([], "query buffer limit exceeded")


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_large_value_in_many_reads(parser_cls):
    value = bytes(range(256)) * 4096  # 1 MiB, every byte value, CRLFs inside
    data = encode_command("SET", "big", value) + encode_command("PING")
    assert parse_all(parser_cls, data, step=65536) == ([[b"SET", b"big", value], [b"PING"]], None)


# ----------------------------------------------------------------------------------- properties
TOKENS = [
    b"*",
    b"$",
    b"+",
    b":",
    b"-",
    b"\r\n",
    b"\r",
    b"\n",
    b"0",
    b"1",
    b"2",
    b"3",
    b"-1",
    b"10",
    b">",  # RESP3 aggregate/element types: requests must not smuggle them past the fast path
    b"~",
    b"=",
    b"%",
    b"txt:",
    b"GET",
    b"PING",
    b" ",
    b'"',
    b"'",
    b"\\x41",
    b"\x00",
]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join)
valid_commands = st.lists(
    st.lists(st.binary(max_size=40), min_size=1, max_size=6), min_size=1, max_size=8
)
fuzz_settings = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


SMUGGLING = [
    # a RESP3 push / set / verbatim element after a request: hiredis alone would run it as SET k v
    b"*1\r\n$4\r\nPING\r\n>3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
    b"*1\r\n$4\r\nPING\r\n~3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
    b"*2\r\n$3\r\nGET\r\n=8\r\ntxt:abcd\r\n",
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n>1\r\n$1\r\nv\r\n",
    b"*2\r\n$4\r\nECHO\r\n$7\r\n\r\n$1\r\nx\r\n>1\r\n$1\r\nx\r\n",
]


@pytest.mark.parametrize("data", SMUGGLING)
@pytest.mark.parametrize("step", [None, 1, 7])
def test_resp3_elements_cannot_smuggle_a_command_past_the_fast_path(data, step):
    """Regression: hiredis accepted these as commands the reference parser refuses or reads otherwise."""
    reference = parse_all(PythonRequestParser, data, step=step)
    for parser_cls in ACCELERATED:
        assert parse_all(parser_cls, data, step=step) == reference
    assert [b"SET", b"k", b"v"] not in reference[0]


@fuzz_settings
@given(data=st.one_of(st.binary(max_size=200), token_soup), step=st.integers(1, 50))
def test_arbitrary_bytes_give_commands_or_a_protocol_error(data, step):
    limits = Limits(
        max_bulk_len=64, max_multibulk_len=16, max_inline_len=64, query_buffer_limit=256
    )
    results = []
    for parser_cls in PARSERS:
        for cut in (None, step):
            commands, reason = parse_all(parser_cls, data, limits, step=cut)
            for argv in commands:
                assert argv and all(type(a) is bytes for a in argv)
            results.append((commands, reason))
    # All parsers, whole or cut into pieces, agree on the commands and on the error.
    assert all(r == results[0] for r in results), results


@fuzz_settings
@given(commands=valid_commands, step=st.integers(1, 64))
def test_encode_command_round_trip(commands, step):
    data = b"".join(encode_command(*argv) for argv in commands)
    for parser_cls in PARSERS:
        assert parse_all(parser_cls, data) == (commands, None)
        assert parse_all(parser_cls, data, step=step) == (commands, None)


@given(argv=st.lists(st.binary(max_size=300), min_size=1, max_size=12))
def test_encode_request_is_encode_command(argv):
    """The AOF's encoder (C when built) writes exactly what the reference encoder writes."""
    assert encode_request(argv) == encode_command(*argv)
    if HAVE_NATIVE:
        from kvserver._respfast import encode_request as native

        assert native(argv) == encode_command(*argv)


@pytest.mark.skipif(not HAVE_NATIVE, reason="kvserver._respfast is not built")
def test_native_encoder_declines_what_it_does_not_handle():
    from kvserver._respfast import encode_request as native

    assert native([]) is None
    assert native((b"SET", b"k")) is None  # a tuple, not a list
    assert native([b"SET", "k"]) is None  # a str among the bytes
    assert native([b"SET", bytearray(b"k")]) is None
    # The fallback encodes what the C one declines.
    assert encode_request([b"SET", "k"]) == encode_command(b"SET", "k")  # type: ignore[list-item]
    big = b"x" * 1_000_003
    assert native([b"SET", b"k", big]) == encode_command(b"SET", b"k", big)


def test_native_parser_is_built():
    """The C fast path is optional for users; CI must build it, or its tests would not run there."""
    if not HAVE_NATIVE:
        msg = "kvserver._respfast is not built (no C compiler when livepatch was installed?)"
        if os.environ.get("LIVEPATCH_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    parser = NativeRequestParser(Limits())
    assert parser.parse(encode_command("SET", "k", b"v\r\n") + encode_command("GET", "k")) == [
        [b"SET", b"k", b"v\r\n"],
        [b"GET", b"k"],
    ]


# Edits that turn a canonical request into a near miss: what a fast path is most likely to misread.
NEAR_MISS_BYTES = [
    b"*",
    b"$",
    b"0",
    b"1",
    b"9",
    b"-",
    b"+",
    b" ",
    b"\r",
    b"\n",
    b">",
    b"~",
    b"=",
    b"x",
]


@fuzz_settings
@given(
    commands=valid_commands,
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["replace", "insert", "delete"]),
                  st.sampled_from(NEAR_MISS_BYTES)),
        max_size=3,
    ),
    cut=st.integers(0, 10_000),
)  # fmt: skip
def test_near_miss_requests_read_like_the_reference(commands, edits, cut):
    """Valid requests with a few bytes replaced, inserted or deleted, and possibly cut short: every
    accelerated parser returns exactly what the reference parser returns (commands and error)."""
    data = bytearray(b"".join(encode_command(*argv) for argv in commands))
    for at, how, byte in edits:
        at %= len(data) + 1
        if how == "replace" and at < len(data):
            data[at : at + 1] = byte
        elif how == "insert":
            data[at:at] = byte
        elif how == "delete":
            del data[at : at + 1]
    buf = bytes(data[: cut % (len(data) + 1)] if cut % 3 == 0 else data)
    # Default limits (the fast paths take buffers up to 64 KiB) and small ones (they step aside).
    for limits in (Limits(), Limits(max_bulk_len=16, max_multibulk_len=4, max_inline_len=64)):
        reference = parse_all(PythonRequestParser, buf, limits)
        for parser_cls in ACCELERATED:
            assert parse_all(parser_cls, buf, limits) == reference, parser_cls.__name__


# ------------------------------------------------------------------------------------- replies
def test_double_formatting_like_redis_7():
    assert format_double(3.0) == b"3"
    assert format_double(-0.5) == b"-0.5"
    assert format_double(1.5e300) == b"1.5e+300"
    assert format_double(0.1) == b"0.1"
    assert format_double(math.inf) == b"inf"
    assert format_double(-math.inf) == b"-inf"
    assert encode_reply(2.5, 2) == b"$3\r\n2.5\r\n"
    assert encode_reply(2.0, 3) == b",2\r\n"
    assert encode_reply(-math.inf, 3) == b",-inf\r\n"


def test_reply_encodings_resp2_and_resp3():
    assert encode_reply(SimpleString("OK")) == b"+OK\r\n"
    assert encode_reply(ErrorReply("ERR bad\r\nthing")) == b"-ERR bad  thing\r\n"
    assert encode_reply(None, 2) == b"$-1\r\n"
    assert encode_reply(None, 3) == b"_\r\n"
    assert encode_reply(NULL_ARRAY, 2) == b"*-1\r\n"
    assert encode_reply(NULL_ARRAY, 3) == b"_\r\n"
    assert encode_reply(True, 2) == b":1\r\n"
    assert encode_reply(True, 3) == b"#t\r\n"
    assert encode_reply({b"a": 1}, 2) == b"*2\r\n$1\r\na\r\n:1\r\n"
    assert encode_reply({b"a": 1}, 3) == b"%1\r\n$1\r\na\r\n:1\r\n"
    assert encode_reply({b"x"}, 3) == b"~1\r\n$1\r\nx\r\n"
    assert encode_reply(Verbatim("hi"), 3) == b"=6\r\ntxt:hi\r\n"
    assert encode_reply(Verbatim("hi"), 2) == b"$2\r\nhi\r\n"
    assert encode_reply(12345678901234) == b":12345678901234\r\n"


reply_values = st.recursive(
    st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.binary(max_size=30),
        st.none(),
        st.floats(allow_nan=False),
        st.booleans(),
        st.text(alphabet="abcXYZ 019", max_size=10).map(SimpleString),
        st.text(alphabet="abc ", max_size=10).map(lambda t: ErrorReply("ERR " + t)),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.binary(max_size=5), children, max_size=4),
    ),
    max_leaves=20,
)


def _expected(value, protocol):
    """What a client decodes from encode_reply(value, protocol)."""
    if isinstance(value, bool):
        return value if protocol == 3 else int(value)
    if isinstance(value, float):
        return value if protocol == 3 else format_double(value)
    if isinstance(value, list):
        return [_expected(v, protocol) for v in value]
    if isinstance(value, dict):
        if protocol == 3:
            return {k: _expected(v, protocol) for k, v in value.items()}
        flat = []
        for k, v in value.items():
            flat += [k, _expected(v, protocol)]
        return flat
    return value


def _status_as_bytes(value):
    if isinstance(value, SimpleString):
        return value.encode()
    if isinstance(value, list):
        return [_status_as_bytes(v) for v in value]
    if isinstance(value, dict):
        return {k: _status_as_bytes(v) for k, v in value.items()}
    return value


@fuzz_settings
@given(value=reply_values, protocol=st.sampled_from([2, 3]), step=st.integers(1, 40))
def test_reply_round_trip_through_our_parser_and_hiredis(value, protocol, step):
    data = encode_reply(value, protocol)
    parser = ReplyParser()
    decoded = []
    for i in range(0, len(data), step):
        parser.feed(data[i : i + step])
        decoded.extend(parser.replies())
    assert decoded == [_expected(value, protocol)]
    # The hiredis-backed decoder (for benchmark drivers) agrees, status replies being bytes there.
    fast = ReplyParser(use_hiredis=True)
    fast_decoded = []
    for i in range(0, len(data), step):
        fast.feed(data[i : i + step])
        fast_decoded.extend(fast.replies())
    assert fast_decoded == [_status_as_bytes(_expected(value, protocol))]
    # hiredis (what redis-py uses) reads the same bytes as one complete reply.
    need_more = object()
    reader = hiredis.Reader(
        replyError=lambda m: ErrorReply(m), protocolError=ValueError, notEnoughData=need_more
    )
    reader.feed(data)
    assert reader.gets() is not need_more
    assert reader.gets() is need_more


# ------------------------------------------------------------------------------ incremental feeding
def parse_pieces(parser_cls, pieces: list[bytes], limits: Limits | None = None):
    """Feed the pieces one parse() call each (the event loop's way); return (commands, error or None)."""
    parser = parser_cls(limits)
    out: list[list[bytes]] = []
    try:
        for piece in pieces:
            out.extend(parser.parse(piece))
            if parser.pending_error is not None:
                return out, parser.pending_error.reason
    except ProtocolError as exc:
        return out, exc.reason
    return out, None


def cut_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


STREAM = (
    encode_command("SET", "k", b"v\r\n$3\r\n*2\r\n")  # payload bytes that look like headers
    + b"PING\r\n"
    + b"*0\r\n"
    + encode_command("MSET", *[f"a{i}" for i in range(12)])
    + b'set q "x y"\n'
    + encode_command("GET", b"")
    + b"*1\r\n+bad\r\n"  # a protocol error at the end: the same one whatever the cuts
)


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_every_single_cut_and_byte_by_byte_give_the_same_requests(parser_cls):
    whole = parse_all(PythonRequestParser, STREAM)
    assert whole[1] == "expected '$', got '+'" and len(whole[0]) == 5
    for at in range(len(STREAM) + 1):
        assert parse_pieces(parser_cls, [STREAM[:at], STREAM[at:]]) == whole, at
    assert parse_pieces(parser_cls, [bytes([b]) for b in STREAM]) == whole


@fuzz_settings
@given(
    data=st.one_of(st.binary(max_size=200), token_soup),
    commands=valid_commands,
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    use_valid=st.booleans(),
)
def test_random_cuts_give_the_same_requests(data, commands, cuts, use_valid):
    """The same bytes split at random points, fed one parse() per piece: the commands and the error
    are those of the reference parser reading them whole."""
    if use_valid:
        data = b"".join(encode_command(*argv) for argv in commands)
    for limits in (None, Limits(max_bulk_len=64, max_multibulk_len=16, max_inline_len=64,
                                query_buffer_limit=256)):  # fmt: skip
        whole = parse_all(PythonRequestParser, data, limits)
        for parser_cls in PARSERS:
            assert parse_pieces(parser_cls, cut_at(data, cuts), limits) == whole, parser_cls


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_a_request_received_in_pieces_is_read_once(parser_cls, monkeypatch):
    """Regression (issue 10): each read re-parsed the pending request from its start, so a client
    trickling the arguments of a huge request made every read cost O(arguments so far). Count how
    often a length line is parsed: once per header, whatever the number of reads."""
    import kvserver.resp as resp

    calls = 0
    real = resp._parse_length

    def counting(line: bytes) -> int | None:
        nonlocal calls
        calls += 1
        return real(line)

    monkeypatch.setattr(resp, "_parse_length", counting)
    n = 2000
    parser = parser_cls(Limits())
    assert parser.parse(b"*%d\r\n" % n) == []
    element = b"$1\r\nx\r\n"
    for _ in range(n - 1):
        for piece in (element[:3], element[3:]):  # every element in two reads
            assert parser.parse(piece) == []
    assert parser.buffered() == len(b"*%d\r\n" % n) + (n - 1) * len(element)
    assert parser.parse(element) == [[b"x"] * n]
    assert calls == 1 + n  # the count line and each "$1" line, once
    assert parser.buffered() == 0


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_a_value_sent_a_byte_at_a_time_costs_about_its_size(parser_cls):
    """Regression (issue 10): each read was kept as its own bytes object until the value was
    complete, ~40 bytes of memory per byte for a client sending one byte per read."""
    import tracemalloc

    value = bytes(range(256)) * 160  # 40 KB, CRLFs inside
    data = encode_command("SET", "k", value)
    tracemalloc.start()
    try:
        parser = parser_cls(Limits())
        out = []
        for i in range(len(data) - 1):
            out += parser.parse(data[i : i + 1])
            if i == len(data) - 1000:
                held, _ = tracemalloc.get_traced_memory()
        assert out == []
        assert held < 3 * len(value), f"{held} bytes held for a {len(value)}-byte value"
    finally:
        tracemalloc.stop()
    assert parser.parse(data[-1:]) == [[b"SET", b"k", value]]


@pytest.mark.parametrize("parser_cls", PARSERS)
def test_small_reads_fed_together_still_take_the_fast_path_safely(parser_cls):
    """feed() joins small reads into a bytearray; the accelerated parsers take only bytes."""
    parser = parser_cls(Limits())
    data = encode_command("SET", "k", "v") + encode_command("GET", "k")
    for i in range(0, len(data), 5):
        parser.feed(data[i : i + 5])
    assert parser.commands() == [[b"SET", b"k", b"v"], [b"GET", b"k"]]
    assert parser.buffered() == 0
