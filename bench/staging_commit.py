"""Staging a real commit's patch in a process holding a kvserver data set: CPU per phase and GIL stalls.

What runs: the parent tree of the figures' commit (lpbench.kv_history.FIGURES, 8ba46d9: six definitions
in kvserver.aof, kvserver.resp and kvserver.server) is imported in this process, a kvserver Keyspace is
filled with --keys keys (a 2-element list each, so the collector tracks them: the heap a gc walk would
cross), the heap is frozen as kvserver/cli.py does at start-up, and the commit's signed patch (its
compiled code attached, as the agent does after the signature check) is staged --repeats times.

Columns: stage() CPU time of the patcher thread (time.thread_time: what the load blurs least), the
first one (nothing cached) and the median of the others; per module the patch makes staging read, the
CPU of ast.parse, of compile and of the walk; and the longest stall of a probe thread (sleeping 0.5 ms
in a loop) during the stagings against the same probe's longest stall while nothing happens: a stall
is the GIL held by the staging thread (or the process descheduled: compare with `idle`).

Usage: .venv/bin/python bench/staging_commit.py [--keys 1000000] [--repeats 11] [--json]
(`PYTHONPATH=<another checkout>/src` in front measures that checkout's staging.)
"""

from __future__ import annotations

import argparse
import ast
import gc
import inspect
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class Probe:
    """A thread that sleeps 0.5 ms in a loop and records its longest extra wait."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.0005)
            now = time.perf_counter()
            self.worst_ms = max(self.worst_ms, (now - last - 0.0005) * 1e3)
            last = now

    def reset(self) -> None:
        self.worst_ms = 0.0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--workdir", type=Path, default=None, help="where the commit is built (kept)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from lpbench import kv_history

    assert kv_history.FIGURES is not None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="staging-commit-"))
    built = kv_history.build_one(ROOT, 0, kv_history.FIGURES, workdir)
    sys.path.insert(0, str(built.code / "src"))
    from livepatch.patch import compiled, lpatch
    from livepatch.patch.walk import walk_source
    from livepatch.runtime.staging import stage

    pf = lpatch.read(built.patch.path)
    spec = compiled.attach(pf.spec, pf.manifest.get("compiled"))
    for mp in spec.modules:
        __import__(mp.module)
    from kvserver.keyspace import Keyspace

    keyspace = Keyspace()
    for i in range(args.keys):
        keyspace.store(b"key:%d" % i, [b"a", b"b"])
    gc.collect()
    gc.freeze()

    probe = Probe()
    time.sleep(1.0)
    idle_ms = probe.worst_ms
    cpu: list[float] = []
    stalls: list[float] = []
    for _ in range(args.repeats):
        probe.reset()
        t = time.thread_time()
        stage(spec)
        cpu.append((time.thread_time() - t) * 1e3)
        time.sleep(0.002)
        stalls.append(probe.worst_ms)
    probe.stop()

    light = "full" in inspect.signature(walk_source).parameters
    phases: dict[str, dict[str, float]] = {}
    for mp in spec.modules:
        parse_ms, compile_ms, walk_ms = [], [], []
        for _ in range(5):
            t0 = time.thread_time()
            tree = ast.parse(mp.new_source, mp.module)
            t1 = time.thread_time()
            compile(tree, mp.module, "exec", dont_inherit=True)
            t2 = time.thread_time()
            walk_source(mp.new_source, mp.module, **({"full": False} if light else {}))
            t3 = time.thread_time()
            parse_ms.append((t1 - t0) * 1e3)
            compile_ms.append((t2 - t1) * 1e3)
            walk_ms.append((t3 - t2) * 1e3)
        phases[mp.module] = {
            "bytes": len(mp.new_source.encode()),
            "parse_ms": statistics.median(parse_ms),
            "compile_ms": statistics.median(compile_ms),
            "walk_source_ms": statistics.median(walk_ms),
        }
    out: dict[str, Any] = {
        "livepatch": str(Path(sys.modules["livepatch"].__file__ or "").parent),
        "keys": args.keys,
        "stage_cpu_first_ms": cpu[0],
        "stage_cpu_median_ms": statistics.median(cpu[1:]),
        "probe_stall_max_ms": max(stalls),
        "probe_stall_median_ms": statistics.median(stalls),
        "probe_idle_ms": idle_ms,
        "modules": phases,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"livepatch from {out['livepatch']}, {args.keys:,} keys (frozen)")
    print(
        f"stage CPU: first {cpu[0]:.1f} ms, median {out['stage_cpu_median_ms']:.1f} ms; probe stall "
        f"during stage: median {out['probe_stall_median_ms']:.1f} ms, max {max(stalls):.1f} ms "
        f"(idle {idle_ms:.1f} ms)"
    )
    for name, p in phases.items():
        print(
            f"  {name} ({p['bytes']:,} B): parse {p['parse_ms']:.1f}, compile "
            f"{p['compile_ms']:.1f}, walk_source (as staging calls it) {p['walk_source_ms']:.1f} ms CPU"
        )


if __name__ == "__main__":
    main()
