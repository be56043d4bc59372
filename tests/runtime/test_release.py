"""Parked threads leave their quiescence point without the registry lock (threads.py `_parked`).

They used to wait on `_threads_cv`: a thread woken by `notify_all` returns from `Condition.wait` holding
`_lock`, and then waits for the GIL, so ten released threads held the registry lock in turn while the
patcher, starting the next transition, waited for it (up to 0.8 s at load 22; docs/performance.md, core8).
Here the test thread takes `_lock` right after the transition returns and holds it: every released thread
must still get out of its point and run on. With the condition, none did until the lock was free.
"""

from __future__ import annotations

import threading

from livepatch.runtime.core import Runtime

THREADS = 10


def test_released_threads_run_on_while_the_registry_lock_is_held(rt: Runtime) -> None:
    for _ in range(5):
        _one_transition(rt)


def _one_transition(rt: Runtime) -> None:
    """Park ten busy threads once, release them, and hold `_lock` while they must leave their point."""
    stop = threading.Event()
    ready = threading.Barrier(THREADS + 1)
    passed = [threading.Event() for _ in range(THREADS)]
    in_transition = threading.Event()

    def worker(i: int) -> None:
        with rt.managed_thread("worker"):
            ready.wait()
            while not stop.is_set():
                before = in_transition.is_set()
                rt.quiescence_point()
                if before and not in_transition.is_set():
                    passed[i].set()  # out of the point that held it in the transition

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for t in ts:
        t.start()
    ready.wait()

    def action(threads: object) -> None:
        assert len(rt._registry.parked()) == THREADS
        in_transition.clear()

    in_transition.set()
    rt.run_global(action, timeout=10)
    try:
        with rt._lock:  # held while the released threads leave their point
            for i, ev in enumerate(passed):
                assert ev.wait(10), f"worker {i} could not leave its point without the lock"
    finally:
        stop.set()
        for t in ts:
            t.join(10)
