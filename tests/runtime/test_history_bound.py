"""The runtime's history is bounded (runtime/history.py): after more attempts than it keeps, the old
entries are freed, the totals still count every attempt (the metrics' counters stay monotonic), a reader
with a cursor gets each kept attempt once and learns how many it missed, and a flood of recorded
refusals does not push the runtime's own attempts out."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from livepatch import patch_from_sources
from livepatch.runtime.core import Runtime
from livepatch.runtime.history import MAX_HISTORY, MAX_HISTORY_EVENTS, TIMING_BUCKETS_S
from livepatch.runtime.lifecycle import Action, Event, EventName, Outcome, PatchResult
from tests.runtime.runtime_helpers import fixture_source, loaded_app

pytestmark = pytest.mark.timeout(120)

V1 = fixture_source("app_v1.py")
V2 = fixture_source("app_v2.py")
KEEP = 20
CYCLES = 60  # 120 transitions: 6x what is kept


@pytest.fixture
def app(rt: Runtime, tmp_path: Path) -> Iterator[ModuleType]:
    with loaded_app(rt, tmp_path, V1) as mod:
        yield mod


def _refusal(i: int) -> PatchResult:
    return PatchResult(
        f"r{i}",
        Action.APPLY,
        "auto",
        Outcome.REFUSED,
        "bad",
        (Event(EventName.RECEIVED, i), Event(EventName.REFUSED, i)),
    )


def test_the_default_bound_is_documented_and_in_force() -> None:
    rt = Runtime()
    assert (MAX_HISTORY, MAX_HISTORY_EVENTS) == (1000, 50_000)
    assert (rt.max_history, rt.max_history_events) == (MAX_HISTORY, MAX_HISTORY_EVENTS)


def test_attempts_with_many_events_are_kept_within_the_event_budget(
    rt: Runtime, app: ModuleType
) -> None:
    spec = patch_from_sources({app.__name__: (V1, V2)})
    applied = rt.apply_patch(spec, method="global")
    assert applied.ok
    per_attempt = len(applied.events)
    rt.max_history_events = 3 * per_attempt  # room for 3 such attempts, whatever max_history says
    for _ in range(3):
        assert rt.revert_patch(method="global").ok
        assert rt.apply_patch(spec, method="global").ok
    history = rt.history()
    assert len(history) == 3
    assert sum(len(r.events) for r in history) <= 3 * per_attempt
    assert rt.history_totals().dropped == 4
    rt.max_history_events = 0  # the newest attempt is always kept
    assert rt.revert_patch(method="global").ok
    assert len(rt.history()) == 1


def test_old_attempts_are_freed_and_the_totals_count_every_one(
    rt: Runtime, app: ModuleType
) -> None:
    rt.max_history = KEEP
    spec = patch_from_sources({app.__name__: (V1, V2)})
    refs: list[weakref.ref[PatchResult]] = []
    for _ in range(CYCLES):
        applied = rt.apply_patch(spec, method="global")
        reverted = rt.revert_patch(method="global")
        assert applied.ok and reverted.ok, (applied.reason, reverted.reason)
        refs += [weakref.ref(applied), weakref.ref(reverted)]
    del applied, reverted
    gc.collect()

    history = rt.history()
    assert len(history) == KEEP
    # memory: only the kept entries are still alive, whatever the number of transitions
    alive = [r for r in (ref() for ref in refs) if r is not None]
    assert len(alive) == KEEP
    assert all(a is h for a, h in zip(alive, history, strict=True))
    assert [r.action for r in history[-2:]] == [Action.APPLY, Action.REVERT]

    totals = rt.history_totals()
    assert totals.added == 2 * CYCLES
    assert totals.dropped == 2 * CYCLES - KEEP
    assert totals.attempts == {
        (Action.APPLY, Outcome.APPLIED): CYCLES,
        (Action.REVERT, Outcome.REVERTED): CYCLES,
    }
    sync = totals.sync["global"]
    assert sync.count == 2 * CYCLES
    assert sum(sync.buckets) <= sync.count  # the rest is above the last bound
    assert sync.cumulative()[-1] == sum(sync.buckets)
    assert sync.sum_s > 0
    assert totals.swap["global"].count == 2 * CYCLES


def test_a_cursor_gets_each_attempt_once_and_sees_what_it_missed(
    rt: Runtime, app: ModuleType
) -> None:
    rt.max_history = 4
    spec = patch_from_sources({app.__name__: (V1, V2)})
    seen, cursor = rt.history_since(0)
    assert (seen, cursor) == ([], 0)
    assert rt.apply_patch(spec, method="global").ok
    new, cursor = rt.history_since(cursor)
    assert [n for n, _ in new] == [0] and cursor == 1
    for _ in range(3):  # 6 more: 2 of them are gone before the next read
        assert rt.revert_patch(method="global").ok
        assert rt.apply_patch(spec, method="global").ok
    new, nxt = rt.history_since(cursor)
    assert [n for n, _ in new] == [3, 4, 5, 6] and nxt == 7
    assert nxt - cursor - len(new) == 2  # missed, as the state directory keeper counts them
    assert rt.history_since(nxt) == ([], 7)


def test_a_flood_of_recorded_refusals_keeps_the_runtime_s_own_attempts(
    rt: Runtime, app: ModuleType
) -> None:
    rt.max_history = 3
    rt.max_recorded_refusals = 5
    spec = patch_from_sources({app.__name__: (V1, V2)})
    applied = rt.apply_patch(spec, method="global")
    assert applied.ok
    for i in range(50):
        rt.record(_refusal(i))
    history = rt.history()
    assert history[0] is applied  # oldest first, merged in arrival order
    assert [r.patch_id for r in history[1:]] == [f"r{i}" for i in range(45, 50)]
    totals = rt.history_totals()
    assert totals.attempts[(Action.APPLY, Outcome.REFUSED)] == 50
    assert totals.dropped == 45
    assert "auto" not in totals.sync  # refusals time nothing


def test_histogram_buckets_are_upper_bounds() -> None:
    from livepatch.runtime.history import TimingTotals

    t = TimingTotals()
    for s in (0.0, TIMING_BUCKETS_S[0], TIMING_BUCKETS_S[0] * 1.01, 99.0):
        t.add(s)
    assert t.count == 4
    assert t.cumulative()[0] == 2  # le="0.0001" includes the bound itself
    assert t.cumulative()[1] == 3
    assert t.cumulative()[-1] == 3  # 99 s is only in +Inf (count)
