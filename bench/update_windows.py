"""Is there a latency column at an update? The max latency near each update against the run's own baseline.

Reads what `livepatch bench` wrote (DIR/<method>/run<i>/{requests.npz, events.json}) and prints, per
run, the max latency of the requests scheduled within +-`--window` s of each update, the max of all the
other requests of the run (its baseline), how many updates exceed that baseline, and each update's stage
and sync times; then "at the update": the max latency of the requests started from 50 ms before the
update's request to its end (what the update itself can delay), per action, and how many exceed the
baseline (a revert stages nothing: the runs' own control for an apply). The `none` method (update times marked, nothing done) is the control: it shows how often
a window of that width exceeds the rest of the run by chance on this machine.

    .venv/bin/livepatch bench --server kv --update none,live-global,live-local --rate 2000 \\
        --duration 15 --at 3,6,9,12 --runs 3 --out DIR
    .venv/bin/python bench/update_windows.py DIR [--window 1.5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--window", type=float, default=1.5, help="seconds either side of an update")
    args = ap.parse_args()
    half = args.window * 1e9
    for method_dir in sorted(p for p in args.dir.iterdir() if (p / "run0").is_dir()):
        over_total = windows_total = 0
        at_over: dict[str, list[int]] = {}  # action -> [over the baseline, updates]
        for run in sorted(method_dir.glob("run*")):
            req = np.load(run / "requests.npz")
            updates = json.loads((run / "events.json").read_text())["updates"]
            start, latency = req["start_ns"], req["latency_ns"] / 1e6
            near = np.zeros(len(start), dtype=bool)
            maxima = []
            for u in updates:
                w = (start >= u["t_ns"] - half) & (start <= u["t_ns"] + half)
                near |= w
                maxima.append(float(latency[w].max()) if w.any() else float("nan"))
            baseline = float(latency[~near].max()) if (~near).any() else float("nan")
            over = sum(m > baseline for m in maxima)
            over_total += over
            windows_total += len(maxima)
            timings = [u.get("timings") or {} for u in updates]
            at_update = []
            for u in updates:
                if "window_ns" not in u:
                    continue  # the control: nothing happened at the mark
                lo, hi = u["window_ns"]
                w = (start >= lo - _BEFORE_NS) & (start <= hi)
                m = float(latency[w].max()) if w.any() else float("nan")
                at_update.append(f"{u.get('action', '?')} {m:.1f}")
                counts = at_over.setdefault(str(u.get("action", "?")), [0, 0])
                counts[0] += m > baseline
                counts[1] += 1
            print(
                f"{method_dir.name:<12} {run.name}: baseline max {baseline:8.1f} ms; near updates "
                + " ".join(f"{m:8.1f}" for m in maxima)
                + f"; over baseline {over}/{len(maxima)}"
                + (
                    "; stage "
                    + ", ".join(f"{t['stage']:.1f}" for t in timings if "stage" in t)
                    + " ms; sync "
                    + ", ".join(f"{t['sync']:.1f}" for t in timings if "sync" in t)
                    + " ms"
                    if any("stage" in t for t in timings)
                    else ""
                )
                + ("; at the update " + ", ".join(at_update) + " ms" if at_update else "")
            )
        print(
            f"{method_dir.name:<12} all runs: {over_total}/{windows_total} windows over their baseline"
            + "".join(
                f"; at the update, {action} over it {o}/{n}" for action, (o, n) in at_over.items()
            )
        )


_BEFORE_NS = (
    50e6  # "at the update": from 50 ms before the request (the client's send) to the finish
)


if __name__ == "__main__":
    main()
