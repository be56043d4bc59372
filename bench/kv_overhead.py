"""The cost of being live-patchable: the same kvserver with and without the livepatch runtime.

    .venv/bin/python bench/kv_overhead.py [--requests 200000] [--rounds 10] [--instructions]

"with": as deployed for live patching (the loop thread is a managed thread with one quiescence point
per loop iteration and a wake-up hook; the agent listens on its socket). "without": `--no-livepatch`
(none of that). Both servers run at once; each round gives both the same redis-benchmark commands
(`-t set`, then `-t get`, `-c 50`, pipeline 1 and 16), alternating which goes first. Goal: within 1%.
On a machine with 2+ CPUs both servers run on CPU 1 and redis-benchmark on CPU 0 (--no-pin: anywhere).

Two throughput runs side by side differ by several percent on a shared machine whatever the servers
do, so three measures are printed:
  rps        median over the rounds of the per-round ratio with / without (same round, same load);
  CPU/req    the same for each server's CPU time per request (/proc, user + system);
  --instructions: each server once more under valgrind's callgrind, counting the user-space machine
             instructions it executes while serving one redis-benchmark run: independent of the
             machine's load, so a 1% difference is visible (a few minutes: valgrind is ~50x slower).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kv_common import (
    Running,
    Sample,
    can_pin,
    kvserver,
    kvserver_with_agent,
    machine_note,
    measure,
    pin_server,
    printable,
    redis_benchmark,
    tool,
)

Starter = Callable[..., AbstractContextManager[Running]]
CONFIGS: dict[str, tuple[Starter, tuple[str, ...]]] = {
    "with": (kvserver_with_agent, ()),
    "without": (kvserver, ("--no-livepatch",)),
}


def throughput(args: argparse.Namespace) -> None:
    pinned = can_pin() and not args.no_pin
    print(
        f"placement: {'servers on CPU 1, redis-benchmark on CPU 0' if pinned else 'not pinned'}\n"
    )
    print(
        "| pipeline | test | rps with / without | CPU/req with / without | with rps | without rps |"
    )
    print("|---|---|---|---|---|---|")
    commands = []
    (start_with, extra_with), (start_without, extra_without) = CONFIGS["with"], CONFIGS["without"]
    with start_with(*extra_with) as with_lp, start_without(*extra_without) as without_lp:
        if pinned:
            pin_server(with_lp)
            pin_server(without_lp)
        for pipeline in (1, 16):
            requests = args.requests * (4 if pipeline > 1 else 1)
            pairs: dict[str, list[tuple[Sample, Sample]]] = {"SET": [], "GET": []}
            for rnd in range(args.rounds):
                for test in ("SET", "GET"):
                    order = [with_lp, without_lp] if rnd % 2 == 0 else [without_lp, with_lp]
                    got = {}
                    for server in order:
                        cmd, got[server.port] = measure(
                            server, test, requests, pipeline, pinned=pinned
                        )
                        commands.append(printable(cmd))
                    pairs[test].append((got[with_lp.port], got[without_lp.port]))
            for test in ("SET", "GET"):
                p = pairs[test]
                rps = statistics.median(a.rps / b.rps for a, b in p)
                cpu = statistics.median(a.cpu_us / b.cpu_us for a, b in p if b.cpu_us)
                print(
                    f"| {pipeline} | {test} | {rps:.3f} | {cpu:.3f} "
                    f"| {statistics.median(a.rps for a, _ in p):,.0f} "
                    f"| {statistics.median(b.rps for _, b in p):,.0f} |"
                )
    print(f"\nmedians of {args.rounds} per-round ratios; commands:")
    for cmd in dict.fromkeys(commands):
        print(f"    {cmd}")


_COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(test: str, requests: int, pipeline: int) -> dict[str, float]:
    """Instructions per request of each configuration while serving one redis-benchmark run."""
    per_request = {}
    for name, (start, extra) in CONFIGS.items():
        with tempfile.TemporaryDirectory(prefix="kvbench-vg-") as tmp:
            log = Path(tmp) / "callgrind.log"
            wrapper = [
                tool("valgrind"), "--tool=callgrind", "--callgrind-out-file=/dev/null",
                "--instr-atstart=no", f"--log-file={log}",
            ]  # fmt: skip
            with start(*extra, wrapper=wrapper) as server:
                pid = str(server.process.proc.pid)  # type: ignore[union-attr]
                # Warm up (connections, the keyspace) before counting, then count one run.
                redis_benchmark(server.port, test.lower(), requests, pipeline=pipeline)
                subprocess.run([tool("callgrind_control"), "-i", "on", pid], check=True,
                               capture_output=True)  # fmt: skip
                redis_benchmark(server.port, test.lower(), requests, pipeline=pipeline)
                subprocess.run([tool("callgrind_control"), "-i", "off", pid], check=True,
                               capture_output=True)  # fmt: skip
            found = _COLLECTED.findall(log.read_text())
            if not found:
                sys.exit(f"no instruction count in {log}: {log.read_text()[-2000:]}")
            per_request[name] = int(found[-1]) / requests
    return per_request


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000, help="per test without pipelining")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--no-pin", action="store_true", help="let the scheduler place the processes")
    ap.add_argument("--instructions", action="store_true", help="also count instructions (slow)")
    ap.add_argument("--instruction-requests", type=int, default=20_000)
    args = ap.parse_args()
    print(f"# kvserver with vs without livepatch ({machine_note()})\n")
    throughput(args)
    if args.instructions:
        print("\n| pipeline | test | instructions/req with | without | with / without |")
        print("|---|---|---|---|---|")
        for pipeline in (1, 16):
            for test in ("SET", "GET"):
                n = args.instruction_requests * (4 if pipeline > 1 else 1)
                got = instructions(test, n, pipeline)
                print(
                    f"| {pipeline} | {test} | {got['with']:,.0f} | {got['without']:,.0f} "
                    f"| {got['with'] / got['without']:.4f} |"
                )
        print(
            f"\nvalgrind --tool=callgrind, counting one run of redis-benchmark -t TEST "
            f"-n {args.instruction_requests} (x4 with -P 16) -c 50 -r 100000 after a warm-up run"
        )


if __name__ == "__main__":
    main()
