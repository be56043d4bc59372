"""Sync time of live patches with busy managed threads: request -> all parked (global) / all moved (local).

A real patch (a fixture module of the runtime tests, v1 <-> v2) is applied and reverted with apply_patch /
revert_patch while N managed threads run requests in a loop (quiescence point, then two patched calls).
`--io` makes every request yield the GIL once between the two calls, as a request doing socket I/O would;
without it the threads are CPU-bound, and in CPython a thread reaches its next quiescence point only when it
gets the GIL (5 ms switch interval), which dominates local migration.
Reports the median (and p90, max) of PatchResult.timings["sync"], the median and p90 of request -> finished
(events: it includes staging the patch, which an apply does and a revert does not), the median staging
time of the applies, and request -> finished without the staging time (median, p90); with --base also the
median of call -> return (the whole apply_patch/revert_patch call, result building included).

The patch carries its code compiled for this interpreter, as a signed `.lpatch` does when the agent
stages it (patch/compiled.py); `--staging source` compiles it from its source instead (an unsigned patch,
or a patch built by another interpreter), as this script did before: that adds ~0.2-0.3 ms to every apply.

`--tails` prints where the slowest tenth of the global transitions lost their time: waiting for the first
park (no worker got to run), between the first and the last park, or between the last park and the patcher
seeing it (the patcher's own wake-up). `--phases` also prints where the time of a transition goes: the median (and p90) of each step between two events
(requested -> verified -> staged -> quiescent -> swapped -> finished; per-thread events left out), applies
and reverts apart, and the patcher thread's context switches per transition (Linux: voluntary ones are its
waits, for the last park or for the GIL; involuntary ones are preemptions by the OS).

    .venv/bin/python bench/sync_time.py [--threads 10] [--patches 200] [--io | --cpu] [--staging source]
                                        [--phases] [--tails] [--method global|local]
                                        [--gap-ms 5] [--base REF [--rounds 5]]

`--gap-ms 5` pauses before each apply and revert while the workers run: the transitions are then
isolated, as a server sees them (the patcher starts with cold caches), instead of back to back, where the
patcher goes from one transition into the next with warm ones (docs/performance.md, core10).

`--base REF` runs the same rows against `git archive REF src` (PYTHONPATH; with this tree's built C
extensions copied in where REF's C source is the same) and this tree in turns,
`--rounds` times each, and prints the median of each figure over the rounds, with the load average.
Repeat it (`--base 0b0101e --base 2a04ed6^1 --base 2a04ed6`) to run several versions in turns in one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

import livepatch
from livepatch import Category
from livepatch.patch import compiled

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "runtime" / "fixtures"


def load(source: str, tmp: Path) -> ModuleType:
    name = "lp_bench_sync_app"
    path = tmp / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


PER_THREAD = {
    "reached",
    "migrated",
    "moved-back",
    "unparked",
}  # the wire names: base code's str too


def context_switches() -> tuple[int, int]:
    """(voluntary, involuntary) context switches of the calling thread so far (Linux; (0, 0) elsewhere)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/status") as f:
            fields = dict(line.split(":", 1) for line in f if "ctxt_switches" in line)
    except OSError:
        return 0, 0
    return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])


