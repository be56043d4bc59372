"""Hooks past the patch's deadline are interrupted; the patch aborts, threads are released, and what the
hooks declared with ctx.record(what, undo) is undone (or, when a hook will not stop, reported)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from livepatch import Category, PatchResult, patch_from_sources
from livepatch.runtime.core import Runtime
from livepatch.runtime.hook_runner import HookTimedOut, call_with_deadline
from livepatch.runtime.patch_hooks import HookContext, PatchHooks
from tests.runtime.runtime_helpers import loaded_app, wait_for

pytestmark = pytest.mark.timeout(60)

V1 = """
import threading

gate = threading.Event()


def greet(name):
    return "v1 " + name
"""
V2 = V1.replace('"v1 "', '"v2 "')

# A hook step declared before it is made, then a hook that runs until the test opens the gate, in a
# Python loop (so the interrupt lands between two short waits).
STEP = """
def _step(ctx, what):
    mod = next(iter(ctx.modules.values()))
    ctx.record(what, undo=lambda: mod.__dict__.pop("FLAG", None))
    mod.FLAG = what
    return mod
"""
HANGS = """
def {hook}(ctx):
    mod = _step(ctx, "{hook} set FLAG")
    while not mod.gate.is_set():
        mod.gate.wait(0.005)
"""
# Ignores the interrupt (a bare except) until the gate opens: the patcher must move on regardless.
# (The whole loop is inside the try: wherever between two bytecodes the interrupt lands, it is caught.)
STUBBORN = """
def {hook}(ctx):
    mod = _step(ctx, "{hook} set FLAG")
    while True:
        try:
            while not mod.gate.is_set():
                mod.gate.wait(0.005)
            return
        except BaseException:
            mod.SWALLOWED = True
