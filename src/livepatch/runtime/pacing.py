"""Pacing: a long staging gives up the GIL between its pieces, so the server's threads keep being served.

Theory of operation. Staging runs on the patcher thread while the server serves, and holds the GIL while
it computes. A server thread that comes back from a blocking call (an event loop back from epoll with
requests) waits for the GIL; CPython hands it over only when the holder blocks or when the waiter has
waited a whole switch interval (5 ms) and asks for it. The thread then runs until its next blocking call
(a recv, a send, the next epoll), where the patcher, waiting too, takes the GIL back at once: each of the
loop's system calls costs it another interval (a GIL convoy). At a live update of kvserver's figures
commit, a staging of ~4 ms of CPU kept the loop from answering for 10 ms in one stretch
(docs/performance.md, issue 9, session 10).

So the stager calls a `Pacer` between pieces of its work (each change, each statement it parses): once the
staging has computed for `after_s` of its own CPU time (`time.thread_time`: a staging slowed by other
threads does not count their time), the pacer sleeps `pause_s` every `every_s` (or, after a pause that
took longer than a third of that, three times that pause: staging keeps 3/4 of its wall time). The
sleep releases the GIL with the patcher off it, so a waiting thread takes it at once and runs its
blocking calls without the convoy. A one-function staging (~0.03 ms) never reaches `after_s` and never sleeps: what
`bench/sync_time.py` measures is unchanged.

Beside CPU-bound threads a pause is a bad trade: one of them takes the GIL and keeps it for a whole
interval (or several, if many wait), which is also why the runtime never shortens the switch interval
during staging (quiescence.py, `_Switching`). The pacer sees that as a pause that ends late, by half a
switch interval or more (at least `late_s`), while the process's other threads used the CPU for at
least a quarter of that lateness (`time.process_time` minus this thread's `time.thread_time`; a
quarter, because on a loaded machine the thread holding the GIL runs only part of the time): it then
pauses no more for the rest of that staging, so beside CPU-bound threads a long staging loses one turn.
An event loop answering a few requests gives the GIL back within a fraction of that. A pause made late
by the OS alone (a loaded machine that runs the patcher thread late, the other threads idle) is not a
reason to stop: at load 7-8 on this VM that was most of the late pauses (19 of 31 stagings stopped
when any late pause did).

Each layer paces its own pieces with its own Pacer: the control connection's thread its decoding of
the request line, the agent its checks of a patch (decoding it, checking its signature over the
canonical JSON encoded in pieces, decoding the compiled code: ~1 ms of CPU for the figures commit) and
the keeper's hashing of the document, `stage()` its staging (or the caller's Pacer, `stage(spec,
pacer)`, which tests use to see the pauses). So a staging shorter than `after_s` never pauses, whatever
the agent did before it: bench/staging_time.py's stage time of a one-function patch is unchanged. A
layer whose work was long ends with `rest()`, a pause whenever the last one was: without it, the next
layer's first stretch (up to `after_s` before its own first pause) would follow this layer's last one
with no hand-over between them (bench/apply_stretches.py, session 11). A Pacer belongs to one thread;
it is not thread-safe.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Pacer"]

# Defaults, measured on kvserver's figures commit (docs/performance.md, issue 9, sessions 10-11).
AFTER_S = 0.0003  # own CPU before the first pause (one-function staging 0.03-0.2 ms; was 1 ms)
EVERY_S = 0.0005  # wall time between pauses (or 3x the last pause): how long a waiting thread waits
PAUSE_S = 0.0001  # time.sleep's argument; Linux adds its 50 us timer slack
LATE_S = 0.002  # floor of "late": a pause longer than asked by this and half the switch interval


class Pacer:
    """Call it between pieces of work; it sleeps briefly now and then once the work has been long."""

    __slots__ = (
        "_cpu_due",
        "_due",
        "after_s",
        "every_s",
        "late_s",
        "pause_s",
        "pauses",
        "stopped",
    )

    def __init__(
        self,
        *,
        after_s: float = AFTER_S,
        every_s: float = EVERY_S,
        pause_s: float = PAUSE_S,
        late_s: float = LATE_S,
    ) -> None:
        self.after_s = after_s
        self.every_s = every_s
        self.pause_s = pause_s
        self.late_s = late_s
        self.pauses = 0  # how many times it slept
        self.stopped = False  # a pause came back late: no more pauses
        self._cpu_due = time.thread_time() + after_s
        # wall time >= CPU time, so until this instant the CPU threshold cannot have been reached: the
        # common call is one perf_counter (vDSO), not thread_time (a system call)
        self._due = time.perf_counter() + after_s

    def __call__(self) -> None:
        if self.stopped:
            return
        now = time.perf_counter()
        if now < self._due:
            return
        if self._cpu_due:
            left = self._cpu_due - time.thread_time()
            if left > 0:
                self._due = now + left
                return
            self._cpu_due = 0.0  # the staging is long: pause from now on
        process, own = time.process_time(), time.thread_time()
        time.sleep(self.pause_s)
        after = time.perf_counter()
        self.pauses += 1
        late = after - now - self.pause_s
        if late > max(self.late_s, sys.getswitchinterval() / 2):
            others = (time.process_time() - process) - (time.thread_time() - own)
            if others >= late / 4:
                self.stopped = True  # a thread kept the GIL until it was asked for it: CPU-bound
        # at least `every_s`, and three times the pause as it took: where a pause costs more (a loaded
        # machine runs the patcher late; a server thread used its turn), staging still gets 3/4 of its
        # wall time (bench/staging_time.py's unsigned staging, ~8 ms of CPU, at load 10: +50% otherwise)
        self._due = after + max(self.every_s, 3 * (after - now))

    def rest(self) -> None:
        """Pause now if the work has been long enough to pace (and pacing was not stopped), whenever the
        last pause was: the layer that calls it next (another thread, or a layer with its own Pacer)
        starts with the GIL freshly handed round, instead of adding its first stretch to this one."""
        self._due = 0.0
        self()
