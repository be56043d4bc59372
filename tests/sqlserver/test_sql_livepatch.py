"""Live patch of a query-path function of a running sqlserver, under pgbench load, with each connection
policy and each method -- built and applied the way an operator does it.

The patch: copy the running sqlserver package (OLD), change one line of `show_command` in a copy (NEW) so
that `SHOW server_version` answers "<version> (patched)", `livepatch diff OLD NEW`, `livepatch apply`.
Connections opened before the patch must see the new behaviour at their next transaction; pgbench must
finish with no failed transaction and no lost client; the accounts balance invariant must hold.

A session inside an open transaction is never parked: with a transaction holding the write lock and
another client's UPDATE waiting for it, the patch waits (it cannot park the waiting statement, nor the
transaction's thread under thread-per-connection) until the COMMIT, which is still dispatched, and then
applies; nothing deadlocks. With thread-per-connection a transaction left open makes a global patch abort
at its deadline, changing nothing; with the pool, whose idle sessions belong to no thread, the patch
applies between two statements of the transaction (docs/sqlserver-server.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import sqlserver
from tests.conftest import require_tool
from tests.sqlserver.conftest import POLICIES, SqlProcess, pg_env
from tests.support import livepatch_cli

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.timeout(300)

SRC = Path(sqlserver.__file__).resolve().parent
FUNCTION = "def show_command("  # SHOW's handler: every SHOW statement runs it
OLD_LINE = "    value = session.settings.get(name)\n"
NEW_LINE = '    value = f"{session.settings.get(name)} (patched)"\n'


def build_patch(work: Path) -> Path:
    old, new = work / "old", work / "new"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(SRC, old / "sqlserver", ignore=ignore)
    shutil.copytree(SRC, new / "sqlserver", ignore=ignore)
    [module] = [f for f in (new / "sqlserver").glob("*.py") if FUNCTION in f.read_text()]
    text = module.read_text()
    start = text.index(FUNCTION)
    end = text.index("\ndef ", start + 1)
    assert text.count(OLD_LINE, start, end) == 1, f"{FUNCTION} changed: update OLD_LINE"
    module.write_text(text[:start] + text[start:end].replace(OLD_LINE, NEW_LINE) + text[end:])
    out = work / "show-patched.lpatch"
    done = livepatch_cli(
        "diff", str(old), str(new), "--package", "sqlserver", "--category", "thread-local",
        "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.fixture
def work() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lp-sql-"))  # short: a Unix socket path has ~100 bytes
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _server(sql_factory, work: Path, policy: str) -> tuple[SqlProcess, Path]:
    sock = work / "agent.sock"
    server = sql_factory(
        "--policy", policy, "--dir", str(work / "data"), "--livepatch-socket", str(sock),
        "--allow-unsigned",
    )  # fmt: skip
    return server, sock


def _apply(patch: Path, sock: Path, method: str, timeout: float) -> dict:
    """`livepatch apply --json`; returns the runtime's result (outcome, reason, events, timings)."""
    done = livepatch_cli(
        "apply", str(patch), "--socket", str(sock), "--method", method, "--timeout", str(timeout),
        "--json", timeout=timeout + 60,
    )  # fmt: skip
    try:
        reply = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(done.stdout + done.stderr) from None
    assert reply.get("result"), reply
    return reply["result"]


def _revert(sock: Path, method: str, timeout: float) -> dict:
    done = livepatch_cli(
        "revert", "--socket", str(sock), "--method", method, "--timeout", str(timeout), "--json",
        timeout=timeout + 60,
    )  # fmt: skip
    reply = json.loads(done.stdout)
    assert reply.get("result"), done.stdout + done.stderr
    return dict(reply["result"])


def _pgbench(server: SqlProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("pgbench"), *server.pg_args(), *args, "postgres"],
        capture_output=True, text=True, timeout=240, env=pg_env(),
    )  # fmt: skip


def _show(conn) -> str:
    return str(conn.execute("show server_version").fetchone()[0])


