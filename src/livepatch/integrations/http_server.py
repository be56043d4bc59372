"""http.server under livepatch: a quiescence point between the requests of a keep-alive connection.

`BaseHTTPRequestHandler.handle_one_request` is wrapped: before it reads a request line, the connection
thread waits for the client's next request inactive, then passes a quiescence point (waiting.py). The
request line, the headers and the `do_*` method then run while active, on one generation. The thread is
managed by the socketserver integration (ThreadingHTTPServer is a ThreadingMixIn server), which this one
needs; `install()` installs both.

A socket timeout while waiting (the handler's `timeout`) ends the connection as the standard library
does ("Request timed out", close_connection); any other error is left to the original method, whose
read meets it again and handles it as it always did.
"""

from __future__ import annotations

import http.server
from typing import Any

from livepatch.integrations import marks
from livepatch.integrations.waiting import wait_for_request


def install() -> None:
    """Patch BaseHTTPRequestHandler (idempotent)."""

    def handle_one_request(original: Any) -> Any:
        def wrapper(self: Any) -> None:
            try:
                wait_for_request(self.rfile)
            except TimeoutError as exc:  # what the original does when its readline times out
                self.log_error("Request timed out: %r", exc)
                self.close_connection = True
                return
            except OSError:
                pass  # a reset connection: the original's read raises it again, handled as always
            original(self)

        return wrapper

    marks.replace(http.server.BaseHTTPRequestHandler, "handle_one_request", handle_one_request)
