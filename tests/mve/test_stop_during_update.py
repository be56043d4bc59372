"""SIGTERM in the middle of a validated update: the follower is discarded and the server shuts down
as asked, at once, even while the leader's loop is paused in the hand-over (waiting for the follower's
"took-over"), where it used to wait out the whole hand-over deadline first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.mve.mve_helpers import finish
from tests.mve.test_kill_phases import held_at, wait_gone


@pytest.mark.timeout(180)
def test_sigterm_during_the_hand_over_discards_the_follower_and_stops(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path, monkeypatch: Any
) -> None:
    # The follower adopted every socket and never confirms (held): the leader's loop waits in the
    # hand-over when the SIGTERM comes.
    with held_at(
        kv_factory, patches["good"], work_dir, monkeypatch, "follower:handover",
        "--window", "1s", "--exercise-wait", "0",
    ) as h:  # fmt: skip
        assert h.server.stop(timeout=30) == 0  # SIGTERM; a clean exit, not the SIGKILL after 30 s
        code, out = finish(h.proc)
        acked = list(h.traffic.acked)
    # The update gave way to the stop (without the fix: "did not take over in time", after the
    # hand-over deadline), and no follower outlives the server.
    assert code == 1 and "the server is shutting down" in out, out
    assert wait_gone(h.follower)
    assert acked  # the server served until it was asked to stop
