"""psycopg's `%s,%s` reaches the server as `$1,$2`, which sqlglot's tokenizer took for a dollar-quoted
string (a syntax error on valid SQL): the same statements on sqlserver and PostgreSQL 15."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lpbench.conftest import postgres_port  # noqa: F401  (the real PostgreSQL 15, a fixture)
from tests.sqlserver.conftest import SqlProcess

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.timeout(120)


def _run(dsn: str) -> list[object]:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("drop table if exists glued")
        c.execute("create table glued (k int primary key, v text)")
        c.execute("insert into glued values (%s,%s)", (1, "$1,$2"))
        c.cursor().executemany("insert into glued (k,v) values (%s,%s)", [(2, "b"), (3, "c")])
        return [
            c.execute("select k,v from glued where k=%s or v=%s order by k", (1, "c")).fetchall(),
            c.execute("select %s::int+%s::int, coalesce(%s,%s)", (2, 3, None, "x")).fetchone(),
            c.execute("select $$ $1,$2 $$, v from glued where k=%s", (2,)).fetchone(),
        ]


@pytest.fixture(scope="module")
def sqlserver_dsn(tmp_path_factory) -> Iterator[str]:
    tmp: Path = tmp_path_factory.mktemp("glued")
    srv = SqlProcess(["--dir", str(tmp / "data")], tmp)
    try:
        yield srv.dsn
    finally:
        srv.stop()


def test_parameters_without_spaces_answer_as_postgresql(postgres_port, sqlserver_dsn):  # noqa: F811
    theirs = _run(f"host=127.0.0.1 port={postgres_port} user=postgres dbname=postgres")
    assert theirs[0] == [(1, "$1,$2"), (3, "c")]
    assert _run(sqlserver_dsn) == theirs
