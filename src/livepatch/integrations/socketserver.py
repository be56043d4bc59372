"""socketserver under livepatch: a managed thread per request, line requests, forking refused.

Theory of operation
- Every request a socketserver server handles runs in a managed thread: `BaseServer.finish_request`
  (which builds the handler; its __init__ runs setup, handle, finish) is wrapped in
  `managed_thread(role="connection")`. With ThreadingMixIn (ThreadingTCPServer, ThreadingHTTPServer)
  `process_request_thread` calls it on the connection's own thread, so that thread is managed for the
  connection's whole life, as docs/runtime.md asks. In a server without ThreadingMixIn it is the
  listener's thread, managed for the duration of each request only (between requests it is not
  waited for). A thread that is already managed (a server instrumented by hand) is left alone.
- Line servers: `StreamRequestHandler.setup` is wrapped so that `self.rfile` is a `_LineRequests`
  reader: each `readline()` (and each step of `for line in self.rfile`) starts a request. Before it, the
  thread waits for the first byte inactive and passes a quiescence point (waiting.py). So an idle
  connection never holds a patch, and a patch lands between two lines, never inside the handling of one.
  Every other read (read, read1, readinto, readlines) is passed through untouched and blocks active:
  those are reads inside a request. http.server handlers are left to http_server.py: their requests span
  many readline calls (the request line and each header).
- Forking servers are refused when they are built (`BaseServer.__init__`): each request runs in a child
  process forked from the server, and live patching the server does not patch the children already
  running, nor tell which version a child runs. Refusing at construction means before any client.
"""

from __future__ import annotations

import socketserver
import sys
from typing import Any

from livepatch.integrations import marks
from livepatch.integrations.refused import IntegrationRefused
from livepatch.integrations.waiting import wait_for_request
from livepatch.runtime import core as runtime

FORKING_REASON = (
    "{name} is a forking server (socketserver.ForkingMixIn): each request runs in a child process "
    "forked from the server, and live patching the server process does not patch its children, so "
    "livepatch refuses to run it. Build it on socketserver.ThreadingMixIn instead (e.g. "
    "socketserver.ThreadingTCPServer in place of ForkingTCPServer), which livepatch can patch"
)


class _LineRequests:
    """The handler's rfile, with a wait-inactive and a quiescence point before each line (above)."""

    __slots__ = ("_rfile",)

    def __init__(self, rfile: Any) -> None:
        self._rfile = rfile

    def readline(self, size: int | None = -1) -> bytes:
        wait_for_request(self._rfile)
        line: bytes = self._rfile.readline(size)
        return line

    def __iter__(self) -> _LineRequests:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __getattr__(self, name: str) -> Any:  # everything else is the file's own
        return getattr(self._rfile, name)


def _is_http_handler(handler: object) -> bool:
    http_server = sys.modules.get("http.server")
    return http_server is not None and isinstance(handler, http_server.BaseHTTPRequestHandler)


def install() -> None:
    """Patch socketserver's classes (idempotent). Call before the server's classes are instantiated."""

    def finish_request(original: Any) -> Any:
        def wrapper(self: Any, request: Any, client_address: Any) -> None:
            if runtime.is_managed():
                original(self, request, client_address)
                return
            with runtime.managed_thread(role="connection"):
                original(self, request, client_address)

        return wrapper

    def setup(original: Any) -> Any:
        def wrapper(self: Any) -> None:
            original(self)
            if not _is_http_handler(self):
                self.rfile = _LineRequests(self.rfile)

        return wrapper

    def server_init(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            forking = getattr(socketserver, "ForkingMixIn", None)  # absent on Windows
            if forking is not None and isinstance(self, forking):
                raise IntegrationRefused(FORKING_REASON.format(name=type(self).__qualname__))
            original(self, *args, **kwargs)

        return wrapper

    marks.replace(socketserver.BaseServer, "finish_request", finish_request)
    marks.replace(socketserver.StreamRequestHandler, "setup", setup)
    marks.replace(socketserver.BaseServer, "__init__", server_init)
