"""What `livepatch stress` needs from a server under test (a StressTarget) and its settings.

Concurrency: a StressTarget is used from the harness's main thread; each of its clients by one thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class RequestFailed(Exception):
    """The server answered, but not as any version of the code should have (an error, a wrong value)."""


class StressClient(Protocol):
    """One blocking connection. Transport problems raise OSError (TimeoutError: the request deadline);
    a wrong answer raises RequestFailed."""

    def write(self, key: str, value: bytes) -> None: ...
    def read(self, key: str) -> bytes | None: ...
    def read_many(self, keys: list[str]) -> list[bytes | None]: ...
    def probe(self) -> int: ...  # which version (1 or 2) served this request
    def close(self) -> None: ...


class StressTarget(Protocol):
    name: str
    plants: tuple[str, ...]

    def monotonic(
        self, method: str
    ) -> bool: ...  # does rule 3 of the check apply under this method
    def build_patch(self, workdir: Path, plant: str | None = None) -> Path: ...
    def prepare(self, host: str, port: int, timeout_s: float) -> None: ...
    def connect(self, host: str, port: int, timeout_s: float) -> StressClient: ...


@dataclass(frozen=True)
class StressConfig:
    server: str = "kv"
    policy: str = "thread-per-connection"  # sql only
    pool_groups: int = 3  # sql --policy pool
    cycles: int = 100  # apply + revert pairs
    methods: tuple[str, ...] = ("global", "local")  # cycle i uses methods[i % len(methods)]
    connections: int = 8
    keys_per_connection: int = 64
    request_deadline_s: float = 5.0
    patch_deadline_s: float = 10.0
    plant: str | None = None
    seed: int = 1
    workload: str | None = (
        None  # background load (lpbench's workloads: kv get/set/mixed, sql noop/ycsb/...)
    )
    load_connections: int = 4
    scale: float = 0.05  # sql workloads: lpbench.sql's --scale
    # Keep the agent's state directory (the applied stack and history across restarts). Off by default:
    # stress never restarts the server, and the agent rewrites (and fsyncs) the whole history of this start
    # at every transition, a cost that grows with the run (O(transitions) each, quadratic over a run).
    agent_state: bool = False

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.cycles < 1:
            raise ValueError("--cycles must be >= 1")
        bad = [m for m in self.methods if m not in ("global", "local")]
        if bad or not self.methods:
            raise ValueError(f"--methods takes global and/or local, got {','.join(self.methods)!r}")
        if self.connections < 1:
            raise ValueError("--connections must be >= 1")
        if self.request_deadline_s <= 0 or self.patch_deadline_s <= 0:
            raise ValueError("deadlines must be > 0 seconds")
        if self.workload is not None:
            from lpbench.sql.workloads import SQL_WORKLOAD_NAMES
            from lpbench.workloads import WORKLOADS

            fits = SQL_WORKLOAD_NAMES if self.server == "sql" else tuple(sorted(WORKLOADS))
            if self.workload not in fits:
                raise ValueError(
                    f"--workload {self.workload} does not fit --server {self.server}: it takes {', '.join(fits)}"
                )
