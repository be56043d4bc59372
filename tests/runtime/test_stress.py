"""Stress: 16 managed threads run requests while a real patch is applied and reverted 1,000 times; and
20 threads of three priorities, most of them blocked in the application, through 300 global transitions.

Every request calls three patched functions (yielding the GIL in between, as a request doing I/O would); both must answer from the same version, and that version must be
the one of the thread's generation (apply -> v2, revert -> v1, one generation per transition).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import livepatch
from livepatch import Category
from livepatch.runtime import quiescence
from livepatch.runtime.core import Runtime
from livepatch.runtime.events import Recorder
from livepatch.runtime.threads import Priority
from tests.runtime.runtime_helpers import LoadedModules, Versioned, Workers, fixture_source

THREADS = 16
TRANSITIONS = 1000


@pytest.mark.timeout(180)
def test_thousand_transitions_under_load_never_mix_versions(rt: Runtime, tmp_path: Path) -> None:
    v1, v2 = fixture_source("app_v1.py"), fixture_source("app_v2.py")
    lm = LoadedModules(tmp_path)
    app = lm.load(v1)
    spec = livepatch.patch_from_sources({app.__name__: (v1, v2)}, category=Category.THREAD_LOCAL)
    stop = threading.Event()
    ready = threading.Barrier(THREADS + 1)
    errors: list[str] = []
    requests = [0] * THREADS
    seen = [set[str]() for _ in range(THREADS)]

    def worker(i: int) -> None:
        with rt.managed_thread("worker"):
            ready.wait(timeout=30)
            store = app.Store()
            while not stop.is_set():
                rt.quiescence_point()
                expected = "v2" if rt.current_generation() % 2 else "v1"
                a = app.first(i)[0]
                time.sleep(
                    0
                )  # a request does I/O: the GIL moves (and a patch could land) mid-request
                b = store.lookup(i)[0]
                c = app.second(i)[0]
                if not (a == b == c == expected):
                    errors.append(f"worker {i}: expected {expected}, got {a} {b} {c}")
                seen[i].add(a)
                requests[i] += 1

    ts = [
        threading.Thread(target=worker, args=(i,), name=f"w{i}", daemon=True)
        for i in range(THREADS)
    ]
    for t in ts:
        t.start()
    ready.wait(timeout=30)
    outcomes: list[str] = []
    try:
        for n in range(TRANSITIONS):
            method = "global" if (n // 2) % 2 == 0 else "local"
            if n % 2 == 0:
                r = rt.apply_patch(spec, method=method, timeout=30)
            else:
                method = "local" if method == "global" else "global"
                r = rt.revert_patch(spec.patch_id, method=method, timeout=30)
            outcomes.append(f"{r.action}/{r.method}/{r.outcome}")
            assert r.ok, r.reason
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=30)
        lm.close()
    assert errors == []
    assert not any(t.is_alive() for t in ts)
    assert rt.statistics().generation == TRANSITIONS
    assert app.first(0) == ("v1", 0)
    assert {"apply/global/applied", "apply/local/applied"} <= set(outcomes)
    assert {"revert/global/reverted", "revert/local/reverted"} <= set(outcomes)
    assert all(r > 0 for r in requests)
    assert all(s == {"v1", "v2"} for s in seen), "some worker never ran both versions"


class _Idle:
    """Managed threads blocked in the application (waiting for work) that only the wake-up hook kicks.

    The kick counter makes a kick between a thread's quiescence point and its wait impossible to lose."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.cv = threading.Condition()
        self.kicks = 0
        self.stop = False

    def hook(self) -> None:
        with self.cv:
            self.kicks += 1
            self.cv.notify_all()

    def slow(self, ready: threading.Barrier) -> None:
        """A LOW worker whose requests wait 1 ms (I/O): the kicked threads pass their points before it parks."""
        with self.rt.managed_thread("slow", Priority.LOW):
            ready.wait(timeout=30)
            while not self.stop:
                self.rt.quiescence_point()
                time.sleep(0.001)

    def run(self, role: str, priority: Priority, ready: threading.Barrier) -> None:
        with self.rt.managed_thread(role, priority):
            ready.wait(timeout=30)
            while True:
                with self.cv:
                    seen = self.kicks
                self.rt.quiescence_point()
                with self.cv:
                    while self.kicks == seen and not self.stop:
                        self.cv.wait()
                    if self.stop:
                        return


