"""The thread registry's bookkeeping: who exists, in which state, at which generation (no locks, no waits).

Theory of operation
-------------------
Rule 1: every decision about generations, parking and migration is taken here, by plain methods on a
`Registry` that never blocks and never locks. The threaded layer (`threads.py`, `quiescence.py`) holds one
lock around every call and does the waiting; the property tests drive this class directly.

- A managed thread is a `ThreadRecord`: RUNNING (active, between or inside requests), PARKED (waiting at a
  quiescence point for a global swap), INACTIVE (parked outside its work loop by `deactivate()`) or
  RELEASED (a forced revert removed the code it was running, in a request that would never reach a
  quiescence point in time: no transition waits for it until it passes its next point, where it activates
  itself again; unlike an inactive thread it is not at a safe place, so nothing inspects its stack).
- `generation` is the newest completed code version; `newest` is the one a thread born now starts in
  (during a local migration: the target; while a local migration is being reversed: the old one).
- At most one `Transition` exists at a time.
  GLOBAL: QUIESCING (threads park at their points, obeying the priority rule) -> SWAPPING (everyone active
  is parked; the patcher swaps) -> finish (everyone unparked, generation + 1 if swapped).
  LOCAL: MIGRATING (each thread moves to `target` at its next point, without blocking) -> finish
  (generation = target), or REVERSING (`target` goes back to `base`; moved threads move back at their next
  point) -> finish (generation unchanged).
- Priority rule (GLOBAL, with priorities): a thread parks only when no lower-priority thread runs, and
  when a running thread lowers its priority below parked ones, those are unparked (`set_priority`).
  Without priorities (naive quiescence) neither happens: a parked thread stays parked until the end.
- Births and activations during a GLOBAL transition must wait (`can_enter()` is False); during a LOCAL one
  they start in `newest`. A death or deactivation simply removes the thread from what the patcher waits for.
- Birth rule (`can_be_born`): one exception, under the priority rule. While a GLOBAL transition is
  QUIESCING with priorities, a thread may be born when a thread of LOWER priority still runs: the newborn
  could not park yet anyway (the priority rule would refuse it), and the lower-priority thread may need it
  -- a thread pool creates a worker exactly when every worker of a group waits for a lock whose COMMIT
  nobody is listening for (docs/sqlserver.md, "Pool quiescence"). Making it wait for the end of the patch
  was a deadlock until the deadline. The newborn counts as running in the old generation (nothing was
  swapped yet) and parks like the others at its next point. It keeps the priority rule's invariant (no
  parked thread has a lower-priority thread running: every parked thread is at or below that lower
  thread), it is never allowed once quiescent (then nothing runs), so `quiescent()` stays true once true,
  and never while SWAPPING. Naive quiescence and LOW births (nothing is lower) wait as before;
  activations always wait (a cached connection thread would bring new work into the patch).
"""

from __future__ import annotations

import _thread
import enum
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from types import FrameType

from livepatch.runtime.lifecycle import EventName

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module is on a server's import path
if TYPE_CHECKING:  # re-exported for type checkers; at run time by __getattr__ below
    from livepatch.runtime.results import RuntimeStatistics as RuntimeStatistics
    from livepatch.runtime.results import ThreadInfo as ThreadInfo


class Priority(enum.IntEnum):
    """Thread-pool priority (REFERENCE.md §1): executing worker LOW < waiting worker MEDIUM < listener CRITICAL."""

    LOW = 0
    MEDIUM = 1
    CRITICAL = 2


class ThreadState(enum.StrEnum):
    RUNNING = "running"
    PARKED = "parked"
    INACTIVE = "inactive"
    RELEASED = "released"


class Mode(enum.StrEnum):
    GLOBAL = "global"
    LOCAL = "local"


class Phase(enum.StrEnum):
    QUIESCING = "quiescing"  # global: waiting for every active thread to park
    SWAPPING = "swapping"  # global: everyone active is parked; the patcher works
    MIGRATING = "migrating"  # local: threads move to base + 1 at their next point
    REVERSING = "reversing"  # local: deadline passed; threads move back to base


