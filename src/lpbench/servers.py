"""The servers under test: start, wait until ready, load state, restart with persistence, stop.

A Server is a real process started here and always stopped (`stop()` in a finally: SIGTERM, then
SIGKILL). Readiness is the line the server prints when it listens, read from its stdout with a deadline,
never a sleep. After that a thread copies the rest of its output to a log file, so a chatty server
cannot block on a full pipe.

Registry: SERVERS maps a name to a factory; `kv` is kvserver (`livepatch serve kv`, with the livepatch
agent), `redis` the real redis-server (no agent: updates `none` and `restart` only; useful as the
reference under the same load generator), `sql` sqlserver (`livepatch serve sql`, with the agent; its
connection policy and the workload whose schema `populate` loads come from the run's configuration
through `configure(cfg)`).

Concurrency: a Server object is driven by one thread of the harness.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lpbench.keys import harness_key
from lpbench.ports import free_port as free_port  # re-exported: its callers import it from here

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class Server(Protocol):
    name: str
    host: str
    port: int
    control_socket: Path | None  # the livepatch agent's socket; None: no live updates possible
    supports_live: bool

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def populate(self, keys: int) -> None: ...
    def restart(self) -> dict[str, int]: ...
    def pid(self) -> int: ...


def livepatch_executable() -> str:
    """The `livepatch` console script of this interpreter's environment (not whatever is on PATH)."""
    candidate = Path(sys.executable).parent / "livepatch"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("livepatch")
    if found is None:
        raise RuntimeError("the `livepatch` command is not installed (pip install -e .)")
    return found


class ManagedProcess:
    """A server process: start, wait for its readiness line, log its output, stop it for sure."""

    def __init__(
        self,
        argv: list[str],
        ready: re.Pattern[str],
        log_path: Path,
        *,
        ready_timeout_s: float = READY_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv, self.ready, self.log_path = argv, ready, log_path
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        # The readiness line's match: servers started on port 0 print the port the kernel picked.
        self.ready_match: re.Match[str] | None = None
        self._drain: threading.Thread | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        assert self.proc.stdout is not None
        try:
            self._wait_ready(self.proc.stdout, log)
        except BaseException:
            log.close()
            self.stop()
            raise
        self._drain = threading.Thread(target=self._copy, args=(self.proc.stdout, log), daemon=True)
        self._drain.start()

    def _wait_ready(self, out: IO[bytes], log: IO[bytes]) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        buf = b""
        fd = out.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(
                    f"{self.argv[0]} printed no readiness line in {self.ready_timeout_s:.0f} s"
                )
            readable, _, _ = select.select([fd], [], [], left)
            if not readable:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                log.write(buf)
                raise RuntimeError(
                    f"server exited before it was ready (code {self.proc.wait()}); "
                    f"output: {buf.decode(errors='replace')[-2000:]}"
                )
            log.write(chunk)
            log.flush()
            buf += chunk
            self.ready_match = self.ready.search(buf.decode(errors="replace"))
            if self.ready_match:
                return

    @staticmethod
    def _copy(out: IO[bytes], log: IO[bytes]) -> None:
        with log:
            for chunk in iter(lambda: os.read(out.fileno(), 65536), b""):
                log.write(chunk)
                log.flush()

    def wait_exit(self, timeout_s: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout_s)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=self.stop_timeout_s)
        if self._drain is not None:
            self._drain.join(timeout=self.stop_timeout_s)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class ProcessServer:
    """What every server here shares: its command line started as a ManagedProcess in `data_dir`."""

    ready_pattern: re.Pattern[str]
    data_dir: Path
    process: ManagedProcess | None
    extra_args: tuple[
        str, ...
    ] = ()  # appended to the command line (e.g. `livepatch stress`'s --state-dir)

    def command_line(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            [*self.command_line(), *self.extra_args],
            self.ready_pattern,
            self.data_dir / "server.log",
        )
        self.process.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def pid(self) -> int:
        assert self.process is not None and self.process.proc is not None
        return self.process.proc.pid


