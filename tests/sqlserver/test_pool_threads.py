"""How many threads the pool keeps: it must not grow with every patch, and idle threads must retire.

Under `livepatch stress --server sql --policy pool` (a patch or revert every ~100 ms) the pool grew to its
bound, 64 threads per group (193 threads), within three minutes, and every global patch then had to wake
and park each of them (docs/performance.md, session 7). Two causes, one test each, on the in-process line
server (conftest.py) with the real runtime:
  * the pool created a thread whenever no worker *waited* (`group.waiting == 0`), although right after a
    transition the group's threads are all on their way back (parked, or woken by the hook): it now counts
    those as spares (`_Group.spares`);
  * the idle timeout restarted at every wake-up, and the patcher's hook wakes waiting workers at every
    transition, so no thread ever retired under patches: it now counts from a thread's last request.
And one cost per patch: a thread that took an idle client's request during a patch declared itself
executing (LOW) before deferring it, which unparked every parked thread of the pool (the priority rule).
"""

from __future__ import annotations

import threading
from types import ModuleType

import pytest

import livepatch
from livepatch import Category
from livepatch.runtime.lifecycle import EventName
from sqlserver.server import pool
from tests.sqlserver.conftest import APP_V1, APP_V2, LineServer
from tests.support import wait_for

pytestmark = pytest.mark.timeout(120)


def _spec(app: ModuleType) -> livepatch.PatchSpec:
    return livepatch.patch_from_sources(
        {app.__name__: (APP_V1, APP_V2)}, category=Category.THREAD_LOCAL
    )


def _pool(server: LineServer) -> pool.ThreadPool:
    policy = server.server.policy
    assert isinstance(policy, pool.ThreadPool)
    return policy


def _group_states(prefix: str) -> list[str]:
    return [t.state for t in livepatch.statistics().threads if t.name.startswith(prefix)]


def test_parked_threads_count_as_spares_no_thread_is_created_for_them(line_factory, app):
    """A global patch held open by a CRITICAL thread of the test: every thread of the group parks. The
    group then has nobody waiting, which is what a blocked request's wait_begin(), the stall check and
    the listener's spare rule see -- but its threads all come back when the patch ends. Before the fix
    `wake_or_create` created a thread here."""
    server: LineServer = line_factory(policy="pool", pool_groups=1)
    group = _pool(server).groups[0]
    clients = [server.client() for _ in range(6)]
    for i, c in enumerate(clients):  # some traffic, so the group has more than its first thread
        assert c.ask(f"x{i}") == f"echo x{i}"
    hold, held = threading.Event(), threading.Event()

    def holder() -> None:  # a managed thread that keeps the transition quiescing until told
        with livepatch.managed_thread(role="test-holder", priority=livepatch.Priority.CRITICAL):
            held.set()
            hold.wait(60)
            livepatch.quiescence_point()  # parks: the last one, the patch applies

    h = threading.Thread(target=holder)
    h.start()
    assert held.wait(10)
    result: list[livepatch.PatchResult] = []
    patcher = threading.Thread(
        target=lambda: result.append(livepatch.apply_patch(_spec(app), method="global", timeout=30))
    )
    patcher.start()
    try:
        prefix = f"sql-pool-g{group.index}-"
        wait_for(
            lambda: (s := _group_states(prefix)) != [] and all(x == "parked" for x in s),
            what="every thread of the group parked",
        )
        with group.lock:
            before = group.threads
            # the listener parked inside its poll loop: still the group's listener
            assert before >= 2 and group.waiting == 0 and group.busy == 0 and group.listening
            group.wake_or_create()  # what wait_begin() and the stall check call
            assert group.starting == 0 and group.threads == before, "a thread was created"
    finally:
        hold.set()
        patcher.join(60)
        h.join(60)
    assert result and result[0].ok, result and result[0].reason
    assert all(c.ask("call") == "v2" for c in clients)
    assert livepatch.revert_patch(method="global", timeout=30).ok


