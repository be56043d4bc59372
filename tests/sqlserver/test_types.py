"""Type codecs under hypothesis: round trips in both formats, canonical output, errors as PgError.

PostgreSQL's own encodings are checked in test_types_pg15.py; here every Python value of each type
must survive encode/decode in text and binary format, the two formats must agree, and arbitrary
bytes given to any decoder must give a value or a PgError, never another exception.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlserver.protocol import PgError, types
from sqlserver.protocol.types import (
    BOOL,
    BYTEA,
    DATE,
    DATE_INFINITY,
    FLOAT4,
    FLOAT8,
    INT2,
    INT4,
    INT4_ARRAY,
    INT8,
    JSON,
    JSONB,
    NUMERIC,
    OID,
    TEXT,
    TEXT_ARRAY,
    TIME,
    TIMESTAMP,
    TIMESTAMP_INFINITY,
    TIMESTAMPTZ,
    TIMESTAMPTZ_NEG_INFINITY,
    UUID,
    VARCHAR,
)

texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"))
UTC = dt.UTC


def both_formats(oid: int, value: Any) -> tuple[Any, Any]:
    """(text round trip, binary round trip), after checking each re-encodes to the same bytes."""
    text = types.encode_text(oid, value)
    binary = types.encode_binary(oid, value)
    from_text = types.decode_text(oid, text)
    from_binary = types.decode_binary(oid, binary)
    assert types.encode_text(oid, from_text) == text
    assert types.encode_binary(oid, from_binary) == binary
    return from_text, from_binary


# deadline=None on every property: on a busy shared machine timing must not fail a test.
@settings(deadline=None)
@given(st.booleans())
def test_bool(v: bool) -> None:
    assert both_formats(BOOL, v) == (v, v)


@pytest.mark.parametrize(
    ("oid", "bits", "signed"), [(INT2, 16, 1), (INT4, 32, 1), (INT8, 64, 1), (OID, 32, 0)]
)
@settings(deadline=None)
@given(data=st.data())
def test_integers_and_their_ranges(oid: int, bits: int, signed: int, data: st.DataObject) -> None:
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    v = data.draw(st.integers(lo, hi))
    assert both_formats(oid, v) == (v, v)
    outside = data.draw(st.integers(hi + 1, hi * 4) | st.integers(lo - hi * 4 - 1, lo - 1))
    with pytest.raises(PgError) as info:
        types.encode_binary(oid, outside)
    assert info.value.sqlstate == "22003"
    with pytest.raises(PgError) as info:
        types.decode_text(oid, str(outside).encode())
    assert info.value.sqlstate == "22003"


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or struct.pack("!d", a) == struct.pack("!d", b)


@settings(deadline=None)
@given(st.floats())
def test_float8_text_is_exact(v: float) -> None:
    from_text, from_binary = both_formats(FLOAT8, v)
    assert _same_float(from_text, v) and _same_float(from_binary, v)


@settings(deadline=None)
@given(st.floats(width=32))
def test_float4_text_is_exact(v: float) -> None:
    from_text, from_binary = both_formats(FLOAT4, v)
    assert _same_float(from_text, v) and _same_float(from_binary, v)


@settings(deadline=None)
@given(
    st.decimals(allow_nan=True, allow_infinity=True, places=None).filter(lambda d: not d.is_snan())
)
def test_numeric(v: Decimal) -> None:
    if v.is_finite() and (v.adjusted() > 1000 or v.as_tuple().exponent < -1000):  # type: ignore[operator]
        return  # far outside what a test needs; the limits have their own test
    from_text, from_binary = both_formats(NUMERIC, v)
    if v.is_nan():
        assert from_text.is_nan() and from_binary.is_nan()
        return
    assert from_text == v == from_binary
    # The scale (digits after the point) survives both formats.
    exponent = v.as_tuple().exponent
    if isinstance(exponent, int) and exponent <= 0:
        assert from_text.as_tuple().exponent == exponent == from_binary.as_tuple().exponent


def test_numeric_limits() -> None:
    with pytest.raises(PgError) as info:
        types.decode_text(NUMERIC, b"1e131072")
    assert info.value.sqlstate == "22003"
    assert types.decode_text(NUMERIC, b"1e131071") == Decimal("1e131071")
    with pytest.raises(PgError):
        types.decode_text(NUMERIC, b"-NaN")


@settings(deadline=None)
@given(texts)
def test_text_types(v: str) -> None:
    for oid in (TEXT, VARCHAR):
        assert both_formats(oid, v) == (v, v)


@settings(deadline=None)
@given(st.binary())
def test_bytea(v: bytes) -> None:
    assert both_formats(BYTEA, v) == (v, v)
    # Escape format, written independently: printable ASCII as is, \\ for a backslash, \ooo else.
    escaped = "".join(
        "\\\\" if b == 0x5C else chr(b) if 0x20 <= b < 0x7F else f"\\{b:03o}" for b in v
    )
    if not escaped.startswith("\\x"):
        assert types.decode_text(BYTEA, escaped.encode()) == v


@settings(deadline=None)
@given(st.dates())
def test_date(v: dt.date) -> None:
    assert both_formats(DATE, v) == (v, v)


@settings(deadline=None)
@given(st.times())
def test_time(v: dt.time) -> None:
    assert both_formats(TIME, v) == (v, v)


@settings(deadline=None)
@given(st.datetimes())
def test_timestamp(v: dt.datetime) -> None:
    assert both_formats(TIMESTAMP, v) == (v, v)


@settings(deadline=None)
@given(st.datetimes(timezones=st.timezones() | st.just(UTC)))
def test_timestamptz_is_the_same_instant_in_utc(v: dt.datetime) -> None:
    try:
        instant = v.astimezone(UTC)
    except OverflowError:
        return  # an instant outside Python's range once moved to UTC
    from_text, from_binary = both_formats(TIMESTAMPTZ, v)
    # Compared in UTC: Python never finds an ambiguous local time (a DST fold) equal across zones.
    assert from_text == instant == from_binary
    assert from_text.utcoffset() == dt.timedelta(0) == from_binary.utcoffset()


def test_infinity_sentinels_are_distinct_from_the_extreme_dates() -> None:
    assert types.encode_text(DATE, DATE_INFINITY) == b"infinity"
    assert types.encode_text(DATE, dt.date.max) == b"9999-12-31"
    assert types.encode_binary(TIMESTAMP, TIMESTAMP_INFINITY) == b"\x7f" + b"\xff" * 7
    assert types.encode_binary(TIMESTAMP, dt.datetime.max) != b"\x7f" + b"\xff" * 7
    assert types.decode_text(TIMESTAMPTZ, b"-infinity") is TIMESTAMPTZ_NEG_INFINITY
    assert types.encode_text(TIMESTAMPTZ, TIMESTAMP_INFINITY) == b"infinity"


@settings(deadline=None)
@given(st.uuids())
def test_uuid(v: Any) -> None:
    assert both_formats(UUID, v) == (v, v)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)


@settings(deadline=None)
@given(json_values)
def test_json_keeps_its_text_and_jsonb_normalises_it(v: Any) -> None:
    text = json.dumps(v, ensure_ascii=False)
    assert both_formats(JSON, text) == (text, text)
    normal = types.decode_text(JSONB, text.encode())
    assert json.loads(normal) == v
    assert types.decode_text(JSONB, normal.encode()) == normal  # idempotent
    assert both_formats(JSONB, normal) == (normal, normal)
    assert types.encode_binary(JSONB, normal)[:1] == b"\x01"


def test_json_input_is_validated() -> None:
    for oid in (JSON, JSONB):
        for bad in (b"{", b"NaN", b"[1,]", b"'x'"):
            with pytest.raises(PgError) as info:
                types.decode_text(oid, bad)
            assert info.value.sqlstate == "22P02"
    assert types.decode_text(JSON, b'"\\u0000"') == '"\\u0000"'  # json keeps its text
    with pytest.raises(PgError) as info:
        types.decode_text(JSONB, b'{"a": "x\\u0000"}')  # jsonb stores text, which has no NUL
    assert info.value.sqlstate == "22P05"
    assert types.decode_text(JSONB, b'"\\\\u0000"') == '"\\\\u0000"'  # an escaped backslash
    with pytest.raises(PgError) as info:
        types.decode_binary(JSONB, b"\x02{}")
    assert info.value.sqlstate == "22P03"


def rectangular(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    flat = st.lists(elements, max_size=6)
    matrix = st.integers(1, 3).flatmap(
        lambda n: st.lists(st.lists(elements, min_size=n, max_size=n), min_size=1, max_size=3)
    )
    return flat | matrix


@settings(deadline=None)
@given(rectangular(st.none() | st.integers(-(2**31), 2**31 - 1)))
def test_int4_arrays(v: list[Any]) -> None:
    assert both_formats(INT4_ARRAY, v) == (v, v)


@settings(deadline=None)
@given(
    rectangular(
        st.none() | texts | st.sampled_from(['"', "\\", "{}", "a,b", " x ", "NULL", "null", ""])
    )
)
def test_text_arrays_quote_what_needs_quoting(v: list[Any]) -> None:
    assert both_formats(TEXT_ARRAY, v) == (v, v)


@pytest.mark.parametrize(
    "bad", [b"", b"1,2", b"{1,2", b"{1,,2}", b"{{1},2}", b"{{1,2},{3}}", b"{1}x", b'{"a}']
)
def test_malformed_arrays_are_22p02(bad: bytes) -> None:
    with pytest.raises(PgError) as info:
        types.decode_text(INT4_ARRAY, bad)
    assert info.value.sqlstate == "22P02"


DECODABLE = sorted(types.CODECS)


@settings(deadline=None, max_examples=400)
@given(st.sampled_from(DECODABLE), st.binary(max_size=64), st.booleans())
def test_arbitrary_bytes_give_a_value_or_a_pg_error(oid: int, data: bytes, binary: bool) -> None:
    try:
        (types.decode_binary if binary else types.decode_text)(oid, data)
    except PgError:
        pass


@settings(deadline=None)
@given(st.sampled_from(DECODABLE), st.binary(max_size=64))
def test_binary_arrays_from_arbitrary_headers(oid: int, tail: bytes) -> None:
    # A plausible array header (1 dimension, the right element type) with an arbitrary rest.
    info = types.TYPES[oid]
    if info.category != "A" or not info.elem:
        return
    head = struct.pack("!iiIii", 1, 0, info.elem, len(tail) // 4, 1)
    try:
        types.decode_binary(oid, head + tail)
    except PgError:
        pass


def test_unknown_types_are_text_and_refuse_binary() -> None:
    assert types.decode_text(0, b"abc") == "abc"
    assert types.encode_text(99999, "abc") == b"abc"
    with pytest.raises(PgError) as info:
        types.decode_binary(99999, b"abc")
    assert info.value.sqlstate == "0A000"
    with pytest.raises(PgError) as info:
        types.decoder(INT4, 2)
    assert info.value.sqlstate == "22023"


def test_values_from_sqlite_are_coerced() -> None:
    assert types.encode_text(BOOL, 1) == b"t"
    assert types.encode_binary(INT4, "42") == b"\x00\x00\x00\x2a"
    assert types.encode_binary(DATE, "2024-01-02") == types.encode_binary(DATE, dt.date(2024, 1, 2))
    assert types.encode_text(NUMERIC, 1.1) == b"1.1"
    assert types.encode_text(TIMESTAMPTZ, "2024-01-01 00:00:00+00") == b"2024-01-01 00:00:00+00"


@pytest.mark.parametrize(
    ("name", "oid"),
    [("integer", INT4), ("INT", INT4), ("bigint", INT8), ("double precision", FLOAT8),
     ("character varying(20)", VARCHAR), ("numeric(10, 2)", NUMERIC), ("text[]", TEXT_ARRAY),
     ("pg_catalog.int4", INT4), ("timestamp(3) with time zone", TIMESTAMPTZ), ("boolean", BOOL)],
)  # fmt: skip
def test_type_names(name: str, oid: int) -> None:
    info = types.type_by_name(name)
    assert info is not None and info.oid == oid


def test_field_descriptions_carry_the_type_size() -> None:
    assert types.field_description("a", INT4).type_size == 4
    assert types.field_description("b", TEXT, format=1).type_size == -1
    assert types.field_description("c", 12345).type_size == -1