class RespServer(ProcessServer):
    """Common part of Redis-protocol servers: populate with DEBUG POPULATE, restart via SHUTDOWN."""

    name = "resp"
    supports_live = False
    control_socket: Path | None = None

    def __init__(self, port: int, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.data_dir = host, port, data_dir
        self.process: ManagedProcess | None = None

    ready_pattern = re.compile(r"\bready\b", re.IGNORECASE)  # word: "already" must not match

    def populate(self, keys: int) -> None:
        if keys <= 0:
            return
        with redis.Redis(self.host, self.port, socket_timeout=600) as c:
            c.execute_command("DEBUG", "POPULATE", keys)

    def restart(self) -> dict[str, int]:
        """SHUTDOWN (the server saves its data), wait for the exit, start again on the same port/dir.

        Returns monotonic ns: `t_ns` when the shutdown was sent, `down_ns` when the process had exited,
        `up_ns` when the new one printed its readiness line.
        """
        assert self.process is not None
        t = time.monotonic_ns()
        # No retries: the server answers SHUTDOWN by closing the connection (redis-py expects that), and
        # a retried SHUTDOWN would reach the server again while it is exiting.
        with redis.Redis(self.host, self.port, socket_timeout=60, retry=Retry(NoBackoff(), 0)) as c:
            c.shutdown()
        self.process.wait_exit(STOP_TIMEOUT_S * 3)
        down = time.monotonic_ns()
        self.process.stop()
        self.start()
        return {"t_ns": t, "down_ns": down, "up_ns": time.monotonic_ns()}


class KvServer(RespServer):
    """kvserver with the livepatch agent on a Unix socket in its data directory, trusting the harness's
    key (lpbench.keys); unsigned patches are allowed too, for a user's `--patch FILE`."""

    name = "kv"
    supports_live = True
    ready_pattern = re.compile(r"kvserver ready on \S+:\d+")

    def __init__(self, port: int, data_dir: Path, host: str = "127.0.0.1") -> None:
        super().__init__(port, data_dir, host)
        self.control_socket = data_dir / "livepatch.sock"

    def command_line(self) -> list[str]:
        return [
            livepatch_executable(), "serve", "kv",
            "--host", self.host, "--port", str(self.port), "--dir", str(self.data_dir),
            "--livepatch-socket", str(self.control_socket), "--allow-unsigned",
            "--trusted-key", str(harness_key()[1]),
        ]  # fmt: skip


class RedisServer(RespServer):
    """The real redis-server, append-only file on, so a restart keeps the data."""

    name = "redis"
    ready_pattern = re.compile(r"Ready to accept connections")

    def command_line(self) -> list[str]:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        return [
            exe, "--port", str(self.port), "--bind", self.host, "--dir", str(self.data_dir),
            "--save", "", "--appendonly", "yes", "--appendfsync", "everysec",
            "--enable-debug-command", "local",
        ]  # fmt: skip


class SqlServer(ProcessServer):
    """sqlserver with the livepatch agent (unsigned patches allowed). `configure(cfg)` takes the policy,
    pool groups, workload and scale from a BenchConfig (or anything with those attributes); its agent
    trusts the harness's key, like kvserver's; `populate`
    loads that workload's schema and data over the wire (lpbench.sql); `restart` is SIGTERM (the server
    commits nothing half-done: SQLite is durable at each commit) and a new start on the same directory."""

    name = "sql"
    supports_live = True
    ready_pattern = re.compile(r"sqlserver ready on \S+:\d+")

    def __init__(self, port: int, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.data_dir = host, port, data_dir
        self.control_socket: Path | None = data_dir / "livepatch.sock"
        self.process: ManagedProcess | None = None
        self.policy, self.pool_groups = "thread-per-connection", 3
        self.workload, self.scale, self.seed = "noop", 1.0, 1
        self.pool_quiescence = "priority"

    def configure(self, cfg: object) -> None:
        for attr in ("policy", "pool_groups", "workload", "scale", "seed", "pool_quiescence"):
            if hasattr(cfg, attr):
                setattr(self, attr, getattr(cfg, attr))

    def command_line(self) -> list[str]:
        naive = ["--pool-quiescence", "naive"] if self.pool_quiescence == "naive" else []
        return [
            livepatch_executable(), "serve", "sql",
            "--host", self.host, "--port", str(self.port), "--dir", str(self.data_dir / "db"),
            "--policy", self.policy, "--pool-groups", str(self.pool_groups), *naive,
            "--livepatch-socket", str(self.control_socket), "--allow-unsigned",
            "--trusted-key", str(harness_key()[1]),
        ]  # fmt: skip

    def populate(self, keys: int) -> None:
        from lpbench.sql.pg import BlockingClient
        from lpbench.sql.workloads import sql_workload

        with BlockingClient(self.host, self.port, timeout_s=600) as c:
            sql_workload(self.workload).load(c, self.scale, self.seed)

    def restart(self) -> dict[str, int]:
        assert self.process is not None
        t = time.monotonic_ns()
        self.process.stop()
        down = time.monotonic_ns()
        self.start()
        return {"t_ns": t, "down_ns": down, "up_ns": time.monotonic_ns()}


SERVERS: dict[str, Callable[[int, Path], Server]] = {
    "kv": lambda port, d: KvServer(port, d),
    "redis": lambda port, d: RedisServer(port, d),
    "sql": lambda port, d: SqlServer(port, d),
}


def make_server(name: str, port: int, data_dir: Path) -> Server:
    try:
        factory = SERVERS[name]
    except KeyError:
        raise ValueError(f"unknown server {name!r}; known: {', '.join(sorted(SERVERS))}") from None
    return factory(port, data_dir)
