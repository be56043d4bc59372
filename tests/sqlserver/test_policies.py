"""The connection policies under the real livepatch runtime, with a line-protocol session double.

What is under test is the threads: where they pass quiescence points, that idle clients never hold up a
patch, that a thread inside a transaction is never parked (the patch waits for the COMMIT or aborts at its
deadline), that nothing deadlocks when a statement waits for a lock held by an open transaction (the
pool's priority rule), the pool's stall check, the thread cache, and shutdown. The real session and real
PostgreSQL clients are in test_sql_server.py / test_clients_*.py / test_sql_livepatch.py.
"""

from __future__ import annotations

import threading
from types import ModuleType

import pytest

import livepatch
from livepatch import Category
from sqlserver.server import pool
from tests.sqlserver.conftest import APP_V1, APP_V2, POLICIES, LineServer

pytestmark = pytest.mark.timeout(120)


def _spec(app: ModuleType) -> livepatch.PatchSpec:
    return livepatch.patch_from_sources(
        {app.__name__: (APP_V1, APP_V2)}, category=Category.THREAD_LOCAL
    )


def _apply_in_background(
    spec: livepatch.PatchSpec, **kwargs: object
) -> tuple[threading.Thread, list]:
    result: list[livepatch.PatchResult] = []
    thread = threading.Thread(target=lambda: result.append(livepatch.apply_patch(spec, **kwargs)))
    thread.start()
    return thread, result


def _wait_transition(timeout: float = 10.0) -> None:
    """Until the runtime shows a pending transition (the patch request is raised)."""
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            if livepatch.statistics().transition is not None:
                done.set()
                return
            done.wait(0.001)

    t = threading.Thread(target=poll)
    t.start()
    t.join(timeout)
    ok = done.is_set()
    done.set()
    assert ok, "the patch request never showed up in the runtime"


@pytest.mark.parametrize("policy", POLICIES)
def test_many_clients_are_served_concurrently(line_factory, policy):
    server: LineServer = line_factory(policy=policy, pool_groups=2)
    errors: list[str] = []
    barrier = threading.Barrier(12)

    def client(i: int) -> None:
        c = server.client()
        barrier.wait(10)
        for j in range(200):
            reply = c.ask(f"m{i}-{j}")
            if reply != f"echo m{i}-{j}":
                errors.append(reply)
                return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("method", ["global", "local"])
@pytest.mark.parametrize("policy", POLICIES)
def test_idle_clients_do_not_hold_up_a_patch(line_factory, app, policy, method):
    """Connections opened before the patch, idle in the client's hands (their threads blocked reading,
    or in the pool's poll set), plus cached threads: the patch completes at once, and every old
    connection runs the new code on its next request."""
    server: LineServer = line_factory(policy=policy, thread_cache=4)
    old = [server.client() for _ in range(6)]
    for c in old:
        assert c.ask("call") == "v1"
    for c in old[:2]:
        c.ask("quit")  # their threads go to the cache (thread-per-connection)
    result = livepatch.apply_patch(_spec(app), method=method, timeout=5)
    assert result.ok, result.reason
    for c in old[2:]:
        assert c.ask("call") == "v2"
    assert server.client().ask("call") == "v2"
    assert livepatch.revert_patch(timeout=5).ok


@pytest.mark.parametrize("policy", POLICIES)
def test_a_patch_waits_for_a_transaction_that_blocks_others_and_nothing_deadlocks(
    line_factory, app, policy
):
    """A holds the table lock inside a transaction; B's statement waits for it. The patch cannot park
    B (running) nor A's thread (inside a transaction); it waits. A's COMMIT must still be dispatched
    (the pool's listener keeps going by the priority rule); then B finishes and the patch applies."""
    server: LineServer = line_factory(policy=policy, pool_groups=1)
    a, b = server.client(), server.client()
    assert a.ask("begin") == "BEGIN" and a.ask("lock") == "LOCKED"
    b.send("work")
    assert server.state.waiting_for_lock.wait(10)
    patcher, result = _apply_in_background(_spec(app), method="global", timeout=30)
    _wait_transition()
    assert a.ask("commit") == "COMMIT"  # dispatched although a patch is pending
    assert b.reply() in ("v1", "v2")
    patcher.join(40)
    assert result and result[0].ok, result and result[0].reason
    assert a.ask("call") == "v2" and b.ask("call") == "v2"
    assert livepatch.revert_patch(timeout=5).ok


def test_thread_per_connection_never_parks_a_transaction(line_factory, app):
    """A transaction left open by its client: its thread stays active outside any quiescence point, so
    the global patch aborts at its deadline naming that thread; the server keeps serving, the
    transaction commits normally, and the next patch applies."""
    server: LineServer = line_factory(policy="thread-per-connection")
    a, other = server.client(), server.client()
    assert a.ask("begin") == "BEGIN" and a.ask("call") == "v1"
    result = livepatch.apply_patch(_spec(app), method="global", timeout=1.0)
    assert result.outcome == "aborted", result
    assert "sql-conn" in result.reason
    assert other.ask("call") == "v1" and a.ask("call") == "v1"  # nothing changed, nobody stuck
    assert a.ask("commit") == "COMMIT"
    result = livepatch.apply_patch(_spec(app), method="global", timeout=5)
    assert result.ok, result.reason
    assert a.ask("call") == "v2" and other.ask("call") == "v2"
    assert livepatch.revert_patch(timeout=5).ok


