"""The quiescence protocols on their own (no code objects): real threads, a version flipped at the swap."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from livepatch.errors import PatchAborted, PatchRefused
from livepatch.runtime.core import Runtime
from livepatch.runtime.events import Recorder
from livepatch.runtime.lifecycle import EventName
from livepatch.runtime.registry import Priority
from tests.runtime.runtime_helpers import Versioned, Workers, wait_for


def test_global_many_transitions_no_thread_sees_two_versions(rt: Runtime) -> None:
    code = Versioned()
    w = Workers(rt, code, 8).start()
    try:
        for _ in range(200):
            rec = Recorder()
            t = rt.run_global(code.swap, timeout=10, recorder=rec)
            assert len(t.reached) == 8
            assert sum(1 for e in rec.events() if e.name is EventName.REACHED) == 8
        w.wait_requests(5)
    finally:
        w.stop()
    assert w.errors == []
    assert code.swaps == 200
    assert rt.statistics().generation == 200


def test_local_many_transitions_no_thread_sees_two_versions(rt: Runtime) -> None:
    code = Versioned()
    w = Workers(rt, code, 8).start()
    try:
        for _ in range(200):
            rec = Recorder()
            rt.run_local(code.begin, code.end, timeout=10, recorder=rec)
            migrated = {e.thread for e in rec.events() if e.name is EventName.MIGRATED}
            assert migrated <= {f"worker-{i}" for i in range(8)}
        w.wait_requests(5)
    finally:
        w.stop()
    assert w.errors == []
    assert code.current == 200
    assert rt.statistics().generation == 200


def test_global_and_local_alternate(rt: Runtime) -> None:
    code = Versioned()
    w = Workers(rt, code, 6).start()
    try:
        for i in range(200):
            if i % 2:
                rt.run_global(code.swap, timeout=10)
            else:
                rt.run_local(code.begin, code.end, timeout=10)
    finally:
        w.stop()
    assert w.errors == []
    assert code.current == 200
    stats = rt.statistics()
    assert stats.transition is None


def _stuck_thread(
    rt: Runtime, release: threading.Event, entered: threading.Event
) -> threading.Thread:
    """A managed thread that never reaches a quiescence point until `release` is set."""

    def run() -> None:
        with rt.managed_thread("stuck", Priority.LOW):
            entered.set()
            release.wait(timeout=60)

    t = threading.Thread(target=run, name="stuck-thread", daemon=True)
    t.start()
    assert entered.wait(timeout=10)
    return t


def test_global_deadline_aborts_and_names_the_straggler(rt: Runtime) -> None:
    code = Versioned()
    release, entered = threading.Event(), threading.Event()
    stuck = _stuck_thread(rt, release, entered)
    w = Workers(rt, code, 4, priority=Priority.LOW).start()
    timeout = 0.3
    try:
        t0 = time.monotonic()
        with pytest.raises(PatchAborted) as exc:
            rt.run_global(code.swap, timeout=timeout, use_priorities=False)
        elapsed = time.monotonic() - t0
        w.wait_requests(3)  # everyone was released and keeps working
    finally:
        release.set()
        stuck.join(timeout=10)
        w.stop()
    msg = str(exc.value)
    assert "stuck-thread (role stuck, priority LOW)" in msg
    assert "worker-" not in msg
    assert elapsed < timeout + 1.0
    assert code.swaps == 0 and code.current == 0
    assert rt.statistics().generation == 0
    assert max(w.max_gap_s) < timeout + 1.0  # nobody stayed parked much beyond the deadline
    assert w.errors == []


def test_local_deadline_reverses_the_transition(rt: Runtime) -> None:
    code = Versioned()
    release, entered = threading.Event(), threading.Event()
    stuck = _stuck_thread(rt, release, entered)
    w = Workers(rt, code, 4).start()
    rec = Recorder()
    try:
        with pytest.raises(PatchAborted) as exc:
            rt.run_local(code.begin, code.end, timeout=0.3, recorder=rec)
        w.wait_requests(3)
    finally:
        release.set()
        stuck.join(timeout=10)
        w.stop()
    assert "stuck-thread" in str(exc.value)
    assert "reversed, nothing was changed" in str(exc.value)
    assert code.current == 0 and code.call() == 0
    stats = rt.statistics()
    assert stats.generation == 0 and stats.transition is None
    assert w.errors == []
    # the workers did move forwards, then back
    names = [e.name for e in rec.events()]
    assert EventName.MIGRATED in names and EventName.MOVED_BACK in names


def test_birth_waits_during_global_and_starts_in_new_generation(rt: Runtime) -> None:
    code = Versioned()
    release, entered = threading.Event(), threading.Event()
    stuck = _stuck_thread(rt, release, entered)
    born = threading.Event()
    born_generation: list[int] = []

    def newborn() -> None:
        with rt.managed_thread("newborn"):
            born_generation.append(rt.current_generation())
            born.set()

    result: list[object] = []
    patcher = threading.Thread(
        target=lambda: result.append(rt.run_global(code.swap, timeout=30)), daemon=True
    )
    patcher.start()
    wait_for(lambda: rt.statistics().transition == "global", what="global transition")
    baby = threading.Thread(target=newborn, daemon=True)
    baby.start()
    # The baby cannot be born while the stuck thread keeps the transition open.
    assert not born.wait(timeout=0.2)
    release.set()  # the stuck thread dies: death completes quiescence
    stuck.join(timeout=10)
    patcher.join(timeout=30)
    baby.join(timeout=10)
    assert born.is_set() and result
    assert born_generation == [1]
    assert code.swaps == 1


def test_deactivated_thread_is_not_waited_for_and_activate_waits_for_global(rt: Runtime) -> None:
    code = Versioned()
    inactive, may_activate, activated = threading.Event(), threading.Event(), threading.Event()
    gens: list[int] = []

    def cached_connection_thread() -> None:
        with rt.managed_thread("connection"):
            rt.deactivate()
            inactive.set()
            may_activate.wait(timeout=30)
            rt.activate()
            gens.append(rt.current_generation())
            activated.set()

    t = threading.Thread(target=cached_connection_thread, daemon=True)
    t.start()
    assert inactive.wait(timeout=10)
    entered_action = threading.Event()
    leave_action = threading.Event()

    def slow_swap(parked: object) -> None:
        entered_action.set()
        code.swap()
        assert leave_action.wait(timeout=30)

    patcher = threading.Thread(target=lambda: rt.run_global(slow_swap, timeout=10), daemon=True)
    patcher.start()
    assert entered_action.wait(timeout=10)  # quiescent although the inactive thread never parked
    may_activate.set()
    assert not activated.wait(timeout=0.2)  # activation waits while the swap runs
    leave_action.set()
    patcher.join(timeout=10)
    assert activated.wait(timeout=10)
    t.join(timeout=10)
    assert gens == [1]


def test_activate_during_local_migrates_at_once(rt: Runtime) -> None:
    code = Versioned()
    inactive, may_activate, done = threading.Event(), threading.Event(), threading.Event()
    seen: list[tuple[int, int]] = []
    release, entered = threading.Event(), threading.Event()
    stuck = _stuck_thread(rt, release, entered)  # keeps the local transition open

    def cached() -> None:
        with rt.managed_thread("connection"):
            rt.deactivate()
            inactive.set()
            may_activate.wait(timeout=30)
            rt.activate()
            seen.append((rt.current_generation(), code.call()))
            done.set()
            release.wait(timeout=30)

    t = threading.Thread(target=cached, daemon=True)
    t.start()
    assert inactive.wait(timeout=10)
    rec = Recorder()
    patcher = threading.Thread(
        target=lambda: rt.run_local(code.begin, code.end, timeout=30, recorder=rec), daemon=True
    )
    patcher.start()
    wait_for(lambda: rt.statistics().transition == "local", what="local transition")
    may_activate.set()
    assert done.wait(timeout=10)
    release.set()
    stuck.join(timeout=10)
    t.join(timeout=10)
    patcher.join(timeout=10)
    assert seen == [(1, 1)]
    assert any(e.name is EventName.MIGRATED and e.thread == t.name for e in rec.events())


@contextmanager
def _low_task_and_medium_waiter(
    rt: Runtime, use_priorities: bool
) -> Iterator[tuple[threading.Event, Recorder, Versioned]]:
    """A LOW thread in a long task (no quiescence point until the test sets `finish`), a MEDIUM thread
    passing points all the time, and a global transition running on a patcher thread. Yields (finish,
    the transition's recorder, the code it swaps); at the end everything is joined."""
    code = Versioned()
    low_in_task, finish = threading.Event(), threading.Event()
    stop = threading.Event()

    def low() -> None:
        with rt.managed_thread("worker", Priority.LOW):
            low_in_task.set()
            finish.wait(timeout=30)  # a long task: no quiescence point meanwhile
            rt.quiescence_point()
            stop.wait(timeout=30)

    def medium() -> None:
        with rt.managed_thread("waiter", Priority.MEDIUM):
            while not stop.is_set():
                rt.quiescence_point()
                time.sleep(0)

    tl = threading.Thread(target=low, name="low", daemon=True)
    tm = threading.Thread(target=medium, name="medium", daemon=True)
    tl.start()
    tm.start()
    assert low_in_task.wait(timeout=10)
    rec = Recorder()
    patcher = threading.Thread(
        target=lambda: rt.run_global(
            code.swap, timeout=30, use_priorities=use_priorities, recorder=rec
        ),
        daemon=True,
    )
    patcher.start()
    try:
        yield finish, rec, code
    finally:
        finish.set()
        patcher.join(timeout=30)
        stop.set()
        tl.join(timeout=10)
        tm.join(timeout=10)


def _reached(rec: Recorder) -> list[str | None]:
    return [e.thread for e in rec.events() if e.name is EventName.REACHED]


def test_priority_rule_medium_parks_only_after_low(rt: Runtime) -> None:
    """A MEDIUM thread passing quiescence points does not park while a LOW thread still runs."""
    with _low_task_and_medium_waiter(rt, use_priorities=True) as (finish, rec, code):
        wait_for(lambda: rt.statistics().transition == "global", what="global transition")
        # Let the medium thread pass many quiescence points: it must not park.
        t_end = time.monotonic() + 0.2
        while time.monotonic() < t_end:
            assert rt.statistics().by_state.get("parked", 0) == 0
            time.sleep(0.005)
        finish.set()
    assert _reached(rec) == ["low", "medium"]
    assert code.swaps == 1


def test_without_priorities_medium_parks_first(rt: Runtime) -> None:
    with _low_task_and_medium_waiter(rt, use_priorities=False) as (finish, rec, code):
        wait_for(lambda: rt.statistics().by_state.get("parked", 0) == 1, what="medium parked")
        finish.set()
    assert _reached(rec) == ["medium", "low"]
    assert code.swaps == 1


class _WorkQueue:
    """Threads blocked waiting for work: only a wake-up hook gets them to a quiescence point."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.cv = threading.Condition()
        self.stop = False
        self.wakeups = 0

    def wake(self) -> None:
        with self.cv:
            self.wakeups += 1
            self.cv.notify_all()

    def worker(self, ready: threading.Barrier) -> None:
        with self.rt.managed_thread("sleeper", Priority.MEDIUM):
            ready.wait(timeout=10)
            while True:
                self.rt.quiescence_point()
                with self.cv:
                    if self.stop:
                        return
                    self.cv.wait()


@pytest.mark.parametrize("method", ["global", "local"])
def test_wakeup_hooks_reach_blocked_threads_and_a_raising_hook_is_logged(
    rt: Runtime, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    q = _WorkQueue(rt)
    ready = threading.Barrier(5)
    ts = [threading.Thread(target=q.worker, args=(ready,), daemon=True) for _ in range(4)]
    for t in ts:
        t.start()
    ready.wait(timeout=10)

    def bad_hook() -> None:
        raise RuntimeError("hook failed")

    rt.add_wakeup_hook(bad_hook)
    rt.add_wakeup_hook(q.wake)
    code = Versioned()
    try:
        with caplog.at_level(logging.ERROR, logger="livepatch.runtime"):
            for _ in range(20):
                if method == "global":
                    rt.run_global(code.swap, timeout=10)
                else:
                    rt.run_local(code.begin, code.end, timeout=10)
    finally:
        rt.remove_wakeup_hook(q.wake)
        rt.remove_wakeup_hook(bad_hook)
        with q.cv:
            q.stop = True
            q.cv.notify_all()
        for t in ts:
            t.join(timeout=10)
    assert code.current == 20
    assert q.wakeups >= 20
    failures = [r for r in caplog.records if "wake-up hook" in r.getMessage()]
    assert 1 <= len(failures) <= 20  # logged once per patch, not once per call


def test_the_patcher_must_not_be_managed(rt: Runtime) -> None:
    code = Versioned()
    errors: list[BaseException] = []

    def run() -> None:
        with rt.managed_thread("oops"):
            for call in (
                lambda: rt.run_global(code.swap, timeout=1),
                lambda: rt.run_local(code.begin, code.end, timeout=1),
            ):
                try:
                    call()
                except PatchRefused as e:
                    errors.append(e)

    t = threading.Thread(target=run, name="managed-patcher", daemon=True)
    t.start()
    t.join(timeout=10)
    assert len(errors) == 2
    assert all("managed thread (managed-patcher)" in str(e) for e in errors)
    assert code.current == 0


def test_failing_action_releases_everyone_and_changes_no_generation(rt: Runtime) -> None:
    code = Versioned()
    w = Workers(rt, code, 4).start()

    def failing(parked: object) -> None:
        raise ValueError("swap failed")

    try:
        with pytest.raises(ValueError, match="swap failed"):
            rt.run_global(failing, timeout=10)
        w.wait_requests(3)
        rt.run_global(code.swap, timeout=10)  # the next transition works
        w.wait_requests(3)
    finally:
        w.stop()
    assert rt.statistics().generation == 1
    assert w.errors == []


def test_thread_api_errors_and_unmanaged_threads(rt: Runtime) -> None:
    rt.quiescence_point()  # unmanaged: a no-op
    for fn in (rt.deactivate, rt.activate, lambda: rt.set_priority(Priority.MEDIUM)):
        with pytest.raises(RuntimeError, match="managed thread"):
            fn()
    with rt.managed_thread():
        nested = rt.managed_thread()
        with pytest.raises(RuntimeError, match="already active"):
            nested.__enter__()
    with pytest.raises(TypeError):
        rt.add_wakeup_hook(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        rt.remove_wakeup_hook(lambda: None)


def test_statistics_by_generation_state_and_priority(rt: Runtime) -> None:
    gate = threading.Event()
    ready = threading.Barrier(4)

    def run(prio: Priority, inactive: bool) -> None:
        with rt.managed_thread("r", prio):
            if inactive:
                rt.deactivate()
            ready.wait(timeout=10)
            gate.wait(timeout=30)

    specs = [(Priority.LOW, False), (Priority.MEDIUM, True), (Priority.CRITICAL, False)]
    ts = [threading.Thread(target=run, args=s, daemon=True) for s in specs]
    for t in ts:
        t.start()
    ready.wait(timeout=10)
    try:
        stats = rt.statistics()
        assert stats.managed == 3
        assert stats.by_state == {"running": 2, "inactive": 1}
        assert stats.by_priority == {"LOW": 1, "MEDIUM": 1, "CRITICAL": 1}
        assert stats.by_generation == {stats.generation: 3}
        d = json.loads(json.dumps(stats.to_dict()))
        assert d["managed"] == 3 and d["by_generation"] == {str(stats.generation): 3}
        assert sorted(t["priority"] for t in d["threads"]) == ["CRITICAL", "LOW", "MEDIUM"]
    finally:
        gate.set()
        for t in ts:
            t.join(timeout=10)
    assert rt.statistics().managed == 0


def test_a_reversal_that_cannot_finish_in_time_completes_in_the_background(rt: Runtime) -> None:
    code = Versioned()
    moved, a_release = threading.Event(), threading.Event()
    b_release, b_entered = threading.Event(), threading.Event()
    a_gens: list[int] = []

    def moves_then_blocks() -> None:
        with rt.managed_thread("a"):
            while not a_release.is_set() or rt.current_generation() != 0:
                rt.quiescence_point()
                a_gens.append(rt.current_generation())
                if rt.current_generation() > 0 and not moved.is_set():
                    moved.set()
                    a_release.wait(timeout=60)  # blocked, holding the new generation

    stuck = _stuck_thread(rt, b_release, b_entered)
    a = threading.Thread(target=moves_then_blocks, name="mover", daemon=True)
    a.start()
    try:
        with pytest.raises(PatchAborted, match=r"reversing: .*mover"):
            rt.run_local(code.begin, code.end, timeout=0.3)
        assert moved.is_set()
        assert rt.statistics().transition == "local"  # still reversing
        assert code._use_new is not None  # the dispatch stays until the mover moves back
        with pytest.raises(PatchAborted, match="still in progress"):
            rt.run_global(code.swap, timeout=0.2)
        a_release.set()
        wait_for(lambda: rt.statistics().transition is None, what="the background reversal")
    finally:
        a_release.set()
        b_release.set()
        a.join(timeout=10)
        stuck.join(timeout=10)
    assert code._use_new is None and code.current == 0
    assert rt.statistics().generation == 0
    assert set(a_gens) <= {0, 1} and a_gens[-1] == 0


def test_unmanaged_threads_follow_the_newest_generation_during_a_local_transition(
    rt: Runtime,
) -> None:
    code = Versioned()
    entered, ask, answered, release = (threading.Event() for _ in range(4))
    seen_managed: list[int] = []
    seen_unmanaged: list[int] = []

    def managed_unmoved() -> None:
        with rt.managed_thread("slow"):
            entered.set()
            ask.wait(timeout=30)  # no quiescence point: it stays in the old generation
            seen_managed.append(code.call())
            answered.set()
            release.wait(timeout=30)

    m = threading.Thread(target=managed_unmoved, daemon=True)
    m.start()
    assert entered.wait(timeout=10)
    patcher = threading.Thread(
        target=lambda: rt.run_local(code.begin, code.end, timeout=30), daemon=True
    )
    patcher.start()
    try:
        wait_for(lambda: rt.statistics().transition == "local", what="local transition")
        u = threading.Thread(target=lambda: seen_unmanaged.append(code.call()))
        u.start()
        u.join(timeout=10)
        ask.set()
        assert answered.wait(timeout=10)
    finally:
        release.set()
        m.join(timeout=10)
        patcher.join(timeout=30)
    assert seen_unmanaged == [1]  # the newest generation
    assert seen_managed == [0]  # its own, older generation: the same code answered differently
    assert code.current == 1


@pytest.mark.parametrize("method", ["global", "local"])
def test_transition_flag_pattern_reaches_quiescence_like_the_call(rt: Runtime, method: str) -> None:
    """`if flag.request is not None: rt.quiescence_point()` (kvserver's event loop) lets transitions
    complete, and the flag reads None again once they are done."""
    flag = rt.transition_flag()
    assert flag.request is None
    code = Versioned()
    stop, running = threading.Event(), threading.Event()
    pending_seen: list[bool] = []
    iterations = [0]

    def loop() -> None:
        with rt.managed_thread("flag-loop", Priority.CRITICAL):
            running.set()
            while not stop.is_set():
                iterations[0] += 1
                if flag.request is not None:
                    pending_seen.append(True)
                    rt.quiescence_point()
                time.sleep(0)  # yield the GIL, like an event loop's epoll call

    t = threading.Thread(target=loop, name="flag-loop", daemon=True)
    t.start()
    assert running.wait(timeout=10)
    try:
        for _ in range(20):
            if method == "global":
                rt.run_global(code.swap, timeout=5.0)
            else:
                rt.run_local(code.begin, code.end, timeout=5.0)
            assert flag.request is None
    finally:
        stop.set()
        t.join(timeout=10)
    assert code.current == 20
    assert pending_seen  # the loop saw pending transitions through the flag and took part
    assert iterations[0] > 0


# ---- the GIL switch interval: short only while the patcher waits for threads ---------------------------


class _LateSleeper:
    """A managed thread that no first hook call of a transition lets go to its next point: the patcher's
    first wait times out, so the transition stalls. A later call lets it go once `ready()` (and runs
    `on_kick`), once per transition (a second kick could outlive the transition). Call `reset()` before
    each transition."""

    def __init__(self, rt: Runtime, ready: Callable[[], bool], on_kick: Callable[[], None]) -> None:
        self.rt = rt
        self.ready = ready
        self.on_kick = on_kick
        self.calls = 0
        self.kicked = False
        self.kicks = 0
        self.kick, self.stop = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.rt.managed_thread("sleeper"):
            while not self.stop.is_set():
                self.rt.quiescence_point()
                self.kick.wait(timeout=30)
                self.kick.clear()

    def reset(self) -> None:
        self.calls, self.kicked = 0, False

    def hook(self) -> None:
        self.calls += 1
        if self.calls >= 2 and not self.kicked and self.ready():
            self.kicked = True
            self.on_kick()
            self.kicks += 1
            self.kick.set()

    def __enter__(self) -> _LateSleeper:
        self.thread.start()
        self.rt.add_wakeup_hook(self.hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self.rt.remove_wakeup_hook(self.hook)
        self.stop.set()
        self.kick.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("method", ["global", "local"])
def test_the_switch_interval_is_short_while_a_global_transition_stalls_and_restored_after(
    rt: Runtime,
    method: str,
) -> None:
    """Global: the sleeper goes only once the interval is short, so each transition completes only if the
    stall shortened it; it is back after. Local: the interval is left alone."""
    before = sys.getswitchinterval()
    code = Versioned()
    w = Workers(rt, code, 4).start()
    at_kick: list[float] = []

    def ready() -> bool:
        return method == "local" or sys.getswitchinterval() < before / 10

    try:
        with _LateSleeper(rt, ready, lambda: at_kick.append(sys.getswitchinterval())) as sleeper:
            for i in range(10):
                sleeper.reset()
                if method == "global":
                    rt.run_global(code.swap, timeout=10)
                else:
                    rt.run_local(code.begin, code.end, timeout=10)
                assert sys.getswitchinterval() == before
                assert sleeper.kicks == i + 1
    finally:
        w.stop()
    if method == "local":
        assert set(at_kick) == {before}
    assert code.current == 10
    assert w.errors == []


@pytest.mark.parametrize("method", ["global", "local"])
def test_the_switch_interval_is_restored_after_an_abort(rt: Runtime, method: str) -> None:
    before = sys.getswitchinterval()
    code = Versioned()
    release, entered = threading.Event(), threading.Event()
    stuck = _stuck_thread(rt, release, entered)
    try:
        with pytest.raises(PatchAborted):
            if method == "global":
                rt.run_global(code.swap, timeout=0.2)
            else:
                rt.run_local(code.begin, code.end, timeout=0.2)
        assert sys.getswitchinterval() == before
    finally:
        release.set()
        stuck.join(timeout=10)
    assert rt.statistics().transition is None
    assert code.current == 0


def test_a_switch_interval_set_by_the_application_during_a_transition_wins(rt: Runtime) -> None:
    before = sys.getswitchinterval()
    code = Versioned()
    shortened: list[float] = []

    def tune() -> None:  # e.g. the server tunes the interval while the transition stalls
        shortened.append(sys.getswitchinterval())
        sys.setswitchinterval(0.001)

    try:
        with _LateSleeper(rt, lambda: sys.getswitchinterval() < before / 10, tune) as sleeper:
            sleeper.reset()
            rt.run_global(code.swap, timeout=10)
        assert shortened[0] < before / 10  # it had been shortened when the application changed it
        assert sys.getswitchinterval() == pytest.approx(0.001)
    finally:
        sys.setswitchinterval(before)
    assert code.current == 1
