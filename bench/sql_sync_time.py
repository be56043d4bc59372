"""Sync time of live patches of a running sqlserver under pgbench load, per policy and method.

    .venv/bin/python bench/sql_sync_time.py [--patches 20] [--clients 10]
        [--policies thread-per-connection,pool] [--methods global,local]

For each policy: a sqlserver with the agent, `pgbench -i -s 1`, then `pgbench -n -M prepared -c 10 -j 2`
(TPC-B-like) running throughout while the patch of tests/sqlserver/test_sql_livepatch.py (one line of
`show_command`) is applied and reverted `--patches` times per method with `livepatch apply/revert --json`.
Reports the median and p99 of the runtime's `sync` timing (request raised -> all threads parked or
moved) and of `total`, and the number of error lines pgbench printed (a failed or aborted client).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.sqlserver.test_sql_livepatch import build_patch  # noqa: E402

from sql_vs_postgres import pgbench, pgbench_path, sqlserver  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--patches", type=int, default=20, help="applies (and as many reverts) per method"
    )
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--policies", default="thread-per-connection,pool")
    ap.add_argument("--methods", default="global,local")
    args = ap.parse_args()
    load = os.getloadavg()
    print(
        f"# sqlserver sync time under pgbench ({os.cpu_count()} CPUs, load average {load[0]:.1f} "
        f"{load[1]:.1f} {load[2]:.1f} at start; a shared machine)\n"
    )
    print("| policy | method | transitions | sync median ms | sync p99 ms | total median ms | "
          "not applied | pgbench error lines |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="sqlsync-") as tmp:
        work = Path(tmp)
        patch = build_patch(work / "patch")
        for policy in [p for p in args.policies.split(",") if p]:
            with sqlserver(work, "--policy", policy) as server:
                sock = str(work / f"agent-{server.port}.sock")
                pgbench(server.port, "-i", "-s", "1", "-q")
                load_gen = subprocess.Popen(
                    [pgbench_path(), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
                     "-n", "-M", "prepared", "-c", str(args.clients), "-j", "2", "-T", "3600",
                     "postgres"],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )  # fmt: skip
                rows = []
                try:
                    for method in [m for m in args.methods.split(",") if m]:
                        sync, total, bad = [], [], 0
                        for _ in range(args.patches):
                            for op in (["apply", str(patch)], ["revert"]):
                                r = cli(
                                    *op, "--socket", sock, "--method", method, "--timeout", "10"
                                )
                                if r["outcome"] not in ("applied", "reverted"):
                                    print(f"<!-- {op[0]}: {r['outcome']}: {r['reason']} -->")
                                    bad += 1
                                    continue
                                sync.append(r["timings"]["sync"])
                                total.append(r["timings"]["total"])
                        rows.append((method, sync, total, bad))
                finally:
                    load_gen.terminate()
                    out = load_gen.communicate(timeout=60)[0]
                errors = sum("error" in line for line in out.splitlines())
                for method, sync, total, bad in rows:
                    print(
                        f"| {policy} | {method} | {len(sync)} | {statistics.median(sync):.2f} "
                        f"| {p99(sync):.2f} | {statistics.median(total):.1f} | {bad} "
                        f"| {errors} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
