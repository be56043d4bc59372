"""Fuzz the livepatch control socket and `.lpatch` decoding for longer than CI does.

    .venv/bin/python scripts/fuzz_livepatch.py [--examples 20000] [--random]

Runs the property tests of tests/hardening/test_fuzz_lpatch.py (arbitrary bytes and JSON, hostile values,
truncations, bit flips, mistyped fields: only a PatchFile or PatchFileError, and no changed manifest ever
verifies) and tests/hardening/test_fuzz_control.py (the same against a real agent over its socket: one
JSON error reply per line, nothing applied, the service still serving, no traceback in its log) with
--examples examples per property instead of CI's 150. --random draws new examples on every run (CI's are
derandomized, so the same ones every time); hypothesis prints the failing example to reproduce.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/hardening/test_fuzz_lpatch.py", "tests/hardening/test_fuzz_control.py"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=20_000, help="examples per property")
    ap.add_argument("--random", action="store_true", help="new random examples (not CI's)")
    args = ap.parse_args()
    env = dict(os.environ, LIVEPATCH_FUZZ_EXAMPLES=str(args.examples))
    if args.random:
        env["LIVEPATCH_FUZZ_RANDOM"] = "1"
    cmd = [sys.executable, "-m", "pytest", *TESTS, "-q", "-p", "no:cacheprovider"]
    return subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
