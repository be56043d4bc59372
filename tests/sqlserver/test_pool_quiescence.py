"""The pool's priority-based quiescence at its most fragile moment: a group with no spare worker.

Figure 6 (docs/results-sql.md) found priority-based pool quiescence deadlocking at a run's first patch,
before the pool had grown spare workers: a group had no listener and every worker waited for the write
lock; the pool created a thread, but a thread born during a global patch waited for the patch to end, so
the COMMIT that would free the lock sat unread until the deadline. These tests build that state step by
step on the in-process line server (conftest.py), waiting on the pool's own counters, never on time.
"""

from __future__ import annotations

import threading
from types import ModuleType

import pytest

import livepatch
from livepatch import Category
from sqlserver.server import pool
from tests.sqlserver.conftest import APP_V1, APP_V2, LineClient, LineServer
from tests.support import wait_for

pytestmark = pytest.mark.timeout(120)


def _spec(app: ModuleType) -> livepatch.PatchSpec:
    return livepatch.patch_from_sources(
        {app.__name__: (APP_V1, APP_V2)}, category=Category.THREAD_LOCAL
    )


def _group(server: LineServer) -> pool._Group:
    return server.server.policy.groups[0]  # type: ignore[attr-defined,no-any-return]


def _settled(group: pool._Group, busy: int) -> bool:
    """`busy` requests executing (blocked on the lock), one listener, no thread being created."""
    with group.lock:
        return group.busy == busy and group.active == 0 and group.listening and group.starting == 0


def _block_writers_until_no_spare(server: LineServer, group: pool._Group) -> list[LineClient]:
    """Send `work` from new clients inside transactions (so they run while a patch is pending too) until
    the group has no spare: each one that blocks on the lock while a worker waits takes that worker as
    its listener, so the number of waiting workers falls by one per writer (how many there are first
    depends on how the pool's threads happened to start)."""
    blocked: list[LineClient] = []
    for _ in range(10):
        w = server.client()
        assert w.ask("begin") == "BEGIN"
        server.state.waiting_for_lock.clear()
        w.send("work")
        assert server.state.waiting_for_lock.wait(10)
        blocked.append(w)
        wait_for(lambda: _settled(group, busy=len(blocked)), what="writers waiting, one listener")
        with group.lock:
            if group.waiting == 0:
                return blocked
    raise AssertionError("the group kept a spare worker")


@pytest.mark.parametrize("method", ["global", "local"])
def test_a_group_without_spare_gets_a_listener_for_the_commit_during_a_patch(
    line_factory, app, monkeypatch, method
):
    """One group, no stall check. A holds the lock in an open transaction; B's statement waits for it
    (and more writers, until the group is down to its listener with no spare). A patch is requested; then C (inside a
    transaction, so it runs although a patch is pending) sends a statement that waits for the lock
    too: the listener runs it and asks for a new thread, to listen for A's COMMIT. That thread is born
    during the patch. Before the birth rule it waited for the end of the patch: nobody read A's
    COMMIT, and the global patch aborted at its deadline (the figure 6 deadlock). Now it is born, it
    listens, A's COMMIT runs, B and C finish, and the patch applies."""
    monkeypatch.setattr(pool.ThreadPool, "_stall_check", lambda self: None)
    server: LineServer = line_factory(policy="pool", pool_groups=1)
    group = _group(server)
    a, c = server.client(), server.client()
    assert a.ask("begin") == "BEGIN" and a.ask("lock") == "LOCKED"
    assert c.ask("begin") == "BEGIN"
    blocked = _block_writers_until_no_spare(server, group)

    result: list[livepatch.PatchResult] = []
    patcher = threading.Thread(
        target=lambda: result.append(livepatch.apply_patch(_spec(app), method=method, timeout=8))
    )
    patcher.start()
    wait_for(lambda: livepatch.statistics().transition is not None, what="the patch request")
    server.state.waiting_for_lock.clear()
    c.send("work")
    assert server.state.waiting_for_lock.wait(10)
    # A's COMMIT needs a listener: the thread the pool creates now, during the patch.
    assert a.ask("commit") == "COMMIT"
    for b in [*blocked, c]:
        assert b.reply() in ("v1", "v2")
        assert b.ask("commit") == "COMMIT"
    patcher.join(30)
    assert result and result[0].ok, result and result[0].reason
    assert a.ask("call") == "v2" and c.ask("call") == "v2"
    assert all(b.ask("call") == "v2" for b in blocked)
    assert livepatch.revert_patch(method=method, timeout=10).ok


def test_naive_quiescence_still_deadlocks_there(line_factory, app, monkeypatch):
    """The paper's control: with naive quiescence (no priorities) the same state still deadlocks -- the
    listener parks while B waits for the lock, A's COMMIT is never read and the patch aborts at its
    deadline, after which everything finishes normally."""
    monkeypatch.setattr(pool.ThreadPool, "_stall_check", lambda self: None)
    server: LineServer = line_factory(policy="pool", pool_groups=1, pool_quiescence="naive")
    group = _group(server)
    a, b = server.client(), server.client()
    assert a.ask("begin") == "BEGIN" and a.ask("lock") == "LOCKED"
    b.send("work")
    assert server.state.waiting_for_lock.wait(10)
    wait_for(lambda: _settled(group, busy=1), what="B waiting for the lock")
    result: list[livepatch.PatchResult] = []
    patcher = threading.Thread(
        target=lambda: result.append(
            livepatch.apply_patch(_spec(app), method="global", timeout=2, use_priorities=False)
        )
    )
    patcher.start()
    wait_for(lambda: livepatch.statistics().transition is not None, what="the patch request")
    a.send("commit")
    patcher.join(30)
    assert result and result[0].outcome == "aborted", result
    assert a.reply() == "COMMIT"  # read once the patch gave up
    assert b.reply() == "v1"
