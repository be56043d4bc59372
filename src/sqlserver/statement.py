"""The translated form of one statement, shared by translate.py, rewrite.py and the session.

Concurrency: Statement and CopySpec are immutable; share them freely between threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlglot import exp

from sqlserver.protocol.errors import FEATURE_NOT_SUPPORTED, PgError

# Statement kinds. "rows" kinds return a result set; the session handles the others by kind.
SELECT = "select"  # any row-returning statement run by SQLite (SELECT, VALUES, ... RETURNING)
DML = "dml"  # INSERT/UPDATE/DELETE without RETURNING
DDL = "ddl"  # changes the schema (bumps the schema generation)
BEGIN = "begin"
COMMIT = "commit"
ROLLBACK = "rollback"
SAVEPOINT = "savepoint"
RELEASE = "release"
ROLLBACK_TO = "rollback_to"
SET = "set"
SHOW = "show"
RESET = "reset"
COPY_FROM = "copy_from"
COPY_TO = "copy_to"
NOOP = "noop"  # accepted and ignored (VACUUM, ANALYZE, CHECKPOINT, DISCARD ...): tag only
EMPTY = "empty"
DECLARE = "declare"  # args: (cursor name, hold, binary); ast/sql/nparams: the query's
FETCH = "fetch"  # args: (cursor name, count or None for ALL, move)
CLOSE_CURSOR = "close_cursor"  # args: (cursor name or None for ALL,)
DEALLOCATE = "deallocate"  # args: (statement name or None for ALL,)
CREATE_SEQUENCE = "create_sequence"
DROP_SEQUENCE = "drop_sequence"


@dataclass(frozen=True, slots=True)
class Statement:
    """One translated statement.

    sql: the SQLite statements to run in order (several for a multi-table DROP); the last one gives
    the rows. tag: the CommandComplete verb ("INSERT" gets "INSERT 0 n"). writes: needs the write
    lock. args: kind-specific data (SET: (name, value, local); SHOW: (name,); SAVEPOINT...: (name,);
    COPY: a CopySpec). ast: the rewritten PostgreSQL-side tree for type inference (None if none).
    """

    kind: str
    text: str
    sql: tuple[str, ...] = ()
    tag: str = ""
    nparams: int = 0
    writes: bool = False
    args: tuple[Any, ...] = ()
    ast: exp.Expression | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class CopySpec:
    """COPY table [(cols)] FROM STDIN / TO STDOUT, or COPY (query) TO STDOUT."""

    table: str | None
    columns: tuple[str, ...]
    query: str | None  # SQLite text of the query for COPY (query) TO
    csv: bool
    delimiter: str
    null: str
    header: bool
    quote: str = '"'


def unsupported(what: str, text: str) -> PgError:
    return PgError(
        FEATURE_NOT_SUPPORTED,
        f"{what} is not supported by sqlserver: {clip(text)}",
        hint="See docs/sqlserver.md for the SQL that sqlserver supports.",
    )


def clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."
