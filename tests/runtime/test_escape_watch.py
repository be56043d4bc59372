"""The watch window's hang detection: calls in flight past a bound roll the patch back by force."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from livepatch import Category, WatchPolicy, patch_from_sources
from livepatch.runtime import watch as watch_module
from livepatch.runtime.core import Runtime
from livepatch.runtime.watch import Watch
from tests.runtime.runtime_helpers import LoadedModules, loaded_app, wait_for

pytestmark = pytest.mark.timeout(60)

V1 = """
import threading

gate = threading.Event()
entered = threading.Event()


def greet(name):
    return "v1 " + name
"""

V2 = V1.replace(
    '    return "v1 " + name', '    entered.set()\n    gate.wait(30)\n    return "v2 " + name'
)


@pytest.fixture
def app(rt: Runtime, tmp_path: Path) -> Iterator[ModuleType]:
    with loaded_app(rt, tmp_path, V1, "lp_watch", force=True) as mod:
        yield mod


def _watcher(patch_id: str) -> threading.Thread:
    return next(t for t in threading.enumerate() if t.name == f"livepatch-watch-{patch_id}")


def test_a_call_hanging_in_the_new_code_rolls_the_patch_back_by_force(
    rt: Runtime, app: ModuleType
) -> None:
    spec = patch_from_sources({app.__name__: (V1, V2)}, category=Category.THREAD_LOCAL)
    policy = WatchPolicy(window_s=30, max_call_ms=50, max_slow_calls=0)
    r = rt.apply_patch(spec, method="global", watch=policy)
    assert r.outcome == "applied", r.reason
    watcher = _watcher(spec.patch_id)
    replies: list[str] = []

    def connection() -> None:
        with rt.managed_thread("connection"):
            rt.quiescence_point()
            replies.append(app.greet("bob"))
            rt.quiescence_point()

    t = threading.Thread(target=connection, name="conn-slow", daemon=True)
    t.start()
    try:
        assert app.entered.wait(10)
        watcher.join(timeout=30)  # the window ends itself: it sees the call overdue and rolls back
        assert not watcher.is_alive()
        rb = rt.history()[-1]
        assert (rb.action, rb.outcome, rb.method) == ("revert", "rolled-back", "force"), rb.reason
        assert "took longer than 50 ms" in rb.reason and "conn-slow" in rb.reason
        assert "forced" in [e.name for e in rb.events]
        assert rt.applied_patches() == []
        assert app.greet("al") == "v1 al"  # new calls: the old code, while conn-slow still hangs
        assert t.is_alive() and replies == []
    finally:
        app.gate.set()
        t.join(timeout=10)
    assert replies == ["v2 bob"]  # the hung call finished in the new code
    assert rt._watch is None


def test_a_window_without_slow_calls_keeps_the_patch(rt: Runtime, app: ModuleType) -> None:
    fast = V1.replace('"v1 "', '"v2 "')
    spec = patch_from_sources({app.__name__: (V1, fast)}, category=Category.THREAD_LOCAL)
    r = rt.apply_patch(spec, method="global", watch=WatchPolicy(window_s=0.3, max_call_ms=1000))
    assert r.ok
    for _ in range(100):
        assert app.greet("x") == "v2 x"
    _watcher(spec.patch_id).join(timeout=30)
    assert rt.applied_patches() == [spec.patch_id]
    assert rt.revert_patch(method="global").ok


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _plain(gate: threading.Event) -> str:
    gate.wait(10)
    return "done"


def test_verdicts_count_returned_slow_calls_and_calls_in_flight() -> None:
    clock = _Clock()
    w = Watch(WatchPolicy(window_s=10, max_call_ms=100, max_slow_calls=1), clock=clock)
    timed = w.timed(_plain, "m:plain")  # type: ignore[arg-type]
    done = threading.Event()
    done.set()
    clock.now += 0.0
    assert timed(done) == "done" and w.verdict() is None  # a fast call
    # a slow call that returned: counted, but one is tolerated
    gate = threading.Event()
    t = threading.Thread(target=timed, args=(gate,))
    t.start()
    wait_for(lambda: len(w._in_flight) == 1, what="the call to start")
    clock.now += 0.2
    assert [c.target for c in w.overdue()] == ["m:plain"]
    gate.set()
    t.join(10)
    assert w.slow_done == 1 and w.verdict() is None
    # a second one, still in flight: over the limit, and forced (it sits in the new code)
    gate2 = threading.Event()
    t2 = threading.Thread(target=timed, args=(gate2,), name="conn-2")
    t2.start()
    wait_for(lambda: len(w._in_flight) == 1, what="the second call to start")
    clock.now += 0.5
    v = w.verdict()
    assert v is not None and v.forced and "conn-2" in v.reason and "2 calls" in v.reason
    gate2.set()
    t2.join(10)
    # once it returned: still over the limit, but nothing hangs, so a normal revert will do
    v = w.verdict()
    assert v is not None and not v.forced and w.slow_done == 2


def test_errors_come_first_and_generators_are_not_timed() -> None:
    w = Watch(WatchPolicy(window_s=10, max_errors=0, max_call_ms=1))

    def gen() -> Iterator[int]:
        yield 1

    assert w.timed(gen, "m:gen") is gen  # type: ignore[arg-type]
    w.on_error(ValueError("boom"))
    v = w.verdict()
    assert v is not None and not v.forced and "ValueError('boom')" in v.reason


def test_coroutines_are_timed() -> None:
    clock = _Clock()
    w = Watch(WatchPolicy(window_s=10, max_call_ms=100), clock=clock)

    async def coro() -> str:
        clock.now += 1.0  # this call "takes" a second
        return "ok"

    assert asyncio.run(w.timed(coro, "m:coro")()) == "ok"  # type: ignore[arg-type]
    assert w.slow_done == 1 and w.verdict() is not None


def test_policy_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_call_ms"):
        WatchPolicy(max_call_ms=0)
    with pytest.raises(ValueError, match=">= 0"):
        WatchPolicy(max_slow_calls=-1)


SLOW_V1 = """
import threading

