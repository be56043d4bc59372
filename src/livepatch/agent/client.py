"""A client for the agent's control socket (used by the `livepatch` command; usable by harnesses).

Every call opens a connection, sends one request line and reads one reply line (protocol.py). Safe to
call from any thread; calls are independent.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from typing import Any

from livepatch.agent import protocol


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


class AgentUnreachable(Exception):
    """No agent answers on that socket (missing, refused, permission denied, timed out)."""


def request(socket_path: str, req: dict[str, Any], *, timeout: float = 60.0) -> dict[str, Any]:
    """Send `req`, return the decoded reply. Raises AgentUnreachable or protocol.ProtocolError."""
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
        except FileNotFoundError as exc:
            raise AgentUnreachable(f"no agent socket at {socket_path}") from exc
        except PermissionError as exc:
            raise AgentUnreachable(
                f"permission denied connecting to {socket_path} (the socket is mode 0600: run as the "
                "server's user or root)"
            ) from exc
        except (ConnectionRefusedError, NotADirectoryError) as exc:
            # a socket file whose server died, or a path that is not a socket at all
            what = "" if _is_socket(socket_path) else " (it is not a socket file)"
            raise AgentUnreachable(
                f"no server is listening on this socket (stale socket?): {socket_path}{what}; "
                "check that the server runs and listens on this path"
            ) from exc
        except OSError as exc:
            raise AgentUnreachable(
                f"cannot connect to {socket_path}: {exc.strerror or exc}"
            ) from exc
        try:
            sock.sendall(protocol.encode(req))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent refused early (e.g. request too large): its reply explains why
        try:
            line = protocol.read_line(sock, protocol.MAX_REPLY_BYTES, deadline)
        except TimeoutError as exc:
            raise AgentUnreachable(f"no reply from the agent within {timeout:.0f} s") from exc
        except (ConnectionError, OSError) as exc:
            raise AgentUnreachable(
                f"the agent closed the connection without a reply: {exc}"
            ) from exc
        return protocol.decode(line)
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def send(socket_path: str, message: protocol.Request, *, timeout: float = 60.0) -> protocol.Reply:
    """Send a typed request, return the typed reply (protocol.read_reply). Raises AgentUnreachable or
    protocol.ProtocolError."""
    return protocol.read_reply(message, request(socket_path, message.to_wire(), timeout=timeout))
