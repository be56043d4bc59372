"""The birth rule: under the priority rule a thread may be born into a quiescing global transition while a
lower-priority thread still runs (registry.py's theory of operation; docs/runtime.md, "Thread pools").

Why: a thread pool creates a worker exactly when all of a group's workers wait for a lock whose COMMIT
nobody listens for. Made to wait for the end of the patch, that worker was a deadlock until the deadline
(figure 6, docs/results-sql.md). Naive quiescence, LOW births and activations keep waiting.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import settings
from hypothesis.stateful import invariant, precondition, rule

from livepatch.runtime.core import Runtime
from livepatch.runtime.registry import Phase, PointAction, Priority, Registry, ThreadState
from tests.runtime.runtime_helpers import Versioned, wait_for
from tests.runtime.test_registry_model import RUNNING, M, RegistryModel, priorities

LOW, MEDIUM, CRITICAL = Priority.LOW, Priority.MEDIUM, Priority.CRITICAL

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------------- the registry alone
def test_a_birth_above_a_running_lower_thread_enters_a_quiescing_transition() -> None:
    reg = Registry()
    worker = reg.birth(1, "worker", "pool-worker", LOW)  # executing: blocked on a lock, say
    reg.begin_global(use_priorities=True)
    assert not reg.can_enter()  # activations still wait
    assert not reg.can_be_born(LOW)  # nothing is lower than LOW
    assert reg.can_be_born(MEDIUM) and reg.can_be_born(CRITICAL)
    spare = reg.birth(2, "spare", "pool-worker", MEDIUM)
    assert spare.state is ThreadState.RUNNING and spare.generation == 0
    assert reg.at_point(spare) is PointAction.RETURN  # the priority rule: the LOW worker runs
    assert not reg.quiescent()
    # Parked: threads above LOW may park now (the patcher calls the hooks again).
    assert reg.at_point(worker) is PointAction.PARK_NOTIFY
    assert not reg.can_be_born(MEDIUM)  # nothing below MEDIUM runs any more
    assert reg.can_be_born(CRITICAL)  # the spare (MEDIUM) still runs
    assert reg.at_point(spare) is PointAction.PARK_NOTIFY
    assert reg.quiescent()
    assert not any(reg.can_be_born(p) for p in Priority)  # quiescent stays quiescent
    reg.start_swap()
    assert reg.transition is not None and reg.transition.phase is Phase.SWAPPING
    assert not any(reg.can_be_born(p) for p in Priority)
    reg.finish_global(swapped=True)
    assert spare.generation == worker.generation == 1
    assert all(reg.can_be_born(p) for p in Priority)


def test_naive_quiescence_keeps_every_birth_waiting() -> None:
    reg = Registry()
    reg.birth(1, "worker", "pool-worker", LOW)
    reg.begin_global(use_priorities=False)
    assert not any(reg.can_be_born(p) for p in Priority)
    with pytest.raises(RuntimeError, match="global transition"):
        reg.birth(2, "spare", "pool-worker", MEDIUM)


def test_a_local_transition_admits_every_birth_in_its_target() -> None:
    reg = Registry()
    reg.birth(1, "worker", "pool-worker", LOW)
    reg.begin_local()
    assert all(reg.can_be_born(p) for p in Priority)
    assert reg.birth(2, "spare", "pool-worker", MEDIUM).generation == 1


class BirthRuleModel(RegistryModel):
    """The registry model (test_registry_model.py) plus births during a global transition, allowed
    exactly by the birth rule; the model's invariants (the priority rule among them) must still hold,
    and a quiescent transition must stay quiescent until it ends (the patcher checks it twice)."""

    def __init__(self) -> None:
        super().__init__()
        self.was_quiet = False

    @precondition(lambda self: self.mode is not None and self.mode.value == "global")
    @rule(prio=priorities)
    def birth_during_global(self, prio: Priority) -> None:
        allowed = self.use_priorities and any(
            m.state is RUNNING and m.prio < prio for m in self.model.values()
        )
        assert self.reg.can_be_born(prio) == allowed
        if not allowed:
            with pytest.raises(RuntimeError):
                self.reg.birth(self.next_id, "late", "worker", prio)
            return
        ident = self.next_id
        self.next_id += 1
        self.recs[ident] = self.reg.birth(ident, f"t{ident}", "worker", prio)
        self.model[ident] = M(RUNNING, self.newest, prio)

    @invariant()
    def quiescence_is_sticky(self) -> None:
        tr = self.reg.transition
        if tr is None or tr.mode.value != "global":
            self.was_quiet = False
            return
        quiet = self.reg.quiescent()
        assert quiet or not self.was_quiet, "a quiescent global transition became busy again"
        self.was_quiet = quiet


BirthRuleModel.TestCase.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)
TestBirthRuleModel = BirthRuleModel.TestCase


# ---------------------------------------------------------------------------------- real threads
class _Busy:
    """A managed thread of `priority` that runs outside any quiescence point until `release()`;
    `lower()` makes it lower its priority to LOW first (as a waiting pool worker taking a request)."""

    def __init__(self, rt: Runtime, priority: Priority) -> None:
        entered = threading.Event()
        self._cv = threading.Condition()
        self._lower = self._release = False

        def run() -> None:
            with rt.managed_thread("busy", priority):
                entered.set()
                with self._cv:
                    self._cv.wait_for(lambda: self._lower or self._release, 60)
                if not self._release:
                    rt.set_priority(LOW)
                with self._cv:
                    self._cv.wait_for(lambda: self._release, 60)

        self.thread = threading.Thread(target=run, name="busy-thread", daemon=True)
        self.thread.start()
        assert entered.wait(10)

    def lower(self) -> None:
        with self._cv:
            self._lower = True
            self._cv.notify_all()

    def release(self) -> None:
        with self._cv:
            self._release = True
            self._cv.notify_all()


@contextmanager
def _running(rt: Runtime, priority: Priority) -> Iterator[_Busy]:
    busy = _Busy(rt, priority)
    try:
        yield busy
    finally:
        busy.release()
        busy.thread.join(10)


def _global_in_background(
    rt: Runtime, code: Versioned, use_priorities: bool
) -> tuple[threading.Thread, list[object]]:
    result: list[object] = []

    def run() -> None:
        try:
            result.append(rt.run_global(code.swap, timeout=30, use_priorities=use_priorities))
        except Exception as exc:
            result.append(exc)

    patcher = threading.Thread(target=run, daemon=True)
    patcher.start()
    wait_for(lambda: rt.statistics().transition == "global", what="global transition")
    return patcher, result


class _Newborn:
    """A thread born at `priority` that passes quiescence points until `stop`; records its generations."""

    def __init__(self, rt: Runtime, priority: Priority) -> None:
        self.born = threading.Event()
        self.stop = threading.Event()
        self.generations: list[int] = []

        def run() -> None:
            with rt.managed_thread("pool-worker", priority):
                self.generations.append(rt.current_generation())
                self.born.set()
                while not self.stop.is_set():
                    rt.quiescence_point()
                    self.stop.wait(0.001)
                self.generations.append(rt.current_generation())

        self.thread = threading.Thread(target=run, name=f"newborn-{priority.name}", daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


def test_a_spare_is_born_while_an_executing_worker_runs_and_parks_after_it(rt: Runtime) -> None:
    """The pool's case: a LOW worker runs (waits for a lock); a MEDIUM worker is created. It is born at
    once in the old generation, passes its points without parking while the LOW one runs, parks when
    it is gone, and the patch applies with it parked."""
    code = Versioned()
    with _running(rt, LOW) as busy:
        patcher, result = _global_in_background(rt, code, use_priorities=True)
        spare = _Newborn(rt, MEDIUM)
        late_low = _Newborn(rt, LOW)
        assert spare.born.wait(10), "the spare was not born during the transition"
        assert spare.generations == [0]
        assert not late_low.born.wait(0.2)  # a LOW birth still waits
        busy.release()
        patcher.join(30)
    assert result and not isinstance(result[0], Exception), result
    assert code.swaps == 1
    assert late_low.born.wait(10)
    spare.join()
    late_low.join()
    assert spare.generations == [0, 1] and late_low.generations == [1, 1]


def test_naive_quiescence_keeps_the_spare_waiting_until_the_end(rt: Runtime) -> None:
    code = Versioned()
    with _running(rt, LOW) as busy:
        patcher, result = _global_in_background(rt, code, use_priorities=False)
        spare = _Newborn(rt, MEDIUM)
        assert not spare.born.wait(0.2)
        busy.release()
        patcher.join(30)
    assert result and not isinstance(result[0], Exception), result
    assert spare.born.wait(10)
    spare.join()
    assert spare.generations == [1, 1]


def test_lowering_a_priority_lets_a_waiting_birth_proceed(rt: Runtime) -> None:
    """A MEDIUM birth waits while only a MEDIUM thread runs; when that thread lowers its priority to
    LOW (a waiting worker takes a request), nobody is unparked, yet the birth must be woken."""
    code = Versioned()
    with _running(rt, MEDIUM) as busy:
        patcher, result = _global_in_background(rt, code, use_priorities=True)
        spare = _Newborn(rt, MEDIUM)
        assert not spare.born.wait(0.2)
        busy.lower()
        assert spare.born.wait(10), "lowering a priority did not wake the waiting birth"
        busy.release()
        patcher.join(30)
    assert result and not isinstance(result[0], Exception), result
    spare.join()
    assert spare.generations == [0, 1]
