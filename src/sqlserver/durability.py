"""Group commit: a COMMIT is acknowledged only once the WAL holding it is on disk, and one fsync
covers every commit made before it started.

With `--synchronous full`, SQLite would fsync the WAL inside each COMMIT, while the committing
session still holds the write lock: every writer then waits for the previous writer's fsync. Here
SQLite runs with synchronous=NORMAL (it still syncs the WAL before every checkpoint and the
database after it, so checkpoints stay safe) and the session makes its commit durable itself:

1. COMMIT (frames appended to the -wal file, in the OS page cache), still under the write lock;
2. take a ticket (tickets are issued in commit order, under the write lock);
3. release the write lock: the next writer runs while this one waits;
4. wait(ticket): if no fsync is running, become the leader and fsync the -wal file; a sync that
   started after ticket t was issued covers commit t (its frames were written before the ticket).
   Otherwise wait for the running sync, and check again.

That is what synchronous=FULL guarantees (the WAL synced at each commit), with fsyncs shared.
The reply to the client is produced only after wait() returns, so kill -9 or a power loss never
loses an acknowledged commit.

Concurrency: ticket() and wait() may be called from any thread; one Condition guards the counters.
"""

from __future__ import annotations

import os
import threading

from sqlserver.protocol.errors import FATAL, INTERNAL_ERROR, PgError


class WalSync:
    def __init__(self, wal_path: str) -> None:
        self.wal_path = wal_path
        self._cond = threading.Condition()
        self._issued = 0
        self._synced = 0
        self._busy = False
        self.fsyncs = 0  # statistics: how many fsyncs covered how many commits (self._issued)

    def ticket(self) -> int:
        """Called right after a COMMIT, while the write lock is still held."""
        with self._cond:
            self._issued += 1
            return self._issued

    def wait(self, ticket: int) -> None:
        """Return once commit `ticket` is on disk (see the module docstring)."""
        cond = self._cond
        with cond:
            while self._synced < ticket:
                if self._busy:
                    cond.wait()
                    continue
                self._busy = True
                target = self._issued
                cond.release()
                error: OSError | None = None
                try:
                    self._fsync()
                except OSError as e:
                    error = e
                finally:
                    cond.acquire()
                    self._busy = False
                    if error is None:
                        self._synced = max(self._synced, target)
                        self.fsyncs += 1
                    cond.notify_all()
                if error is not None:
                    # the commit is in the WAL but may not be durable: the client must not be told
                    # it is, and this session cannot go on as if nothing happened (PostgreSQL PANICs)
                    raise PgError(
                        INTERNAL_ERROR,
                        f"could not fsync the write-ahead log {self.wal_path}: {error}",
                        FATAL,
                    )

    def _fsync(self) -> None:
        try:
            fd = os.open(self.wal_path, os.O_RDONLY)
        except FileNotFoundError:
            return  # no WAL: SQLite checkpointed it into the (synced) database and removed it
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
