"""PostgreSQL's EXTRACT(field FROM source) over the text SQLite stores dates and timestamps as.

rewrite.py turns `EXTRACT(field FROM x)` (and `date_part('field', x)`, which sqlglot parses the same
way) into `extract('field', x)`, a SQLite function that functions.py registers on every session's
connection and that calls `extract` here. SQLite keeps no column types, so the source's PostgreSQL
type is read off the stored text, which is what sqlserver itself wrote: 'YYYY-MM-DD' is a date,
'YYYY-MM-DD HH:MM:SS[.ffffff]' a timestamp, and the same with an offset ('+02', '+05:30') a
timestamptz, whose fields are taken in UTC, the only TimeZone sqlserver has (its epoch is absolute). A timestamptz
that a client bound in binary is stored in UTC without an offset, so it reads as a timestamp: its
fields are the same, and its timezone fields 0 (a real timestamp's too, where
PostgreSQL refuses them).

The result is a float: PostgreSQL 14+ answers numeric (infer.py types the column so), and numeric
arithmetic must not become SQLite's integer division (`extract(year FROM d) / 7`). Its text is what
results.py makes of any float given a numeric column: 15 significant digits, so `2020` for a year but
`1583298367.12346` for an epoch with microseconds, where PostgreSQL writes `1583298367.123456`, and
`5` where PostgreSQL writes a second as `5.000000` (equal as numbers).

Errors are PostgreSQL's: an unknown field 22023, a time field of a date 0A000, text that is no
date 22007. Concurrency: pure functions; the parse is cached (a scan extracts from the same few values).
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

from sqlserver.protocol.errors import (
    FEATURE_NOT_SUPPORTED,
    INVALID_DATETIME_FORMAT,
    INVALID_PARAMETER_VALUE,
    PgError,
)

# PostgreSQL's spellings of each field (src/backend/utils/adt/datetime.c's deltatktbl/datetktbl)
_ALIASES = {
    "microsecond": "microseconds", "microseconds": "microseconds", "us": "microseconds",
    "usec": "microseconds", "usecs": "microseconds", "useconds": "microseconds",
    "millisecond": "milliseconds", "milliseconds": "milliseconds", "ms": "milliseconds",
    "msec": "milliseconds", "msecs": "milliseconds", "mseconds": "milliseconds",
    "second": "second", "seconds": "second", "sec": "second", "secs": "second", "s": "second",
    "minute": "minute", "minutes": "minute", "min": "minute", "mins": "minute", "m": "minute",
    "hour": "hour", "hours": "hour", "hr": "hour", "hrs": "hour", "h": "hour",
    "day": "day", "days": "day", "d": "day",
    "week": "week", "weeks": "week", "w": "week",
    "month": "month", "months": "month", "mon": "month", "mons": "month",
    "quarter": "quarter", "qtr": "quarter",
    "year": "year", "years": "year", "yr": "year", "yrs": "year", "y": "year",
    "decade": "decade", "decades": "decade", "dec": "decade", "decs": "decade",
    "century": "century", "centuries": "century", "cent": "century", "c": "century",
    "millennium": "millennium", "millennia": "millennium", "mil": "millennium",
    "mils": "millennium", "millenniums": "millennium",
    "epoch": "epoch", "julian": "julian", "j": "julian",
    "dow": "dow", "isodow": "isodow", "doy": "doy", "isoyear": "isoyear",
    "timezone": "timezone", "timezone_hour": "timezone_hour", "timezone_minute": "timezone_minute",
}  # fmt: skip
_TIME_FIELDS = {"microseconds", "milliseconds", "second", "minute", "hour"}
_ZONE_FIELDS = {"timezone", "timezone_hour", "timezone_minute"}
_EPOCH = dt.datetime(1970, 1, 1)
_JULIAN_OFFSET = 1721425  # Julian day number of 0001-01-01 minus its proleptic Gregorian ordinal


def extract(field: str, value: object) -> float | None:
    """EXTRACT(field FROM value) as PostgreSQL 15 computes it; None for NULL; raises PgError."""
    if value is None:
        return None
    unit = _ALIASES.get(field.lower())
    parsed = _parse(str(value))
    kind = (
        "date"
        if isinstance(parsed, dt.date) and not isinstance(parsed, dt.datetime)
        else "timestamp with time zone"
        if isinstance(parsed, dt.datetime) and parsed.tzinfo is not None
        else "timestamp without time zone"
    )
    if unit is None:
        raise PgError(
            INVALID_PARAMETER_VALUE, f'unit "{field.lower()}" not recognized for type {kind}'
        )
    if kind == "date":
        if unit in _TIME_FIELDS or unit in _ZONE_FIELDS:
            raise PgError(
                FEATURE_NOT_SUPPORTED, f'unit "{field.lower()}" not supported for type date'
            )
        return float(_date_field(unit, parsed))
    assert isinstance(parsed, dt.datetime)
    if unit in _ZONE_FIELDS:
        return 0.0  # UTC's offset (a timestamp's too: PostgreSQL refuses, see above)
    if parsed.tzinfo is not None:
        if unit == "epoch":
            return parsed.timestamp()
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return _timestamp_field(unit, parsed)


@lru_cache(maxsize=4096)
def _parse(text: str) -> dt.date | dt.datetime:
    t = text.strip()
    try:
        if len(t) == 10:
            return dt.date.fromisoformat(t)
        return dt.datetime.fromisoformat(t)
    except ValueError:
        raise PgError(
            INVALID_DATETIME_FORMAT, f'invalid input syntax for type timestamp: "{text}"'
        ) from None


def _date_field(unit: str, d: dt.date) -> int:
    iso = d.isocalendar()
    if unit == "epoch":
        return (d.toordinal() - _EPOCH.toordinal()) * 86400
    if unit == "julian":
        return d.toordinal() + _JULIAN_OFFSET
    return {
        "day": d.day,
        "month": d.month,
        "year": d.year,
        "quarter": (d.month - 1) // 3 + 1,
        "week": iso.week,
        "isoyear": iso.year,
        "dow": d.isoweekday() % 7,
        "isodow": d.isoweekday(),
        "doy": d.timetuple().tm_yday,
        "decade": d.year // 10,
        "century": (d.year + 99) // 100,
        "millennium": (d.year + 999) // 1000,
    }[unit]


def _timestamp_field(unit: str, t: dt.datetime) -> float:
    seconds = t.second + t.microsecond / 1e6
    if unit == "second":
        return seconds
    if unit == "milliseconds":
        return t.second * 1000 + t.microsecond / 1000
    if unit == "microseconds":
        return float(t.second * 1_000_000 + t.microsecond)
    if unit == "minute":
        return float(t.minute)
    if unit == "hour":
        return float(t.hour)
    if unit == "epoch":
        return (t - _EPOCH).total_seconds()
    if unit == "julian":
        day = t.hour * 3600 + t.minute * 60 + seconds
        return t.toordinal() + _JULIAN_OFFSET + day / 86400
    return float(_date_field(unit, t.date()))
