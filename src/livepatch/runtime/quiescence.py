"""The patcher side of quiescence: the global and the local protocol (DESIGN.md "Quiesce and swap").

Theory of operation
-------------------
`Quiescence` is the part of a `Runtime` (core.py: the state and the lock order) that the patcher calls.
Both protocols run on the patcher thread, which must not be a managed thread (it would wait for itself).
They know nothing about code: the global protocol takes "do this while everyone is parked", the local one
takes "begin dispatch(use_new)" / "end dispatch(keep_new)" callables, so they can be tested with a shared
variable as well as with real patches.

Global: publish the request -> call the wake-up hooks, wait on `_progress` (set by the last park, by a
park after which no thread of that priority or lower runs, by a death, deactivation or priority change;
each time the hooks run again; a short, growing poll re-calls them for wake-ups that were lost, and its
first timeout shortens the GIL switch interval, see _Switching) until every active managed thread is
parked -> phase SWAPPING (nobody can leave or enter) -> `action(parked + inactive)` without the lock ->
switch interval back, release everyone (a relay: the first parked thread is woken, each wakes the next;
threads.py _parked). Deadline: release everyone, raise PatchAborted naming the
stragglers.

Local: `begin(use_new)` installs dispatchers while nobody uses the new code yet (managed threads are at
generation N, unmanaged ones follow `newest`, still N) -> publish target N+1 -> threads move at their next
point -> when every active thread has moved: `end(True)`, generation N+1. Deadline: reverse (target back to
N; moved threads move back at their next point), then `end(False)`. If even the reversal does not finish
within another deadline, a daemon finisher completes it later (it holds the transition slot, so the next
transition waits) and the caller gets PatchAborted saying so.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

from livepatch.errors import PatchAborted
from livepatch.runtime.lifecycle import EventName
from livepatch.runtime.registry import Phase, ThreadRecord, describe
from livepatch.runtime.stragglers import HINT, describe_stragglers
from livepatch.runtime.threads import ThreadSide, log

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module is on a server's import path
if TYPE_CHECKING:
    from livepatch.runtime.events import Recorder

_POLL_FIRST_S = 0.0005
_POLL_MAX_S = 0.02
_SWITCH_INTERVAL_S = 0.0002  # GIL switch interval while a global transition stalls (default: 5 ms)


class ParkedThread:
    """A managed thread whose stack the global action may inspect (the activeness check): parked at a
    quiescence point, or inactive (outside its work loop: it may still sit in a function the patch replaces,
    and it returns into it when it activates). A plain class, not a dataclass: this module is on a
    server's import path (lifecycle.py)."""

    __slots__ = ("frame", "ident", "name", "role", "state")

    def __init__(
        self,
        ident: int,
        name: str,
        role: str,
        state: str = "parked",
        frame: FrameType | None = None,
    ) -> None:
        self.ident = ident
        self.name = name
        self.role = role
        self.state = state  # "parked" | "inactive"
        # a parked thread's frame at its quiescence point (None: read the stack from
        # sys._current_frames, as for an inactive thread, whose stack may still change)
        self.frame = frame

    def __repr__(self) -> str:
        return f"ParkedThread({self.ident}, {self.name!r}, {self.role!r}, {self.state!r})"


class SyncTimings:
    """How long a transition took: request -> quiescent (global) / all moved (local), and the action
    (global) / end_dispatch (local), in ms; the threads that reached quiescence (global)."""

    __slots__ = ("reached", "swap_ms", "sync_ms")

    def __init__(self, sync_ms: float, swap_ms: float, reached: list[str] | None = None) -> None:
        self.sync_ms = sync_ms
        self.swap_ms = swap_ms
        self.reached = reached if reached is not None else []


class _HookCaller:
    """Calls the wake-up hooks; logs each failing hook once per transition and carries on."""

    def __init__(self, side: ThreadSide) -> None:
        self._side = side
        self._failed: set[int] = set()

    def __call__(self) -> None:
        for fn in self._side._hooks:
            try:
                fn()
            except Exception:
                if id(fn) not in self._failed:
                    self._failed.add(id(fn))
                    log().exception("wake-up hook %r raised (ignored; it stays registered)", fn)