class PointAction(enum.Enum):
    """What a thread must do at a quiescence point (the threaded layer acts on it)."""

    RETURN = (
        "return"  # nothing to do (or: a lower-priority thread still runs; retry at the next point)
    )
    PARK = "park"  # global: wait until the patcher releases everyone (nobody else to wake)
    PARK_NOTIFY = "park-notify"  # global: park, and wake the patcher (see Registry.at_point)
    MIGRATED = "migrated"  # local: the thread now runs `target` (and may be the last to move)
    MIGRATED_EARLY = "migrated-early"  # local: moved, and others that had to move have not yet
    MOVED_BACK = "moved-back"  # local, reversing: the thread runs `base` again


# The members the hot paths compare with, as module globals: `ThreadState.RUNNING` goes through the enum
# class's attribute lookup (~80 ns in CPython 3.11, a global ~8 ns), and a park compared it once per
# managed thread, twice (25 us for the 10 parks of a transition, warm; the parks are the chain of GIL
# hand-offs every global sync waits for: docs/performance.md, core11).
RUNNING = ThreadState.RUNNING
PARKED = ThreadState.PARKED
INACTIVE = ThreadState.INACTIVE
RELEASED = ThreadState.RELEASED
GLOBAL = Mode.GLOBAL
LOCAL = Mode.LOCAL
QUIESCING = Phase.QUIESCING
MIGRATING = Phase.MIGRATING
REVERSING = Phase.REVERSING
RETURN = PointAction.RETURN
PARK = PointAction.PARK
PARK_NOTIFY = PointAction.PARK_NOTIFY
MIGRATED = PointAction.MIGRATED
MIGRATED_EARLY = PointAction.MIGRATED_EARLY
MOVED_BACK = PointAction.MOVED_BACK


class ThreadRecord:
    """One managed thread (plain classes here, not dataclasses: this module is on a server's import
    path, and `dataclasses` imports `inspect` and `ast`; see lifecycle.py)."""

    __slots__ = (
        "frame",
        "gate",
        "generation",
        "ident",
        "name",
        "priority",
        "role",
        "state",
        "wake_next",
    )

    def __init__(
        self,
        ident: int,
        name: str,
        role: str,
        priority: Priority,
        state: ThreadState,
        generation: int,
    ) -> None:
        self.ident = ident
        self.name = name
        self.role = role
        self.priority = priority
        self.state = state
        self.generation = generation
        # What the thread waits on while PARKED: held (locked) by it while parked, released by whoever
        # unparks it; and the thread it wakes in turn when the end of a global transition wakes them in
        # a relay (threads.py _parked). The registry only carries them: it never locks or waits.
        self.gate = _thread.allocate_lock()
        self.wake_next: ThreadRecord | None = None
        # While PARKED: the frame of the thread's quiescence point (its stack cannot change while it is
        # parked), for the activeness check (patcher.py); None otherwise.
        self.frame: FrameType | None = None

    def __repr__(self) -> str:
        return (
            f"ThreadRecord({self.name!r}, ident={self.ident}, role={self.role!r}, "
            f"{self.priority.name}, {self.state.value}, generation={self.generation})"
        )

    def describe(self) -> str:
        return f"{self.name} (role {self.role}, priority {self.priority.name})"


# Called with (event name, record) for per-thread events (reached, migrated, moved-back); must not block.
ThreadEventListener = Callable[[EventName, ThreadRecord], None]


class Transition:
    """The one pending transition (see the theory of operation)."""

    __slots__ = (
        "base",
        "expected_moves",
        "listener",
        "mode",
        "moves",
        "phase",
        "started",
        "target",
        "use_priorities",
    )  # fmt: skip

    def __init__(
        self,
        mode: Mode,
        phase: Phase,
        base: int,
        target: int,
        use_priorities: bool = True,
        listener: ThreadEventListener | None = None,
    ) -> None:
        self.mode = mode
        self.phase = phase
        self.base = base  # generation before the transition
        self.target = target  # generation threads move to (LOCAL; back to base while REVERSING)
        self.use_priorities = use_priorities
        self.listener = listener
        # LOCAL: threads that had to move when it began, and an atomic counter of moves (next() on an
        # itertools.count is one C call, atomic under the GIL): only the last mover wakes the patcher.
        self.expected_moves = 0
        self.moves: Iterator[int] = itertools.count()
        self.started = time.monotonic()  # when it was published (threads.py's step aside)


