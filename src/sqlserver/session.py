"""One client connection's logic, sans-IO: bytes in, bytes out.

Theory of operation
-------------------
`receive(data)` feeds the codec's FrontendParser and handles every complete message in order,
appending reply bytes to one output list that is joined and returned at the end: the network layer
writes whatever comes back (possibly nothing) and calls receive again when the socket has more.
Statements run synchronously on the calling thread.

* Phases and transaction status move only through session_states.py (one table, its rules).
* Simple query: the text is translated (translate.py, cached), each statement runs in order; a
  text with several statements outside a block is one implicit transaction, as in PostgreSQL.
* Extended query: Parse keeps a Prepared (translation, parameter and result types, its encoded
  RowDescription per result-format choice); Bind makes a Portal (decoded parameters); Execute runs
  it through SQLite, sends up to max_rows rows and PortalSuspended or CommandComplete. After an
  error everything up to Sync is discarded; Sync answers ReadyForQuery. Outside a transaction block
  the Executes up to Sync are one implicit transaction, committed at Sync (rolled back by an
  error), as in PostgreSQL; the fast path's burst ends with its Sync, so it commits at once.
* fastpath.py answers the hot Bind/Describe/Execute/Sync burst of an already-prepared statement
  without building message objects; whatever it does not recognise it leaves to this general path.
* Every error is a PgError (codec's), turned into an ErrorResponse once, in _error(). A fatal one
  (or a broken byte stream) closes this session only.
* Split off to keep files small: startup and authentication (session_startup.py), the statements the
  session runs itself, COPY and SQL cursors (session_commands.py), Prepared and Portal (prepared.py).

Concurrency: a Session is driven by one thread at a time (the network layer's); cancel() may be
called from any thread (it only sets a flag and interrupts SQLite).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from sqlserver import catalog, infer, native
from sqlserver import results as res
from sqlserver import session_states as ss
from sqlserver import statement as k
from sqlserver.blocking import BackOut
from sqlserver.copy import CopyIn
from sqlserver.executor import Executor
from sqlserver.fastpath import Burst, parse_burst
from sqlserver.prepared import Portal, Prepared
from sqlserver.protocol import backend as be
from sqlserver.protocol import messages as m
from sqlserver.protocol.errors import (
    DUPLICATE_CURSOR,
    DUPLICATE_PREPARED_STATEMENT,
    FEATURE_NOT_SUPPORTED,
    INTERNAL_ERROR,
    INVALID_CURSOR_NAME,
    INVALID_SQL_STATEMENT_NAME,
    PROGRAM_LIMIT_EXCEEDED,
    PROTOCOL_VIOLATION,
    QUERY_CANCELED,
    SYNTAX_ERROR,
    PgError,
    ProtocolViolation,
)
from sqlserver.protocol.frontend import (
    FrontendParser,
)
from sqlserver.session_commands import STATEMENT_HANDLERS, copy_message, in_failed
from sqlserver.session_startup import auth_message, startup_message
from sqlserver.settings import Settings
from sqlserver.state import ServerState

log = logging.getLogger("sqlserver.session")

_FAST_COMMANDS = frozenset({k.BEGIN, k.COMMIT, k.ROLLBACK})
_NOTICE = "NOTICE"
_WARNING = "WARNING"


class Session:
    """One client connection (see the module docstring)."""

    def __init__(self, state: ServerState, peer: str) -> None:
        self.state = state
        self.peer = peer
        self.backend_pid, self.secret_key = state.allocate_key()
        self.sm = ss.SessionState()
        self._parser = FrontendParser()
        self._out: list[bytes] = []
        self._skip_to_sync = False
        # inside an implicit transaction: a multi-statement simple query's, or the extended
        # protocol's (from an Execute outside a block to the next Sync)
        self._implicit = False
        self._statements: dict[str, Prepared] = {}
        self._portals: dict[str, Portal] = {}
        self._holdable: set[str] = set()  # cursors declared WITH HOLD (they outlive their block)
        self._types: dict[str, Prepared] = {}  # unnamed-statement reuse: text -> typed Prepared
        self._copy: CopyIn | None = None
        self._auth: Any = None
        self._scram_started = False
        self._fast_ok = False  # READY, not skipping to Sync, not in COPY: see _fast_allowed()
        self.user = "postgres"
        self.database = "postgres"
        self.settings = Settings(self.user, state.config.max_connections)
        self.executor: Executor | None = None
        self.function_error: PgError | None = None
        self._registered = False
        self._backed_out: bytes | None = None
        # the C fast path (native.py): set once authenticated when _pgfast is built and trusts the
        # handle; _native_seen: statement name -> the Prepared last planned for it
        self.native: Any = None
        self._native_seen: dict[str, Prepared] = {}

    # -- the network layer's interface ------------------------------------------------------

    @property
    def status(self) -> str:
        return self.sm.status

    @property
    def closed(self) -> bool:
        return self.sm.phase == ss.CLOSED

    @property
    def idle(self) -> bool:
        """Holds nothing, so a safe quiescence point: no partial message buffered, not in COPY, and
        status I -- or status T before the block ran any statement (BEGIN only sets the status;
        SQLite's transaction, its snapshot and the write lock come with the first statement). A
        session still in startup or authentication holds nothing either, so it is idle too."""
        sm = self.sm
        if sm.phase not in (ss.READY, ss.STARTUP, ss.AUTHENTICATING) or self._parser.buffered():
            return False
        ex = self.executor
        if sm.status == ss.IDLE:
            # the extended protocol's implicit transaction (until Sync) may span several reads
            return not (self._implicit and ex is not None and ex.begun)
        return (
            sm.status == ss.IN_TRANSACTION
            and ex is not None
            and not ex.begun
            and not ex.holds_write
            and not ex.conn.in_transaction
        )

    def take_backed_out(self) -> bytes | None:
        """The input of a request that backed out (blocking.py), to be given to receive() again
        once the pending patch is over; None when the last receive() ran to the end."""
        data, self._backed_out = self._backed_out, None
        return data

    def receive(self, data: bytes) -> bytes:
        """Handle `data` from the client; returns the bytes to send back (maybe empty)."""
        nat = self.native
        if nat is not None and nat.enabled:
            reply = nat.run(data)  # the C path (native.py): None when Python must answer
            if reply is not None:
                return reply
            if nat.interrupted:
                nat.interrupted = False
                return self._cancelled(data)
        if self._fast_ok and not self._parser.buffered():
            burst = parse_burst(data)
            if burst is not None:
                try:
                    fast = self._fast(burst)
                except BackOut:
                    # Nothing ran and nothing is held (blocking.py): the policy runs `data` again
                    # after the pending patch, and nothing is sent meanwhile.
                    self._backed_out = data
                    return b""
                if fast is not None:
                    if nat is not None:
                        nat.enabled = self.sm.status == ss.IDLE and "" not in self._portals
                    return fast
        out = self._out = []
        if self.sm.phase == ss.CLOSED:
            return b""
        parser = self._parser
        parser.feed(data)
        while self.sm.phase != ss.CLOSED:
            try:
                msg = parser.next()
            except ProtocolViolation as e:
                self._fatal(e)
                break
            if msg is None:
                break
            try:
                self._dispatch(msg)
            except PgError as e:
                if e.fatal:
                    self._fatal(e)
                else:
                    self._error(e)
            except Exception as e:  # a bug must cost this client its statement, never the server
                log.exception("internal error in session %s", self.backend_pid)
                self._error(PgError(INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e}"))
        self._fast_ok = self.sm.phase == ss.READY and not self._skip_to_sync and not self._implicit
        nat = self.native
        if nat is not None:
            nat.enabled = (
                self._fast_ok
                and self.sm.status == ss.IDLE
                and "" not in self._portals
                and not self._parser.buffered()
            )
        return b"".join(out)

    def _fast(self, burst: Burst) -> bytes | None:
        """Bind/[Describe]/Execute/Sync of a prepared SELECT or DML, without message objects.

        Returns None (before doing anything) when the general path must handle the burst; the
        replies are byte for byte those of the general path (tests/sqlserver/test_fastpath.py).
        """
        name, pfmts, raw, rfmts, describe = burst
        p = self._statements.get(name)
        if p is None or p.fast is None or len(raw) != p.stmt.nparams or self.sm.status == ss.FAILED:
            return None
        st = p.stmt
        if describe and p.columns and not p.fast:
            return None  # result types still unknown: the general path learns them from a row
        if len(rfmts) > 1 and len(rfmts) != len(p.columns or ()):
            return None  # a protocol violation: the general path reports it
        try:
            params = p.decode(raw, pfmts) if raw else ()
        except PgError:
            return None  # a malformed parameter fails the Bind itself: the general path reports it
        out = self._out = [be.BIND_COMPLETE]
        if self._portals:
            self._portals.pop("", None)
        ex = self.executor
        assert ex is not None
        in_block = self.sm.status != ss.IDLE
        try:
            if st.kind in _FAST_COMMANDS:
                if describe:
                    out.append(be.NO_DATA)
                STATEMENT_HANDLERS[st.kind](self, p, Portal(p, [], rfmts), False)
                out.append(be.ready_for_query(self.sm.status))
                return b"".join(out)
            if p.columns:
                desc, encs = p.describe(rfmts)
                if describe:
                    out.append(desc)
                cur = ex.run(st, params, in_block, restartable=True)
                try:
                    rows = cur.fetchall()
                except sqlite3.Error as e:
                    raise self._mapped(e) from None
                finally:
                    if st.writes and not in_block:
                        ex.release_after_autocommit()
                data_row = be.data_row
                for row in rows:
                    out.append(
                        data_row(
                            [
                                None if v is None else enc(v)
                                for enc, v in zip(encs, row, strict=False)
                            ]
                        )
                    )
                out.append(p.complete(len(rows)))
                nat = self.native
                if nat is not None and self._native_seen.get(name) is not p:
                    self._native_seen[name] = p
                    native.register(nat, p, in_block)
            else:
                if describe:
                    out.append(be.NO_DATA)
                cur = ex.run(st, params, in_block, restartable=True)
                if not in_block:
                    ex.release_after_autocommit()
                out.append(p.complete(cur.rowcount if cur.rowcount >= 0 else 0))
        except PgError as e:
            if e.fatal:
                raise
            self._error(e)  # the Execute failed: what followed it up to Sync is discarded
        out.append(be.ready_for_query(self.sm.status))
        return b"".join(out)

    def _cancelled(self, data: bytes) -> bytes:
        """The reply to a burst the C path ran until a CancelRequest interrupted it: what the Python
        fast path answers when its statement is interrupted (running it again would lose the cancel)."""
        burst = parse_burst(data)
        assert burst is not None  # the C path runs only bursts it parsed
        name, _, _, rfmts, describe = burst
        out = self._out = [be.BIND_COMPLETE]
        if describe:
            out.append(self._statements[name].describe(rfmts)[0])
        self._error(PgError(QUERY_CANCELED, "canceling statement due to user request"))
        out.append(be.ready_for_query(self.sm.status))
        return b"".join(out)

    def forget_native(self, name: str) -> None:
        """The statement `name` is replaced or gone: the C path must not serve it any more."""
        if self._native_seen.pop(name, None) is not None and self.native is not None:
            self.native.forget(name.encode())

    def cancel(self) -> None:
        """Interrupt the running statement (CancelRequest); safe from any thread."""
        ex = self.executor
        if ex is not None:
            ex.cancel_requested = True
            try:
                ex.conn.interrupt()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        """Roll back what is open and release the SQLite connection (idempotent)."""
        if self._registered:
            self.state.unregister(self)
            self._registered = False
        nat, self.native = self.native, None
        if nat is not None:
            nat.close()  # its SQLite statements are finalized before the handle closes
        ex, self.executor = self.executor, None
        if ex is not None:
            ex.close()
        if self.sm.phase != ss.CLOSED:
            self.sm.on("terminate")

    # -- dispatch ---------------------------------------------------------------------------

    def _dispatch(self, msg: Any) -> None:
        phase = self.sm.phase
        if phase == ss.READY:
            handler = _READY_HANDLERS.get(type(msg))
            if handler is None:
                raise ProtocolViolation(f"unexpected message {type(msg).__name__} after startup")
            if self._skip_to_sync and type(msg) not in (m.Sync, m.Terminate):
                return  # error recovery of the extended protocol: discard until Sync
            handler(self, msg)
        elif phase == ss.COPY_IN:
            copy_message(self, msg)
        elif phase == ss.STARTUP:
            startup_message(self, msg)
        elif phase == ss.AUTHENTICATING:
            auth_message(self, msg)

    # -- errors -----------------------------------------------------------------------------

    def _error(self, e: PgError) -> None:
        """Report a non-fatal error; a failed statement moves T to E (rule 2)."""
        self._out.append(be.encode(e.to_message()))
        ex = self.executor
        if ex is not None:
            ex.cancel_requested = False
            if self.sm.status == ss.IDLE:
                if self._implicit:
                    self._implicit = False
                if ex.begun:
                    ex.rollback()
                else:
                    ex.release_write()
        if self.sm.phase == ss.READY:
            self.sm.tx("error")

    def _fatal(self, e: PgError) -> None:
        self._out.append(be.encode(e.to_message()))
        self.close()

    def _notice(self, message: str, sqlstate: str = "00000", severity: str = _WARNING) -> None:
        self._out.append(be.encode(m.NoticeResponse(severity, sqlstate, message)))

    def _ready(self) -> None:
        self._out.append(be.ready_for_query(self.sm.status))

    # -- FunctionHost (functions.py) --------------------------------------------------------

    def current_setting(self, name: str, missing_ok: bool = False) -> str | None:
        return self.settings.get(name, missing_ok)

    def set_setting(self, name: str, value: str, local: bool) -> str:
        report = self.settings.set(name, value, local)
        if report:
            self._out.append(be.encode(m.ParameterStatus(*report)))
        return value

    def nextval(self, name: str) -> int:
        assert self.executor is not None
        return self.state.sequences.nextval(name, self.executor.conn)

    def currval(self, name: str) -> int:
        v = self.state.sequences.currval(name)
        if v is None:
            err = PgError(
                "55000", f'currval of sequence "{name}" is not yet defined in this session'
            )
            self.function_error = err
            raise err
        return v

    def setval(self, name: str, value: int, called: bool = True) -> int:
        assert self.executor is not None
        return self.state.sequences.setval(name, value, called, self.executor.conn)

    def relation_oid(self, name: str) -> int | None:
        assert self.executor is not None
        return catalog.relation_oid(self.executor.conn, name)

    def index_definition(self, oid: int) -> str | None:
        assert self.executor is not None
        return catalog.index_definition(self.executor.conn, oid)

    # -- types ------------------------------------------------------------------------------

    def _columns_of(self, table: str) -> list[tuple[str, str]] | None:
        assert self.executor is not None
        return catalog.table_columns(self.executor.conn, table)

    def _translate(self, text: str, simple: bool = False) -> Any:
        """The statements of `text` (with simple=True: and the literal values made parameters)."""
        limit = self.state.config.statement_max_bytes
        if len(text) > limit:
            raise PgError(
                PROGRAM_LIMIT_EXCEEDED,
                f"statement too long: {len(text)} characters, the limit is {limit}",
                hint="Send large data as parameters or with COPY.",
            )
        if simple:
            return self.state.translator.translate_simple(text)
        return self.state.translator.translate(text)

    def _prepare(self, name: str, text: str, param_oids: tuple[int, ...]) -> list[Prepared]:
        stmts = self._translate(text)
        if len(stmts) > 1:
            raise PgError(SYNTAX_ERROR, "cannot insert multiple commands into a prepared statement")
        return [self._typed(name, text, st, param_oids) for st in stmts]

    def _typed(
        self, name: str, text: str, st: k.Statement, param_oids: tuple[int, ...]
    ) -> Prepared:
        gen = self.state.schema_generation
        if st.kind == k.FETCH:  # its columns are its cursor's: never cached
            cursor = self._portals.get(st.args[0])
            cols = cursor.prepared.columns if cursor is not None and not st.args[2] else None
            return Prepared(name, text, st, (), cols, gen)
        key = st.text if not param_oids else f"{st.text}\0{param_oids}"
        hit = self._types.get(key)
        if hit is not None and hit.generation == gen:
            return (
                hit
                if not name
                else Prepared(name, text, hit.stmt, hit.param_oids, hit.columns, gen)
            )
        oids = list(param_oids[: st.nparams]) + [0] * max(0, st.nparams - len(param_oids))
        columns: list[infer.Column] | None = None
        if (st.kind in (k.SELECT, k.SHOW, k.COPY_TO) and st.ast is not None) or st.kind == k.SELECT:
            if st.ast is not None:
                inferred = infer.param_types(st.ast, st.nparams, self._columns_of)
                oids = [o or inferred[i] for i, o in enumerate(oids)]
                columns = infer.result_columns(st.ast, self._columns_of)
            if columns is None and st.kind == k.SELECT:
                columns = self._probe_columns(st)
        elif st.ast is not None and st.nparams:
            inferred = infer.param_types(st.ast, st.nparams, self._columns_of)
            oids = [o or inferred[i] for i, o in enumerate(oids)]
        if st.kind == k.SHOW:
            columns = [infer.Column(self.settings.key(st.args[0]).replace(" ", "_"), res.TEXT)]
        p = Prepared(name, text, st, tuple(oids), columns, gen)
        if len(self._types) > 512:
            self._types.clear()
        self._types[key] = p
        return p

    def _probe_columns(self, st: k.Statement) -> list[infer.Column]:
        """Column names from SQLite itself: run the query with NULL parameters, read no row."""
        assert self.executor is not None
        try:
            cur = self.executor.conn.execute(st.sql[-1], [None] * st.nparams)
            desc = cur.description or ()
            cur.close()
        except sqlite3.Error:
            return []
        return [infer.Column(d[0], 0) for d in desc]

    # -- simple query -----------------------------------------------------------------------

    def _query(self, msg: m.Query) -> None:
        if self.executor is not None:
            self.executor.cancel_requested = False
        try:
            stmts, literals = self._translate(msg.sql, simple=True)
        except PgError as e:
            self._error(e)
            self._ready()
            return
        if not stmts:
            self._out.append(be.EMPTY_QUERY_RESPONSE)
            self._ready()
            return
        self._implicit = len(stmts) > 1 and self.sm.status == ss.IDLE
        for st in stmts:
            try:
                # typed just before it runs: an earlier statement may have created its table
                p = self._typed("", msg.sql, st, ())
                self._run(p, Portal(p, literals, ()), 0, describe=True)
            except PgError as e:
                if e.fatal:
                    raise
                self._error(e)
                break
            if self.sm.phase == ss.COPY_IN:
                return  # ReadyForQuery comes after CopyDone
        self._end_implicit()
        self._ready()

    def _end_implicit(self) -> None:
        if self._implicit:
            self._implicit = False
            ex = self.executor
            if ex is not None and self.sm.status == ss.IDLE and ex.begun:
                ex.commit()
                self.settings.end_transaction()

    # -- extended query ---------------------------------------------------------------------

    def _parse(self, msg: m.Parse) -> None:
        if msg.name and msg.name in self._statements:
            raise PgError(
                DUPLICATE_PREPARED_STATEMENT, f'prepared statement "{msg.name}" already exists'
            )
        try:
            prepared = self._prepare(msg.name, msg.query, msg.param_oids)
        except PgError as e:
            self._extended_error(e)
            return
        p = (
            prepared[0]
            if prepared
            else Prepared(msg.name, msg.query, k.Statement(k.EMPTY, msg.query), (), None, 0)
        )
        if not self.sm.allows(p.stmt.kind):
            self._extended_error(in_failed())
            return
        self.forget_native(msg.name)
        self._statements[msg.name] = p
        self._out.append(be.PARSE_COMPLETE)

    def _bind(self, msg: m.Bind) -> None:
        p = self._statements.get(msg.statement)
        if p is None:
            return self._extended_error(
                PgError(
                    INVALID_SQL_STATEMENT_NAME,
                    f'prepared statement "{msg.statement}" does not exist',
                )
            )
        if msg.portal and msg.portal in self._portals:
            return self._extended_error(
                PgError(DUPLICATE_CURSOR, f'portal "{msg.portal}" already exists')
            )
        if not self.sm.allows(p.stmt.kind):
            return self._extended_error(in_failed())
        if len(msg.params) != p.stmt.nparams:
            return self._extended_error(
                PgError(
                    PROGRAM_LIMIT_EXCEEDED,
                    PROTOCOL_VIOLATION,
                    f'bind message supplies {len(msg.params)} parameters, but prepared statement "{msg.statement}" requires {p.stmt.nparams}',
                )
            )
        try:
            params = res.decode_params(msg.params, p.param_oids, msg.param_formats)
        except PgError as e:
            return self._extended_error(e)
        self._portals[msg.portal] = Portal(p, params, msg.result_formats)
        self._out.append(be.BIND_COMPLETE)

    def _describe(self, msg: m.Describe) -> None:
        if msg.kind == "S":
            p = self._statements.get(msg.name)
            if p is None:
                return self._extended_error(
                    PgError(
                        INVALID_SQL_STATEMENT_NAME,
                        f'prepared statement "{msg.name}" does not exist',
                    )
                )
            self._out.append(
                be.encode(m.ParameterDescription(tuple(o or res.TEXT for o in p.param_oids)))
            )
            self._out.append(p.describe(())[0] if p.columns else be.NO_DATA)
            return
        portal = self._portals.get(msg.name)
        if portal is None:
            return self._extended_error(
                PgError(INVALID_CURSOR_NAME, f'portal "{msg.name}" does not exist')
            )
        p = portal.prepared
        if not p.columns:
            self._out.append(be.NO_DATA)
            return
        if p.stmt.kind == k.SELECT and any(c.oid == 0 for c in p.columns) and portal.cursor is None:
            try:
                self._start(portal)  # types from the first row: run now, Execute continues
            except PgError as e:
                return self._extended_error(e)
        self._out.append(portal.prepared.describe(portal.formats)[0])

    def _execute(self, msg: m.Execute) -> None:
        portal = self._portals.get(msg.portal)
        if portal is None:
            return self._extended_error(
                PgError(INVALID_CURSOR_NAME, f'portal "{msg.portal}" does not exist')
            )
        if self.executor is not None and portal.cursor is None:
            self.executor.cancel_requested = False
        if self.sm.status == ss.IDLE:
            # Outside a block, PostgreSQL runs everything up to Sync as one implicit transaction:
            # committed at Sync, rolled back with the first error (psycopg's pipelines rely on it).
            self._implicit = True
        try:
            self._run(portal.prepared, portal, msg.max_rows, describe=False)
        except PgError as e:
            if e.fatal:
                raise
            self._extended_error(e)

    def _close(self, msg: m.Close) -> None:
        if msg.kind == "S":
            self._statements.pop(msg.name, None)
            self.forget_native(msg.name)
        else:
            portal = self._portals.pop(msg.name, None)
            if portal is not None and portal.cursor is not None:
                portal.cursor.close()
        self._out.append(be.CLOSE_COMPLETE)

    def _sync(self, msg: m.Sync) -> None:
        self._skip_to_sync = False
        self._portals.pop("", None)
        try:
            self._end_implicit()  # the extended protocol's implicit transaction ends here
        except PgError as e:
            if e.fatal:
                raise
            self._error(e)
        self._ready()

    def _flush(self, msg: m.Flush) -> None:
        pass  # every receive() returns all it has: nothing is held back

    def _terminate(self, msg: m.Terminate) -> None:
        self.close()

    def _ignore(self, msg: Any) -> None:
        pass  # CopyData/CopyDone/CopyFail outside COPY are ignored, as the protocol says

    def _extended_error(self, e: PgError) -> None:
        self._error(e)
        self._skip_to_sync = True

    # -- running one statement --------------------------------------------------------------

    def _run(self, p: Prepared, portal: Portal, max_rows: int, describe: bool) -> None:
        """Run a statement (simple query: describe=True sends RowDescription first)."""
        st = p.stmt
        kind = st.kind
        sm = self.sm
        if not sm.allows(kind):
            raise in_failed()
        if kind == k.SELECT or kind == k.DML or kind == k.DDL:
            self._run_sql(p, portal, max_rows, describe)
            return
        handler = STATEMENT_HANDLERS.get(kind)
        if handler is None:
            raise PgError(FEATURE_NOT_SUPPORTED, f"{kind} is not supported")
        handler(self, p, portal, describe)

    def _in_block(self) -> bool:
        return self.sm.status != ss.IDLE or self._implicit

    def _start(self, portal: Portal) -> None:
        ex = self.executor
        assert ex is not None
        p = portal.prepared
        st = p.stmt
        in_block = self._in_block()
        cur = ex.run(st, portal.params, in_block)
        portal.cursor = cur
        if st.writes and not in_block:
            try:
                portal.pending = cur.fetchall() if st.kind == k.SELECT else []
            except sqlite3.Error as e:
                raise self._mapped(e) from None
            finally:
                ex.release_after_autocommit()
        elif st.kind == k.SELECT and p.columns and any(c.oid == 0 for c in p.columns):
            try:
                portal.pending = cur.fetchmany(64)
            except sqlite3.Error as e:
                raise self._mapped(e) from None
            self._type_from_rows(portal)

    def _type_from_rows(self, portal: Portal) -> None:
        p = portal.prepared
        assert p.columns is not None
        row = portal.pending[0] if portal.pending else None
        cols = [
            c
            if c.oid
            else infer.Column(
                c.name,
                res.oid_of_value(row[i])
                if row is not None and i < len(row) and row[i] is not None
                else res.TEXT,
                c.table,
            )
            for i, c in enumerate(p.columns)
        ]
        portal.prepared = Prepared(p.name, p.text, p.stmt, p.param_oids, cols, p.generation)

    def _mapped(self, e: sqlite3.Error) -> PgError:
        from sqlserver.storage import map_error

        return map_error(e, self.function_error)

    def _run_sql(self, p: Prepared, portal: Portal, max_rows: int, describe: bool) -> None:
        st = p.stmt
        if portal.cursor is None and not portal.done:
            self._start(portal)
        cur = portal.cursor
        assert cur is not None
        out = self._out
        if st.kind != k.SELECT:
            portal.done = True
            n = cur.rowcount if cur.rowcount >= 0 else 0
            out.append(
                be.command_complete(
                    f"INSERT 0 {n}"
                    if st.tag == "INSERT"
                    else f"{st.tag} {n}"
                    if st.tag in ("UPDATE", "DELETE")
                    else st.tag
                )
            )
            return
        prepared = portal.prepared
        if describe:
            if prepared.columns is not None and not prepared.columns and cur.description:
                prepared = portal.prepared = Prepared(
                    p.name,
                    p.text,
                    st,
                    p.param_oids,
                    [infer.Column(d[0], 0) for d in cur.description],
                    p.generation,
                )
            if (
                prepared.columns
                and any(c.oid == 0 for c in prepared.columns)
                and not portal.pending
            ):
                try:
                    portal.pending = cur.fetchmany(64)
                except sqlite3.Error as e:
                    raise self._mapped(e) from None
                self._type_from_rows(portal)
                prepared = portal.prepared
        desc, encs = prepared.describe(portal.formats)
        if describe:
            out.append(desc)
        rows, more = self._take(portal, max_rows)
        data_row = be.data_row
        for row in rows:
            out.append(
                data_row([None if v is None else enc(v) for enc, v in zip(encs, row, strict=False)])
            )
        portal.rows_sent += len(rows)
        if more:
            out.append(be.PORTAL_SUSPENDED)
            return
        portal.done = True
        tag = st.tag
        n = portal.rows_sent
        out.append(be.command_complete(f"INSERT 0 {n}" if tag == "INSERT" else f"{tag} {n}"))

    def _take(self, portal: Portal, max_rows: int) -> tuple[list[Any], bool]:
        """Up to max_rows (0: all) of a started portal's rows, and whether more remain."""
        cur = portal.cursor
        assert cur is not None
        try:
            if max_rows <= 0:
                rows = portal.pending + cur.fetchall() if portal.pending else cur.fetchall()
                portal.pending = []
                return rows, False
            rows = portal.pending[:max_rows]
            portal.pending = portal.pending[max_rows:]
            if len(rows) < max_rows:
                rows += cur.fetchmany(max_rows - len(rows))
            if not portal.pending:
                portal.pending = cur.fetchmany(1)
            return rows, bool(portal.pending)
        except sqlite3.Error as e:
            raise self._mapped(e) from None


native.arm([Session.receive, Session._fast, Session._cancelled, Session.forget_native])

_READY_HANDLERS: dict[type, Any] = {
    m.Query: Session._query,
    m.Parse: Session._parse,
    m.Bind: Session._bind,
    m.Describe: Session._describe,
    m.Execute: Session._execute,
    m.Close: Session._close,
    m.Sync: Session._sync,
    m.Flush: Session._flush,
    m.Terminate: Session._terminate,
    m.CopyData: Session._ignore,
    m.CopyDone: Session._ignore,
    m.CopyFail: Session._ignore,
}
