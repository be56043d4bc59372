"""What the escape hatches cost (issue 9 item 10), each side by side with its baseline, medians:

1. a hook call on a helper thread with a deadline (hook_runner.call_with_deadline) vs a direct call;
2. a call of a patched function: no window, a watch window (errors counted), a window that also times
   calls (--watch-max-call-ms);
3. quiescence_point() on the fast path vs while a thread released by a forced revert has not rejoined;
4. a forced revert of a one-function patch (request -> finished, from its PatchResult).

    .venv/bin/python bench/escape_overhead.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import timeit
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import livepatch
from livepatch.runtime import core as runtime
from livepatch.runtime.hook_runner import call_with_deadline
from livepatch.runtime.patch_hooks import HookContext, PatchHooks

V1 = "def f(x):\n    return x + 1\n"
V2 = "def f(x):\n    return x + 2\n"


def _load(name: str) -> ModuleType:
    d = Path(tempfile.mkdtemp(prefix="lp-escape-bench-"))
    (d / f"{name}.py").write_text(V1)
    sys.path.insert(0, str(d))
    return __import__(name)


def _per_call(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Median seconds per call of fn over `repeat` timeit runs of `number` calls."""
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number


def hooks(repeat: int) -> dict[str, float]:
    ph = PatchHooks({"pre_patch": lambda ctx: None})
    ctx = HookContext("bench")
    return {
        "direct_us": _per_call(lambda: ph.call("pre_patch", ctx), 2000, repeat) * 1e6,
        "deadline_us": _per_call(
            lambda: call_with_deadline(ph, "pre_patch", ctx, timeout=5.0), 200, repeat
        )
        * 1e6,
    }


def calls(repeat: int) -> dict[str, float]:
    mod = _load("lp_escape_bench_calls")
    spec = livepatch.patch_from_sources(
        {mod.__name__: (V1, V2)}, category=livepatch.Category.THREAD_LOCAL
    )
    f = mod.f
    out = {"plain_ns": _per_call(lambda: f(1), 100_000, repeat) * 1e9}
    for key, policy in (
        ("watch_ns", livepatch.WatchPolicy(window_s=600)),
        ("watch_timed_ns", livepatch.WatchPolicy(window_s=600, max_call_ms=1000)),
    ):
        assert livepatch.apply_patch(spec, method="global", watch=policy).ok
        out[key] = _per_call(lambda: f(1), 100_000, repeat) * 1e9
        assert livepatch.revert_patch(method="global").ok
    return out


def points(repeat: int) -> dict[str, float]:
    out: dict[str, float] = {}
    ready, go, done = threading.Event(), threading.Event(), threading.Event()

    def measure() -> None:
        with livepatch.managed_thread("bench"):
            out["fast_ns"] = _per_call(livepatch.quiescence_point, 200_000, repeat) * 1e9
            ready.set()
            go.wait(30)
            out["released_ns"] = _per_call(livepatch.quiescence_point, 200_000, repeat) * 1e9
            done.set()

    def stuck() -> None:
        with livepatch.managed_thread("stuck"):
            go.wait(30)
            done.wait(30)
            livepatch.quiescence_point()  # rejoins

    s = threading.Thread(target=stuck)
    s.start()
    t = threading.Thread(target=measure)
    t.start()
    ready.wait(30)
    assert s.ident is not None
    runtime.release_threads([s.ident])  # what a forced revert does to a thread inside the new code
    go.set()
    t.join(60)
    s.join(60)
    return out


def forced(repeat: int) -> dict[str, float]:
    mod = _load("lp_escape_bench_force")
    spec = livepatch.patch_from_sources(
        {mod.__name__: (V1, V2)}, category=livepatch.Category.THREAD_LOCAL
    )
    totals, swaps = [], []
    for _ in range(repeat):
        assert livepatch.apply_patch(spec, method="global").ok
        r = livepatch.revert_patch(force=True)
        assert r.ok, r.reason
        totals.append(r.timings["total"])
        swaps.append(r.timings["swap"])
    return {"total_ms": statistics.median(totals), "swap_ms": statistics.median(swaps)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    h = hooks(args.repeat)
    print(
        f"hook call: direct {h['direct_us']:.2f} us, on a helper with a deadline {h['deadline_us']:.1f} us"
    )
    c = calls(args.repeat)
    print(
        f"patched call: no window {c['plain_ns']:.0f} ns, watch window {c['watch_ns']:.0f} ns, "
        f"watch window timing calls {c['watch_timed_ns']:.0f} ns"
    )
    p = points(args.repeat)
    print(
        f"quiescence_point: fast path {p['fast_ns']:.0f} ns, "
        f"while a released thread has not rejoined {p['released_ns']:.0f} ns"
    )
    f = forced(args.repeat)
    print(
        f"forced revert of a one-function patch: total {f['total_ms']:.3f} ms, swap {f['swap_ms']:.3f} ms"
    )


if __name__ == "__main__":
    main()
