"""Where a switchover's client-visible pause goes (issue 15): N switchovers back and forth under 4
retrying redis-py writers, each phase timed from the servers' logs and the clients' retries.

    .venv/bin/python bench/switchover_trace.py [--switches 20] [--cap 0.5 --base 0.01] [--logs DIR]

Per switchover, in ms after the old primary's `SWITCHOVER` log line: drained (the standby holds every
write), link dropped, TOOK OVER (the standby bound the address), serving (the new primary's loop
runs), the clients' first and last failed attempt (a redis-py backoff that records each failure) and
the most consecutive failures of one request, the new primary's full sync of the old one (started,
sent, the standby protected again), and the longest SET that started from 1 s before to 1.5 s after
the line: its start, its end and its length (the pause). The clients retry as docs/standby.md says:
`Retry(ExponentialBackoff(cap, base), 30)`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
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


def _phases(old: Path, new: Path, since: float, writers: list[SetWriter]) -> dict[str, Any] | None:
    def first(path: Path, pattern: str) -> float | None:
        later = [x for x in _stamps(path, pattern) if x >= since - 0.01]
        return later[0] if later else None

    sw = first(old, "SWITCHOVER:")
    if sw is None:
        return None

    def ms(x: float | None) -> int | None:
        return None if x is None else round((x - sw) * 1e3)

    sets = [(s, d) for w in writers for s, d in w.sets if sw - 1 <= s <= sw + 1.5]
    start, length = max(sets, key=lambda x: x[1]) if sets else (sw, 0.0)
    fails = sorted(f for f in FAILURES if sw - 1 <= f[0] <= sw + 3)
    return {
        "pause": round(length * 1e3),
        "drained": ms(first(old, "holds every write|stopping with")),
        "link_dropped": ms(first(old, r"dropped \(stopping\)")),
        "took_over": ms(first(new, "TOOK OVER")),
        "serving": ms(first(new, "serving 127")),
        "first_failure": ms(fails[0][0]) if fails else None,
        "last_failure": ms(fails[-1][0]) if fails else None,
        "most_failures": max((f[1] for f in fails), default=0),
        "sync_started": ms(first(new, "full sync to .* started")),
        "sync_sent": ms(first(new, "full sync to .* sent")),
        "protected": ms(first(new, "protected again")),
        "longest_set_start": ms(start),
        "longest_set_end": ms(start + length),
    }


def trace(args: argparse.Namespace) -> dict[str, Any]:
    logs = Path(args.logs or tempfile.mkdtemp(prefix="switch-trace-"))
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    a, b = Node("a", free_port(), logs), Node("b", free_port(), logs)
    primary, standby = a, b
    done: list[tuple[float, Node, Node]] = []
    refused = 0
    writers = [SetWriter(port, f"w{i}", args.cap, args.base) for i in range(4)]
    try:
        standby.start_standby(port, primary)
        primary.start_primary(port, standby, "--replication-listen", f"127.0.0.1:{a.repl_port}")
        primary.wait_protected()
        for w in writers:
            w.start()
        for _ in range(args.switches):
            time.sleep(0.5)
            for _attempt in range(5):  # a false suspicion under load may leave the standby syncing
                t = time.time()
                command = subprocess.run(
                    [sys.executable, "-m", "livepatch.cli", "switchover", "--socket",
                     primary.status_socket],
                    capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                if command.returncode == 0:
                    break
                refused += 1
                primary.wait_protected()
            else:
                raise RuntimeError(f"switchover refused 5 times: {command.stderr}")
            done.append((t, primary, standby))
            primary, standby = standby, primary
            primary.wait_protected()
            time.sleep(0.3)
    finally:
        for w in writers:
            w.stop_event.set()
        for w in writers:
            w.join(timeout=15)
        a.kill()
        b.kill()
    rows = [r for t, old, new in done if (r := _phases(old.log_path, new.log_path, t, writers))]
    summary = {}
    for key in rows[0] if rows else []:
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            summary[key] = {"median": statistics.median(values), "max": max(values)}
    return {
        "switches": len(rows),
        "backoff": {"cap": args.cap, "base": args.base},
        "refused_and_retried": refused,
        "client_errors": sum(w.errors for w in writers),
        "ms_after_switchover_median_max": summary,
        "rows": rows,
        "logs": str(logs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--cap", type=float, default=0.5, help="redis-py backoff cap (s)")
    parser.add_argument("--base", type=float, default=0.01, help="redis-py backoff base (s)")
    parser.add_argument("--logs", default=None, help="keep the servers' logs in this directory")
    args = parser.parse_args()
    print(machine_note(), flush=True)
    print(json.dumps(trace(args), indent=1))


if __name__ == "__main__":
    main()
