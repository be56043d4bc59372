"""Sync time of live patches of a running sqlserver under pgbench load, per policy and method.

    .venv/bin/python bench/sql_sync_time.py [--patches 20] [--clients 10]
        [--policies thread-per-connection,pool] [--methods global,local]
        [--base REF] [--rounds 1] [--timeline]

For each policy: a sqlserver with the agent, `pgbench -i -s 1`, then `pgbench -n -M prepared -c 10 -j 2`
(TPC-B-like) running throughout while the patch of tests/sqlserver/test_sql_livepatch.py (one line of
`show_command`) is applied and reverted `--patches` times per method with `livepatch apply/revert --json`.
Reports the median and p99 of the runtime's `sync` timing (request raised -> all threads parked or
moved) and of `total`, and the number of error lines pgbench printed (a failed or aborted client).

--base REF: A/B against another version (`git archive REF src`, run from there with PYTHONPATH, as
bench/sql_vs_postgres.py does). Each round runs this tree's server and then REF's, each with its own
data and pgbench load, so both see the same machine; the tables pool the rounds. The load average is
recorded per run.

--timeline: where a global transition waits (events of PatchResult): for each one, the time from the
request to the last park and which kind of thread parked last (a pool listener, a pool worker, the
acceptor, a connection thread), and how many parks were undone by the priority rule (`unparked`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.sqlserver.test_sql_livepatch import build_patch  # noqa: E402

from sql_vs_postgres import export_source, pgbench, pgbench_path, sqlserver  # noqa: E402


def cli(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "livepatch.cli", *args, "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    reply = json.loads(done.stdout)
    if not reply.get("result"):
        raise RuntimeError(f"livepatch {' '.join(args)}: {done.stdout}{done.stderr}")
    return dict(reply["result"])


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def thread_kind(name: str | None) -> str:
    """A managed thread's kind from its name (sqlserver's naming)."""
    if not name:
        return "?"
    if name.startswith("sql-pool-"):
        return "pool thread"
    return re.sub(r"[-_]?\d+$", "", name)


def timeline(result: dict) -> tuple[float, str, int] | None:
    """(ms from the request to the last park, the last parked thread's name, unparks) of a global
    transition; None when it did not reach quiescence."""
    events = result.get("events") or []
    start = next((e["t_ns"] for e in events if e["name"] == "staged"), None)
    quiet = next((e["t_ns"] for e in events if e["name"] == "quiescent"), None)
    reached = [e for e in events if e["name"] == "reached"]
    if start is None or quiet is None or not reached:
        return None
    last = max(reached, key=lambda e: e["t_ns"])
    unparked = sum(e["name"] == "unparked" for e in events)
    return (last["t_ns"] - start) / 1e6, str(last["thread"]), unparked


class Cell:
    """The transitions of one (target, policy, method)."""

    def __init__(self) -> None:
        self.sync: list[float] = []
        self.total: list[float] = []
        self.bad = 0
        self.errors = 0
        self.loads: list[float] = []
        self.last_parked: collections.Counter[str] = collections.Counter()
        self.last_park_ms: list[float] = []
        self.unparked: list[int] = []


def run_one(
    work: Path, patch: Path, policy: str, methods: list[str], args: argparse.Namespace,
    cells: dict[tuple[str, str, str], Cell], target: str, src: Path | None,
) -> None:  # fmt: skip
    with sqlserver(work, "--policy", policy, src=src) as server:
        sock = str(work / f"agent-{server.port}.sock")
        pgbench(server.port, "-i", "-s", "1", "-q")
        load_gen = subprocess.Popen(
            [pgbench_path(), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
             "-n", "-M", "prepared", "-c", str(args.clients), "-j", "2", "-T", "3600",
             "postgres"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        used: list[Cell] = []
        try:
            for method in methods:
                cell = cells.setdefault((target, policy, method), Cell())
                used.append(cell)
                cell.loads.append(os.getloadavg()[0])
                for _ in range(args.patches):
                    for op in (["apply", str(patch)], ["revert"]):
                        r = cli(*op, "--socket", sock, "--method", method, "--timeout", "10")
                        if r["outcome"] not in ("applied", "reverted"):
                            print(f"<!-- {target} {op[0]}: {r['outcome']}: {r['reason']} -->")
                            cell.bad += 1
                            continue
                        cell.sync.append(r["timings"]["sync"])
                        cell.total.append(r["timings"]["total"])
                        t = timeline(r) if method == "global" else None
                        if t is not None:
                            cell.last_park_ms.append(t[0])
                            cell.last_parked[thread_kind(t[1])] += 1
                            cell.unparked.append(t[2])
        finally:
            load_gen.terminate()
            out = load_gen.communicate(timeout=60)[0]
        errors = sum("error" in line for line in out.splitlines())
        for cell in used:
            cell.errors += errors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--patches", type=int, default=20, help="applies (and as many reverts) per method and run"
    )
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--policies", default="thread-per-connection,pool")
    ap.add_argument("--methods", default="global,local")
    ap.add_argument("--base", help="a git ref: run its sqlserver too, taking turns (A/B)")
    ap.add_argument("--rounds", type=int, default=1, help="turns of this tree (and --base)")
    ap.add_argument("--timeline", action="store_true", help="where global transitions wait")
    args = ap.parse_args()
    load = os.getloadavg()
    print(
        f"# sqlserver sync time under pgbench ({os.cpu_count()} CPUs, load average {load[0]:.1f} "
        f"{load[1]:.1f} {load[2]:.1f} at start; a shared machine)\n",
        flush=True,
    )
    policies = [p for p in args.policies.split(",") if p]
    methods = [m for m in args.methods.split(",") if m]
    cells: dict[tuple[str, str, str], Cell] = {}
    with tempfile.TemporaryDirectory(prefix="sqlsync-") as tmp:
        work = Path(tmp)
        patch = build_patch(work / "patch")
        base_src = export_source(args.base, work / "base") if args.base else None
        targets: list[tuple[str, Path | None]] = [("this", None)]
        if base_src is not None:
            targets.append((args.base, base_src))
        for _round in range(args.rounds):
            for policy in policies:
                for target, src in targets:
                    run_one(work, patch, policy, methods, args, cells, target, src)
    print("| version | policy | method | transitions | sync median ms | sync p99 ms | "
          "total median ms | not applied | pgbench error lines | load average |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (target, policy, method), c in cells.items():
        if not c.sync:
            continue
        print(
            f"| {target} | {policy} | {method} | {len(c.sync)} | {statistics.median(c.sync):.2f} "
            f"| {p99(c.sync):.2f} | {statistics.median(c.total):.1f} | {c.bad} | {c.errors} "
            f"| {min(c.loads):.0f}-{max(c.loads):.0f} |",
            flush=True,
        )
    if args.timeline:
        print("\n| version | policy | last park median ms | parked last | unparks per transition |")
        print("|---|---|---|---|---|")
        for (target, policy, method), c in cells.items():
            if method != "global" or not c.last_park_ms:
                continue
            kinds = ", ".join(f"{k} {n}" for k, n in c.last_parked.most_common())
            print(
                f"| {target} | {policy} | {statistics.median(c.last_park_ms):.2f} | {kinds} "
                f"| {statistics.mean(c.unparked):.1f} |"
            )


if __name__ == "__main__":
    main()
