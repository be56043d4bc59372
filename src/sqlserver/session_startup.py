"""Startup and authentication of a session: SSLRequest, StartupMessage, CancelRequest, the
password methods (cleartext, md5, SCRAM-SHA-256 through the codec's auth helpers), and what a
session sends once it is in (AuthenticationOk, ParameterStatus, BackendKeyData, ReadyForQuery).

Part of Session (session.py), split off to keep files small: functions of the session; its methods run on the session's
thread like the rest of Session.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from sqlserver import catalog, functions, native
from sqlserver.executor import Executor
from sqlserver.protocol import backend as be
from sqlserver.protocol import messages as m
from sqlserver.protocol.auth import ScramServer, md5_verify
from sqlserver.protocol.errors import (
    FATAL,
    FEATURE_NOT_SUPPORTED,
    INVALID_AUTHORIZATION_SPECIFICATION,
    INVALID_PASSWORD,
    TOO_MANY_CONNECTIONS,
    PgError,
    ProtocolViolation,
)
from sqlserver.protocol.frontend import parse_password, parse_sasl_initial, parse_sasl_response
from sqlserver.settings import Settings

if TYPE_CHECKING:
    from sqlserver.session import Session


# -- startup and authentication ---------------------------------------------------------


def startup_message(session: Session, msg: Any) -> None:
    if isinstance(msg, m.SSLRequest | m.GSSENCRequest):
        session._out.append(b"N")  # no TLS, no GSS encryption: the client goes on in clear
        return
    if isinstance(msg, m.CancelRequest):
        session.sm.on("cancel_request")
        session.state.cancel(msg.pid, msg.key)
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
    session.user = user
    session.database = params.get("database") or user
    session.settings = Settings(user, session.state.config.max_connections)
    for name, value in params.items():
        if name in ("user", "database", "replication"):
            continue
        if name == "options":
            startup_options(session, value)
            continue
        if not name.startswith("_pq_."):
            try:
                session.settings.set(name, value, startup=True)
            except PgError as e:
                raise PgError(e.sqlstate, e.message, FATAL) from None
    if session.state.session_count() >= session.state.config.max_connections:
        raise PgError(TOO_MANY_CONNECTIONS, "sorry, too many clients already", FATAL)
    method = session.state.config.auth
    if method == "trust":
        session.sm.on("startup_trust")
        authenticated(session)
        return
    session.sm.on("startup_password")
    if method == "password":
        session._auth = ("password", None)
        session._out.append(be.encode(m.AuthenticationCleartextPassword()))
    elif method == "md5":
        salt = os.urandom(4)
        session._auth = ("md5", salt)
        session._out.append(be.encode(m.AuthenticationMD5Password(salt)))
    else:
        # an unknown user still goes through a whole (doomed) exchange: nothing tells it apart
        session._auth = ("scram", ScramServer(session.state.passwords.get(user), user))
        session._out.append(be.encode(m.AuthenticationSASL(("SCRAM-SHA-256",))))


def startup_options(session: Session, options: str) -> None:
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
            session.settings.set(name.replace("-", "_"), value, startup=True)
        i += 1


def auth_message(session: Session, msg: Any) -> None:
    if not isinstance(msg, m.PasswordMessage):
        raise ProtocolViolation(f"expected a password message, got {type(msg).__name__}")
    kind, data = session._auth
    stored = session.state.passwords.get(session.user)
    fail = PgError(
        INVALID_PASSWORD, f'password authentication failed for user "{session.user}"', FATAL
    )
    if kind == "password":
        if stored is None or parse_password(msg.data) != stored:
            raise fail
    elif kind == "md5":
        if stored is None or not md5_verify(session.user, stored, data, parse_password(msg.data)):
            raise fail
    elif not session._scram_started:
        mechanism, initial = parse_sasl_initial(msg.data)
        if mechanism != "SCRAM-SHA-256":
            raise PgError(
                INVALID_AUTHORIZATION_SPECIFICATION,
                f"SASL mechanism {mechanism!r} is not supported; use SCRAM-SHA-256",
                FATAL,
            )
        session._scram_started = True
        session.sm.on("auth_continue")
        session._out.append(be.encode(m.AuthenticationSASLContinue(data.first(initial))))
        return
    else:
        final = data.final(parse_sasl_response(msg.data))  # PgError 28P01 (FATAL) if wrong
        session._out.append(be.encode(m.AuthenticationSASLFinal(final)))
    session.sm.on("auth_ok")
    authenticated(session)


def authenticated(session: Session) -> None:
    conn = session.state.open_connection()
    session.executor = Executor(session.state, conn, session)
    functions.install(conn, session)
    catalog.install(conn)
    session.native = native.open_native(conn)  # the C fast path, when built (native.py)
    session.state.register(session)
    session._registered = True
    out = session._out
    out.append(be.AUTH_OK)
    for name, value in session.settings.reported():
        out.append(be.encode(m.ParameterStatus(name, value)))
    out.append(be.encode(m.BackendKeyData(session.backend_pid, session.secret_key)))
    session._ready()