def _listener(recorder: Recorder | None) -> Callable[[EventName, ThreadRecord], None] | None:
    if recorder is None:
        return None

    return lambda name, rec: recorder.emit_thread(name, rec.name, rec.generation)


class _Switching:
    """Shortens the GIL switch interval when a global transition stalls, and puts it back.

    A thread reaches its next quiescence point only when it holds the GIL; with CPython's default 5 ms
    interval a CPU-bound thread keeps it that long before a waiting thread (another worker, or the patcher)
    gets a turn, so a stalled transition waits in 5 ms steps (10 CPU-bound threads: sync p90 2.4-7 ms, max
    up to 0.7 s on the busy machine). `shorten()` is called when the patcher's wait times out with nothing
    happening (0.5 ms), not at once: in an I/O-bound thread pool a 0.2 ms interval for the whole transition
    cost a third of the throughput and made sync slower (bench/pool_sync.py). Never while the patcher works
    (staging): a short interval hands its GIL to a busy thread every 0.2 ms (staging beside 10 CPU-bound
    threads took 12 ms instead of 0.4 ms). And only for global transitions, which `restore()` while
    everyone is parked: restored while threads still run (local), the threads already waiting with the
    short interval push the patcher off the GIL, and it waits several 5 ms turns to get it back (local
    applies' staging p90 went to 130 ms); local threads step aside at their points instead (threads.py).
    The restore is skipped when someone else changed the interval meanwhile (theirs wins)."""

    def __init__(self) -> None:
        self._before: float | None = None
        self._ours = 0.0

    def shorten(self) -> None:
        before = sys.getswitchinterval()
        if self._before is not None or before <= _SWITCH_INTERVAL_S:
            return
        sys.setswitchinterval(_SWITCH_INTERVAL_S)
        self._before, self._ours = before, sys.getswitchinterval()  # as CPython rounded it

    def restore(self) -> None:
        if self._before is not None and sys.getswitchinterval() == self._ours:
            sys.setswitchinterval(self._before)
        self._before = None


