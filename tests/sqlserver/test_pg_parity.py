"""sqlserver and the real PostgreSQL 15 asked the same thing by psycopg: the same result types and the
same bytes on the wire (text and binary), for what users hit -- integer primary keys (int2/int4/int8,
serial) and numeric columns (declared scale, sums of decimals)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lpbench.conftest import postgres_port  # noqa: F401  (the real PostgreSQL 15, a fixture)
from tests.sqlserver.conftest import SqlProcess

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.timeout(120)

SCHEMA = [
    "drop table if exists parity_k2, parity_k4, parity_k8, parity_s, parity_m",
    "create table parity_k2 (id smallint primary key, v text)",
    "create table parity_k4 (id int primary key, v text)",
    "create table parity_k8 (id bigint primary key, v text)",
    "create table parity_s (id serial primary key, v text)",
    "create table parity_m (id int primary key, price numeric(10,2), ratio numeric)",
    "insert into parity_k2 values (1, 'a'), (2, 'b')",
    "insert into parity_k4 values (1, 'a'), (2, 'b')",
    "insert into parity_k8 values (1, 'a'), (2, 'b')",
    "insert into parity_s (v) values ('a'), ('b')",
    "insert into parity_m values (1, 1.5, 0.1), (2, 0.1, 0.2), (3, 12345678.9, 0.25)",
]

QUERIES = [
    "select id, v from parity_k2 order by id",
    "select id, v from parity_k4 order by id",
    "select id, v from parity_k8 order by id",
    "select * from parity_s order by id",
    "select id, price, ratio from parity_m order by id",
    "select price as p from parity_m where id = 1",
    "select sum(ratio) from parity_m",  # 0.1 + 0.2 + 0.25 in doubles is 0.55000000000000004
    # LIKE is case-sensitive, ILIKE is not (SQLite's LIKE ignored case: CH-benCHmark Q2/Q16/Q19 differed)
    "select 'aB' like '%b', 'aB' like '%B', 'aB' not like 'A%', 'aB' ilike 'A%b'",
    "select v from parity_k4 where v like 'A%' order by id",
    "select v from parity_k4 where v ilike 'A%' order by id",
]


def _create(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        for sql in SCHEMA:
            c.execute(sql)
    return dsn


def _answers(dsn: str, binary: bool) -> list[tuple[list[int], list[list[bytes | None]]]]:
    """Per query: the result type OIDs and every value's bytes as the server sent them."""
    out = []
    with psycopg.connect(dsn, autocommit=True) as c:
        for sql in QUERIES:
            cur = c.cursor(binary=binary)
            cur.execute(sql)
            res = cur.pgresult
            assert res is not None and cur.description is not None
            types = [d.type_code for d in cur.description]
            rows = [[res.get_value(r, f) for f in range(res.nfields)] for r in range(res.ntuples)]
            out.append((types, rows))
    return out


@pytest.fixture(scope="module")
def sqlserver(tmp_path_factory) -> Iterator[SqlProcess]:
    tmp: Path = tmp_path_factory.mktemp("parity")
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
def test_same_types_and_bytes_as_postgresql(postgres_dsn, sqlserver, binary):
    theirs = _answers(postgres_dsn, binary)
    ours = _answers(sqlserver.dsn, binary)
    for sql, want, got in zip(QUERIES, theirs, ours, strict=True):
        assert got == want, sql


def test_integer_primary_keys_keep_their_width_in_the_catalog(sqlserver):
    """What psql's \\d shows: the declared type, not int8 for every integer primary key."""
    with psycopg.connect(sqlserver.dsn, autocommit=True) as c:
        got = c.execute(
            "select c.relname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
            "join pg_class c on c.oid = a.attrelid where a.attname = 'id' "
            "and c.relname like 'parity_k%' order by c.relname"
        ).fetchall()
    assert got == [("parity_k2", "smallint"), ("parity_k4", "integer"), ("parity_k8", "bigint")]


def _pipeline_with_a_failure(dsn: str) -> tuple[str, int]:
    """psycopg's pipeline outside a transaction block: two INSERTs then Sync, the second a duplicate.
    Returns the error's SQLSTATE and how many rows are left."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("drop table if exists parity_p")
        c.execute("create table parity_p (k int primary key)")
        sqlstate = ""
        try:
            with c.pipeline():
                c.execute("insert into parity_p values (%s)", (1,))
                c.execute("insert into parity_p values (%s)", (1,))
        except psycopg.Error as e:
            sqlstate = e.sqlstate or ""
        return sqlstate, int(c.execute("select count(*) from parity_p").fetchone()[0])


def test_executes_up_to_sync_are_one_implicit_transaction(postgres_dsn, sqlserver):
    """An error rolls back the earlier statements of the same Sync, as PostgreSQL does."""
    theirs = _pipeline_with_a_failure(postgres_dsn)
    assert theirs == ("23505", 0)
    assert _pipeline_with_a_failure(sqlserver.dsn) == theirs


def test_an_implicit_transaction_is_committed_at_sync(sqlserver):
    with psycopg.connect(sqlserver.dsn, autocommit=True) as c:
        c.execute("drop table if exists parity_q")
        c.execute("create table parity_q (k int primary key)")
        with c.pipeline():
            for k in range(5):
                c.execute("insert into parity_q values (%s)", (k,))
        with psycopg.connect(sqlserver.dsn, autocommit=True) as other:  # sees the commit
            assert other.execute("select count(*) from parity_q").fetchone()[0] == 5
        c.execute("insert into parity_q values (%s)", (9,))  # and the connection goes on
        assert c.execute("select count(*) from parity_q").fetchone()[0] == 6
