"""Model-based test of the registry's generation bookkeeping (hypothesis stateful testing).

Random births, deaths, (de)activations, priority changes, quiescence points and global/local transitions
(completed, aborted, reversed) are applied to a Registry and to a small independent model; after every step
both must agree, and the protocol invariants must hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from livepatch.runtime.registry import (
    Mode,
    Phase,
    PointAction,
    Priority,
    Registry,
    ThreadRecord,
    ThreadState,
)

RUNNING, PARKED, INACTIVE = ThreadState.RUNNING, ThreadState.PARKED, ThreadState.INACTIVE
priorities = st.sampled_from(list(Priority))


@dataclass
class M:  # the model of one thread
    state: ThreadState
    gen: int
    prio: Priority


class RegistryModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reg = Registry()
        self.recs: dict[int, ThreadRecord] = {}
        self.model: dict[int, M] = {}
        self.next_id = 1
        self.generation = 0
        self.newest = 0
        self.mode: Mode | None = None
        self.use_priorities = True
        self.base = 0
        self.target = 0
        self.reversing = False
        self.events: list[tuple[str, int]] = []

    # ---- helpers ---------------------------------------------------------------------------------
    def _pick(self, i: int, *states: ThreadState) -> int | None:
        ids = sorted(t for t, m in self.model.items() if m.state in states)
        return ids[i % len(ids)] if ids else None

    def _listener(self, name: str, rec: ThreadRecord) -> None:
        self.events.append((name, rec.ident))

    # ---- thread lifecycle ------------------------------------------------------------------------
    @precondition(lambda self: self.mode is not Mode.GLOBAL)
    @rule(prio=priorities)
    def birth(self, prio: Priority) -> None:
        ident = self.next_id
        self.next_id += 1
        self.recs[ident] = self.reg.birth(ident, f"t{ident}", "worker", prio)
        self.model[ident] = M(RUNNING, self.newest, prio)

    @rule(i=st.integers(0, 99))
    def death(self, i: int) -> None:
        t = self._pick(i, RUNNING, INACTIVE)  # a parked thread is blocked: it cannot die
        if t is None:
            return
        self.reg.death(self.recs.pop(t))
        del self.model[t]

    @rule(i=st.integers(0, 99))
    def deactivate(self, i: int) -> None:
        t = self._pick(i, RUNNING)
        if t is None:
            return
        self.reg.deactivate(self.recs[t])
        self.model[t].state = INACTIVE

    @precondition(lambda self: self.mode is not Mode.GLOBAL)
    @rule(i=st.integers(0, 99))
    def activate(self, i: int) -> None:
        t = self._pick(i, INACTIVE)
        if t is None:
            return
        moved = self.reg.activate(self.recs[t])
        m = self.model[t]
        assert moved == (m.gen != self.newest)
        m.state, m.gen = RUNNING, self.newest

    @rule(i=st.integers(0, 99), prio=priorities)
    def set_priority(self, i: int, prio: Priority) -> None:
        t = self._pick(i, RUNNING, INACTIVE)
        if t is None:
            return
        released = {r.ident for r in self.reg.set_priority(self.recs[t], prio)}
        m = self.model[t]
        m.prio = prio
        expected: set[int] = set()
        if self.mode is Mode.GLOBAL and self.use_priorities and m.state is RUNNING:
            expected = {u for u, o in self.model.items() if o.state is PARKED and o.prio > prio}
            for u in expected:
                self.model[u].state = RUNNING
        assert released == expected

    @rule(i=st.integers(0, 99))
    def point(self, i: int) -> None:
        t = self._pick(i, RUNNING)
        if t is None:
            return
        action = self.reg.at_point(self.recs[t])
        m = self.model[t]
        if self.mode is Mode.GLOBAL:
            blocked = self.use_priorities and any(
                o.state is RUNNING and o.prio < m.prio for u, o in self.model.items() if u != t
            )
            if blocked:
                assert action is PointAction.RETURN
            else:
                m.state = PARKED
                # The patcher is woken by the last park, and by a park after which nothing of this
                # priority or lower runs (higher-priority threads may park now: hooks again); never
                # by another park.
                holds_others = any(
                    o.state is RUNNING and (o.prio <= m.prio or not self.use_priorities)
                    for o in self.model.values()
                )
                assert action is (PointAction.PARK if holds_others else PointAction.PARK_NOTIFY)
        elif self.mode is Mode.LOCAL and m.gen != self.target:
            if self.reversing:
                assert action is PointAction.MOVED_BACK
            else:
                assert action in (PointAction.MIGRATED, PointAction.MIGRATED_EARLY)
            m.gen = self.target
        else:
            assert action is PointAction.RETURN

    # ---- transitions -----------------------------------------------------------------------------
    @precondition(lambda self: self.mode is None)
    @rule(use_priorities=st.booleans())
    def begin_global(self, use_priorities: bool) -> None:
        self.reg.begin_global(use_priorities, self._listener)
        self.mode, self.use_priorities = Mode.GLOBAL, use_priorities

    @precondition(lambda self: self.mode is Mode.GLOBAL)
    @rule()
    def swap_when_quiescent(self) -> None:
        quiet = all(m.state is not RUNNING for m in self.model.values())
        assert self.reg.quiescent() == quiet
        if not quiet:
            return
        self.reg.start_swap()
        assert self.reg.transition is not None and self.reg.transition.phase is Phase.SWAPPING
        self.reg.finish_global(True)
        self._end_global(swapped=True)

    @precondition(lambda self: self.mode is Mode.GLOBAL)
    @rule()
    def abort_global(self) -> None:
        straggling = {r.ident for r in self.reg.stragglers()}
        assert straggling == {t for t, m in self.model.items() if m.state is RUNNING}
        self.reg.finish_global(False)
        self._end_global(swapped=False)

    def _end_global(self, swapped: bool) -> None:
        if swapped:
            self.generation += 1
        self.newest = self.generation
        for m in self.model.values():
            if m.state is PARKED:
                m.state = RUNNING
            m.gen = self.generation
        self.mode = None

    @precondition(lambda self: self.mode is None)
    @rule()
    def begin_local(self) -> None:
        self.reg.begin_local(self._listener)
        self.mode, self.reversing = Mode.LOCAL, False
        self.base, self.target = self.generation, self.generation + 1
        self.newest = self.target

    @precondition(lambda self: self.mode is Mode.LOCAL and not self.reversing)
    @rule()
    def reverse_local(self) -> None:
        self.reg.reverse_local()
        self.reversing, self.target, self.newest = True, self.base, self.base
        for m in self.model.values():
            if m.state is INACTIVE:
                m.gen = min(m.gen, self.base)

    @precondition(lambda self: self.mode is Mode.LOCAL)
    @rule()
    def finish_local_when_all_moved(self) -> None:
        moved = all(m.gen == self.target for m in self.model.values() if m.state is not INACTIVE)
        assert self.reg.all_moved() == moved
        if not moved:
            return
        assert self.reg.finish_local() == (not self.reversing)
        if not self.reversing:
            self.generation = self.target
        else:
            for m in self.model.values():
                if m.state is INACTIVE:
                    m.gen = min(m.gen, self.base)
        self.newest = self.generation
        self.mode = None

    # ---- invariants ------------------------------------------------------------------------------
    @invariant()
    def registry_matches_model(self) -> None:
        assert self.reg.generation == self.generation
        assert self.reg.newest == self.newest
        assert set(self.reg.records) == set(self.model)
        for t, m in self.model.items():
            r = self.recs[t]
            assert (r.state, r.generation, r.priority) == (m.state, m.gen, m.prio), t
        stats = self.reg.statistics()
        assert sum(stats.by_state.values()) == sum(stats.by_generation.values()) == len(self.model)

    @invariant()
    def protocol_invariants(self) -> None:
        tr = self.reg.transition
        parked = [m for m in self.model.values() if m.state is PARKED]
        running = [m for m in self.model.values() if m.state is RUNNING]
        if tr is None or tr.mode is Mode.LOCAL:
            assert parked == []  # only a global transition parks anyone
        if tr is None:
            assert all(m.gen == self.generation for m in running)
            assert all(m.gen <= self.generation for m in self.model.values())
        elif tr.mode is Mode.LOCAL:
            assert all(m.gen in (tr.base, tr.base + 1) for m in running)
        elif tr.use_priorities:
            # the priority rule: nobody is parked while a lower-priority thread runs
            for p in parked:
                assert not any(r.prio < p.prio for r in running)


RegistryModel.TestCase.settings = settings(max_examples=100, stateful_step_count=60, deadline=None)
TestRegistryModel = RegistryModel.TestCase


def test_births_wait_during_a_global_transition() -> None:
    reg = Registry()
    reg.begin_global()
    assert not reg.can_enter()
    with pytest.raises(RuntimeError, match="global transition"):
        reg.birth(1, "t", "worker", Priority.LOW)
    reg.finish_global(False)
    assert reg.can_enter()


@pytest.mark.parametrize("use_priorities", [True, False])
def test_lowering_a_priority_unparks_only_under_the_priority_rule(use_priorities: bool) -> None:
    """A worker that takes a task lowers its priority; under the priority rule that unparks the listener
    (it may have to dispatch the commit the task waits for). Naive quiescence must not: the listener stays
    parked, which is exactly the deadlock the paper's Figure 6 shows (a CI run once applied a naive patch
    because an idle worker woken by the hooks unparked the listener)."""
    reg = Registry()
    listener = reg.birth(1, "listener", "listener", Priority.CRITICAL)
    # Running, not below the listener: under the priority rule the listener may park beside it.
    worker = reg.birth(2, "worker", "worker", Priority.CRITICAL)
    reg.begin_global(use_priorities)
    assert reg.at_point(listener) in (PointAction.PARK, PointAction.PARK_NOTIFY)
    released = reg.set_priority(worker, Priority.LOW)  # it took a task
    if use_priorities:
        assert released == [listener]
        assert listener.state is RUNNING
    else:
        assert released == []
        assert listener.state is PARKED
