"""The names of a validated update: how it ended (Outcome) and where its session is (State).

Rule 1: this is their one home. The session, the agent and the CLI compare members of these enums,
        never strings.
Rule 2: the values are the wire format (the agent's JSON replies; `livepatch update` and
        `update-status` print them): they never change. The enums are `StrEnum`s, so a member *is* its
        string in JSON, in f-strings and in comparisons with a decoded reply.

Pure: imports only `enum` (the agent loads it at every validated update).
"""

from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    """How a validated update ended (the report's "outcome")."""

    PROMOTED = "promoted"  # the new version serves every connection
    DISCARDED = "discarded"  # the follower was killed; the old version serves on, nothing changed
    UNKNOWN = "unknown"  # the agent's answer when no outcome came within its wait

    @property
    def ok(self) -> bool:
        """True when the update did what the operator asked (`ok` in the reply, exit status 0)."""
        return self is Outcome.PROMOTED


class State(enum.StrEnum):
    """Where a validated update's session is (Session.state; `update-status` shows it)."""

    STARTING = "starting"  # forking at the loop's quiescence point
    FOLLOWING = "following"  # the follower replays the leader's requests
    VALIDATED = "validated"  # manual promotion: the window passed, waiting for promote()/discard()
    PROMOTING = "promoting"  # the hand-over runs on the leader's loop thread
    PROMOTED = "promoted"
    HANDOVER_FAILED = "handover-failed"  # the follower did not take over; it is being discarded
    DISCARDED = "discarded"

    @property
    def recording(self) -> bool:
        """The leader records (and flushes) requests for the follower in this state."""
        return self in (State.FOLLOWING, State.VALIDATED)
