"""Patch time against heap size: 0 / 1M / 10M live (gc-tracked) objects (goal: ratio 10M/0 <= 1.2).

Invariant 5 of DESIGN.md: resolving targets goes through module and class namespaces, never through a heap
walk, so the cost of a patch must not grow with the data. One process, one patch (50 changed functions and
methods); for each heap size the heap is built (small lists, each tracked by the gc, kept alive), then
`livepatch.apply_patch(method="global")` + `revert_patch` are run --repeats times; medians of
timings["total"] (verify + stage + quiesce + swap, wall clock), the process CPU time of the apply call
(less disturbed by other processes on a shared machine) and timings["swap"] (the pause) are reported,
with the ratios to the empty heap. For contrast, the time one `gc.get_objects()` takes at that heap size (what a heap walk
would cost at the very least) is printed beside it.

Usage: .venv/bin/python bench/heap_size.py [--sizes 0 1000000 10000000] [--repeats 15] [--json]
Needs about 1 GB of memory for 10M objects.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import livepatch
from livepatch.patch.diff import patch_from_sources


def module_source(version: int, n: int = 40) -> str:
    parts = [
        f"def handler_{i}(store, key):\n    return (store.get(key), {i}, {version})\n\n\n"
        for i in range(n)
    ]
    parts.append("class Store:\n")
    parts.extend(
        f"    def op_{i}(self, key):\n        return ({i}, {version})\n\n" for i in range(10)
    )
    return "".join(parts)


def measure(name: str, v1: str, v2: str, repeats: int, tag: str) -> dict[str, float]:
    totals, swaps, cpu = [], [], []
    for i in range(repeats):
        pid = f"heap-{tag}-{i}"
        spec = patch_from_sources({name: (v1, v2)}, patch_id=pid)
        c0 = time.process_time_ns()
        r = livepatch.apply_patch(spec, method="global", timeout=10.0)
        cpu.append((time.process_time_ns() - c0) / 1e6)
        if not r.ok:
            raise SystemExit(f"apply failed: {r.outcome} {r.reason}")
        totals.append(r.timings["total"])
        swaps.append(r.timings["swap"])
        rv = livepatch.revert_patch(pid, method="global", timeout=10.0)
        if not rv.ok:
            raise SystemExit(f"revert failed: {rv.outcome} {rv.reason}")
    t0 = time.perf_counter_ns()
    n_objects = len(gc.get_objects())
    walk_ms = (time.perf_counter_ns() - t0) / 1e6
    return {
        "apply_cpu_ms": statistics.median(cpu),
        "apply_total_ms": statistics.median(totals),
        "apply_swap_ms": statistics.median(swaps),
        "gc_get_objects_ms": walk_ms,
        "gc_tracked_objects": n_objects,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    v1, v2 = module_source(1), module_source(2)
    results: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, tmp)
        (Path(tmp) / "bench_heap_target.py").write_text(v1)
        importlib.import_module("bench_heap_target")
        heap: list[list[int]] = []
        for size in sorted(args.sizes):
            heap.extend([i] for i in range(len(heap), size))  # grow the live heap to `size` objects
            gc.collect()  # settle the collector's counters before timing
            results[size] = measure("bench_heap_target", v1, v2, args.repeats, str(size))
        del heap
    base = results[min(results)]
    for r in results.values():
        r["ratio_to_empty_heap"] = r["apply_total_ms"] / base["apply_total_ms"]
        r["cpu_ratio_to_empty_heap"] = r["apply_cpu_ms"] / base["apply_cpu_ms"]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"{'heap objects':>13} {'apply total ms':>15} {'ratio':>6} {'apply cpu ms':>13} {'ratio':>6} "
        f"{'swap ms':>8} {'gc.get_objects() ms':>20}"
    )
    for size, r in results.items():
        print(
            f"{size:>13,} {r['apply_total_ms']:>15.2f} {r['ratio_to_empty_heap']:>6.2f} "
            f"{r['apply_cpu_ms']:>13.2f} {r['cpu_ratio_to_empty_heap']:>6.2f} "
            f"{r['apply_swap_ms']:>8.3f} {r['gc_get_objects_ms']:>20.1f}"
        )


if __name__ == "__main__":
    main()
