"""Throughput of kvserver while two versions run (a validated update's follower replays and compares every
request) vs one, how fast the follower replays against how fast the leader serves, and the cost in
instructions (issue 14).

    .venv/bin/python bench/mve_throughput.py [--rounds 4] [--requests 100000] [--instructions]
                                             [--huge-pages-too]

Two versions vs one (wall clock): every round starts a FRESH server (kvserver with its agent, 100,000 keys
from DEBUG POPULATE, one warm-up redis-benchmark run), so no measurement follows a discarded follower (whose
pages the leader copies on write once more for a while). The one-version round measures
`redis-benchmark -t set,get -c 50 -P 1 -r 100000`; the two-version round starts a validated update of
tests/mve/intenc.py's patch (`--promote manual`), waits until the follower is ready (transform done), runs
the same benchmark, then waits until the follower has compared everything the leader recorded, and
discards it. Which of the two goes first alternates by round. Pinned like bench/kv_vs_redis.py (when the
machine has 2+ CPUs): the leader on CPU 1, redis-benchmark on CPU 0, the follower on CPU 0 too
(`--follower-cpu`): the leader's own CPU is never shared with its follower.

Replay speed: from the same two-version run, leader = requests recorded / benchmark time; follower =
requests compared / time from the benchmark's start until it had compared all of them (equal to the
leader's when it keeps up: it finishes with the benchmark).

--instructions: valgrind --tool=callgrind counts the user-space instructions of the *leader* process per
request for one redis-benchmark run (after a warm-up run): (a) with the validated-update host registered
(as shipped) and (b) with `kvserver.mve_support.install` made a no-op (bench/kv_without_mve.py): the
steady-state cost when no update runs; and (c) while a follower follows (the leader records every
request and ships the log). (c) is skewed: valgrind runs the server ~50x slower, so the monitor thread's
periodic work (~20 wake-ups a second) is charged to 50x fewer requests; bench/mve_record_cost.py counts
what recording adds per request without that.
"""

from __future__ import annotations

import argparse
import json
import os
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
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from tests.mve.intenc import build  # noqa: E402

from kv_common import (  # noqa: E402
    KV_READY,
    LOAD_CPU,
    SERVER_CPU,
    SLOW_S,
    can_pin,
    machine_note,
    redis_benchmark,
    tool,
)
from livepatch.agent import client as agent_client  # noqa: E402
from lpbench.servers import ManagedProcess, free_port  # noqa: E402


@contextmanager
def server(
    work: Path, name: str, wrapper: list[str], module: list[str], env: dict[str, str] | None = None
) -> Iterator[tuple[int, str, int]]:
    port = free_port()
    sock = str(work / f"{name}.sock")
    proc = ManagedProcess(
        [*wrapper, sys.executable, *module, "--port", str(port), "--livepatch-socket", sock,
         "--allow-unsigned"],
        KV_READY, work / f"{name}.log", ready_timeout_s=SLOW_S, stop_timeout_s=SLOW_S,
        env=dict(os.environ, **(env or {})),
    )  # fmt: skip
    proc.start()
    try:
        assert proc.proc is not None
        yield port, sock, proc.proc.pid
    finally:
        proc.stop()


def status(sock: str) -> dict[str, Any]:
    st: dict[str, Any] = (
        agent_client.request(sock, {"op": "update-status"}, timeout=30).get("update") or {}
    )
    return st


