"""Active expiry during and after a validated update: the follower replays the leader's cron at the same
points of the log, so a DBSIZE during the window agrees, and the promoted server expires keys itself."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.mve.mve_helpers import (
    background_update,
    finish,
    held,
    raw,
    start_server,
    wait_for_status,
)
from tests.support import livepatch_cli

VOLATILE = 300


def _wait_dbsize(r: Any, at_most: int, timeout: float = 30) -> int:
    """DBSIZE (each one compared by the follower while it follows) until it is at most `at_most`."""
    deadline = time.monotonic() + timeout
    size = r.dbsize()
    while size > at_most and time.monotonic() < deadline:
        size = r.dbsize()
    return size


def _set_volatile(r: Any, prefix: str) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(VOLATILE):
        pipe.set(f"{prefix}:{i}", "x", px=50)
    assert pipe.execute() == [True] * VOLATILE  # all stored (some may be gone by the next request)


@pytest.mark.timeout(180)
def test_keys_expired_actively_during_and_after_the_update(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    r = held(server)
    r.set("stays", "1")
    sock = str(work_dir / "lp.sock")
    manual = ("--promote", "manual", "--window", "1s", "--exercise-wait", "0")
    with background_update(patches["good"], sock, *manual) as proc:
        wait_for_status(sock, proc, lambda s: s.get("state") in ("following", "validated"))
        # Keys nobody reads: only the leader's cron removes them; the follower must do the same at the
        # same point, or the DBSIZE replies differ and the update is discarded.
        _set_volatile(r, "during")
        assert _wait_dbsize(r, 1) == 1
        # The follower compared those requests (the DBSIZE replies among them) and agreed. A fresh
        # status each time: the one above may predate the requests.
        wait_for_status(
            sock, proc, lambda s: s["state"] == "validated" and s["compared"] >= VOLATILE + 1
        )
        promoted = livepatch_cli("promote", "--socket", sock)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        code, out = finish(proc)
    assert code == 0, out
    assert raw(r, "PING") == b"PANG"  # the new version serves
    # The promoted server runs its cron: keys nobody reads go away by themselves.
    _set_volatile(r, "after")
    assert _wait_dbsize(r, 1) == 1  # nobody reads them: only the cron removes them
    assert r.get("stays") == b"1"
