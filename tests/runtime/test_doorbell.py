"""The patcher's doorbell (doorbell.py `Doorbell`, the runtime's `_progress`): an Event for one waiter."""

from __future__ import annotations

import signal
import threading
import time
from types import ModuleType

import pytest

from livepatch.runtime import doorbell
from livepatch.runtime.doorbell import Doorbell


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


# ---- ring_then_wait (doorbell.py; livepatch._handoff, with its fallback) ---------------------------------


@pytest.fixture(params=["c", "fallback"])
def helper(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> ModuleType | None:
    """Each test runs with livepatch._handoff and with the pure-Python fallback."""
    if request.param == "fallback":
        monkeypatch.setattr(doorbell, "_handoff", None)
        return None
    assert doorbell._handoff is not None, "livepatch._handoff is not built (setup.py)"
    return doorbell._handoff


def test_ring_then_wait_rings_and_takes_a_free_gate(helper: ModuleType | None) -> None:
    bell = Doorbell()
    gate = threading.Lock()
    assert bell.ring_then_wait(gate, 1.0)
    assert gate.locked()
    assert bell.is_set()
    bell.set()  # rung already: still one ring, and no error
    assert bell.wait(0)
    assert not bell.wait(0)  # a binary bell: the ring above did not post twice
    gate.release()
    assert not gate.locked()


def test_ring_then_wait_times_out_on_a_held_gate_and_rings_once(helper: ModuleType | None) -> None:
    bell = Doorbell()
    bell.set()  # already rung: ringing again leaves one ring
    gate = threading.Lock()
    gate.acquire()
    t0 = time.monotonic()
    assert not bell.ring_then_wait(gate, 0.02)
    assert time.monotonic() - t0 >= 0.015
    assert bell.wait(0)
    assert not bell.wait(0)
    gate.release()  # still ours, and releasable once
    with pytest.raises(RuntimeError):
        gate.release()


def test_ring_then_wait_wakes_the_patcher_and_is_woken_by_a_release(
    helper: ModuleType | None,
) -> None:
    """The park's order of events, many times: ring the waiting patcher, which then releases the gate."""
    bell = Doorbell()
    for _ in range(300):
        gate = threading.Lock()
        gate.acquire()
        got: list[bool] = []
        parker = threading.Thread(
            target=lambda g=gate, out=got: out.append(bell.ring_then_wait(g, 10))
        )
        parker.start()
        assert bell.wait(10)
        gate.release()
        parker.join(10)
        assert got == [True]
        assert gate.locked()


def test_a_signal_handler_that_raises_interrupts_the_wait(helper: ModuleType | None) -> None:
    """As lock.acquire(): the handler runs, and its exception propagates out of the wait."""

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    gate = threading.Lock()
    gate.acquire()
    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        t0 = time.monotonic()
        with pytest.raises(Interrupted):
            Doorbell().ring_then_wait(gate, 10)
        assert time.monotonic() - t0 < 5
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def test_bad_arguments_are_refused() -> None:
    helper = doorbell._handoff
    assert helper is not None, "livepatch._handoff is not built (setup.py)"
    lock = threading.Lock()
    with pytest.raises(TypeError):
        helper.ring_then_acquire(threading.RLock(), 0.0, lock)
    with pytest.raises(TypeError):
        helper.ring_then_acquire(lock, 0.0, object())
    with pytest.raises(ValueError):
        helper.ring_then_acquire(lock, -1.0, threading.Lock())
    assert not lock.locked()