def run_queue_wait_ms() -> float:
    """How long the calling thread (the patcher) has been runnable but not running, so far (ms; Linux
    schedstat's second field; 0 elsewhere): time the OS gave its CPU to someone else. Read between
    transitions, never inside one (a read releases the GIL)."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/schedstat") as f:
            return int(f.read().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def park_times(r: livepatch.PatchResult) -> tuple[float, float, float, float]:
    """(sync, first park, last park, last park -> patcher saw quiescence) of a global transition, ms
    from its `staged` event (the request is published right after it)."""
    ts = {e.name: e.t_ns for e in r.events if e.name not in PER_THREAD}
    parks = sorted(e.t_ns for e in r.events if e.name == "reached") or [ts["quiescent"]]
    t0 = ts["staged"]
    return (
        (ts["quiescent"] - t0) / 1e6,
        (parks[0] - t0) / 1e6,
        (parks[-1] - t0) / 1e6,
        (ts["quiescent"] - parks[-1]) / 1e6,
    )


def print_tails(tails: list[tuple[float, float, float, float, float]]) -> None:
    """Where the slowest tenth of the global transitions lost their time, and how long the patcher
    thread waited for a CPU meanwhile (run queue: the OS, not the runtime), against the other nine
    tenths."""
    ranked = sorted(tails)
    cut = int(len(ranked) * 0.9)
    slow, rest = ranked[cut:], ranked[:cut]
    late_start = sum(1 for _, first, _, _, _ in slow if first > 1.0)
    late_patcher = sum(1 for _, _, _, wake, _ in slow if wake > 1.0)
    print(
        f"    slowest {len(slow)} of {len(tails)} (sync >= {slow[0][0]:.2f} ms): first park after > 1 ms "
        f"in {late_start}, the patcher saw the last park > 1 ms late in {late_patcher}; medians: first "
        f"park {statistics.median(t[1] for t in slow):.3f} ms, last park "
        f"{statistics.median(t[2] for t in slow):.3f} ms, last park -> quiescent "
        f"{statistics.median(t[3] for t in slow):.3f} ms"
    )
    print(
        "    the patcher's run-queue wait per transition (median): slowest tenth "
        f"{statistics.median(t[4] for t in slow):.3f} ms, the other nine tenths "
        f"{statistics.median(t[4] for t in rest):.3f} ms; sync median in the slowest tenth "
        f"{statistics.median(t[0] for t in slow):.3f} ms"
    )


def run(
    method: str,
    n_threads: int,
    patches: int,
    io: bool,
    precompiled: bool = True,
    phases: dict[str, dict[str, list[float]]] | None = None,
    tails: list[tuple[float, float, float, float, float]] | None = None,
    gap_s: float = 0.0,
) -> dict[str, float]:
    v1, v2 = (FIXTURES / "app_v1.py").read_text(), (FIXTURES / "app_v2.py").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        app = load(v1, Path(tmp))
        spec = livepatch.patch_from_sources(
            {app.__name__: (v1, v2)}, category=Category.THREAD_LOCAL, patch_id=f"bench-{method}"
        )
        if precompiled:  # what the agent does with a signed patch file, after the signature check
            spec = compiled.attach(spec, compiled.build_section(spec))
        stop = threading.Event()
        ready = threading.Barrier(n_threads + 1)

        def worker() -> None:
            with livepatch.managed_thread("worker"):
                ready.wait()
                while not stop.is_set():
                    livepatch.quiescence_point()
                    app.first(1)
                    if io:
                        time.sleep(0)
                    app.second(2)

        ts = [threading.Thread(target=worker, daemon=True) for _ in range(n_threads)]
        for t in ts:
            t.start()
        ready.wait()
        sync: list[float] = []
        finished: list[float] = []
        stage: list[float] = []
        unstaged: list[float] = []
        wall: list[float] = []  # the call to apply_patch/revert_patch until it returned
        try:
            for i in range(patches):
                if gap_s:
                    time.sleep(gap_s)  # the workers run meanwhile: the next transition starts cold
                c0 = context_switches()
                q0 = run_queue_wait_ms() if tails is not None else 0.0
                t_call = time.perf_counter()
                r = (
                    livepatch.apply_patch(spec, method=method, timeout=30)
                    if i % 2 == 0
                    else livepatch.revert_patch(spec.patch_id, method=method, timeout=30)
                )
                wall.append((time.perf_counter() - t_call) * 1e3)
                c1 = context_switches()
                q1 = run_queue_wait_ms() if tails is not None else 0.0
                if not r.ok:
                    raise SystemExit(f"patch {i} {r.outcome}: {r.reason}")
                if phases is not None:
                    steps = phases.setdefault("apply" if i % 2 == 0 else "revert", {})
                    evs = [e for e in r.events if e.name not in PER_THREAD]
                    for a, b in itertools.pairwise(evs):
                        steps.setdefault(f"{a.name} -> {b.name}", []).append(
                            (b.t_ns - a.t_ns) / 1e6
                        )
                    steps.setdefault("voluntary switches", []).append(c1[0] - c0[0])
                    steps.setdefault("involuntary switches", []).append(c1[1] - c0[1])
                if tails is not None and method == "global":
                    tails.append((*park_times(r), q1 - q0))
                sync.append(r.timings["sync"])
                if i % 2 == 0:
                    stage.append(r.timings["stage"])
                finished.append((r.events[-1].t_ns - r.events[0].t_ns) / 1e6)
                unstaged.append(finished[-1] - r.timings["stage"])
        finally:
            stop.set()
            for t in ts:
                t.join()
            sys.modules.pop(app.__name__, None)
    return {
        "sync_median": statistics.median(sync),
        "sync_p90": pct(sync, 0.9),
        "sync_max": max(sync),
        "total_median": statistics.median(finished),
        "total_p90": pct(finished, 0.9),
        "stage_median": statistics.median(stage),
        "unstaged_median": statistics.median(unstaged),
        "unstaged_p90": pct(unstaged, 0.9),
        "wall_median": statistics.median(wall),
    }


def export_source(ref: str, dest: Path) -> Path:
    """`git archive REF src` of this repository into dest; returns the src directory."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    # The built C extensions, where REF's C source is this tree's (else the archive would run the
    # pure-Python fallbacks, and the comparison would measure them): src/<pkg>/<name>.*.so for <name>.c.
    for built in (root / "src").glob("*/*.so"):
        source = built.with_name(built.name.split(".")[0] + ".c")
        theirs = dest / "src" / built.parent.name / source.name
        if source.exists() and theirs.exists() and theirs.read_bytes() == source.read_bytes():
            shutil.copy2(built, theirs.parent / built.name)
    return dest / "src"


