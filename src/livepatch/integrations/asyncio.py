"""asyncio under livepatch: the loop thread is managed, and a patch lands between two callbacks.

Theory of operation
- `BaseEventLoop.run_forever` (which `asyncio.run` and `run_until_complete` go through) is wrapped: while
  it runs, the loop's thread is a managed thread (role "event-loop"), and a wake-up hook is registered
  that schedules `quiescence_point()` on the loop with `call_soon_threadsafe`. When a patch waits for
  quiescence, the patcher calls the hook; the self-pipe write wakes the loop from its selector, and the
  point runs as one more callback, *between* two callbacks: no callback is half run when the loop thread
  parks (global) or moves to the new generation (local). The hook schedules at most one pending point at
  a time, however often the patcher calls it.
- What that means for coroutines: a coroutine suspended at an `await` keeps its frame, and a frame keeps
  the code it started with, as with any Python reload. A patched *coroutine function* takes effect for
  calls made after the patch; a connection handler `async def handle(reader, writer)` that is already
  running keeps running its old body and calls the new versions of the functions it calls. The global
  method's activeness check sees only the loop thread's stack (the point and the loop), not suspended
  coroutines, so it does not refuse such a patch. And one request handled across several awaits may run
  its part before an await on the old code and its part after it on the new code: put the code a patch
  changes in functions that a request calls once.
- Event loops that do not derive from `asyncio.BaseEventLoop` (uvloop) are not covered.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
from typing import Any

from livepatch.integrations import marks
from livepatch.runtime import core as runtime


class _LoopWaker:
    """The wake-up hook of one running loop: schedule one quiescence point on it (above)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scheduled = False  # a point is queued and has not run yet

    def __call__(self) -> None:
        if self.scheduled:
            return
        self.scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._point)
        except RuntimeError:  # the loop closed meanwhile: nothing to wake
            self.scheduled = False

    def _point(self) -> None:
        self.scheduled = False
        runtime.quiescence_point()


def install() -> None:
    """Patch asyncio.BaseEventLoop (idempotent)."""

    def run_forever(original: Any) -> Any:
        def wrapper(self: Any) -> None:
            if runtime.is_managed():  # a nested loop, or a loop thread managed by hand
                original(self)
                return
            waker = _LoopWaker(self)
            with runtime.managed_thread(role="event-loop"):
                runtime.add_wakeup_hook(waker)
                try:
                    original(self)
                finally:
                    runtime.remove_wakeup_hook(waker)

        return wrapper

    marks.replace(asyncio.base_events.BaseEventLoop, "run_forever", run_forever)
