"""Helpers shared by the kvserver benchmarks: start servers, run redis-benchmark, take medians.

Not a benchmark itself. Servers bind 127.0.0.1 on free ports and are always stopped (context managers).
"""

from __future__ import annotations

import csv
import io
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

READY = re.compile(rb"kvserver ready on (\S+):(\d+)")
SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit(f"{name} is not installed (Debian: apt-get install redis-tools redis-server)")
    return path


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    started_s: float  # from exec to the readiness line (kvserver) or to PING answered (redis)


@contextmanager
def kvserver(*args: str, timeout: float = 900.0) -> Iterator[Running]:
    """`python -m kvserver --port 0 ARGS`, waiting for its readiness line; SIGTERM (then SIGKILL) after."""
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvserver", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        port = _wait_ready(proc, timeout)
        yield Running(proc, port, time.monotonic() - t0)
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], timeout: float) -> int:
    assert proc.stdout is not None
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if not ready:
            break
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        buf += chunk
        match = READY.search(buf)
        if match:
            return int(match.group(2))
    raise RuntimeError(f"kvserver did not become ready: {buf!r}")


def _stop(proc: subprocess.Popen[bytes], timeout: float = 600.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def redis_server() -> Iterator[Running]:
    """A redis-server without persistence, the reference for the same load."""
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [tool("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--logfile", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        cli = tool("redis-cli")
        while (
            subprocess.run([cli, "-p", str(port), "PING"], capture_output=True).stdout.strip()
            != b"PONG"
        ):
            if proc.poll() is not None:
                raise RuntimeError("redis-server exited")
            time.sleep(
                0.05
            )  # polling a foreign process's readiness: it prints no line we can wait on
        yield Running(proc, port, time.monotonic() - t0)
    finally:
        _stop(proc)


def redis_benchmark(
    port: int,
    tests: str,
    requests: int,
    clients: int = 50,
    pipeline: int = 1,
    keyspace: int = 100_000,
) -> tuple[list[str], dict[str, tuple[float, float]]]:
    """Run redis-benchmark --csv; returns (command, {TEST: (requests per second, p99 ms)})."""
    cmd = [
        tool("redis-benchmark"), "-h", "127.0.0.1", "-p", str(port), "-t", tests,
        "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "-r", str(keyspace), "--csv",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=True)
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    result = {row["test"]: (float(row["rps"]), float(row["p99_latency_ms"])) for row in rows}
    shown = ["redis-benchmark", *cmd[1:3], *cmd[5:]]
    return shown, result


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_note() -> str:
    load = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start"