def wait_ready(sock: str, update: subprocess.Popen[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        st = status(sock)
        if st.get("ready") and st.get("state") in ("following", "validated"):
            return st
        if update.poll() is not None:
            raise SystemExit(f"the update ended early: {update.communicate()}")
        time.sleep(0.05)
    raise SystemExit("the follower was not ready within 600 s")


def start_update(patch: Path, sock: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livepatch.cli", "update", str(patch), "--socket", sock,
         "--validate", "--promote", "manual", "--max-lag", "100000000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def discard(sock: str, update: subprocess.Popen[str]) -> dict[str, Any]:
    agent_client.request(sock, {"op": "discard"}, timeout=30)
    out, err = update.communicate(timeout=120)
    try:
        outcome: dict[str, Any] = json.loads(out)["update"]
    except (ValueError, KeyError):
        raise SystemExit(f"unexpected update output: {out!r} {err!r}") from None
    return outcome


def pin(pid: int, cpu: int) -> None:
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


def one_round(
    args: argparse.Namespace, work: Path, patch: Path, two: bool, pinned: bool
) -> dict[str, Any]:
    name = "two" if two else "one"
    with server(work, name, [], ["-m", "kvserver"]) as (port, sock, pid):
        if pinned:
            pin(pid, SERVER_CPU)
        redis.Redis(port=port).execute_command("DEBUG", "POPULATE", str(args.keys))
        redis_benchmark(port, "set,get", args.requests, pinned=pinned)  # warm-up
        if not two:
            cmd, rps = redis_benchmark(port, "set,get", args.requests, pinned=pinned)
            return {"cmd": cmd, "rps": rps}
        update = start_update(patch, sock)
        try:
            st = wait_ready(sock, update)
            if pinned:
                pin(int(st["follower_pid"]), args.follower_cpu)
            before = status(sock)
            t0 = time.monotonic()
            cmd, rps = redis_benchmark(port, "set,get", args.requests, pinned=pinned)
            t1 = time.monotonic()
            after = status(sock)
            while (
                True
            ):  # until the follower compared everything the benchmark made the leader record
                st = status(sock)
                if st.get("compared", 0) >= after["recorded"] or st.get("state") == "discarded":
                    break
                time.sleep(0.01)
            t2 = time.monotonic()
        finally:
            outcome = discard(sock, update)
        leader = (after["recorded"] - before["recorded"]) / (t1 - t0)
        follower = (st.get("compared", 0) - before["compared"]) / (t2 - t0)
        return {
            "cmd": cmd,
            "rps": rps,
            "leader_rps": round(leader),
            "follower_rps": round(follower),
            "follower_over_leader": round(follower / leader, 3),
            "behind_at_benchmark_end": after["recorded"] - after["compared"],
            "outcome": outcome["outcome"],
            "reason": outcome["reason"],
        }


def two_vs_one(args: argparse.Namespace, work: Path, patch: Path) -> None:
    pinned = can_pin() and not args.no_pin
    print(json.dumps({"placement": f"leader on CPU {SERVER_CPU}, redis-benchmark on CPU {LOAD_CPU}, "
                      f"follower on CPU {args.follower_cpu}" if pinned else "not pinned"}))  # fmt: skip
    ratios: dict[str, list[float]] = {"SET": [], "GET": []}
    replay: list[float] = []
    cmd: list[str] = []
    for rnd in range(args.rounds):
        first_two = bool(rnd % 2)
        a = one_round(args, work, patch, first_two, pinned)
        b = one_round(args, work, patch, not first_two, pinned)
        one, two = (b, a) if first_two else (a, b)
        cmd = one["cmd"]
        row = {
            "round": rnd,
            **{f"{t.lower()}_rps_one": one["rps"][t][0] for t in ("SET", "GET")},
            **{f"{t.lower()}_rps_two": two["rps"][t][0] for t in ("SET", "GET")},
            **{k: v for k, v in two.items() if k not in ("cmd", "rps")},
        }
        print(json.dumps(row), flush=True)
        for t in ("SET", "GET"):
            ratios[t].append(two["rps"][t][0] / one["rps"][t][0])
        replay.append(two["follower_over_leader"])
    for t, values in ratios.items():
        print(json.dumps({"test": t, "two_versions_over_one_median": round(statistics.median(values), 3),
                          "ratios": [round(v, 3) for v in values]}))  # fmt: skip
    print(json.dumps({"follower_replay_over_leader_median": round(statistics.median(replay), 3),
                      "ratios": replay}))  # fmt: skip
    print(json.dumps({"command": " ".join(cmd), "load_average_at_end": os.getloadavg()}))


def _callgrind(work: Path, name: str, module: list[str]) -> tuple[list[str], Path]:
    log = work / f"callgrind-{name}.log"
    wrapper = [tool("valgrind"), "--tool=callgrind", "--callgrind-out-file=/dev/null",
               "--instr-atstart=no", f"--log-file={log}"]  # fmt: skip
    return wrapper, log


def _count(log: Path, pid: int) -> int:
    """The leader's count: valgrind logs one 'Collected' per process (the follower is another pid)."""
    text = log.read_text()
    found = [int(n) for p, n in re.findall(r"==(\d+)== Collected : (\d+)", text) if int(p) == pid]
    if not found:
        raise SystemExit(f"no instruction count for pid {pid} in {log}")
    return found[-1]


def instructions(args: argparse.Namespace, work: Path, patch: Path) -> None:
    n = args.instruction_requests
    configs: dict[str, tuple[list[str], bool, dict[str, str] | None]] = {
        "with_mve_host": (["-m", "kvserver"], False, None),
        "without_mve_host": ([str(ROOT / "bench" / "kv_without_mve.py")], False, None),
        "while_a_follower_follows": (["-m", "kvserver"], True, None),
    }
    if args.huge_pages_too:
        # What `--huge-pages` re-executes itself with (kvserver/huge_pages.py); given from the start,
        # so that valgrind sees no exec. Instructions count glibc's malloc against pymalloc; the huge
        # pages themselves change page faults and TLB misses, not instructions.
        configs["with_huge_pages"] = (
            ["-m", "kvserver", "--huge-pages"], False,
            {"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},
        )  # fmt: skip
    counts: dict[str, float] = {}
    for name, (module, follow, env) in configs.items():
        wrapper, log = _callgrind(work, name, module)
        with server(work, name, wrapper, module, env) as (port, sock, pid):
            redis.Redis(port=port).execute_command("DEBUG", "POPULATE", str(args.instruction_keys))
            redis_benchmark(port, "set,get", n)  # warm-up
            update = start_update(patch, sock) if follow else None
            try:
                if update is not None:
                    wait_ready(sock, update)
                subprocess.run([tool("callgrind_control"), "-i", "on", str(pid)], check=True,
                               capture_output=True)  # fmt: skip
                redis_benchmark(port, "set,get", n)
                subprocess.run([tool("callgrind_control"), "-i", "off", str(pid)], check=True,
                               capture_output=True)  # fmt: skip
            finally:
                if update is not None:
                    outcome = discard(sock, update)
                    print(json.dumps({"instruction_run_update": outcome["outcome"],
                                      "compared": outcome["compared"]}))  # fmt: skip
        counts[name] = _count(log, pid) / (2 * n)
    base = counts["with_mve_host"]
    print(
        json.dumps(
            {
                "instructions_per_request": {k: round(v) for k, v in counts.items()},
                "with_over_without": round(base / counts["without_mve_host"], 4),
                "one_version_over_two": round(base / counts["while_a_follower_follows"], 4),
                **(
                    {"huge_pages_over_default": round(counts["with_huge_pages"] / base, 4)}
                    if "with_huge_pages" in counts
                    else {}
                ),
                "command": f"redis-benchmark -t set,get -n {n} -c 50 -r 100000 under valgrind "
                f"--tool=callgrind, {args.instruction_keys} keys, after a warm-up run",
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--instruction-keys", type=int, default=10_000)
    ap.add_argument("--follower-cpu", type=int, default=LOAD_CPU)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--instructions", action="store_true")
    ap.add_argument("--instruction-requests", type=int, default=10_000)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--huge-pages-too", action="store_true",
                    help="--instructions also counts `kvserver --huge-pages` (glibc malloc)")  # fmt: skip
    args = ap.parse_args()
    print(json.dumps({"machine": machine_note()}), flush=True)
    work = Path(tempfile.mkdtemp(prefix="mvetp-"))
    try:
        patch = build(work)["good"]
        if not args.skip_throughput:
            two_vs_one(args, work, patch)
        if args.instructions:
            instructions(args, work, patch)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
