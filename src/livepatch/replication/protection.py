"""Commit protection: which replies wait for which epoch, and the replies that wait (RemusDB §3).

Theory of operation
-------------------
Epochs are numbered from 1. `Protection.epoch` is the epoch being filled now: a write made now is
shipped with it. `acked` is the newest epoch the standby holds. A batch of replies computed now waits:
  commit  if the batch wrote: until `epoch` is acknowledged (its writes are in it); if it read a key
          written in an unacknowledged epoch e: until e; otherwise not at all;
  full    every reply waits until `epoch` (Remus: all output is held);
  none    nothing waits (asynchronous replication, for comparison).
While `active` is False (the standby is gone or too slow and the policy is `degrade`) nothing waits.
Replies of one connection leave in order: a reply behind a held one is held too (`HeldReplies.hold`
never lets a later entry have an earlier epoch).

Concurrency: loop thread only (the server's serving thread); the Primary reads counters for status.
"""

from __future__ import annotations

import collections
import time
from typing import Generic, Literal, TypeVar

Mode = Literal["commit", "full", "none"]
MODES: tuple[Mode, ...] = ("commit", "full", "none")

Conn = TypeVar("Conn")


class Protection:
    __slots__ = ("acked", "active", "epoch", "mode")

    def __init__(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"protection must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode: Mode = mode
        self.epoch = 1
        self.acked = 0
        self.active = mode != "none"

    def hold_until(self, wrote: bool, read_epoch: int) -> int:
        """The epoch a batch of replies must wait for; 0: it may go at once.

        wrote: the batch changed state; read_epoch: the newest epoch that wrote something the batch
        read (0 if none)."""
        if not self.active:
            return 0
        if self.mode == "full" or wrote:
            return self.epoch
        return read_epoch if read_epoch > self.acked else 0


class HeldReplies(Generic[Conn]):
    """Replies waiting for epochs, per connection, in order. Loop thread only.

    A server may do `hold` and `release` in C over the same slots (kvserver._dirtyfast's
    hold_replies and release_held: keep the two in step; tests/replication/test_process_paths.py
    runs both on the same steps)."""

    __slots__ = ("_newest", "by_conn", "count")

    def __init__(self) -> None:
        # per connection: (epoch, bytes, time.monotonic() when held), oldest first. Public for the
        # server's hot path (`conn in held.by_conn` is `has` without the call); read it, never write.
        self.by_conn: dict[Conn, collections.deque[tuple[int, bytes, float]]] = {}
        self.count = 0
        self._newest = 0  # the newest epoch held since count was last 0 (no scan per tick)

    def __len__(self) -> int:
        return self.count

    def has(self, conn: Conn) -> bool:
        return conn in self.by_conn

    def hold(self, conn: Conn, epoch: int, data: bytes) -> None:
        queue = self.by_conn.get(conn)
        if queue is None:
            queue = self.by_conn[conn] = collections.deque()
        elif queue[-1][0] > epoch:
            epoch = queue[-1][0]  # never overtake a held reply of the same connection
        queue.append((epoch, data, time.monotonic()))
        self.count += 1
        if epoch > self._newest:
            self._newest = epoch

    def newest_epoch(self) -> int:
        """The newest epoch a held reply waits for (0 if none). A reply released since may have
        been newer, but only if every one still held is older: release takes acknowledged epochs
        in order, so the answer to `newest_epoch() >= unacknowledged epoch` is exact."""
        return self._newest if self.count else 0

    def oldest_since(self) -> float | None:
        """time.monotonic() at which the longest-waiting held reply was held, None if none is."""
        return min((q[0][2] for q in self.by_conn.values()), default=None)

    def release(self, acked: int) -> list[tuple[Conn, bytes]]:
        """Take every reply whose epoch <= acked: (connection, bytes joined per connection)."""
        out: list[tuple[Conn, bytes]] = []
        for conn in list(self.by_conn):
            queue = self.by_conn[conn]
            parts = []
            while queue and queue[0][0] <= acked:
                parts.append(queue.popleft()[1])
            if not parts:
                continue
            self.count -= len(parts)
            if not self.count:
                self._newest = 0
            if not queue:
                del self.by_conn[conn]
            out.append((conn, b"".join(parts)))
        return out

    def release_all(self) -> list[tuple[Conn, bytes]]:
        return self.release(1 << 63)

    def drop(self, conn: Conn) -> None:
        """Forget a closed connection's held replies (it will never read them)."""
        queue = self.by_conn.pop(conn, None)
        if queue is not None:
            self.count -= len(queue)
