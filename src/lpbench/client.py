"""A blocking one-connection RESP client for the harness's own commands (populate, the demo's checks).

Not for load: the driver has its own nonblocking loop. Concurrency: one thread per Client.
"""

from __future__ import annotations

import socket
from typing import Any

from lpbench.codec import ReplyParser, encode_command, is_error


class ServerError(Exception):
    """The server answered with an error reply."""


class Client:
    def __init__(self, host: str, port: int, timeout_s: float = 30.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.reader = ReplyParser()

    def call(self, *argv: bytes | str | int) -> Any:
        """Send one command and return its reply; an error reply raises ServerError."""
        self.sock.sendall(encode_command(*argv))
        while not (replies := self.reader.replies()):
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self.reader.feed(data)
        reply = replies[0]
        if is_error(reply):
            raise ServerError(str(reply))
        return reply

    def local_port(self) -> int:
        """This connection's own port: if it is unchanged later, the connection survived."""
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
