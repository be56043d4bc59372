"""The server's write lock: a threading.Lock that a pending live patch can shake its waiters out of.

SQLite allows one writer at a time; ServerState.write_lock serializes the sessions' write transactions
(executor.py). A session waiting for it may hold nothing yet (the first write of its transaction): such
a request can back out when a global patch is pending (blocking.py) and run after it, on the new code.
With a plain Lock it only noticed the patch once it got the lock, so the patch waited for the holder's
whole transaction -- its remaining statements, each a client round trip, and its COMMIT's fsync -- and
then for the waiters to pass the lock on one after another (each backing out in turn). `kick()` wakes
every waiter at once instead (the server registers it as a livepatch wake-up hook, runner.py): a waiter
that may back out does so at once, the others wait on. Under pgbench TPC-B that is most of the pool's
sync time (docs/performance.md, "Pool sync time").

Same interface as threading.Lock for what the executor uses: acquire(blocking, timeout), release(),
locked(). Not reentrant; not fair (a release wakes one waiter, a newcomer may take the lock first, as
with threading.Lock).

Concurrency: any thread; kick() never blocks for long (takes the condition's lock).
"""

from __future__ import annotations

import threading


class WriteLock:
    __slots__ = ("_cv", "_held", "_kickable", "_kicks", "_waiting")

    def __init__(self) -> None:
        self._cv = threading.Condition(threading.Lock())
        self._held = False
        self._kicks = 0  # kick() count: a waiter returns when it changes
        self._waiting = 0
        self._kickable = 0  # waiters that could back out (acquire(kickable=True))

    def acquire(self, blocking: bool = True, timeout: float = -1, kickable: bool = False) -> bool:
        """Take the lock; False on timeout, when not blocking and held, or when kicked. kickable: this
        waiter could back out (only then is a kick worth waking everyone for)."""
        with self._cv:
            if not self._held:
                self._held = True
                return True
            if not blocking:
                return False
            kicks = self._kicks
            self._waiting += 1
            self._kickable += kickable
            try:
                self._cv.wait_for(
                    lambda: not self._held or self._kicks != kicks,
                    None if timeout < 0 else timeout,
                )
            finally:
                self._waiting -= 1
                self._kickable -= kickable
            if self._held:
                return False
            self._held = True
            return True

    def release(self) -> None:
        with self._cv:
            if not self._held:
                raise RuntimeError("release unlocked write lock")
            self._held = False
            self._cv.notify()

    def locked(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        """How many threads wait for the lock now (for tests and diagnosis)."""
        return self._waiting

    def kick(self) -> None:
        """Wake every waiter: its acquire() returns False now unless the lock is free. Only when some
        waiter could back out: the runtime calls its wake-up hooks again and again while a transition
        is pending, and waking waiters that can only wait again (statements of transactions that
        already began) each time would only take CPU from the transactions the patch waits for."""
        with self._cv:
            if self._kickable:
                self._kicks += 1
                self._cv.notify_all()
