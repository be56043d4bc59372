"""Three unmodified third-party-style servers under the real `livepatch run` take a global and a local
patch (built by the real `livepatch diff`, applied by the real `livepatch apply`) while client threads
keep sending requests on keep-alive connections: no failed request, no lost connection, every reply v1
or v2, versions monotonic per connection, v2 for everything sent after the apply returned. Idle
keep-alive connections stay open through the patch and get v2 after it. The servers' threads are
checked to be managed by the integrations (not merely unmanaged threads following the newest code).
A fourth app starts itself and calls `livepatch.integrations.install()` (one line): the same holds, with
its replies computed in a concurrent.futures thread pool."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.agent_helpers import socket_dir
from tests.integrations.serving import (
    WAIT_S,
    Client,
    Connection,
    HTTPClient,
    LineClient,
    apply,
    build_patch,
    check_replies,
    keygen,
    start_app,
    status,
)

pytestmark = pytest.mark.timeout(120)

BUSY = 6  # connections sending back to back
IDLE = 2  # connections used once before the patch and once after, idle in keep-alive meanwhile


def clients(app: str, port: int) -> list[functools.partial[Client]]:
    """How the busy connections of each app connect (the asyncio app: half through its thread pool)."""
    if app == "httpapp":
        return [functools.partial(HTTPClient, port)] * BUSY
    if app in ("lineapp", "poolapp"):
        return [functools.partial(LineClient, port)] * BUSY
    return [functools.partial(LineClient, port, "pool " if i % 2 else "") for i in range(BUSY)]


EXPECTED_ROLES = {
    "httpapp": {"connection"},
    "lineapp": {"connection"},
    "asyncapp": {"event-loop", "pool-worker"},
    "poolapp": {"connection", "pool-worker"},
}


@pytest.fixture()
def sock_dir() -> Iterator[Path]:
    with socket_dir() as d:
        yield d


@pytest.mark.parametrize("method", ["global", "local"])
@pytest.mark.parametrize("app", ["httpapp", "lineapp", "asyncapp", "poolapp"])
def test_unmodified_server_takes_a_patch_under_load(
    app: str, method: str, tmp_path: Path, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, pub = keygen(tmp_path / "keys")
    patch = build_patch(app, key, tmp_path / "fix.lpatch")
    agent_socket = sock_dir / "agent.sock"
    server, port = start_app(app, tmp_path, pub, agent_socket, monkeypatch)
    applied, stop = threading.Event(), threading.Event()
    busy = [
        Connection(f"c{i}", open_client, applied, stop)
        for i, open_client in enumerate(clients(app, port))
    ]
    threads: list[threading.Thread] = []
    idle: list[Client] = []
    try:
        idle = [HTTPClient(port) if app == "httpapp" else LineClient(port) for _ in range(IDLE)]
        assert [c.request(f"idle{i}") for i, c in enumerate(idle)] == [
            f"v1 hello idle{i}" for i in range(IDLE)
        ]
        threads = [c.start() for c in busy]
        for c in busy:
            assert c.warmed.wait(WAIT_S), f"{c.name} made no progress before the patch"
        roles = {t["role"] for t in status(agent_socket)["statistics"]["threads"]}
        assert roles >= EXPECTED_ROLES[app], roles

        reply = apply(patch, agent_socket, method)
        result = reply["result"]
        assert result["outcome"] == "applied" and result["method"] == method, result
        if (
            app == "asyncapp"
        ):  # the loop thread never waits inactive: it took the patch at its point
            arrived = "reached" if method == "global" else "migrated"
            assert any(
                e["name"] == arrived and e["thread"] == "MainThread" for e in result["events"]
            ), result["events"]
        applied.set()

        for c in busy:
            assert c.settled.wait(WAIT_S), f"{c.name} made no progress after the patch"
        stop.set()
        for t in threads:
            t.join(WAIT_S)
            assert not t.is_alive()
        # the idle keep-alive connections were never closed, and now run the new code
        assert [c.request(f"idle{i}") for i, c in enumerate(idle)] == [
            f"v2 hi idle{i}" for i in range(IDLE)
        ]
    finally:
        stop.set()
        for c in idle:
            c.close()
        server.stop()

    saw_both = 0
    for c in busy:
        versions = check_replies(c)
        assert versions[0] == "v1" and versions[-1] == "v2", c.name
        saw_both += 1
    assert saw_both == BUSY
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log
