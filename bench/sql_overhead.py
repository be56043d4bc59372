"""The cost of being live-patchable: the same sqlserver with and without the livepatch runtime.

    .venv/bin/python bench/sql_overhead.py [--policies thread-per-connection,pool] [--transactions 300]
        [--rounds 5] [--duration 5] [--no-instructions]

"with": as deployed for live patching (managed threads, quiescence points, deactivation around idle
reads, priorities in the pool, wake-up hooks, the agent listening on its socket). "without":
`--no-livepatch` (none of that). Two measures, per policy, under `pgbench -S -M prepared -c 10 -j 2`
(after `pgbench -i -s 1`):
  instructions  each server under valgrind's callgrind, counting the user-space instructions it executes
                while serving `-t N` transactions per client after a warm-up run: independent of the
                machine's load, so a 1% difference is visible (valgrind is ~50x slower: minutes);
  TPS           both servers at once, alternating which runs first, `-T duration`, median of the
                per-round ratios (noisy on a shared machine: several percent either way).
Goal: within 1%.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sql_vs_postgres import pgbench, sqlserver

_COLLECTED = re.compile(r"Collected : (\d+)")
_TOTALS = re.compile(r"^(?:totals|summary): (\d+)", re.MULTILINE)
SELECT_ONLY = ["-S", "-M", "prepared", "-c", "10", "-j", "2"]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{name} is not installed (Debian: apt-get install valgrind)")
    return path


def instructions(policy: str, livepatch: bool, transactions: int, work: Path) -> float:
    """Instructions per transaction of one configuration serving one pgbench run."""
    log = work / f"callgrind-{policy}-{livepatch}.log"
    out = work / f"callgrind-{policy}-{livepatch}.out"
    wrapper = [
        tool("valgrind"), "--tool=callgrind", f"--callgrind-out-file={out}",
        "--instr-atstart=no", f"--log-file={log}",
    ]  # fmt: skip
    # Under valgrind on a loaded machine, connecting and stopping take long: a generous connect
    # timeout, and the count is read from a dump taken while the server runs (not from the summary
    # written at exit, which is lost if the server is killed for stopping too slowly).
    slow = {"connect_timeout": 300}
    with sqlserver(work, "--policy", policy, wrapper=wrapper, livepatch=livepatch) as server:
        pgbench(server.port, "-i", "-s", "1", "-q", **slow)
        pgbench(
            server.port, *SELECT_ONLY, "-t", str(max(10, transactions // 10)), **slow
        )  # warm-up
        ctl = tool("callgrind_control")
        subprocess.run([ctl, "-i", "on", str(server.pid)], check=True, capture_output=True)
        pgbench(server.port, *SELECT_ONLY, "-t", str(transactions), **slow)
        subprocess.run([ctl, "-d", str(server.pid)], check=True, capture_output=True, timeout=600)
        subprocess.run([ctl, "-i", "off", str(server.pid)], check=True, capture_output=True)
        dumps = sorted(work.glob(f"{out.name}*"), key=lambda p: p.stat().st_mtime)
        totals = [_TOTALS.findall(d.read_text(errors="replace")) for d in dumps]
    found = [int(t[-1]) for t in totals if t]
    if not found:
        found = [int(n) for n in _COLLECTED.findall(log.read_text())]
    if not found:
        sys.exit(f"no instruction count in {log}: {log.read_text()[-2000:]}")
    return found[-1] / (transactions * 10)


def throughput(policy: str, args: argparse.Namespace, work: Path) -> tuple[float, float, float]:
    """Median per-round TPS ratio with/without, and the median TPS of each."""
    with (
        sqlserver(work, "--policy", policy) as with_lp,
        sqlserver(work, "--policy", policy, livepatch=False) as without_lp,
    ):
        for s in (with_lp, without_lp):
            pgbench(s.port, "-i", "-s", "1", "-q")
        ratios, tps_with, tps_without = [], [], []
        for rnd in range(args.rounds):
            got = {}
            order = [with_lp, without_lp] if rnd % 2 == 0 else [without_lp, with_lp]
            for s in order:
                out = pgbench(s.port, *SELECT_ONLY, "-T", str(args.duration))
                got[s.port] = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
            tps_with.append(got[with_lp.port])
            tps_without.append(got[without_lp.port])
            ratios.append(got[with_lp.port] / got[without_lp.port])
    return statistics.median(ratios), statistics.median(tps_with), statistics.median(tps_without)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policies", default="thread-per-connection,pool")
    ap.add_argument("--transactions", type=int, default=300, help="per client, under valgrind")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per throughput run")
    ap.add_argument("--no-instructions", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()
    print(
        f"# sqlserver with vs without livepatch ({os.cpu_count()} CPUs, load average "
        f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start; a shared machine)\n"
    )
    print("| policy | instr/tx with | instr/tx without | with / without | TPS with / without "
          "(median of rounds) | TPS with | TPS without |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="sqlovh-") as tmp:
        work = Path(tmp)
        for policy in [p for p in args.policies.split(",") if p]:
            if args.no_instructions:
                iw = io_ = float("nan")
            else:
                iw = instructions(policy, True, args.transactions, work)
                io_ = instructions(policy, False, args.transactions, work)
            ratio, tw, to = (
                (float("nan"),) * 3 if args.no_throughput else throughput(policy, args, work)
            )
            print(
                f"| {policy} | {iw:,.0f} | {io_:,.0f} | {iw / io_:.4f} | {ratio:.3f} "
                f"| {tw:,.0f} | {to:,.0f} |",
                flush=True,
            )
    print(
        f"\ninstructions: valgrind --tool=callgrind, one run of pgbench {' '.join(SELECT_ONLY)} "
        f"-t {args.transactions} after a warm-up; TPS: pgbench {' '.join(SELECT_ONLY)} "
        f"-T {args.duration}, {args.rounds} alternating rounds"
    )


if __name__ == "__main__":
    main()
