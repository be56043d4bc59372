"""EXTRACT(field FROM ...) and ascii() on sqlserver and on the real PostgreSQL 15, asked the same thing by
psycopg in text and binary: the same result types (numeric for EXTRACT, as PostgreSQL 14+), names, values
and errors (SQLSTATE). CH-benCHmark's Q5 and Q7-Q10 need them (tests/lpbench/test_sql_olap.py)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.lpbench.conftest import postgres_port  # noqa: F401  (the real PostgreSQL 15, a fixture)
from tests.sqlserver.conftest import SqlProcess

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.timeout(120)

FIELDS = [
    "year", "month", "day", "hour", "minute", "second", "epoch", "dow", "doy", "isodow", "week",
    "isoyear", "quarter", "decade", "century", "millennium", "milliseconds", "microseconds", "julian",
]  # fmt: skip
DATE_FIELDS = [
    f for f in FIELDS if f not in ("hour", "minute", "second", "milliseconds", "microseconds")
]

SCHEMA = [
    "drop table if exists parity_t",
    "create table parity_t (id int primary key, ts timestamp, d date, tz timestamptz)",
    # a leap day, a Sunday, an ISO week of the previous year, a fraction, an offset, before 1970
    "insert into parity_t values "
    "(1, '2020-02-29 23:59:58.5', '2020-02-29', '2020-02-29 23:59:58+02'), "
    "(2, '2021-01-03 00:00:00', '2021-01-03', '2021-01-03 00:00:00+00'), "
    "(3, '1969-12-31 12:34:56.123456', '1969-12-31', '1999-12-31 23:00:00-05:30'), "
    "(4, NULL, NULL, NULL)",
]
# bound by the client (text and binary parameters): what drivers store
BOUND = (5, dt.datetime(2026, 12, 2, 17, 5, 9, 250000), dt.date(2026, 12, 2))

QUERIES = [
    *(f"select id, extract({f} from ts) from parity_t order by id" for f in FIELDS),
    *(f"select id, extract({f} from d) from parity_t order by id" for f in DATE_FIELDS),
    *(f"select id, extract({f} from tz) from parity_t where id < 5 order by id" for f in FIELDS),
    "select extract(year from timestamp '2020-05-06 07:08:09.5'), "
    "extract(second from timestamp '2020-05-06 07:08:09.5'), extract(epoch from date '2020-01-01')",
    "select EXTRACT(YEAR FROM ts) AS l_year, count(*) from parity_t group by l_year order by l_year",
    "select id from parity_t where extract(year from ts) = 2020 and extract(month from d) = 2",
    "select extract(year from ts) / 7, sum(extract(day from d)) from parity_t where id = 2 group by 1",
    "select ascii('A'), ascii('abc'), ascii(''), ascii(NULL), ascii('é'), ascii(substring('CA' from 1 for 1))",
]
ERRORS = [
    "select extract(hour from d) from parity_t",  # 0A000: not for a date
    "select extract(fortnight from ts) from parity_t",  # 22023: no such unit
]


def _close(a: object, b: object) -> bool:
    """Equal, or (numeric from a float on sqlserver: 15 significant digits, extract.py) equal to 14."""
    if isinstance(a, Decimal) and isinstance(b, Decimal):
        return a == b or math.isclose(float(a), float(b), rel_tol=1e-14)
    return a == b


def _create(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        for sql in SCHEMA:
            c.execute(sql)
        c.execute("insert into parity_t (id, ts, d) values (%s, %s, %s)", BOUND)
        c.execute(
            "insert into parity_t (id, ts, d) values (%s, %s, %s)",
            (6, *BOUND[1:]),
            binary=True,
        )
    return dsn


def _answers(dsn: str, binary: bool) -> list[tuple[list[int], list[str], list[tuple[object, ...]]]]:
    out = []
    with psycopg.connect(dsn, autocommit=True) as c:
        for sql in QUERIES:
            cur = c.cursor(binary=binary)
            cur.execute(sql)
            assert cur.description is not None
            out.append(
                (
                    [d.type_code for d in cur.description],
                    [d.name for d in cur.description],
                    cur.fetchall(),
                )
            )
    return out


@pytest.fixture(scope="module")
def sqlserver(tmp_path_factory) -> Iterator[SqlProcess]:
    tmp: Path = tmp_path_factory.mktemp("parity-extract")
    srv = SqlProcess(["--dir", str(tmp / "data")], tmp)
    try:
        _create(srv.dsn)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def postgres_dsn(postgres_port) -> str:  # noqa: F811
    return _create(f"host=127.0.0.1 port={postgres_port} user=postgres dbname=postgres")


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_extract_and_ascii_answer_as_postgresql(postgres_dsn, sqlserver, binary):
    theirs = _answers(postgres_dsn, binary)
    ours = _answers(sqlserver.dsn, binary)
    for sql, (want_t, want_n, want_rows), (got_t, got_n, got_rows) in zip(
        QUERIES, theirs, ours, strict=True
    ):
        assert (got_t, got_n) == (want_t, want_n), sql
        assert len(got_rows) == len(want_rows), sql
        for want, got in zip(want_rows, got_rows, strict=True):
            assert all(_close(g, w) for g, w in zip(got, want, strict=True)), (sql, got, want)


@pytest.mark.parametrize("sql", ERRORS)
def test_extract_errors_have_postgresql_sqlstates(postgres_dsn, sqlserver, sql):
    states = []
    for dsn in (postgres_dsn, sqlserver.dsn):
        with psycopg.connect(dsn, autocommit=True) as c:
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql).fetchall()
            states.append(e.value.sqlstate)
    assert states[1] == states[0]
