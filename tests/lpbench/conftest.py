"""Fixtures for lpbench's tests: real servers started as processes and always stopped."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lpbench.servers import RedisServer
from tests.conftest import free_port, require_tool

ROOT = Path(__file__).resolve().parents[2]
PGBIN = Path("/usr/lib/postgresql/15/bin")


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


@pytest.fixture(scope="module")
def postgres_port() -> Iterator[int]:
    """The real PostgreSQL 15 (run as user postgres, trust authentication) on a free port, through
    bench/sql_vs_postgres.py's helper; skipped where it cannot run."""
    if os.geteuid() != 0 or not (PGBIN / "postgres").exists() or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL 15 as user postgres needs root, runuser and postgresql-15")
    spec = importlib.util.spec_from_file_location(
        "sql_vs_postgres", ROOT / "bench" / "sql_vs_postgres.py"
    )
    assert spec is not None and spec.loader is not None
    helper = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = helper  # its dataclasses look their module up there
    spec.loader.exec_module(helper)
    work = Path(tempfile.mkdtemp(prefix="lpsw-pg-"))  # under /tmp: the postgres user must reach it
    try:
        with helper.postgres(work) as target:
            yield target.port
    finally:
        shutil.rmtree(work, ignore_errors=True)
