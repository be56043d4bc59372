"""psql and pgbench, unchanged, against sqlserver with each connection policy.

pgbench runs its TPC-B-like script with 10 clients in the three query modes; afterwards the accounts
balance invariant must hold (the sum of abalance equals the sum of the history deltas: every committed
transaction updated both, no update was lost or half-applied).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.sqlserver.conftest import POLICIES, SqlProcess, pg_env

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module", params=POLICIES)
def server(request, tmp_path_factory) -> SqlProcess:
    tmp = tmp_path_factory.mktemp("sql")
    srv = SqlProcess(["--policy", request.param, "--dir", str(tmp / "data")], tmp)
    request.addfinalizer(srv.stop)
    return srv


def psql(
    server: SqlProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    exe = require_tool("psql")
    return subprocess.run(
        [exe, *server.pg_args(), "-d", "postgres", "-X", "-v", "ON_ERROR_STOP=1", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=pg_env(),
    )


def pgbench(
    server: SqlProcess, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    exe = require_tool("pgbench")
    return subprocess.run(
        [exe, *server.pg_args(), *args, "postgres"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=pg_env(),
    )


def test_psql_c(server):
    done = psql(
        server,
        "-Atc",
        "drop table if exists t_c; "
        "create table t_c (id serial primary key, name text not null, v numeric); "
        "insert into t_c (name, v) values ('a', 1.5), ('b', 2.25) returning id; "
        "select name, v from t_c order by id;",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.split()
    assert "a|1.5" in lines and "b|2.25" in lines, done.stdout


def test_psql_script_with_describe_and_copy(server, tmp_path: Path):
    src = tmp_path / "in.csv"
    src.write_text("1,alpha\n2,beta\n3,gamma\n")
    out = tmp_path / "out.csv"
    script = f"""
drop table if exists t_script;
create table t_script (k int primary key, word text);
\\copy t_script from '{src}' with (format csv)
\\dt
\\d t_script
select count(*) as n from t_script;
\\copy (select k, word from t_script order by k) to '{out}' with (format csv)
"""
    done = psql(server, stdin=script)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\bt_script\b.*\btable\b", done.stdout), done.stdout  # \dt
    assert re.search(r"\bword\b.*\btext\b", done.stdout), done.stdout  # \d t_script
    assert re.search(r"^\s*3\s*$", done.stdout, re.M), done.stdout
    assert out.read_text() == src.read_text()


def test_pgbench_init_run_in_every_mode_and_balance_invariant(server):
    init = pgbench(server, "-i", "-s", "1", "-q")
    assert init.returncode == 0, init.stdout + init.stderr
    for mode in ("simple", "extended", "prepared"):
        # -n: no vacuum phase, which would truncate pgbench_history (as it does on PostgreSQL)
        # and break the invariant across runs.
        run = pgbench(server, "-n", "-M", mode, "-c", "10", "-j", "2", "-T", "3")
        report = run.stdout + run.stderr
        assert run.returncode == 0, report
        assert re.search(r"number of failed transactions: 0\b", report), report
        processed = re.search(r"number of transactions actually processed: (\d+)", report)
        assert processed and int(processed.group(1)) > 0, report
    check = psql(
        server,
        "-Atc",
        "select (select sum(abalance) from pgbench_accounts) = "
        "(select coalesce(sum(delta), 0) from pgbench_history), "
        "(select count(*) from pgbench_history) > 0",
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.strip() == "t|t", check.stdout


def test_pgbench_select_only_prepared(server):
    init = pgbench(server, "-i", "-s", "1", "-q")
    assert init.returncode == 0, init.stdout + init.stderr
    run = pgbench(server, "-S", "-M", "prepared", "-c", "10", "-j", "2", "-T", "2")
    report = run.stdout + run.stderr
    assert run.returncode == 0 and "number of failed transactions: 0" in report, report