def _transition_pending(sock: Path) -> bool:
    done = livepatch_cli("status", "--socket", str(sock), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)["statistics"]["transition"] is not None


def _wait(predicate, what: str, timeout: float = 60.0) -> None:
    """Poll an outside condition that nothing signals (another process's state)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.parametrize("method", ["global", "local"])
@pytest.mark.parametrize("policy", POLICIES)
def test_patch_under_pgbench_load(sql_factory, work, policy, method):
    server, sock = _server(sql_factory, work, policy)
    patch = build_patch(work)
    init = _pgbench(server, "-i", "-s", "1", "-q")
    assert init.returncode == 0, init.stdout + init.stderr
    before = [psycopg.connect(server.dsn, autocommit=True) for _ in range(4)]
    in_tx = psycopg.connect(server.dsn)  # opened before; used in transactions
    original = _show(before[0])
    assert all(_show(c) == original for c in before) and _show(in_tx) == original
    in_tx.commit()
    bench = subprocess.Popen(
        [require_tool("pgbench"), *server.pg_args(), "-n", "-M", "prepared", "-c", "10", "-j", "2",
         "-T", "15", "-P", "1", "postgres"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=pg_env(),
    )  # fmt: skip
    try:
        assert bench.stderr is not None
        seen: list[str] = []
        for line in bench.stderr:  # the first progress line: the load runs
            seen.append(line)
            if line.startswith("progress:"):
                break
        assert seen and seen[-1].startswith("progress:"), "".join(seen)
        drain = threading.Thread(target=lambda: seen.extend(bench.stderr))  # type: ignore[arg-type]
        drain.start()
        # Several transitions while the load runs (a single one can slip through a lucky gap in
        # the load): each must complete within its deadline, and old connections must follow.
        for _ in range(3):
            result = _apply(patch, sock, method, timeout=10)
            assert result["outcome"] == "applied", (result.get("reason"), result)
            for c in before:
                assert _show(c) == f"{original} (patched)"
            assert _show(in_tx) == f"{original} (patched)"
            in_tx.commit()
            result = _revert(sock, method, timeout=10)
            assert result["outcome"] == "reverted", result
            assert _show(before[0]) == original
        result = _apply(patch, sock, method, timeout=10)
        assert result["outcome"] == "applied", result
        out = bench.stdout.read() if bench.stdout else ""
        assert bench.wait(120) == 0, out + "".join(seen)
        drain.join(30)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait(30)
    report = out + "".join(seen)
    assert "number of failed transactions: 0 " in report, report
    assert "aborted" not in report.lower(), report
    with psycopg.connect(server.dsn, autocommit=True) as c:
        ok = c.execute(
            "select (select sum(abalance) from pgbench_accounts) = "
            "(select coalesce(sum(delta), 0) from pgbench_history)"
        ).fetchone()[0]
        assert ok in (True, 1, "t"), ok
        assert _show(c) == f"{original} (patched)"
    for c in before:
        c.close()
    in_tx.close()
    assert server.alive()


@pytest.mark.parametrize("policy", POLICIES)
def test_patch_waits_for_an_open_write_transaction_and_nothing_deadlocks(sql_factory, work, policy):
    server, sock = _server(sql_factory, work, policy)
    patch = build_patch(work)
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("create table acct (id int primary key, balance int)")
        c.execute("insert into acct values (1, 0)")
    holder = psycopg.connect(server.dsn)
    holder.execute(
        "update acct set balance = balance + 1 where id = 1"
    )  # write lock held, status T
    waiter = psycopg.connect(server.dsn, autocommit=True)
    waited: list[object] = []
    blocked = threading.Thread(
        target=lambda: waited.append(
            waiter.execute("update acct set balance = balance + 10 where id = 1").rowcount
        )
    )
    blocked.start()
    results: list[dict] = []
    patcher = threading.Thread(target=lambda: results.append(_apply(patch, sock, "global", 60)))
    patcher.start()
    try:
        _wait(lambda: _transition_pending(sock), "the patch request")
        assert blocked.is_alive() and patcher.is_alive()  # the UPDATE waits, so does the patch
        holder.commit()  # dispatched although a patch is pending: nothing deadlocks
        blocked.join(60)
        patcher.join(120)
    finally:
        holder.close()
    assert waited == [1]
    assert results and results[0]["outcome"] == "applied", results
    with psycopg.connect(server.dsn, autocommit=True) as c:
        assert c.execute("select balance from acct where id = 1").fetchone()[0] == 11
    assert _show(waiter).endswith("(patched)")
    waiter.close()


def test_thread_per_connection_open_transaction_makes_a_global_patch_abort_at_its_deadline(
    sql_factory, work
):
    server, sock = _server(sql_factory, work, "thread-per-connection")
    patch = build_patch(work)
    tx = psycopg.connect(server.dsn)
    original = _show(tx)  # psycopg opened a transaction: the session is in status T
    # ... and the block ran a statement (a BEGIN alone holds nothing, and does not hold a patch up)
    tx.execute("select count(*) from pg_class").fetchone()
    other = psycopg.connect(server.dsn, autocommit=True)
    result = _apply(patch, sock, "global", timeout=1.5)
    assert result["outcome"] == "aborted", result
    assert "sql-conn" in result["reason"], result
    assert _show(other) == original and _show(tx) == original  # nothing changed, nobody stuck
    tx.commit()
    result = _apply(patch, sock, "global", timeout=20)
    assert result["outcome"] == "applied", result
    assert _show(tx) == f"{original} (patched)"  # its next transaction runs the new code
    tx.commit()
    tx.close()
    other.close()


def test_pool_applies_between_two_statements_of_an_open_transaction(sql_factory, work):
    server, sock = _server(sql_factory, work, "pool")
    patch = build_patch(work)
    tx = psycopg.connect(server.dsn)
    original = _show(tx)
    result = _apply(patch, sock, "global", timeout=20)
    assert result["outcome"] == "applied", result  # the idle session is on no thread: nothing waits
    assert _show(tx) == f"{original} (patched)"
    tx.commit()
    tx.close()


UPDATE_ONE = "update acct set balance = balance + %s where id = %s"


@pytest.mark.parametrize("policy", POLICIES)
def test_a_transaction_queued_for_its_first_write_does_not_hold_a_patch_up(
    sql_factory, work, policy
):
    """A block whose first write queues on the write lock when a patch arrives holds nothing: the
    request backs out, the patch applies, the write runs afterwards (sqlserver/blocking.py). Before
    this, the patch waited for that whole transaction -- forever, here, as it stays open."""
    server, sock = _server(sql_factory, work, policy)
    patch = build_patch(work)
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("create table acct (id int primary key, balance int)")
        c.execute("insert into acct values (1, 0), (2, 0)")
    waiter = psycopg.connect(server.dsn)
    # prepared once, so that the UPDATE below is one Bind/Execute/Sync burst (the fast path)
    waiter.execute(UPDATE_ONE, (0, 2), prepare=True)
    waiter.commit()
    holder = psycopg.connect(server.dsn)
    holder.execute(UPDATE_ONE, (1, 1))  # write lock held, status T
    waited: list[int] = []
    blocked = threading.Thread(
        target=lambda: waited.append(waiter.execute(UPDATE_ONE, (10, 1), prepare=True).rowcount)
    )  # BEGIN, then the UPDATE queues on the write lock
    blocked.start()
    results: list[dict] = []
    patcher = threading.Thread(target=lambda: results.append(_apply(patch, sock, "global", 20)))
    patcher.start()
    try:
        _wait(lambda: _transition_pending(sock), "the patch request")
        holder.commit()
        blocked.join(60)
        assert waited == [1]  # the UPDATE ran, in a transaction the client keeps open
        patcher.join(120)
        assert results and results[0]["outcome"] == "applied", results
        assert _show(waiter).endswith("(patched)")  # in the same, still open, transaction
        waiter.commit()
    finally:
        holder.close()
        waiter.close()
    with psycopg.connect(server.dsn, autocommit=True) as c:
        assert c.execute("select balance from acct where id = 1").fetchone()[0] == 11
