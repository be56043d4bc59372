"""Staging time of a one-function patch, as the agent reports it (PatchResult.timings["stage"]).

What runs: an Agent in this process (the real control socket), a patch changing one function, applied with
global quiescence (no managed threads: the sync is immediate) and reverted, --repeats times, over the
socket, exactly as `livepatch apply --json` does. Two one-function patches:
- tiny:      a 5-line module (the shape of /work/shared/acceptance/e2e_core.py's patch);
- kvserver:  GET's handler in kvserver/commands/strings.py (about 530 lines), lpbench's built-in patch;
each both ways the agent can receive it:
- signed:    built with a key (its changed function travels compiled, decoded after the signature check);
- unsigned:  accepted with allow_unsigned (its code is compiled from the source on the patcher thread).

Columns: the first apply's stage time (cold: nothing cached), the median and p90 of the others, and the
longest stall of a ticker thread (sleeping 0.5 ms in a loop) during the applies against the same ticker's
longest stall while nothing happens: a stall is the GIL held by the patcher thread, what clients of a
server see as a latency column.

Usage: .venv/bin/python bench/staging_time.py [--repeats 21] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import livepatch
from livepatch.agent import client
from livepatch.patch import lpatch, signing
from livepatch.patch.diff import patch_from_sources
from livepatch.patch.model import Category, PatchSpec

TINY_V1 = 'import time\n\n\ndef greet(name):\n    return "hello " + name\n'
TINY_V2 = 'import time\n\n\ndef greet(name):\n    return "hi " + name\n'


class Ticker:
    """A thread that sleeps 0.5 ms in a loop and records how much longer than that each wait took."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(0.0005)
            now = time.perf_counter()
            self.worst_ms = max(self.worst_ms, (now - last - 0.0005) * 1e3)
            last = now

    def __enter__(self) -> Ticker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tiny_patch(workdir: Path) -> tuple[PatchSpec, Callable[[], str]]:
    name = "lp_staging_bench_tiny"
    (workdir / f"{name}.py").write_text(TINY_V1)
    sys.path.insert(0, str(workdir))
    module = __import__(name)
    spec = patch_from_sources({name: (TINY_V1, TINY_V2)}, category=Category.THREAD_LOCAL)
    return spec, lambda: module.greet("x")


def kvserver_patch() -> tuple[PatchSpec, Callable[[], str]]:
    from kvserver.commands import strings
    from lpbench.patches import HOT_FUNCTION, bench_lines, insert_into

    old = Path(strings.__file__).read_text(encoding="utf-8")
    new, done = insert_into(old, {HOT_FUNCTION[1]}, bench_lines)
    assert done == [HOT_FUNCTION[1]]
    spec = patch_from_sources({strings.__name__: (old, new)}, category=Category.THREAD_LOCAL)
    return spec, lambda: str(strings.get_command.__code__.co_consts)


def measure(
    sock: str, document: dict[str, Any], repeats: int, probe: Callable[[], str]
) -> dict[str, float]:
    before = probe()
    stages = []
    with Ticker() as ticker:
        for _ in range(repeats):
            reply = client.request(sock, {"op": "apply", "patch": document, "method": "global",
                                          "timeout": 10.0, "watch": None})  # fmt: skip
            if not reply["ok"]:
                raise SystemExit(f"apply failed: {reply['error']}")
            assert probe() != before
            stages.append(float(reply["result"]["timings"]["stage"]))
            reply = client.request(sock, {"op": "revert", "patch_id": None, "method": "global",
                                          "timeout": 10.0})  # fmt: skip
            if not reply["ok"]:
                raise SystemExit(f"revert failed: {reply['error']}")
            assert probe() == before
    rest = sorted(stages[1:])
    return {
        "first_ms": stages[0],
        "median_ms": statistics.median(rest),
        "p90_ms": rest[int(0.9 * (len(rest) - 1))],
        "stall_ms": ticker.worst_ms,
    }


def idle_stall(seconds: float) -> float:
    with Ticker() as ticker:
        time.sleep(seconds)
    return ticker.worst_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        priv, pub, _ = signing.generate_keypair(workdir / "keys")
        key = signing.load_private_key(priv)
        sock = str(workdir / "lp.sock")
        patches = {"tiny": tiny_patch(workdir), "kvserver": kvserver_patch()}
        with livepatch.Agent(socket_path=sock, trusted_keys=[pub], allow_unsigned=True):
            for name, (spec, probe) in patches.items():
                for how, signer in (("signed", key), ("unsigned", None)):
                    document = lpatch.build(spec, signer).to_document()
                    t0 = time.perf_counter()
                    results[f"{name} {how}"] = measure(sock, document, args.repeats, probe)
                    elapsed = time.perf_counter() - t0
                    results[f"{name} {how}"]["idle_stall_ms"] = idle_stall(elapsed)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"one-function patch, {args.repeats} applies each (stage: PatchResult.timings['stage'])")
    print(
        f"{'patch':<18} {'first ms':>9} {'median ms':>10} {'p90 ms':>8} {'stall ms':>9} {'idle stall ms':>14}"
    )
    for name, r in results.items():
        print(
            f"{name:<18} {r['first_ms']:>9.3f} {r['median_ms']:>10.3f} {r['p90_ms']:>8.3f} "
            f"{r['stall_ms']:>9.2f} {r['idle_stall_ms']:>14.2f}"
        )


if __name__ == "__main__":
    main()
