"""One database: a dict of keys to values plus a dict of absolute expiry times.

Theory of operation
-------------------
Values are plain Python objects (bytes, deque, dict, set, SortedSet); `_data` maps key -> value and
`_expires` maps key -> absolute expiry in Unix milliseconds, only for keys that have a TTL. Expiry is
enforced twice, like Redis:

* lazily: `lookup()` (and every accessor built on it) deletes a key whose time has passed and reports it
  missing, so no command ever sees an expired key;
* actively: `active_expire_cycle()` reaps keys nobody reads. Redis samples random keys of its expires
  table; a Python dict cannot be sampled in O(1), so we keep a min-heap of (expire_at, key). Entries are
  never removed eagerly: a popped entry whose time no longer matches `_expires` is stale (the key was
  deleted, persisted or given another TTL) and is skipped. The heap is rebuilt when stale entries
  outnumber live ones, which keeps it O(live TTLs) in size at amortised O(1) cost.

SCAN needs a cursor that survives keyspace changes between calls. A dict has no stable position, so
cursor 0 takes a snapshot of the key list (one C-level copy, 8 bytes per key) and later calls walk it,
skipping keys deleted since. Every key present for the whole scan is in the snapshot, hence returned.
Snapshots are bounded so abandoned scans cannot eat memory: at most `MAX_SCANS` of them, holding at
most `SCAN_MEMORY_FACTOR` x the key count in total (oldest dropped first). A cursor whose snapshot was
dropped restarts on a fresh snapshot at the same offset (documented limit: keys may then be missed or
repeated, as in Redis after a cursor from another server).

Concurrency: a Keyspace belongs to the event-loop thread; nothing here locks. len() counts expired keys
not yet reaped, as Redis's DBSIZE does.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from kvserver.replies import WRONGTYPE, CommandError
from kvserver.types.zset import SortedSet

MAX_SCANS = 16
SCAN_MEMORY_FACTOR = 4  # all open snapshots together hold at most 4 x len(keyspace) (+ slack) keys
RANDOM_PROBES = 16

TYPE_NAMES: dict[type, bytes] = {
    bytes: b"string",
    deque: b"list",
    dict: b"hash",
    set: b"set",
    SortedSet: b"zset",
}


def type_name(value: Any) -> bytes:
    """Redis's TYPE name of a stored value."""
    return TYPE_NAMES.get(type(value), b"none")


