"""Who was not running when a request hung: the server, the client, or the machine.

A hung request (no reply within the request deadline) has three possible causes, and they call for
different fixes: the server did not answer (a stall inside it: a long computation, a GC pause, a lock),
the machine did not run the server (runnable, waiting for a CPU: a loaded or niced machine), or the
client itself was not running. The SchedMonitor samples, every PERIOD_S:
  - the server's threads' CPU time and run-queue wait (Linux /proc/PID/task/*/schedstat: nanoseconds on
    a CPU, nanoseconds runnable but waiting for one), summed over its threads;
  - the same for this (the client's) process;
  - its own lateness: how much later than asked its sleep ended (the client's scheduling lag: no CPU, or
    the GIL held by another client thread).
`window(s, e)` sums them over a hang's interval and `verdict()` names the cause the figures support.

Why the client's lag matters less than one might think: a socket read with a timeout waits in poll(),
which checks the socket once more when its timer fires, so a client that was not scheduled still finds a
reply that arrived in time; a hang means no reply reached the socket within the deadline of the read.
The client's lag is reported anyway, so a report can show that it was (or was not) the client.

Without /proc (not Linux) the monitor records only its own lag; the verdict then says it cannot tell.

Concurrency: one monitor thread writes the samples; window() is called from client threads (one lock).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

PERIOD_S = 0.05
KEEP_S = 120.0  # samples kept: a hang is judged when its read times out, within a deadline or two
BUSY = 0.5  # the server on a CPU this share of the window: a stall inside the server
STARVED = 0.5  # runnable but waiting for a CPU this share of the window: the machine's


def _sched_totals(pid: int) -> tuple[int, int] | None:
    """(ns on a CPU, ns waiting for one) summed over the threads of `pid`; None if unreadable."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    run = wait = 0
    for tid in tasks:
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
        except OSError:  # the thread ended between listdir and the read
            continue
        run += int(fields[0])
        wait += int(fields[1])
    return run, wait


@dataclass(frozen=True)
class Window:
    """What happened over [s, e] (ns, time.monotonic_ns)."""

    seconds: float
    server_cpu_s: float | None  # summed over its threads; None: not measurable
    server_wait_s: float | None  # runnable, waiting for a CPU
    client_cpu_s: float | None
    client_wait_s: float | None
    client_lag_s: float  # the monitor's largest lateness in the window

    def verdict(self) -> str:
        if self.server_cpu_s is None or self.server_wait_s is None:
            return "unknown (no /proc schedstat for the server)"
        span = max(self.seconds, 1e-9)
        if self.server_wait_s >= STARVED * span:
            return "machine: the server was runnable but got no CPU"
        if self.server_cpu_s >= BUSY * span:
            return "server: it ran on a CPU without answering (a stall inside the server)"
        if self.client_lag_s >= STARVED * span:
            return "client: the stress client was not scheduled"
        return "server: it neither ran nor waited for a CPU (blocked on a lock or I/O, or idle)"

    def to_dict(self) -> dict[str, object]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "seconds": r(self.seconds),
            "server_cpu_s": r(self.server_cpu_s),
            "server_runqueue_wait_s": r(self.server_wait_s),
            "client_cpu_s": r(self.client_cpu_s),
            "client_runqueue_wait_s": r(self.client_wait_s),
            "client_max_lag_s": r(self.client_lag_s),
            "verdict": self.verdict(),
        }


class SchedMonitor(threading.Thread):
    def __init__(self, server_pid: int | None, period_s: float = PERIOD_S) -> None:
        super().__init__(name="stress-sched-monitor", daemon=True)
        self.server_pid = server_pid
        self.period_s = period_s
        self._lock = threading.Lock()
        # (t_ns, server (cpu, wait) | None, client (cpu, wait) | None, lag_ns)
        self._samples: deque[tuple[int, tuple[int, int] | None, tuple[int, int] | None, int]] = (
            deque(maxlen=int(KEEP_S / period_s))
        )
        self._done = threading.Event()
        self.max_lag_s = 0.0
        self.lags_over_1s = 0

    def stop(self) -> None:
        self._done.set()
        self.join(5)

    def sample(self, lag_ns: int = 0) -> None:
        server = None if self.server_pid is None else _sched_totals(self.server_pid)
        entry = (time.monotonic_ns(), server, _sched_totals(os.getpid()), lag_ns)
        with self._lock:
            self._samples.append(entry)

    def run(self) -> None:
        period_ns = int(self.period_s * 1e9)
        self.sample()
        while True:
            asked = time.monotonic_ns() + period_ns
            if self._done.wait(self.period_s):
                return
            lag = max(0, time.monotonic_ns() - asked)
            self.max_lag_s = max(self.max_lag_s, lag / 1e9)
            if lag >= 1_000_000_000:
                self.lags_over_1s += 1
            self.sample(lag)

    def window(self, s: int, e: int) -> Window:
        """Totals over [s, e]: from the last sample at or before s to the first at or after e (or the
        newest: takes one sample now so the end is covered)."""
        self.sample()
        with self._lock:
            samples = list(self._samples)
        before = [x for x in samples if x[0] <= s]
        first = before[-1] if before else samples[0]
        after = [x for x in samples if x[0] >= e]
        last = after[0] if after else samples[-1]
        # a sample's lag is a stall that ended at its time: count those ending after s
        lag = max((x[3] for x in samples if s < x[0] and x[0] - x[3] < e), default=0)

        def delta(i: int, j: int) -> float | None:
            a, b = first[i], last[i]
            if a is None or b is None:
                return None
            return (b[j] - a[j]) / 1e9  # type: ignore[index]

        return Window((e - s) / 1e9, delta(1, 0), delta(1, 1), delta(2, 0), delta(2, 1), lag / 1e9)
