"""Turning away a client past --max-connections, the way PostgreSQL does.

PostgreSQL reads the startup packet before it refuses, so the client sees the reason:
`FATAL 53300 sorry, too many clients already`. SSLRequest/GSSENCRequest are answered `N` first (libpq
asks before the startup packet). A CancelRequest is not a session and must work even when the server is
full (that is when a runaway query most needs cancelling): it goes to a session like any cancel, which
routes it through the server state and closes without a reply.

Each rejection runs on its own short-lived, unmanaged thread (it runs no statement and takes no lock a
patch cares about) with a socket timeout, so a client that never sends its startup packet costs one
thread for at most REJECT_TIMEOUT_S and never holds up the acceptor.
"""

from __future__ import annotations

import logging
import socket
import threading

from sqlserver.server.contract import SessionFactory

log = logging.getLogger("sqlserver.server")

REJECT_TIMEOUT_S = 5.0
TOO_MANY_CLIENTS = "sorry, too many clients already"  # PostgreSQL's wording, which tools match on


def reject_later(sock: socket.socket, peer: str, state: SessionFactory) -> None:
    """Acceptor thread: hand the over-limit socket to a rejection thread and return at once."""
    threading.Thread(
        target=_reject, args=(sock, peer, state), name=f"sql-reject-{peer}", daemon=True
    ).start()


def _reject(sock: socket.socket, peer: str, state: SessionFactory) -> None:
    # Imported here: the acceptor (and the policy tests' line-protocol double) need no codec until a
    # client is turned away.
    from sqlserver.protocol import (
        SSL_REFUSED,
        CancelRequest,
        FrontendParser,
        GSSENCRequest,
        PgError,
        ProtocolViolation,
        SSLRequest,
        encode,
        encode_frontend,
    )
    from sqlserver.protocol.errors import FATAL, TOO_MANY_CONNECTIONS

    try:
        sock.settimeout(REJECT_TIMEOUT_S)
        parser = FrontendParser()
        while True:
            data = sock.recv(8192)
            if not data:
                return
            parser.feed(data)
            while (msg := parser.next()) is not None:
                if isinstance(msg, SSLRequest | GSSENCRequest):
                    sock.sendall(SSL_REFUSED)
                    continue
                if isinstance(msg, CancelRequest):
                    _cancel(encode_frontend(msg), peer, state)
                    return
                error = PgError(TOO_MANY_CONNECTIONS, TOO_MANY_CLIENTS, FATAL)
                sock.sendall(encode(error.to_message()))
                return
    except ProtocolViolation as exc:
        try:
            sock.sendall(encode(exc.to_message()))
        except OSError:
            pass
    except OSError:
        pass  # timeout or reset: the client gave up first
    finally:
        sock.close()


def _cancel(packet: bytes, peer: str, state: SessionFactory) -> None:
    # The session layer owns cancel routing (ServerState's registry): give a fresh session the packet.
    session = state.new_session(peer)
    try:
        session.receive(packet)
    except Exception:
        log.exception("CancelRequest from %s failed", peer)
    finally:
        session.close()
