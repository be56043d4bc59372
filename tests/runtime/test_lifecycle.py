"""The lifecycle table (livepatch/runtime/lifecycle.py): exhaustive checks of its rules, a hypothesis
state machine walking it, and real attempts whose recorded events follow it."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import livepatch
from livepatch.errors import LivepatchError, PatchAborted, PatchFailed, PatchRefused, PatchVetoed
from livepatch.patch.lpatch import PatchFileError
from livepatch.runtime.core import Runtime
from livepatch.runtime.lifecycle import (
    END_STATES,
    FINAL_EVENT,
    OUTCOME_OF,
    TRANSITIONS,
    Action,
    Event,
    EventName,
    IllegalTransition,
    Lifecycle,
    Outcome,
    PatchResult,
    State,
)
from tests.runtime.runtime_helpers import fixture_source, loaded_app

WIRE_OUTCOMES = {"applied", "reverted", "rolled-back", "refused", "aborted", "failed"}


def _reachable() -> set[State]:
    seen, todo = {State.RECEIVED}, [State.RECEIVED]
    while todo:
        for nxt in TRANSITIONS.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_is_reachable_and_every_final_state_has_an_outcome() -> None:
    assert _reachable() == set(State)
    finals = {s for s in State if s not in TRANSITIONS}
    assert finals <= END_STATES
    assert all(OUTCOME_OF[s] in FINAL_EVENT for s in END_STATES)


def test_every_non_final_state_can_fail_and_the_table_has_no_self_loops() -> None:
    for state, nexts in TRANSITIONS.items():
        assert State.FAILED in nexts, state  # rule 4
        assert state not in nexts


def test_nothing_changed_unless_the_attempt_swapped() -> None:
    """Rule 3: APPLIED/REVERTED/ROLLED_BACK are reached only through QUIESCING or FORCING."""
    changed = {State.APPLIED, State.REVERTED, State.ROLLED_BACK}
    for state, nexts in TRANSITIONS.items():
        if nexts & changed:
            assert state in (State.QUIESCING, State.FORCING), state
    assert TRANSITIONS[State.FORCING] == {State.REVERTED, State.ROLLED_BACK, State.FAILED}


def test_the_wire_strings_do_not_change() -> None:
    """Rule 5: outcomes and event names are the JSON format; StrEnum members are their strings."""
    assert {o.value for o in Outcome} == WIRE_OUTCOMES
    assert (
        json.dumps([Outcome.ROLLED_BACK, EventName.WATCH_STARTED])
        == '["rolled-back", "watch-started"]'
    )
    assert Outcome.REFUSED == "refused" and EventName.SIGNATURE_CHECKED == "signature-checked"
    assert {o for o in Outcome if o.ok} == {Outcome.APPLIED, Outcome.REVERTED}


@pytest.mark.parametrize(("a", "b"), list(itertools.product(State, State)))
def test_advance_follows_the_table_exactly(a: State, b: State) -> None:
    life = Lifecycle()
    life.state = a
    if b in TRANSITIONS.get(a, ()):
        life.advance(b)
        assert life.state is b
    else:
        with pytest.raises(IllegalTransition, match=f"{a.value} -> {b.value}"):
            life.advance(b)
        assert life.state is a


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(State)), max_size=12))
def test_random_walks_only_take_allowed_steps(steps: list[State]) -> None:
    life = Lifecycle()
    for step in steps:
        before = life.state
        try:
            life.advance(step)
        except IllegalTransition:
            assert step not in TRANSITIONS.get(before, ())
            assert life.state is before
        else:
            assert step in TRANSITIONS[before]
    assert life.path[0] is State.RECEIVED
    assert all(b in TRANSITIONS[a] for a, b in itertools.pairwise(life.path))


def test_end_accepts_the_state_already_reached() -> None:
    life = Lifecycle()
    for s in (State.VERIFIED, State.STAGED, State.QUIESCING, State.APPLIED, State.WATCHING):
        life.advance(s)
    life.end(Outcome.APPLIED)  # watching ends as applied
    assert life.outcome is Outcome.APPLIED
    with pytest.raises(IllegalTransition):
        Lifecycle().end(Outcome.REVERTED)  # a revert that never swapped cannot report reverted


def test_errors_carry_their_outcome() -> None:
    assert LivepatchError("x").outcome is Outcome.FAILED
    assert PatchRefused("x").outcome is Outcome.REFUSED
    assert PatchVetoed("x").outcome is Outcome.REFUSED
    assert PatchAborted("x").outcome is Outcome.ABORTED
    assert PatchFailed("x").outcome is Outcome.FAILED
    assert PatchFileError("x").outcome is Outcome.REFUSED


def test_patch_result_round_trips_through_its_wire_form() -> None:
    r = PatchResult(
        "p1",
        Action.REVERT,
        "force",
        Outcome.ROLLED_BACK,
        "why",
        (Event(EventName.REQUESTED, 1), Event(EventName.FORCED, 2, "t", 3, "warn")),
        {"total": 1.5},
    )
    wire = json.loads(json.dumps(r.to_dict()))
    assert wire["outcome"] == "rolled-back" and wire["action"] == "revert"
    back = PatchResult.from_dict(wire)
    assert back == r and back.outcome is Outcome.ROLLED_BACK and not back.ok
    assert [e.name for e in back.events] == [EventName.REQUESTED, EventName.FORCED]
    assert all(type(e.name) is EventName for e in back.events)  # typed, not the wire's str
    with pytest.raises(ValueError):
        PatchResult.from_dict({**wire, "outcome": "exploded"})
    with pytest.raises(ValueError):
        PatchResult.from_dict({**wire, "events": [{"name": "exploded", "t_ns": 1}]})


# -- the patcher walks the table -------------------------------------------------------------------

V1 = fixture_source("app_v1.py")
V2 = fixture_source("app_v2.py")


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> list[list[State]]:
    """Every Lifecycle the patcher creates, as the list of states it went through."""
    seen: list[list[State]] = []
    original = Lifecycle.__init__

    def init(self: Lifecycle) -> None:
        original(self)
        seen.append(self.path)

    monkeypatch.setattr(Lifecycle, "__init__", init)
    return seen


@pytest.fixture
def app(rt: Runtime, tmp_path: Path) -> Iterator[ModuleType]:
    with loaded_app(rt, tmp_path, V1) as mod:
        yield mod


S = State


def test_real_attempts_go_through_the_table(
    rt: Runtime, app: ModuleType, paths: list[list[State]]
) -> None:
    spec = livepatch.patch_from_sources(
        {app.__name__: (V1, V2)}, category=livepatch.Category.THREAD_LOCAL
    )
    flow = [S.RECEIVED, S.VERIFIED, S.STAGED, S.QUIESCING]
    for method in ("global", "local"):
        assert rt.apply_patch(spec, method=method).outcome is Outcome.APPLIED
        assert paths[-1] == [*flow, S.APPLIED]
        assert rt.revert_patch(method=method).outcome is Outcome.REVERTED
        assert paths[-1] == [*flow, S.REVERTED]
    assert rt.apply_patch(spec, method="sideways").outcome is Outcome.REFUSED
    assert paths[-1] == [S.RECEIVED, S.REFUSED]
    watched = rt.apply_patch(spec, watch=livepatch.WatchPolicy(window_s=30.0))
    assert watched.outcome is Outcome.APPLIED
    assert paths[-1] == [*flow, S.APPLIED, S.WATCHING]
    assert EventName.WATCH_STARTED in [e.name for e in watched.events]
    forced = rt.revert_patch(force=True)
    assert forced.outcome is Outcome.REVERTED and forced.method == "force"
    assert paths[-1] == [S.RECEIVED, S.VERIFIED, S.FORCING, S.REVERTED]
    assert [e.name for e in forced.events][-2:] == [EventName.FORCED, EventName.FINISHED]
    assert app.first(1) == ("v1", 1)
    for path in paths:
        assert all(b in TRANSITIONS[a] for a, b in itertools.pairwise(path)), path
        assert path[-1] in END_STATES
