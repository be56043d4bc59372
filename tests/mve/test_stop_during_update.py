"""SIGTERM in the middle of a validated update: the follower is discarded and the server shuts down
as asked, at once, even while the leader's loop is paused in the hand-over (waiting for the follower's
"took-over"), where it used to wait out the whole hand-over deadline first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.mve.test_kill_phases import (
    background_update,
    finish,
    follower_pid,
    start,
    wait_for_hold,
    wait_gone,
)
from tests.mve.test_validated_update import Traffic, held


@pytest.mark.timeout(180)
def test_sigterm_during_the_hand_over_discards_the_follower_and_stops(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path, monkeypatch: Any
) -> None:
    # The follower adopted every socket and never confirms (held): the leader's loop waits in the
    # hand-over when the SIGTERM comes.
    server = start(kv_factory, work_dir, monkeypatch, "follower:handover")
    held(server).execute_command("DEBUG", "POPULATE", "1000")
    with Traffic(server) as traffic:
        proc = background_update(
            patches["good"], work_dir, "--window", "1s", "--exercise-wait", "0"
        )
        wait_for_hold(work_dir, "follower:handover", proc)
        follower = follower_pid(work_dir)
        assert server.stop(timeout=30) == 0  # SIGTERM; a clean exit, not the SIGKILL after 30 s
        code, out = finish(proc)
    # The update gave way to the stop (without the fix: "did not take over in time", after the
    # hand-over deadline), and no follower outlives the server.
    assert code == 1 and "the server is shutting down" in out, out
    assert wait_gone(follower)
    assert traffic.acked  # the server served until it was asked to stop
