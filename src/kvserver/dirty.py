"""Dirty tracking at the keyspace, for hot standby epochs and commit protection (docs/standby.md).

Theory of operation
-------------------
Every command reaches data through a Keyspace (kvserver.keyspace), so that is where changes are seen,
whatever the command: `track(databases, protection)` turns each Keyspace of the server into a
`TrackedKeyspace` (same slots, `__class__` swapped in place: the objects, and every reference clients
hold to them, stay), whose methods note each key they are asked about in `touched` before doing their
work. Commands also change values in place (LPUSH appends to the deque `lookup` returned), so a key is
taken as written if it was touched during a batch of requests that wrote: the dispatcher counts each
successful write in `server.dirty`, and `end_batch(wrote)` turns the batch's touched keys into dirty
ones. A read-only batch leaves nothing dirty. Keys read in a batch that also wrote are shipped too (an
over-approximation: more bytes, never a missed write).

FLUSHDB/FLUSHALL (`clear`) and SWAPDB (`swap_with`) are recorded as operations, in order; at capture
the epoch is (operations, then the final value or tombstone of every dirty key): applying the operations
first and then the final states gives the primary's state whatever the order of writes within the
epoch. SWAPDB exchanges the two databases' dirty sets along with their contents.

For commit protection, `written[key]` is the epoch of the last write to a key whose epoch is not
acknowledged yet, and `floor` the epoch of the last unacknowledged FLUSHDB/SWAPDB of the database (a
read after it reveals its effect). A lookup notes the newest such epoch in `read_epoch`; the batch's
replies wait for it (livepatch.replication.Protection). `acknowledged(epoch)` forgets what the standby
now holds. Under `--protection none` no reply waits for a read, so `written` is not kept (`reads`).

A read of the whole database (DBSIZE and INFO keyspace through `len`, KEYS, SCAN, RANDOMKEY) reveals
every unacknowledged change in it, a deletion included: it notes the newest unacknowledged epoch that
wrote there (`reveal_all`), and its reply waits for it like that of a GET of a key just written.

Keys that expire are not shipped: the standby has the same absolute expiry times and expires them itself.

The per-access notes (`TrackedKeyspace`'s overrides below) are the rules; when the C module
kvserver._dirtyfast is built, `NativeTrackedKeyspace` does the same notes in C before calling the
plain Keyspace method (one Python frame less per key access: a read of a clean key then costs about
what it costs untracked). `track(..., native=False)` forces the Python version (tests run both).

Concurrency: event-loop thread only.
"""

from __future__ import annotations

import collections
from typing import Any

try:  # built from src/kvserver/_dirtyfast.c when a C compiler was there at install time
    from kvserver import _dirtyfast
except ImportError:  # pragma: no cover - exercised by installs without a compiler
    _dirtyfast = None  # type: ignore[assignment]

from kvserver.keyspace import Keyspace
from livepatch.replication import Protection

_tracker: DirtyTracker | None = None


class DbState:
    """What the tracker knows of one database (by position: SWAPDB swaps contents, not positions)."""

    __slots__ = ("db", "dirty", "floor", "index", "written")

    def __init__(self, index: int, db: Keyspace) -> None:
        self.index = index
        self.db = db
        self.dirty: dict[bytes, None] = {}  # written in the epoch being filled
        self.written: dict[bytes, int] = {}  # key -> epoch of its last unacknowledged write
        self.floor = 0  # epoch of the last unacknowledged FLUSHDB/SWAPDB here, 0 if none


