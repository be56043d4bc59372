"""Where a switchover's client-visible pause goes (issue 15): switchovers back and forth under 4
retrying redis-py writers, each phase timed from the servers' logs and the clients' retries, beside a
no-update baseline of the same writers in the same minutes, and optionally A/B between frozen copies.

    .venv/bin/python bench/switchover_trace.py [--switches 20] [--cap 0.5 --base 0.01] [--logs DIR]
        [--variant NAME=SRC_DIR[@BASE] ...] [--rounds 2] [--on-standby-loss degrade|hold]

Per switchover, in ms after the old primary's `SWITCHOVER` log line: drained (the standby holds every
write), link dropped, TOOK OVER (the standby bound the address), serving (the new primary's loop
runs), the old primary's standby accepting the new primary's link and resuming, the clients' first
and last failed attempt (a redis-py backoff that records each failure) and the most consecutive
failures of one request, the new primary's full sync of the old one if any (started, sent), the
standby protected again, and the longest SET that started from 1 s before to 1.5 s after the line: its
start, its end and its length (the pause). Unprotected acknowledgements: the SETs answered by the new
primary from when it serves until it logs "protected again" (under degrade, main's new primary
starts unprotected; one told SWITCHOVER starts protected and never logs it) and its degradations
(REPLICATION UNPROTECTED) after the switchover. The clients retry as docs/standby.md says:
`Retry(ExponentialBackoff(cap, base), 30)`.

Baseline: after each switchover, once the windows cannot overlap, the same longest-SET measure over
the same 2.5 s window around an instant when nothing happens ("baseline_pause"): what the machine
and the pair's commit protection alone do to these writers in the same minutes.

A/B: each --variant NAME=SRC_DIR runs its servers with PYTHONPATH=SRC_DIR (a frozen copy of a
checkout's src/, C extensions included: `git archive REF src | tar x -C DIR` and copy the .so files);
the variants alternate, a fresh pair each, for --rounds rounds of --switches/--rounds switchovers.
Without --variant: this checkout only; @BASE gives a variant its own redis-py backoff base (the
same code with two client settings). The load average is recorded with each row.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.replication.nodes import Node

from kv_common import machine_note
from livepatch.replication import query
from lpbench.servers import free_port

# Failed attempts, (time.time(), consecutive failures of that request, backoff s). A list shared by
# every writer: redis-py copies a connection's Retry, so an attribute of the backoff would not do.
FAILURES: list[tuple[float, int, float]] = []
STAMP = re.compile(r"(\d+-\d+-\d+ \d+:\d+:\d+),(\d+)")


class RecordingBackoff(ExponentialBackoff):
    def compute(self, failures: int) -> float:
        backoff = float(super().compute(failures))
        FAILURES.append((time.time(), failures, backoff))
        return backoff


class SetWriter(threading.Thread):
    """SET of a fresh key, then INCR, as fast as it can; records (start, seconds) of each SET."""

    def __init__(self, port: int, name: str, cap: float, base: float) -> None:
        super().__init__(daemon=True, name=name)
        self.port, self.cap, self.base = port, cap, base
        self.sets: list[tuple[float, float]] = []
        self.errors = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        client = redis.Redis(
            port=self.port, socket_timeout=5.0, socket_connect_timeout=0.5,
            retry=Retry(RecordingBackoff(cap=self.cap, base=self.base), retries=30),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )  # fmt: skip
        i = 0
        while not self.stop_event.is_set():
            i += 1
            t = time.time()
            try:
                client.set(f"{self.name}:{i}", i)
                self.sets.append((t, time.time() - t))
                client.incr(f"{self.name}:ctr")
            except redis.RedisError:
                self.errors += 1
        client.close()


def _stamps(path: Path, pattern: str) -> list[float]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        match = STAMP.match(line)
        if match and re.search(pattern, line):
            wall = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
            out.append(wall + int(match.group(2)) / 1000)
    return out


WINDOW = (-1.0, 1.5)  # the SETs (and failures) counted around an instant, in s


def _longest_set(writers: list[SetWriter], at: float) -> tuple[float, float]:
    sets = [(s, d) for w in writers for s, d in w.sets if at + WINDOW[0] <= s <= at + WINDOW[1]]
    return max(sets, key=lambda x: x[1]) if sets else (at, 0.0)


def _phases(old: Path, new: Path, since: float, writers: list[SetWriter]) -> dict[str, Any] | None:
    def first(path: Path, pattern: str) -> float | None:
        later = [x for x in _stamps(path, pattern) if x >= since - 0.01]
        return later[0] if later else None

    sw = first(old, "SWITCHOVER:")
    if sw is None:
        return None

    def ms(x: float | None) -> int | None:
        return None if x is None else round((x - sw) * 1e3)

    start, length = _longest_set(writers, sw)
    serving, protected = first(new, "serving 127"), first(new, "protected again")
    unprotected = 0
    if serving is not None and protected is not None and protected > serving:
        unprotected = sum(
            1 for w in writers for s, d in w.sets if serving <= s + d <= protected
        )  # ms-resolution log stamps against the clients' wall clock (the same machine)
    fails = sorted(f for f in FAILURES if sw + WINDOW[0] <= f[0] <= sw + WINDOW[1])
    return {
        "pause": round(length * 1e3),
        "drained": ms(first(old, "holds every write|stopping with")),
        "link_dropped": ms(first(old, r"dropped \(stopping\)")),
        "handed_over": ms(first(old, "address and link handed over")),
        "took_over": ms(first(new, "TOOK OVER")),
        "serving": ms(first(new, "serving 127")),
        "old_linked": ms(first(old, "primary connected from")),
        "resumed": ms(first(new, "without a full sync")),
        "first_failure": ms(fails[0][0]) if fails else None,
        "last_failure": ms(fails[-1][0]) if fails else None,
        "most_failures": max((f[1] for f in fails), default=0),
        "sync_started": ms(first(new, "full sync to .* started")),
        "sync_sent": ms(first(new, "full sync to .* sent")),
        "protected": ms(protected),
        "unprotected_acks": unprotected,
        "degraded": sum(
            1 for x in _stamps(new, "REPLICATION UNPROTECTED") if sw <= x <= sw + WINDOW[1]
        ),
        "longest_set_start": ms(start),
        "longest_set_end": ms(start + length),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {}
    for key in rows[0] if rows else []:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            summary[key] = {"median": statistics.median(values), "max": max(values)}
    return summary


def _pair(
    name: str,
    src: str | None,
    switches: int,
    args: argparse.Namespace,
    logs: Path,
    base: float,
) -> dict[str, Any]:
    """One fresh pair running `src` (None: this checkout): switchovers, each with a baseline."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    a, b = Node("a", free_port(), logs), Node("b", free_port(), logs)
    if src is not None:
        env = dict(os.environ)
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
        a.env = b.env = env
    primary, standby = a, b
    done: list[tuple[float, Node, Node, float, float]] = []  # (t, old, new, baseline t, load)
    refused = 0
    policy = ("--on-standby-loss", args.on_standby_loss)
    writers = [SetWriter(port, f"w{i}", args.cap, base) for i in range(4)]
    try:
        standby.start_standby(port, primary, *policy)
        primary.start_primary(
            port, standby, "--replication-listen", f"127.0.0.1:{a.repl_port}", *policy
        )
        primary.wait_protected()
        for w in writers:
            w.start()
        time.sleep(1.0)
        for _ in range(switches):
            time.sleep(0.5)
            load = os.getloadavg()[0]
            for _attempt in range(5):  # a false suspicion under load may leave the standby syncing
                t = time.time()
                answer = query(primary.status_socket, timeout=15.0, request="switchover")
                if answer.get("ok"):
                    break
                refused += 1
                primary.wait_protected()
            else:
                raise RuntimeError(f"switchover refused 5 times: {answer.get('error')}")
            primary, standby = standby, primary
            primary.wait_protected()
            # A baseline instant whose window overlaps neither this switchover's nor the next's.
            time.sleep(max(0.0, t + WINDOW[1] - WINDOW[0] + 0.1 - time.time()))
            baseline = time.time()
            time.sleep(WINDOW[1] - WINDOW[0] - 0.4)  # the next switchover comes 0.5 s after
            done.append((t, standby, primary, baseline, load))
    finally:
        for w in writers:
            w.stop_event.set()
        for w in writers:
            w.join(timeout=15)
        a.kill()
        b.kill()
    rows = []
    for t, old, new, baseline, load in done:
        row = _phases(old.log_path, new.log_path, t, writers)
        if row is not None:
            row["baseline_pause"] = round(_longest_set(writers, baseline)[1] * 1e3)
            row["baseline_failures"] = sum(
                1 for f in FAILURES if baseline + WINDOW[0] <= f[0] <= baseline + WINDOW[1]
            )
            row["load"] = round(load, 1)
            row["variant"] = name
            rows.append(row)
    return {"rows": rows, "refused": refused, "errors": sum(w.errors for w in writers)}


