"""How long a kvserver takes to exit after SIGTERM in the middle of a validated update's hand-over
(the leader's loop paused, waiting for the follower's "took-over", held there by a hold point).

    .venv/bin/python bench/mve_stop_time.py [--runs 3] [--plain-too]

Before session 5 the leader waited out the whole hand-over deadline (10 s) first. `--plain-too`
alternates each run with the same server stopped by SIGTERM with no update running (the reference:
what any stop costs on this machine now). To compare with another tree's code, put its src/ first on
PYTHONPATH (the servers inherit it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.mve.intenc import build  # noqa: E402


def once(work: Path, patch: Path, update_too: bool = True) -> dict[str, object]:
    holds = work / "holds"
    shutil.rmtree(holds, ignore_errors=True)
    holds.mkdir()
    sock = str(work / "lp.sock")
    env = dict(
        os.environ, LIVEPATCH_MVE_HOLD_DIR=str(holds), LIVEPATCH_MVE_HOLD_AT="follower:handover"
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "kvserver", "--port", "0", "--livepatch-socket", sock, "--allow-unsigned"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        while "ready" not in server.stdout.readline():
            pass
        if not update_too:
            t0 = time.monotonic()
            server.send_signal(signal.SIGTERM)
            server.stdout.read()
            server.wait(60)
            return {"exit": server.returncode, "seconds": round(time.monotonic() - t0, 3),
                    "update": "none (plain SIGTERM)"}  # fmt: skip
        update = subprocess.Popen(
            [sys.executable, "-m", "livepatch.cli", "update", str(patch), "--socket", sock,
             "--validate", "--window", "1s", "--exercise-wait", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while not (holds / "follower-handover").exists():
            if time.monotonic() > deadline or update.poll() is not None:
                raise SystemExit(f"the hand-over was not reached: {update.communicate()}")
            time.sleep(0.005)
        t0 = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.stdout.read()
        server.wait(60)
        took = time.monotonic() - t0
        out, _ = update.communicate(timeout=60)
        return {"exit": server.returncode, "seconds": round(took, 3), "update": out.splitlines()[0]}
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--plain-too", action="store_true", help="alternate with a plain SIGTERM")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lpstop-"))
    try:
        patch = build(work)["good"]
        for _ in range(args.runs):
            print(json.dumps({**once(work, patch), "load": os.getloadavg()[0]}), flush=True)
            if args.plain_too:
                row = once(work, patch, update_too=False)
                print(json.dumps({**row, "load": os.getloadavg()[0]}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
