"""What importing livepatch costs a server: `-X importtime`'s cumulative figure, median of --repeats runs.

Three statements, each in a fresh interpreter:
- `import livepatch`                                 the package alone (public names load on first use);
- `import livepatch; livepatch.quiescence_point`     plus the quiescence-point facade (the runtime's
                                                     thread registry): what a server's threads touch;
- `import livepatch; livepatch.Agent`                plus the agent (cryptography, the control socket,
                                                     the patcher).
The figure is the cumulative microseconds of the top-level `livepatch` line, plus those of the modules
first imported by the attribute access (they are top-level lines of their own), as e2e_core.py measures
the first statement.

With PYTHONDONTWRITEBYTECODE set (the project's shared machine sets it) no bytecode cache is written and
every import compiles its module: the figures then include compiling, which an installed server (run from
the caches pip writes) does not pay. The header line says which; `env -u PYTHONDONTWRITEBYTECODE` (after one
warm-up run) measures what a server pays.

Usage: .venv/bin/python bench/import_time.py [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

STATEMENTS = {
    "import livepatch": "import livepatch",
    "+ quiescence facade": "import livepatch; livepatch.quiescence_point",
    "+ Agent": "import livepatch; livepatch.Agent",
}


def cost_ms(statement: str) -> float:
    """Cumulative ms of the top-level imports from the first `livepatch` line on."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True,
        text=True,
        check=True,
    )
    total, counting = 0, False
    for line in proc.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[1].strip().isdigit():
            continue  # the header line
        name = fields[2]
        top_level = name[:1] == " " and name[1:2] != " "  # nested imports are indented further
        counting = counting or name.strip() == "livepatch"
        if counting and top_level:
            total += int(fields[1])
    return total / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    for label, statement in STATEMENTS.items():
        runs = [cost_ms(statement) for _ in range(args.repeats)]
        results[label] = {"median_ms": statistics.median(runs), "min_ms": min(runs)}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    caches = (
        "compiling every module" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "bytecode caches"
    )
    print(
        f"{'statement':<22} {'median ms':>10} {'min ms':>8}   ({args.repeats} fresh interpreters each, "
        f"{caches})"
    )
    for label, r in results.items():
        print(f"{label:<22} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f}")


if __name__ == "__main__":
    main()
