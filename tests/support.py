"""The one set of helpers every test area uses: free ports, external tools, server processes.

`tests/conftest.py` re-exports `free_port` and `require_tool`, so `from tests.conftest import free_port`
and `from tests.support import free_port` name the same function.

ServerProcess is the one way a test runs a server process: lpbench's ManagedProcess starts it, waits for
its readiness line with a deadline (never a sleep), copies its output to a log file, and stops it for sure
(SIGTERM, then SIGKILL). The area fixtures (tests/kvserver, tests/sqlserver) subclass it with what their
clients need; every process a fixture starts is stopped at teardown, also when the test fails.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lpbench.ports import free_port as free_port  # the one helper (lpbench/ports.py), re-exported
from lpbench.servers import ManagedProcess

SRC = Path(__file__).resolve().parents[1] / "src"
STOP_TIMEOUT_S = 20.0  # SIGTERM -> SIGKILL: a clean shutdown (AOF fsync, snapshot) gets this long


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll a condition that no event signals (registry state, a line in a server's log); fails after
    `timeout`. A deadline on a condition, never a guess at how long something takes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.0005)


def require_tool(name: str) -> str:
    """Path of an external program a test needs (redis-cli, redis-benchmark, ...).

    Missing: the test is skipped on a developer machine, but fails in CI (LIVEPATCH_REQUIRE_TOOLS=1),
    where .ci/run installs it, so a missing install step can never pass silently.
    """
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (Debian: apt-get install redis-tools redis-server)"
        if os.environ.get("LIVEPATCH_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def source_env() -> dict[str, str]:
    """The environment for a server process: this checkout's src/ first on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class ServerProcess:
    """A server process started by a test and stopped for sure.

    `process` is the subprocess.Popen (pid, send_signal); `ready_match` the match of the readiness
    pattern in the server's output (servers started on port 0 print the port they got).
    """

    def __init__(
        self, argv: list[str], ready: re.Pattern[str], log_path: Path, env: dict[str, str] | None
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self._managed = ManagedProcess(
            argv, ready, log_path, env=env or source_env(), stop_timeout_s=STOP_TIMEOUT_S
        )
        self._managed.start()
        assert self._managed.proc is not None and self._managed.ready_match is not None
        self.process: subprocess.Popen[bytes] = self._managed.proc
        self.ready_match: re.Match[str] = self._managed.ready_match

    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        """What the server has printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to flush anything."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._managed.stop()  # the process is gone: this only ends the log copying
        self._close()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (a clean shutdown), SIGKILL if it does not exit in time. Returns the exit code."""
        self._managed.stop_timeout_s = timeout
        self._managed.stop()
        self._close()
        return self.process.returncode

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.process.wait(timeout=timeout)

    def _close(self) -> None:
        """Release what a subclass holds (clients); the process is gone."""


def livepatch_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`livepatch ARGS...` as an operator runs it (a fresh interpreter), its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "livepatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
