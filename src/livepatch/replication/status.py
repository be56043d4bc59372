"""`livepatch replication status` and `livepatch switchover`: a Unix socket on which a replicating
server answers one JSON line.

The server side (`StatusServer`) accepts a connection, reads one request line (at most
MAX_REQUEST_BYTES, within REQUEST_TIMEOUT_S; nothing, or `status`, asks for the status), writes
`json.dumps(answer)` and a newline, and closes. The only other requests are the actions the server
registered (`switchover`); anything else is answered `{"ok": false, "error": ...}`. The socket is
created with mode 0600 (only the server's user, and root, can connect). `query` is the client side.

Concurrency: one daemon thread accepts and answers; `status` is called on that thread and must be
safe to call from any thread (Primary.status and Standby.status read counters only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("livepatch.replication")

MAX_REPLY_BYTES = 1 << 20
MAX_REQUEST_BYTES = 64
REQUEST_TIMEOUT_S = 1.0


class StatusServer:
    def __init__(self, path: str, status: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._status = status
        # request -> action (any thread: the status thread calls it and sends what it returns)
        self.actions: dict[str, Callable[[], dict[str, Any]]] = {}
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                os.unlink(self.path)  # a stale socket of an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(self.path)
        finally:
            os.umask(old)
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(
            target=self._serve, name="livepatch-replication-status", daemon=True
        )
        self._thread.start()

    def set_status(self, status: Callable[[], dict[str, Any]]) -> None:
        """Answer with another source from now on (a standby that took over is a primary)."""
        self._status = status

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _serve(self) -> None:
        while True:
            sock = self._sock
            if sock is None:
                return
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(REQUEST_TIMEOUT_S)
                answer = self._answer(_read_request(conn))
                conn.settimeout(2.0)
                conn.sendall(json.dumps(answer).encode() + b"\n")
            except Exception as exc:  # a status that cannot be sent never takes the server down
                log.info("replication status not sent: %s", exc)
            finally:
                conn.close()

    def _answer(self, request: str) -> dict[str, Any]:
        if request in ("", "status"):
            return self._status()
        action = self.actions.get(request)
        if action is None:
            known = ", ".join(["status", *sorted(self.actions)])
            return {"ok": False, "error": f"this server does not do {request!r} (it does {known})"}
        return action()


def _read_request(conn: socket.socket) -> str:
    """The request line ('' if the peer sent none in time: the status)."""
    data = b""
    try:
        while b"\n" not in data and len(data) < MAX_REQUEST_BYTES:
            chunk = conn.recv(MAX_REQUEST_BYTES)
            if not chunk:
                break
            data += chunk
    except (TimeoutError, OSError):
        pass
    return data.split(b"\n", 1)[0][:MAX_REQUEST_BYTES].decode("ascii", "replace").strip()


class StatusUnavailable(Exception):
    """Nothing answers on the status socket (the message says what to check)."""


def query(path: str, timeout: float = 5.0, request: str = "status") -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(request.encode() + b"\n")
        data = b""
        while len(data) < MAX_REPLY_BYTES:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except FileNotFoundError:
        raise StatusUnavailable(
            f"no status socket at {path}: start the server with --replication-socket {path}"
        ) from None
    except OSError as exc:
        raise StatusUnavailable(f"cannot read the replication status from {path}: {exc}") from None
    finally:
        sock.close()
    try:
        result = json.loads(data)
    except ValueError:
        raise StatusUnavailable(f"{path} did not answer with a replication status") from None
    if not isinstance(result, dict):
        raise StatusUnavailable(f"{path} did not answer with a replication status")
    return result
