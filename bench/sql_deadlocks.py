"""Figure 6 of docs/results-sql.md: naive against priority-based quiescence of sqlserver's thread pool.

    .venv/bin/python bench/sql_deadlocks.py [--runs 100] [--duration 6] [--deadline 3] [--jobs 1] [--out DIR]
    .venv/bin/python bench/sql_deadlocks.py --replot --out DIR

`--runs` runs of YCSB and of TPC-C per protocol (naive: `livepatch serve sql --pool-quiescence naive`,
every pool thread at one priority; priority: the pool as shipped), each with a global patch applied or
reverted every 100 ms; a run deadlocks when a patch hits the deadline while no transaction completes
(definitions in lpbench/sql/deadlocks.py). Writes DIR/deadlocks.json (after every run) and
DIR/deadlocks.png; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from lpbench import plots_sql
from lpbench.sql import deadlocks
from lpbench.sql.patches import builtin_patch


def table(summary: dict) -> str:
    lines = ["| protocol | workload | runs | runs deadlocked | runs with an aborted patch | server process hung | patches (applied or reverted / triggered) | sync p50 / p99 ms | s per run (median) | load average |",
             "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in summary["rows"]:
        sync = (
            "-" if r["sync_p50_ms"] is None else f"{r['sync_p50_ms']:.2f} / {r['sync_p99_ms']:.1f}"
        )
        lines.append(f"| {r['protocol']} | {r['workload']} | {r['runs']} | {r['runs_deadlocked']} | "
                     f"{r['runs_aborted']} | {r.get('runs_hung', 0)} | {r['patches_ok']:,} / {r['patches']:,} | {sync} | "
                     f"{_or_dash(r.get('seconds_per_run'))} | {_or_dash(r.get('load'), '{0[0]}-{0[1]}')} |")  # fmt: skip
    return "\n".join(lines)


def _or_dash(x: object, fmt: str = "{0}") -> str:
    return "-" if x is None else fmt.format(x)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=100, help="runs per workload and protocol")
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per run")
    ap.add_argument(
        "--deadline", type=float, default=3.0, help="the runtime's quiescence deadline, s"
    )
    ap.add_argument("--workloads", default="ycsb,tpcc")
    ap.add_argument("--protocols", default="naive,priority")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each its own server)")
    ap.add_argument("--out", type=Path, default=Path("results/sql-deadlocks"))
    ap.add_argument("--replot", action="store_true", help="redraw from DIR/deadlocks.json only")
    ap.add_argument("--resume", action="store_true",
                    help="keep the runs already in DIR/deadlocks.json, run only the missing ones")  # fmt: skip
    args = ap.parse_args()
    # A hung server is sent SIGABRT (lpbench.sql.deadlocks): with this, it logs every thread's stack.
    os.environ["PYTHONFAULTHANDLER"] = "1"
    if not args.replot:
        cfg = deadlocks.DeadlockConfig(
            workloads=tuple(args.workloads.split(",")), protocols=tuple(args.protocols.split(",")),
            runs=args.runs, duration_s=args.duration, deadline_s=args.deadline,
        )  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="lpb-patch-") as work:
            patches = [builtin_patch(Path(work))]
            deadlocks.run_all(
                cfg, patches, args.out, log=lambda s: print(s, file=sys.stderr, flush=True),
                resume=args.resume, jobs=args.jobs,
            )  # fmt: skip
    summary = deadlocks.load(args.out)
    plots_sql.deadlocks(summary, args.out / "deadlocks.png")
    print(table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