class Quiescence(ThreadSide):
    """The patcher side of a Runtime: the two protocols. The state is created by Runtime.__init__."""

    _slot: threading.Lock  # one transition at a time; released by whoever finishes the transition

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no transition is in progress (e.g. a detached local reversal); False after
        `timeout`."""
        if not self._slot.acquire(timeout=max(0.0, timeout)):
            return False
        self._slot.release()
        return True

    def _take_slot(self, deadline: float) -> None:
        if not self._slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise PatchAborted(
                "another transition is still in progress (or still being reversed); nothing was changed"
            )

    def _wait_until(
        self,
        done: Callable[[], bool],
        deadline: float,
        hooks: _HookCaller,
        on_stall: Callable[[], None] | None = None,
    ) -> bool:
        """Call the hooks and wait until `done()` (checked under the lock) or the deadline. Returns with
        the lock NOT held; True when done.

        `_progress` is set only by what can end the wait or needs the hooks again (the last park, a park
        that lets higher-priority threads park, the last move, a death, a deactivation, a priority
        change), so the hooks run once per such event, not once per park. The poll, backing off, is only
        for a wake-up lost by a thread that blocked in the application just after the hooks ran;
        `on_stall` is called when it times out."""
        poll = _POLL_FIRST_S
        while True:
            self._progress.clear()  # before checking: a change after the check sets it and ends the wait
            with self._lock:
                if done():
                    return True
            hooks()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not self._progress.wait(min(poll, remaining)):
                poll = min(poll * 2, _POLL_MAX_S)
                if on_stall is not None:
                    on_stall()

    def run_global(
        self,
        action: Callable[[list[ParkedThread]], None],
        *,
        timeout: float,
        use_priorities: bool = True,
        recorder: Recorder | None = None,
    ) -> SyncTimings:
        """Park every active managed thread at a quiescence point, run `action(threads)`, release everyone.

        `threads` lists every managed thread that may return into the code the action replaces: the parked
        ones and the inactive ones (state "inactive"). Both lists are taken under the lock once everyone is
        parked, so the same stacks give the same answer whether a thread deactivated before or during the
        transition (an inactive thread cannot activate until the action is done).

        Concurrency: call from an unmanaged thread; transitions are serialized (a second caller waits for
        the first, up to its own deadline). `action` runs on this thread, without the registry lock, while every
        active managed thread is parked and births/activations wait; it must be short (invariant 4) and
        all-or-nothing. Raises PatchAborted (deadline; nothing changed, everyone released) or whatever
        `action` raised (everyone released, generation unchanged). The generation advances only when
        `action` returns normally.
        """
        from livepatch.runtime.verify import check_caller  # the patch model: not on the hot path

        check_caller("the global quiescence protocol", managed=self.is_managed())
        t_start = time.perf_counter()
        deadline = time.monotonic() + timeout
        self._take_slot(deadline)
        try:
            with self._lock:
                tr = self._registry.begin_global(use_priorities, _listener(recorder))
                self._deadline = (
                    deadline  # the held threads enforce it too (threads.py _wait_global)
                )
                self._control.request = tr
        except BaseException:
            self._slot.release()
            raise
        swapped = False
        switching = _Switching()
        try:
            self._wait_until(
                lambda: self._registry.transition is not tr or self._registry.quiescent(),
                deadline,
                _HookCaller(self),
                switching.shorten,
            )
            with self._lock:
                # Checked again under the lock that start_swap() holds too: from here nobody can unpark.
                # Whoever saw the deadline first (the patcher, or a thread it held: threads.py
                # _wait_global), the reason is the same. A quiescence seen only after the deadline is
                # not used either: the threads were held past it, and the caller was told the patch
                # ends by then (a stalled patcher swapped 13.85 s into a 10 s deadline).
                if self._registry.transition is not tr:
                    expired, self._expired = self._expired, None
                    blocked = expired[1] if expired is not None and expired[0] is tr else ""
                    raise self._deadline_passed(timeout, blocked)
                if not self._registry.quiescent() or time.monotonic() > deadline:
                    raise self._deadline_passed(
                        timeout, describe_stragglers(self._registry.stragglers())
                    )
                self._registry.start_swap()
                parked = [
                    ParkedThread(r.ident, r.name, r.role, frame=r.frame)
                    for r in self._registry.parked()
                ]
                inactive = [
                    ParkedThread(r.ident, r.name, r.role, "inactive")
                    for r in self._registry.inactive()
                ]
            t_quiet = time.perf_counter()
            if recorder is not None:
                recorder.emit(EventName.QUIESCENT, detail=f"{len(parked)} threads parked")
            action(parked + inactive)
            swapped = True
            t_done = time.perf_counter()
            return SyncTimings(
                sync_ms=(t_quiet - t_start) * 1e3,
                swap_ms=(t_done - t_quiet) * 1e3,
                reached=[p.name for p in parked],
            )
        finally:
            # Before releasing anyone: the patcher keeps the GIL to finish (events, hooks) instead of
            # handing it to a released thread at the next short interval and waiting a long one to get it back.
            switching.restore()
            with self._lock:
                if self._registry.transition is tr:  # else the threads ended it at the deadline
                    self._unpark_relayed(self._registry.finish_global(swapped))
                    self._control.request = self._idle_request()
                    self._threads_cv.notify_all()
                self._progress.set()
            self._slot.release()

    @staticmethod
    def _deadline_passed(timeout: float, blocked: str) -> PatchAborted:
        """The abort of a global transition at its deadline, naming the threads that had not parked
        (`blocked`: describe_stragglers at the deadline, "" when every thread had parked)."""
        if not blocked:  # everyone had parked, but the patcher could not run in time
            return PatchAborted(
                f"not swapped within {timeout:g} s (the deadline): every thread had parked, but the "
                "patcher was held up (a wake-up hook that blocks, a long garbage collection, a starved "
                "process); nothing was changed"
            )
        return PatchAborted(
            f"not quiescent within {timeout:g} s (the deadline): did not reach a quiescence point: "
            f"{blocked}; nothing was changed. Hint: {HINT}"
        )

    def _make_use_new(self, target: int) -> Callable[[], bool]:
        local = self._local
        registry = self._registry

        def use_new() -> bool:
            rec = getattr(local, "record", None)
            if rec is None:
                return registry.newest >= target  # unmanaged threads follow the newest generation
            return bool(rec.generation >= target)

        return use_new

    def run_local(
        self,
        begin: Callable[[Callable[[], bool]], None],
        end: Callable[[bool], None],
        *,
        timeout: float,
        recorder: Recorder | None = None,
    ) -> SyncTimings:
        """Move every active managed thread to generation N+1 at its next quiescence point, without parking.

        `begin(use_new)` must make the changed code call the new implementation exactly when `use_new()` is
        true for the calling thread; `end(keep_new)` removes that dispatch. Concurrency: as run_global; no
        managed thread runs two generations between two quiescence points. Raises PatchAborted when not all
        threads moved in time (after reversing: nothing changed).
        """
        from livepatch.runtime.verify import check_caller

        check_caller("the local quiescence protocol", managed=self.is_managed())
        t_start = time.perf_counter()
        deadline = time.monotonic() + timeout
        self._take_slot(deadline)
        try:
            with self._lock:
                target = self._registry.generation + 1
            # Install the dispatch while nobody uses the new code yet: managed threads are at N and unmanaged
            # ones follow `newest`, still N until the target is published below.
            begin(self._make_use_new(target))
            with self._lock:
                tr = self._registry.begin_local(_listener(recorder))
                self._deadline = deadline  # the threads enforce it too (threads.py _local_deadline)
                self._control.request = tr
        except BaseException:
            self._slot.release()
            raise
        hooks = _HookCaller(self)
        self._wait_until(
            lambda: tr.phase is not Phase.MIGRATING or self._registry.all_moved(), deadline, hooks
        )
        with self._lock:
            # Re-checked at the deadline (the last move may just have happened). A move racing with the
            # reversal (moves take no lock) is undone at that thread's next quiescence point. A thread
            # past the deadline may have reversed it already (threads.py _local_deadline): the patcher
            # was held up meanwhile, and every move it sees now may be a move back.
            forwards = tr.phase is Phase.MIGRATING and self._registry.all_moved()
            if tr.phase is not Phase.MIGRATING:
                expired, self._expired = self._expired, None
                late = expired[1] if expired is not None and expired[0] is tr else describe([])
            elif not forwards:
                late = describe(self._registry.stragglers())
                self._registry.reverse_local()
            self._deadline = float("inf")  # decided: no thread needs to check it any more
        if forwards:
            t_moved = time.perf_counter()
            try:
                end(True)
            finally:
                self._finish_local()
            return SyncTimings(
                sync_ms=(t_moved - t_start) * 1e3, swap_ms=(time.perf_counter() - t_moved) * 1e3
            )
        if recorder is not None:
            recorder.emit(EventName.REVERSING, detail=f"not moved in time: {late}")
        reason = f"not all threads moved within {timeout:g} s: {late}"
        if self._wait_until(self._registry.all_moved, time.monotonic() + max(timeout, 1.0), hooks):
            try:
                end(False)
            finally:
                self._finish_local()
            raise PatchAborted(f"{reason}; the transition was reversed, nothing was changed")
        with self._lock:
            back = describe(self._registry.stragglers())
        threading.Thread(
            target=self._finish_reversal, args=(end, hooks), name="livepatch-reversal", daemon=True
        ).start()
        raise PatchAborted(
            f"{reason}; reversing: the old code comes back fully when {back} pass a quiescence point "
            "(until then they keep the new code; the next patch waits)"
        )

    def _finish_local(self) -> None:
        with self._lock:
            self._registry.finish_local()
            self._control.request = self._idle_request()
            self._threads_cv.notify_all()
            self._progress.set()
        self._slot.release()

    def _finish_reversal(self, end: Callable[[bool], None], hooks: _HookCaller) -> None:
        while not self._wait_until(self._registry.all_moved, time.monotonic() + 1.0, hooks):
            pass
        try:
            end(False)
        finally:
            self._finish_local()
