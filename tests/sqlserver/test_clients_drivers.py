"""psycopg 3, asyncpg and pg8000, unchanged, against sqlserver with each connection policy: text and binary
formats, server-side cursors, COPY, pipelines, prepared statements, the SQLSTATEs clients dispatch on, and
CancelRequest stopping a long query."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest

from tests.sqlserver.conftest import POLICIES, SqlProcess

psycopg = pytest.importorskip("psycopg")
from psycopg import errors  # noqa: E402

pytestmark = pytest.mark.timeout(180)

# A statement that runs for many seconds in SQLite (a recursive count), so a cancel has something to stop.
LONG_QUERY = (
    "with recursive c(x) as (select 1 union all select x + 1 from c where x < 2000000000) "
    "select count(*) from c"
)


@pytest.fixture(scope="module", params=POLICIES)
def server(request, tmp_path_factory) -> SqlProcess:
    tmp = tmp_path_factory.mktemp("sql")
    srv = SqlProcess(["--policy", request.param, "--dir", str(tmp / "data")], tmp)
    request.addfinalizer(srv.stop)
    return srv


def _table() -> str:
    return f"t_{uuid.uuid4().hex[:8]}"


def test_psycopg_text_binary_and_server_side_cursor(server):
    t = _table()
    with psycopg.connect(server.dsn) as c:
        c.execute(f"create table {t} (k int primary key, b bytea, j jsonb, f float8, s text)")
        with c.cursor() as cur:
            cur.executemany(
                f"insert into {t} values (%s, %s, %s, %s, %s)",
                [(i, bytes([i, 0, 255]), f'{{"i": {i}}}', i / 4, f"row {i}") for i in range(50)],
            )
        c.commit()
        text = c.execute(f"select k, s, f from {t} where k = %s", (7,)).fetchone()
        assert text == (7, "row 7", 1.75)
        binary = c.cursor(binary=True)
        binary.execute(f"select k, b from {t} where k = %s", (3,))
        assert binary.fetchone() == (3, b"\x03\x00\xff")
        with c.cursor(name="ssc") as named:  # server-side cursor: DECLARE / FETCH in a transaction
            named.itersize = 7
            named.execute(f"select k from {t} order by k")
            assert [r[0] for r in named] == list(range(50))
        c.commit()


def test_psycopg_copy_and_pipeline(server):
    t = _table()
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute(f"create table {t} (k int primary key, v text)")
        with c.cursor() as cur:
            with cur.copy(f"copy {t} (k, v) from stdin") as copy:
                for i in range(200):
                    copy.write_row((i, f"v{i}"))
            with cur.copy(f"copy (select k, v from {t} order by k) to stdout") as copy:
                rows = list(copy.rows())
        assert len(rows) == 200 and rows[5] == ("5", "v5")
        with c.pipeline():
            curs = [c.execute(f"select v from {t} where k = %s", (i,)) for i in range(20)]
        assert [cur.fetchone()[0] for cur in curs] == [f"v{i}" for i in range(20)]


def test_sqlstates_clients_dispatch_on(server):
    t = _table()
    with psycopg.connect(server.dsn) as c:
        c.execute(f"create table {t} (k int primary key)")
        c.execute(f"insert into {t} values (1)")
        c.commit()
        with pytest.raises(errors.UniqueViolation):
            c.execute(f"insert into {t} values (1)")
        c.rollback()
        with pytest.raises(errors.SyntaxError):
            c.execute("selec 1")
        c.rollback()
        with pytest.raises(errors.UndefinedTable):
            c.execute("select * from no_such_table_here")
        c.rollback()
        with pytest.raises(errors.DivisionByZero):
            c.execute("select 1 / 0").fetchone()
        with pytest.raises(errors.InFailedSqlTransaction):
            c.execute("select 1")
        c.rollback()
        assert c.execute("select 1").fetchone() == (1,)


def test_cancel_request_stops_a_long_query(server):
    with psycopg.connect(server.dsn, autocommit=True) as c:
        started = threading.Event()
        outcome: list[BaseException | None] = []

        def run() -> None:
            started.set()
            try:
                c.execute(LONG_QUERY).fetchone()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=run)
        t.start()
        assert started.wait(10)
        # Cancel until it lands: the first one may arrive before the statement began executing.
        for _ in range(100):
            c.cancel()
            t.join(0.2)
            if not t.is_alive():
                break
        t.join(30)
        assert not t.is_alive(), "the long query was not cancelled"
        assert outcome and isinstance(outcome[0], errors.QueryCanceled), outcome
        assert c.execute("select 2").fetchone() == (2,)  # the connection survives the cancel


def test_asyncpg_binary_prepared_and_introspection(server):
    asyncpg = pytest.importorskip("asyncpg")
    t = _table()

    async def main() -> None:
        conn = await asyncpg.connect(
            host=server.host, port=server.port, user="postgres", database="postgres"
        )
        try:
            await conn.execute(f"create table {t} (k int primary key, name text, amount numeric)")
            insert = await conn.prepare(f"insert into {t} values ($1, $2, $3)")
            for i in range(10):
                await insert.fetch(i, f"n{i}", i * 1.5)
            stmt = await conn.prepare(f"select k, name from {t} where k >= $1 order by k")
            rows = await stmt.fetch(7)
            assert [(r["k"], r["name"]) for r in rows] == [(7, "n7"), (8, "n8"), (9, "n9")]
            assert await conn.fetchval("select count(*) from " + t) == 10
        finally:
            await conn.close()

    asyncio.run(main())


def test_pg8000(server):
    pg8000 = pytest.importorskip("pg8000.native")
    t = _table()
    conn = pg8000.Connection("postgres", host=server.host, port=server.port, database="postgres")
    try:
        conn.run(f"create table {t} (k int primary key, v text)")
        conn.run(f"insert into {t} values (:k, :v)", k=1, v="one")
        assert conn.run(f"select k, v from {t}") == [[1, "one"]]
        with pytest.raises(pg8000.DatabaseError) as info:
            conn.run(f"insert into {t} values (1, 'again')")
        assert info.value.args[0]["C"] == "23505"
    finally:
        conn.close()
