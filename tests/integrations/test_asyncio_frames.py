"""asyncio under `livepatch run`: a coroutine suspended inside patched code keeps its frame's code (as in
any Python reload), and calls made after the patch run the new code (docs/integrations.md, "asyncio:
coroutines keep their frames' code"). Here the patched code is the connection handler itself."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.agent_helpers import socket_dir
from tests.integrations.serving import LineClient, apply, build_patch, keygen, start_app

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def sock_dir() -> Iterator[Path]:
    with socket_dir() as d:
        yield d


@pytest.mark.parametrize("method", ["global", "local"])
def test_a_suspended_handler_keeps_its_code_new_connections_get_the_new_one(
    method: str, tmp_path: Path, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, pub = keygen(tmp_path / "keys")
    patch = build_patch("coroapp", key, tmp_path / "fix.lpatch")
    agent_socket = sock_dir / "agent.sock"
    server, port = start_app("coroapp", tmp_path, pub, agent_socket, monkeypatch)
    clients: list[LineClient] = []
    try:
        old = LineClient(port)
        clients.append(old)
        assert old.request("ann") == "v1 hello ann"  # its handler is now suspended in readline()
        result = apply(patch, agent_socket, method)["result"]
        assert result["outcome"] == "applied", result
        new = LineClient(port)
        clients.append(new)
        assert new.request("bob") == "v2 hi bob"
        assert old.request("ann") == "v1 hello ann"  # the suspended frame kept its code
    finally:
        for c in clients:
            c.close()
        server.stop()
    assert "Traceback" not in (tmp_path / "server.log").read_text()