def test_thread_per_connection_local_patch_moves_a_transaction_only_after_it(line_factory, app):
    """Local method: a connection inside a transaction keeps the old code until its transaction ends
    (its next quiescence point); the patch completes when it does."""
    server: LineServer = line_factory(policy="thread-per-connection")
    a = server.client()
    assert a.ask("begin") == "BEGIN"
    patcher, result = _apply_in_background(_spec(app), method="local", timeout=30)
    _wait_transition()
    fresh = server.client()
    assert fresh.ask("call") == "v2"  # born during the transition: new generation
    assert a.ask("call") == "v1"  # still inside its transaction: old code
    assert a.ask("commit") == "COMMIT"
    patcher.join(40)
    assert result and result[0].ok, result and result[0].reason
    assert a.ask("call") == "v2"
    assert livepatch.revert_patch(timeout=5).ok


def test_pool_a_long_statement_does_not_stall_its_group(line_factory):
    """One group; its only thread runs a long statement: the stall check gives the group another
    listener, so the other connections keep being served (and the long one is cancellable)."""
    server: LineServer = line_factory(policy="pool", pool_groups=1)
    slow, fast = server.client(), server.client()
    slow.send("sleep")
    assert server.state.sleeping.wait(10)
    for i in range(20):
        assert fast.ask(f"x{i}") == f"echo x{i}"
    for s in server.state.sessions:
        s.cancel()
    assert slow.reply() == "cancelled"


def test_pool_a_statement_waiting_for_a_lock_lets_its_group_run_the_commit(
    line_factory, monkeypatch
):
    """One group, no stall check: the group's executing thread blocks on a lock whose holder's
    COMMIT arrives afterwards in the same group. The pool runs one executing thread per group and
    learns of the wait only through blocking.wait_begin(); without it nobody would read the COMMIT
    and the waiting statement would never finish."""
    monkeypatch.setattr(pool.ThreadPool, "_stall_check", lambda self: None)
    server: LineServer = line_factory(policy="pool", pool_groups=1)
    holder, waiter = server.client(), server.client()
    for _ in range(5):
        server.state.waiting_for_lock.clear()
        assert holder.ask("begin") == "BEGIN"
        assert holder.ask("lock") == "LOCKED"
        waiter.send("work")
        assert server.state.waiting_for_lock.wait(10)
        assert holder.ask("commit") == "COMMIT"
        assert waiter.reply() == "v1"


def test_pool_serves_a_burst_of_ready_clients_without_a_thread_each(line_factory):
    """Requests that become ready together in one group are run one after the other by the thread
    that polled them (MariaDB's active-thread rule), not handed to a new thread each."""
    server: LineServer = line_factory(policy="pool", pool_groups=1)
    clients = [server.client() for _ in range(20)]
    for _round in range(20):
        for i, c in enumerate(clients):
            c.send(f"x{i}")
        for i, c in enumerate(clients):
            assert c.reply() == f"echo x{i}"
    group = server.server.policy.groups[0]  # type: ignore[attr-defined]
    assert group.threads <= 4, f"{group.threads} threads for one group of quick requests"


def test_thread_cache_reuses_threads(line_factory):
    server: LineServer = line_factory(policy="thread-per-connection", thread_cache=3)
    policy = server.server.policy
    for _ in range(3):
        clients = [server.client() for _ in range(3)]
        for c in clients:
            assert c.ask("call") == "v1"
        for c in clients:
            assert c.ask("quit") == "bye"
    # The first round started 3 threads; the later rounds found them in the cache (a reconnect may
    # race its predecessor's return to the cache, so allow one miss per round).
    assert policy.threads_started <= 5, policy.threads_started


@pytest.mark.parametrize("policy", POLICIES)
def test_stop_closes_every_connection_and_cancels_running_statements(line_factory, policy):
    server: LineServer = line_factory(policy=policy)
    idle = [server.client() for _ in range(4)]
    for c in idle:
        assert c.ask("call") == "v1"
    busy = server.client()
    busy.send("sleep")
    assert server.state.sleeping.wait(10)
    server.server.request_stop()
    server.thread.join(30)
    assert server.status == [0]
    assert server.state.shut_down
    for c in [*idle, busy]:
        rest = c.file.read()  # end of file: the server closed it (the busy one may get its reply)
        assert rest in (b"", b"cancelled\n"), rest


@pytest.mark.parametrize("method", ["global", "local"])
@pytest.mark.parametrize("policy", POLICIES)
def test_patches_complete_under_a_steady_load_of_transactions(line_factory, app, policy, method):
    """Clients in a tight loop of transactions that take the shared lock: every patch must still reach
    quiescence well before its deadline (the pool holds back new transactions while a patch is
    pending, so the executing workers drain), and every client keeps being served."""
    server: LineServer = line_factory(policy=policy, pool_groups=2)
    stop = threading.Event()
    errors: list[str] = []
    served = [0] * 8
    started = threading.Barrier(9)

    def client(i: int) -> None:
        c = server.client()
        started.wait(10)
        while not stop.is_set():
            for line, want in (("begin", "BEGIN"), ("lock", "LOCKED"), ("commit", "COMMIT")):
                got = c.ask(line)
                if got != want:
                    errors.append(f"{line}: {got}")
                    return
            if c.ask("work") not in ("v1", "v2"):
                errors.append("work")
                return
            served[i] += 1

    clients = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in clients:
        t.start()
    started.wait(10)
    try:
        for _ in range(5):
            result = livepatch.apply_patch(_spec(app), method=method, timeout=10)
            assert result.ok, result.reason
            assert livepatch.revert_patch(method=method, timeout=10).ok
    finally:
        stop.set()
        for t in clients:
            t.join(30)
    assert not errors, errors[:3]
    assert all(n > 0 for n in served), served
