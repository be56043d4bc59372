"""Idle keep-alive connections and global patches (issue 10): the docs/runtime.md recipe, run verbatim
as a real process with idle keep-alive connections open, takes a global patch; the naive instrumentation
aborts it, and the abort reason names the blocked thread, where it waits and what to do."""

from __future__ import annotations

import http.client
import json
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepatch.patch import lpatch, signing
from livepatch.patch.diff import patch_from_sources
from lpbench.servers import ManagedProcess
from tests.agent.agent_helpers import cli, socket_dir
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(120)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "runtime.md"
NAIVE = Path(__file__).with_name("naive_keepalive_server.py")
READY = re.compile(r"^READY", re.MULTILINE)


def recipe_source() -> str:
    text = DOCS.read_text()
    start = text.index("<!-- recipe: keepalive_server.py")
    block = text.index("```python\n", start) + len("```python\n")
    return text[block : text.index("```\n", block)]


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[signing.PrivateKey, Path]:
    private, public, _ = signing.generate_keypair(tmp_path / "keys")
    return signing.load_private_key(private), public


@pytest.fixture()
def sock_dir() -> Iterator[Path]:
    with socket_dir() as d:
        yield d


def _patch(path: Path, source: str, key: signing.PrivateKey) -> Path:
    new = source.replace('return f"hello {name}"', 'return f"hi {name}"')
    assert new != source
    spec = patch_from_sources({"__main__": (source, new)}, patch_id="greet-v2")
    assert spec.refusals == () and spec.changed_count == 1
    lpatch.write(path, lpatch.build(spec, key))
    return path


def _get(conn: http.client.HTTPConnection, name: str) -> str:
    conn.request("GET", f"/{name}")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Connection") != "close"
    return resp.read().decode()


def test_recipe_server_takes_a_global_patch_with_idle_keepalive_connections(
    tmp_path: Path, keys: tuple[signing.PrivateKey, Path], sock_dir: Path
) -> None:
    key, pub = keys
    script = tmp_path / "keepalive_server.py"
    script.write_text(recipe_source())
    http_port, line_port, agent_sock = free_port(), free_port(), sock_dir / "agent.sock"
    server = ManagedProcess(
        [sys.executable, str(script), str(http_port), str(line_port), str(agent_sock), str(pub)],
        READY,
        tmp_path / "server.log",
    )
    server.start()
    try:
        web = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        line = socket.create_connection(("127.0.0.1", line_port), timeout=30).makefile("rwb")
        assert _get(web, "ann") == "hello ann"  # the connection stays open, idle, in keep-alive
        line.write(b"bob\n")
        line.flush()
        assert line.readline() == b"hello bob\n"
        patch = _patch(tmp_path / "greet.lpatch", script.read_text(), key)
        proc = cli(
            "apply",
            str(patch),
            "--socket",
            str(agent_sock),
            "--method",
            "global",
            "--timeout",
            "5",
            "--json",
        )
        reply = json.loads(proc.stdout)
        assert proc.returncode == 0 and reply["result"]["outcome"] == "applied", reply
        assert _get(web, "ann") == "hi ann"  # same keep-alive connection, new code
        line.write(b"bob\n")
        line.flush()
        assert line.readline() == b"hi bob\n"
        web.close()
        line.close()
    finally:
        server.stop()
    assert "Traceback" not in (tmp_path / "server.log").read_text()


def test_naive_instrumentation_aborts_naming_the_blocked_thread(
    tmp_path: Path, keys: tuple[signing.PrivateKey, Path], sock_dir: Path
) -> None:
    key, pub = keys
    http_port, agent_sock = free_port(), sock_dir / "agent.sock"
    server = ManagedProcess(
        [sys.executable, str(NAIVE), str(http_port), str(agent_sock), str(pub)],
        READY,
        tmp_path / "server.log",
    )
    server.start()
    try:
        web = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
        assert _get(web, "ann") == "hello ann"
        patch = _patch(tmp_path / "greet.lpatch", NAIVE.read_text(), key)
        proc = cli(
            "apply",
            str(patch),
            "--socket",
            str(agent_sock),
            "--method",
            "global",
            "--timeout",
            "1",
            "--json",
        )
        reply = json.loads(proc.stdout)
        assert proc.returncode == 1 and reply["result"]["outcome"] == "aborted", reply
        reason = reply["error"]
        assert "role http-connection" in reason
        assert "waiting in SocketIO.readinto (socket.py:" in reason
        assert "called from NaiveHandler.handle (naive_keepalive_server.py:" in reason
        assert "livepatch.deactivate()" in reason and "livepatch.activate()" in reason
        assert _get(web, "ann") == "hello ann"  # nothing changed, the connection still works
        web.close()
    finally:
        server.stop()
