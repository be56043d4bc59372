"""kvserver against redis-server under the same redis-benchmark command, side by side in one run.

    .venv/bin/python bench/kv_vs_redis.py [--requests 100000] [--rounds 3]

For each pipeline depth (1 and 16) and each round, both servers get the same command
(`redis-benchmark -t get,set -n N -c 50 -P D -r 100000 --csv`), alternating which one goes first.
Prints a Markdown table of medians (throughput, p99) and the ratio kvserver / redis-server.
kvserver runs as shipped: the livepatch runtime on (managed thread, quiescence point per iteration).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kv_common import kvserver, machine_note, median, redis_benchmark, redis_server


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=50)
    args = ap.parse_args()
    print(f"# kvserver vs redis-server ({machine_note()})\n")
    print("| pipeline | test | kvserver rps | redis rps | ratio | kvserver p99 ms | redis p99 ms |")
    print("|---|---|---|---|---|---|---|")
    commands = []
    with kvserver() as kv, redis_server() as rd:
        for pipeline in (1, 16):
            samples: dict[str, dict[str, list[tuple[float, float]]]] = {"kv": {}, "redis": {}}
            for rnd in range(args.rounds):
                order = [("kv", kv.port), ("redis", rd.port)]
                if rnd % 2:
                    order.reverse()
                for name, port in order:
                    requests = args.requests * (
                        4 if pipeline > 1 else 1
                    )  # pipelined runs are faster
                    cmd, result = redis_benchmark(
                        port, "get,set", requests, clients=args.clients, pipeline=pipeline
                    )
                    for test, value in result.items():
                        samples[name].setdefault(test, []).append(value)
                commands.append(" ".join([*cmd[:1], "-p", "PORT", *cmd[3:]]))
            for test in ("SET", "GET"):
                kv_rps = median([s[0] for s in samples["kv"].get(test, [])])
                rd_rps = median([s[0] for s in samples["redis"].get(test, [])])
                kv_p99 = median([s[1] for s in samples["kv"].get(test, [])])
                rd_p99 = median([s[1] for s in samples["redis"].get(test, [])])
                print(
                    f"| {pipeline} | {test} | {kv_rps:,.0f} | {rd_rps:,.0f} | {kv_rps / rd_rps:.2f} "
                    f"| {kv_p99:.2f} | {rd_p99:.2f} |"
                )
    print(f"\nmedian of {args.rounds} rounds; commands:")
    for cmd in dict.fromkeys(commands):
        print(f"    {cmd}")


if __name__ == "__main__":
    main()
