"""How long an apply through the agent keeps the other threads of the server off the GIL, per phase.

What runs: kvserver's figures commit (lpbench.kv_history.FIGURES) is built and its parent tree imported in
this process, with a real Agent (the harness key trusted). A process of its own applies (global) and
reverts the signed patch over the control socket --repeats times, as `livepatch apply` does. Meanwhile a
"ticker" thread of this process (standing for a server thread that wants the GIL back, as kvserver's
event loop does when epoll returns) sleeps 0.2 ms and wakes, over and over; a wake-up later than
--gap-ms after the previous one is a *stretch*: the GIL was held by someone else (the control
connection thread, the patcher thread) or the OS did not run the ticker.

Each stretch is placed against the apply's phases, from the timestamps of the request's send (client),
the agent's events (`received`, `signature-checked`, `staged`, `finished`) and the reply: "control"
(sent -> received: the control thread reads and decodes the request line), "checks" (received ->
signature-checked: decoding the patch, the signature, the compiled code), "stage" (-> staged), "swap"
(-> finished) and "reply" (finished -> answered). Printed: per phase, how many applies had a stretch
there and the median and max of the longest stretch per apply; and the longest stretch per apply.

--switch-s sets sys.setswitchinterval: with 1 s, no thread is ever forced to hand the GIL over, so a
stretch is exactly a span in which the holder never released it (deterministic, up to the OS); with the
default 5 ms, a stretch longer than that is cut by the waiter's drop request (what a server sees).

Usage: .venv/bin/python bench/apply_stretches.py [--repeats 20] [--switch-s 1.0] [--json]
(`PYTHONPATH=<another checkout>/src` in front measures that checkout's agent.)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("control", "checks", "stage", "swap", "reply")


def updater(socket_path: str, patch: str, repeats: int, gap_s: float, out: Connection) -> None:
    """Apply (global) and revert over the control socket; per apply (sent, events, answered)."""
    from lpbench import agent

    applies: list[tuple[int, dict[str, int], int]] = []
    path = Path(socket_path)
    for _ in range(repeats):
        time.sleep(gap_s)
        sent = time.monotonic_ns()
        r = agent.apply(path, Path(patch), "global")
        answered = time.monotonic_ns()
        if r.outcome.value != "applied":
            raise RuntimeError(f"apply: {r.outcome.value} {r.reason}")
        applies.append((sent, {e.name.value: e.t_ns for e in r.events}, answered))
        time.sleep(gap_s)
        r = agent.revert(path, "global")
        if r.outcome.value != "reverted":
            raise RuntimeError(f"revert: {r.outcome.value} {r.reason}")
    out.send(applies)


class Ticker:
    """A thread that wants the GIL every 0.2 ms; records the wake-ups that came later than `gap_ns`."""

    def __init__(self, gap_ns: int) -> None:
        self.gap_ns = gap_ns
        self.stretches: list[tuple[int, int]] = []  # (previous wake-up, this one), monotonic ns
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ticker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        prev = time.monotonic_ns()
        while not self._stop.is_set():
            time.sleep(0.0002)
            now = time.monotonic_ns()
            if now - prev > self.gap_ns:
                self.stretches.append((prev, now))
            prev = now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def phase_bounds(sent: int, ev: dict[str, int], answered: int) -> list[tuple[str, int, int]]:
    marks = [
        sent,
        ev["received"],
        ev.get("signature-checked", ev["received"]),
        ev["staged"],
        ev["finished"],
        answered,
    ]
    return [(name, marks[i], marks[i + 1]) for i, name in enumerate(PHASES)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--gap-ms", type=float, default=0.6, help="a later wake-up is a stretch")
    ap.add_argument("--switch-s", type=float, default=None, help="sys.setswitchinterval")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from lpbench import kv_history

    assert kv_history.FIGURES is not None
    workdir = Path(tempfile.mkdtemp(prefix="apply-stretches-"))
    built = kv_history.build_one(ROOT, 0, kv_history.FIGURES, workdir)
    sys.path.insert(0, str(built.code / "src"))
    from livepatch.agent.agent import Agent
    from livepatch.patch import compiled, lpatch
    from livepatch.runtime.staging import stage
    from lpbench.keys import harness_key

    pf = lpatch.read(built.patch.path)
    spec = compiled.attach(pf.spec, pf.manifest.get("compiled"))
    for m in spec.modules:
        __import__(m.module)
    stage(spec)  # once, unmeasured: the first staging warms caches (fingerprints, imports)
    if args.switch_s is not None:
        sys.setswitchinterval(args.switch_s)
    ctx = mp.get_context("spawn")
    sock = str(workdir / "control.sock")
    with Agent(sock, trusted_keys=[harness_key()[1]], state_dir=None):
        ticker = Ticker(int(args.gap_ms * 1e6))
        parent, child = ctx.Pipe()
        up = ctx.Process(
            target=updater, args=(sock, str(built.patch.path), args.repeats, 0.05, child)
        )
        up.start()
        applies = parent.recv()
        up.join()
        ticker.stop()

    longest: dict[str, list[float]] = {p: [] for p in PHASES}
    per_apply: list[dict[str, Any]] = []
    for sent, ev, answered in applies:
        bounds = phase_bounds(sent, ev, answered)
        row: dict[str, Any] = {
            "phases_ms": {p: round((b - a) / 1e6, 3) for p, a, b in bounds},
            "stretches": [],
        }
        for a, b in ticker.stretches:
            if b < sent or a > answered:
                continue
            # the phase the stretch started in (a stretch spanning two is counted in the first)
            phase = next((p for p, lo, hi in bounds if lo <= a < hi), "control")
            row["stretches"].append((phase, round((a - ev["received"]) / 1e6, 3), (b - a) / 1e6))
        for p in PHASES:
            in_p = [ms for ph, _, ms in row["stretches"] if ph == p]
            if in_p:
                longest[p].append(max(in_p))
        per_apply.append(row)
    out = {
        "livepatch": str(Path(sys.modules["livepatch"].__file__ or "").parent),
        "switch_s": sys.getswitchinterval(),
        "applies": len(applies),
        "longest_per_apply_ms": [
            max((ms for _, _, ms in r["stretches"]), default=0.0) for r in per_apply
        ],
        "by_phase": {
            p: {
                "applies_with_one": len(v),
                "median_ms": statistics.median(v) if v else 0.0,
                "max_ms": max(v, default=0.0),
            }
            for p, v in longest.items()
        },
        "phase_median_ms": {
            p: statistics.median(r["phases_ms"][p] for r in per_apply) for p in PHASES
        },
        "per_apply": per_apply,
    }
    if args.json:
        print(json.dumps(out, indent=1))
        return
    longest_all = out["longest_per_apply_ms"]
    print(
        f"livepatch from {out['livepatch']}; switch interval {out['switch_s'] * 1e3:g} ms; "
        f"{len(applies)} applies; longest stretch per apply: median "
        f"{statistics.median(longest_all):.2f} ms, max {max(longest_all):.2f} ms"
    )
    print("phase     wall median   applies with a stretch   longest: median     max")
    for p in PHASES:
        b = out["by_phase"][p]
        print(
            f"{p:<8} {out['phase_median_ms'][p]:9.2f} ms {b['applies_with_one']:>14}/{len(applies)}"
            f" {b['median_ms']:14.2f} ms {b['max_ms']:7.2f} ms"
        )


if __name__ == "__main__":
    main()
