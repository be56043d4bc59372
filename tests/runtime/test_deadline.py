"""A global patch's deadline holds whatever the patcher thread does.

The patcher can be held up past the deadline: a wake-up hook that blocks (`with cond: cond.notify_all()`
while the application holds `cond`'s lock), a long garbage collection, a starved process (a stress run at
load 30 saw a 13.85 s sync against a 10 s deadline, swapped anyway). The threads a transition holds end it
themselves at the deadline (threads.py `_wait_global`), and the patcher never swaps after the deadline
(quiescence.py). Each test here holds the patcher in a blocking wake-up hook, which is what a stall looks
like from the threads' side; before the fix the first never released its parked thread until the hook
returned, and both swapped late.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from livepatch.errors import PatchAborted
from livepatch.runtime.core import Runtime
from livepatch.runtime.lifecycle import Outcome
from livepatch.runtime.registry import Priority
from tests.runtime.runtime_helpers import Versioned, fixture_source, loaded_app

TIMEOUT = 0.5  # the patch's deadline
SLACK = 15.0  # generous: holds at load 40; today's code never released the thread at all


class BlockingHook:
    """A wake-up hook that blocks until released; `entered` holds the time of its first call."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.t_entered = 0.0

    def __call__(self) -> None:
        if not self.entered.is_set():
            self.t_entered = time.monotonic()
            self.entered.set()
        self.release.wait(timeout=60)


