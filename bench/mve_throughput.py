"""Throughput of kvserver while two versions run (a validated update's follower replays and compares every
request) vs one, and the steady-state cost of supporting validated updates when none runs (issue 14).

    .venv/bin/python bench/mve_throughput.py [--rounds 3] [--requests 100000] [--instructions]

Two versions vs one: one server with its agent and 100,000 keys; after a warm-up run, each round runs the same
redis-benchmark (`-t set,get -c 50 -P 1 -r 100000`) once with one version, and once while a validated update of
tests/mve/intenc.py's patch (`--promote manual`) follows (after the follower is ready: transform done),
then discards it (alternating which of the two goes first). Printed: per test the median over rounds of the per-round ratio two/one. Not pinned:
the follower is a fork of the server and would share its CPU.

--instructions: valgrind --tool=callgrind counts the user-space instructions kvserver (with its agent)
executes for one redis-benchmark run of N requests, with the validated-update host registered (as
shipped) and with `kvserver.mve_support.install` made a no-op (bench/kv_without_mve.py): the cost of
being able to do a validated update when none runs. Independent of the machine's load.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from tests.mve.intenc import build  # noqa: E402

from kv_common import KV_READY, SLOW_S, machine_note, redis_benchmark, tool  # noqa: E402
from livepatch.agent import client as agent_client  # noqa: E402
from lpbench.servers import ManagedProcess, free_port  # noqa: E402

_COLLECTED = re.compile(r"Collected : (\d+)")


@contextmanager
def server(
    work: Path, name: str, wrapper: list[str], module: list[str]
) -> Iterator[tuple[int, str, int]]:
    port = free_port()
    sock = str(work / f"{name}.sock")
    proc = ManagedProcess(
        [*wrapper, sys.executable, *module, "--port", str(port), "--livepatch-socket", sock,
         "--allow-unsigned"],
        KV_READY, work / f"{name}.log", ready_timeout_s=SLOW_S, stop_timeout_s=SLOW_S,
    )  # fmt: skip
    proc.start()
    try:
        assert proc.proc is not None
        yield port, sock, proc.proc.pid
    finally:
        proc.stop()


def wait_ready(sock: str, update: subprocess.Popen[str]) -> dict[str, object]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        st = agent_client.request(sock, {"op": "update-status"}, timeout=30).get("update") or {}
        if st.get("ready") and st.get("state") in ("following", "validated"):
            return st
        if update.poll() is not None:
            raise SystemExit(f"the update ended early: {update.communicate()}")
        time.sleep(0.05)
    raise SystemExit("the follower was not ready within 300 s")


def two_vs_one(args: argparse.Namespace, work: Path, patch: Path) -> None:
    ratios: dict[str, list[float]] = {"SET": [], "GET": []}
    cmd: list[str] = []
    with server(work, "tp", [], ["-m", "kvserver"]) as (port, sock, _pid):
        redis.Redis(port=port).execute_command("DEBUG", "POPULATE", "100000")
        redis_benchmark(port, "set,get", args.requests)  # warm-up: connections, pages, caches
        for rnd in range(args.rounds):
            # Alternate which goes first: a shared machine drifts, and a discarded follower leaves the
            # leader's pages copy-on-write until each is written once more.
            if rnd % 2:
                cmd, one = redis_benchmark(port, "set,get", args.requests)
            update = subprocess.Popen(
                [sys.executable, "-m", "livepatch.cli", "update", str(patch), "--socket", sock,
                 "--validate", "--promote", "manual", "--max-lag", "10000000", "--json"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            wait_ready(sock, update)
            _, two = redis_benchmark(port, "set,get", args.requests)
            st = agent_client.request(sock, {"op": "update-status"}, timeout=30).get("update") or {}
            agent_client.request(sock, {"op": "discard"}, timeout=30)
            out, _ = update.communicate(timeout=120)
            if not rnd % 2:
                cmd, one = redis_benchmark(port, "set,get", args.requests)
            outcome = json.loads(out)["update"]
            row = {
                "round": rnd,
                **{f"{t.lower()}_rps_one": one[t][0] for t in ("SET", "GET")},
                **{f"{t.lower()}_rps_two": two[t][0] for t in ("SET", "GET")},
                "compared_at_end": st.get("compared"),
                "lag_at_end": st.get("lag"),
                "outcome": outcome["outcome"],
                "reason": outcome["reason"],
            }
            print(json.dumps(row), flush=True)
            for t in ("SET", "GET"):
                ratios[t].append(two[t][0] / one[t][0])
    for t, values in ratios.items():
        print(
            json.dumps(
                {
                    "test": t,
                    "two_versions_over_one_median": round(statistics.median(values), 3),
                    "ratios": [round(v, 3) for v in values],
                }
            )
        )
    print(json.dumps({"command": " ".join(cmd)}))


def instructions(args: argparse.Namespace, work: Path) -> None:
    configs = {
        "with_mve_host": ["-m", "kvserver"],
        "without_mve_host": [str(ROOT / "bench" / "kv_without_mve.py")],
    }
    counts: dict[str, float] = {}
    for name, module in configs.items():
        log = work / f"callgrind-{name}.log"
        wrapper = [tool("valgrind"), "--tool=callgrind", "--callgrind-out-file=/dev/null",
                   "--instr-atstart=no", f"--log-file={log}"]  # fmt: skip
        with server(work, name, wrapper, module) as (port, _sock, pid):
            redis_benchmark(port, "set,get", args.instruction_requests)  # warm-up
            subprocess.run([tool("callgrind_control"), "-i", "on", str(pid)], check=True,
                           capture_output=True)  # fmt: skip
            redis_benchmark(port, "set,get", args.instruction_requests)
            subprocess.run([tool("callgrind_control"), "-i", "off", str(pid)], check=True,
                           capture_output=True)  # fmt: skip
        found = _COLLECTED.findall(log.read_text())
        if not found:
            raise SystemExit(f"no instruction count in {log}")
        counts[name] = int(found[-1]) / (2 * args.instruction_requests)
    print(
        json.dumps(
            {
                "instructions_per_request": {k: round(v) for k, v in counts.items()},
                "with_over_without": round(counts["with_mve_host"] / counts["without_mve_host"], 4),
                "command": f"redis-benchmark -t set,get -n {args.instruction_requests} -c 50 "
                "-r 100000 under valgrind --tool=callgrind, after a warm-up run",
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--instructions", action="store_true")
    ap.add_argument("--instruction-requests", type=int, default=10_000)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    print(json.dumps({"machine": machine_note()}), flush=True)
    work = Path(tempfile.mkdtemp(prefix="mvetp-"))
    try:
        if not args.skip_throughput:
            two_vs_one(args, work, build(work)["good"])
        if args.instructions:
            instructions(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
