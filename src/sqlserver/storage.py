"""SQLite connections for sessions, and SQLite's errors as PostgreSQL's.

One connection per session, in autocommit mode (isolation_level=None): the session issues BEGIN,
COMMIT and ROLLBACK itself. WAL mode lets readers run beside the one writer; synchronous=FULL
(the default, --synchronous full) means a COMMIT is acknowledged only once it is durable: SQLite
runs with synchronous=NORMAL and durability.py fsyncs the WAL after each commit (group commit). The busy timeout bounds every wait inside SQLite; the
session's own write lock (state.py) does the long waits.

Concurrency: a connection is used by its session's thread only, except interrupt() (cancel).
"""

from __future__ import annotations

import re
import sqlite3

from sqlserver.config import SqlConfig
from sqlserver.protocol.errors import (
    CHECK_VIOLATION,
    DATATYPE_MISMATCH,
    DUPLICATE_TABLE,
    FOREIGN_KEY_VIOLATION,
    INTERNAL_ERROR,
    LOCK_NOT_AVAILABLE,
    NOT_NULL_VIOLATION,
    QUERY_CANCELED,
    SERIALIZATION_FAILURE,
    SYNTAX_ERROR,
    UNDEFINED_COLUMN,
    UNDEFINED_FUNCTION,
    UNDEFINED_TABLE,
    UNIQUE_VIOLATION,
    PgError,
)

STATEMENT_CACHE = 256  # prepared SQLite statements kept per connection (sqlite3's LRU)
# Database pages are read through a shared memory map instead of a read() into each connection's
# own page cache: a primary-key lookup on pgbench's 13 MB accounts table no longer copies pages
# per session (~0.6 us less per lookup here). Writes still go through SQLite's normal I/O path.
# The price (docs/sqlserver.md, limits): an I/O error on the database file while reading becomes
# SIGBUS, which ends the server instead of failing one statement.
MMAP_BYTES = 256 * 1024 * 1024

INTERNAL_TABLES = (
    "CREATE TABLE IF NOT EXISTS _lp_sequences (name TEXT PRIMARY KEY, last_value INTEGER NOT NULL, "
    "increment INTEGER NOT NULL DEFAULT 1, owner_table TEXT, owner_column TEXT)",
)


def open_connection(path: str, config: SqlConfig) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, cached_statements=STATEMENT_CACHE
    )
    conn.execute(f"PRAGMA busy_timeout = {int(config.lock_timeout_ms)}")
    # --synchronous full: SQLite runs NORMAL and the session fsyncs the WAL after each COMMIT,
    # outside the write lock, shared between committers (durability.py: group commit)
    mode = "NORMAL" if config.synchronous == "full" else config.synchronous.upper()
    conn.execute(f"PRAGMA synchronous = {mode}")
    conn.execute("PRAGMA foreign_keys = ON")
    # PostgreSQL's LIKE is case-sensitive ('aB' LIKE '%b' is false); SQLite's is not by default.
    # ILIKE reaches SQLite as lower(a) LIKE lower(b) (sqlglot), so it stays case-insensitive.
    conn.execute("PRAGMA case_sensitive_like = ON")
    conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
    return conn


def prepare_database(path: str, config: SqlConfig) -> None:
    """Once per server start: WAL mode (persistent in the file) and the internal tables."""
    conn = open_connection(path, config)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(
                f"SQLite refused WAL mode for {path} (got {mode}); use a local file system"
            )
        for sql in INTERNAL_TABLES:
            conn.execute(sql)
    finally:
        conn.close()