class Registry:
    """All bookkeeping of managed threads and the one pending transition. Not thread-safe by design:
    the caller holds one lock around every call (threads.py does)."""

    def __init__(self) -> None:
        self.records: dict[int, ThreadRecord] = {}
        self.generation = 0
        self.newest = 0  # generation a thread starts in when born (or activated) now
        self.transition: Transition | None = None

    # ---- thread lifecycle -------------------------------------------------------------------------

    def can_enter(self) -> bool:
        """Whether a thread may be born or activated now (not during a global transition)."""
        return self.transition is None or self.transition.mode is Mode.LOCAL

    def can_be_born(self, priority: Priority) -> bool:
        """Whether a thread of `priority` may be born now: whenever it may enter, and while a global
        transition is quiescing under the priority rule, when a lower-priority thread still runs (the
        birth rule, see the theory of operation)."""
        tr = self.transition
        if tr is None or tr.mode is Mode.LOCAL:
            return True
        return (
            tr.use_priorities
            and tr.phase is Phase.QUIESCING
            and any(
                r.state is ThreadState.RUNNING and r.priority < priority
                for r in self.records.values()
            )
        )

    def birth(self, ident: int, name: str, role: str, priority: Priority) -> ThreadRecord:
        if not self.can_be_born(priority):
            raise RuntimeError(
                "a thread cannot be born during a global transition (unless a lower-priority thread"
                " still runs, under the priority rule): wait for can_be_born()"
            )
        if ident in self.records:
            raise RuntimeError(f"thread {name} is already managed")
        rec = ThreadRecord(ident, name, role, Priority(priority), ThreadState.RUNNING, self.newest)
        self.records[ident] = rec
        return rec

    def death(self, rec: ThreadRecord) -> None:
        self.records.pop(rec.ident, None)

    def deactivate(self, rec: ThreadRecord) -> None:
        if rec.state is ThreadState.PARKED:
            raise RuntimeError("a parked thread cannot deactivate itself")
        rec.state = ThreadState.INACTIVE

    def release(self, rec: ThreadRecord) -> bool:
        """A forced revert left `rec` running inside code that is no longer installed, in a request that
        will never reach a quiescence point in time (it hangs there): stop waiting for it, as if it had
        deactivated, until it passes its next point (the threaded layer then activates it). Only a RUNNING
        thread is released; returns whether it was."""
        if rec.state is not ThreadState.RUNNING:
            return False
        rec.state = ThreadState.RELEASED
        return True

    def any_released(self) -> bool:
        return any(r.state is ThreadState.RELEASED for r in self.records.values())

    def activate(self, rec: ThreadRecord) -> bool:
        """Make `rec` active again; returns True when it changed generation (it "migrated")."""
        if not self.can_enter():
            raise RuntimeError(
                "a thread cannot activate during a global transition: wait for can_enter()"
            )
        if rec.state is ThreadState.RUNNING:
            return False
        rec.state = ThreadState.RUNNING
        moved = rec.generation != self.newest
        rec.generation = self.newest
        return moved

    def set_priority(self, rec: ThreadRecord, priority: Priority) -> list[ThreadRecord]:
        """Change `rec`'s priority. Returns the threads this unparks (the caller wakes them).

        Rule: while a global transition is quiescing, no parked thread may have a lower-priority thread
        running. A running thread that lowers its priority (a waiting worker that just took a task) would
        break it: the parked higher-priority threads (free workers, the listener) may be exactly what its
        task needs (the commit that releases the lock it will wait for). So they are unparked: nothing was
        swapped yet, they simply return from their quiescence point and park again later."""
        rec.priority = Priority(priority)
        tr = self.transition
        if (
            tr is None
            or tr.mode is not Mode.GLOBAL
            or not tr.use_priorities  # naive quiescence: parked threads stay parked (paper's Fig. 6)
            or tr.phase is not Phase.QUIESCING
            or rec.state is not ThreadState.RUNNING
        ):
            return []
        released = [
            r
            for r in self.records.values()
            if r.state is ThreadState.PARKED and r.priority > rec.priority
        ]
        for r in released:
            r.state = ThreadState.RUNNING
            self._notify(tr, EventName.UNPARKED, r)
        return released

    # ---- quiescence points ------------------------------------------------------------------------

    def at_point(self, rec: ThreadRecord) -> PointAction:
        """Decide what `rec` does at a quiescence point, and record the change of state."""
        tr = self.transition
        if tr is None or rec.state is not RUNNING:
            return RETURN
        if tr.mode is not GLOBAL:
            return self.migrate(rec, tr)
        if tr.phase is not QUIESCING:
            return RETURN  # cannot happen: during SWAPPING every active thread is parked
        # One pass over the threads (a park is on the chain of GIL hand-offs a global sync waits for):
        # - priority rule: a lower-priority thread still runs, which may need this one (e.g. the
        #   listener dispatching the event that lets a blocked worker finish): park later;
        # - only two parks matter to the patcher: the last one (quiescent), and one that lets threads of
        #   a higher priority park (no other thread of this priority or lower still runs): those may be
        #   blocked in the application, so the patcher calls the wake-up hooks again. Waking the patcher
        #   on every park cost a GIL hand-off per thread.
        use_priorities = tr.use_priorities
        priority = rec.priority
        others = False  # another thread of this priority or lower (any, without priorities) runs
        for r in self.records.values():
            if r.state is RUNNING and r is not rec:
                if not use_priorities:
                    others = True
                    break
                if r.priority < priority:
                    return RETURN
                if r.priority == priority:
                    others = True
        rec.state = PARKED
        if tr.listener is not None:
            tr.listener(EventName.REACHED, rec)
        return PARK if others else PARK_NOTIFY

    def migrate(self, rec: ThreadRecord, tr: Transition) -> PointAction:
        """Local: move `rec` to the transition's current target.

        Safe WITHOUT the lock when called by the thread that owns `rec` (threads.py does so, to keep busy
        threads from convoying on the lock): during a local transition only the owner writes its
        `generation`, and reading a stale target only means moving again at the next point."""
        if rec.state is not RUNNING:
            return RETURN
        target = tr.target
        if rec.generation == target:
            return RETURN
        rec.generation = target
        if tr.phase is REVERSING:
            self._notify(tr, EventName.MOVED_BACK, rec)
            return MOVED_BACK
        self._notify(tr, EventName.MIGRATED, rec)
        if next(tr.moves) + 1 < tr.expected_moves:
            return MIGRATED_EARLY
        return MIGRATED

    def _lower_priority_running(self, rec: ThreadRecord) -> bool:
        return any(
            r.state is ThreadState.RUNNING and r.priority < rec.priority
            for r in self.records.values()
            if r is not rec
        )

    @staticmethod
    def _notify(tr: Transition, name: EventName, rec: ThreadRecord) -> None:
        if tr.listener is not None:
            tr.listener(name, rec)

    # ---- global transitions -----------------------------------------------------------------------

    def begin_global(
        self, use_priorities: bool = True, listener: ThreadEventListener | None = None
    ) -> Transition:
        self._require_idle()
        tr = Transition(
            Mode.GLOBAL,
            Phase.QUIESCING,
            self.generation,
            self.generation + 1,
            use_priorities,
            listener,
        )
        self.transition = tr
        return tr

    def quiescent(self) -> bool:
        """Global: every active managed thread is parked."""
        return all(r.state is not RUNNING for r in self.records.values())

    def stragglers(self) -> list[ThreadRecord]:
        """Global: the active threads that have not parked. Local: those not yet at the target."""
        tr = self.transition
        if tr is not None and tr.mode is Mode.LOCAL:
            return [
                r
                for r in self.records.values()
                if r.state is ThreadState.RUNNING and r.generation != tr.target
            ]
        return [r for r in self.records.values() if r.state is ThreadState.RUNNING]

    def parked(self) -> list[ThreadRecord]:
        return [r for r in self.records.values() if r.state is PARKED]

    def inactive(self) -> list[ThreadRecord]:
        return [r for r in self.records.values() if r.state is ThreadState.INACTIVE]

    def start_swap(self) -> None:
        tr = self._require(Mode.GLOBAL)
        if not self.quiescent():
            raise RuntimeError("start_swap() before quiescence")
        tr.phase = Phase.SWAPPING

    def finish_global(self, swapped: bool) -> list[ThreadRecord]:
        """Release everyone; with `swapped`, every managed thread now runs the new generation. Returns the
        threads this unparks (the caller wakes them)."""
        self._require(Mode.GLOBAL)
        if swapped:
            self.generation += 1
            self.newest = self.generation
        unparked = []
        generation = self.generation
        for r in self.records.values():
            if r.state is PARKED:
                r.state = RUNNING
                unparked.append(r)
            # Inactive threads run nothing of the old code; they wake up in the newest generation.
            r.generation = generation
        self.transition = None
        return unparked

    # ---- local transitions ------------------------------------------------------------------------

    def begin_local(self, listener: ThreadEventListener | None = None) -> Transition:
        self._require_idle()
        tr = Transition(
            Mode.LOCAL, Phase.MIGRATING, self.generation, self.generation + 1, True, listener
        )
        tr.expected_moves = sum(1 for r in self.records.values() if r.state is ThreadState.RUNNING)
        self.transition = tr
        self.newest = tr.target
        return tr

    def all_moved(self) -> bool:
        """Local: every active thread runs the transition's current target."""
        tr = self._require(Mode.LOCAL)
        return all(
            r.generation == tr.target
            for r in self.records.values()
            if r.state is not ThreadState.INACTIVE and r.state is not ThreadState.RELEASED
        )

    def reverse_local(self) -> None:
        tr = self._require(Mode.LOCAL)
        tr.phase = Phase.REVERSING
        tr.target = tr.base
        self.newest = tr.base
        for r in self.records.values():
            if r.state is ThreadState.INACTIVE:
                r.generation = min(
                    r.generation, tr.base
                )  # outside the work loop: no request to split

    def finish_local(self) -> bool:
        """End the local transition; returns True when it completed forwards (generation advanced)."""
        tr = self._require(Mode.LOCAL)
        forwards = tr.phase is Phase.MIGRATING
        if forwards:
            self.generation = tr.target
        else:
            # A thread that moved (or was born in the target) and deactivated before moving back runs no
            # request: it simply belongs to the old generation again.
            for r in self.records.values():
                if r.state is ThreadState.INACTIVE:
                    r.generation = min(r.generation, tr.base)
        self.newest = self.generation
        self.transition = None
        return forwards

    # ---- introspection ----------------------------------------------------------------------------

    def statistics(self) -> RuntimeStatistics:
        from livepatch.runtime.results import RuntimeStatistics, ThreadInfo

        threads = tuple(
            ThreadInfo(r.name, r.ident, r.role, r.priority, r.state.value, r.generation)
            for r in self.records.values()
        )
        return RuntimeStatistics(
            generation=self.generation,
            transition=None if self.transition is None else self.transition.mode.value,
            by_generation=dict(Counter(t.generation for t in threads)),
            by_state=dict(Counter(t.state for t in threads)),
            by_priority=dict(Counter(t.priority.name for t in threads)),
            threads=threads,
        )

    def _require_idle(self) -> None:
        if self.transition is not None:
            raise RuntimeError("one transition at a time: a transition is already in progress")

    def _require(self, mode: Mode) -> Transition:
        tr = self.transition
        if tr is None or tr.mode is not mode:
            raise RuntimeError(f"no {mode.value} transition in progress")
        return tr


def describe(records: Iterable[ThreadRecord]) -> str:
    return ", ".join(r.describe() for r in records) or "(none)"


def __getattr__(name: str) -> object:
    # The statistics snapshot's types are results.py's (dataclasses: off a server's import path).
    if name in ("RuntimeStatistics", "ThreadInfo"):
        from livepatch.runtime import results

        return getattr(results, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