gate = threading.Event()
entered = threading.Event()
CLOCK = None


def slow(name):
    return "v1 " + name


def rows(n):
    for i in range(n):
        yield i
"""
SLOW_V2 = SLOW_V1.replace(
    '    return "v1 " + name',
    '    CLOCK.now += 1.0  # this call "takes" a second\n    return "v2 " + name',
).replace(
    "    for i in range(n):\n        yield i",
    "    entered.set()\n    gate.wait(30)\n    for i in range(n):\n        yield i",
)


def test_a_slow_verdict_whose_normal_rollback_cannot_quiesce_is_forced(
    rt: Runtime, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow calls returned (so no call is overdue and the rollback starts as a normal one), but another
    thread sits in the new code where calls are not timed (a generator): the normal revert cannot reach
    quiescence, so the window falls back to the forced one."""
    clock = _Clock()
    monkeypatch.setattr(watch_module, "Watch", lambda policy: Watch(policy, clock=clock))
    lm = LoadedModules(tmp_path)
    mod = lm.load(SLOW_V1, "lp_watch_slow")
    mod.CLOCK = clock
    spec = patch_from_sources({mod.__name__: (SLOW_V1, SLOW_V2)}, category=Category.THREAD_LOCAL)
    got: list[list[int]] = []

    def reader() -> None:
        with rt.managed_thread("reader"):
            rt.quiescence_point()
            got.append(list(mod.rows(2)))  # blocks inside the new generator until the gate opens

    t = threading.Thread(target=reader, name="reader-0", daemon=True)
    try:
        policy = WatchPolicy(window_s=30, max_call_ms=100, max_slow_calls=0)
        assert rt.apply_patch(spec, method="global", watch=policy).ok
        watcher = _watcher(spec.patch_id)
        t.start()
        assert mod.entered.wait(10)
        assert mod.slow("a") == "v2 a"  # one slow call, returned: trips the window
        watcher.join(timeout=30)
        mine = [h for h in rt.history() if h.patch_id == spec.patch_id]
        assert [(h.action, h.outcome) for h in mine[-2:]] == [
            ("revert", "aborted"),
            ("revert", "rolled-back"),
        ], [h.reason for h in mine]
        assert "automatic rollback" in mine[-2].reason and mine[-1].method == "force"
        assert "reader-0 (rows)" in mine[-1].reason
        assert mod.slow("b") == "v1 b"
    finally:
        mod.gate.set()
        t.join(timeout=10)
        while rt.applied_patches():
            if not rt.revert_patch(method="global", force=True).ok:
                break
        lm.close()
    assert got == [[0, 1]]
