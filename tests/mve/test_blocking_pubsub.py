"""Blocking pops and pub/sub during a validated update, with real redis-py clients.

A request may answer *other* connections: a push wakes a client parked in BLPOP (and runs what it
pipelined meanwhile), a PUBLISH reaches the subscribers. The follower must decide as the leader did
(the same waiter, woken at the same point, the same receivers), and the comparison covers what those
other connections received, not only the caller's reply."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mve.conftest import built_patches
from tests.mve.mve_helpers import background_update, held, start_server, wait_for_status
from tests.support import livepatch_cli, wait_for

POP = "    value = lst.popleft() if left else lst.pop()\n"
POP_SAME = "    value = lst.pop() if not left else lst.popleft()\n"  # the same, written otherwise
# v2's bug: a BLPOP served on wake-up (a re-run) pops from the wrong end. Its caller's first reply and
# the pusher's reply are unchanged: only what the woken client receives differs.
POP_WRONG_END_ON_WAKE = (
    "    value = (lst.pop() if _retrying(ctx) else lst.popleft()) if left else lst.pop()\n"
)


@pytest.fixture(scope="module")
def wake_patches() -> Iterator[dict[str, Path]]:
    """same: a no-op change of blocking.py (the update validates the wake-up path as it is);
    wrong_end: BLPOP served on wake-up pops the last element."""
    edits = {
        "same": ("commands/blocking.py", POP, POP_SAME),
        "wrong_end": ("commands/blocking.py", POP, POP_WRONG_END_ON_WAKE),
    }
    with built_patches("lp-mve-b-", edits) as out:
        yield out


def _blocked(r: Any, count: int) -> bool:
    return int(r.info("clients")["blocked_clients"]) >= count


class Waiter:
    """A client (a connection opened after the fork) parked in BLPOP in a thread."""

    def __init__(self, server: Any, key: str) -> None:
        self.r = held(server)
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(key,), daemon=True)
        self.thread.start()

    def _run(self, key: str) -> None:
        self.result = self.r.blpop([key], timeout=60)

    def join(self) -> Any:
        self.thread.join(60)
        assert not self.thread.is_alive()
        return self.result


def _exercise(server: Any, probe: Any) -> None:
    """Two clients parked on one list, woken by one push of two elements, in order; a subscriber
    that receives messages and then talks in the subscribed context."""
    first = Waiter(server, "q")
    wait_for(lambda: _blocked(probe, 1), timeout=30, what="the first BLPOP to park")
    second = Waiter(server, "q")
    wait_for(lambda: _blocked(probe, 2), timeout=30, what="the second BLPOP to park")
    pusher = held(server)
    assert pusher.rpush("q", "a", "b", "c") == 3
    assert first.join() == (b"q", b"a") and second.join() == (b"q", b"b")
    assert pusher.lrange("q", 0, -1) == [b"c"]
    sub_client = held(server)
    sub = sub_client.pubsub()
    sub.subscribe("news")
    assert sub.get_message(timeout=30)["type"] == "subscribe"
    for i in range(3):
        assert pusher.publish("news", f"m{i}") == 1  # the receiver count
        assert sub.get_message(timeout=30)["data"] == f"m{i}".encode()
    sub.ping()
    assert sub.get_message(timeout=30)["type"] == "pong"
    sub.unsubscribe("news")
    assert sub.get_message(timeout=30)["type"] == "unsubscribe"
    assert pusher.publish("news", "nobody") == 0
    sub.close()


@pytest.mark.timeout(240)
def test_blocking_pops_and_publish_replay_as_the_leader_decided(
    kv_factory: Any, wake_patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    probe = held(server)
    sock = str(work_dir / "lp.sock")
    with background_update(
        wake_patches["same"], sock, "--promote", "manual", "--exercise-wait", "0", "--window", "1"
    ) as proc:
        wait_for_status(sock, proc, lambda s: bool(s.get("ready")))
        _exercise(server, probe)
        status = wait_for_status(
            sock, proc, lambda s: s["compared"] >= s["recorded"] and s["state"] == "validated"
        )
        assert status["divergences"] == 0 and status["compared"] > 20
        promoted = livepatch_cli("promote", "--socket", sock)
        assert promoted.returncode == 0, promoted.stdout + promoted.stderr
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    # The promoted server (the follower that replayed all of it) serves the same: the left-over
    # element, and wake-ups of its own.
    assert probe.lrange("q", 0, -1) == [b"c"]
    waiter = Waiter(server, "q2")
    wait_for(lambda: _blocked(probe, 1), timeout=30, what="a BLPOP to park on the new version")
    assert probe.rpush("q2", "z") == 1
    assert waiter.join() == (b"q2", b"z")


@pytest.mark.timeout(240)
def test_a_wrong_wake_up_is_a_divergence_at_the_push(
    kv_factory: Any, wake_patches: dict[str, Path], work_dir: Path
) -> None:
    """Only the woken client's reply differs: the push that woke it is the diverging request."""
    server = start_server(kv_factory, work_dir)
    probe = held(server)
    sock = str(work_dir / "lp.sock")
    with background_update(
        wake_patches["wrong_end"], sock, "--promote", "manual", "--exercise-wait", "0"
    ) as proc:
        wait_for_status(sock, proc, lambda s: bool(s.get("ready")))
        waiter = Waiter(server, "q")
        wait_for(lambda: _blocked(probe, 1), timeout=30, what="the BLPOP to park")
        assert probe.rpush("q", "first", "last") == 2
        assert waiter.join() == (b"q", b"first")  # the leader's client got the old version's answer
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert "discarded" in out and "b'RPUSH'" in out, out
    assert "first" in out and "last" in out, out  # both versions' answers to the woken client
    assert probe.lrange("q", 0, -1) == [b"last"]
