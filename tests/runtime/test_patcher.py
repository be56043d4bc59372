"""apply_patch / revert_patch end to end (on a fresh Runtime): real fixture modules, real stage(), real managed
threads."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import livepatch
from livepatch import Category, PatchSpec, Priority, Refusal, WatchPolicy, patch_from_sources
from livepatch.runtime.core import Runtime
from livepatch.runtime.lifecycle import PatchResult
from tests.runtime.runtime_helpers import LoadedModules, fixture_source, wait_for

V1 = fixture_source("app_v1.py")
V2 = fixture_source("app_v2.py")


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[LoadedModules]:
    lm = LoadedModules(tmp_path)
    try:
        yield lm
    finally:
        lm.close()


@pytest.fixture
def app(rt: Runtime, modules: LoadedModules) -> Iterator[ModuleType]:
    mod = modules.load(V1)
    try:
        yield mod
    finally:
        # leave no patch of this module applied, whatever the test did
        while any(p for p in rt.applied_patches()):
            if not rt.revert_patch(method="global").ok:
                break


def spec_for(
    mod: ModuleType,
    new: str = V2,
    old: str = V1,
    category: Category = Category.THREAD_LOCAL,
    hooks: str | None = None,
) -> PatchSpec:
    return patch_from_sources({mod.__name__: (old, new)}, category=category, hooks_source=hooks)


@pytest.mark.parametrize("method", ["global", "local"])
def test_apply_and_revert_restore_exactly_the_previous_code(
    rt: Runtime, app: ModuleType, method: str
) -> None:
    before = {
        "first": app.first.__code__,
        "second": app.second.__code__,
        "lookup": app.Store.lookup.__code__,
    }
    store = app.Store()
    lookup = store.lookup  # a bound method taken before the patch sees the new code
    spec = spec_for(app)
    r = rt.apply_patch(spec, method=method)
    assert r.outcome == "applied", r.reason
    assert (r.action, r.method) == ("apply", method)
    assert app.first(1) == ("v2", 1) and lookup(2) == ("v2", 2)
    assert rt.applied_patches()[-1] == spec.patch_id
    names = [e.name for e in r.events]
    assert names[:3] == ["requested", "verified", "staged"]
    assert names[-1] == "finished" and "swapped" in names
    assert all(a.t_ns <= b.t_ns for a, b in zip(r.events, r.events[1:], strict=False))
    assert set(r.timings) >= {"verify", "stage", "sync", "swap", "total"}
    r2 = rt.revert_patch(spec.patch_id, method=method)
    assert r2.outcome == "reverted", r2.reason
    assert app.first.__code__ is before["first"]
    assert app.second.__code__ is before["second"]
    assert app.Store.lookup.__code__ is before["lookup"]
    assert lookup(3) == ("v1", 3)
    assert spec.patch_id not in rt.applied_patches()
    hist = rt.history()
    assert hist[-2:] == [r, r2]


def test_auto_method_follows_the_category(rt: Runtime, app: ModuleType) -> None:
    r = rt.apply_patch(spec_for(app, category=Category.THREAD_LOCAL))
    assert r.method == "local" and r.ok
    assert rt.revert_patch().method == "local"
    r = rt.apply_patch(spec_for(app, category=Category.PROCESS))
    assert r.method == "global" and r.ok
    assert rt.revert_patch().ok


def test_local_is_refused_for_a_process_patch(rt: Runtime, app: ModuleType) -> None:
    r = rt.apply_patch(spec_for(app, category=Category.PROCESS), method="local")
    assert r.outcome == "refused"
    assert "cannot use local quiescence" in r.reason
    assert app.first(1) == ("v1", 1)


def test_bad_requests_are_refused_and_change_nothing(rt: Runtime, app: ModuleType) -> None:
    spec = spec_for(app)
    assert rt.apply_patch(spec, method="sideways").outcome == "refused"
    assert rt.revert_patch("no-such-patch").outcome == "refused"
    assert rt.apply_patch(spec).ok
    again = rt.apply_patch(spec)
    assert again.outcome == "refused" and "already applied" in again.reason
    assert rt.revert_patch().ok
    refusal = Refusal(app.__name__, "Store", "a new instance attribute", "give it a class default")
    r = rt.apply_patch(dataclasses.replace(spec, refusals=(refusal,)))
    assert r.outcome == "refused" and "a new instance attribute" in r.reason
    assert rt.apply_patch(spec, timeout=0).outcome == "refused"
    assert app.first(1) == ("v1", 1)


def test_a_managed_thread_cannot_apply(rt: Runtime, app: ModuleType) -> None:
    results: list[PatchResult] = []

    def run() -> None:
        with rt.managed_thread("server"):
            results.append(rt.apply_patch(spec_for(app), method="global"))
            results.append(rt.revert_patch())

    t = threading.Thread(target=run, name="managed-caller")
    t.start()
    t.join(timeout=30)
    assert [r.outcome for r in results] == ["refused", "refused"]
    assert all("managed thread (managed-caller)" in r.reason for r in results)
    assert app.first(1) == ("v1", 1)


def test_stacking_reverts_newest_first_and_names_the_blocking_patch(
    rt: Runtime,
    app: ModuleType,
) -> None:
    v3 = V2.replace('return ("v2", x)\n\n\ndef second', 'return ("v3", x)\n\n\ndef second')
    v1_third = V1.replace(
        'def third(x):\n    return ("v1", x)', 'def third(x):\n    return ("v1b", x)'
    )
    p1 = spec_for(app)
    p2 = spec_for(app, old=V2, new=v3)
    assert rt.apply_patch(p1).ok and rt.apply_patch(p2).ok
    assert app.first(0) == ("v3", 0)
    assert rt.applied_patches()[-2:] == [p1.patch_id, p2.patch_id]
    blocked = rt.revert_patch(p1.patch_id)
    assert blocked.outcome == "refused"
    assert p2.patch_id in blocked.reason and "first" in blocked.reason
    assert rt.revert_patch().ok  # p2
    assert app.first(0) == ("v2", 0)
    assert rt.revert_patch().ok  # p1
    assert app.first(0) == ("v1", 0)
    # an older patch whose targets no later patch touches may be reverted by name
    p3 = spec_for(app)
    p4 = patch_from_sources({app.__name__: (V2, V2.replace('("v1", x)', '("v1b", x)'))})
    assert v1_third  # (p4 touches only third)
    assert rt.apply_patch(p3).ok and rt.apply_patch(p4).ok
    assert rt.revert_patch(p3.patch_id).ok
    assert app.first(0) == ("v1", 0) and app.third(0) == ("v1b", 0)
    assert rt.applied_patches()[-1] == p4.patch_id


def _serving_thread(
    rt: Runtime, app: ModuleType, stop: threading.Event, started: threading.Event
) -> threading.Thread:
    def run() -> None:
        with rt.managed_thread("acceptor", Priority.CRITICAL):
            started.set()
            app.serve(stop, rt.quiescence_point)

    t = threading.Thread(target=run, name="acceptor-0", daemon=True)
    t.start()
    assert started.wait(timeout=10)
    return t


def test_activeness_check_refuses_a_patch_of_a_running_loop(rt: Runtime, app: ModuleType) -> None:
    new = V1.replace("        point()\n", "        point()\n        x = 1\n")
    spec = spec_for(app, new=new, category=Category.PROCESS)
    old_serve = app.serve.__code__
    stop, started = threading.Event(), threading.Event()
    t = _serving_thread(rt, app, stop, started)
    try:
        r = rt.apply_patch(spec, method="global", timeout=10)
        assert r.outcome == "refused"
        assert "acceptor-0" in r.reason and "serve" in r.reason and "allow_active" in r.reason
        assert app.serve.__code__ is old_serve
        forced = rt.apply_patch(spec, method="global", timeout=10, allow_active=True)
        assert forced.outcome == "applied", forced.reason
        assert app.serve.__code__ is not old_serve
        # a loop started now runs the new code; the revert is allowed over it the same way
        stop2, started2 = threading.Event(), threading.Event()
        t2 = _serving_thread(rt, app, stop2, started2)
        try:
            back = rt.revert_patch(timeout=10)
            assert back.outcome == "reverted", back.reason
            assert app.serve.__code__ is old_serve
        finally:
            stop2.set()
            t2.join(timeout=10)
    finally:
        stop.set()
        t.join(timeout=10)


def test_deadline_aborts_and_leaves_the_code_unchanged(rt: Runtime, app: ModuleType) -> None:
    release, entered = threading.Event(), threading.Event()

    def stuck() -> None:
        with rt.managed_thread("txn", Priority.LOW):
            entered.set()
            release.wait(timeout=60)  # never reaches a quiescence point

    t = threading.Thread(target=stuck, name="stuck-txn", daemon=True)
    t.start()
    assert entered.wait(timeout=10)
    old = app.first.__code__
    try:
        for method in ("global", "local"):
            t0 = time.monotonic()
            r = rt.apply_patch(spec_for(app), method=method, timeout=0.3)
            assert time.monotonic() - t0 < 5
            assert r.outcome == "aborted", r.reason
            assert "stuck-txn (role txn, priority LOW)" in r.reason
            assert r.events[-1].name == "aborted"
            assert app.first.__code__ is old and app.first(1) == ("v1", 1)
    finally:
        release.set()
        t.join(timeout=10)
    assert rt.statistics().transition is None


HOOKS = """
calls = []

