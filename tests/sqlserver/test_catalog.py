"""The emulated pg_catalog and information_schema, asked by the real clients that rely on them:
psql's describe commands, asyncpg (binary types, prepared statements), psycopg's type lookups,
pgbench's partition probe. One server process (thread-per-connection) for the module."""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import re
import subprocess
import uuid

import psycopg
import pytest

from tests.conftest import require_tool
from tests.sqlserver.conftest import SqlProcess, pg_env

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def server(request, tmp_path_factory) -> SqlProcess:
    tmp = tmp_path_factory.mktemp("catalog")
    srv = SqlProcess(["--dir", str(tmp / "data"), "--no-livepatch"], tmp)
    request.addfinalizer(srv.stop)
    with psycopg.connect(srv.dsn, autocommit=True) as c:
        c.execute(
            "create table items (id serial primary key, name varchar(20) not null, "
            "price numeric(10,2) default 0, added timestamptz default now(), tags text)"
        )
        c.execute("create index items_name on items (name)")
        c.execute("create table plain (a int not null, b text)")
        c.execute("alter table plain add primary key (a)")
    return srv


def psql(server: SqlProcess, command: str) -> str:
    exe = require_tool("psql")
    done = subprocess.run(
        [exe, *server.pg_args(), "-d", "postgres", "-X", "-v", "ON_ERROR_STOP=1", "-c", command],
        capture_output=True, text=True, timeout=60, env=pg_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_psql_dt_lists_tables(server):
    out = psql(server, "\\dt")
    assert re.search(r"public \| items \| table \| postgres", out), out
    assert re.search(r"public \| plain \| table", out), out
    assert "_lp_" not in out  # internal tables stay hidden


def test_psql_d_table_shows_columns_types_nullability_defaults_indexes(server):
    out = psql(server, "\\d items")
    assert re.search(r"name\s+\|\s+character varying\(20\)\s+\|\s+\|\s+not null", out), out
    assert re.search(r"price\s+\|\s+numeric\(10,2\)\s+\|\s+\|\s+\|\s+0", out), out
    assert re.search(r"added\s+\|\s+timestamp with time zone", out), out
    assert re.search(r'"items_name" btree \(name\)', out), out
    out = psql(server, "\\d plain")
    assert re.search(r'"plain_pkey" PRIMARY KEY, btree \(a\)', out), out


def test_psql_d_plus_table(server):
    out = psql(server, "\\d+ items")
    assert re.search(r"price\s+\|\s+numeric\(10,2\)", out), out
    assert "Access method: heap" in out, out


def test_psql_l_dn_du(server):
    assert re.search(r"postgres\s+\|\s+postgres\s+\|\s+UTF8", psql(server, "\\l"))
    assert re.search(r"public\s+\|", psql(server, "\\dn"))
    assert "postgres" in psql(server, "\\du")


def test_information_schema(server):
    with psycopg.connect(server.dsn) as c:
        rows = c.execute(
            "select column_name, data_type, is_nullable from information_schema.columns "
            "where table_name = %s order by ordinal_position", ("items",)
        ).fetchall()  # fmt: skip
        assert rows[1] == ("name", "character varying", "NO")
        tables = {r[0] for r in c.execute("select table_name from information_schema.tables")}
        assert {"items", "plain"} <= tables


def test_asyncpg_binary_types_roundtrip(server):
    asyncpg = pytest.importorskip("asyncpg")

    async def main() -> None:
        conn = await asyncpg.connect(
            host=server.host, port=server.port, user="postgres", database="postgres"
        )
        try:
            await conn.execute(
                "create table typed (i int4, l int8, f float8, n numeric, t text, b bytea, ok bool, "
                "d date, ts timestamp, u uuid, j jsonb)"
            )
            u = uuid.uuid4()
            ins = await conn.prepare(
                "insert into typed values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            )
            await ins.fetch(
                -3, 2**40, 0.5, decimal.Decimal("12.75"), "héllo", b"\x00\x01", True,
                dt.date(2024, 2, 29), dt.datetime(2024, 1, 2, 3, 4, 5, 6), u, '{"a": 1}',
            )  # fmt: skip
            row = await conn.fetchrow("select i, l, f, n, t, b, ok, d, ts, u, j from typed")
            assert tuple(row) == (
                -3, 2**40, 0.5, decimal.Decimal("12.75"), "héllo", b"\x00\x01", True,
                dt.date(2024, 2, 29), dt.datetime(2024, 1, 2, 3, 4, 5, 6), u, '{"a": 1}',
            )  # fmt: skip
            stmt = await conn.prepare("select i from typed where i = $1")
            assert [a.oid for a in stmt.get_parameters()] == [23]
            assert await stmt.fetchval(-3) == -3
        finally:
            await conn.close()

    asyncio.run(main())


def test_pg_type_and_regclass(server):
    with psycopg.connect(server.dsn) as c:
        assert c.execute("select typname from pg_catalog.pg_type where oid = 23").fetchone() == (
            "int4",
        )
        assert c.execute("select 'items'::regclass::oid > 0").fetchone()[0] in (True, 1)
        assert c.execute(
            "select count(*) from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid "
            "where c.relname = 'items' and a.attnum > 0"
        ).fetchone() == (5,)  # fmt: skip
