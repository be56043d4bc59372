"""The one free-port helper of lpbench, the benchmarks and the tests (tests/support.py re-exports it).

Standard library only, so a caller does not load redis (lpbench.servers) to get a port. The port is free
when the kernel picks it; another process may take it before the caller binds it (the usual race of
this idiom, harmless on a test machine: the server then fails to start, loudly).
"""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
