"""Run a patch hook with a deadline, and undo what hooks declared when an attempt does not complete.

Theory of operation
-------------------
A hook runs on a fresh daemon helper thread while the patcher thread waits for it with a deadline (the
patch's timeout). Past the deadline the patcher raises `HookInterrupted` inside the helper
(`PyThreadState_SetAsyncExc`) and waits a short grace for it to unwind, then gives up on it either way.
Why a helper thread and not an interrupt of the patcher thread itself: during a transform every managed
thread is parked, and they must be released at the deadline. An async exception is only delivered
between bytecodes, so a hook blocked in a C call (a socket read, `time.sleep`) cannot be stopped until
that call returns; had it run on the patcher thread, the server would stay paused for as long. On a
helper, the patcher moves on and releases the threads at the deadline whatever the hook does.

The price, documented: a hook that swallows `HookInterrupted` (bare `except:`) or sits in a C call keeps
running after the patch was aborted, concurrently with the server. `HookTimedOut.stopped` says whether it
did stop; its declared undos are run only when it did (running them beside a live hook would race it).

`HookInterrupted` derives from BaseException so that a hook's `except Exception` does not swallow it.
The helper absorbs an interrupt that arrives after the hook returned (the injection is guarded by a
lock, but delivery is asynchronous), so it never surfaces as an unhandled thread exception.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from livepatch.runtime.patch_hooks import HookContext, HookStep, PatchHooks

__all__ = ["HookInterrupted", "HookTimedOut", "call_with_deadline", "undo_steps"]

INTERRUPT_GRACE_S = 1.0  # how long the patcher waits for an interrupted hook to unwind


class HookInterrupted(BaseException):
    """Raised inside a hook's thread when the hook ran past the patch's deadline."""


class HookTimedOut(Exception):
    """A hook ran past its deadline and was interrupted; `stopped`: whether it has stopped running."""

    def __init__(self, hook: str, timeout: float, stopped: bool, thread: str) -> None:
        state = (
            "it stopped"
            if stopped
            else f"it is STILL RUNNING on thread {thread} (it ignored the interrupt or sits in a blocking call)"
        )
        super().__init__(
            f"{hook} hook ran past the deadline of {timeout:g} s and was interrupted; {state}"
        )
        self.hook = hook
        self.timeout = timeout
        self.stopped = stopped
        self.thread = thread


@dataclass
class _Run:
    fn: Callable[[], object]
    done: threading.Event = field(default_factory=threading.Event)
    guard: threading.Lock = field(default_factory=threading.Lock)
    finished: bool = False
    interrupted: bool = False
    error: BaseException | None = None

    def main(self) -> None:
        try:
            try:
                self.fn()
            except HookInterrupted:
                self.interrupted = True
            except BaseException as exc:  # re-raised on the patcher thread, which decides
                self.error = exc
            with self.guard:
                self.finished = True
        except HookInterrupted:  # delivered after the hook returned: nothing left to interrupt
            self.finished = True
        while True:  # at most one interrupt is ever injected; if it lands here, set again
            try:
                self.done.set()
                return
            except HookInterrupted:
                continue

    def interrupt(self, ident: int) -> None:
        # Imported here: ctypes costs ~1.5 ms at `import livepatch` inside every server, and is needed
        # only when a hook overruns its deadline.
        import ctypes

        with self.guard:
            if self.finished:
                return
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(ident), ctypes.py_object(HookInterrupted)
            )


def _run_bounded(fn: Callable[[], object], name: str, timeout: float, grace: float) -> None:
    run = _Run(fn)
    caller = threading.current_thread().name
    t = threading.Thread(target=run.main, name=f"{caller}/{name}", daemon=True)
    t.start()
    if not run.done.wait(timeout):
        assert t.ident is not None
        run.interrupt(t.ident)
        stopped = run.done.wait(grace)
        raise HookTimedOut(name, timeout, stopped, t.name)
    if run.error is not None:
        raise run.error
    if run.interrupted:  # cannot happen without a deadline having passed; be explicit anyway
        raise HookTimedOut(name, timeout, True, t.name)


def call_with_deadline(
    hooks: PatchHooks,
    name: str,
    ctx: HookContext,
    *,
    timeout: float,
    grace: float = INTERRUPT_GRACE_S,
) -> None:
    """Call hook `name` (PatchHooks.call) on a helper thread; re-raise what it raised; raise HookTimedOut
    past `timeout` seconds (after interrupting it, see the theory of operation). Call from the patcher
    thread; hooks of one attempt run one at a time. Does nothing when the hook is not defined."""
    if not hooks.has(name):
        return
    ctx.hook = name
    _run_bounded(lambda: hooks.call(name, ctx), name, timeout, grace)


def undo_steps(
    steps: list[HookStep], *, timeout: float, grace: float = INTERRUPT_GRACE_S
) -> list[str]:
    """Run the undos of `steps`, newest first, each on a helper thread bounded by `timeout`; return one
    line per step saying what happened to it (for the history). Never raises for a failing undo."""
    lines: list[str] = []
    for step in reversed(steps):
        label = f"{step.hook}: {step.what}"
        if step.undo is None:
            lines.append(f"{label} (no undo declared)")
            continue
        undo = step.undo
        try:
            _run_bounded(undo, f"undo of {step.hook}", timeout, grace)
        except HookTimedOut as exc:
            lines.append(
                f"{label} (undo ran past {timeout:g} s: {'stopped' if exc.stopped else 'still running'})"
            )
        except BaseException as exc:  # reported; the remaining undos still run
            lines.append(f"{label} (undo raised {exc!r})")
        else:
            lines.append(f"{label} (undone)")
    return lines