@contextmanager
def in_background(fn: object) -> Iterator[list[object]]:
    """Run `fn()` on an unmanaged thread; yields the list its result (or exception) lands in."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())  # type: ignore[operator]
        except BaseException as exc:
            out.append(exc)

    t = threading.Thread(target=run, name="patcher", daemon=True)
    t.start()
    try:
        yield out
    finally:
        t.join(timeout=30)
        assert not t.is_alive(), "the patcher did not return"


@pytest.fixture
def app(rt: Runtime, tmp_path: Path) -> Iterator[ModuleType]:
    with loaded_app(rt, tmp_path, fixture_source("app_v1.py")) as mod:
        yield mod


def test_parked_threads_are_released_at_the_deadline_while_the_patcher_is_held_up(
    rt: Runtime, app: ModuleType
) -> None:
    from tests.runtime.test_patcher import spec_for

    hook = BlockingHook()
    released = threading.Event()

    def worker() -> None:
        with rt.managed_thread("worker", Priority.LOW):
            hook.entered.wait(timeout=60)  # the request is published: the point parks
            rt.quiescence_point()
            released.set()

    t = threading.Thread(target=worker, name="parked-worker", daemon=True)
    t.start()
    rt.add_wakeup_hook(hook)
    old = app.first.__code__
    try:
        with in_background(
            lambda: rt.apply_patch(spec_for(app), method="global", timeout=TIMEOUT)
        ) as out:
            try:
                assert hook.entered.wait(timeout=SLACK)
                assert released.wait(timeout=TIMEOUT + SLACK), (
                    "the parked thread was held past the deadline while the patcher was held up"
                )
                held_s = time.monotonic() - hook.t_entered
            finally:
                hook.release.set()
    finally:
        t.join(timeout=10)
    assert held_s < TIMEOUT + SLACK
    (r,) = out
    assert r.outcome is Outcome.ABORTED, r.reason  # type: ignore[union-attr]
    assert "deadline" in r.reason and "nothing was changed" in r.reason  # type: ignore[union-attr]
    assert rt.history()[-1] is r
    assert app.first.__code__ is old and app.first(1) == ("v1", 1)
    stats = rt.statistics()
    assert stats.transition is None and stats.generation == 0


def test_quiescence_seen_after_the_deadline_is_not_swapped(rt: Runtime) -> None:
    """No thread waits on the transition (the straggler deactivates after the deadline, so nobody
    ends it): the patcher, back from the hook, finds everyone quiescent but late, and aborts."""
    code = Versioned()
    hook = BlockingHook()
    leave = threading.Event()
    left = threading.Event()
    entered = threading.Event()

    def straggler() -> None:
        with rt.managed_thread("straggler", Priority.LOW):
            entered.set()
            leave.wait(timeout=60)  # never reaches a point
            rt.deactivate()
            left.set()

    t = threading.Thread(target=straggler, name="straggler", daemon=True)
    t.start()
    assert entered.wait(timeout=SLACK)
    rt.add_wakeup_hook(hook)
    try:
        with in_background(lambda: rt.run_global(code.swap, timeout=TIMEOUT)) as out:
            try:
                assert hook.entered.wait(timeout=SLACK)
                # The deadline was set before the hook first ran: wait until it has certainly passed.
                while time.monotonic() < hook.t_entered + TIMEOUT:
                    time.sleep(0.01)
                leave.set()
                assert left.wait(timeout=SLACK)
            finally:
                leave.set()
                hook.release.set()
    finally:
        t.join(timeout=10)
    (exc,) = out
    assert isinstance(exc, PatchAborted), exc
    assert "deadline" in str(exc) and "nothing was changed" in str(exc)
    assert code.swaps == 0
    assert rt.statistics().generation == 0 and rt.statistics().transition is None


def test_a_birth_waiting_on_the_transition_ends_it_at_the_deadline(rt: Runtime) -> None:
    """A thread waiting to be born while the patcher is held up (and a straggler keeps the transition
    from quiescence) is let in at the deadline."""
    code = Versioned()
    hook = BlockingHook()
    leave, entered, born = threading.Event(), threading.Event(), threading.Event()

    def straggler() -> None:
        with rt.managed_thread("straggler", Priority.LOW):
            entered.set()
            leave.wait(timeout=60)

    def newcomer() -> None:
        with rt.managed_thread("newcomer", Priority.LOW):
            born.set()

    t = threading.Thread(target=straggler, name="straggler", daemon=True)
    t.start()
    assert entered.wait(timeout=SLACK)
    rt.add_wakeup_hook(hook)
    n = threading.Thread(target=newcomer, name="newcomer", daemon=True)
    try:
        with in_background(lambda: rt.run_global(code.swap, timeout=TIMEOUT)) as out:
            try:
                assert hook.entered.wait(timeout=SLACK)
                n.start()
                assert born.wait(timeout=TIMEOUT + SLACK), "the birth waited past the deadline"
            finally:
                leave.set()
                hook.release.set()
    finally:
        t.join(timeout=10)
        if n.ident is not None:
            n.join(timeout=10)
    (exc,) = out
    assert isinstance(exc, PatchAborted), exc
    assert "deadline" in str(exc)
    assert code.swaps == 0


def test_the_abort_reason_describes_the_stragglers_as_they_were_at_the_deadline(
    rt: Runtime,
) -> None:
    """The threads end the transition at the deadline while the patcher is held up; released, the
    straggler moves on (a pool worker finishes its task, goes back to MEDIUM and waits for the next one)
    before the patcher writes the reason. The reason must say what held the patch at the deadline (the
    straggler at LOW, where it was then), not what the thread does later: reading the live records
    afterwards made tests/runtime/test_pool.py's naive-deadlock test fail about 1 run in 8 at load 4."""
    code = Versioned()
    hook = BlockingHook()
    entered, leave, moved, done = (threading.Event() for _ in range(4))
    released = threading.Event()

    def stuck_at_the_deadline() -> None:
        entered.set()
        leave.wait(timeout=60)

    def waiting_elsewhere_later() -> None:
        moved.set()
        done.wait(timeout=60)

    def straggler() -> None:
        with rt.managed_thread("straggler", Priority.LOW):
            stuck_at_the_deadline()  # never reaches a point before the deadline
            rt.set_priority(Priority.MEDIUM)
            waiting_elsewhere_later()

    def parker() -> None:
        with rt.managed_thread("parker", Priority.LOW):  # LOW: it parks beside a LOW straggler
            hook.entered.wait(timeout=60)  # the request is published: the point parks
            rt.quiescence_point()
            released.set()

    threads = [
        threading.Thread(target=straggler, name="straggler", daemon=True),
        threading.Thread(target=parker, name="parker", daemon=True),
    ]
    for t in threads:
        t.start()
    assert entered.wait(timeout=SLACK)
    rt.add_wakeup_hook(hook)
    try:
        with in_background(lambda: rt.run_global(code.swap, timeout=TIMEOUT)) as out:
            try:
                assert hook.entered.wait(timeout=SLACK)
                assert released.wait(timeout=TIMEOUT + SLACK), "not released at the deadline"
                leave.set()  # the transition is over: the straggler moves on
                assert moved.wait(timeout=SLACK)
            finally:
                leave.set()
                hook.release.set()
    finally:
        done.set()
        for t in threads:
            t.join(timeout=10)
    (exc,) = out
    assert isinstance(exc, PatchAborted), exc
    reason = str(exc)
    assert "straggler (role straggler, priority LOW)" in reason, reason
    assert "stuck_at_the_deadline" in reason and "waiting_elsewhere_later" not in reason, reason
    assert "parker" not in reason, reason
    assert code.swaps == 0


