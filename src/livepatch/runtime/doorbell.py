"""What wakes the patcher (`_progress`, a `Doorbell`), and how the last park rings it.

Theory of operation
-------------------
A global transition is a chain of hand-offs: each busy managed thread parks in turn, handing the GIL to
the next, and the last park rings the patcher's doorbell. Rung from Python (`set`), the ring wakes the
patcher while the ringer still holds the GIL for its last few lines (leaving the registry lock, entering
its gate's wait): the patcher wakes, blocks on the GIL, and is woken a second time once the ringer
blocks. `Doorbell.ring_then_wait(gate, timeout)` rings with the GIL already released, on the way into
the gate's wait, through the optional C helper `livepatch._handoff` (src/livepatch/_handoff.c), so the
patcher finds the GIL free (`--phases`: 5 voluntary context switches of the patcher per transition
against 8; docs/performance.md, core11). Without the helper (no compiler, or another interpreter than
CPython 3.11) it rings just before an ordinary acquire: the same behaviour, with the extra wake-up.
Tests run both (tests/runtime/test_doorbell.py).
"""

from __future__ import annotations

import _thread
import threading
from types import ModuleType

_handoff: ModuleType | None
try:
    from livepatch import _handoff as _built
except ImportError:  # no compiler at install time, or not CPython 3.11: the fallback below
    _handoff = None
else:
    _handoff = _built

__all__ = ["Doorbell"]


class Doorbell:
    """What wakes the patcher (`_progress`): an Event for one waiter, made of one plain lock (locked = not
    rung). Ringing is one C call, where `Event.set` ran a condition's Python-level notify under its own
    lock; the last thread to park rings it, so it sits on every global sync's critical path, as does the
    patcher's wait. `wait` consumes the ring (the patcher clears it before each check anyway); only one
    thread waits at a time (the holder of the transition slot)."""

    __slots__ = ("_rung",)

    def __init__(self) -> None:
        self._rung = _thread.allocate_lock()
        self._rung.acquire()

    def set(self) -> None:
        try:
            self._rung.release()
        except RuntimeError:  # already rung (an unlocked lock): one C call either way, atomic
            pass

    def clear(self) -> None:
        self._rung.acquire(False)

    def is_set(self) -> bool:
        return not self._rung.locked()

    def wait(self, timeout: float) -> bool:
        """Wait until rung, up to `timeout` seconds; True when it was (the ring is consumed)."""
        return self._rung.acquire(True, min(timeout, threading.TIMEOUT_MAX))

    def ring_then_wait(self, gate: _thread.LockType, timeout: float) -> bool:
        """Ring, then `gate.acquire(True, timeout)`: with livepatch._handoff the ring happens once the GIL
        is released (see the theory). True when the gate was acquired."""
        timeout = min(max(timeout, 0.0), threading.TIMEOUT_MAX)
        helper = _handoff
        if helper is not None:
            return bool(helper.ring_then_acquire(gate, timeout, self._rung))
        self.set()
        return gate.acquire(True, timeout)
