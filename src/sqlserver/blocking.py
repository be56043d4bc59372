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

Backing out (`back_out()`, live patching): a request about to take the write lock while it holds
nothing yet (the first write of a transaction block, or an autocommit write) may be given back to the
policy instead of running, so that a pending global patch does not wait for a transaction that has
not started: without it, under pgbench's TPC-B every client is queued on the write lock inside its
first UPDATE when a patch arrives, and the patch waits for all ten transactions to run one after
another (10-55 ms). Backed out, such a session holds nothing (its BEGIN only set its status; SQLite's
transaction starts lazily), so its thread passes its quiescence point and the request runs again,
unchanged, after the patch. `BackOutRule` says when: a transition is pending and this thread has not
backed out during that same transition yet (under a local patch the thread is moved, not parked, and
retries while the transition still runs: backing out again would spin).

Concurrency: the hooks are per thread (threading.local).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

_local = threading.local()


class BackOut(Exception):
    """Raised by the executor before a request takes anything: the policy runs it again later."""


class BackOutRule:
    """Back out once per pending transition (see the module docstring). One instance per thread.

    flag: livepatch.transition_flag() (its `request` is the pending transition, or None)."""

    __slots__ = ("flag", "last")

    def __init__(self, flag: Any) -> None:
        self.flag = flag
        self.last: object = None

    def __call__(self) -> bool:
        request = self.flag.request
        if request is None or request is self.last:
            return False
        self.last = request
        return True


def install(
    begin: Callable[[], None],
    end: Callable[[], None],
    back_out: Callable[[], bool] | None = None,
) -> None:
    """Make this thread's wait_begin/wait_end call `begin`/`end` (the pool's worker threads), and
    back_out() ask `back_out` (threads that can run a backed-out request again later)."""
    _local.hooks = (begin, end)
    _local.back_out = back_out


def install_back_out(back_out: Callable[[], bool] | None) -> None:
    """Only the back-out rule (thread-per-connection threads: they report no waits)."""
    _local.back_out = back_out


def back_out() -> bool:
    """Should the calling thread give its request back now (it holds nothing yet)?"""
    rule = getattr(_local, "back_out", None)
    return rule is not None and rule()


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
