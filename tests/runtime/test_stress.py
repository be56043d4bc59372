"""Stress: 16 managed threads run requests while a real patch is applied and reverted 1,000 times.

Every request calls three patched functions (yielding the GIL in between, as a request doing I/O would); both must answer from the same version, and that version must be
the one of the thread's generation (apply -> v2, revert -> v1, one generation per transition).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from runtime_helpers import LoadedModules, fixture_source

import livepatch
from livepatch import Category, apply_patch, managed_thread, quiescence_point, revert_patch
from livepatch.runtime import threads

THREADS = 16
TRANSITIONS = 1000


@pytest.mark.timeout(180)
def test_thousand_transitions_under_load_never_mix_versions(tmp_path: Path) -> None:
    v1, v2 = fixture_source("app_v1.py"), fixture_source("app_v2.py")
    lm = LoadedModules(tmp_path)
    app = lm.load(v1)
    spec = livepatch.patch_from_sources({app.__name__: (v1, v2)}, category=Category.THREAD_LOCAL)
    g0 = threads.statistics().generation
    stop = threading.Event()
    ready = threading.Barrier(THREADS + 1)
    errors: list[str] = []
    requests = [0] * THREADS
    seen = [set[str]() for _ in range(THREADS)]

    def worker(i: int) -> None:
        with managed_thread("worker"):
            ready.wait(timeout=30)
            store = app.Store()
            while not stop.is_set():
                quiescence_point()
                expected = "v2" if (threads.current_generation() - g0) % 2 else "v1"
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
                r = apply_patch(spec, method=method, timeout=30)
            else:
                method = "local" if method == "global" else "global"
                r = revert_patch(spec.patch_id, method=method, timeout=30)
            outcomes.append(f"{r.action}/{r.method}/{r.outcome}")
            assert r.ok, r.reason
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=30)
        lm.close()
    assert errors == []
    assert not any(t.is_alive() for t in ts)
    assert threads.statistics().generation == g0 + TRANSITIONS
    assert app.first(0) == ("v1", 0)
    assert {"apply/global/applied", "apply/local/applied"} <= set(outcomes)
    assert {"revert/global/reverted", "revert/local/reverted"} <= set(outcomes)
    assert all(r > 0 for r in requests)
    assert all(s == {"v1", "v2"} for s in seen), "some worker never ran both versions"
