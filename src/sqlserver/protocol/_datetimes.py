"""date, time, timestamp and timestamptz: ISO text (DateStyle ISO, TimeZone UTC) and binary.

Binary (integer_datetimes on): date is int32 days since 2000-01-01; time is int64 microseconds since
midnight; timestamp and timestamptz are int64 microseconds since 2000-01-01 00:00:00 (UTC for
timestamptz). 'infinity' / '-infinity' are INT32/INT64 max/min on the wire.

Python values: datetime.date, datetime.time, naive datetime.datetime (timestamp), aware UTC
datetime.datetime (timestamptz). Python cannot hold infinity or years outside 1..9999: 'infinity'
and '-infinity' are the sentinels DATE_INFINITY / DATE_NEG_INFINITY (InfiniteDate, a date subclass
equal to date.max / date.min, the values asyncpg uses) and TIMESTAMP_INFINITY, ... (InfiniteDatetime).
Only those instances encode as infinity, so a real 0001-01-01 or 9999-12-31 stays a date; any other
value outside Python's range raises 22008. The session's TimeZone is UTC: timestamptz text without an
offset is read as UTC, a naive datetime sent as timestamptz is taken as UTC, and timestamp input
ignores an offset, as PostgreSQL does.
"""

from __future__ import annotations

import datetime as dt
import re
import struct
from typing import Any

from sqlserver.protocol._scalars import check_size
from sqlserver.protocol.errors import DATETIME_FIELD_OVERFLOW, INVALID_DATETIME_FORMAT, PgError

UTC = dt.UTC
EPOCH_DATE = dt.date(2000, 1, 1)
EPOCH = dt.datetime(2000, 1, 1)
EPOCH_ORDINAL = EPOCH_DATE.toordinal()
INT32_MAX, INT32_MIN = 2**31 - 1, -(2**31)
INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)
_I32 = struct.Struct("!i")
_I64 = struct.Struct("!q")


