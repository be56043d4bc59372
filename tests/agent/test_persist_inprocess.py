"""The state directory through the embedding API (`livepatch.Agent(state_dir=...)`), in this process: an
agent restarted in-process keeps what the runtime still has applied; a rollback made by a watch window
reaches the disk; `state_dir=None` writes nothing. The patches go through the real control socket."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import livepatch
from livepatch.agent import client, protocol
from livepatch.agent import state_dir as sd
from livepatch.patch import lpatch
from livepatch.patch.diff import patch_from_sources
from livepatch.patch.model import Category
from tests.agent.agent_helpers import socket_dir

pytestmark = pytest.mark.timeout(60)

V1 = "def f(x):\n    return x + 1\n"
V2 = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x + 2\n"


@pytest.fixture()
def module(tmp_path: Path) -> Iterator[str]:
    name = f"lp_persist_inproc_{abs(hash(tmp_path)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(V1)
    sys.path.insert(0, str(tmp_path))
    try:
        __import__(name)
        yield name
    finally:
        sys.path.remove(str(tmp_path))
        for patch_id in reversed(livepatch.applied_patches()):
            livepatch.revert_patch(patch_id)
        sys.modules.pop(name, None)


@pytest.fixture()
def sock() -> Iterator[Path]:
    with socket_dir() as d:
        yield d / "a.sock"


def _apply(sock: Path, name: str, watch: protocol.WatchRequest | None = None) -> str:
    spec = patch_from_sources({name: (V1, V2)}, category=Category.THREAD_LOCAL)
    req = protocol.ApplyRequest(lpatch.build(spec).to_document(), "global", 5.0, watch)
    reply = client.send(str(sock), req)
    assert reply.ok, reply
    return spec.patch_id


def test_agent_restarted_in_process_keeps_the_applied_stack(module: str, sock: Path) -> None:
    state = sock.parent / "state"
    with livepatch.Agent(sock, allow_unsigned=True, state_dir=state):
        patch_id = _apply(sock, module)
    assert [s.patch_id for s in sd.StateDir(state).load_stack()] == [patch_id]
    with livepatch.Agent(sock, allow_unsigned=True, state_dir=state) as agent:
        assert [(n.patch_id, n.outcome) for n in agent.restored] == [(patch_id, sd.KEPT)]
        assert sys.modules[module].f(1) == 3  # still the patched code, applied once
        assert livepatch.applied_patches() == [patch_id]
        assert client.send(str(sock), protocol.RevertRequest(patch_id)).ok
    assert sd.StateDir(state).load_stack() == []


def test_a_watch_window_rollback_reaches_the_state_directory(module: str, sock: Path) -> None:
    state = sock.parent / "state"
    with livepatch.Agent(sock, allow_unsigned=True, state_dir=state):
        patch_id = _apply(sock, module, protocol.WatchRequest(window_s=0.5, max_errors=0))
        assert [s.patch_id for s in sd.StateDir(state).load_stack()] == [patch_id]
        with pytest.raises(ValueError):
            sys.modules[module].f(-1)  # an error escaping the new code: the window rolls back
        rolled = threading.Event()
        for _ in range(100):  # the rollback runs on the watch's thread: wait for it, bounded
            if not livepatch.applied_patches():
                rolled.set()
                break
            rolled.wait(0.05)
        assert rolled.is_set()
        client.send(str(sock), protocol.StatusRequest())  # a query writes what changed since
        assert sd.StateDir(state).load_stack() == []


def test_no_state_directory_writes_nothing(module: str, sock: Path) -> None:
    with livepatch.Agent(sock, allow_unsigned=True, state_dir=None):
        _apply(sock, module)
    assert sorted(p.name for p in sock.parent.iterdir()) == []
    with livepatch.Agent(sock, allow_unsigned=True):  # the default: next to the socket
        pass
    assert (sock.parent / "a.sock.state" / "lock").exists()
