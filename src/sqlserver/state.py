"""What all sessions of one server share: configuration, the database file, passwords, the write
lock, the translation cache, sequences and the registry of sessions (for CancelRequest).

The write lock is SQLite's one-writer rule made visible in the process: a session takes it before
its transaction's first write (or before an autocommit write) and keeps it until COMMIT or
ROLLBACK. Waiting on a threading.Lock wakes the next writer the moment the previous one commits,
where SQLite's own busy handler would sleep and poll (1, 2, 5, 10 ... ms): under pgbench's TPC-B
load that difference is most of the throughput. Every wait is bounded by lock_timeout_ms (then
55P03) and interruptible by a cancel.

Concurrency: every public method may be called from any thread.
"""

from __future__ import annotations

import itertools
import secrets
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from sqlserver.config import SqlConfig, load_passwords
from sqlserver.durability import WalSync
from sqlserver.protocol.errors import UNDEFINED_TABLE, PgError
from sqlserver.storage import open_connection, prepare_database
from sqlserver.translate import Translator

if TYPE_CHECKING:
    from sqlserver.session import Session

FIRST_PID = 10_000


class Sequences:
    """Sequence counters, in memory, loaded from _lp_sequences on first use.

    A sequence that owns a column (SERIAL) resumes after the column's largest value, so a restart
    never hands out a value that is already stored; values handed out and rolled back may be
    handed out again after a restart (PostgreSQL never does that). See docs/sqlserver.md.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, list[int]] = {}  # name -> [last_value, increment, called]

    def _load(self, name: str, conn: sqlite3.Connection) -> list[int]:
        row = conn.execute(
            "SELECT last_value, increment, owner_table, owner_column FROM _lp_sequences WHERE name = ?",
            (name,),
        ).fetchone()
        if row is None:
            raise PgError(UNDEFINED_TABLE, f'relation "{name}" does not exist')
        last, inc, table, column = row
        if table and column:
            top = conn.execute(f'SELECT max("{column}") FROM "{table}"').fetchone()[0]
            if isinstance(top, int):
                last = max(last, top)
        return [last, inc, 1 if last else 0]

    def nextval(self, name: str, conn: sqlite3.Connection) -> int:
        name = name.split(".")[-1]
        with self._lock:
            entry = self._values.get(name)
            if entry is None:
                entry = self._values[name] = self._load(name, conn)
            entry[0] += entry[1] if entry[2] else 0
            if not entry[2]:
                entry[0] = max(entry[0], 1)
            entry[2] = 1
            return entry[0]

    def currval(self, name: str) -> int | None:
        with self._lock:
            entry = self._values.get(name.split(".")[-1])
            return entry[0] if entry else None

    def setval(self, name: str, value: int, called: bool, conn: sqlite3.Connection) -> int:
        name = name.split(".")[-1]
        with self._lock:
            entry = self._values.get(name)
            if entry is None:
                entry = self._values[name] = self._load(name, conn)
            entry[0], entry[2] = value, int(called)
            return value

    def forget(self, name: str) -> None:
        with self._lock:
            self._values.pop(name.split(".")[-1], None)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: v[0] for k, v in self._values.items()}


class ServerState:
    """Shared by all sessions of one server process; see the module docstring."""

    def __init__(self, config: SqlConfig) -> None:
        self.config = config
        self._tmpdir: str | None = None
        data_dir = config.data_dir
        if data_dir is None:
            data_dir = self._tmpdir = tempfile.mkdtemp(prefix="sqlserver-")
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        self.db_path = str(Path(data_dir) / config.database_file)
        prepare_database(self.db_path, config)
        self.passwords: dict[str, str] = (
            load_passwords(config.password_file) if config.password_file else {}
        )
        self.translator = Translator(config.translation_cache_size)
        self.write_lock = threading.Lock()
        self.wal_sync = WalSync(self.db_path + "-wal") if config.synchronous == "full" else None
        self.sequences = Sequences()
        self._lock = threading.Lock()
        self._sessions: dict[int, Session] = {}
        self._pids = itertools.count(FIRST_PID)
        self.schema_generation = 0
        self._closed = False

    # -- sessions ---------------------------------------------------------------------------

    def new_session(self, peer: str) -> Session:
        """A new session for a client connection (it opens its SQLite connection after startup)."""
        from sqlserver.session import Session

        return Session(self, peer)

    def allocate_key(self) -> tuple[int, int]:
        """A (backend pid, secret key) pair for a new session."""
        with self._lock:
            return next(self._pids), secrets.randbits(31)

    def register(self, session: Session) -> None:
        with self._lock:
            self._sessions[session.backend_pid] = session

    def unregister(self, session: Session) -> None:
        with self._lock:
            if self._sessions.get(session.backend_pid) is session:
                del self._sessions[session.backend_pid]

    def session_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    def cancel(self, pid: int, key: int) -> bool:
        """CancelRequest: interrupt the running statement of session `pid` if `key` matches."""
        with self._lock:
            target = self._sessions.get(pid)
        if target is None or target.secret_key != key:
            return False  # PostgreSQL answers nothing either way: a wrong key learns nothing
        target.cancel()
        return True

    def open_connection(self) -> sqlite3.Connection:
        return open_connection(self.db_path, self.config)

    def schema_changed(self) -> None:
        """A session ran DDL (or rolled it back): cached result types may be stale."""
        with self._lock:
            self.schema_generation += 1

    def shutdown(self) -> None:
        """Close every session's connection and persist the sequence counters (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self._sessions.values())
        for s in sessions:
            s.close()
        values = self.sequences.snapshot()
        if values:
            conn = self.open_connection()
            try:
                conn.executemany(
                    "UPDATE _lp_sequences SET last_value = ? WHERE name = ? AND last_value < ?",
                    [(v, k, v) for k, v in values.items()],
                )
            except sqlite3.Error:
                pass  # best effort; owned sequences recover from their columns anyway
            finally:
                conn.close()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
