"""The runtime's history of patch attempts: the newest ones in memory, running totals of all of them.

Theory of operation
-------------------
A server patched in a loop (`livepatch stress`, a fleet applying and reverting for months) makes millions
of attempts. Keeping every PatchResult (~2 KB with its events) grew kvserver from 127 to 446 MB over
200,000 transitions, and CPython's full collections over that heap held the GIL for 7-17 s at load 30
(docs/performance.md, "`livepatch stress` 100,000 cycles"). So the history keeps:

- the newest `max_attempts` (MAX_HISTORY) attempts the runtime made itself, fewer when they carry more
  than `max_events` (MAX_HISTORY_EVENTS) events in all (an attempt has an event per managed thread:
  sqlserver's pool of 3 x 64 workers makes ~215 per attempt, ~23 KB; kvserver ~7), and separately the newest
  `max_recorded` (MAX_RECORDED_REFUSALS) refusals recorded by the agent (anyone with the socket can send
  those: a flood of them must not push the real attempts out), merged in arrival order when read;
- running totals over everything ever added (`HistoryTotals`): attempts by (action, outcome), and for
  the successful ones the sync and swap times per method as Prometheus histogram buckets, plus how many
  entries were dropped. Counters built on them stay monotonic, and reading them costs O(1) in the
  length of the history.

Every entry gets a sequence number (0, 1, 2, ... in arrival order, never reused), so a reader that keeps
a cursor (the agent's state directory keeper) gets exactly the entries it has not seen with `since()`,
and knows how many it missed if more than the bound arrived between two reads.

Not thread-safe: the Patcher guards it with `_records_lock` (core.py's lock order).
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque

# Loaded with the runtime by `import livepatch` (core.py creates the History): no dataclasses, and
# PatchResult (results.py) for the type checker only (tests/runtime/test_import_cost.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from livepatch.runtime.lifecycle import Action, Outcome
    from livepatch.runtime.results import PatchResult

__all__ = [
    "MAX_HISTORY",
    "MAX_HISTORY_EVENTS",
    "MAX_RECORDED_REFUSALS",
    "TIMING_BUCKETS_S",
    "History",
    "HistoryTotals",
    "TimingTotals",
]

# The newest attempts of the runtime's own kept in memory (apply, revert, rollback, forced revert).
MAX_HISTORY = 1000
# ... and at most this many events in all (~120 bytes each in memory; every one is an object the garbage
# collector's full collections walk). At least the newest attempt is always kept.
MAX_HISTORY_EVENTS = 50_000
# Refusals recorded before the runtime saw the patch (record()) come from requests anyone with the socket
# can send: the history keeps the newest MAX_RECORDED_REFUSALS of them, apart from the runtime's own.
MAX_RECORDED_REFUSALS = 1000

# Upper bounds (seconds) of the sync and swap histograms (livepatch_sync_seconds, livepatch_swap_seconds).
TIMING_BUCKETS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    5.0,
)


class TimingTotals:
    """A histogram of every value added: `buckets[i]` counts the values <= TIMING_BUCKETS_S[i] and above
    the bound before it (not cumulative); `count` includes the values above the last bound."""

    __slots__ = ("buckets", "count", "sum_s")

    def __init__(
        self, count: int = 0, sum_s: float = 0.0, buckets: list[int] | None = None
    ) -> None:
        self.count = count
        self.sum_s = sum_s
        self.buckets = [0] * len(TIMING_BUCKETS_S) if buckets is None else buckets

    def add(self, seconds: float) -> None:
        self.count += 1
        self.sum_s += seconds
        i = bisect.bisect_left(TIMING_BUCKETS_S, seconds)
        if i < len(self.buckets):
            self.buckets[i] += 1

    def cumulative(self) -> list[int]:
        """Counts of the values <= each bound, as Prometheus's `le` buckets want them."""
        out, running = [], 0
        for n in self.buckets:
            running += n
            out.append(running)
        return out

    def copy(self) -> TimingTotals:
        return TimingTotals(self.count, self.sum_s, list(self.buckets))