def trace(args: argparse.Namespace) -> dict[str, Any]:
    logs = Path(args.logs or tempfile.mkdtemp(prefix="switch-trace-"))
    variants: list[tuple[str, str | None, float]] = []
    for text in args.variant or []:
        name, sep, rest = text.partition("=")
        src, at, base = rest.partition("@")
        if not sep or not Path(src, "kvserver").is_dir():
            raise SystemExit(
                f"--variant wants NAME=SRC_DIR[@BASE] with SRC_DIR/kvserver, got {text!r}"
            )
        variants.append((name, str(Path(src).resolve()), float(base) if at else args.base))
    if not variants:
        variants = [("this", None, args.base)]
    per_round = max(1, args.switches // args.rounds)
    results: dict[str, dict[str, Any]] = {
        name: {"rows": [], "refused": 0, "errors": 0, "base": base} for name, _, base in variants
    }
    for r in range(args.rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for name, src, base in order:
            got = _pair(name, src, per_round, args, logs / f"{name}-{r}", base)
            for key in ("rows", "refused", "errors"):
                results[name][key] += got[key]
            print(f"round {r} {name}: {len(got['rows'])} switchovers", file=sys.stderr, flush=True)
    out: dict[str, Any] = {
        "backoff": {"cap": args.cap, "base": args.base},
        "on_standby_loss": args.on_standby_loss,
        "logs": str(logs),
    }
    for name, res in results.items():
        rows = res["rows"]
        out[name] = {
            "switches": len(rows),
            "backoff_base": res["base"],
            "refused_and_retried": res["refused"],
            "client_errors": res["errors"],
            "ms_after_switchover_median_max": _summary(
                [{k: v for k, v in row.items() if k != "variant"} for row in rows]
            ),
            "rows": rows,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, default=20, help="per variant, all rounds")
    parser.add_argument("--rounds", type=int, default=1, help="fresh pairs per variant")
    parser.add_argument(
        "--variant",
        action="append",
        help="NAME=SRC_DIR[@BASE] (repeat: A/B; BASE: this variant's client backoff base)",
    )
    parser.add_argument("--cap", type=float, default=0.5, help="redis-py backoff cap (s)")
    parser.add_argument("--base", type=float, default=0.01, help="redis-py backoff base (s)")
    parser.add_argument("--on-standby-loss", choices=["degrade", "hold"], default="degrade")
    parser.add_argument("--logs", default=None, help="keep the servers' logs in this directory")
    args = parser.parse_args()
    print(machine_note(), flush=True)
    print(json.dumps(trace(args), indent=1))
    print(machine_note().replace("at start", "at the end"), flush=True)


if __name__ == "__main__":
    main()