"""


@pytest.fixture
def app(rt: Runtime, tmp_path: Path) -> Iterator[ModuleType]:
    with loaded_app(rt, tmp_path, V1, "lp_hooks") as mod:
        yield mod


def _apply(rt: Runtime, app: ModuleType, hooks: str, **kw: object) -> PatchResult:
    spec = patch_from_sources(
        {app.__name__: (V1, V2)}, category=Category.DATA, hooks_source=STEP + hooks
    )
    return rt.apply_patch(spec, method="global", **kw)  # type: ignore[arg-type]


@dataclass
class Workers:
    """Busy managed threads; each request records whether it saw a half-done hook (FLAG)."""

    rt: Runtime
    app: ModuleType
    n: int = 2
    seen: list[str] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    ts: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Workers:
        self.requests = [0] * self.n
        ready = threading.Barrier(self.n + 1)
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(i, ready), daemon=True)
            self.ts.append(t)
            t.start()
        ready.wait(10)
        return self

    def _run(self, i: int, ready: threading.Barrier) -> None:
        with self.rt.managed_thread("worker"):
            ready.wait(10)
            while not self.stop.is_set():
                self.rt.quiescence_point()
                flag = getattr(self.app, "FLAG", None)
                if flag is not None:
                    self.seen.append(flag)
                self.app.greet("x")
                self.requests[i] += 1

    def progress(self, at_least: int = 50) -> None:
        target = [r + at_least for r in self.requests]
        wait_for(lambda: all(r >= t for r, t in zip(self.requests, target, strict=True)))

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.ts:
            t.join(10)


def _names(r: PatchResult) -> list[str]:
    return [e.name for e in r.events]


def test_a_pre_patch_past_the_deadline_is_interrupted_and_its_steps_undone(
    rt: Runtime, app: ModuleType
) -> None:
    r = _apply(rt, app, HANGS.format(hook="pre_patch"), timeout=0.3)
    assert r.outcome == "aborted", r.reason
    assert "pre_patch hook ran past the deadline of 0.3 s" in r.reason and "it stopped" in r.reason
    assert "pre_patch: pre_patch set FLAG (undone)" in r.reason
    assert not hasattr(app, "FLAG")
    assert app.greet("a") == "v1 a" and rt.applied_patches() == []
    assert "hook-step" in _names(r) and "hook-undone" in _names(r)
    assert rt.history()[-1] == r


def test_a_transform_past_the_deadline_releases_the_threads_and_is_undone_while_parked(
    rt: Runtime,
    app: ModuleType,
) -> None:
    with Workers(rt, app) as w:
        w.progress()
        r = _apply(rt, app, HANGS.format(hook="transform"), timeout=0.5)
        assert r.outcome == "aborted", r.reason
        assert "transform hook ran past the deadline" in r.reason and "released" in r.reason
        assert "transform set FLAG (undone)" in r.reason
        w.progress()  # released: they serve again
        assert w.seen == []  # undone before they were released: no request saw half of it
    assert rt.statistics().transition is None
    assert app.greet("a") == "v1 a"


def test_a_hook_that_will_not_stop_is_reported_and_the_threads_are_still_released(
    rt: Runtime,
    app: ModuleType,
) -> None:
    with Workers(rt, app) as w:
        w.progress()
        r = _apply(rt, app, STUBBORN.format(hook="transform"), timeout=0.3)
        assert r.outcome == "aborted", r.reason
        assert "STILL RUNNING" in r.reason and "NOT undone" in r.reason
        w.progress()  # released at the deadline although the hook still runs
        # left as the hook made it
        assert app.SWALLOWED is True and app.FLAG == "transform set FLAG"
        hook_thread = next(t for t in threading.enumerate() if t.name.endswith("/transform"))
        assert hook_thread.is_alive()
        # the patcher is not blocked by it: the next attempt goes through while it still runs
        nxt = _apply(rt, app, "")
        assert nxt.outcome == "applied", nxt.reason
        assert hook_thread.is_alive() and app.greet("a") == "v2 a"
        assert rt.revert_patch(method="global").ok
    app.gate.set()
    hook_thread.join(10)
    assert not hook_thread.is_alive()
    assert app.greet("a") == "v1 a"


def test_a_post_patch_past_the_deadline_keeps_the_patch_and_undoes_its_own_steps(
    rt: Runtime,
    app: ModuleType,
) -> None:
    r = _apply(rt, app, HANGS.format(hook="post_patch"), timeout=0.3)
    assert r.outcome == "applied", r.reason
    assert "post_patch hook ran past the deadline" in r.reason
    assert "post_patch set FLAG (undone)" in r.reason
    assert app.greet("a") == "v2 a" and not hasattr(app, "FLAG")


def test_steps_of_a_completed_pre_patch_are_undone_when_quiescence_fails(
    rt: Runtime, app: ModuleType
) -> None:
    release, entered = threading.Event(), threading.Event()

    def stuck() -> None:
        with rt.managed_thread("txn"):
            entered.set()
            release.wait(30)  # never reaches a quiescence point while the patch waits

    t = threading.Thread(target=stuck, name="stuck-txn", daemon=True)
    t.start()
    assert entered.wait(10)
    try:
        hooks = 'def pre_patch(ctx):\n    _step(ctx, "pre_patch set FLAG")\n'
        r = _apply(rt, app, hooks, timeout=0.3)
        assert r.outcome == "aborted" and "stuck-txn" in r.reason, r.reason
        assert "pre_patch set FLAG (undone)" in r.reason and not hasattr(app, "FLAG")
    finally:
        release.set()
        t.join(10)


def test_a_vetoing_hook_has_its_steps_undone_and_an_applied_patch_keeps_them(
    rt: Runtime,
    app: ModuleType,
) -> None:
    veto = 'def pre_patch(ctx):\n    _step(ctx, "half")\n    raise RuntimeError("no")\n'
    r = _apply(rt, app, veto)
    assert r.outcome == "refused" and "half (undone)" in r.reason, r.reason
    assert not hasattr(app, "FLAG")
    ok = 'def pre_patch(ctx):\n    _step(ctx, "kept")\n'
    r = _apply(rt, app, ok)
    assert r.outcome == "applied" and app.FLAG == "kept"
    assert rt.revert_patch(method="global").ok
    assert app.FLAG == "kept"  # a revert runs pre_revert/post_revert, not the apply's undos


def test_the_runner_reraises_the_hooks_own_exception_and_cannot_stop_a_c_call() -> None:
    boom = KeyError("state")

    def raising(ctx: HookContext) -> None:
        raise boom

    ctx = HookContext("p")
    with pytest.raises(KeyError) as info:
        call_with_deadline(PatchHooks({"pre_patch": raising}), "pre_patch", ctx, timeout=5)
    assert info.value is boom and ctx.hook == "pre_patch"

    # An async exception waits for the C call to return: the runner gives up after its grace, says the
    # hook is still running, and the interrupt, delivered later, ends the helper without a traceback.
    unhandled: list[BaseException | None] = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: unhandled.append(args.exc_value)
    try:
        sleeping = PatchHooks({"transform": lambda ctx: time.sleep(1.0)})
        with pytest.raises(HookTimedOut) as timed_out:
            call_with_deadline(sleeping, "transform", ctx, timeout=0.05, grace=0.05)
        assert not timed_out.value.stopped and "STILL RUNNING" in str(timed_out.value)
        helper = next(t for t in threading.enumerate() if t.name == timed_out.value.thread)
        helper.join(10)
        assert not helper.is_alive()
    finally:
        threading.excepthook = old_hook
    assert unhandled == []