_PATTERNS: list[tuple[re.Pattern[str], str, str]] = [
    (
        re.compile(r"no such table: (?:\w+\.)?(.+)"),
        UNDEFINED_TABLE,
        'relation "{0}" does not exist',
    ),
    (re.compile(r"no such view: (?:\w+\.)?(.+)"), UNDEFINED_TABLE, 'relation "{0}" does not exist'),
    (re.compile(r"no such index: (?:\w+\.)?(.+)"), "42704", 'index "{0}" does not exist'),
    (re.compile(r"no such column: (.+)"), UNDEFINED_COLUMN, 'column "{0}" does not exist'),
    (
        re.compile(r"table \S+ has no column named (.+)"),
        UNDEFINED_COLUMN,
        'column "{0}" does not exist',
    ),
    (re.compile(r"no such function: (.+)"), UNDEFINED_FUNCTION, "function {0}() does not exist"),
    (
        re.compile(r"wrong number of arguments to function (\w+)"),
        UNDEFINED_FUNCTION,
        "function {0} does not exist with these arguments",
    ),
    (
        re.compile(r"(?:table|index|view) (\S+) already exists"),
        DUPLICATE_TABLE,
        'relation "{0}" already exists',
    ),
    (
        re.compile(r"(near .*: syntax error|incomplete input|unrecognized token.*)"),
        SYNTAX_ERROR,
        "syntax error: {0}",
    ),
    (re.compile(r"datatype mismatch"), DATATYPE_MISMATCH, "datatype mismatch"),
]


def map_error(e: sqlite3.Error, function_error: PgError | None = None) -> PgError:
    """The PgError for an exception SQLite raised (message in PostgreSQL's words where we can)."""
    if function_error is not None:
        return function_error
    msg = str(e)
    code = getattr(e, "sqlite_errorcode", 0)
    primary = code & 0xFF
    if primary == sqlite3.SQLITE_CONSTRAINT:
        if "UNIQUE" in msg or "PRIMARY KEY" in msg:
            cols = msg.split(":", 1)[-1].strip()
            table = cols.split(".")[0] if "." in cols else "table"
            names = ", ".join(c.split(".")[-1] for c in cols.split(", "))
            return PgError(
                UNIQUE_VIOLATION,
                f'duplicate key value violates unique constraint "{table}_pkey"',
                detail=f"Key ({names}) already exists.",
            )
        if "NOT NULL" in msg:
            col = msg.split(":", 1)[-1].strip().split(".")[-1]
            return PgError(
                NOT_NULL_VIOLATION, f'null value in column "{col}" violates not-null constraint'
            )
        if "FOREIGN KEY" in msg:
            return PgError(
                FOREIGN_KEY_VIOLATION, "insert or update violates a foreign key constraint"
            )
        if "CHECK" in msg:
            return PgError(
                CHECK_VIOLATION,
                "new row violates a check constraint: " + msg.split(":", 1)[-1].strip(),
            )
        return PgError("23000", f"integrity constraint violation: {msg}")
    if (
        code == 517
    ):  # SQLITE_BUSY_SNAPSHOT: this transaction read a snapshot another one has since changed
        return PgError(
            SERIALIZATION_FAILURE,
            "could not serialize access due to concurrent update",
            hint="Retry the transaction; start it with the write (or BEGIN; then write first) to avoid this.",
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return PgError(
            LOCK_NOT_AVAILABLE, "could not obtain lock: the database is busy (lock timeout reached)"
        )
    if primary == sqlite3.SQLITE_INTERRUPT:
        return PgError(QUERY_CANCELED, "canceling statement due to user request")
    for pattern, sqlstate, template in _PATTERNS:
        m = pattern.search(msg)
        if m:
            return PgError(sqlstate, template.format(*(g.strip('"') for g in m.groups())))
    if primary == sqlite3.SQLITE_FULL:
        return PgError("53100", "could not extend file: disk full")
    if primary == sqlite3.SQLITE_READONLY:
        return PgError("25006", f"cannot write: {msg}")
    if primary == sqlite3.SQLITE_TOOBIG:
        return PgError("54000", f"value too large: {msg}")
    return PgError(INTERNAL_ERROR, f"SQLite: {msg}")
