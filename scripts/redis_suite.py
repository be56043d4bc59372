"""Redis 7.0.15's own test suite against redis-server and kvserver, unit by unit (issue 16).

    .venv/bin/python scripts/redis_suite.py SUITE_DIR [--units strings lists ...] [--json]
                                            [--unit-timeout 900] [--keep-logs DIR]

Getting the suite is a manual step (it is not part of this repository; never commit it): the
directory holding `runtest` and `tests/` of redis/redis at tag 7.0.15, for example

    git clone --depth 1 --branch 7.0.15 https://github.com/redis/redis /tmp/redis-src
    # or, from a bare mirror:  git --git-dir=MIRROR archive 7.0.15 tests runtest | tar -x -C DIR

It needs tclsh 8.5+ and redis-server (the reference) on PATH.

For each unit, a fresh redis-server (no persistence) and a fresh kvserver (`python -m kvserver`, this
interpreter's environment) are started on free ports, and the suite runs **unmodified** against each,
as an external server:

    ./runtest --host 127.0.0.1 --port PORT --single unit/NAME --tags "-needs:repl ..."
              --ignore-encoding --ignore-digest --timeout 120

Every `[ok]`, `[err]`, `[exception]`, `[skip]` line is parsed. A test counts for the score if
redis-server passes it; the score is how many of those kvserver passes too. An `[exception]` (or the
suite's own `[TIMEOUT]`, or the unit not finishing) ends the unit early: it is reported as CRASHED with
its cause, and every test it did not reach counts as failed. Test names repeat within a unit, so tests
are matched by name and occurrence. Prints a Markdown table per unit, the total, and the failing tests
(`--json`: the same as one JSON document).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lpbench.servers import ManagedProcess, free_port

# The unit names -> their files under tests/unit (any other path there works too).
UNITS = {"strings": "type/string", "lists": "type/list", "keyspace": "keyspace", "hash": "type/hash",
         "set": "type/set", "zset": "type/zset", "incr": "type/incr", "expire": "expire",
         "other": "other", "multi": "multi", "info-command": "info-command"}  # fmt: skip
# The tags the issue allows excluding (what an external server cannot offer or the suite must not do).
DENIED_TAGS = ["needs:repl", "needs:debug", "needs:config-maxmemory", "needs:save", "needs:reset",
               "needs:pfdebug", "needs:config-resetstat"]  # fmt: skip
SUITE_TIMEOUT_S = 120  # the suite's own: seconds without progress before it gives up ([TIMEOUT])
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# `[ok]: NAME (12 ms)`, `[err]: NAME in tests/unit/x.tcl`, `[skip]: NAME`, `[exception]: ...`
LINE = re.compile(r"^\[(ok|err|exception|skip)\]: (.*)$")
OK_ELAPSED = re.compile(r" \(\d+ ms\)$")
ERR_WHERE = re.compile(r" in tests/\S+\.tcl$")
REDIS_READY = re.compile(r"Ready to accept connections")
KV_READY = re.compile(r"kvserver ready on \S+:\d+")


@dataclass
class UnitRun:
    """One unit against one server: outcome per test (name#occurrence -> ok|err|skip)."""

    outcomes: dict[str, str] = field(default_factory=dict)
    crashed: str = ""  # why the unit ended early ("" when it finished)
    seconds: float = 0.0


@dataclass
class UnitScore:
    unit: str
    redis_passed: int
    kv_passed: int  # of those Redis passes
    kv_crashed: str
    redis_crashed: str
    failing: list[
        str
    ]  # tests Redis passes and kvserver does not (with "(not run)" if never reached)
    kv_only: list[
        str
    ]  # tests kvserver passes and Redis does not (worth a look: a test of nothing?)

    @property
    def percent(self) -> float:
        return 100.0 * self.kv_passed / self.redis_passed if self.redis_passed else 100.0


def parse_output(text: str) -> UnitRun:
    """The runner's stdout -> outcomes. Pure, so the parser is testable on recorded output."""
    run = UnitRun()
    seen: Counter[str] = Counter()
    finished = False
    lines = ANSI.sub("", text).splitlines()
    for line in lines:
        if re.match(r"^\[\d+/\d+ done\]: ", line):
            finished = True
        if line.startswith("[TIMEOUT]"):
            run.crashed = f"the suite timed out (no progress for {SUITE_TIMEOUT_S} s)"
            continue
        m = LINE.match(line)
        if m is None:
            continue
        status, data = m.groups()
        if status == "exception":
            run.crashed = f"exception: {data.strip()[:200]}"
            continue
        name = OK_ELAPSED.sub("", data) if status == "ok" else ERR_WHERE.sub("", data)
        seen[name] += 1
        run.outcomes[f"{name}#{seen[name]}"] = status
    if not finished and not run.crashed:
        run.crashed = "the unit did not finish"
    return run


def run_unit(suite: Path, unit: str, port: int, timeout_s: float, log: Path | None) -> UnitRun:
    argv = ["./runtest", "--host", "127.0.0.1", "--port", str(port), "--single", f"unit/{unit}",
            "--tags", " ".join(f"-{t}" for t in DENIED_TAGS), "--ignore-encoding", "--ignore-digest",
            "--timeout", str(SUITE_TIMEOUT_S)]  # fmt: skip
    t0 = time.monotonic()
    # A session of its own, so a timeout ends the runner and its test client (tclsh children) together.
    proc = subprocess.Popen(argv, cwd=suite, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        timed_out = True
    text = out.decode(errors="replace")
    if log is not None:
        log.write_text(text)
    run = parse_output(text)
    if timed_out:
        run.crashed = f"killed after {timeout_s:.0f} s"
    run.seconds = time.monotonic() - t0
    return run


@contextmanager
def server(kind: str, logs: Path) -> Iterator[int]:
    """A fresh redis-server or kvserver on a free port, stopped for sure afterwards."""
    port = free_port()
    if kind == "redis":
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--logfile", ""]  # fmt: skip
        ready = REDIS_READY
    else:
        argv = [sys.executable, "-m", "kvserver", "--port", str(port)]
        ready = KV_READY
    proc = ManagedProcess(argv, ready, logs / f"{kind}-{port}.log")
    proc.start()
    try:
        yield port
    finally:
        proc.stop()


def score(unit: str, redis: UnitRun, kv: UnitRun) -> UnitScore:
    passed = [t for t, s in redis.outcomes.items() if s == "ok"]
    failing = []
    for t in passed:
        got = kv.outcomes.get(t)
        if got != "ok":
            failing.append(t.rsplit("#", 1)[0] + ("" if got else " (not run)"))
    kv_only = [t.rsplit("#", 1)[0] for t, s in kv.outcomes.items()
               if s == "ok" and redis.outcomes.get(t) != "ok"]  # fmt: skip
    return UnitScore(unit, len(passed), len(passed) - len(failing), kv.crashed, redis.crashed,
                     failing, kv_only)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", type=Path, help="directory with runtest and tests/ of Redis 7.0.15")
    ap.add_argument(
        "--units", nargs="+", default=list(UNITS), help="names above or paths in tests/unit"
    )
    ap.add_argument("--json", action="store_true", help="print one JSON document instead")
    ap.add_argument("--unit-timeout", type=float, default=900.0, help="seconds per unit and server")
    ap.add_argument("--keep-logs", type=Path, help="keep the runner's and servers' output here")
    args = ap.parse_args()
    suite = args.suite.resolve()
    if not (suite / "runtest").is_file() or not (suite / "tests" / "test_helper.tcl").is_file():
        sys.exit(
            f"{suite} holds no Redis test suite (runtest, tests/); see the docstring to get one"
        )
    scores = []
    with tempfile.TemporaryDirectory(prefix="redis-suite-") as tmp:
        logs = args.keep_logs or Path(tmp)
        logs.mkdir(parents=True, exist_ok=True)
        for unit in args.units:
            path = UNITS.get(unit, unit)
            if not (suite / "tests" / "unit" / f"{path}.tcl").is_file():
                sys.exit(f"no unit {path!r} in {suite}/tests/unit")
            runs = {}
            for kind in ("redis", "kv"):
                with server(kind, logs) as port:
                    log = logs / f"{unit.replace('/', '-')}.{kind}.out" if args.keep_logs else None
                    runs[kind] = run_unit(suite, path, port, args.unit_timeout, log)
            s = score(unit, runs["redis"], runs["kv"])
            scores.append(s)
            if not args.json:
                print(f"{unit}: {s.kv_passed}/{s.redis_passed} ({s.percent:.1f}%)"
                      f"{' CRASHED' if s.kv_crashed else ''}", file=sys.stderr, flush=True)  # fmt: skip
    report(scores, args.json)


def report(scores: list[UnitScore], as_json: bool) -> None:
    total_r = sum(s.redis_passed for s in scores)
    total_k = sum(s.kv_passed for s in scores)
    pct = 100.0 * total_k / total_r if total_r else 100.0
    if as_json:
        doc = {"units": [asdict(s) | {"percent": round(s.percent, 1)} for s in scores],
               "redis_passed": total_r, "kv_passed": total_k, "percent": round(pct, 1)}  # fmt: skip
        print(json.dumps(doc, indent=2))
        return
    print("| unit | Redis passes | kvserver passes of those | % | kvserver run |")
    print("|---|---|---|---|---|")
    for s in scores:
        state = f"CRASHED: {s.kv_crashed}" if s.kv_crashed else "complete"
        if s.redis_crashed:
            state += f" (Redis run: {s.redis_crashed})"
        state = state.replace("|", "/")  # a table cell
        print(f"| {s.unit} | {s.redis_passed} | {s.kv_passed} | {s.percent:.1f} | {state} |")
    print(f"| **total** | **{total_r}** | **{total_k}** | **{pct:.1f}** | |")
    for s in scores:
        if s.failing:
            print(f"\n{s.unit}: {len(s.failing)} failing")
            for name in s.failing:
                print(f"  - {name}")


if __name__ == "__main__":
    main()
