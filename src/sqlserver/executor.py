"""Running translated statements on a session's SQLite connection: transactions and the write lock.

Transactions are begun lazily: BEGIN from the client only moves the status to T (session_states);
SQLite's transaction starts with the block's first statement, as BEGIN IMMEDIATE when that statement
writes (so the write lock is taken before any snapshot exists and the transaction cannot fail on a
stale snapshot: pgbench's TPC-B starts with an UPDATE) and as a deferred BEGIN otherwise. A block
that read first and writes later takes the write lock at its first write; if another writer
committed in between, SQLite refuses with SQLITE_BUSY_SNAPSHOT, reported as 40001.

The write lock (ServerState.write_lock) is held from a transaction's first write to its end, or
around one autocommit write. Waiting for it is bounded by lock_timeout_ms (55P03) and ends early
on cancel (57014).

Concurrency: one Executor per session, used by that session's thread; cancel() from any thread.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Protocol

from sqlserver import blocking
from sqlserver.protocol.errors import LOCK_NOT_AVAILABLE, QUERY_CANCELED, PgError
from sqlserver.state import ServerState
from sqlserver.statement import DDL, Statement
from sqlserver.storage import map_error


class FunctionErrors(Protocol):
    """Where SQL functions (functions.py) leave the PgError they raised inside SQLite."""

    function_error: PgError | None


_WAIT_SLICE = 0.05  # seconds between checks for a cancel while waiting for the write lock


class Executor:
    def __init__(self, state: ServerState, conn: sqlite3.Connection, host: FunctionErrors) -> None:
        self.state = state
        self.conn = conn
        self.host = host
        self.begun = False  # SQLite transaction open
        self.holds_write = False
        self.ddl_in_tx = False
        self.cancel_requested = False
        self._lock_timeout = state.config.lock_timeout_ms / 1000

    # -- the write lock ---------------------------------------------------------------------

    def acquire_write(self, restartable: bool = False) -> None:
        """Take the write lock (bounded wait). restartable: the caller can run the request again later,
        so while nothing is held yet it may raise blocking.BackOut instead (blocking.py)."""
        if self.holds_write:
            return
        fresh = restartable and not self.begun and not self.conn.in_transaction
        if fresh and blocking.back_out():
            raise blocking.BackOut
        lock = self.state.write_lock
        if not lock.acquire(False):
            deadline = time.monotonic() + self._lock_timeout
            blocking.wait_begin()  # the holder's COMMIT may need this thread's pool group
            try:
                while not lock.acquire(timeout=_WAIT_SLICE):
                    if self.cancel_requested:
                        raise PgError(QUERY_CANCELED, "canceling statement due to user request")
                    if time.monotonic() >= deadline:
                        raise PgError(
                            LOCK_NOT_AVAILABLE,
                            f"could not obtain the write lock within {self.state.config.lock_timeout_ms} ms",
                            hint="Another session holds a write transaction open; commit it, or raise the lock timeout.",
                        )
            finally:
                blocking.wait_end()
            if fresh and blocking.back_out():
                # A patch arrived while this request queued: pass the lock on (the next one in
                # the queue backs out too) rather than start a transaction the patch waits for.
                lock.release()
                raise blocking.BackOut
        self.holds_write = True

    def release_write(self) -> None:
        if self.holds_write:
            self.holds_write = False
            self.state.write_lock.release()

    # -- transactions -----------------------------------------------------------------------

    def begin(self, writes: bool, restartable: bool = False) -> None:
        """Start SQLite's transaction for the block's first statement (see the module docstring)."""
        if writes:
            self.acquire_write(restartable)
        try:
            self.conn.execute("BEGIN IMMEDIATE" if writes else "BEGIN")
        except sqlite3.Error as e:
            self.release_write()
            raise map_error(e) from None
        self.begun = True

    def commit(self) -> None:
        """COMMIT; returns once it is durable (durability.py) when the transaction wrote."""
        try:
            if self.begun:
                self.conn.execute("COMMIT")
        except sqlite3.Error as e:
            err = map_error(e)
            self.rollback()
            raise err from None
        ticket = self._ticket()
        self._ended()
        self._durable(ticket)

    def _ticket(self) -> int:
        sync = self.state.wal_sync
        return sync.ticket() if sync is not None and self.holds_write else 0

    def _durable(self, ticket: int) -> None:
        if ticket:
            assert self.state.wal_sync is not None
            blocking.wait_begin()  # an fsync, or waiting for another session's
            try:
                self.state.wal_sync.wait(ticket)
            finally:
                blocking.wait_end()

    def rollback(self) -> None:
        try:
            if self.begun and self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite already rolled back (e.g. after an I/O error): nothing is left to undo
        if self.ddl_in_tx:
            self.state.schema_changed()
        self._ended()

    def _ended(self) -> None:
        self.begun = False
        self.ddl_in_tx = False
        self.release_write()

    # -- statements -------------------------------------------------------------------------

    def run(
        self, st: Statement, params: Any, in_block: bool, restartable: bool = False
    ) -> sqlite3.Cursor:
        """Run one SQL statement; in_block: inside a transaction block (explicit or implicit).

        Returns the cursor of the last SQLite statement. Outside a block a write is its own
        transaction, so its rows are fetched by the caller before release_after_autocommit().
        restartable: the caller handles blocking.BackOut (raised before anything ran or was held).
        """
        conn = self.conn
        if in_block:
            if not self.begun:
                self.begin(st.writes, restartable)
            elif st.writes and not self.holds_write:
                self.acquire_write()
        elif st.writes:
            self.acquire_write(restartable)
        host = self.host
        host.function_error = None
        try:
            sqls = st.sql
            for sql in sqls[:-1]:
                conn.execute(sql)
            cur = conn.execute(sqls[-1], params) if params else conn.execute(sqls[-1])
        except sqlite3.Error as e:
            if not in_block:
                self.release_write()
            raise map_error(e, host.function_error) from None
        if st.kind == DDL:
            if in_block:
                self.ddl_in_tx = True
            self.state.schema_changed()
        return cur

    def release_after_autocommit(self) -> None:
        """After a write outside a block (its own transaction): release, then wait until durable."""
        if not self.begun and self.holds_write:
            ticket = self._ticket()
            self.release_write()
            self._durable(ticket)

    def execute_plain(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        """Run SQL of the session's own (savepoints, catalog lookups), mapping errors."""
        self.host.function_error = None
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as e:
            raise map_error(e, self.host.function_error) from None

    def close(self) -> None:
        self.rollback()
        try:
            self.conn.close()
        except sqlite3.Error:
            pass
