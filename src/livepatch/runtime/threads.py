"""The thread side of the runtime: managed threads, quiescence points, priorities and wake-up hooks.

Theory of operation
-------------------
`ThreadSide` is the part of a `Runtime` (core.py, which creates every lock and states the lock order) that
managed threads call. One lock (`_lock`) guards the `Registry` (registry.py, which takes every decision).
A thread parked at a quiescence point waits on its own gate (`ThreadRecord.gate`, a plain lock it
holds while parked), outside the registry lock; whoever unparks it (the priority rule, a thread ending the
transition at its deadline) releases the gate under the lock, and the end of a global transition wakes
the first thread, each woken thread waking the next (a relay: see _parked; one C call to park and one to
wake, where an Event cost a condition's Python-level waiter list on both sides, a condition handed each
woken thread the registry lock while it waited for the GIL, and ten wake-ups at once preempted the
patcher).
`_threads_cv` (on the lock) wakes threads waiting to be born or activated while a global transition runs,
and parked threads past the deadline while the swap runs. `_progress` (a `Doorbell`, doorbell.py, not
the lock) wakes the patcher when something it waits for changed: the last park (rung as the thread
blocks, once the GIL is free), a park that lets higher-priority threads park (Registry.at_point says
which), the last move, a death, a deactivation or a priority change. An ordinary park wakes nobody.

Local migration takes no lock at all: the moving thread writes its own generation (Registry.migrate).
Busy threads that queued on the lock while the patcher waited for the GIL formed a convoy that made a
local transition with 16 CPU-bound threads take about a second; lock-free it takes milliseconds.

`_control.request` is the pending `Transition` or None. It is written only under `_lock`, but read without
it by `quiescence_point()`: the fast path is that single attribute read. A stale read is harmless: the
thread simply acts at its next quiescence point. While no transition runs but a thread released by a
forced revert (Registry.release) has not passed a point since, it is `_REJOIN` instead of None: every
point takes the slow path, where the released thread activates itself again (it is between requests
there, so from then on patches wait for it as before).

Each runtime has its own thread-local record: a thread managed by one runtime is unmanaged for another.
The patcher side (quiescence.py) drives the protocols with the same lock and conditions.
"""

from __future__ import annotations

import _thread
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from livepatch.runtime.doorbell import Doorbell
from livepatch.runtime.lifecycle import EventName
from livepatch.runtime.registry import (
    LOCAL,
    MIGRATED_EARLY,
    MIGRATING,
    PARK,
    PARKED,
    RELEASED,
    RETURN,
    Mode,
    Phase,
    Priority,
    Registry,
    ThreadRecord,
    Transition,
    describe,
)
from livepatch.runtime.stragglers import describe_stragglers

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module is on a server's import path
if TYPE_CHECKING:
    import logging
    from typing import Protocol

    from livepatch.runtime.results import RuntimeStatistics

    class TransitionFlag(Protocol):
        """What transition_flag() returns: read `request`, never write it (a Control, typed read-only)."""

        @property
        def request(self) -> object | None: ...


__all__ = ["Priority", "ThreadSide"]


def log() -> logging.Logger:
    """The runtime's logger. A function, so that `logging` is imported when the runtime first logs (a
    failed attempt, a raising hook), not by a server's `import livepatch`."""
    import logging

    return logging.getLogger("livepatch.runtime")


# Local transitions: how long a thread that has moved steps aside at each of its points, and for how long
# into the transition it does so (see _slow_point).
STEP_ASIDE_S = 0.0001
STEP_ASIDE_FOR_S = 0.01


class _Rejoin:
    """The value of `_control.request` while released threads have not rejoined (see the theory)."""

    __slots__ = ()


_REJOIN = _Rejoin()


class Control:
    """The flag quiescence points read (see the theory): the pending Transition, `_REJOIN` or None."""

    __slots__ = ("request",)

    def __init__(self) -> None:
        self.request: Transition | _Rejoin | None = None


# A relay that does not arrive (ThreadSide._parked): how long a thread already unparked waits for the
# thread before it to wake it before going on by itself, and how often a parked thread re-checks its state
# (a thread unparked while it waited, whose relay never came, goes on within that time).
RELAY_WAIT_S = 0.05
PARKED_RECHECK_S = 1.0