def test_a_request_deferred_during_a_patch_unparks_nobody(line_factory, app):
    """A patch held open by a MEDIUM thread of the test: the waiting workers park, the listener
    (CRITICAL) keeps polling (the priority rule). An idle client sends its next request: the listener
    defers it (no transaction: it waits for the end of the patch) without declaring itself executing,
    so no parked worker is unparked. Before the fix the listener turned LOW first and the patch's
    events showed the parked workers unparked."""
    server: LineServer = line_factory(policy="pool", pool_groups=1)
    group = _pool(server).groups[0]
    client = server.client()
    assert client.ask("x") == "echo x"
    hold, held = threading.Event(), threading.Event()

    def holder() -> None:
        with livepatch.managed_thread(role="test-holder", priority=livepatch.Priority.MEDIUM):
            held.set()
            hold.wait(60)
            livepatch.quiescence_point()

    h = threading.Thread(target=holder)
    h.start()
    assert held.wait(10)
    result: list[livepatch.PatchResult] = []
    patcher = threading.Thread(
        target=lambda: result.append(livepatch.apply_patch(_spec(app), method="global", timeout=30))
    )
    patcher.start()
    try:
        prefix = f"sql-pool-g{group.index}-"

        def workers_parked_listener_polling() -> bool:
            states = _group_states(prefix)
            with group.lock:
                return (
                    group.listening
                    and group.threads >= 2
                    and states.count("parked") == group.threads - 1
                )

        wait_for(workers_parked_listener_polling, what="the workers parked, the listener polling")
        client.send("call")  # an idle session: deferred until the patch is over
        wait_for(lambda: bool(group.deferred), what="the request deferred")
    finally:
        hold.set()
        patcher.join(60)
        h.join(60)
    assert result and result[0].ok, result and result[0].reason
    unparked = [e.thread for e in result[0].events if e.name == EventName.UNPARKED]
    assert unparked == [], f"unparked by a deferred request: {unparked}"
    assert client.reply() == "v2"  # run after the patch, by the new version
    assert livepatch.revert_patch(method="global", timeout=30).ok


def test_idle_threads_retire_although_the_patchers_hook_keeps_waking_them(line_factory):
    """Extra workers of a group, then the wake-up hook called every few milliseconds (as the patcher
    does throughout each transition, and stress runs one every ~100 ms): each idle worker retires
    after the idle timeout all the same, down to the group's last thread. Before the fix every
    wake-up restarted the timeout: no thread ever retired."""
    server: LineServer = line_factory(policy="pool", pool_groups=1)
    p = _pool(server)
    group = p.groups[0]
    with group.lock:
        for _ in range(4):
            group.start_worker()
    wait_for(lambda: group.starting == 0 and group.waiting >= 4, what="the extra workers waiting")
    p.idle_timeout_s = 0.2  # read by each thread at each wait
    stop = threading.Event()

    def hook_caller() -> None:
        while not stop.is_set():
            p.wakeup_all()
            stop.wait(0.005)

    t = threading.Thread(target=hook_caller)
    t.start()
    try:
        wait_for(lambda: group.threads == 1, timeout=20, what="the idle workers retired")
    finally:
        stop.set()
        t.join(10)
    c = server.client()
    assert c.ask("x") == "echo x"  # the group's last thread still serves


def test_a_worker_that_goes_back_to_waiting_is_registered_medium(line_factory):
    """A worker that ran a request and then waits for work re-declares MEDIUM before it waits (no patch
    pending): left registered LOW, as it was before, it held back every park of the next global patch
    (the priority rule) until the hook had woken it and it had re-declared. Built step by step: B's
    `work` waits for A's lock, so another worker listens and runs A's COMMIT; afterwards one of the two
    threads that ran requests listens and the other waits."""
    server: LineServer = line_factory(policy="pool", pool_groups=1)
    group = _pool(server).groups[0]
    a, b = server.client(), server.client()
    assert a.ask("begin") == "BEGIN" and a.ask("lock") == "LOCKED"
    server.state.waiting_for_lock.clear()
    b.send("work")
    assert server.state.waiting_for_lock.wait(10)
    assert a.ask("commit") == "COMMIT"
    assert b.reply() == "v1"

    def settled() -> bool:
        with group.lock:
            return (
                group.busy == 0
                and group.starting == 0
                and group.listening
                and group.waiting == group.threads - 1
                and group.waiting >= 1
            )

    wait_for(settled, what="every thread but the listener waiting")
    with group.lock:
        assert group.waiting_low == 0, f"{group.waiting_low} waiting workers still registered LOW"
