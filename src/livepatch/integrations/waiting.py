"""Waiting for the next request of a connection: inactive while idle, then a quiescence point.

The one rule shared by the socketserver and http.server integrations (docs/runtime.md, "Recipe:
socketserver and http.server with keep-alive connections", done for the user): a connection thread that
waits for a client's next request must wait *inactive*, or an idle keep-alive connection holds every
global patch until its deadline. So the thread deactivates, blocks in `rfile.peek(1)` (which consumes
nothing and returns at once when a request is already buffered), activates (waiting there while a global
patch runs; moving to the new generation during a local one), and passes a quiescence point. The request
itself is then read and handled while active, on one generation.
"""

from __future__ import annotations

from typing import Any

from livepatch.runtime import core as runtime


def wait_for_request(rfile: Any) -> None:
    """Block until `rfile` has a byte to read, at end of file, or raising what the read would raise
    (a socket timeout, a reset), inactive meanwhile; then pass a quiescence point. Call it only where no
    request is in flight. A thread that is not managed just returns (it is never waited for). An rfile
    without `peek` (unbuffered, `rbufsize = 0`) cannot be waited on without consuming: the thread then
    reads its next request active (documented limit)."""
    if not runtime.is_managed():
        return
    peek = getattr(rfile, "peek", None)
    if peek is not None:
        runtime.deactivate()
        try:
            peek(1)
        finally:
            runtime.activate()
    runtime.quiescence_point()
