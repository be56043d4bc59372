"""The cost of being live-patchable: the same kvserver with and without the livepatch runtime.

    .venv/bin/python bench/kv_overhead.py [--requests 100000] [--rounds 5]

"with": as shipped (the loop thread is a managed thread, one quiescence point per loop iteration, a
wake-up hook). "without": `--no-livepatch` (none of that). Both servers run at once; each round gives both
the same redis-benchmark command (`-t get,set -c 50`, pipeline 1 and 16), alternating the order.
Goal: medians within 1%. Prints a Markdown table and the commands.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kv_common import kvserver, machine_note, median, redis_benchmark


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    print(f"# kvserver with vs without livepatch ({machine_note()})\n")
    print("| pipeline | test | with rps | without rps | with / without |")
    print("|---|---|---|---|---|")
    commands = []
    with kvserver() as with_lp, kvserver("--no-livepatch") as without_lp:
        for pipeline in (1, 16):
            samples: dict[str, dict[str, list[float]]] = {"with": {}, "without": {}}
            for rnd in range(args.rounds):
                order = [("with", with_lp.port), ("without", without_lp.port)]
                if rnd % 2:
                    order.reverse()
                for name, port in order:
                    requests = args.requests * (4 if pipeline > 1 else 1)
                    cmd, result = redis_benchmark(port, "get,set", requests, pipeline=pipeline)
                    for test, (rps, _) in result.items():
                        samples[name].setdefault(test, []).append(rps)
                commands.append(" ".join([*cmd[:1], "-p", "PORT", *cmd[3:]]))
            for test in ("SET", "GET"):
                a = median(samples["with"].get(test, []))
                b = median(samples["without"].get(test, []))
                print(f"| {pipeline} | {test} | {a:,.0f} | {b:,.0f} | {a / b:.3f} |")
    print(f"\nmedian of {args.rounds} rounds; commands:")
    for cmd in dict.fromkeys(commands):
        print(f"    {cmd}")


if __name__ == "__main__":
    main()
