"""Swap time against patch size: 10 / 100 / 1,000 changed functions (goal: <= 20 us per function).

Two measurements per size, side by side in one run:
- `swap_in` of a StagedPatch alone (the work done while threads are parked), median of --repeats;
- `livepatch.apply_patch(..., method="global")` with no managed thread, its `timings["swap"]` and
  `timings["stage"]` (median over --repeats apply/revert cycles).

Also the cost of one call through a local-migration trampoline (begin_dispatch) against a direct call,
timeit medians side by side.

Usage: .venv/bin/python bench/swap_size.py [--sizes 10 100 1000] [--repeats 21] [--json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import livepatch
from livepatch.patch.diff import patch_from_sources
from livepatch.runtime.staging import stage


def module_source(n: int, version: int) -> str:
    parts = []
    for i in range(n):
        parts.append(f"def handler_{i}(store, key, default=None):\n")
        parts.append(
            f"    value = store.get(key, default)\n    return (value, {i}, {version})\n\n\n"
        )
    for i in range(0, n, 10):  # some methods too
        parts.append(
            f"class Command{i}:\n    def run(self, store, key):\n        return store.get(key, {version})\n\n\n"
        )
    return "".join(parts)


def load(directory: Path, name: str, text: str) -> object:
    (directory / f"{name}.py").write_text(text)
    return importlib.import_module(name)


def measure(n: int, repeats: int, directory: Path) -> dict[str, float]:
    name = f"bench_swap_{n}"
    v1, v2 = module_source(n, 1), module_source(n, 2)
    module = load(directory, name, v1)
    spec = patch_from_sources({name: (v1, v2)})
    t0 = time.perf_counter_ns()
    staged = stage(spec)
    stage_ms = (time.perf_counter_ns() - t0) / 1e6
    swaps = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        staged.swap_in()
        swaps.append(time.perf_counter_ns() - t0)
        staged.swap_out()
    assert module.handler_0({}, "k")[2] == 1  # type: ignore[attr-defined]
    functions = staged.function_count
    apply_swap, apply_stage, apply_total = [], [], []
    for i in range(repeats):
        r = livepatch.apply_patch(
            patch_from_sources({name: (v1, v2)}, patch_id=f"swap-{n}-{i}"),
            method="global",
            timeout=10.0,
        )
        if not r.ok:
            raise SystemExit(f"apply failed: {r.outcome} {r.reason}")
        assert module.handler_0({}, "k")[2] == 2  # type: ignore[attr-defined]
        apply_swap.append(r.timings["swap"])
        apply_stage.append(r.timings["stage"])
        apply_total.append(r.timings["total"])
        rv = livepatch.revert_patch(f"swap-{n}-{i}", method="global", timeout=10.0)
        if not rv.ok:
            raise SystemExit(f"revert failed: {rv.outcome} {rv.reason}")
    swap_us = statistics.median(swaps) / 1e3
    direct_ns, dispatched_ns = dispatch_overhead(module, staged)
    return {
        "call_direct_ns": direct_ns,
        "call_dispatched_ns": dispatched_ns,
        "functions": functions,
        "stage_ms": stage_ms,
        "swap_in_us": swap_us,
        "swap_in_us_per_function": swap_us / functions,
        "apply_swap_ms": statistics.median(apply_swap),
        "apply_swap_us_per_function": statistics.median(apply_swap) * 1e3 / functions,
        "apply_stage_ms": statistics.median(apply_stage),
        "apply_total_ms": statistics.median(apply_total),
    }


def dispatch_overhead(
    module: object, staged: object, rounds: int = 7, number: int = 20000
) -> tuple[float, float]:
    """Median ns per call of a patched function: installed directly vs through the trampoline."""
    fn = module.handler_0  # type: ignore[attr-defined]
    store: dict[str, int] = {}
    direct, dispatched = [], []
    for _ in range(rounds):
        direct.append(timeit.timeit(lambda: fn(store, "k"), number=number) / number * 1e9)
        staged.begin_dispatch(lambda: True)  # type: ignore[attr-defined]
        dispatched.append(timeit.timeit(lambda: fn(store, "k"), number=number) / number * 1e9)
        staged.end_dispatch(keep_new=False)  # type: ignore[attr-defined]
    return statistics.median(direct), statistics.median(dispatched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        results = {n: measure(n, args.repeats, Path(tmp)) for n in args.sizes}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{'changed':>8} {'functions':>9} {'stage ms':>9} {'swap_in us':>11} {'us/func':>8} {'apply swap ms':>14} {'us/func':>8} {'apply total ms':>15}"
    )
    for n, r in results.items():
        print(
            f"{n:>8} {r['functions']:>9} {r['stage_ms']:>9.2f} {r['swap_in_us']:>11.1f} "
            f"{r['swap_in_us_per_function']:>8.2f} {r['apply_swap_ms']:>14.3f} "
            f"{r['apply_swap_us_per_function']:>8.2f} {r['apply_total_ms']:>15.2f}"
        )
    r = next(iter(results.values()))
    print(
        f"one call: direct {r['call_direct_ns']:.0f} ns, through the dispatch trampoline "
        f"{r['call_dispatched_ns']:.0f} ns (x{r['call_dispatched_ns'] / r['call_direct_ns']:.2f})"
    )


if __name__ == "__main__":
    main()