class HistoryTotals:
    """Totals over every attempt ever added (kept or dropped since): `attempts` by (action, outcome);
    `sync` and `swap` by method, of the successful attempts; `added` counts every attempt, `dropped`
    those no longer kept."""

    __slots__ = ("added", "attempts", "dropped", "swap", "sync")

    def __init__(
        self,
        attempts: dict[tuple[Action, Outcome], int] | None = None,
        sync: dict[str, TimingTotals] | None = None,
        swap: dict[str, TimingTotals] | None = None,
        added: int = 0,
        dropped: int = 0,
    ) -> None:
        self.attempts = {} if attempts is None else attempts
        self.sync = {} if sync is None else sync
        self.swap = {} if swap is None else swap
        self.added = added
        self.dropped = dropped

    def add(self, r: PatchResult) -> None:
        key = (r.action, r.outcome)
        self.attempts[key] = self.attempts.get(key, 0) + 1
        self.added += 1
        if r.ok:
            if "sync" in r.timings:
                self.sync.setdefault(r.method, TimingTotals()).add(r.timings["sync"] / 1e3)
            if "swap" in r.timings:
                self.swap.setdefault(r.method, TimingTotals()).add(r.timings["swap"] / 1e3)

    def copy(self) -> HistoryTotals:
        return HistoryTotals(
            dict(self.attempts),
            {m: t.copy() for m, t in self.sync.items()},
            {m: t.copy() for m, t in self.swap.items()},
            self.added,
            self.dropped,
        )


class History:
    """The newest attempts and the totals of all (module doc). Guarded by the caller's lock."""

    def __init__(
        self,
        max_attempts: int = MAX_HISTORY,
        max_recorded: int = MAX_RECORDED_REFUSALS,
        max_events: int = MAX_HISTORY_EVENTS,
    ) -> None:
        self.max_attempts = max_attempts
        self.max_recorded = max_recorded
        self.max_events = max_events
        # oldest first: the runtime's attempts (with their events' count), the record()ed refusals
        self._own: deque[tuple[int, PatchResult]] = deque()
        self._own_events = 0
        self._recorded: deque[tuple[int, PatchResult]] = deque()
        self._totals = HistoryTotals()

    def add(self, result: PatchResult, *, recorded: bool = False) -> None:
        """Keep `result` as the newest entry, count it, and drop the oldest entries of its kind beyond the
        bounds (`while`: the bounds hold even after they are lowered)."""
        self._totals.add(result)
        seq = self._totals.added - 1
        if recorded:
            self._recorded.append((seq, result))
            while len(self._recorded) > max(self.max_recorded, 0):
                self._recorded.popleft()
                self._totals.dropped += 1
            return
        self._own.append((seq, result))
        self._own_events += len(result.events)
        while len(self._own) > max(self.max_attempts, 0) or (
            self._own_events > self.max_events and len(self._own) > 1
        ):
            _, old = self._own.popleft()
            self._own_events -= len(old.events)
            self._totals.dropped += 1

    def entries(self) -> list[PatchResult]:
        """Every kept entry, oldest first."""
        return [r for _, r in self._merged()]

    def since(self, seq: int) -> tuple[list[tuple[int, PatchResult]], int]:
        """The kept entries numbered `seq` or later, oldest first, each with its number; and the number
        the next entry will get (the cursor for the next call)."""
        return [(n, r) for n, r in self._merged() if n >= seq], self._totals.added

    def totals(self) -> HistoryTotals:
        """A copy of the running totals."""
        return self._totals.copy()

    @property
    def dropped(self) -> int:
        return self._totals.dropped

    @property
    def recorded_kept(self) -> int:
        return len(self._recorded)

    def _merged(self) -> list[tuple[int, PatchResult]]:
        if not self._recorded:
            return list(self._own)
        if not self._own:
            return list(self._recorded)
        return list(heapq.merge(self._own, self._recorded, key=lambda e: e[0]))