def pre_patch(ctx):
    calls.append(("pre_patch", ctx.patch_id, sorted(ctx.modules)))
    if getattr(ctx.modules[next(iter(ctx.modules))], "VETO", False):
        raise RuntimeError("not today")

def transform(ctx):
    mod = next(iter(ctx.modules.values()))
    mod.TRANSFORMED = mod.RUNTIME.statistics().by_state  # the test's runtime (set below)
    calls.append(("transform",))

def post_patch(ctx):
    calls.append(("post_patch",))

def pre_revert(ctx):
    calls.append(("pre_revert",))

def post_revert(ctx):
    calls.append(("post_revert",))
"""


def test_hooks_run_in_order_and_transform_runs_while_threads_are_parked(
    rt: Runtime, app: ModuleType
) -> None:
    stop = threading.Event()
    ready = threading.Barrier(3)

    def worker() -> None:
        with rt.managed_thread("worker"):
            ready.wait(timeout=10)
            while not stop.is_set():
                rt.quiescence_point()
                app.first(1)

    app.RUNTIME = rt  # type: ignore[attr-defined]  # what the transform hook reads
    ts = [threading.Thread(target=worker, daemon=True) for _ in range(2)]
    for t in ts:
        t.start()
    ready.wait(timeout=10)
    spec = spec_for(app, category=Category.DATA, hooks=HOOKS)
    try:
        local = rt.apply_patch(spec_for(app, hooks=HOOKS), method="local")
        assert local.outcome == "refused" and "transform" in local.reason
        r = rt.apply_patch(spec)
        assert r.outcome == "applied", r.reason
        assert app.TRANSFORMED == {"parked": 2}  # both workers were parked while it ran
        ns = rt._stack[-1].hooks.namespace
        assert rt.revert_patch().ok
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=10)
    assert ns is not None
    assert ns.calls == [
        ("pre_patch", spec.patch_id, [app.__name__]),
        ("transform",),
        ("post_patch",),
        ("pre_revert",),
        ("post_revert",),
    ]


def test_pre_patch_veto_refuses_and_a_failing_transform_changes_nothing(
    rt: Runtime, app: ModuleType
) -> None:
    app.VETO = True
    spec = spec_for(app, category=Category.DATA, hooks=HOOKS)
    r = rt.apply_patch(spec)
    assert r.outcome == "refused" and "pre_patch hook vetoed the patch: not today" in r.reason
    assert app.first(1) == ("v1", 1)
    app.VETO = False
    failing = HOOKS.replace('    calls.append(("transform",))', "    raise KeyError('state')")
    old = app.first.__code__
    r = rt.apply_patch(spec_for(app, category=Category.DATA, hooks=failing))
    assert r.outcome == "failed" and "transform hook raised" in r.reason
    assert app.first.__code__ is old
    assert rt.statistics().transition is None


ADDS_A_NAME = V2 + "\n\nNEW_LIMIT = 7\n"
SEES_THE_NEW_NAMES = """
seen = []

