"""kvserver against redis-server under the same redis-benchmark command, side by side in one run.

    .venv/bin/python bench/kv_vs_redis.py [--requests 100000] [--rounds 5]

For each pipeline depth (1 and 16) and each round, both servers get the same commands
(`redis-benchmark -t set -n N -c 50 -P D -r 100000 --csv`, then the same with `-t get`), alternating
which server goes first. Prints a Markdown table of medians over the rounds: throughput, the ratio
kvserver / redis-server (of the medians, and the range of the rounds' own ratios), p99 latency and each server's CPU time (user + system) per request, read
from /proc around each run: the steadier figure on a shared machine. kvserver runs as deployed for
live patching: the runtime on (managed thread, quiescence point per iteration) and the agent listening.
On a machine with 2+ CPUs both servers run on CPU 1 and redis-benchmark on CPU 0 (--no-pin: anywhere).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kv_common import (
    Sample,
    can_pin,
    kvserver_with_agent,
    machine_note,
    measure,
    median,
    pin_server,
    printable,
    redis_server,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000, help="per test without pipelining")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--no-pin", action="store_true", help="let the scheduler place the processes")
    args = ap.parse_args()
    pinned = can_pin() and not args.no_pin
    placement = "servers on CPU 1, redis-benchmark on CPU 0" if pinned else "not pinned"
    print(f"# kvserver vs redis-server ({machine_note()}; {placement})\n")
    print(
        "| pipeline | test | kvserver rps | redis rps | ratio | per-round ratios | kvserver p99 ms "
        "| redis p99 ms | kvserver CPU us/req | redis CPU us/req |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    commands = []
    with kvserver_with_agent() as kv, redis_server() as rd:
        if pinned:
            pin_server(kv)
            pin_server(rd)
        for pipeline in (1, 16):
            requests = args.requests * (4 if pipeline > 1 else 1)  # pipelined runs are faster
            samples: dict[tuple[str, str], list[Sample]] = {}
            for rnd in range(args.rounds):
                order = [("kv", kv), ("redis", rd)]
                if rnd % 2:
                    order.reverse()
                for name, server in order:
                    for test in ("SET", "GET"):
                        cmd, sample = measure(
                            server, test, requests, pipeline, args.clients, pinned=pinned
                        )
                        samples.setdefault((name, test), []).append(sample)
                        commands.append(printable(cmd))
            for test in ("SET", "GET"):
                k, r = samples[("kv", test)], samples[("redis", test)]
                kv_rps, rd_rps = median([s.rps for s in k]), median([s.rps for s in r])
                rounds = [a.rps / b.rps for a, b in zip(k, r, strict=True)]
                print(
                    f"| {pipeline} | {test} | {kv_rps:,.0f} | {rd_rps:,.0f} | {kv_rps / rd_rps:.2f} "
                    f"| {min(rounds):.2f} to {max(rounds):.2f} "
                    f"| {median([s.p99_ms for s in k]):.2f} | {median([s.p99_ms for s in r]):.2f} "
                    f"| {median([s.cpu_us for s in k]):.1f} | {median([s.cpu_us for s in r]):.1f} |"
                )
    print(f"\nmedian of {args.rounds} rounds; commands:")
    for cmd in dict.fromkeys(commands):
        print(f"    {cmd}")


if __name__ == "__main__":
    main()
