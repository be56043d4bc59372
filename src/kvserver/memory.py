"""Giving memory back to the system after clients with large buffers leave (glibc's malloc_trim).

Why: a client's buffers are freed when it closes (ClientState.release_buffers), but freed memory is
not necessarily returned to the system. CPython takes objects up to 512 bytes from its own arenas
(returned once empty) and larger ones (64 KB receive buffers, a request's argument list, joined
payloads) from malloc, whose heap only shrinks from its top: memory freed below a live allocation
stays in the process. 200 clients that left with 5,000 arguments pending each kept 8 MB that way
(docs/performance.md, issue 10). `malloc_trim(0)` releases the free pages of every arena.

When: the event loop tells `Trimmer.released(n)` how many buffered bytes each closing client held;
its cron step calls `maybe_trim()`, which trims once at least TRIM_AFTER bytes were released since the
last trim, at most once per cron tick. A trim costs about a millisecond per GB of heap (it walks the free
chunks, not the live objects). Without glibc (musl, macOS) nothing happens.

Concurrency: loop thread only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger("kvserver.memory")

TRIM_AFTER = 1024 * 1024  # bytes released by closed clients before a trim is worth its cost


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: its allocator returns memory its own way
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


class Trimmer:
    """Counts the bytes closed clients released; trims the heap once enough were."""

    def __init__(self, threshold: int = TRIM_AFTER) -> None:
        self.threshold = threshold
        self.pending = 0  # released since the last trim
        self.trims = 0

    def released(self, nbytes: int) -> None:
        self.pending += nbytes

    def maybe_trim(self) -> bool:
        """Trim if enough was released (cron). Returns whether a trim ran."""
        if self.pending < self.threshold or _malloc_trim is None:
            return False
        self.pending = 0
        self.trims += 1
        _malloc_trim(0)
        return True
