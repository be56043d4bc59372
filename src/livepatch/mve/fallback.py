"""Follow-back: after a promotion the old version stands by, and a crash of the new one falls back to it
(`livepatch update --validate --follow-back`, ended by `livepatch retire`; docs/validated-updates.md).

What stands by is the old leader's pid, become the waiter (waiter.py), holding a copy of the listening
socket and the server's command line (Host.fallback_argv: the code on disk, which is the old version
when the running code came from it). If the promoted server dies without having been asked to stop
(kill -9, a crash, a non-zero exit), the waiter executes that command line with the listening socket
inherited (LIVEPATCH_LISTEN_FD): the old version loads the data directory, which with `appendfsync
always` holds every acknowledged write, and serves on the same address; connections queued in the
meanwhile are accepted, clients of the dead server reconnect. `livepatch retire` (answered by the new
server's agent) tells the waiter (SIGUSR1) to drop its copy of the socket: from then on a crash of the
new version is the end of the server, as without follow-back.

Not done (the issue's full form): the old version does not replay the new one's requests and compare them
with reverse rules while it stands by; it restarts from the data directory instead.

This module is the promoted server's side: whether an old version stands by, and `retire()`.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

RETIRE_SIGNAL = signal.SIGUSR1
LISTEN_FD_ENV = "LIVEPATCH_LISTEN_FD"  # the inherited listening socket of a fallback start

_state: dict[str, Any] | None = None


def arm(old_pid: int) -> None:
    """Promoted with follow-back: the old version (our parent, the waiter) stands by."""
    global _state
    _state = {"state": "standing by", "old_version_pid": old_pid, "server_pid": os.getpid(),
              "since": time.time()}  # fmt: skip


def status() -> dict[str, Any] | None:
    return dict(_state) if _state is not None else None


def retire() -> dict[str, Any]:
    """End the follow-back: the waiter drops its copy of the listening socket. Idempotent."""
    if _state is None:
        raise RuntimeError(
            "no old version is standing by (the update was promoted without --follow-back, or this "
            "server was not promoted by a validated update)"
        )
    if _state["state"] == "standing by":
        os.kill(_state["old_version_pid"], RETIRE_SIGNAL)
        _state["state"] = "retired"
        _state["since"] = time.time()
    return dict(_state)