def _release(gate: _thread.LockType) -> None:
    """Release a gate; a gate already free (a relay that arrived after its thread went on) stays free."""
    try:
        gate.release()
    except RuntimeError:
        pass


def _relay(rec: ThreadRecord) -> None:
    """Wake the thread after `rec` in the relay, if any (see ThreadSide._parked)."""
    nxt = rec.wake_next
    if nxt is not None:
        rec.wake_next = None
        _release(nxt.gate)


class ThreadSide:
    """The calls managed threads make. The state is created by Runtime.__init__ (core.py)."""

    _lock: threading.Lock
    _threads_cv: threading.Condition
    # set whenever the patcher should re-check; it clears it before checking
    _progress: Doorbell
    _registry: Registry
    _local: threading.local  # .record: the calling thread's ThreadRecord, when managed
    _hooks: tuple[Callable[[], object], ...]  # copy-on-write: the patcher iterates without the lock
    _control: Control
    # the pending transition's deadline (time.monotonic()); written with begin_global / begin_local under
    # _lock, read without it by local points (a stale read: the lock is taken and the state re-checked)
    _deadline: float
    # the transition the threads ended (global) or reversed (local) at its deadline, with its stragglers
    # described as they were then (under _lock): by the time the patcher writes the abort reason they may
    # have moved on (a released pool worker finishes its task, drops back to MEDIUM and waits elsewhere)
    _expired: tuple[Transition, str] | None

    def _idle_request(self) -> _Rejoin | None:
        """What `_control.request` holds when no transition runs. Caller holds `_lock`."""
        return _REJOIN if self._registry.any_released() else None

    def _drop_rejoin(self) -> None:
        """Caller holds `_lock`: back to the plain fast path once no released thread is left."""
        if self._control.request is _REJOIN and not self._registry.any_released():
            self._control.request = None

    def release_threads(self, idents: list[int]) -> list[str]:
        """A forced revert: stop waiting for these managed threads (they run inside code no longer
        installed) until each passes its next quiescence point (Registry.release). Returns the names of
        the threads released. Any thread may call it; takes the registry lock briefly."""
        names: list[str] = []
        with self._lock:
            for ident in idents:
                rec = self._registry.records.get(ident)
                if rec is not None and self._registry.release(rec):
                    names.append(rec.name)
            if names and self._control.request is None:
                self._control.request = _REJOIN
            self._progress.set()  # a transition waiting for them may now be complete
        return names

    def transition_flag(self) -> TransitionFlag:
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
        return self._control

    def _record(self) -> ThreadRecord | None:
        return getattr(self._local, "record", None)

    def quiescence_point(self) -> None:
        """Declare that the calling thread holds no lock and no open transaction right now.

        Call it at the top of a work loop (a connection's command loop outside a transaction, a worker
        between tasks, an event loop before sleeping). When nothing is pending it costs one attribute read.
        During a global patch a managed, active thread parks here until the swap is done (or returns at once
        if the priority rule says a lower-priority thread still runs); during a local patch it moves to the
        new generation here without blocking. Unmanaged threads never park. Never raises.
        """
        if self._control.request is None:
            return
        self._slow_point()

    def _slow_point(self) -> None:
        rec = self._record()
        if rec is None:
            return  # unmanaged threads follow the newest generation and are never waited for
        if rec.state is RELEASED:  # read without the lock: only release() sets it
            self._rejoin(rec)
        req = self._control.request
        if req is None or isinstance(req, _Rejoin):
            return
        if req.mode is LOCAL:
            now = time.monotonic()
            if now > self._deadline and req.phase is MIGRATING:
                self._local_deadline(rec, req)
            # Lock-free (see the theory above); already moved is WfPatch's second fast path.
            if rec.generation != req.target:
                action = self._registry.migrate(rec, req)
                if action is not MIGRATED_EARLY and action is not RETURN:
                    self._progress.set()  # possibly the last one: the patcher checks
            # Step aside: until the transition ends, a thread that has moved gives up the GIL at each
            # point. The threads that have not moved yet (and the patcher) progress only while they hold
            # the GIL; CPU-bound threads otherwise hand it over every 5 ms to a waiter the OS picks, and
            # the last of 10 threads moved after ~200 ms instead of a few ms. sleep(0) hands it to any
            # waiter, often another thread that has moved (10 threads: ~3 hand-offs per move); sleeping
            # 0.1 ms takes the moved thread out of the race for that long, so the GIL goes to those still
            # to move (bench/sync_time.py: local sync medians halved, docs/performance.md). Only in the
            # first 10 ms: a transition still open after that waits for a thread blocked elsewhere, which
            # no stepping aside helps, and a busy moved thread would lose 0.1 ms per point for nothing.
            time.sleep(STEP_ASIDE_S if now - req.started < STEP_ASIDE_FOR_S else 0)
            return
        with self._lock:
            action = self._registry.at_point(rec)
            if action is RETURN:
                return
            notify = action is not PARK  # PARK_NOTIFY, or a local move (changed since)
            if rec.state is not PARKED:
                if notify:
                    self._progress.set()
                return  # a local move (the transition changed since the flag was read)
            # Locked afterwards either way: free while the thread runs, or still locked by a relayed
            # release that has not arrived (it wakes us early; _parked re-checks).
            rec.gate.acquire(False)
            rec.frame = sys._getframe()  # for the activeness check: cleared when we leave (_parked)
        # A park that notifies (the last one, typically) rings the patcher's doorbell only as it blocks,
        # with the GIL released (doorbell.py), so the patcher finds the GIL free: see _parked.
        self._parked(rec, self._progress if notify else None)

    def _parked(self, rec: ThreadRecord, ring: Doorbell | None = None) -> None:
        """Wait while parked (a global transition) on the thread's own gate, which it holds while parked.

        Whoever unparks us, under the lock, sets the state back to RUNNING and releases the gate: the
        priority rule (set_priority) and a thread ending the transition at its deadline (_wait_global,
        possibly us) release each gate (`_unpark`); the patcher, at the end of the transition, releases
        only the first thread's, and each thread woken releases the next one's (`_unpark_relayed`,
        `_relay`). Taking the gate again here consumes that release, and we let it go: the gate is free
        while we run.

        Why a lock of our own: a park is one C call (`acquire`) and a release one C call per thread,
        where an Event ran a condition's Python-level waiter list on both sides (10 parks in a row, each
        on the GIL hand-off chain of a global sync); and unlike `_threads_cv`, a thread woken here does
        not hold the registry lock while it waits for the GIL (ten released threads held it in turn for
        milliseconds while the next transition waited: core8). Why a relay: each thread the patcher
        woke itself got on its CPU at once, or took the patcher's, only to block again on the GIL the
        patcher still held: ten wake-ups cost the patcher ~8 preemptions, half of a transition's
        quiescent -> finished at load 8 (docs/performance.md, core10). A thread woken by the relay wakes
        the next one as soon as it holds the GIL, before it runs anything else, so the threads still
        come back in turn, as fast as the GIL lets them run.

        Every way out of here passes the relay on (`finally`), so a relay breaks only if a thread dies
        without running its `finally`. Even then nobody waits long: an unparked thread waits for the
        relay RELAY_WAIT_S, a parked one re-checks its state every PARKED_RECHECK_S, and a release that
        arrives late finds the gate free or wakes us while parked again, which is re-checked. The state
        is read without the lock: it is written under the lock before the gate is released.

        `ring`: the patcher's doorbell, when this park must wake it (Registry.at_point said so under the
        lock); it is rung by the first wait below, once the GIL is released (doorbell.py), or on the way
        out if no wait happens. The patcher checks the registry under the lock after any ring, so a ring
        that comes a few lines after the park was recorded only moves its wake-up closer to the moment
        the GIL is free."""
        gate = rec.gate
        try:
            while True:
                parked = rec.state is PARKED
                if parked:
                    remaining = self._deadline - time.monotonic()
                    if remaining <= 0:
                        if ring is not None:
                            ring.set()
                            ring = None
                        with (
                            self._lock
                        ):  # past the deadline: end the transition (or wait for the swap)
                            if rec.state is PARKED:
                                self._wait_global()
                        continue
                    wait = min(remaining, PARKED_RECHECK_S)
                else:  # unparked: the release is being relayed to us
                    wait = RELAY_WAIT_S
                if ring is not None:
                    got = ring.ring_then_wait(gate, wait)
                    ring = None
                else:
                    got = gate.acquire(True, wait)
                if parked and rec.state is PARKED:
                    continue  # a late release of an earlier relay, a re-check, or the deadline
                if got:
                    gate.release()
                return
        finally:
            if ring is not None:  # left before any wait (an exception): the patcher still checks
                ring.set()
            rec.frame = None  # (a frame holding `rec` in its locals: a cycle while it is set)
            _relay(rec)  # also when we leave by an exception: the threads after us still wake

    @staticmethod
    def _unpark(records: list[ThreadRecord]) -> None:
        """Wake threads the registry just unparked (their state is RUNNING again). Caller holds `_lock`."""
        for r in records:
            _release(r.gate)

    @staticmethod
    def _unpark_relayed(records: list[ThreadRecord]) -> None:
        """Wake the first of these unparked threads; each one woken wakes the next (see _parked). Caller
        holds `_lock`."""
        if not records:
            return
        for before, after in itertools.pairwise(records):
            before.wake_next = after
        records[-1].wake_next = None
        _release(records[0].gate)

    def _local_deadline(self, rec: ThreadRecord, tr: Transition) -> None:
        """A managed thread at a point past a local transition's deadline, while it still migrates: if
        not every active thread has moved, reverse it here (the moved threads, this one first, move back
        at their points); if every one has, it completed in time, and nothing is left to enforce.

        The deadline is held by the threads, not only by the patcher (as a global one: _wait_global).
        A patcher held up (a wake-up hook that blocks, a long garbage collection, a starved process) left
        the moved threads on the new code and the others on the old for as long as it was held, and then
        committed a transition that completed after its deadline. Only a thread past the deadline takes
        the lock here, and at most once per transition (`_deadline` is cleared once decided)."""
        with self._lock:
            if self._registry.transition is not tr or tr.phase is not Phase.MIGRATING:
                return  # decided meanwhile (by the patcher, or by another thread)
            if self._registry.all_moved():
                self._deadline = float(
                    "inf"
                )  # complete in time: the patcher commits it when it runs
                return
            self._expired = (tr, describe(self._registry.stragglers()))  # the abort reason's
            self._registry.reverse_local()
            self._deadline = float("inf")
            self._progress.set()

    def _wait_global(self) -> None:
        """Wait once on `_threads_cv` while a global transition holds the caller (parked, or waiting to be
        born or to activate). Caller holds `_lock`.

        The deadline is enforced here, by the threads it holds, not only by the patcher: past it, while
        the swap has not started, the first waiting thread ends the transition itself (nothing swapped,
        everyone released). The patcher may be unable to run on time (a wake-up hook that blocks, a long
        garbage collection, a starved process at load 30: a 13.85 s sync against a 10 s deadline); it
        finds the transition gone and reports the abort (quiescence.py). Once the swap has started, its
        own deadlines bound it (hook_runner.py), so the wait is not timed."""
        tr = self._registry.transition
        if tr is None or tr.mode is not Mode.GLOBAL or tr.phase is not Phase.QUIESCING:
            self._threads_cv.wait()
            return
        remaining = self._deadline - time.monotonic()
        if remaining > 0:
            self._threads_cv.wait(remaining)
            return
        self._expired = (tr, describe_stragglers(self._registry.stragglers()))  # the abort reason's
        self._unpark(self._registry.finish_global(False))
        self._control.request = self._idle_request()
        self._threads_cv.notify_all()
        self._progress.set()

    def _rejoin(self, rec: ThreadRecord) -> None:
        """A thread released by a forced revert passes a point: it is between requests again, so it
        becomes active again (waiting while a global patch runs, as activate() does).

        Its state is read without the lock at the point. A release is set (under the lock) before
        `_control.request` turns to `_REJOIN`, and only for a thread whose stack runs the removed code, so
        the one stale read possible is a thread released while it passes a point inside that code's call:
        it then rejoins at its next point instead."""
        with self._lock:
            while not self._registry.can_enter():
                self._wait_global()
            self._registry.activate(rec)
            self._drop_rejoin()
            self._progress.set()

    @contextmanager
    def managed_thread(
        self, role: str = "worker", priority: Priority = Priority.LOW
    ) -> Iterator[None]:
        """Register the calling thread with the runtime for the duration of the block.

        Birth on enter (waits while a global patch is being applied, except under the priority rule
        while a lower-priority thread still runs: Registry.can_be_born; starts in the newest
        generation), death on exit, also when the block raises. May not be nested in one thread
        (RuntimeError).
        A patch thread (the caller of apply_patch) must not be managed.
        """
        if self._record() is not None:
            raise RuntimeError("managed_thread() is already active in this thread")
        me = threading.current_thread()
        ident = threading.get_ident()
        with self._lock:
            while not self._registry.can_be_born(Priority(priority)):
                self._wait_global()
            rec = self._registry.birth(ident, me.name, role, Priority(priority))
        self._local.record = rec
        try:
            yield
        finally:
            self._local.record = None
            with self._lock:
                self._registry.death(rec)
                self._drop_rejoin()
                self._progress.set()

    def _require_record(self, what: str) -> ThreadRecord:
        rec = self._record()
        if rec is None:
            raise RuntimeError(
                f"{what}() needs a managed thread: call it inside `with managed_thread(...)`"
            )
        return rec

    def deactivate(self) -> None:
        """The calling managed thread leaves its work loop (e.g. a cached connection thread waiting for a
        new connection): patches no longer wait for it. Call it only where a quiescence point would be
        valid. Thread-safe; never blocks for long (takes the registry lock)."""
        rec = self._require_record("deactivate")
        with self._lock:
            self._registry.deactivate(rec)
            self._drop_rejoin()
            self._progress.set()

    def activate(self) -> None:
        """The calling managed thread re-enters its work loop. Waits while a global patch is being
        applied; during a local patch it moves to the new generation at once (it runs no request yet)."""
        rec = self._require_record("activate")
        with self._lock:
            while not self._registry.can_enter():
                self._wait_global()
            moved = self._registry.activate(rec)
            self._drop_rejoin()
            tr = self._registry.transition
            if moved and tr is not None and tr.listener is not None:
                tr.listener(EventName.MIGRATED, rec)
            self._progress.set()

    def set_priority(self, priority: Priority) -> None:
        """Set the calling managed thread's priority (thread pools: LOW while executing a task, MEDIUM
        while waiting for work, CRITICAL while acting as the listener). Cheap when no patch is pending."""
        rec = self._require_record("set_priority")
        p = Priority(priority)
        if self._control.request is None:
            # only this thread writes its priority; the patcher reads it under the lock
            rec.priority = p
            return
        with self._lock:
            lowered = p < rec.priority
            unparked = self._registry.set_priority(rec, p)
            self._unpark(unparked)
            if unparked or lowered:
                # a lower priority may let a waiting birth proceed (Registry.can_be_born)
                self._threads_cv.notify_all()
            self._progress.set()

    def add_wakeup_hook(self, fn: Callable[[], object]) -> None:
        """Register `fn`, which the patcher calls (on its own thread, repeatedly, until quiescence or the
        deadline) to wake threads blocked in I/O or waiting for work. It must not block. An exception it
        raises is logged (once per patch) and ignored."""
        if not callable(fn):
            raise TypeError(f"wake-up hook must be callable, got {fn!r}")
        with self._lock:
            self._hooks = (*self._hooks, fn)

    def remove_wakeup_hook(self, fn: Callable[[], object]) -> None:
        """Unregister `fn` (one registration of it). ValueError if it is not registered."""
        with self._lock:
            hooks = list(self._hooks)
            hooks.remove(fn)
            self._hooks = tuple(hooks)

    def statistics(self) -> RuntimeStatistics:
        """A consistent snapshot: managed threads by generation, state and priority, and the current
        generation. Any thread may call it."""
        with self._lock:
            return self._registry.statistics()

    def current_generation(self) -> int:
        """The generation the calling thread runs: its own when managed, else the newest one."""
        rec = self._record()
        if rec is not None:
            return rec.generation
        return self._registry.newest

    def is_managed(self) -> bool:
        """Whether the calling thread is a managed thread of this runtime."""
        return self._record() is not None
