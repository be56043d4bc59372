"""Real kvserver processes in a primary/standby pair on loopback, for the replication tests and bench.

A `Node` is one server's identity: its replication port (where it listens while it is the standby) and
its status socket; the pair shares one service address. `start_primary` / `start_standby` run
`python -m kvserver` (what `livepatch serve kv` runs) through lpbench's ManagedProcess.

A node's replication port is free while the node is the primary (or dead), yet its peer keeps
replicating to it and the node listens there again once it is a standby. On a shared machine another
run's free-port helper could be handed that port meanwhile (session 8: a callgrind server took one
and the restarted standby could not listen). So the node holds it for its whole life (`hold_port`):
a socket bound with SO_REUSEADDR and never listening, which the kernel does not hand out to bind(0)
or connect(), and beside which the server's own listener (SO_REUSEADDR too) still binds and listens.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import redis

from livepatch.replication import StatusUnavailable, query
from lpbench.servers import ManagedProcess

READY = re.compile(r"\bready on\b")


def hold_port(port: int) -> socket.socket:
    """Keep 127.0.0.1:port from being handed to anyone else, without listening on it (above)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    return sock


class Node:
    def __init__(self, name: str, repl_port: int, workdir: Path) -> None:
        self.name = name
        self.repl_port = repl_port
        self.status_socket = str(workdir / f"{name}.status.sock")
        self.log_path = workdir / f"{name}.log"
        self.process: ManagedProcess | None = None
        # Run the server under this command (bench: valgrind) and on these CPUs (None: anywhere).
        self.wrapper: list[str] = []
        self.cpus: set[int] | None = None
        self.env: dict[str, str] | None = None  # the server's environment (None: this process's)
        self._held_port: socket.socket | None = hold_port(repl_port)

    def release_port(self) -> None:
        """Stop holding the replication port (teardown; the server's own listener is unaffected)."""
        if self._held_port is not None:
            self._held_port.close()
            self._held_port = None

    @property
    def pid(self) -> int:
        assert self.process is not None and self.process.proc is not None
        return self.process.proc.pid

    def alive(self) -> bool:
        return (
            self.process is not None
            and self.process.proc is not None
            and self.process.proc.poll() is None
        )

    def _start(self, args: list[str]) -> None:
        argv = [*self.wrapper, sys.executable, "-m", "kvserver", "--no-livepatch"]
        argv += ["--loglevel", "info", "--replication-socket", self.status_socket, *args]
        timeout = 300.0 if self.wrapper else 60.0
        self.process = ManagedProcess(
            argv, READY, self.log_path, ready_timeout_s=timeout, env=self.env
        )
        self.process.start()
        if self.cpus is not None:
            pin(self.pid, self.cpus)

    def start_primary(
        self, port: int, peer: Node, *extra: str, replicate_to: int | None = None
    ) -> None:
        target = replicate_to if replicate_to is not None else peer.repl_port
        self._start(["--port", str(port), "--replicate-to", f"127.0.0.1:{target}", *extra])

    def start_standby(
        self, port: int, peer: Node | None, *extra: str, replicate_to: int | None = None
    ) -> None:
        target = replicate_to if replicate_to is not None else (peer.repl_port if peer else None)
        args = ["--standby", "--replication-listen", f"127.0.0.1:{self.repl_port}"]
        args += ["--takeover", f"127.0.0.1:{port}"]
        if target is not None:
            args += ["--replicate-to", f"127.0.0.1:{target}"]
        self._start([*args, *extra])

    def kill(self) -> None:
        """kill -9, and reap it."""
        if self.alive():
            assert self.process is not None and self.process.proc is not None
            self.process.proc.send_signal(signal.SIGKILL)
            self.process.proc.wait(timeout=10)
        self.stop()

    def signal(self, signum: int) -> None:
        assert self.process is not None and self.process.proc is not None
        self.process.proc.send_signal(signum)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def status(self) -> dict[str, Any]:
        return query(self.status_socket, timeout=5.0)

    def wait_status(self, pred: Any, timeout_s: float = 30.0, what: str = "") -> dict[str, Any]:
        """Poll the status socket until pred(status) holds (a bounded wait on an observable state)."""
        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.status()
                if pred(last):
                    return last
            except StatusUnavailable:
                pass
            time.sleep(0.02)
        raise AssertionError(
            f"{self.name}: {what or 'status'} not reached in {timeout_s} s: {last}"
        )

    def wait_log(self, text: str, timeout_s: float = 30.0) -> None:
        """Until the server's log (its stdout and stderr) holds text."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.log_path.exists() and text in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.02)
        raise AssertionError(f"{self.name}: {text!r} not in its log after {timeout_s} s")

    def wait_protected(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """Until this node is a primary whose standby synchronised and acknowledges epochs."""
        return self.wait_status(
            lambda s: (
                s.get("role") == "primary"
                and s.get("protected")
                and s.get("state") == "streaming"
                and s.get("acked_epoch", 0) > 0
            ),
            timeout_s,
            "protected primary",
        )


def pin(pid: int, cpus: set[int]) -> None:
    """Run every thread of process pid on cpus (threads it starts later inherit the affinity)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), cpus)


def wait_serving(port: int, timeout_s: float = 10.0) -> float:
    """Until something answers PING on 127.0.0.1:port; returns the time.monotonic() it did."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with redis.Redis(port=port, socket_timeout=1.0, socket_connect_timeout=0.2) as c:
                if c.ping():
                    return time.monotonic()
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.005)
    raise AssertionError(f"nothing serves 127.0.0.1:{port} after {timeout_s} s")