@pytest.mark.timeout(120)
@pytest.mark.parametrize("use_priorities", [True, False])
def test_parks_in_priority_order_and_the_hooks_follow_each_freed_priority(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch, use_priorities: bool
) -> None:
    """12 busy LOW workers, 2 LOW ones doing 1 ms of I/O per request, 6 idle MEDIUM and 2 idle CRITICAL
    threads woken only by the hook; 300 global transitions. The patcher's poll is switched off (60 s), so only the parks that wake the patcher make it
    call the hooks again: the last LOW park must, or the MEDIUM threads would never be kicked again."""
    monkeypatch.setattr(quiescence, "_POLL_FIRST_S", 60.0)
    monkeypatch.setattr(quiescence, "_POLL_MAX_S", 60.0)
    code = Versioned()
    idle = _Idle(rt)
    roles = [("waiting", Priority.MEDIUM)] * 6 + [("listener", Priority.CRITICAL)] * 2
    ready = threading.Barrier(len(roles) + 3)
    ts = [
        threading.Thread(target=idle.run, args=(r, p, ready), name=f"{r}-{i}", daemon=True)
        for i, (r, p) in enumerate(roles)
    ]
    ts += [
        threading.Thread(target=idle.slow, args=(ready,), name=f"slow-{i}", daemon=True)
        for i in range(2)
    ]
    for t in ts:
        t.start()
    ready.wait(timeout=30)
    w = Workers(rt, code, 12, priority=Priority.LOW).start()
    rt.add_wakeup_hook(idle.hook)
    orders: list[list[str]] = []
    try:
        for _ in range(300):
            rec = Recorder()
            rt.run_global(code.swap, timeout=10, use_priorities=use_priorities, recorder=rec)
            orders.append([e.thread or "" for e in rec.events() if e.name == "reached"])
    finally:
        rt.remove_wakeup_hook(idle.hook)
        with idle.cv:
            idle.stop = True
            idle.cv.notify_all()
        for t in ts:
            t.join(timeout=30)
        w.stop()
    assert not any(t.is_alive() for t in ts)
    assert code.swaps == 300
    assert w.errors == []
    assert all(len(o) == 22 for o in orders)
    if use_priorities:
        rank = {"worker": 0, "slow": 0, "waiting": 1, "listener": 2}
        for o in orders:
            ranks = [rank[name.split("-")[0]] for name in o]
            assert ranks == sorted(ranks), o  # LOW, then MEDIUM, then CRITICAL


@pytest.mark.timeout(180)
def test_threads_that_deactivate_and_activate_all_the_time_never_mix_versions(
    rt: Runtime,
    tmp_path: Path,
) -> None:
    """12 threads alternate a request with a spell outside their work loop (rt.deactivate, yield the GIL,
    rt.activate) while a real patch is applied and reverted 400 times, both methods. The activeness check
    now inspects the inactive ones too: none of them sits in patched code, so no patch may be refused;
    every request still runs one version only."""
    v1, v2 = fixture_source("app_v1.py"), fixture_source("app_v2.py")
    lm = LoadedModules(tmp_path)
    app = lm.load(v1)
    spec = livepatch.patch_from_sources({app.__name__: (v1, v2)}, category=Category.THREAD_LOCAL)
    stop = threading.Event()
    n = 12
    ready = threading.Barrier(n + 1)
    errors: list[str] = []
    idles = [0] * n

    def worker(i: int) -> None:
        with rt.managed_thread("connection"):
            ready.wait(timeout=30)
            while not stop.is_set():
                rt.deactivate()  # waiting for the next client
                time.sleep(0)
                idles[i] += 1
                rt.activate()
                rt.quiescence_point()
                expected = "v2" if rt.current_generation() % 2 else "v1"
                a = app.first(i)[0]
                time.sleep(0)
                b = app.second(i)[0]
                if not a == b == expected:
                    errors.append(f"worker {i}: expected {expected}, got {a} {b}")

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    ready.wait(timeout=30)
    try:
        for k in range(400):
            method = "global" if (k // 2) % 2 == 0 else "local"
            r = (
                rt.apply_patch(spec, method=method, timeout=30)
                if k % 2 == 0
                else rt.revert_patch(spec.patch_id, method=method, timeout=30)
            )
            assert r.ok, f"transition {k}: {r.outcome}: {r.reason}"
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=30)
        lm.close()
    assert not any(t.is_alive() for t in ts)
    assert errors == []
    assert all(i > 0 for i in idles)
    assert rt.statistics().generation == 400
