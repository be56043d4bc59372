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
  each Execute commits on its own (a difference from PostgreSQL, see docs/sqlserver.md).
* fastpath.py answers the hot Bind/Describe/Execute/Sync burst of an already-prepared statement
  without building message objects; whatever it does not recognise it leaves to this general path.
* Every error is a PgError (codec's), turned into an ErrorResponse once, in _error(). A fatal one
  (or a broken byte stream) closes this session only.

Concurrency: a Session is driven by one thread at a time (the network layer's); cancel() may be
called from any thread (it only sets a flag and interrupts SQLite).
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any

from sqlserver import catalog, functions, infer
from sqlserver import results as res
from sqlserver import session_states as ss
from sqlserver import statement as k
from sqlserver.copy import CopyIn, format_header, format_row
from sqlserver.executor import Executor
from sqlserver.fastpath import Burst, parse_burst
from sqlserver.protocol import backend as be
from sqlserver.protocol import messages as m
from sqlserver.protocol.auth import ScramServer, md5_verify
from sqlserver.protocol.errors import (
    DUPLICATE_CURSOR,
    DUPLICATE_PREPARED_STATEMENT,
    FATAL,
    FEATURE_NOT_SUPPORTED,
    IN_FAILED_SQL_TRANSACTION,
    INTERNAL_ERROR,
    INVALID_AUTHORIZATION_SPECIFICATION,
    INVALID_CURSOR_NAME,
    INVALID_PASSWORD,
    INVALID_SQL_STATEMENT_NAME,
    NO_ACTIVE_SQL_TRANSACTION,
    PROTOCOL_VIOLATION,
    QUERY_CANCELED,
    SYNTAX_ERROR,
    TOO_MANY_CONNECTIONS,
    PgError,
    ProtocolViolation,
)
from sqlserver.protocol.frontend import (
    FrontendParser,
    parse_password,
    parse_sasl_initial,
    parse_sasl_response,
)
from sqlserver.settings import Settings
from sqlserver.state import ServerState

log = logging.getLogger("sqlserver.session")

_NOTICE = "NOTICE"
_WARNING = "WARNING"


class Prepared:
    """A parsed statement: its translation, its types, and its encoded descriptions."""

    __slots__ = (
        "columns",
        "desc_cache",
        "fast",
        "generation",
        "name",
        "param_oids",
        "stmt",
        "text",
    )

    def __init__(
        self,
        name: str,
        text: str,
        stmt: k.Statement,
        param_oids: tuple[int, ...],
        columns: list[infer.Column] | None,
        generation: int,
    ) -> None:
        self.name = name
        self.text = text
        self.stmt = stmt
        self.param_oids = param_oids
        self.columns = columns  # None: not a row-returning statement
        self.generation = generation
        self.desc_cache: dict[tuple[int, ...], tuple[bytes, tuple[Any, ...]]] = {}
        # fast path (fastpath.py): None = never; False = only without Describe (types unknown)
        self.fast: bool | None = None
        if stmt.kind in (k.SELECT, k.DML) and stmt.sql:
            self.fast = not columns or all(c.oid for c in columns)

    def describe(self, formats: tuple[int, ...]) -> tuple[bytes, tuple[Any, ...]]:
        """(RowDescription bytes, per-column encoders) for these result formats; cached."""
        hit = self.desc_cache.get(formats)
        if hit is not None:
            return hit
        cols = self.columns or []
        n = len(cols)
        fmts = formats * n if len(formats) == 1 else (formats or (0,) * n)
        fields = []
        encs = []
        for c, f in zip(cols, fmts, strict=False):
            oid = c.oid or res.TEXT
            fields.append(m.FieldDescription(c.name, 0, 0, oid, res.type_size(oid), -1, f))
            encs.append(res.encoder(oid, bool(f)))
        out = (be.row_description(fields), tuple(encs))
        if len(self.desc_cache) < 8:
            self.desc_cache[formats] = out
        return out


class Portal:
    __slots__ = ("cursor", "done", "formats", "params", "pending", "prepared", "rows_sent")

    def __init__(self, prepared: Prepared, params: list[Any], formats: tuple[int, ...]) -> None:
        self.prepared = prepared
        self.params = params
        self.formats = formats
        self.cursor: sqlite3.Cursor | None = None
        self.pending: list[Any] = []  # rows fetched but not sent yet
        self.done = False
        self.rows_sent = 0


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
        self._implicit = False  # inside a multi-statement simple query's implicit transaction
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

    # -- the network layer's interface ------------------------------------------------------

    @property
    def status(self) -> str:
        return self.sm.status

    @property
    def closed(self) -> bool:
        return self.sm.phase == ss.CLOSED

    @property
    def idle(self) -> bool:
        return (
            self.sm.status == ss.IDLE and self.sm.phase == ss.READY and not self._parser.buffered()
        )

    def receive(self, data: bytes) -> bytes:
        """Handle `data` from the client; returns the bytes to send back (maybe empty)."""
        if self._fast_ok and not self._parser.buffered():
            burst = parse_burst(data)
            if burst is not None:
                fast = self._fast(burst)
                if fast is not None:
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
        self._fast_ok = self.sm.phase == ss.READY and not self._skip_to_sync
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
        out = self._out = [be.BIND_COMPLETE]
        self._portals.pop("", None)
        ex = self.executor
        assert ex is not None
        in_block = self.sm.status != ss.IDLE
        try:
            params = res.decode_params(raw, p.param_oids, pfmts) if raw else ()
            if p.columns:
                desc, encs = p.describe(rfmts)
                if describe:
                    out.append(desc)
                cur = ex.run(st, params, in_block)
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
                n = len(rows)
                out.append(
                    be.command_complete(f"INSERT 0 {n}" if st.tag == "INSERT" else f"{st.tag} {n}")
                )
            else:
                if describe:
                    out.append(be.NO_DATA)
                cur = ex.run(st, params, in_block)
                if not in_block:
                    ex.release_after_autocommit()
                n = cur.rowcount if cur.rowcount >= 0 else 0
                out.append(
                    be.command_complete(f"INSERT 0 {n}" if st.tag == "INSERT" else f"{st.tag} {n}")
                )
        except PgError as e:
            if e.fatal:
                raise
            self._error(e)  # the Execute failed: what followed it up to Sync is discarded
        out.append(be.ready_for_query(self.sm.status))
        return b"".join(out)

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
            self._copy_message(msg)
        elif phase == ss.STARTUP:
            self._startup_message(msg)
        elif phase == ss.AUTHENTICATING:
            self._auth_message(msg)

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

    # -- startup and authentication ---------------------------------------------------------

    def _startup_message(self, msg: Any) -> None:
        if isinstance(msg, m.SSLRequest | m.GSSENCRequest):
            self._out.append(b"N")  # no TLS, no GSS encryption: the client goes on in clear
            return
        if isinstance(msg, m.CancelRequest):
            self.sm.on("cancel_request")
            self.state.cancel(msg.pid, msg.key)
            return
        if not isinstance(msg, m.StartupMessage):
            raise ProtocolViolation(f"expected a startup message, got {type(msg).__name__}")
        if msg.major != 3:
            raise PgError(
                FEATURE_NOT_SUPPORTED,
                f"unsupported frontend protocol {msg.major}.{msg.minor}: sqlserver speaks 3.0",
                FATAL,
            )
        params = msg.params
        user = params.get("user")
        if not user:
            raise PgError(
                INVALID_AUTHORIZATION_SPECIFICATION,
                "no PostgreSQL user name specified in startup packet",
                FATAL,
            )
        self.user = user
        self.database = params.get("database") or user
        self.settings = Settings(user, self.state.config.max_connections)
        for name, value in params.items():
            if name in ("user", "database", "replication"):
                continue
            if name == "options":
                self._startup_options(value)
                continue
            if not name.startswith("_pq_."):
                try:
                    self.settings.set(name, value, startup=True)
                except PgError as e:
                    raise PgError(e.sqlstate, e.message, FATAL) from None
        if self.state.session_count() >= self.state.config.max_connections:
            raise PgError(TOO_MANY_CONNECTIONS, "sorry, too many clients already", FATAL)
        method = self.state.config.auth
        if method == "trust":
            self.sm.on("startup_trust")
            self._authenticated()
            return
        self.sm.on("startup_password")
        if method == "password":
            self._auth = ("password", None)
            self._out.append(be.encode(m.AuthenticationCleartextPassword()))
        elif method == "md5":
            salt = os.urandom(4)
            self._auth = ("md5", salt)
            self._out.append(be.encode(m.AuthenticationMD5Password(salt)))
        else:
            # an unknown user still goes through a whole (doomed) exchange: nothing tells it apart
            self._auth = ("scram", ScramServer(self.state.passwords.get(user), user))
            self._out.append(be.encode(m.AuthenticationSASL(("SCRAM-SHA-256",))))

    def _startup_options(self, options: str) -> None:
        words = options.replace("\\ ", "\0").split()
        i = 0
        while i < len(words):
            w = words[i].replace("\0", " ")
            if w == "-c" and i + 1 < len(words):
                w = words[i + 1].replace("\0", " ")
                i += 1
            elif w.startswith("-c") or w.startswith("--"):
                w = w[2:]
            name, _, value = w.partition("=")
            if name:
                self.settings.set(name.replace("-", "_"), value, startup=True)
            i += 1

    def _auth_message(self, msg: Any) -> None:
        if not isinstance(msg, m.PasswordMessage):
            raise ProtocolViolation(f"expected a password message, got {type(msg).__name__}")
        kind, data = self._auth
        stored = self.state.passwords.get(self.user)
        fail = PgError(
            INVALID_PASSWORD, f'password authentication failed for user "{self.user}"', FATAL
        )
        if kind == "password":
            if stored is None or parse_password(msg.data) != stored:
                raise fail
        elif kind == "md5":
            if stored is None or not md5_verify(self.user, stored, data, parse_password(msg.data)):
                raise fail
        elif not self._scram_started:
            mechanism, initial = parse_sasl_initial(msg.data)
            if mechanism != "SCRAM-SHA-256":
                raise PgError(
                    INVALID_AUTHORIZATION_SPECIFICATION,
                    f"SASL mechanism {mechanism!r} is not supported; use SCRAM-SHA-256",
                    FATAL,
                )
            self._scram_started = True
            self.sm.on("auth_continue")
            self._out.append(be.encode(m.AuthenticationSASLContinue(data.first(initial))))
            return
        else:
            final = data.final(parse_sasl_response(msg.data))  # PgError 28P01 (FATAL) if wrong
            self._out.append(be.encode(m.AuthenticationSASLFinal(final)))
        self.sm.on("auth_ok")
        self._authenticated()

    def _authenticated(self) -> None:
        conn = self.state.open_connection()
        self.executor = Executor(self.state, conn, self)
        functions.install(conn, self)
        catalog.install(conn)
        self.state.register(self)
        self._registered = True
        out = self._out
        out.append(be.AUTH_OK)
        for name, value in self.settings.reported():
            out.append(be.encode(m.ParameterStatus(name, value)))
        out.append(be.encode(m.BackendKeyData(self.backend_pid, self.secret_key)))
        self._ready()

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

    # -- types ------------------------------------------------------------------------------

    def _columns_of(self, table: str) -> list[tuple[str, str]] | None:
        assert self.executor is not None
        return catalog.table_columns(self.executor.conn, table)

    def _prepare(self, name: str, text: str, param_oids: tuple[int, ...]) -> list[Prepared]:
        stmts = self.state.translator.translate(text)
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
            stmts = self.state.translator.translate(msg.sql)
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
                self._run(p, Portal(p, [], ()), 0, describe=True)
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
            self._extended_error(_in_failed())
            return
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
            return self._extended_error(_in_failed())
        if len(msg.params) != p.stmt.nparams:
            return self._extended_error(
                PgError(
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
        try:
            self._run(portal.prepared, portal, msg.max_rows, describe=False)
        except PgError as e:
            if e.fatal:
                raise
            self._extended_error(e)

    def _close(self, msg: m.Close) -> None:
        if msg.kind == "S":
            self._statements.pop(msg.name, None)
        else:
            portal = self._portals.pop(msg.name, None)
            if portal is not None and portal.cursor is not None:
                portal.cursor.close()
        self._out.append(be.CLOSE_COMPLETE)

    def _sync(self, msg: m.Sync) -> None:
        self._skip_to_sync = False
        self._portals.pop("", None)
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
            raise _in_failed()
        if kind == k.SELECT or kind == k.DML or kind == k.DDL:
            self._run_sql(p, portal, max_rows, describe)
            return
        handler = _STATEMENT_HANDLERS.get(kind)
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

    # -- statements the session handles itself ----------------------------------------------

    def _tx_begin(self, p: Prepared, portal: Portal, describe: bool) -> None:
        if self.sm.status != ss.IDLE:
            self._notice("there is already a transaction in progress", "25001")
        self._implicit = False
        self.sm.tx("begin")
        self._out.append(be.command_complete("BEGIN"))

    def _tx_commit(self, p: Prepared, portal: Portal, describe: bool) -> None:
        ex = self.executor
        assert ex is not None
        status = self.sm.status
        if status == ss.IDLE and not self._implicit:
            self._notice("there is no transaction in progress", NO_ACTIVE_SQL_TRANSACTION)
        self._close_portals(portal)
        if status == ss.FAILED:
            ex.rollback()
            tag = "ROLLBACK"
        else:
            ex.commit()
            tag = "COMMIT"
        self._implicit = False
        self.settings.end_transaction()
        self.sm.tx("commit")
        self._out.append(be.command_complete(tag))

    def _tx_rollback(self, p: Prepared, portal: Portal, describe: bool) -> None:
        ex = self.executor
        assert ex is not None
        if self.sm.status == ss.IDLE and not self._implicit:
            self._notice("there is no transaction in progress", NO_ACTIVE_SQL_TRANSACTION)
        self._close_portals(portal)
        ex.rollback()
        self._implicit = False
        self.settings.end_transaction()
        self.sm.tx("rollback")
        self._out.append(be.command_complete("ROLLBACK"))

    def _close_portals(self, keep: Portal) -> None:
        for name, portal in list(self._portals.items()):
            if portal is not keep and portal.cursor is not None and name not in self._holdable:
                portal.cursor.close()
                del self._portals[name]

    def _savepoint(self, p: Prepared, portal: Portal, describe: bool) -> None:
        ex = self.executor
        assert ex is not None
        kind = p.stmt.kind
        if not self._in_block():
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
            self.sm.tx("rollback_to")
        self._out.append(be.command_complete(p.stmt.tag))

    def _set(self, p: Prepared, portal: Portal, describe: bool) -> None:
        name, value, local = p.stmt.args
        self.set_setting(name, value, local)
        self._out.append(be.command_complete("SET"))

    def _reset(self, p: Prepared, portal: Portal, describe: bool) -> None:
        for report in self.settings.reset(p.stmt.args[0]):
            self._out.append(be.encode(m.ParameterStatus(*report)))
        self._out.append(be.command_complete("RESET"))

    def _show(self, p: Prepared, portal: Portal, describe: bool) -> None:
        name = p.stmt.args[0]
        if name == "all":
            raise PgError(
                FEATURE_NOT_SUPPORTED,
                "SHOW ALL is not supported; SELECT name, setting FROM pg_settings",
            )
        value = self.settings.get(name)
        desc, encs = p.describe(portal.formats)
        if describe:
            self._out.append(desc)
        self._out.append(be.data_row([encs[0](value)]))
        self._out.append(be.command_complete("SHOW"))

    def _noop(self, p: Prepared, portal: Portal, describe: bool) -> None:
        self._out.append(be.command_complete(p.stmt.tag))

    def _empty(self, p: Prepared, portal: Portal, describe: bool) -> None:
        self._out.append(be.EMPTY_QUERY_RESPONSE)

    def _sequence_ddl(self, p: Prepared, portal: Portal, describe: bool) -> None:
        ex = self.executor
        assert ex is not None
        st = p.stmt
        in_block = self._in_block()
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
                self.state.sequences.forget(name)
            else:
                for name in st.args:
                    ex.execute_plain("DELETE FROM _lp_sequences WHERE name = ?", (name,))
                    self.state.sequences.forget(name)
        finally:
            if not in_block:
                ex.release_write()
        self._out.append(be.command_complete(st.tag))

    # -- SQL-level cursors and prepared statements -------------------------------------------

    def _declare(self, p: Prepared, portal: Portal, describe: bool) -> None:
        name, hold, binary = p.stmt.args
        if not hold and not self._in_block():
            raise PgError(
                NO_ACTIVE_SQL_TRANSACTION, "DECLARE CURSOR can only be used in transaction blocks"
            )
        if name in self._portals:
            raise PgError(DUPLICATE_CURSOR, f'cursor "{name}" already exists')
        st = p.stmt
        query = k.Statement(
            k.SELECT, f"{st.text}\0cursor", st.sql, "SELECT", st.nparams, False, (), st.ast
        )
        inner = self._typed("", st.text, query, p.param_oids)
        cursor = Portal(inner, portal.params, (1,) if binary else ())
        self._start(cursor)
        if hold:  # a holdable cursor outlives its transaction: materialize it now
            cursor.pending = self._take(cursor, 0)[0]
            self._holdable.add(name)
        self._portals[name] = cursor
        self._out.append(be.command_complete("DECLARE CURSOR"))

    def _fetch(self, p: Prepared, portal: Portal, describe: bool) -> None:
        name, count, move = p.stmt.args
        cursor = self._portals.get(name)
        if cursor is None or cursor.cursor is None:
            raise PgError(INVALID_CURSOR_NAME, f'cursor "{name}" does not exist')
        rows = [] if cursor.done else self._take(cursor, count or 0)[0]
        if count is None or len(rows) < count:
            cursor.done = True
        out = self._out
        if not move:
            desc, encs = cursor.prepared.describe(portal.formats or cursor.formats)
            if describe:
                out.append(desc)
            data_row = be.data_row
            for row in rows:
                out.append(
                    data_row(
                        [None if v is None else enc(v) for enc, v in zip(encs, row, strict=False)]
                    )
                )
        out.append(be.command_complete(f"{p.stmt.tag} {len(rows)}"))

    def _close_cursor(self, p: Prepared, portal: Portal, describe: bool) -> None:
        name = p.stmt.args[0]
        names = [n for n in self._portals if n] if name is None else [name]
        for n in names:
            cursor = self._portals.pop(n, None)
            if cursor is None:
                raise PgError(INVALID_CURSOR_NAME, f'cursor "{n}" does not exist')
            self._holdable.discard(n)
            if cursor.cursor is not None:
                cursor.cursor.close()
        self._out.append(be.command_complete(p.stmt.tag))

    def _deallocate(self, p: Prepared, portal: Portal, describe: bool) -> None:
        name = p.stmt.args[0]
        if name is None:
            self._statements = {n: s for n, s in self._statements.items() if not n}
        elif self._statements.pop(name, None) is None:
            raise PgError(INVALID_SQL_STATEMENT_NAME, f'prepared statement "{name}" does not exist')
        self._out.append(be.command_complete(p.stmt.tag))

    # -- COPY -------------------------------------------------------------------------------

    def _copy_from(self, p: Prepared, portal: Portal, describe: bool) -> None:
        ex = self.executor
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
        self._copy = CopyIn(spec, ex.conn, names)
        self.sm.on("copy_in")
        n = len(names)
        self._out.append(be.encode(m.CopyInResponse(0, (0,) * n)))

    def _copy_message(self, msg: Any) -> None:
        copy = self._copy
        ex = self.executor
        assert copy is not None and ex is not None
        if isinstance(msg, m.Flush | m.Sync):
            return  # ignored during COPY, as PostgreSQL does
        try:
            if isinstance(msg, m.CopyData):
                copy.feed(msg.data)
                return
            if isinstance(msg, m.CopyDone):
                count = copy.finish()
                self._copy = None
                self.sm.on("copy_done")
                if self.sm.status == ss.IDLE and not self._implicit:
                    ex.commit()
                self._out.append(be.command_complete(f"COPY {count}"))
                self._after_copy()
                return
            if isinstance(msg, m.CopyFail):
                raise PgError(QUERY_CANCELED, f"COPY from stdin failed: {msg.message}")
            raise ProtocolViolation(
                f"unexpected message {type(msg).__name__} during COPY from stdin"
            )
        except sqlite3.Error as e:
            err: PgError = self._mapped(e)
        except PgError as e:
            if e.fatal:
                raise
            err = e
        self._copy = None
        self.sm.on("copy_fail")
        self._error(err)
        self._after_copy()

    def _after_copy(self) -> None:
        if self._implicit and self.sm.status == ss.IDLE:
            self._end_implicit()
        self._ready()

    def _copy_to(self, p: Prepared, portal: Portal, describe: bool) -> None:
        ex = self.executor
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
        oids = self._copy_oids(spec.table, names)
        encs = [res.encoder(o, False) for o in oids]
        out = self._out
        out.append(be.encode(m.CopyOutResponse(0, (0,) * len(names))))
        if spec.header:
            out.append(be.encode(m.CopyData(format_header(names, spec))))
        n = 0
        try:
            for row in cur:
                vals = [
                    None if v is None else e(v).decode() for e, v in zip(encs, row, strict=False)
                ]
                out.append(be.encode(m.CopyData(format_row(vals, spec))))
                n += 1
        except sqlite3.Error as e:
            raise self._mapped(e) from None
        out.append(be.COPY_DONE)
        out.append(be.command_complete(f"COPY {n}"))

    def _copy_oids(self, table: str | None, names: list[str]) -> list[int]:
        decl = dict(self._columns_of(table) or []) if table else {}
        return [res.declared_oid(decl.get(n)) or res.TEXT for n in names]


def _in_failed() -> PgError:
    return PgError(
        IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )


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
_STATEMENT_HANDLERS: dict[str, Any] = {
    k.BEGIN: Session._tx_begin,
    k.COMMIT: Session._tx_commit,
    k.ROLLBACK: Session._tx_rollback,
    k.SAVEPOINT: Session._savepoint,
    k.RELEASE: Session._savepoint,
    k.ROLLBACK_TO: Session._savepoint,
    k.SET: Session._set,
    k.RESET: Session._reset,
    k.SHOW: Session._show,
    k.NOOP: Session._noop,
    k.EMPTY: Session._empty,
    k.CREATE_SEQUENCE: Session._sequence_ddl,
    k.DROP_SEQUENCE: Session._sequence_ddl,
    k.DECLARE: Session._declare,
    k.FETCH: Session._fetch,
    k.CLOSE_CURSOR: Session._close_cursor,
    k.DEALLOCATE: Session._deallocate,
    k.COPY_FROM: Session._copy_from,
    k.COPY_TO: Session._copy_to,
}
