"""Helpers for the agent tests: the test service as a subprocess, the CLI, a line client, keys.

Everything is bounded: processes are always stopped (terminate, then kill), reads have deadlines.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICE_DIR = Path(__file__).parent / "service"
VENV_BIN = Path(sys.executable).parent
LIVEPATCH = str(VENV_BIN / "livepatch")  # the installed console script, as a user runs it
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@dataclass
class Service:
    proc: subprocess.Popen[str]
    port: int
    socket_path: str
    metrics_port: int | None
    stderr_file: Any = None  # the service's log (stderr), a temporary file

    def log(self) -> str:
        """What the service has logged so far."""
        if self.stderr_file is None:
            return ""
        # pread: the service writes through the same open file, so its offset must not move
        fd = self.stderr_file.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode("utf-8", "replace")

    def connect(self) -> LineClient:
        return LineClient(socket.create_connection(("127.0.0.1", self.port), timeout=30))


class LineClient:
    """One TCP connection to the test service; request() sends a line and returns the reply line."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.file = sock.makefile("rwb")

    def request(self, line: str) -> str:
        self.file.write(line.encode() + b"\n")
        self.file.flush()
        reply = self.file.readline()
        if not reply:
            raise ConnectionError("the service closed the connection")
        return reply.decode().rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextlib.contextmanager
def socket_dir() -> Iterator[Path]:
    """A directory that other users may traverse (pytest's tmp_path is 0700), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="lp-agent-"))
    try:
        os.chmod(d, 0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def read_ready_line(proc: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"the service printed nothing within {timeout} s")
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        stderr = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        raise RuntimeError(f"service did not start: {line!r} {stderr}")
    return line


@contextlib.contextmanager
def run_service(
    socket_path: Path,
    *,
    code: str = "v1",
    trusted_keys: tuple[Path, ...] = (),
    allow_unsigned: bool = False,
    socket_mode: int | None = None,
    metrics: bool = False,
    log_path: Path | None = None,
    max_history: int | None = None,
) -> Iterator[Service]:
    """The service as a subprocess; its stderr (the agent's log) goes to `log_path` when given."""
    cmd = [
        sys.executable,
        str(SERVICE_DIR / "run_service.py"),
        "--code",
        str(SERVICE_DIR / code),
        "--socket",
        str(socket_path),
    ]
    for k in trusted_keys:
        cmd += ["--trusted-key", str(k)]
    if allow_unsigned:
        cmd.append("--allow-unsigned")
    if socket_mode is not None:
        cmd += ["--socket-mode", f"{socket_mode:o}"]
    if metrics:
        cmd += ["--metrics-port", "0"]
    if max_history is not None:
        cmd += ["--max-history", str(max_history)]
    with (
        open(log_path, "w+") if log_path is not None else tempfile.TemporaryFile(mode="w+")
    ) as stderr_file:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr_file, text=True
        )
        yield from _supervise(proc, stderr_file, socket_path, metrics)


def _supervise(
    proc: subprocess.Popen[str], stderr_file: Any, socket_path: Path, metrics: bool
) -> Iterator[Service]:
    try:
        try:
            parts = read_ready_line(proc).split()
        except Exception:
            stderr_file.seek(0)
            raise RuntimeError(f"service failed to start:\n{stderr_file.read()}") from None
        yield Service(
            proc, int(parts[1]), str(socket_path), int(parts[2]) if metrics else None, stderr_file
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def cli(
    *args: str, user: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    cmd = [LIVEPATCH, *args]
    if user == "nobody":
        cmd = [*AS_NOBODY, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def cli_json(*args: str) -> tuple[int, Any]:
    proc = cli(*args, "--json")
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None
