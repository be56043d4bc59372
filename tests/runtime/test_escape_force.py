"""rt.revert_patch(force=True): the old code for every new call at once, while a thread hangs in the new code.

The "hanging" new code waits on an Event the test holds (deterministic: it returns exactly when the test
says so), with real managed threads and the real quiescence protocols.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from livepatch import Category, Outcome, PatchSpec, WatchPolicy, patch_from_sources
from livepatch.runtime.core import Runtime
from livepatch.runtime.lifecycle import EventName
from livepatch.runtime.registry import Priority, Registry, ThreadState
from tests.runtime.runtime_helpers import loaded_app, wait_for

pytestmark = pytest.mark.timeout(60)

V1 = """
import threading

gate = threading.Event()
entered = threading.Event()


def greet(name):
    return "v1 " + name


def other(name):
    return "other v1 " + name
"""

# greet hangs (until the test opens `gate`), then calls a helper the patch adds.
V2 = """
import threading

gate = threading.Event()
entered = threading.Event()


def greet(name):
    entered.set()
    gate.wait(30)
    return "v2 " + shout(name)


def shout(name):
    return name.upper()


def other(name):
    return "other v2 " + name
"""


@pytest.fixture
def app(rt: Runtime, tmp_path: Path) -> Iterator[ModuleType]:
    with loaded_app(rt, tmp_path, V1, "lp_escape", force=True) as mod:
        yield mod


def spec_for(mod: ModuleType, category: Category = Category.THREAD_LOCAL) -> PatchSpec:
    return patch_from_sources({mod.__name__: (V1, V2)}, category=category)


@dataclass
class Connection:
    """A managed connection thread: point, then one call of `fn` per request, like the e2e server."""

    rt: Runtime
    fn: object
    name: str = "conn-stuck"
    replies: list[str] = field(default_factory=list)
    requests: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    done: threading.Event = field(default_factory=threading.Event)
    stop: bool = False

    def start(self) -> Connection:
        threading.Thread(target=self._run, name=self.name, daemon=True).start()
        return self

    def _run(self) -> None:
        rt = self.rt
        with rt.managed_thread("connection"):
            while True:
                rt.quiescence_point()
                rt.deactivate()
                self.requests.acquire()
                rt.activate()
                if self.stop:
                    break
                self.replies.append(self.fn("bob"))  # type: ignore[operator]
                self.done.set()

    def request(self) -> None:
        self.done.clear()
        self.requests.release()

    def close(self) -> None:
        self.stop = True
        self.requests.release()


def _state_of(rt: Runtime, name: str) -> str:
    return next(t.state for t in rt.statistics().threads if t.name == name)


@pytest.mark.parametrize("method", ["global", "local"])
def test_force_reverts_while_a_thread_hangs_in_the_new_code(
    rt: Runtime, app: ModuleType, method: str
) -> None:
    old_greet = app.greet.__code__
    spec = spec_for(app)
    assert rt.apply_patch(spec, method=method).ok
    conn = Connection(rt, lambda n: app.greet(n)).start()
    conn.request()
    assert app.entered.wait(10)  # the thread now sits inside the new greet
    try:
        plain = rt.revert_patch(method=method, timeout=0.3)
        assert plain.outcome is Outcome.ABORTED, plain.reason
        assert app.greet.__code__ is not old_greet  # all or nothing: still the new code

        forced = rt.revert_patch(force=True, timeout=5)
        assert forced.outcome is Outcome.REVERTED, forced.reason
        assert forced.method == "force"
        names = [e.name for e in forced.events]
        assert EventName.FORCED in names and EventName.QUIESCENT not in names
        assert "FORCED" in forced.reason and "conn-stuck (greet)" in forced.reason
        assert rt.history()[-1] == forced
        assert rt.applied_patches() == []
        # new calls, from any thread, run the old code at once
        assert app.greet.__code__ is old_greet and app.greet("al") == "v1 al"
        # the hanging thread is no longer waited for: a new global patch applies while it hangs
        assert _state_of(rt, "conn-stuck") == "released"
        again = rt.apply_patch(spec_for(app, Category.PROCESS), method="global", timeout=5)
        assert again.outcome is Outcome.APPLIED, again.reason
        assert rt.revert_patch(method="global", timeout=5).ok
        # the running frame finishes in the new code, which still finds the name the patch added
        app.gate.set()
        assert conn.done.wait(10)
        assert conn.replies == ["v2 BOB"]
    finally:
        app.gate.set()
        conn.close()
    # after its next quiescence point the thread is waited for again
    wait_for(lambda: "conn-stuck" not in {t.name for t in rt.statistics().threads})
    assert rt.transition_flag().request is None


def test_a_released_thread_rejoins_at_its_next_point_and_is_waited_for_again(
    rt: Runtime,
    app: ModuleType,
) -> None:
    assert rt.apply_patch(spec_for(app), method="global").ok
    conn = Connection(rt, lambda n: app.greet(n)).start()
    conn.request()
    assert app.entered.wait(10)
    try:
        assert rt.revert_patch(force=True).ok
        assert _state_of(rt, "conn-stuck") == "released"
        assert (
            rt.transition_flag().request is not None
        )  # points take the slow path until it rejoins
        app.gate.set()
        assert conn.done.wait(10)
        # the thread passed its point (then deactivated to wait for the next request)
        wait_for(lambda: _state_of(rt, "conn-stuck") == "inactive", what="rejoin")
        assert rt.transition_flag().request is None
        # it is an ordinary managed thread again: a request now runs v1 and a patch waits for it
        conn.request()
        assert conn.done.wait(10) and conn.replies[-1] == "v1 bob"
    finally:
        conn.close()


def test_force_from_a_watch_window_and_of_a_named_patch(rt: Runtime, app: ModuleType) -> None:
    spec = spec_for(app)
    r = rt.apply_patch(spec, method="global", watch=WatchPolicy(window_s=60))
    assert r.ok and rt._watch is not None
    back = rt.revert_patch(spec.patch_id, force=True)
    assert back.outcome is Outcome.REVERTED, back.reason
    assert rt._watch is None  # the window's dispatch was replaced by the old code directly
    assert app.greet("x") == "v1 x" and app.other("x") == "other v1 x"
    assert "shout" in back.reason  # the added name stays bound, and the history says so
    assert app.shout("x") == "X"


def test_force_refuses_what_cannot_be_reverted_and_changes_nothing(
    rt: Runtime, app: ModuleType
) -> None:
    r = rt.revert_patch(force=True)
    assert r.outcome is Outcome.REFUSED and "not applied" in r.reason
    first = spec_for(app)
    assert rt.apply_patch(first, method="global").ok
    newer_src = V2.replace('"other v2 "', '"other v3 "')
    newer = patch_from_sources({app.__name__: (V2, newer_src)}, category=Category.THREAD_LOCAL)
    assert rt.apply_patch(newer, method="global").ok
    r = rt.revert_patch(first.patch_id, force=True)
    assert r.outcome is Outcome.REFUSED and f"revert {newer.patch_id} first" in r.reason
    assert app.other("x") == "other v3 x"
    assert rt.revert_patch(force=True).ok and app.other("x") == "other v2 x"
    assert rt.revert_patch(force=True).ok and app.other("x") == "other v1 x"


def test_force_is_not_blocked_by_a_detached_local_reversal(rt: Runtime, app: ModuleType) -> None:
    """A local revert whose reversal is left to finish in the background (a moved thread then blocked)
    holds the transition slot; a forced revert of the same patch still goes through, and the reversal,
    when it finally completes, finds nothing left to undo."""
    assert rt.apply_patch(spec_for(app), method="local").ok
    hang = Connection(rt, lambda n: app.greet(n), name="conn-hang").start()
    hang.request()
    assert app.entered.wait(10)  # never moves: sits inside the new greet
    block = threading.Event()
    moved = threading.Event()

    def mover() -> None:
        with rt.managed_thread("connection"):
            while not moved.is_set():
                rt.quiescence_point()
                if rt.current_generation() != start_gen:
                    moved.set()
            block.wait(30)  # moved to the revert's generation, then blocked: cannot move back
            rt.quiescence_point()

    start_gen = rt.current_generation()
    assert start_gen == 1  # a fresh runtime, one local patch applied
    t = threading.Thread(target=mover, name="conn-mover", daemon=True)
    t.start()
    try:
        plain = rt.revert_patch(method="local", timeout=0.5)
        assert plain.outcome is Outcome.ABORTED and "reversing" in plain.reason, plain.reason
        assert moved.is_set()
        forced = rt.revert_patch(force=True, timeout=5)
        assert forced.outcome is Outcome.REVERTED, forced.reason
        assert app.greet("al") == "v1 al"
    finally:
        block.set()
        app.gate.set()
        t.join(timeout=10)
        hang.close()
    wait_for(lambda: rt.statistics().transition is None, what="the reversal to finish")
    assert app.greet("al") == "v1 al"  # the late reversal did not put anything back
    assert rt.apply_patch(spec_for(app), method="local", timeout=5).ok
    assert rt.revert_patch(method="local", timeout=5).ok


def test_registry_release_rules() -> None:
    """Registry.release (the bookkeeping half of a forced revert), on a registry of its own."""
    reg = Registry()
    stuck = reg.birth(1, "stuck", "connection", Priority.LOW)
    idle = reg.birth(2, "idle", "connection", Priority.LOW)
    reg.deactivate(idle)
    assert not reg.release(idle)  # only a running thread is released
    assert reg.release(stuck) and stuck.state is ThreadState.RELEASED and reg.any_released()
    # no transition waits for it
    reg.begin_global()
    assert reg.quiescent() and reg.stragglers() == []
    reg.start_swap()
    reg.finish_global(swapped=True)
    assert stuck.state is ThreadState.RELEASED
    reg.begin_local()
    assert reg.all_moved()
    reg.finish_local()
    assert reg.statistics().by_state == {"released": 1, "inactive": 1}
    # at its next point the threaded layer activates it: in the newest generation, waited for again
    assert reg.activate(stuck) and stuck.state is ThreadState.RUNNING
    assert stuck.generation == reg.newest and not reg.any_released()
    reg.begin_global()
    assert not reg.quiescent() and reg.stragglers() == [stuck]
