"""Fixtures for lpbench's tests: real servers started as processes and always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lpbench.servers import RedisServer
from tests.conftest import free_port, require_tool


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """The real redis-server on a free port, append-only file in tmp_path (a restart keeps the data)."""
    require_tool("redis-server")
    server = RedisServer(free_port(), tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.stop()
