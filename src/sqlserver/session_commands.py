"""The statements a session runs itself rather than through SQLite: transaction control, SET/SHOW/
RESET, sequences, SQL cursors (DECLARE/FETCH/MOVE/CLOSE), DEALLOCATE and COPY.

Part of Session (session.py), split off to keep files small: functions of the session; STATEMENT_HANDLERS maps a
statement kind (statement.py) to its handler. Handlers run on the session's thread.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

from sqlserver import catalog
from sqlserver import results as res
from sqlserver import session_states as ss
from sqlserver import statement as k
from sqlserver.copy import CopyIn, format_header, format_row
from sqlserver.prepared import Portal, Prepared
from sqlserver.protocol import backend as be
from sqlserver.protocol import messages as m
from sqlserver.protocol.errors import (
    DUPLICATE_CURSOR,
    FEATURE_NOT_SUPPORTED,
    IN_FAILED_SQL_TRANSACTION,
    INVALID_CURSOR_NAME,
    INVALID_SQL_STATEMENT_NAME,
    NO_ACTIVE_SQL_TRANSACTION,
    QUERY_CANCELED,
    PgError,
    ProtocolViolation,
)

if TYPE_CHECKING:
    from sqlserver.session import Session


# -- statements the session handles itself ----------------------------------------------


def begin_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    if session.sm.status != ss.IDLE:
        session._notice("there is already a transaction in progress", "25001")
    session._implicit = False
    session.sm.tx("begin")
    session._out.append(be.command_complete("BEGIN"))


def commit_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    ex = session.executor
    assert ex is not None
    status = session.sm.status
    if status == ss.IDLE and not session._implicit:
        session._notice("there is no transaction in progress", NO_ACTIVE_SQL_TRANSACTION)
    close_portals(session, portal)
    if status == ss.FAILED:
        ex.rollback()
        tag = "ROLLBACK"
    else:
        ex.commit()
        tag = "COMMIT"
    session._implicit = False
    session.settings.end_transaction()
    session.sm.tx("commit")
    session._out.append(be.command_complete(tag))


def rollback_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    ex = session.executor
    assert ex is not None
    if session.sm.status == ss.IDLE and not session._implicit:
        session._notice("there is no transaction in progress", NO_ACTIVE_SQL_TRANSACTION)
    close_portals(session, portal)
    ex.rollback()
    session._implicit = False
    session.settings.end_transaction()
    session.sm.tx("rollback")
    session._out.append(be.command_complete("ROLLBACK"))


def close_portals(session: Session, keep: Portal) -> None:
    for name, portal in list(session._portals.items()):
        if portal is not keep and portal.cursor is not None and name not in session._holdable:
            portal.cursor.close()
            del session._portals[name]


def savepoint_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    ex = session.executor
    assert ex is not None
    kind = p.stmt.kind
    if not session._in_block():
        raise PgError(
            NO_ACTIVE_SQL_TRANSACTION, f"{p.stmt.tag} can only be used in transaction blocks"
        )
    if not ex.begun:
        ex.begin(False)
    name = p.stmt.args[0].replace('"', '""')
    if kind == k.SAVEPOINT:
        ex.execute_plain(f'SAVEPOINT "{name}"')
    elif kind == k.RELEASE:
        ex.execute_plain(f'RELEASE SAVEPOINT "{name}"')
    else:
        ex.execute_plain(f'ROLLBACK TO SAVEPOINT "{name}"')
        session.sm.tx("rollback_to")
    session._out.append(be.command_complete(p.stmt.tag))


def set_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    name, value, local = p.stmt.args
    session.set_setting(name, value, local)
    session._out.append(be.command_complete("SET"))


def reset_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    for report in session.settings.reset(p.stmt.args[0]):
        session._out.append(be.encode(m.ParameterStatus(*report)))
    session._out.append(be.command_complete("RESET"))


def show_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    name = p.stmt.args[0]
    if name == "all":
        raise PgError(
            FEATURE_NOT_SUPPORTED,
            "SHOW ALL is not supported; SELECT name, setting FROM pg_settings",
        )
    value = session.settings.get(name)
    desc, encs = p.describe(portal.formats)
    if describe:
        session._out.append(desc)
    session._out.append(be.data_row([encs[0](value)]))
    session._out.append(be.command_complete("SHOW"))


def noop_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    session._out.append(be.command_complete(p.stmt.tag))


def empty_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    session._out.append(be.EMPTY_QUERY_RESPONSE)


def sequence_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    ex = session.executor
    assert ex is not None
    st = p.stmt
    in_block = session._in_block()
    if in_block and not ex.begun:
        ex.begin(True)
    ex.acquire_write()
    try:
        if st.kind == k.CREATE_SEQUENCE:
            name, start, inc, if_not_exists = st.args
            verb = "INSERT OR IGNORE" if if_not_exists else "INSERT"
            ex.execute_plain(
                f"{verb} INTO _lp_sequences (name, last_value, increment) VALUES (?, ?, ?)",
                (name, start - inc, inc),
            )
            session.state.sequences.forget(name)
        else:
            for name in st.args:
                ex.execute_plain("DELETE FROM _lp_sequences WHERE name = ?", (name,))
                session.state.sequences.forget(name)
    except PgError:
        if not in_block:
            ex.release_write()
        raise
    if not in_block:
        ex.release_after_autocommit()
    session._out.append(be.command_complete(st.tag))


# -- SQL-level cursors and prepared statements -------------------------------------------


def declare_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    name, hold, binary = p.stmt.args
    if not hold and not session._in_block():
        raise PgError(
            NO_ACTIVE_SQL_TRANSACTION, "DECLARE CURSOR can only be used in transaction blocks"
        )
    if name in session._portals:
        raise PgError(DUPLICATE_CURSOR, f'cursor "{name}" already exists')
    st = p.stmt
    query = k.Statement(
        k.SELECT, f"{st.text}\0cursor", st.sql, "SELECT", st.nparams, False, (), st.ast
    )
    inner = session._typed("", st.text, query, p.param_oids)
    cursor = Portal(inner, portal.params, (1,) if binary else ())
    session._start(cursor)
    if hold:  # a holdable cursor outlives its transaction: materialize it now
        cursor.pending = session._take(cursor, 0)[0]
        session._holdable.add(name)
    session._portals[name] = cursor
    session._out.append(be.command_complete("DECLARE CURSOR"))


def fetch_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    name, count, move = p.stmt.args
    cursor = session._portals.get(name)
    if cursor is None or cursor.cursor is None:
        raise PgError(INVALID_CURSOR_NAME, f'cursor "{name}" does not exist')
    rows = [] if cursor.done else session._take(cursor, count or 0)[0]
    if count is None or len(rows) < count:
        cursor.done = True
    out = session._out
    if not move:
        desc, encs = cursor.prepared.describe(portal.formats or cursor.formats)
        if describe:
            out.append(desc)
        data_row = be.data_row
        for row in rows:
            out.append(
                data_row([None if v is None else enc(v) for enc, v in zip(encs, row, strict=False)])
            )
    out.append(be.command_complete(f"{p.stmt.tag} {len(rows)}"))


def close_cursor_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    name = p.stmt.args[0]
    names = [n for n in session._portals if n] if name is None else [name]
    for n in names:
        cursor = session._portals.pop(n, None)
        if cursor is None:
            raise PgError(INVALID_CURSOR_NAME, f'cursor "{n}" does not exist')
        session._holdable.discard(n)
        if cursor.cursor is not None:
            cursor.cursor.close()
    session._out.append(be.command_complete(p.stmt.tag))


def deallocate_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    name = p.stmt.args[0]
    if name is None:
        for n in [n for n in session._statements if n]:
            session.forget_native(n)
        session._statements = {n: s for n, s in session._statements.items() if not n}
    elif session._statements.pop(name, None) is None:
        raise PgError(INVALID_SQL_STATEMENT_NAME, f'prepared statement "{name}" does not exist')
    else:
        session.forget_native(name)
    session._out.append(be.command_complete(p.stmt.tag))


# -- COPY -------------------------------------------------------------------------------


def copy_from_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    ex = session.executor
    assert ex is not None
    spec = p.stmt.args[0]
    cols = catalog.table_columns(ex.conn, spec.table)
    if cols is None:
        raise PgError("42P01", f'relation "{spec.table}" does not exist')
    names = list(spec.columns) or [c for c, _ in cols]
    if not ex.begun:
        ex.begin(True)  # the whole COPY is one transaction (inside the client's block, if any)
    else:
        ex.acquire_write()
    session._copy = CopyIn(spec, ex.conn, names)
    session.sm.on("copy_in")
    n = len(names)
    session._out.append(be.encode(m.CopyInResponse(0, (0,) * n)))


def copy_message(session: Session, msg: Any) -> None:
    copy = session._copy
    ex = session.executor
    assert copy is not None and ex is not None
    if isinstance(msg, m.Flush | m.Sync):
        return  # ignored during COPY, as PostgreSQL does
    try:
        if isinstance(msg, m.CopyData):
            copy.feed(msg.data)
            return
        if isinstance(msg, m.CopyDone):
            count = copy.finish()
            session._copy = None
            session.sm.on("copy_done")
            if session.sm.status == ss.IDLE and not session._implicit:
                ex.commit()
            session._out.append(be.command_complete(f"COPY {count}"))
            after_copy(session)
            return
        if isinstance(msg, m.CopyFail):
            raise PgError(QUERY_CANCELED, f"COPY from stdin failed: {msg.message}")
        raise ProtocolViolation(f"unexpected message {type(msg).__name__} during COPY from stdin")
    except sqlite3.Error as e:
        err: PgError = session._mapped(e)
    except PgError as e:
        if e.fatal:
            raise
        err = e
    session._copy = None
    session.sm.on("copy_fail")
    session._error(err)
    after_copy(session)


def after_copy(session: Session) -> None:
    if session._implicit and session.sm.status == ss.IDLE:
        session._end_implicit()
    session._ready()


def copy_to_command(session: Session, p: Prepared, portal: Portal, describe: bool) -> None:
    ex = session.executor
    assert ex is not None
    spec = p.stmt.args[0]
    if spec.query is not None:
        sql = spec.query
    else:
        cols = catalog.table_columns(ex.conn, spec.table)
        if cols is None:
            raise PgError("42P01", f'relation "{spec.table}" does not exist')
        names = list(spec.columns) or [c for c, _ in cols]
        sql = "SELECT " + ", ".join(f'"{c}"' for c in names) + f' FROM "{spec.table}"'
    cur = ex.execute_plain(sql)
    names = [d[0] for d in cur.description or ()]
    oids = copy_oids(session, spec.table, names)
    encs = [res.encoder(o, False) for o in oids]
    out = session._out
    out.append(be.encode(m.CopyOutResponse(0, (0,) * len(names))))
    if spec.header:
        out.append(be.encode(m.CopyData(format_header(names, spec))))
    n = 0
    try:
        for row in cur:
            vals = [None if v is None else e(v).decode() for e, v in zip(encs, row, strict=False)]
            out.append(be.encode(m.CopyData(format_row(vals, spec))))
            n += 1
    except sqlite3.Error as e:
        raise session._mapped(e) from None
    out.append(be.COPY_DONE)
    out.append(be.command_complete(f"COPY {n}"))


def copy_oids(session: Session, table: str | None, names: list[str]) -> list[int]:
    decl = dict(session._columns_of(table) or []) if table else {}
    return [res.declared_oid(decl.get(n)) or res.TEXT for n in names]


def in_failed() -> PgError:
    return PgError(
        IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )


STATEMENT_HANDLERS: dict[str, Any] = {
    k.BEGIN: begin_command,
    k.COMMIT: commit_command,
    k.ROLLBACK: rollback_command,
    k.SAVEPOINT: savepoint_command,
    k.RELEASE: savepoint_command,
    k.ROLLBACK_TO: savepoint_command,
    k.SET: set_command,
    k.RESET: reset_command,
    k.SHOW: show_command,
    k.NOOP: noop_command,
    k.EMPTY: empty_command,
    k.CREATE_SEQUENCE: sequence_command,
    k.DROP_SEQUENCE: sequence_command,
    k.DECLARE: declare_command,
    k.FETCH: fetch_command,
    k.CLOSE_CURSOR: close_cursor_command,
    k.DEALLOCATE: deallocate_command,
    k.COPY_FROM: copy_from_command,
    k.COPY_TO: copy_to_command,
}