# ---- the local transition's deadline ----------------------------------------------------------------
# A local transition holds no thread, but while it migrates the moved threads run the new code and the
# others the old. With only the patcher checking its deadline, a patcher held up left that mix for as long
# as it was held, and then committed a transition that had completed past its deadline. The threads that
# pass a point after the deadline now reverse it themselves (threads.py `_local_deadline`).


class Mover:
    """A managed thread passing quiescence points in a loop; after each it reads `code` and notes when it
    first saw the new version and, after that, the old one again."""

    def __init__(self, rt: Runtime, code: Versioned, name: str) -> None:
        self.rt, self.code = rt, code
        self.moved, self.moved_back, self.stop = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def run(self) -> None:
        with self.rt.managed_thread(self.thread.name, Priority.LOW):
            while not self.stop.is_set():
                self.rt.quiescence_point()
                v = self.code.call()
                if v == 1:
                    self.moved.set()
                elif self.moved.is_set():
                    self.moved_back.set()
                self.stop.wait(0.001)  # pacing only: every wait in the test is on an event


def test_a_local_transition_is_reversed_by_the_threads_at_the_deadline_while_the_patcher_is_held_up(
    rt: Runtime,
) -> None:
    code = Versioned()
    hook = BlockingHook()
    leave, entered = threading.Event(), threading.Event()

    def straggler() -> None:
        with rt.managed_thread("straggler", Priority.LOW):
            entered.set()
            leave.wait(timeout=60)  # reaches no point until the test lets it

    s = threading.Thread(target=straggler, name="straggler", daemon=True)
    s.start()
    assert entered.wait(timeout=SLACK)
    mover = Mover(rt, code, "mover")
    mover.thread.start()
    rt.add_wakeup_hook(hook)
    try:
        with in_background(lambda: rt.run_local(code.begin, code.end, timeout=TIMEOUT)) as out:
            try:
                assert hook.entered.wait(timeout=SLACK)
                assert mover.moved.wait(timeout=SLACK), "the mover never ran the new code"
                assert mover.moved_back.wait(timeout=TIMEOUT + SLACK), (
                    "the moved thread kept the new code past the deadline while the patcher was held up"
                )
                assert (
                    not hook.release.is_set()
                )  # the patcher is still in the hook: the threads did it
            finally:
                hook.release.set()
                leave.set()
    finally:
        mover.stop.set()
        mover.thread.join(timeout=10)
        s.join(timeout=10)
    (exc,) = out
    assert isinstance(exc, PatchAborted), exc
    assert "straggler" in str(exc) and "nothing was changed" in str(exc), exc
    assert code.current == 0 and code.call() == 0
    stats = rt.statistics()
    assert stats.generation == 0 and stats.transition is None


def test_a_local_transition_complete_by_the_deadline_is_committed_by_a_late_patcher(
    rt: Runtime,
) -> None:
    """The other side: every thread moved in time, the patcher was held up past the deadline; the
    threads passing points after the deadline leave it alone, and the patcher commits it."""
    code = Versioned()
    hook = BlockingHook()
    movers = [Mover(rt, code, f"mover-{i}") for i in range(3)]
    for m in movers:
        m.thread.start()
    rt.add_wakeup_hook(hook)
    try:
        with in_background(lambda: rt.run_local(code.begin, code.end, timeout=TIMEOUT)) as out:
            try:
                assert hook.entered.wait(timeout=SLACK)
                for m in movers:
                    assert m.moved.wait(timeout=SLACK)
                while time.monotonic() < hook.t_entered + TIMEOUT:  # past the deadline for sure
                    time.sleep(0.01)
                for m in movers:  # each passes a point past the deadline and stays on the new code
                    m.moved.clear()
                    assert m.moved.wait(timeout=SLACK)
                assert not any(m.moved_back.is_set() for m in movers)
            finally:
                hook.release.set()
    finally:
        for m in movers:
            m.stop.set()
            m.thread.join(timeout=10)
    (r,) = out
    assert not isinstance(r, BaseException), r
    assert code.current == 1
    assert rt.statistics().generation == 1 and rt.statistics().transition is None
