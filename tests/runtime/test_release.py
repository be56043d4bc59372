"""Parked threads leave their quiescence point without the registry lock (threads.py `_parked`).

They used to wait on `_threads_cv`: a thread woken by `notify_all` returns from `Condition.wait` holding
`_lock`, and then waits for the GIL, so ten released threads held the registry lock in turn while the
patcher, starting the next transition, waited for it (up to 0.8 s at load 22; docs/performance.md, core8).
Here the test thread takes `_lock` right after the transition returns and holds it: every released thread
must still get out of its point and run on. With the condition, none did until the lock was free.
"""

from __future__ import annotations

import threading
import time

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


def test_every_gate_is_free_again_however_the_transition_ends(rt: Runtime) -> None:
    """A parked thread holds its gate (threads.py `_parked`); whoever unparks it releases it. After a
    swap, a failing action, a deadline abort (one thread never reaches a point) and the priority rule's
    unparks, every thread is back at work and no gate is left held (a held gate would make the thread's
    next park return at once, or a release raise)."""
    from livepatch import Priority
    from livepatch.errors import PatchAborted

    stop = threading.Event()
    hold = threading.Event()  # the straggler blocks here, outside any quiescence point
    holding = threading.Event()
    ready = threading.Barrier(THREADS + 2)
    rounds = [0] * (THREADS + 1)

    def worker(i: int) -> None:
        with rt.managed_thread("worker"):
            ready.wait()
            while not stop.is_set():
                rt.quiescence_point()
                rounds[i] += 1
                if i == THREADS and hold.is_set():
                    holding.set()
                    while hold.is_set() and not stop.is_set():
                        threading.Event().wait(0.001)  # active, outside any quiescence point
                    holding.clear()

    def back_at_work() -> None:
        seen = list(rounds)
        for i in range(THREADS + 1):
            for _ in range(10_000):
                if rounds[i] > seen[i] + 1:
                    break
                threading.Event().wait(0.001)
            assert rounds[i] > seen[i] + 1, f"worker {i} did not get back to work"
        with rt._lock:
            held = [r.name for r in rt._registry.records.values() if r.gate.locked()]
        assert held == []

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS + 1)]
    for t in ts:
        t.start()
    ready.wait()
    try:
        for _ in range(3):
            rt.run_global(lambda threads: None, timeout=10)
            back_at_work()

            def fail(threads: object) -> None:
                raise ValueError("the action failed")

            try:
                rt.run_global(fail, timeout=10)
            except ValueError:
                pass
            back_at_work()
            hold.set()
            assert holding.wait(10)
            try:
                rt.run_global(lambda threads: None, timeout=0.2)
                raise AssertionError("a thread held outside its points should abort the transition")
            except PatchAborted:
                pass
            hold.clear()
            back_at_work()
        # The priority rule: a MEDIUM thread parks, then a running thread lowers its priority below
        # it, which unparks it (Registry.set_priority); the transition then completes.
        lower = threading.Event()
        medium_ready = threading.Barrier(3)

        def medium() -> None:
            with rt.managed_thread("medium", Priority.MEDIUM):
                medium_ready.wait()
                while not stop.is_set():
                    rt.quiescence_point()
                    threading.Event().wait(0.0005)

        def controller() -> None:
            with rt.managed_thread("controller", Priority.MEDIUM):
                medium_ready.wait()
                lower.wait(10)  # running, outside any point: the LOW workers and `medium` park
                rt.set_priority(Priority.LOW)
                rt.quiescence_point()

        extra = [
            threading.Thread(target=medium, daemon=True),
            threading.Thread(target=controller, daemon=True),
        ]
        for t in extra:
            t.start()
        medium_ready.wait()
        ts += extra
        result: list[object] = []
        patcher = threading.Thread(
            target=lambda: result.append(rt.run_global(lambda threads: None, timeout=10)),
            daemon=True,
        )
        patcher.start()
        for _ in range(10_000):
            with rt._lock:
                states = {r.name: r.state.value for r in rt._registry.records.values()}
            if sum(v == "parked" for v in states.values()) == THREADS + 2:  # all but the controller
                break
            threading.Event().wait(0.001)
        assert sum(v == "parked" for v in states.values()) == THREADS + 2, states
        lower.set()
        patcher.join(10)
        assert result, "the transition did not complete after the priority rule's unpark"
        extra[1].join(10)
        back_at_work()
    finally:
        stop.set()
        hold.clear()
        for t in ts:
            t.join(10)


def test_a_relay_that_never_arrives_does_not_keep_threads_parked(rt: Runtime) -> None:
    """The end of a global transition wakes the first unparked thread and each woken thread wakes the
    next (threads.py `_parked`). Here the relay starts at a record no thread owns, so nobody passes it
    on to the first real thread: every thread must still get back to work (within PARKED_RECHECK_S),
    and the next transitions must still complete."""
    from livepatch.runtime.registry import Priority, ThreadRecord, ThreadState
    from livepatch.runtime.threads import ThreadSide

    nobody = ThreadRecord(0, "nobody", "worker", Priority.LOW, ThreadState.RUNNING, 0)
    nobody.gate.acquire()
    rt._unpark_relayed = lambda records: ThreadSide._unpark_relayed([nobody, *records])  # type: ignore[method-assign]
    stop = threading.Event()
    ready = threading.Barrier(THREADS + 1)
    rounds = [0] * THREADS

    def worker(i: int) -> None:
        with rt.managed_thread("worker"):
            ready.wait()
            while not stop.is_set():
                rt.quiescence_point()
                rounds[i] += 1

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for t in ts:
        t.start()
    ready.wait()
    try:
        for _ in range(2):
            rt.run_global(lambda threads: None, timeout=10)
            seen = list(rounds)
            # well before the transition's deadline (10 s), which would also end a parked thread's wait
            bound = time.monotonic() + 5
            for i in range(THREADS):
                while rounds[i] <= seen[i] + 1 and time.monotonic() < bound:
                    threading.Event().wait(0.001)
                assert rounds[i] > seen[i] + 1, (
                    f"worker {i} stayed parked: the relay never reached it"
                )
    finally:
        stop.set()
        for t in ts:
            t.join(10)
