"""A managed pool worker (integrations/futures.py WorkQueue.take) runs every task submitted after a local
patch was published on the new code, even when put() wakes it before the patch's wake-up hook does.

The CI failure this pins down (test_run_under_load[poolapp-local]): a connection's first request was
answered on the new code by one worker, its next one on the old code by another worker that had
waited through the start of the patch and was woken by put(): the point came before the wait, not
before the task. Here the queue is not registered with the wake-up hook, so only put() wakes the
worker: the order that lost the race, made certain."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import pytest

from livepatch.integrations.futures import WorkQueue
from livepatch.runtime import core as runtime
from tests.runtime.runtime_helpers import Versioned
from tests.support import wait_for

pytestmark = pytest.mark.timeout(60)

ROUNDS = 20


def _waiting(q: WorkQueue) -> bool:
    # the worker is blocked in the queue's condition (no event can say so from inside wait())
    return len(q._cond._waiters) == 1  # type: ignore[attr-defined]


def test_a_task_submitted_during_a_local_patch_runs_the_new_code() -> None:
    q = WorkQueue()  # built directly: not in the pools the wake-up hook wakes
    code = Versioned()
    results: queue.Queue[int] = queue.Queue()

    def worker() -> None:
        with runtime.managed_thread(role="pool-worker"):
            while True:
                task: Callable[[], int] | None = q.take()
                if task is None:
                    return
                results.put(task())

    t = threading.Thread(target=worker, name="pool-worker", daemon=True)
    t.start()
    try:
        for expected in range(1, ROUNDS + 1):
            wait_for(lambda: _waiting(q), what="the worker waiting for a task")
            patcher = threading.Thread(
                target=runtime.DEFAULT.run_local,
                args=(code.begin, code.end),
                kwargs={"timeout": 10},
                daemon=True,
            )
            patcher.start()
            # published: quiescence points now migrate, and the worker is still waiting
            wait_for(
                lambda: runtime.transition_flag().request is not None, what="the patch published"
            )
            assert _waiting(q)
            q.put(code.call)
            assert results.get(timeout=10) == expected  # the old code would answer expected - 1
            patcher.join(10)
            assert not patcher.is_alive()
            assert code.current == expected
    finally:
        q.put(None)  # the executor's shutdown signal: a task like any other
        t.join(10)
    assert not t.is_alive()
    assert runtime.DEFAULT.wait_idle(10)
