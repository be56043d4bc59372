"""The thread side of the runtime: managed threads, quiescence points, priorities and wake-up hooks.

Theory of operation
-------------------
One lock (`_lock`) guards the `Registry` (registry.py, which takes every decision). `_threads_cv` (on that
lock) wakes managed threads parked at a quiescence point and threads waiting to be born or activated while a
global transition runs. `_progress` (an Event, not the lock) wakes the patcher when something it waits for
changed: the last park, a park that lets higher-priority threads park (Registry.at_point says which), the
last move, a death, a deactivation or a priority change. An ordinary park wakes nobody.

Local migration takes no lock at all: the moving thread writes its own generation (Registry.migrate).
Busy threads that queued on the lock while the patcher waited for the GIL formed a convoy that made a
local transition with 16 CPU-bound threads take about a second; lock-free it takes milliseconds.

`_control.request` is the pending `Transition` or None. It is written only under `_lock`, but read without
it by `quiescence_point()`: the fast path is that single attribute read. A stale read is harmless: the
thread simply acts at its next quiescence point. While no transition runs but a thread released by a
forced revert (Registry.release) has not passed a point since, it is `_REJOIN` instead of None: every
point takes the slow path, where the released thread activates itself again (it is between requests
there, so from then on patches wait for it as before).

The patcher side (quiescence.py) drives the protocols with the same lock and conditions.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from livepatch.runtime.registry import (
    Mode,
    PointAction,
    Priority,
    Registry,
    RuntimeStatistics,
    ThreadRecord,
    ThreadState,
    Transition,
)

__all__ = [
    "Priority",
    "activate",
    "add_wakeup_hook",
    "current_generation",
    "deactivate",
    "is_managed",
    "managed_thread",
    "quiescence_point",
    "remove_wakeup_hook",
    "set_priority",
    "statistics",
]

log = logging.getLogger("livepatch.runtime")

_lock = threading.Lock()
_threads_cv = threading.Condition(_lock)
_progress = (
    threading.Event()
)  # set whenever the patcher should re-check; it clears it before checking
_registry = Registry()
_local = threading.local()  # .record: the calling thread's ThreadRecord, when managed
_hooks: tuple[
    Callable[[], object], ...
] = ()  # copy-on-write: the patcher iterates without the lock


class _Rejoin:
    """The value of `_control.request` while released threads have not rejoined (see the theory)."""

    __slots__ = ()


_REJOIN = _Rejoin()


class _Control:
    __slots__ = ("request",)

    def __init__(self) -> None:
        self.request: Transition | _Rejoin | None = None


_control = _Control()


def idle_request() -> _Rejoin | None:
    """What `_control.request` holds when no transition runs. Caller holds `_lock`."""
    return _REJOIN if _registry.any_released() else None


def _drop_rejoin() -> None:
    """Caller holds `_lock`: back to the plain fast path once no released thread is left."""
    if _control.request is _REJOIN and not _registry.any_released():
        _control.request = None


def release_threads(idents: list[int]) -> list[str]:
    """A forced revert: stop waiting for these managed threads (they run inside code no longer
    installed) until each passes its next quiescence point (Registry.release). Returns the names of
    the threads released. Any thread may call it; takes the registry lock briefly."""
    names: list[str] = []
    with _lock:
        for ident in idents:
            rec = _registry.records.get(ident)
            if rec is not None and _registry.release(rec):
                names.append(rec.name)
        if names and _control.request is None:
            _control.request = _REJOIN
        _progress.set()  # a transition waiting for them may now be complete
    return names


class TransitionFlag(Protocol):
    """What transition_flag() returns: read `request`, never write it."""

    @property
    def request(self) -> object | None: ...


def transition_flag() -> TransitionFlag:
    """The flag quiescence_point() reads first: `request` is None while no patch waits for threads (and
    no thread released by a forced revert still has to rejoin).

    For the hottest loops (an event loop turning tens of thousands of times a second):

        flag = transition_flag()                  # once
        ...
        if flag.request is not None:              # per iteration: one attribute read
            quiescence_point()

    behaves exactly like calling quiescence_point() every time (its first step is this test), without
    the cost of a call when nothing is pending.
    """
    return _control


def _record() -> ThreadRecord | None:
    return getattr(_local, "record", None)


def quiescence_point() -> None:
    """Declare that the calling thread holds no lock and no open transaction right now.

    Call it at the top of a work loop (a connection's command loop outside a transaction, a worker
    between tasks, an event loop before sleeping). When nothing is pending it costs one attribute read.
    During a global patch a managed, active thread parks here until the swap is done (or returns at once
    if the priority rule says a lower-priority thread still runs); during a local patch it moves to the
    new generation here without blocking. Unmanaged threads never park. Never raises.
    """
    if _control.request is None:
        return
    _slow_point()


def _slow_point() -> None:
    rec = _record()
    if rec is None:
        return  # unmanaged threads follow the newest generation and are never waited for
    if (
        rec.state is ThreadState.RELEASED
    ):  # read without the lock: only release() sets it (see _rejoin)
        _rejoin(rec)
    req = _control.request
    if req is None or isinstance(req, _Rejoin):
        return
    if req.mode is Mode.LOCAL:
        # Lock-free (see the theory above); already moved is WfPatch's second fast path.
        if rec.generation != req.target:
            action = _registry.migrate(rec, req)
            if action is not PointAction.MIGRATED_EARLY and action is not PointAction.RETURN:
                _progress.set()  # possibly the last one: the patcher checks (early movers don't wake it)
        # Step aside: until the transition ends, a thread that has moved yields the GIL at each point.
        # The threads that have not moved yet (and the patcher) progress only while they hold the GIL;
        # CPU-bound threads otherwise hand it over every 5 ms to a waiter the OS picks, and the last of
        # 10 threads moved after ~200 ms instead of a few ms.
        time.sleep(0)
        return
    with _lock:
        action = _registry.at_point(rec)
        if action is PointAction.RETURN:
            return
        if action is not PointAction.PARK:
            _progress.set()  # PARK_NOTIFY, or a local move (the transition changed since we read it)
        # The patcher unparks us (state back to RUNNING) when the swap is done or aborted.
        while rec.state is ThreadState.PARKED:
            _threads_cv.wait()


def _rejoin(rec: ThreadRecord) -> None:
    """A thread released by a forced revert passes a point: it is between requests again, so it becomes
    active again (waiting while a global patch runs, as activate() does).

    Its state is read without the lock at the point. A release is set (under the lock) before
    `_control.request` turns to `_REJOIN`, and only for a thread whose stack runs the removed code, so
    the one stale read possible is a thread released while it passes a point inside that code's call: it
    then rejoins at its next point instead."""
    with _lock:
        while not _registry.can_enter():
            _threads_cv.wait()
        _registry.activate(rec)
        _drop_rejoin()
        _progress.set()


@contextmanager
def managed_thread(role: str = "worker", priority: Priority = Priority.LOW) -> Iterator[None]:
    """Register the calling thread with the runtime for the duration of the block.

    Birth on enter (waits while a global patch is being applied; starts in the newest generation),
    death on exit, also when the block raises. May not be nested in one thread (RuntimeError).
    A patch thread (the caller of apply_patch) must not be managed.
    """
    if _record() is not None:
        raise RuntimeError("managed_thread() is already active in this thread")
    me = threading.current_thread()
    ident = threading.get_ident()
    with _lock:
        while not _registry.can_enter():
            _threads_cv.wait()
        rec = _registry.birth(ident, me.name, role, Priority(priority))
    _local.record = rec
    try:
        yield
    finally:
        _local.record = None
        with _lock:
            _registry.death(rec)
            _drop_rejoin()
            _progress.set()


def _require_record(what: str) -> ThreadRecord:
    rec = _record()
    if rec is None:
        raise RuntimeError(
            f"{what}() needs a managed thread: call it inside `with managed_thread(...)`"
        )
    return rec


def deactivate() -> None:
    """The calling managed thread leaves its work loop (e.g. a cached connection thread waiting for a new
    connection): patches no longer wait for it. Call it only where a quiescence point would be valid.
    Thread-safe; never blocks for long (takes the registry lock)."""
    rec = _require_record("deactivate")
    with _lock:
        _registry.deactivate(rec)
        _drop_rejoin()
        _progress.set()


def activate() -> None:
    """The calling managed thread re-enters its work loop. Waits while a global patch is being applied;
    during a local patch it moves to the new generation at once (it runs no request yet)."""
    rec = _require_record("activate")
    with _lock:
        while not _registry.can_enter():
            _threads_cv.wait()
        moved = _registry.activate(rec)
        _drop_rejoin()
        tr = _registry.transition
        if moved and tr is not None and tr.listener is not None:
            tr.listener("migrated", rec)
        _progress.set()


def set_priority(priority: Priority) -> None:
    """Set the calling managed thread's priority (thread pools: LOW while executing a task, MEDIUM while
    waiting for work, CRITICAL while acting as the listener). Cheap when no patch is pending."""
    rec = _require_record("set_priority")
    p = Priority(priority)
    if _control.request is None:
        rec.priority = (
            p  # only this thread writes its priority; the patcher reads it under the lock
        )
        return
    with _lock:
        if _registry.set_priority(rec, p):
            _threads_cv.notify_all()  # threads unparked by the priority rule
        _progress.set()


def add_wakeup_hook(fn: Callable[[], object]) -> None:
    """Register `fn`, which the patcher calls (on its own thread, repeatedly, until quiescence or the
    deadline) to wake threads blocked in I/O or waiting for work. It must not block. An exception it raises
    is logged (once per patch) and ignored."""
    global _hooks
    if not callable(fn):
        raise TypeError(f"wake-up hook must be callable, got {fn!r}")
    with _lock:
        _hooks = (*_hooks, fn)


def remove_wakeup_hook(fn: Callable[[], object]) -> None:
    """Unregister `fn` (one registration of it). ValueError if it is not registered."""
    global _hooks
    with _lock:
        hooks = list(_hooks)
        hooks.remove(fn)
        _hooks = tuple(hooks)


def statistics() -> RuntimeStatistics:
    """A consistent snapshot: managed threads by generation, state and priority. Any thread may call it."""
    with _lock:
        return _registry.statistics()


def current_generation() -> int:
    """The generation the calling thread runs: its own when managed, else the newest one."""
    rec = _record()
    if rec is not None:
        return rec.generation
    return _registry.newest


def is_managed() -> bool:
    return _record() is not None
