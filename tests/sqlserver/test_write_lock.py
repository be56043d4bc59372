"""The write lock that a pending patch shakes its waiters out of (sqlserver/write_lock.py).

A request queued for the write lock while holding nothing backs out when a global patch is pending
(blocking.py). Before write_lock.py it noticed the patch only once it got the lock, so the patch waited
for the holder's whole transaction; now the patch's wake-up hook kicks the waiters and it backs out at
once, so the patch applies while the holder's transaction is still open in its client's hands.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import psycopg
import pytest

import livepatch
from livepatch import Category
from sqlserver.config import SqlConfig
from sqlserver.server.runner import NetOptions, Server, listen
from sqlserver.state import ServerState
from sqlserver.write_lock import WriteLock
from tests.sqlserver.conftest import APP_V1, APP_V2
from tests.support import wait_for

pytestmark = pytest.mark.timeout(180)


def test_the_lock_is_exclusive_and_a_release_wakes_a_waiter() -> None:
    lock = WriteLock()
    assert lock.acquire(False) and lock.locked()
    assert not lock.acquire(False)
    assert not lock.acquire(timeout=0.01)
    got = threading.Event()
    waiting = threading.Thread(target=lambda: lock.acquire() and got.set())
    waiting.start()
    lock.release()
    waiting.join(10)
    assert got.is_set() and lock.locked()
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()


def test_a_kick_wakes_every_waiter_without_the_lock() -> None:
    lock = WriteLock()
    assert lock.acquire()
    results: list[bool] = []
    done = threading.Barrier(4)

    def wait() -> None:
        results.append(lock.acquire(timeout=60, kickable=True))
        done.wait(10)

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for t in waiters:
        t.start()
    # Kick until all three have returned (a kick only wakes those already waiting).
    while True:
        lock.kick()
        try:
            done.wait(0.05)
            break
        except threading.BrokenBarrierError:
            done.reset()
    for t in waiters:
        t.join(10)
    assert results == [False, False, False]
    assert lock.locked()  # still the holder's
    lock.release()


def test_a_kick_leaves_waiters_that_cannot_back_out_alone() -> None:
    lock = WriteLock()
    assert lock.acquire()
    got: list[bool] = []
    waiting = threading.Thread(target=lambda: got.append(lock.acquire(timeout=60)))
    waiting.start()
    wait_for(lambda: lock.waiting == 1, what="the waiter")
    for _ in range(10):
        lock.kick()
    assert waiting.is_alive() and not got
    lock.release()
    waiting.join(10)
    assert got == [True]
    lock.release()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """A real sqlserver (ServerState, the policy, the acceptor) in this process, so that the test can
    watch its write lock and patch a module of its own (`app`) with the real runtime."""
    started: list[tuple[Server, threading.Thread, ServerState]] = []

    def start(policy: str) -> tuple[ServerState, str]:
        state = ServerState(SqlConfig(data_dir=str(tmp_path / "data")))
        server = Server(state, listen("127.0.0.1", 0), NetOptions(port=0, policy=policy))
        ready = threading.Event()
        thread = threading.Thread(target=lambda: server.serve(on_ready=ready.set))
        thread.start()
        started.append((server, thread, state))
        assert ready.wait(30)
        port = server.address[1]
        return state, f"host=127.0.0.1 port={port} user=postgres dbname=postgres"

    try:
        yield start
    finally:
        for server, thread, _state in started:
            server.request_stop()
            thread.join(30)


UPDATE_ONE = "update acct set balance = balance + %s where id = %s"


def test_pool_a_patch_applies_while_the_lock_holder_stays_in_its_transaction(
    serve, app: ModuleType
) -> None:
    """The pool (where a patch may land between two statements of a transaction): A holds the write lock in an open transaction and does nothing; B's first write (a prepared
    statement) queues for the lock. The global patch applies without A committing: B backs out at
    the kick, and runs after the patch, once A commits. Without the kick B noticed the patch only
    once it had the lock, so the patch waited for A's transaction and aborted at its deadline. (Under
    thread-per-connection A's thread is never parked inside its transaction, so the patch waits for A
    whatever B does.)"""
    state, dsn = serve("pool")
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("create table acct (id int primary key, balance int)")
        c.execute("insert into acct values (1, 0), (2, 0)")
    waiter = psycopg.connect(dsn)
    waiter.execute(UPDATE_ONE, (0, 2), prepare=True)  # prepared: the fast path, which can back out
    waiter.commit()
    holder = psycopg.connect(dsn)
    holder.execute(UPDATE_ONE, (1, 1))  # write lock held, status T
    waited: list[int] = []
    blocked = threading.Thread(
        target=lambda: waited.append(waiter.execute(UPDATE_ONE, (10, 1), prepare=True).rowcount)
    )
    blocked.start()
    spec = livepatch.patch_from_sources(
        {app.__name__: (APP_V1, APP_V2)}, category=Category.THREAD_LOCAL
    )
    try:
        wait_for(lambda: state.write_lock.waiting == 1, what="B waiting for the write lock")
        result = livepatch.apply_patch(spec, method="global", timeout=5)
        assert result.ok, result.reason
        assert blocked.is_alive()  # B waits again: for A's COMMIT, after the patch
        holder.commit()
        blocked.join(60)
        assert waited == [1]
        waiter.commit()
        assert livepatch.revert_patch(timeout=10).ok
    finally:
        holder.close()
        waiter.close()
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("select balance from acct where id = 1").fetchone()[0] == 11
