"""Helpers for the integration tests: build a patch with the real `livepatch diff`, start an app
package under the real `livepatch run`, and drive keep-alive connections that record every reply.

Everything is bounded: processes are always stopped (ManagedProcess), every wait has a deadline.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from lpbench.servers import ManagedProcess
from tests.agent.agent_helpers import cli
from tests.conftest import free_port

APPS = Path(__file__).with_name("apps")
LIVEPATCH = str(Path(sys.executable).parent / "livepatch")
READY = re.compile(r"^READY \d+", re.MULTILINE)
REPLY = re.compile(r"^(v1) hello (\S+)$|^(v2) hi (\S+)$")
SELF_STARTING = {"poolapp"}  # apps that call livepatch.integrations.install() themselves
WAIT_S = 30.0  # every wait on a client or the server


def keygen(out: Path) -> tuple[Path, Path]:
    """A key pair made by the real `livepatch keygen`: (private, public)."""
    proc = cli("keygen", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out / "livepatch.key", out / "livepatch.pub"


def build_patch(app: str, key: Path, out: Path) -> Path:
    """The real `livepatch diff` of apps/APP/v1 against apps/APP/v2, signed, thread-local."""
    proc = cli(
        "diff",
        str(APPS / app / "v1"),
        str(APPS / app / "v2"),
        "--package",
        app,
        "--key",
        str(key),
        "--category",
        "thread-local",
        "-o",
        str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def start_app(
    app: str, workdir: Path, pub: Path, agent_socket: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[ManagedProcess, int]:
    """`livepatch run -m APP PORT` on a copy of apps/APP/v1, from its directory, as a user runs it;
    an app in SELF_STARTING runs as `python -m APP PORT AGENT_SOCKET TRUSTED_KEY` instead."""
    code = workdir / "code"
    shutil.copytree(APPS / app / "v1", code, ignore=shutil.ignore_patterns("__pycache__"))
    port = free_port()
    if app in SELF_STARTING:
        argv = [sys.executable, "-m", app, str(port), str(agent_socket), str(pub)]
    else:
        lp = [LIVEPATCH, "run", "--socket", str(agent_socket), "--trusted-key", str(pub)]
        argv = [*lp, "-m", app, str(port)]
    server = ManagedProcess(argv, READY, workdir / "server.log")
    monkeypatch.chdir(code)  # -m finds the package in the current directory, as python -m does
    server.start()
    return server, port


def apply(patch: Path, agent_socket: Path, method: str) -> dict[str, Any]:
    proc = cli(
        "apply", str(patch), "--socket", str(agent_socket), "--method", method, "--timeout", "10",
        "--json",
    )  # fmt: skip
    reply: dict[str, Any] = json.loads(proc.stdout)
    assert proc.returncode == 0, reply
    return reply


def status(agent_socket: Path) -> dict[str, Any]:
    proc = cli("status", "--socket", str(agent_socket), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reply: dict[str, Any] = json.loads(proc.stdout)
    return reply


class Client(Protocol):
    def request(self, name: str) -> str: ...
    def close(self) -> None: ...


class LineClient:
    """One TCP connection speaking lines; a closed connection is an error, never a reconnect."""

    def __init__(self, port: int, prefix: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self.file = self.sock.makefile("rwb")
        self.prefix = prefix

    def request(self, name: str) -> str:
        self.file.write(f"{self.prefix}{name}\n".encode())
        self.file.flush()
        line = self.file.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError(f"connection lost (read {line!r})")
        return line.decode().rstrip("\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class HTTPClient:
    """One keep-alive connection through http.client; a reconnect (http.client would make one
    silently when the server closed the connection) is an error."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
        self.conn.connect()
        self.sock = self.conn.sock

    def request(self, name: str) -> str:
        self.conn.request("GET", f"/{name}")
        resp = self.conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200 or self.conn.sock is not self.sock or resp.will_close:
            raise ConnectionError(f"status {resp.status}, connection kept: {not resp.will_close}")
        return body

    def close(self) -> None:
        self.conn.close()


@dataclass
class Connection:
    """A client thread that sends requests back to back until `stop`, recording each reply with
    whether it was sent after the patch was reported applied."""

    name: str
    open_client: Callable[[], Client]
    applied: threading.Event
    stop: threading.Event
    warm: int = 20
    replies: list[tuple[bool, str]] = field(default_factory=list)
    error: BaseException | None = None
    warmed: threading.Event = field(default_factory=threading.Event)  # `warm` replies before
    settled: threading.Event = field(default_factory=threading.Event)  # `warm` replies after

    def start(self) -> threading.Thread:
        t = threading.Thread(target=self._run, name=f"client-{self.name}", daemon=True)
        t.start()
        return t

    def _run(self) -> None:
        after = 0
        try:
            client = self.open_client()
        except BaseException as exc:
            self.error = exc
            self.warmed.set()
            self.settled.set()
            return
        try:
            while not self.stop.is_set():
                sent_after = self.applied.is_set()
                self.replies.append((sent_after, client.request(self.name)))
                after += sent_after
                if len(self.replies) >= self.warm:
                    self.warmed.set()
                if after >= self.warm:
                    self.settled.set()
        except BaseException as exc:
            self.error = exc
        finally:
            self.warmed.set()
            self.settled.set()  # an error ends the wait at once; the assertions report it
            client.close()


def check_replies(conn: Connection) -> list[str]:
    """The versions one connection saw, after checking every reply: v1 or v2 for its own name,
    never v1 after v2 (monotonic), v2 for everything sent after the patch was applied."""
    assert conn.error is None, f"{conn.name}: {conn.error!r}"
    versions = []
    for sent_after, reply in conn.replies:
        m = REPLY.match(reply)
        assert m is not None, f"{conn.name}: unexpected reply {reply!r}"
        version, name = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
        assert name == conn.name, reply
        assert not (sent_after and version == "v1"), f"{conn.name}: v1 after the patch: {reply!r}"
        versions.append(version)
    assert versions == sorted(versions), f"{conn.name}: versions not monotonic: {versions}"
    return versions
