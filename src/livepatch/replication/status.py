"""`livepatch replication status`: a Unix socket on which a replicating server answers one JSON line.

The server side (`StatusServer`) accepts a connection, writes `json.dumps(status())` and a newline,
and closes: no request is read, so nothing a peer sends can do anything. The socket is created with
mode 0600 (only the server's user, and root, can connect). `query` is the client side.

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


class StatusServer:
    def __init__(self, path: str, status: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._status = status
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
                conn.settimeout(2.0)
                conn.sendall(json.dumps(self._status()).encode() + b"\n")
            except Exception as exc:  # a status that cannot be sent never takes the server down
                log.info("replication status not sent: %s", exc)
            finally:
                conn.close()


class StatusUnavailable(Exception):
    """Nothing answers on the status socket (the message says what to check)."""


def query(path: str, timeout: float = 5.0) -> dict[str, Any]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
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