class DirtyTracker:
    # Slots: kvserver._dirtyfast reads read_epoch and structural at fixed offsets.
    __slots__ = (
        "_pending",
        "floors",
        "ops",
        "ordered",
        "protection",
        "read_epoch",
        "reads",
        "states",
        "structural",
        "structural_changes",
        "touched",
    )

    def __init__(self, databases: list[Keyspace], protection: Protection) -> None:
        self.protection = protection
        # Under asynchronous replication (mode "none") no reply waits for a read: the per-key epochs
        # of unacknowledged writes (`written`, `_pending`) are not kept, and a read notes nothing.
        self.reads = protection.mode != "none"
        self.states: dict[Keyspace, DbState] = {
            db: DbState(i, db) for i, db in enumerate(databases)
        }
        self.ordered = list(self.states.values())
        self.touched: list[tuple[DbState, bytes]] = []
        self.structural = False  # the batch flushed or swapped a database
        self.structural_changes = 0  # FLUSHDB/SWAPDB ever (a full sync in progress restarts on one)
        self.read_epoch = 0
        self.floors = 0  # databases whose floor is set (acknowledged() looks only then)
        self.ops: list[tuple[Any, ...]] = []  # ("flush", index) / ("swap", i, j), this epoch
        self._pending: collections.deque[tuple[int, list[tuple[DbState, bytes]]]] = (
            collections.deque()
        )

    # ------------------------------------------------------------------------ batch boundaries
    def end_batch(self, wrote: bool) -> tuple[bool, int]:
        """After one batch of requests: (whether it wrote, the newest unacknowledged epoch it read)."""
        wrote = wrote or self.structural
        if wrote:
            self._commit_touched()
        else:
            self.touched.clear()
        read_epoch = self.read_epoch
        self.read_epoch = 0
        self.structural = False
        return wrote, read_epoch

    def _commit_touched(self) -> None:
        epoch = self.protection.epoch
        if self.reads:
            for state, key in self.touched:
                state.dirty[key] = None
                state.written[key] = epoch
        else:
            for state, key in self.touched:
                state.dirty[key] = None
        self.touched.clear()

    # ------------------------------------------------------------------------ epochs
    def capture(self) -> tuple[list[tuple[Any, ...]], list[tuple[int, list[Any]]]]:
        """(operations, [(db index, [(key, value | None, expire_at_ms | None)])]) since the last call.

        Values are the live objects: the caller serialises them before the loop runs on."""
        ops, self.ops = self.ops, []
        changes: list[tuple[int, list[Any]]] = []
        captured: list[tuple[DbState, bytes]] = []
        for state in self.ordered:
            if not state.dirty:
                continue
            entries = state.db.entries(state.dirty)
            changes.append((state.index, entries))
            if self.reads:
                captured.extend((state, key) for key in state.dirty)
            state.dirty = {}
        if captured:
            self._pending.append((self.protection.epoch, captured))
        return ops, changes

    def acknowledged(self, epoch: int) -> None:
        """The standby holds every epoch <= epoch: reads of those writes need not wait any more."""
        pending = self._pending
        while pending and pending[0][0] <= epoch:
            _, keys = pending.popleft()
            for state, key in keys:
                when = state.written.get(key)
                if when is not None and when <= epoch:
                    del state.written[key]
        if self.floors:
            for state in self.ordered:
                if state.floor and state.floor <= epoch:
                    state.floor = 0
                    self.floors -= 1

    # ------------------------------------------------------------------------ structural changes
    def flushed(self, db: Keyspace) -> None:
        self._commit_touched()
        state = self.states[db]
        state.dirty = {}  # the flush removes them all; later writes mark again
        state.written = {}
        self._set_floor(state)
        self.ops.append(("flush", state.index))
        self.structural = True
        self.structural_changes += 1

    def _set_floor(self, state: DbState) -> None:
        if not state.floor:
            self.floors += 1
        state.floor = self.protection.epoch

    def swapped(self, a: Keyspace, b: Keyspace) -> None:
        self._commit_touched()
        sa, sb = self.states[a], self.states[b]
        sa.dirty, sb.dirty = sb.dirty, sa.dirty
        for state in (sa, sb):
            state.written = {}
            self._set_floor(state)
        self.ops.append(("swap", sa.index, sb.index))
        self.structural = True
        self.structural_changes += 1


def reveal_all(db: Keyspace) -> None:
    """A read of db as a whole: its reply waits for every unacknowledged write there."""
    t = _tracker
    assert t is not None
    state = t.states[db]
    if state.written or state.floor:
        epoch = max(state.floor, max(state.written.values(), default=0))
        if epoch > t.read_epoch:
            t.read_epoch = epoch