def compare(args: argparse.Namespace) -> None:
    """Every base and this tree in turns (in the order given in even rounds, reversed in odd ones); prints the
    median over the rounds of each row's figures, and the load average before and after."""
    passed = [f"--threads={args.threads}", f"--patches={args.patches}", f"--staging={args.staging}"]
    passed += [f"--gap-ms={args.gap_ms}"]
    passed += {None: [], (True,): ["--io"], (False,): ["--cpu"]}[tuple(args.modes or ()) or None]
    passed += [f"--method={m}" for m in args.method or ()]
    rows: dict[tuple[str, bool, str], list[dict[str, float]]] = {}
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        versions: dict[str, str | None] = {
            ref: str(export_source(ref, Path(tmp) / str(i))) for i, ref in enumerate(args.base)
        }
        versions["this tree"] = None
        for i in range(args.rounds):
            order = list(versions.items()) if i % 2 == 0 else list(versions.items())[::-1]
            for label, src in order:
                env = dict(os.environ)
                if src is not None:
                    env["PYTHONPATH"] = src
                out = subprocess.run(
                    [sys.executable, __file__, *passed, "--json"],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                for line in out.splitlines():
                    if line.startswith("{"):
                        r = json.loads(line)
                        rows.setdefault((label, r["io"], r["method"]), []).append(r)
    load1 = os.getloadavg()
    print(
        f"{args.rounds} rounds in turns, {args.threads} threads, {args.patches} patches per row; load "
        f"average {load0[0]:.1f} before, {load1[0]:.1f} after; medians over the rounds of: "
    )
    print(
        f"{'version':<12} {'requests':<10} {'method':<7} {'sync':>8} {'req->finished':>14} {'p90':>8} "
        f"{'p90/median':>11} {'stage':>8} {'without staging':>16} {'call->return':>13}  (ms; per-round "
        "req->finished)"
    )
    labels = [*args.base, "this tree"]
    for (label, io, method), rs in sorted(
        rows.items(), key=lambda kv: (kv[0][1:], labels.index(kv[0][0]))
    ):

        def med(key: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[key] for r in rs)

        ratio = statistics.median(r["total_p90"] / r["total_median"] for r in rs)
        each = " ".join(f"{r['total_median']:.2f}" for r in rs)
        print(
            f"{label:<12} {'io' if io else 'cpu-bound':<10} {method:<7} {med('sync_median'):>8.3f} "
            f"{med('total_median'):>14.3f} {med('total_p90'):>8.2f} {ratio:>10.2f}x "
            f"{med('stage_median'):>8.3f} {med('unstaged_median'):>16.3f} {med('wall_median'):>13.3f}  "
            f"({each})"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--patches", type=int, default=200)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--io", dest="modes", action="store_const", const=[True])
    mode.add_argument("--cpu", dest="modes", action="store_const", const=[False])
    ap.add_argument(
        "--staging",
        choices=("compiled", "source"),
        default="compiled",
        help="stage the code the patch carries compiled (a signed .lpatch) or compile its source",
    )
    ap.add_argument("--phases", action="store_true", help="where the time of a transition goes")
    ap.add_argument(
        "--tails",
        action="store_true",
        help="global: where the slowest tenth of the transitions lost their time (first/last park)",
    )
    ap.add_argument(
        "--method",
        choices=("global", "local"),
        action="append",
        help="only this method (repeatable)",
    )
    ap.add_argument(
        "--base",
        metavar="REF",
        action="append",
        help="A/B in turns: run this script against `git archive REF src` (PYTHONPATH) and this tree; "
        "repeatable (every REF and this tree in turns: a bisection in one run)",
    )
    ap.add_argument(
        "--gap-ms",
        type=float,
        default=0.0,
        help="pause before each apply/revert (the workers run meanwhile): an isolated transition, "
        "as a server sees one, instead of back to back",
    )
    ap.add_argument("--rounds", type=int, default=5, help="with --base: turns per version")
    ap.add_argument("--json", action="store_true", help="one JSON object per row (used by --base)")
    args = ap.parse_args()
    if args.base:
        compare(args)
        return
    modes = args.modes or [True, False]
    print(
        f"{args.threads} busy managed threads, {args.patches} patches per row (apply/revert "
        f"alternating), staging from {args.staging} code"
    )
    print(
        f"{'requests':<10} {'method':<7} {'sync median':>12} {'p90':>9} {'max':>9} "
        f"{'request->finished':>18} {'p90':>9} {'stage (apply)':>14} {'without staging':>16} {'p90':>9}"
    )
    for io in modes:
        for method in args.method or ("global", "local"):
            phases: dict[str, dict[str, list[float]]] | None = {} if args.phases else None
            tails: list[tuple[float, float, float, float, float]] | None = (
                [] if args.tails else None
            )
            r = run(
                method,
                args.threads,
                args.patches,
                io,
                args.staging == "compiled",
                phases,
                tails,
                args.gap_ms / 1e3,
            )
            if args.json:
                print(json.dumps({"io": io, "method": method, **r}), flush=True)
                continue
            print(
                f"{'io' if io else 'cpu-bound':<10} {method:<7} {r['sync_median']:>9.3f} ms "
                f"{r['sync_p90']:>6.2f} ms {r['sync_max']:>6.1f} ms {r['total_median']:>15.3f} ms "
                f"{r['total_p90']:>6.2f} ms {r['stage_median']:>11.3f} ms "
                f"{r['unstaged_median']:>13.3f} ms {r['unstaged_p90']:>6.2f} ms"
            )
            if tails:
                print_tails(tails)
            for action, steps in (phases or {}).items():
                print(
                    f"    {action:<6} "
                    + ", ".join(
                        f"{k} {statistics.median(v):.0f}"
                        if k.endswith("switches")
                        else f"{k} {statistics.median(v):.3f} ms (p90 {pct(v, 0.9):.3f})"
                        for k, v in steps.items()
                    )
                )


if __name__ == "__main__":
    main()
