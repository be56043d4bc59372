"""The patcher's doorbell (threads.py `Doorbell`, the runtime's `_progress`): an Event for one waiter."""

from __future__ import annotations

import threading

from livepatch.runtime.threads import Doorbell


def test_set_clear_wait() -> None:
    bell = Doorbell()
    assert not bell.is_set()
    assert not bell.wait(0.001)
    bell.set()
    bell.set()  # ringing twice is ringing once, and never raises
    assert bell.is_set()
    assert bell.wait(0)  # consumes the ring
    assert not bell.is_set()
    bell.set()
    bell.clear()
    assert not bell.wait(0)
    bell.clear()  # clearing a bell that is not rung is a no-op
    assert not bell.is_set()


def test_many_ringers_wake_the_waiter_every_time() -> None:
    """Threads ring concurrently (parks, deaths, priority changes); the waiter sees every round."""
    bell = Doorbell()
    rounds = 200
    go = [threading.Event() for _ in range(rounds)]
    seen = 0

    def ringer() -> None:
        for ev in go:
            ev.wait(10)
            bell.set()

    ts = [threading.Thread(target=ringer, daemon=True) for _ in range(8)]
    for t in ts:
        t.start()
    for ev in go:
        bell.clear()
        ev.set()
        assert bell.wait(10)
        seen += 1
    for t in ts:
        t.join(10)
    assert seen == rounds
