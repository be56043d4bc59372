"""The validated update's outcome and state names (livepatch.mve.outcome) are its wire format: the enums
must print and encode exactly as the strings they replaced, and a decoded reply compares to them."""

from __future__ import annotations

import json

from livepatch.mve import Outcome, State


def test_the_names_are_the_wire_format() -> None:
    assert [o.value for o in Outcome] == ["promoted", "discarded", "unknown"]
    assert [s.value for s in State] == [
        "starting",
        "following",
        "validated",
        "promoting",
        "promoted",
        "handover-failed",
        "discarded",
    ]


def test_a_report_made_of_members_is_byte_identical_to_one_made_of_strings() -> None:
    members = {"outcome": Outcome.DISCARDED, "state": State.HANDOVER_FAILED}
    strings = {"outcome": "discarded", "state": "handover-failed"}
    assert json.dumps(members, indent=2) == json.dumps(strings, indent=2)
    assert f"{members['outcome']}: {members['state']}" == "discarded: handover-failed"


def test_a_decoded_name_is_its_member_and_only_promoted_is_ok() -> None:
    decoded = json.loads(json.dumps({"outcome": Outcome.PROMOTED}))["outcome"]
    assert Outcome(decoded) is Outcome.PROMOTED and decoded == Outcome.PROMOTED
    assert [o for o in Outcome if o.ok] == [Outcome.PROMOTED]
    assert [s for s in State if s.recording] == [State.FOLLOWING, State.VALIDATED]