class InfiniteDate(dt.date):
    """date 'infinity' (equal to date.max) or '-infinity' (equal to date.min)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DATE_INFINITY" if self.year > 1 else "DATE_NEG_INFINITY"


class InfiniteDatetime(dt.datetime):
    """timestamp(tz) 'infinity' (equal to datetime.max) or '-infinity' (equal to datetime.min)."""

    __slots__ = ()

    def __repr__(self) -> str:
        name = "TIMESTAMPTZ" if self.tzinfo is not None else "TIMESTAMP"
        return f"{name}_INFINITY" if self.year > 1 else f"{name}_NEG_INFINITY"


DATE_INFINITY = InfiniteDate(9999, 12, 31)
DATE_NEG_INFINITY = InfiniteDate(1, 1, 1)
TIMESTAMP_INFINITY = InfiniteDatetime(9999, 12, 31, 23, 59, 59, 999999)
TIMESTAMP_NEG_INFINITY = InfiniteDatetime(1, 1, 1)
TIMESTAMPTZ_INFINITY = InfiniteDatetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
TIMESTAMPTZ_NEG_INFINITY = InfiniteDatetime(1, 1, 1, tzinfo=UTC)

_DATE = r"(\d{4,})-(\d{1,2})-(\d{1,2})"
_TIME = r"(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
_ZONE = r"\s*(Z|UTC|GMT|[+-]\d{1,2}(?::?\d{2}(?::?\d{2})?)?)"
_TS_RE = re.compile(rf"\s*{_DATE}(?:(?:\s+|T){_TIME})?(?:{_ZONE})?\s*", re.I)
_TIME_RE = re.compile(rf"\s*{_TIME}\s*")
_SPECIAL = {"infinity": 1, "+infinity": 1, "-infinity": -1}


def bad_format(type_name: str, data: bytes) -> PgError:
    text = data.decode("utf-8", "replace")
    return PgError(INVALID_DATETIME_FORMAT, f'invalid input syntax for type {type_name}: "{text}"')


def overflow(type_name: str, shown: object) -> PgError:
    return PgError(
        DATETIME_FIELD_OVERFLOW,
        f"{type_name} out of range: {shown}",
        hint="this server holds years 1 to 9999, 'infinity' and '-infinity'",
    )


def _micros(frac: str | None) -> tuple[int, int]:
    """Microseconds of a fraction string, and a carry of 1 microsecond when its 7th digit rounds up."""
    if not frac:
        return 0, 0
    return int((frac + "00000")[:6]), int(len(frac) > 6 and frac[6] >= "5")


def _parse(type_name: str, data: bytes, with_zone: bool) -> dt.datetime:
    text = data.decode("ascii", "replace").strip().lower()
    special = _SPECIAL.get(text)
    if special is not None:
        if with_zone:
            return TIMESTAMPTZ_INFINITY if special > 0 else TIMESTAMPTZ_NEG_INFINITY
        return TIMESTAMP_INFINITY if special > 0 else TIMESTAMP_NEG_INFINITY
    if text == "epoch":
        return dt.datetime(1970, 1, 1, tzinfo=UTC if with_zone else None)
    m = _TS_RE.fullmatch(data.decode("ascii", "replace"))
    if m is None:
        raise bad_format(type_name, data)
    y, mo, d, hh, mm, ss, frac, zone = m.groups()
    micro, carry = _micros(frac)
    try:
        value = dt.datetime(
            int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), micro
        )
        value += dt.timedelta(microseconds=carry)
    except (ValueError, OverflowError):
        raise overflow(type_name, f'"{data.decode("ascii", "replace").strip()}"') from None
    if not with_zone:
        return value
    offset = dt.timedelta(0)
    if zone and zone.upper() not in ("Z", "UTC", "GMT"):
        digits = zone[1:].replace(":", "")
        if len(digits) in (1, 3, 5):
            digits = "0" + digits
        h, mi, s = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
        if h > 15 or mi > 59 or s > 59:
            raise PgError(DATETIME_FIELD_OVERFLOW, f'time zone displacement out of range: "{zone}"')
        offset = dt.timedelta(hours=h, minutes=mi, seconds=s) * (-1 if zone[0] == "-" else 1)
    try:
        return (value - offset).replace(tzinfo=UTC)
    except OverflowError:
        raise overflow(type_name, f'"{data.decode("ascii", "replace").strip()}"') from None


def _format(value: dt.datetime) -> str:
    text = value.replace(tzinfo=None).isoformat(" ", "seconds")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text


# ---------------------------------------------------------------------------------------------- date
def date_from_text(data: bytes) -> dt.date:
    text = data.decode("ascii", "replace").strip().lower()
    if text in _SPECIAL:
        return DATE_INFINITY if _SPECIAL[text] > 0 else DATE_NEG_INFINITY
    if text == "epoch":
        return dt.date(1970, 1, 1)
    m = re.fullmatch(rf"\s*{_DATE}\s*", data.decode("ascii", "replace"))
    if m is None:
        raise bad_format("date", data)
    try:
        return dt.date(*map(int, m.groups()))
    except ValueError:
        raise overflow("date", f'"{text}"') from None


def _as_date(v: Any) -> dt.date:
    if isinstance(v, str | bytes):
        return date_from_text(v.encode() if isinstance(v, str) else v)
    if isinstance(v, dt.datetime):
        return v.date()
    return v


def date_to_text(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    d = _as_date(v)
    if type(d) is InfiniteDate:
        return b"infinity" if d.year > 1 else b"-infinity"
    return d.isoformat().encode()


def date_to_binary(v: Any) -> bytes:
    d = _as_date(v)
    if type(d) is InfiniteDate:
        return _I32.pack(INT32_MAX if d.year > 1 else INT32_MIN)
    return _I32.pack(d.toordinal() - EPOCH_ORDINAL)


def date_from_binary(data: bytes) -> dt.date:
    check_size("date", data, 4)
    days = _I32.unpack(data)[0]
    if days == INT32_MAX:
        return DATE_INFINITY
    if days == INT32_MIN:
        return DATE_NEG_INFINITY
    try:
        return dt.date.fromordinal(days + EPOCH_ORDINAL)
    except (ValueError, OverflowError):
        raise overflow("date", f"{days} days from 2000-01-01") from None


# ---------------------------------------------------------------------------------------------- time
def time_from_text(data: bytes) -> dt.time:
    m = _TIME_RE.fullmatch(data.decode("ascii", "replace"))
    if m is None:
        raise bad_format("time without time zone", data)
    hh, mm, ss, frac = m.groups()
    micro, carry = _micros(frac)
    try:
        value = dt.datetime.combine(EPOCH_DATE, dt.time(int(hh), int(mm), int(ss or 0), micro))
    except ValueError:
        raise overflow("time", f'"{data.decode().strip()}"') from None
    return (value + dt.timedelta(microseconds=carry)).time()


def _as_time(v: Any) -> dt.time:
    if isinstance(v, str | bytes):
        return time_from_text(v.encode() if isinstance(v, str) else v)
    return v


def time_to_text(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    t = _as_time(v)
    text = t.strftime("%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text.encode()


def time_to_binary(v: Any) -> bytes:
    t = _as_time(v)
    return _I64.pack(((t.hour * 60 + t.minute) * 60 + t.second) * 1_000_000 + t.microsecond)


def time_from_binary(data: bytes) -> dt.time:
    check_size("time", data, 8)
    micros = _I64.unpack(data)[0]
    if not 0 <= micros < 86_400_000_000:
        raise overflow("time", f"{micros} microseconds")
    return (EPOCH + dt.timedelta(microseconds=micros)).time()


# ------------------------------------------------------------------------------ timestamp(tz)
class TimestampCodec:
    def __init__(self, with_zone: bool) -> None:
        self.with_zone = with_zone
        self.name = "timestamp with time zone" if with_zone else "timestamp without time zone"
        self.max = TIMESTAMPTZ_INFINITY if with_zone else TIMESTAMP_INFINITY
        self.min = TIMESTAMPTZ_NEG_INFINITY if with_zone else TIMESTAMP_NEG_INFINITY

    def from_text(self, data: bytes) -> dt.datetime:
        return _parse(self.name, data, self.with_zone)

    def _coerce(self, v: Any) -> dt.datetime:
        if type(v) is InfiniteDatetime:
            return self.max if v.year > 1 else self.min
        if isinstance(v, str | bytes):
            v = self.from_text(v.encode() if isinstance(v, str) else v)
        elif not isinstance(v, dt.datetime) and isinstance(v, dt.date):
            v = dt.datetime(v.year, v.month, v.day)
        if self.with_zone:
            if v.tzinfo is None:
                return v.replace(tzinfo=UTC)
            return v.astimezone(UTC)
        return v.replace(tzinfo=None)

    def to_text(self, v: Any) -> bytes:
        if isinstance(v, str):
            return v.encode()
        v = self._coerce(v)
        if type(v) is InfiniteDatetime:
            return b"infinity" if v.year > 1 else b"-infinity"
        return (_format(v) + ("+00" if self.with_zone else "")).encode()

    def to_binary(self, v: Any) -> bytes:
        v = self._coerce(v)
        if type(v) is InfiniteDatetime:
            return _I64.pack(INT64_MAX if v.year > 1 else INT64_MIN)
        delta = v.replace(tzinfo=None) - EPOCH
        return _I64.pack((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)

    def from_binary(self, data: bytes) -> dt.datetime:
        check_size(self.name, data, 8)
        micros = _I64.unpack(data)[0]
        if micros == INT64_MAX:
            return self.max
        if micros == INT64_MIN:
            return self.min
        try:
            value = EPOCH + dt.timedelta(microseconds=micros)
        except OverflowError:
            raise overflow(self.name, f"{micros} microseconds from 2000-01-01") from None
        return value.replace(tzinfo=UTC) if self.with_zone else value
