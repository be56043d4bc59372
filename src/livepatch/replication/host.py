"""What a server implements to be kept current on a hot standby (kvserver: kvserver.replication_support).

The mechanism (livepatch.replication: Primary, Standby) knows no server. A server provides one object
that satisfies `ReplicatedServer` and hands it to a `Primary` (when it serves and ships epochs) or a
`Standby` (when it receives them). Payloads are opaque bytes in the server's own format: the mechanism
frames, compresses, ships and acknowledges them, and never looks inside.

The four duties (DESIGN.md "Hot standby"):

1. **Dirty tracking.** The server records which pieces of its state changed since the last capture:
   kvserver records keys (value or tombstone, with expiry) and whole-database operations (FLUSHDB,
   FLUSHALL, SWAPDB) at its keyspace, so every command that writes is covered without knowing it.
   sqlserver would record the WAL frames committed since the last capture (Litestream's unit).
2. **Epoch capture at the quiescence point.** `capture_epoch` runs on the server's own loop thread at
   the point where no request is half-done, and returns the changes since the previous capture as one
   payload. Everything written after it returns belongs to the next epoch. Applying the payloads of
   epochs 1..n in order to a copy of the state at epoch 0 must give the state at capture n.
   `snapshot_chunk` streams the whole state in bounded chunks across many quiescence points while the
   server keeps serving; chunk and epoch payloads are applied on the standby in the order they were
   produced, so a chunk may hold a value newer than an epoch before it, never older than one after it.
   Epoch changes must therefore be idempotent overwrites (a key's final value, a WAL frame's page).
   The epoch being filled when a snapshot starts is captured and dropped (the snapshot covers it). A
   change an epoch cannot replay over newer chunks (kvserver: FLUSHDB, SWAPDB) makes `snapshot_chunk`
   raise `SnapshotRestart`; the Primary then starts the full sync over on the same connection.
3. **Apply.** On the standby, `begin_full_sync` / `apply_snapshot_chunk` / `end_full_sync` build a new
   state beside the current one and swap it in at the end (a full sync cut short leaves the old state);
   `apply_epoch` applies one epoch whole. The standby serves nothing while it applies, and takes over
   only between two applies, so a takeover sees whole epochs only.
4. **Held replies.** The server asks its `Protection` (given by the Primary) how long each batch of
   replies must wait (`hold_until`) and keeps held replies in a `HeldReplies` in its output path;
   `release_replies(acked)` sends those whose epoch the standby acknowledged, in order per connection.
   The Primary reads acknowledgements on the loop thread through `watch_readable` (an event loop's
   "watch this descriptor").
   For sqlserver: a CommandComplete of COMMIT (or of an autocommitted write) is held until the epoch
   holding its WAL frames is acknowledged; a read of a page written in an unacknowledged epoch likewise.

Threads: the "loop" methods run on the server's serving thread (the Primary calls them from `tick`,
which the server calls at its quiescence point, or through `call_soon_threadsafe`); the "standby"
methods run on the Standby's thread while the server serves no client.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from livepatch.replication.protection import HeldReplies


class SnapshotRestart(Exception):
    """Raised by `snapshot_chunk`: the snapshot in progress cannot be completed consistently."""


@runtime_checkable
class ReplicatedServer(Protocol):
    held: HeldReplies[Any]
    """The replies waiting for acknowledgements (the Primary reads how many and since when)."""

    # ------------------------------------------------------------------- primary, loop thread
    def capture_epoch(self) -> bytes:
        """The changes since the previous capture (b"" if none); later writes go to the next epoch."""
        ...

    def start_snapshot(self) -> None:
        """Begin a full snapshot (a standby connected); `snapshot_chunk` continues it."""
        ...

    def snapshot_chunk(self, max_bytes: int) -> bytes | None:
        """The next chunk of the snapshot started last (about max_bytes), or None when it is complete."""
        ...

    def release_replies(self, acked_epoch: int) -> None:
        """Send every held reply whose epoch is <= acked_epoch (the standby holds its state)."""
        ...

    def release_all_replies(self) -> None:
        """Send every held reply now (protection given up: the standby is gone or too slow)."""
        ...

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """Run fn on the loop thread soon (any thread; wakes a sleeping loop)."""
        ...

    def watch_readable(self, fd: int, callback: Callable[[], object]) -> None:
        """Call `callback` on the loop thread whenever fd is readable (the link's acknowledgements:
        read where they are used, with no thread and no wake-up in between). Loop thread."""
        ...

    def unwatch(self, fd: int) -> None:
        """Stop watching fd; it is closed next. Loop thread (or any, once the loop has stopped)."""
        ...

    # ----------------------------------------------------------------------- standby thread
    def begin_full_sync(self) -> None:
        """Start building a new state beside the current one (chunks and epochs go there)."""
        ...

    def apply_snapshot_chunk(self, payload: bytes) -> None: ...

    def end_full_sync(self) -> None:
        """Make the state built since begin_full_sync the current one, at once."""
        ...

    def apply_epoch(self, payload: bytes) -> None:
        """Apply one epoch's changes whole (to the state being built, during a full sync)."""
        ...
