"""The machine's floor for a global transition's sync: N busy threads park on a plain flag, no runtime.

What bench/sync_time.py's CPU-bound global sync cannot go below in CPython: after the request is
published, every busy thread must get the GIL once to reach its next check, and each park hands the GIL to
the next thread (a futex wake and a context switch, by the OS). This script does exactly that with
nothing of livepatch: N threads run the same loop as sync_time.py's workers (a check, then two calls), the
check being one attribute read; a "patcher" thread sets the flag and waits on an Event the last thread to
park sets; then releases them. request -> all parked is the chain of hand-offs alone.

Read it beside sync_time.py in the same minutes: the runtime's sync minus this floor is what the runtime
adds; a floor that moves (a quiet machine against a busy one: an idle CPU must be woken for each hand-off)
moves the sync with it, whatever the code.

    .venv/bin/python bench/gil_chain.py [--threads 10] [--rounds 200] [--io]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time


class Flag:
    __slots__ = ("request",)

    def __init__(self) -> None:
        self.request: object | None = None


def first(x: int) -> int:
    return x + 1


def second(x: int) -> int:
    return x * 2


def run(n: int, rounds: int, io: bool) -> list[float]:
    flag = Flag()
    lock = threading.Lock()
    all_parked = threading.Event()
    release = threading.Condition(lock)
    state = {"parked": 0, "round": 0, "stop": False}
    ready = threading.Barrier(n + 1)

    def worker() -> None:
        ready.wait()
        while not state["stop"]:
            if flag.request is not None:  # the fast path: one attribute read, as quiescence_point()
                with lock:
                    r = state["round"]
                    state["parked"] += 1
                    if state["parked"] == n:
                        all_parked.set()
                    while state["round"] == r and not state["stop"]:
                        release.wait()
            first(1)
            if io:
                time.sleep(0)
            second(2)

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    ready.wait()
    out: list[float] = []
    try:
        for _ in range(rounds):
            all_parked.clear()
            t0 = time.perf_counter()
            flag.request = object()
            all_parked.wait()
            out.append((time.perf_counter() - t0) * 1e3)
            with lock:
                flag.request = None
                state["parked"] = 0
                state["round"] += 1
                release.notify_all()
    finally:
        with lock:
            state["stop"] = True
            flag.request = None
            release.notify_all()
        for t in ts:
            t.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--io", action="store_true", help="yield the GIL once per request (sleep(0))")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    xs = sorted(run(args.threads, args.rounds, args.io))
    print(
        f"{args.threads} {'I/O-like' if args.io else 'CPU-bound'} threads, {args.rounds} rounds, load "
        f"{load0:.1f} -> {os.getloadavg()[0]:.1f}: request -> all parked median "
        f"{statistics.median(xs):.3f} ms, p90 {xs[int(0.9 * len(xs))]:.3f} ms, max {xs[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()
