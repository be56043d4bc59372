"""Fixtures for kvserver tests: a real server process on a free port, real clients.

    def test_x(kv_server):                       # a fresh in-memory server per test
        r = kv_server.client()                   # redis.Redis, RESP2 (protocol=3 for RESP3)
    def test_y(kv_factory, tmp_path):             # servers with options; stopped at teardown
        srv = kv_factory("--dir", str(tmp_path), "--appendfsync", "always")
        srv.kill()                               # SIGKILL (crash); srv.stop() is SIGTERM

    def test_z(diff):                             # the same commands against kvserver and redis-server
        diff.check(("ZADD", "z", 1, "a"), ...)    # (tests/kvserver/redis_diff.py; diff3: RESP3)

The server is started as `python -m kvserver --port 0 ...` by tests/support.py's ServerProcess, which
waits for its readiness line ("kvserver ready on HOST:PORT", which also tells the port the kernel picked):
no sleeps, no port races. Every started process is stopped at teardown (SIGTERM, then SIGKILL), also when
the test fails.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support import ServerProcess

READY = re.compile(r"kvserver ready on (\S+):(\d+)")


class KVServer(ServerProcess):
    """A running kvserver process (`python -m kvserver --port 0 ...`) and the clients tests made on it."""

    def __init__(self, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.args = list(args)
        self._clients: list[redis.Redis] = []
        log_path = log_dir / f"kvserver-{os.getpid()}-{time.monotonic_ns()}.log"
        argv = [sys.executable, "-m", "kvserver", "--port", "0", *args]
        super().__init__(argv, READY, log_path, env)
        self.host, self.port = self.ready_match.group(1), int(self.ready_match.group(2))

    def client(self, protocol: int = 2, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("socket_timeout", 30)
        # No silent retries: a test must see the first failure (and not wait for backoffs).
        kwargs.setdefault("retry", Retry(NoBackoff(), 0))
        r = redis.Redis(host=self.host, port=self.port, protocol=protocol, **kwargs)
        self._clients.append(r)
        return r

    def _close(self) -> None:
        for r in self._clients:
            try:
                r.close()
            except Exception:
                pass
        self._clients.clear()
        super()._close()


@pytest.fixture
def kv_factory(tmp_path: Path) -> Iterator[Any]:
    """Start kvserver processes with any options; all are stopped at teardown."""
    started: list[KVServer] = []

    def start(*args: str, env: dict[str, str] | None = None) -> KVServer:
        server = KVServer(list(args), tmp_path, env)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def kv_server(kv_factory: Any) -> KVServer:
    """A fresh in-memory kvserver (no persistence)."""
    return kv_factory()


@pytest.fixture(scope="module")
def kv_shared() -> Iterator[KVServer]:
    """One in-memory kvserver shared by a module's tests (each test uses its own keys or FLUSHALL)."""
    with tempfile.TemporaryDirectory() as tmp:
        server = KVServer([], Path(tmp))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def r(kv_shared: KVServer) -> redis.Redis:
    """A RESP2 client on this module's shared kvserver, on an empty keyspace."""
    client: redis.Redis = kv_shared.client()
    client.flushall()
    return client


@pytest.fixture
def r3(kv_shared: KVServer) -> redis.Redis:
    """A RESP3 client on this module's shared kvserver, on an empty keyspace."""
    client: redis.Redis = kv_shared.client(protocol=3)
    client.flushall()
    return client


@pytest.fixture(scope="module")
def redis_reference() -> Iterator[Any]:
    """The real redis-server (7.0) on a free port, in memory: the reference for differential tests."""
    from lpbench.servers import RedisServer
    from tests.conftest import free_port, require_tool

    require_tool("redis-server")
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(free_port(), Path(tmp))
        try:
            server.start()
            yield server
        finally:
            server.stop()


def _differ(kv_shared: KVServer, redis_reference: Any, protocol: int) -> Any:
    from tests.kvserver.redis_diff import Differ

    kv = kv_shared.client(protocol=protocol)
    ref = redis.Redis(
        host=redis_reference.host,
        port=redis_reference.port,
        protocol=protocol,
        socket_timeout=30,
        retry=Retry(NoBackoff(), 0),
    )
    kv.flushall()
    ref.flushall()
    return Differ(kv, ref)


@pytest.fixture
def diff(kv_shared: KVServer, redis_reference: Any) -> Iterator[Any]:
    """A Differ (tests/kvserver/redis_diff.py) on RESP2 clients, both servers flushed."""
    d = _differ(kv_shared, redis_reference, 2)
    yield d
    d.ref.close()


@pytest.fixture
def diff3(kv_shared: KVServer, redis_reference: Any) -> Iterator[Any]:
    """The same on RESP3 clients."""
    d = _differ(kv_shared, redis_reference, 3)
    yield d
    d.ref.close()
