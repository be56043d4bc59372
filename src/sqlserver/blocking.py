"""Telling the connection policy that a statement is about to block (MariaDB's thd_wait_begin/end).

The thread pool keeps one executing thread per group and lets it run the group's queued requests one
after another (no hand-off between threads for each request: under the GIL a hand-off costs a
thread wake-up and buys no parallelism). That is only safe if the pool learns when its executing
thread blocks for a while -- waiting for the write lock another session holds, or for the fsync of
its COMMIT -- so that it can let another thread run the queue meanwhile (the COMMIT that releases
that very lock may be in the queue). The session layer calls `wait_begin()` before such a wait and
`wait_end()` after it; the pool installs its callbacks per thread with `install()`. Threads of the
thread-per-connection policy install nothing: the calls then cost one attribute lookup.

Only waits that can last (a lock held by another session, a disk sync) are reported, never the fast
path of an uncontended lock.

Concurrency: the hooks are per thread (threading.local).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

_local = threading.local()


def install(begin: Callable[[], None], end: Callable[[], None]) -> None:
    """Make this thread's wait_begin/wait_end call `begin`/`end` (the pool's worker threads)."""
    _local.hooks = (begin, end)


def wait_begin() -> None:
    """This thread is about to block (lock wait, disk sync): the policy may run others meanwhile."""
    hooks = getattr(_local, "hooks", None)
    if hooks is not None:
        hooks[0]()


def wait_end() -> None:
    """The wait announced by wait_begin() is over."""
    hooks = getattr(_local, "hooks", None)
    if hooks is not None:
        hooks[1]()
