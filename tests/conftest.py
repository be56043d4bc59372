"""Shared test helpers: free ports, external tools, bounded process handling."""

from __future__ import annotations

import os
import shutil
import socket

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