class Keyspace:
    """One Redis database (SELECT index). Single-threaded: owned by the event-loop thread."""

    __slots__ = (
        "_data",
        "_expires",
        "_heap",
        "_random_keys",
        "_scan_next_id",
        "_scans",
        "version",
    )

    def __init__(self) -> None:
        self._data: dict[bytes, Any] = {}
        self._expires: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []
        self._scans: dict[int, list[bytes]] = {}
        self._scan_next_id = 1
        self._random_keys: list[bytes] = []
        # Bumped by clear(): lets holders of key snapshots notice a FLUSHDB.
        self.version = 0

    # ----------------------------------------------------------------- the contract used by KV-core
    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: bytes) -> bool:
        return key in self._data

    def lookup(self, key: bytes, now_ms: int) -> Any:
        """The live value of `key`, or None. An expired key is deleted on the way (lazy expiry)."""
        value = self._data.get(key)
        if value is None or not self._expires:
            return value
        when = self._expires.get(key)
        if when is not None and when <= now_ms:
            del self._data[key]
            del self._expires[key]
            return None
        return value

    def store(self, key: bytes, value: Any, expire_at_ms: int | None = None) -> None:
        """Set `key` to `value`, replacing any TTL with `expire_at_ms` (None: no TTL)."""
        self._data[key] = value
        if expire_at_ms is None:
            if self._expires:
                self._expires.pop(key, None)
        else:
            self.set_expire(key, expire_at_ms)

    def delete(self, key: bytes) -> bool:
        if self._data.pop(key, None) is None:
            return False
        if self._expires:
            self._expires.pop(key, None)
        return True

    def clear(self) -> None:
        self._data = {}
        self._expires = {}
        self._heap = []
        self._scans = {}
        self._random_keys = []
        self.version += 1

    def swap_with(self, other: Keyspace) -> None:
        """SWAPDB: exchange every key, TTL and scan state with `other`. The Keyspace objects stay where
        they are, so clients holding one (ctx.db) see the swapped contents at once."""
        for (
            name
        ) in Keyspace.__slots__:  # not self's: a subclass (kvserver.dirty) adds none of its own
            mine = getattr(self, name)
            setattr(self, name, getattr(other, name))
            setattr(other, name, mine)
        self.version += 1
        other.version += 1

    def expires_count(self) -> int:
        return len(self._expires)

    def items(self) -> Iterator[tuple[bytes, Any, int | None]]:
        """(key, value, expire_at_ms | None) for every key, over a snapshot of the key list."""
        expires = self._expires
        data = self._data
        for key in list(data):
            value = data.get(key)
            if value is not None:
                yield key, value, expires.get(key)

    def entries(self, keys: Iterable[bytes]) -> list[tuple[bytes, Any, int | None]]:
        """(key, value | None, expire_at_ms | None) for each key as stored, expired or not (replication
        ships the absolute expiry time; the standby expires the key itself)."""
        data = self._data
        expires = self._expires
        return [(key, data.get(key), expires.get(key)) for key in keys]

    def active_expire_cycle(self, now_ms: int, max_keys: int) -> int:
        """Delete up to `max_keys` keys whose time has passed; returns how many were deleted.

        Work is bounded by max_keys live reaps plus the stale heap entries skipped on the way (each
        stale entry is skipped once in its life, so the amortised cost is O(max_keys log n)).
        """
        heap = self._heap
        expires = self._expires
        data = self._data
        reaped = 0
        while heap and reaped < max_keys and heap[0][0] <= now_ms:
            when, key = heapq.heappop(heap)
            if expires.get(key) != when:
                continue  # stale: the key was deleted, persisted or re-timed since
            del expires[key]
            del data[key]
            reaped += 1
        return reaped

    def lookup_typed(self, key: bytes, now_ms: int, kind: type) -> Any:
        """lookup(), raising WRONGTYPE if the key holds something other than `kind`."""
        value = self.lookup(key, now_ms)
        if value is None or type(value) is kind:
            return value
        raise CommandError(WRONGTYPE)

    def replace(self, key: bytes, value: Any) -> None:
        """Set the value of `key`, keeping its TTL (INCR, APPEND, SETRANGE; a new key has none)."""
        self._data[key] = value

    # ----------------------------------------------------------------- expiry
    def get_expire(self, key: bytes) -> int | None:
        """Absolute expiry (ms) of `key`, None if it has none (callers check the key exists first)."""
        return self._expires.get(key)

    def set_expire(self, key: bytes, expire_at_ms: int) -> None:
        """Give an existing key an absolute expiry time in ms."""
        self._expires[key] = expire_at_ms
        heap = self._heap
        heapq.heappush(heap, (expire_at_ms, key))
        if len(heap) > 64 and len(heap) > 2 * len(self._expires):
            # Stale entries dominate: rebuild from the live table (amortised O(1) per push).
            self._heap = [(when, k) for k, when in self._expires.items()]
            heapq.heapify(self._heap)

    def persist(self, key: bytes) -> bool:
        """Remove the TTL of `key`; True if it had one."""
        return self._expires.pop(key, None) is not None

    # ----------------------------------------------------------------- helpers for commands
    def keys_snapshot(self) -> list[bytes]:
        return list(self._data)

    def random_key(self, now_ms: int) -> bytes | None:
        """A random live key, or None if the keyspace is empty.

        A dict cannot be indexed, so we draw from a cached list of keys, refreshed when it has drifted
        far from the live key set. Keys added since the last refresh are not drawn until the next one:
        fair enough for RANDOMKEY, whose Redis distribution is not uniform either.
        """
        data = self._data
        for attempt in range(2):
            if not data:
                return None
            pool = self._random_keys
            n = len(data)
            if attempt or not pool or len(pool) > 2 * n or n > 2 * len(pool):
                pool = self._random_keys = list(data)
            for _ in range(RANDOM_PROBES):
                key = pool[random.randrange(len(pool))]
                if key in data and self.lookup(key, now_ms) is not None:
                    return key
        # Almost every key has expired: walk them all (reaping the dead) until a live one turns up.
        for key in list(data):
            if self.lookup(key, now_ms) is not None:
                return key
        return None

    def _bound_scans(self, newest: int) -> None:
        """Drop the oldest snapshots (never `newest`) until the count and memory bounds hold."""
        scans = self._scans
        budget = SCAN_MEMORY_FACTOR * len(self._data) + 4096
        held = sum(len(v) for v in scans.values())
        while len(scans) > 1 and (len(scans) > MAX_SCANS or held > budget):
            oldest = next(iter(scans))
            if oldest == newest:
                break
            held -= len(scans.pop(oldest))

    def scan(self, cursor: int, count: int) -> tuple[int, list[bytes]]:
        """One SCAN step: (next cursor, keys). Cursor layout: scan id << 32 | offset; 0 starts/ends.

        Returned keys still exist (not checked for expiry: the caller filters with lookup()).
        """
        scan_id, offset = cursor >> 32, cursor & 0xFFFFFFFF
        snapshot = self._scans.get(scan_id) if scan_id else None
        if snapshot is None:
            snapshot = list(self._data)
            scan_id = self._scan_next_id
            self._scan_next_id = (scan_id % 0xFFFFFFFF) + 1
            self._scans[scan_id] = snapshot
            self._bound_scans(scan_id)
        end = min(offset + max(count, 1), len(snapshot))
        data = self._data
        out = [k for k in snapshot[offset:end] if k in data]
        if end >= len(snapshot):
            self._scans.pop(scan_id, None)
            return 0, out
        return (scan_id << 32) | end, out