def transform(ctx):
    mod = next(iter(ctx.modules.values()))
    seen.append((mod.NEW_LIMIT, mod.first(1)))  # a name the patch adds; the code is still the old one
    if getattr(mod, "FAIL_TRANSFORM", False):
        raise KeyError("state")
"""


def test_the_transform_sees_the_names_the_patch_adds_and_a_failing_one_unbinds_them(
    rt: Runtime, app: ModuleType
) -> None:
    """The transform hook runs before the swap with the names the patch adds to modules already bound
    (a generated transformer may build a new class's object: kvserver 1287f55ec9's `PubSub()`), the
    old code still installed (a thread that is not parked keeps running code that matches the data);
    a transform that fails leaves no added name and the old code."""
    old = app.first.__code__
    app.FAIL_TRANSFORM = True  # type: ignore[attr-defined]
    spec = spec_for(app, new=ADDS_A_NAME, category=Category.DATA, hooks=SEES_THE_NEW_NAMES)
    r = rt.apply_patch(spec)
    assert r.outcome == "failed" and "transform hook raised KeyError" in r.reason, r.reason
    assert app.first.__code__ is old and app.first(1) == ("v1", 1)
    assert "NEW_LIMIT" not in vars(app)
    assert "swapped" not in [e.name for e in r.events]
    app.FAIL_TRANSFORM = False  # type: ignore[attr-defined]
    r = rt.apply_patch(spec)
    assert r.outcome == "applied", r.reason
    ns = rt._stack[-1].hooks.namespace
    assert ns is not None and ns.seen == [(7, ("v1", 1))]
    assert app.NEW_LIMIT == 7 and app.first(1) == ("v2", 1)  # type: ignore[attr-defined]
    assert rt.revert_patch().ok
    assert app.first.__code__ is old and "NEW_LIMIT" not in vars(app)


def test_watch_rolls_back_on_a_patcher_side_thread(rt: Runtime, app: ModuleType) -> None:
    hooks = "import threading\nrevert_threads = []\n\ndef post_revert(ctx):\n    revert_threads.append(threading.current_thread().name)\n"
    spec = spec_for(app, hooks=hooks)
    raised_in: list[str] = []
    r = rt.apply_patch(spec, method="global", watch=WatchPolicy(window_s=30, max_errors=2))
    assert r.outcome == "applied" and "watch-started" in [e.name for e in r.events]
    entry = rt._stack[-1]
    ns = entry.hooks.namespace
    assert ns is not None

    def client() -> None:
        with rt.managed_thread("conn"):
            for i in range(3):
                rt.quiescence_point()
                try:
                    app.risky(-1 - i)
                except ValueError:
                    raised_in.append(threading.current_thread().name)

    t = threading.Thread(target=client, name="conn-7")
    t.start()
    t.join(timeout=30)
    assert raised_in == ["conn-7"] * 3

    # the history entry is written after post_revert ran (on its helper thread): wait for it, not for
    # the stack, which changes first
    def reverts() -> list[livepatch.PatchResult]:
        return [h for h in rt.history() if h.patch_id == spec.patch_id and h.action == "revert"]

    wait_for(lambda: bool(reverts()), timeout=30, what="rollback")
    assert spec.patch_id not in rt.applied_patches()
    rb = reverts()[-1]
    assert rb.outcome == "rolled-back"
    assert "3 exceptions escaped" in rb.reason and "max 2" in rb.reason
    # hooks run on a helper of the calling thread (hook_runner.py): here, of the watch's own thread
    assert ns.revert_threads == [f"livepatch-watch-{spec.patch_id}/post_revert"]
    assert app.risky(-1) == -1  # v1 again


def test_watch_window_ends_and_keeps_the_patch(rt: Runtime, app: ModuleType) -> None:
    spec = spec_for(app)
    r = rt.apply_patch(spec, method="global", watch=WatchPolicy(window_s=0.2, max_errors=0))
    assert r.ok
    watcher = next(t for t in threading.enumerate() if t.name == f"livepatch-watch-{spec.patch_id}")
    watcher.join(timeout=10)
    assert rt._watch is None
    assert spec.patch_id in rt.applied_patches()
    with pytest.raises(ValueError):
        app.risky(-1)
    assert rt.revert_patch().ok
