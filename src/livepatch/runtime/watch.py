"""The watch window: after an apply, watch the patched code for errors and for calls that hang or get slow.

Theory of operation
-------------------
While a window is open the patch's dispatchers stay installed, always choosing the new code (patcher.py
starts and ends them). Two things are measured, on the threads that run the patched code, without a lock
on the hot path:
- exceptions escaping the new code (`on_error`, from the dispatcher);
- with `max_call_ms`, every call of the new code (plain functions and coroutines: `timed`, which the
  dispatch wraps around each new implementation) is entered into an in-flight table and leaves it when it
  returns or raises. A call that took longer than `max_call_ms`, or that is still in flight past it, is a
  *slow call*. Generators and async generators are not timed (a suspended iterator is not a hang).
One watcher thread per window (`wait_verdict`) wakes when an error trips the window, or every `poll_s` to
scan the in-flight table (a hung call never returns, so nobody else would notice it), and gives the
patcher a `Verdict` or None at the end of the window.

Why a slow verdict needs a forced rollback: a hung call sits inside the new code and never passes a
quiescence point, so no normal revert can complete while it hangs. `Verdict.forced` tells the patcher to
put the old code back for new calls without waiting (patcher.py, `revert --force`), and the hung frames
finish (or not) in the new code.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from threading import get_ident
from types import FunctionType
from typing import Any

from livepatch.runtime.dispatch import flavour_of

__all__ = ["Verdict", "Watch", "WatchPolicy"]


@dataclass(frozen=True)
class WatchPolicy:
    """After applying, watch the patched code for `window_s` seconds. More than `max_errors` exceptions
    escaping it revert the patch automatically. With `max_call_ms`, more than `max_slow_calls` calls of
    the new code that take longer than `max_call_ms` (or are still running past it) revert it by force
    (the calls hanging inside the new code would never let a normal revert reach quiescence). The
    history says why."""

    window_s: float = 10.0
    max_errors: int = 0
    max_call_ms: float | None = None
    max_slow_calls: int = 0

    def __post_init__(self) -> None:
        if self.max_call_ms is not None and not self.max_call_ms > 0:
            raise ValueError(f"max_call_ms must be positive, got {self.max_call_ms}")
        if self.max_errors < 0 or self.max_slow_calls < 0:
            raise ValueError("max_errors and max_slow_calls must be >= 0")

    def describe(self) -> str:
        text = f"window {self.window_s:g} s, max errors {self.max_errors}"
        if self.max_call_ms is not None:
            text += f", max call {self.max_call_ms:g} ms, max slow calls {self.max_slow_calls}"
        return text


@dataclass(frozen=True)
class Verdict:
    """Why a window asks for a rollback; `forced` when calls hang inside the new code; `slow` when slow
    calls (not errors) tripped it."""

    reason: str
    forced: bool
    slow: bool = False


def _thread_name(ident: int) -> str:
    """Only for slow calls and verdicts (rare), so a walk of the live threads is fine."""
    return next((t.name for t in threading.enumerate() if t.ident == ident), f"thread {ident}")


_Entry = tuple[float, str, int]  # a call of the new code: (started, target, thread ident)


@dataclass(frozen=True)
class _Call:
    target: str
    thread: str
    started: float  # time.monotonic()


class Watch:
    """Counters of one window. `on_error` and the `timed` wrappers run on any thread, concurrently;
    `wait_verdict` runs on the window's own thread; `stop` on the patcher's."""

    def __init__(self, policy: WatchPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock  # tests pass a fake one to measure durations deterministically
        self._max_call_s = None if policy.max_call_ms is None else policy.max_call_ms / 1e3
        self._tokens = itertools.count()  # next() is one C call: atomic under the GIL
        self._in_flight: dict[int, _Entry] = {}  # token -> (start, target, thread ident)
        self._count_lock = threading.Lock()
        self.errors = 0
        self.last_error: BaseException | None = None
        self.slow_done = 0  # calls that returned (or raised) after more than max_call_ms
        self.last_slow: _Entry | None = None
        self._wake = threading.Event()  # an error or a slow call over the limit, or stop()
        self._stopped = False

    # -- on the threads running the patched code ----------------------------------------------------

    def on_error(self, exc: BaseException) -> None:
        with self._count_lock:
            self.errors += 1
            self.last_error = exc
            over = self.errors > self.policy.max_errors
        if over:
            self._wake.set()

    def timed(self, impl: FunctionType, target: str) -> Callable[..., Any]:
        """Wrap a new implementation so its calls enter the in-flight table (see the theory above).

        The hot path is a token, two clock reads, a dict store and a dict delete (names of threads are
        looked up only when a verdict is written)."""
        limit = self._max_call_s
        if limit is None:
            return impl
        in_flight, tokens, clock, slow = self._in_flight, self._tokens, self._clock, self._slow
        flavour = flavour_of(impl.__code__)
        if flavour == "plain":

            def timed_call(*args: Any, **kwargs: Any) -> Any:
                token = next(tokens)
                start = clock()
                in_flight[token] = (start, target, get_ident())
                try:
                    return impl(*args, **kwargs)
                finally:
                    del in_flight[token]
                    if clock() - start > limit:
                        slow(start, target, get_ident())

            return timed_call
        if flavour == "coroutine":

            async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
                token = next(tokens)
                start = clock()
                in_flight[token] = (start, target, get_ident())
                try:
                    coro: Coroutine[Any, Any, Any] = impl(*args, **kwargs)
                    return await coro
                finally:
                    del in_flight[token]
                    if clock() - start > limit:
                        slow(start, target, get_ident())

            return timed_coroutine
        return impl  # generators: see the theory of operation

    def _slow(self, started: float, target: str, ident: int) -> None:
        with self._count_lock:
            self.slow_done += 1
            self.last_slow = (started, target, ident)
            over = self.slow_done > self.policy.max_slow_calls
        if over:
            self._wake.set()

    # -- on the window's own thread ------------------------------------------------------------------

    def overdue(self) -> list[_Call]:
        """Calls still in flight past max_call_ms, oldest first."""
        limit = self._max_call_s
        if limit is None:
            return []
        now = self._clock()
        calls = self._in_flight.copy().values()  # dict.copy() is atomic under the GIL
        return [
            _Call(target, _thread_name(ident), start)
            for start, target, ident in sorted(calls)
            if now - start > limit
        ]

    def poll_s(self) -> float:
        """How often the in-flight table is scanned: a quarter of the call limit, within [10, 250] ms."""
        if self._max_call_s is None:
            return self.policy.window_s
        return min(0.25, max(0.01, self._max_call_s / 4))

    def verdict(self) -> Verdict | None:
        """Whether the window's limits were passed, and why (errors first)."""
        p = self.policy
        with self._count_lock:
            errors, last_error = self.errors, self.last_error
            slow_done, last_slow = self.slow_done, self.last_slow
        if errors > p.max_errors:
            return Verdict(
                f"{errors} exceptions escaped the patched code within the {p.window_s:g} s watch "
                f"window (max {p.max_errors}); last: {last_error!r}",
                forced=False,
            )
        overdue = self.overdue()
        if slow_done + len(overdue) > p.max_slow_calls:
            now = self._clock()
            parts = [
                f"{c.target} on thread {c.thread} running for {(now - c.started) * 1e3:.0f} ms"
                for c in overdue[:5]
            ]
            if last_slow is not None:
                _, target, ident = last_slow
                parts.append(f"last slow call returned: {target} on {_thread_name(ident)}")
            return Verdict(
                f"{slow_done + len(overdue)} calls of the patched code took longer than "
                f"{p.max_call_ms:g} ms ({len(overdue)} still running; max {p.max_slow_calls} slow "
                f"calls): " + "; ".join(parts),
                forced=bool(overdue),
                slow=True,
            )
        return None

    def wait_verdict(self) -> Verdict | None:
        """Block until a limit is passed (its Verdict), the window ends (None, or a last Verdict) or
        stop() is called (None)."""
        deadline = time.monotonic() + self.policy.window_s
        while True:
            remaining = deadline - time.monotonic()
            self._wake.wait(max(0.0, min(self.poll_s(), remaining)))
            self._wake.clear()
            if self._stopped:
                return None
            found = self.verdict()
            if found is not None or remaining <= 0:
                return found

    def stop(self) -> None:
        """End the window early (another transition starts): wait_verdict returns None."""
        self._stopped = True
        self._wake.set()
