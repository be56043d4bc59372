"""The patch lifecycle as data: the states of one attempt, their allowed transitions, the outcomes and the
event names, and the typed result every layer reads (PatchResult).

Rule 1: everything that decides the lifecycle lives here. The patcher moves an attempt through
        `TRANSITIONS` with `Lifecycle.advance`; nobody else changes an attempt's state, and nobody
        compares outcome or event names as strings (compare with the enums, or ask `Outcome.ok`).
Rule 2: one attempt is one apply or one revert (an automatic rollback is a revert attempt). It starts in
        RECEIVED and ends in exactly one final state; its outcome is `OUTCOME_OF[state]`.
Rule 3: an attempt that does not reach APPLIED / REVERTED / ROLLED_BACK changed nothing (all or
        nothing, DESIGN.md invariant 1). The one exception is FORCING (a forced revert, no quiescence):
        the old code is put back for new calls while threads inside the new code finish there.
Rule 4: FAILED (an internal error) may end any state that is not final; after APPLIED or WATCHING it
        means the patch is in but its attempt did not finish cleanly (the reason says what happened).
Rule 5: the names below are the wire format (JSON replies, history, metrics labels): they never change.
        The enums are `StrEnum`s, so a member *is* its string on the wire and in comparisons.

The table, one attempt:

    RECEIVED ──▶ VERIFIED ──▶ STAGED ──▶ QUIESCING ──▶ APPLIED ──▶ WATCHING
        │            │           │           ├────────▶ REVERTED
        │            │           │           └────────▶ ROLLED_BACK
        │            └──▶ FORCING ──▶ REVERTED | ROLLED_BACK      (revert --force; a hung watch window)
        └── any non-final state ──▶ REFUSED | ABORTED | FAILED    (see TRANSITIONS for which)

Pure: imports only `enum`, so a server's quiescence points, the CLI and lpbench read it cheaply. The
records of an attempt (Event, PatchResult: dataclasses, which import `inspect` and `ast`) are results.py's;
`from livepatch.runtime.lifecycle import PatchResult` still works and loads them on first use.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module is on a server's import path
if TYPE_CHECKING:  # re-exported for type checkers; at run time by __getattr__ below
    from livepatch.runtime.results import Event as Event
    from livepatch.runtime.results import PatchResult as PatchResult


class Outcome(enum.StrEnum):
    """How an attempt ended (PatchResult.outcome)."""

    APPLIED = "applied"
    REVERTED = "reverted"
    ROLLED_BACK = "rolled-back"  # a revert the watch window started on its own
    REFUSED = "refused"  # the patch or the request is wrong as it stands; nothing changed
    ABORTED = "aborted"  # quiescence (or a hook) did not finish in time; nothing changed
    FAILED = (
        "failed"  # something broke (a hook raised, an internal error); nothing changed (rule 4)
    )

    @property
    def ok(self) -> bool:
        """True for the outcomes an operator asked for (`ok` in a reply, exit status 0)."""
        return self in (Outcome.APPLIED, Outcome.REVERTED)


class EventName(enum.StrEnum):
    """Names of the events in PatchResult.events, in the order they can happen."""

    RECEIVED = "received"  # the agent's patcher thread took the request
    SIGNATURE_CHECKED = "signature-checked"  # the agent checked the file and its signature
    REQUESTED = "requested"  # the runtime started the attempt
    VERIFIED = "verified"
    STAGED = "staged"
    REACHED = "reached"  # one thread parked (global)
    UNPARKED = (
        "unparked"  # a parked thread let go by the priority rule (global; it parks again later)
    )
    QUIESCENT = "quiescent"
    SWAPPED = "swapped"
    MIGRATED = "migrated"  # one thread moved to the new code (local)
    REVERSING = "reversing"  # local: not every thread moved in time; the moved ones move back
    MOVED_BACK = "moved-back"  # local, reversing: one thread runs the old code again
    HOOK_STEP = "hook-step"  # a hook declared a step with ctx.record
    HOOK_UNDONE = "hook-undone"  # what became of a declared step when the attempt did not complete
    FORCED = "forced"  # a forced revert: the warning
    WATCH_STARTED = "watch-started"
    ROLLED_BACK = "rolled-back"
    FINISHED = "finished"
    ABORTED = "aborted"
    REFUSED = "refused"


class State(enum.StrEnum):
    """Where one attempt is (module docstring: the table)."""

    RECEIVED = "received"
    VERIFIED = "verified"
    STAGED = "staged"
    QUIESCING = "quiescing"
    FORCING = "forcing"
    APPLIED = "applied"
    WATCHING = "watching"
    REVERTED = "reverted"
    ROLLED_BACK = "rolled-back"
    REFUSED = "refused"
    ABORTED = "aborted"
    FAILED = "failed"


_S = State
_ENDS = frozenset({_S.REFUSED, _S.ABORTED, _S.FAILED})

# THE table: state -> the states it may move to. A state with no entry is final.
TRANSITIONS: Mapping[State, frozenset[State]] = {
    # verification refuses; a forced revert that cannot get the patcher lock in time aborts
    _S.RECEIVED: frozenset({_S.VERIFIED}) | _ENDS,
    # a revert waits for a detached reversal (aborts); staging refuses (fingerprints) or fails
    _S.VERIFIED: frozenset({_S.STAGED, _S.FORCING}) | _ENDS,
    # pre_patch / pre_revert vetoes (refused) or runs late (aborted)
    _S.STAGED: frozenset({_S.QUIESCING}) | _ENDS,
    # the activeness check refuses, quiescence aborts, transform or swap fails
    _S.QUIESCING: frozenset({_S.APPLIED, _S.REVERTED, _S.ROLLED_BACK}) | _ENDS,
    # force_out could not swap (failed); there is no quiescence to abort
    _S.FORCING: frozenset({_S.REVERTED, _S.ROLLED_BACK, _S.FAILED}),
    _S.APPLIED: frozenset({_S.WATCHING, _S.FAILED}),  # rule 4
    _S.WATCHING: frozenset({_S.FAILED}),  # rule 4
}

# The outcome an attempt reports from the state it ended in (rule 2).
OUTCOME_OF: Mapping[State, Outcome] = {
    _S.APPLIED: Outcome.APPLIED,
    _S.WATCHING: Outcome.APPLIED,
    _S.REVERTED: Outcome.REVERTED,
    _S.ROLLED_BACK: Outcome.ROLLED_BACK,
    _S.REFUSED: Outcome.REFUSED,
    _S.ABORTED: Outcome.ABORTED,
    _S.FAILED: Outcome.FAILED,
}
END_STATES = frozenset(OUTCOME_OF)  # the states an attempt may end in

# The event that closes an attempt with that outcome (the history's last event).
FINAL_EVENT: Mapping[Outcome, EventName] = {
    Outcome.APPLIED: EventName.FINISHED,
    Outcome.REVERTED: EventName.FINISHED,
    Outcome.ROLLED_BACK: EventName.FINISHED,
    Outcome.REFUSED: EventName.REFUSED,
    Outcome.ABORTED: EventName.ABORTED,
    Outcome.FAILED: EventName.ABORTED,
}


class IllegalTransition(RuntimeError):
    """The patcher tried a transition the table does not allow: a bug in the patcher, not in a patch."""


class Lifecycle:
    """The state of one attempt. Used by one thread at a time (the patcher holds its lock)."""

    def __init__(self) -> None:
        self.state = State.RECEIVED
        self.path: list[State] = [State.RECEIVED]

    def advance(self, to: State) -> None:
        if to not in TRANSITIONS.get(self.state, frozenset()):
            raise IllegalTransition(
                f"patch lifecycle: {self.state.value} -> {to.value} is not allowed "
                f"(path so far: {' -> '.join(s.value for s in self.path)})"
            )
        self.state = to
        self.path.append(to)

    def end(self, outcome: Outcome) -> None:
        """Move to the final state of `outcome` unless the attempt is already there (APPLIED and
        WATCHING both end as `applied`; REVERTED and ROLLED_BACK are reached before the post hooks)."""
        if OUTCOME_OF.get(self.state) is outcome:
            return
        self.advance(State(outcome.value))

    @property
    def outcome(self) -> Outcome | None:
        return OUTCOME_OF.get(self.state)


class Action(enum.StrEnum):
    APPLY = "apply"
    REVERT = "revert"


def __getattr__(name: str) -> object:
    # Event and PatchResult are results.py's (see the module docstring); loaded on first use.
    if name in ("Event", "PatchResult"):
        from livepatch.runtime import results

        return getattr(results, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
