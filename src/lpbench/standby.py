"""The hot-standby update methods of `livepatch bench` (issue 15): `failover` and `switchover`.

Both run against a *pair* (`KvPair`): a kvserver primary on the benchmark's port that replicates to a
hot standby (docs/standby.md), started and stopped together, so that the same load generator and
the same figures compare them with `restart` and the live methods.

    failover    kill -9 of the primary; the standby takes the address over; the killed one is
                started again as the standby and fully synchronised before the trigger returns
                (the next trigger needs a synchronised standby)
    switchover  `livepatch switchover` (docs/standby.md, "Planned switchover"), asked on the
                primary's status socket as the command does: the primary drains and hands the
                address over; it becomes the standby in the same process

The pair keeps its data in memory (a standby takes no --dir), unlike `restart`'s kvserver, which
saves and reloads its data set. Neither side runs the livepatch agent: live methods are refused.
Each record's window is [trigger, the address answers again]; its timings (ms): `gap` (that
window), `resync` (the new standby synchronised again: the primary streams the data set while it
serves), and for a switchover `command` (until the primary accepted the request).

Concurrency: as every update method, triggers run on the harness's main thread, one at a time.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from lpbench.servers import ManagedProcess, free_port, livepatch_executable
from lpbench.updates import FAILED_OVER, SWITCHED_OVER

STANDBY_READY = re.compile(r"kvserver standby ready on \S+:\d+")
PRIMARY_READY = re.compile(r"kvserver ready on \S+:\d+")
SYNC_TIMEOUT_S = 120.0  # a full sync of the benchmark's data set on a loaded machine
SERVE_TIMEOUT_S = 30.0


class KvPair:
    """A kvserver primary on `port` and its hot standby; `primary` is the index serving now."""

    name = "kv-pair"
    supports_live = False
    control_socket: Path | None = None

    def __init__(self, port: int, data_dir: Path, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.data_dir = host, port, data_dir
        self.repl_ports = (free_port(), free_port())
        self.processes: list[ManagedProcess | None] = [None, None]
        self.primary = 0

    def status_socket(self, i: int) -> str:
        return str(self.data_dir / f"repl{i}.sock")

    def _start_node(self, i: int, standby: bool) -> None:
        other = self.repl_ports[1 - i]
        argv = [
            livepatch_executable(), "serve", "kv", "--no-livepatch", "--loglevel", "info",
            "--replicate-to", f"127.0.0.1:{other}",
            "--replication-listen", f"127.0.0.1:{self.repl_ports[i]}",
            "--replication-socket", self.status_socket(i),
        ]  # fmt: skip
        if standby:
            argv += ["--standby", "--takeover", f"{self.host}:{self.port}"]
        else:
            argv += ["--host", self.host, "--port", str(self.port)]
        log = self.data_dir / ("server.log" if i == 0 else "server-b.log")
        process = ManagedProcess(argv, STANDBY_READY if standby else PRIMARY_READY, log)
        self.processes[i] = process
        process.start()

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._start_node(1, standby=True)
        self._start_node(0, standby=False)

    def stop(self) -> None:
        for process in self.processes:
            if process is not None:
                process.stop()

    def pid(self) -> int:
        process = self.processes[self.primary]
        assert process is not None and process.proc is not None
        return process.proc.pid

    def populate(self, keys: int) -> None:
        if keys > 0:
            with redis.Redis(self.host, self.port, socket_timeout=600) as c:
                c.execute_command("DEBUG", "POPULATE", keys)
        self.wait_synchronised()

    def restart(self) -> dict[str, int]:
        raise NotImplementedError("a pair is updated by failover or switchover, not restarted")

    def wait_synchronised(self, timeout_s: float = SYNC_TIMEOUT_S) -> None:
        """Until the primary's standby is synchronised and acknowledges epochs (bounded)."""
        from livepatch.replication import StatusUnavailable, query

        deadline = time.monotonic() + timeout_s
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = query(self.status_socket(self.primary), timeout=5.0)
            except StatusUnavailable:
                last = {}
            ready = last.get("role") == "primary" and last.get("protected")
            if ready and last.get("state") == "streaming" and last.get("acked_epoch", 0) > 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"the standby did not synchronise in {timeout_s:.0f} s: {last}")

    def wait_serving(self, timeout_s: float = SERVE_TIMEOUT_S) -> int:
        """Monotonic ns of the first PING answered at the address (a fresh connection each try)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with redis.Redis(
                    self.host, self.port, socket_timeout=1.0, socket_connect_timeout=1.0,
                    retry=Retry(NoBackoff(), 0),
                ) as c:  # fmt: skip
                    if c.ping():
                        return time.monotonic_ns()
            except redis.RedisError:
                time.sleep(0.005)
        raise RuntimeError(f"nobody serves {self.host}:{self.port} after {timeout_s:.0f} s")

    def failover(self) -> dict[str, Any]:
        killed = self.primary
        process = self.processes[killed]
        assert process is not None and process.proc is not None
        t = time.monotonic_ns()
        process.proc.kill()
        process.proc.wait(timeout=10)
        up = self.wait_serving()
        process.stop()  # reaps, closes its log
        self.primary = 1 - killed
        self._start_node(killed, standby=True)
        self.wait_synchronised()
        return {"t_ns": t, "up_ns": up, "resynced_ns": time.monotonic_ns()}

    def switchover(self) -> dict[str, Any]:
        """What `livepatch switchover` does, from this process (a CLI's start-up on a loaded machine
        took seconds, which are not the servers'): ask the primary on its status socket, then wait
        for the new primary to answer and for the old one to follow it synchronised."""
        from livepatch.replication import StatusUnavailable, query

        new = 1 - self.primary
        t = time.monotonic_ns()
        answer = query(self.status_socket(self.primary), timeout=15.0, request="switchover")
        if not answer.get("ok"):
            raise RuntimeError(f"switchover refused: {answer.get('error')}")
        returned = time.monotonic_ns()
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if query(self.status_socket(new), timeout=5.0).get("role") == "primary":
                    break
            except StatusUnavailable:
                pass
            time.sleep(0.002)
        up = self.wait_serving()
        self.primary = new
        self.wait_synchronised()
        return {"t_ns": t, "up_ns": up, "command_ns": returned, "resynced_ns": time.monotonic_ns()}


def _record(method: str, times: dict[str, Any]) -> dict[str, Any]:
    t, up = times["t_ns"], times["up_ns"]
    timings = {"gap": (up - t) / 1e6, "resync": (times["resynced_ns"] - t) / 1e6}
    if "command_ns" in times:
        timings["command"] = (times["command_ns"] - t) / 1e6
    return {
        "t_ns": t, "action": method, "method": method,
        "outcome": FAILED_OVER if method == "failover" else SWITCHED_OVER,
        "timings": timings,
        "events": [{"name": method, "t_ns": t}, {"name": "serving", "t_ns": up},
                   {"name": "resynchronised", "t_ns": times["resynced_ns"]}],
        "window_ns": [t, up],
    }  # fmt: skip


class _PairMethod:
    needs_live = False
    name = ""

    @staticmethod
    def server_factory(port: int, data_dir: Path) -> KvPair:
        return KvPair(port, data_dir)


class Failover(_PairMethod):
    name = "failover"

    def trigger(self, server: Any, index: int) -> dict[str, Any]:
        return _record(self.name, server.failover())


class Switchover(_PairMethod):
    name = "switchover"

    def trigger(self, server: Any, index: int) -> dict[str, Any]:
        return _record(self.name, server.switchover())
