"""Helpers shared by the kvserver benchmarks: start servers, run redis-benchmark, take medians.

Not a benchmark itself. Servers bind 127.0.0.1 on free ports and are always stopped (context managers).
"""

from __future__ import annotations

import csv
import io
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
from dataclasses import dataclass
from pathlib import Path

from lpbench.servers import ManagedProcess, free_port

SRC = Path(__file__).resolve().parents[1] / "src"
KV_READY = re.compile(r"kvserver ready on \S+:\d+")
REDIS_READY = re.compile(r"Ready to accept connections")
SLOW_S = (
    900.0  # a 10M-key server takes seconds to load and to exit: far above the harness's defaults
)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{name} is not installed (Debian: apt-get install redis-tools redis-server)")
    return path


@dataclass
class Running:
    process: ManagedProcess
    port: int
    started_s: float  # from exec to the readiness line


@contextmanager
def _running(argv: list[str], ready: re.Pattern[str], port: int) -> Iterator[Running]:
    """Start `argv` (lpbench's ManagedProcess: readiness line, log, certain stop) and stop it after."""
    with tempfile.TemporaryDirectory(prefix="kvbench-") as logs:
        proc = ManagedProcess(
            argv, ready, Path(logs) / "server.log", ready_timeout_s=SLOW_S, stop_timeout_s=SLOW_S
        )
        t0 = time.monotonic()
        proc.start()
        try:
            yield Running(proc, port, time.monotonic() - t0)
        finally:
            proc.stop()


@contextmanager
def kvserver(*args: str, wrapper: list[str] | None = None) -> Iterator[Running]:
    """`python -m kvserver ARGS` on a free port (this interpreter's environment: the editable install).

    wrapper: a command line the server runs under (valgrind), its pid then being the server's."""
    port = free_port()
    argv = [*(wrapper or []), sys.executable, "-m", "kvserver", "--port", str(port), *args]
    with _running(argv, KV_READY, port) as running:
        yield running


@contextmanager
def kvserver_with_agent(*args: str, wrapper: list[str] | None = None) -> Iterator[Running]:
    """kvserver as deployed for live patching: the runtime on and the agent listening on a socket."""
    with tempfile.TemporaryDirectory(prefix="kvbench-agent-") as tmp:
        sock = str(Path(tmp) / "agent.sock")
        with kvserver("--livepatch-socket", sock, "--allow-unsigned", *args, wrapper=wrapper) as kv:
            yield kv


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (/proc/PID/stat; 10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    rps: float
    p99_ms: float
    cpu_us: float  # the server's CPU time (user + system) per request


def measure(
    server: Running,
    test: str,
    requests: int,
    pipeline: int = 1,
    clients: int = 50,
    pinned: bool = False,
) -> tuple[list[str], Sample]:
    """One redis-benchmark run of one test (SET or GET) against server, with the server's CPU time."""
    pid = server.process.proc.pid  # type: ignore[union-attr]
    before = cpu_seconds(pid)
    cmd, result = redis_benchmark(
        server.port, test.lower(), requests, clients, pipeline, pinned=pinned
    )
    used = cpu_seconds(pid) - before
    rps, p99 = result[test.upper()]
    return cmd, Sample(rps, p99, used / requests * 1e6)


def printable(cmd: list[str]) -> str:
    """A redis-benchmark command line as printed next to a figure (PORT for the port)."""
    return " ".join([*cmd[:1], "-p", "PORT", *cmd[3:]])


@contextmanager
def redis_server() -> Iterator[Running]:
    """A redis-server without persistence, the reference for the same load."""
    port = free_port()
    argv = [tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--daemonize", "no", "--logfile", ""]  # fmt: skip
    with _running(argv, REDIS_READY, port) as running:
        yield running


# Where the load generator and the servers run (see pin_servers): on 2 CPUs the scheduler otherwise
# sometimes puts a server and redis-benchmark on the same CPU, which moved pipelined results by up to 40%
# from run to run; pinned, they move by about 10%.
LOAD_CPU = 0
SERVER_CPU = 1


def can_pin() -> bool:
    return len(os.sched_getaffinity(0)) >= 2 and {LOAD_CPU, SERVER_CPU} <= os.sched_getaffinity(0)


def pin_server(server: Running) -> None:
    """Run every thread of a started server on SERVER_CPU (redis-benchmark then runs on LOAD_CPU)."""
    pid = server.process.proc.pid  # type: ignore[union-attr]
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {SERVER_CPU})


def redis_benchmark(
    port: int,
    tests: str,
    requests: int,
    clients: int = 50,
    pipeline: int = 1,
    keyspace: int = 100_000,
    pinned: bool = False,
) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """Run redis-benchmark --csv (on LOAD_CPU if pinned); returns (command, {TEST: (rps, p99 ms)})."""
    shown, rows = redis_benchmark_rows(port, tests, requests, clients, pipeline, keyspace, pinned)
    result = {row["test"]: (float(row["rps"]), float(row["p99_latency_ms"])) for row in rows}
    return shown, result


def redis_benchmark_rows(
    port: int,
    tests: str,
    requests: int,
    clients: int = 50,
    pipeline: int = 1,
    keyspace: int = 100_000,
    pinned: bool = False,
) -> tuple[list[str], list[dict[str, str]]]:
    """redis_benchmark with every column of its CSV (rps, avg/min/p50/p95/p99/max_latency_ms)."""
    cmd = [
        tool("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), "-t", tests,
        "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "-r", str(keyspace), "--csv",
    ]  # fmt: skip
    done = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {LOAD_CPU})) if pinned else None,
    )
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    shown = ["redis-benchmark", *cmd[1:3], *cmd[5:]]
    return shown, rows


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_note() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start"
