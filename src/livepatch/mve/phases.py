"""Deterministic hold points in a validated update, for tests that kill a process at a given phase.

With `LIVEPATCH_MVE_HOLD_DIR=DIR` and `LIVEPATCH_MVE_HOLD_AT=role:phase[,role:phase...]` in the
server's environment, the process reaching one of these points creates the FIFO `DIR/role-phase` and
opens it for reading, which blocks until the test opens it for writing (release) or kills the process.
The test waits for the FIFO to appear (the phase is reached), then acts: no sleeps, no races. Without
the variables `hold` is one dictionary lookup, on the update path only (never per request).

Points (PHASES): follower:fork (just forked, sockets dropped), follower:transform (before the patch's
transform hook), follower:catch-up (ready, before the first log read), follower:compare (after the first
compared request), follower:handover (sockets adopted, "took-over" not sent yet), leader:handover
(descriptors sent, confirmation not awaited yet), leader:handed-over (confirmed, not released yet).
"""

from __future__ import annotations

import contextlib
import os

PHASES = (
    "follower:fork",
    "follower:transform",
    "follower:catch-up",
    "follower:compare",
    "follower:handover",
    "leader:handover",
    "leader:handed-over",
)


def hold(point: str) -> None:
    """Block at `point` ("role:phase") if the environment asks for it (see the module docstring)."""
    where = os.environ.get("LIVEPATCH_MVE_HOLD_DIR")
    if not where or point not in os.environ.get("LIVEPATCH_MVE_HOLD_AT", "").split(","):
        return
    path = os.path.join(where, point.replace(":", "-"))
    with contextlib.suppress(FileExistsError):
        os.mkfifo(path)
    with open(path, "rb"):  # blocks until the test opens the other end
        pass