class TrackedKeyspace(Keyspace):
    """A Keyspace that tells the tracker which keys it is asked about (see the theory above)."""

    __slots__ = ()

    def __len__(self) -> int:
        reveal_all(self)
        return Keyspace.__len__(self)

    def keys_snapshot(self) -> list[bytes]:
        reveal_all(self)
        return Keyspace.keys_snapshot(self)

    def random_key(self, now_ms: int) -> bytes | None:
        reveal_all(self)
        return Keyspace.random_key(self, now_ms)

    def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        reveal_all(self)
        return Keyspace.scan(self, cursor, count)

    def __contains__(self, key: bytes) -> bool:
        t = _tracker
        assert t is not None
        state = t.states[self]
        if state.written or state.floor:
            epoch = state.written.get(key, state.floor)
            if epoch > t.read_epoch:
                t.read_epoch = epoch
        return Keyspace.__contains__(self, key)

    def lookup(self, key: bytes, now_ms: int) -> Any:
        t = _tracker
        assert t is not None
        state = t.states[self]
        t.touched.append((state, key))
        if state.written or state.floor:
            epoch = state.written.get(key, state.floor)
            if epoch > t.read_epoch:
                t.read_epoch = epoch
        return Keyspace.lookup(self, key, now_ms)

    def store(self, key: bytes, value: Any, expire_at_ms: int | None = None) -> None:
        t = _tracker
        assert t is not None
        t.touched.append((t.states[self], key))
        Keyspace.store(self, key, value, expire_at_ms)

    def delete(self, key: bytes) -> bool:
        t = _tracker
        assert t is not None
        t.touched.append((t.states[self], key))
        return Keyspace.delete(self, key)

    def replace(self, key: bytes, value: Any) -> None:
        t = _tracker
        assert t is not None
        t.touched.append((t.states[self], key))
        Keyspace.replace(self, key, value)

    def set_expire(self, key: bytes, expire_at_ms: int) -> None:
        t = _tracker
        assert t is not None
        t.touched.append((t.states[self], key))
        Keyspace.set_expire(self, key, expire_at_ms)

    def persist(self, key: bytes) -> bool:
        t = _tracker
        assert t is not None
        t.touched.append((t.states[self], key))
        return Keyspace.persist(self, key)

    def clear(self) -> None:
        assert _tracker is not None
        _tracker.flushed(self)
        Keyspace.clear(self)

    def swap_with(self, other: Keyspace) -> None:
        assert _tracker is not None
        _tracker.swapped(self, other)
        Keyspace.swap_with(self, other)


class NativeTrackedKeyspace(TrackedKeyspace):
    """TrackedKeyspace with its per-key overrides in C (kvserver._dirtyfast), same notes."""

    __slots__ = ()


NATIVE = _dirtyfast is not None
if _dirtyfast is not None:
    _NATIVE_NAMES = (
        "lookup",
        "__contains__",
        "store",
        "delete",
        "replace",
        "set_expire",
        "persist",
    )
    for _name, _descr in _dirtyfast.methods(
        NativeTrackedKeyspace,
        {n: getattr(Keyspace, n) for n in _NATIVE_NAMES},
        Keyspace,
        DbState,
        DirtyTracker,
    ).items():
        setattr(NativeTrackedKeyspace, _name, _descr)


def untrack(databases: list[Keyspace]) -> None:
    """Stop tracking (a primary that became the standby after a switchover). Loop thread."""
    global _tracker
    for db in databases:
        db.__class__ = Keyspace
    _tracker = None
    if _dirtyfast is not None:
        _dirtyfast.configure(None)


def track(
    databases: list[Keyspace], protection: Protection, native: bool | None = None
) -> DirtyTracker:
    """Start tracking `databases` (in place) for `protection`'s epochs. Loop thread, once.

    native: the C notes (default: when built), or False for the Python ones."""
    global _tracker
    if native is None:
        native = NATIVE
    elif native and not NATIVE:
        raise RuntimeError("kvserver._dirtyfast is not built (no C compiler at install time?)")
    tracker = DirtyTracker(databases, protection)
    _tracker = tracker
    cls: type[Keyspace] = TrackedKeyspace
    if native and _dirtyfast is not None:
        _dirtyfast.configure(tracker)
        cls = NativeTrackedKeyspace
    for db in databases:
        db.__class__ = cls
    return tracker
