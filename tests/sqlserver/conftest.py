"""Fixtures for sqlserver's network-layer tests.

Two kinds of servers, both on real sockets:

* `sql_factory` / `sql_server`: a real `python -m sqlserver.cli` process (tests/support.py's ServerProcess
  waits for its ready line, no sleeps), talked to by real clients (psql, pgbench, psycopg, asyncpg, pg8000).
      srv = sql_factory("--policy", "pool", "--dir", str(tmp_path))
      srv.dsn, srv.port, srv.kill(), srv.stop()
* `line_server`: the network layer (acceptor + a policy) in this process, serving `LineSession`, a test
  double of the session interface that speaks one text line per request. It exists to test the thread
  policies themselves (quiescence points, deactivation, priorities, the pool's listener hand-over)
  with the real livepatch runtime patching a real module (`app`), which a separate process would hide.

POLICIES parametrises a test over both connection policies (STYLE.md #15).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from sqlserver import blocking
from sqlserver.server.runner import NetOptions, Server, listen
from tests.conftest import free_port
from tests.fixtures.livefixtures import load_source
from tests.support import ServerProcess

POLICIES = ("thread-per-connection", "pool")
READY = re.compile(r"sqlserver ready on \S+:\d+")
SRC = Path(__file__).resolve().parents[2] / "src"


# ------------------------------------------------------------------------------ real server processes
class SqlProcess(ServerProcess):
    """A running sqlserver process on 127.0.0.1."""

    def __init__(self, args: list[str], log_dir: Path) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.args = args
        log_path = log_dir / f"sqlserver-{uuid.uuid4().hex[:8]}.log"
        argv = [sys.executable, "-m", "sqlserver.cli", "--port", str(self.port), *args]
        super().__init__(argv, READY, log_path, None)

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user=postgres dbname=postgres"

    def pg_args(self) -> list[str]:
        """Connection options for psql/pgbench."""
        return ["-h", self.host, "-p", str(self.port), "-U", "postgres"]


@pytest.fixture
def sql_factory(tmp_path: Path) -> Iterator[Callable[..., SqlProcess]]:
    started: list[SqlProcess] = []

    def start(*args: str) -> SqlProcess:
        server = SqlProcess(list(args), tmp_path)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def pg_env() -> dict[str, str]:
    """Environment for psql/pgbench: no password prompts, short connect timeout, no ~/.psqlrc."""
    return dict(os.environ, PGCONNECT_TIMEOUT="10", PSQLRC="/dev/null", PGPASSWORD="x")


# ------------------------------------------------------------------------------ in-process line server
APP_V1 = '''"""The code every LineSession request runs (patched by the policy tests)."""


def version():
    return "v1"
'''
APP_V2 = APP_V1.replace('return "v1"', 'return "v2"')


class LineState:
    """Test double of ServerState: makes LineSessions that share one table lock and the `app` module."""

    def __init__(self, app: ModuleType) -> None:
        self.app = app
        self.table_lock = threading.Lock()
        self.sessions: list[LineSession] = []
        self.waiting_for_lock = threading.Event()  # a `work` request is about to wait for the lock
        self.sleeping = threading.Event()  # a `sleep` request started
        self.shut_down = False

    def new_session(self, peer: str) -> LineSession:
        session = LineSession(self)
        self.sessions.append(session)
        return session

    def shutdown(self) -> None:
        self.shut_down = True


class LineSession:
    """Test double of Session: one request per text line, one reply line per request.

    call -> the app's version; begin/commit -> status T/I; lock -> take the shared table lock (inside a
    transaction, released by commit); work -> wait for the table lock, then the version; sleep -> wait
    until cancel() (or 30 s); quit -> closed. `idle` as the real session: no partial line, status I.
    """

    def __init__(self, state: LineState) -> None:
        self.state = state
        self.status = "I"
        self.closed = False
        self._buf = b""
        self._holds_lock = False
        self._cancel = threading.Event()

    @property
    def idle(self) -> bool:
        return not self._buf and self.status == "I"

    def take_backed_out(self) -> bytes | None:
        return None  # requests of the double never back out

    def receive(self, data: bytes) -> bytes:
        self._buf += data
        out = []
        while b"\n" in self._buf and not self.closed:
            line, self._buf = self._buf.split(b"\n", 1)
            out.append(self._run(line.decode().strip()) + "\n")
        return "".join(out).encode()

    def _run(self, cmd: str) -> str:
        app, state = self.state.app, self.state
        if cmd == "call":
            return str(app.version())
        if cmd == "begin":
            self.status = "T"
            return "BEGIN"
        if cmd == "lock":
            state.table_lock.acquire()
            self._holds_lock = True
            return "LOCKED"
        if cmd == "commit":
            self.status = "I"
            if self._holds_lock:
                self._holds_lock = False
                state.table_lock.release()
            return "COMMIT"
        if cmd == "work":
            state.waiting_for_lock.set()
            if not state.table_lock.acquire(False):
                blocking.wait_begin()  # as the real executor does before a lock wait
                try:
                    state.table_lock.acquire()
                finally:
                    blocking.wait_end()
            try:
                return str(app.version())
            finally:
                state.table_lock.release()
        if cmd == "sleep":
            self._cancel.clear()
            state.sleeping.set()
            return "cancelled" if self._cancel.wait(30) else "slept"
        if cmd == "quit":
            self.closed = True
            return "bye"
        return f"echo {cmd}"

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        if self._holds_lock:
            self._holds_lock = False
            self.state.table_lock.release()


class LineClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def reply(self) -> str:
        return self.file.readline().decode().strip()

    def ask(self, line: str) -> str:
        self.send(line)
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class LineServer:
    """The network layer serving LineSessions in a background thread of this process."""

    def __init__(self, app: ModuleType, **options: Any) -> None:
        self.app = app
        self.state = LineState(app)
        listener = listen("127.0.0.1", 0)
        self.server = Server(self.state, listener, NetOptions(port=0, **options))
        self.port = self.server.address[1]
        self.clients: list[LineClient] = []
        ready = threading.Event()
        self.status: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.status.append(self.server.serve(on_ready=ready.set)),
            name="line-acceptor",
        )
        self.thread.start()
        assert ready.wait(10)

    def client(self) -> LineClient:
        c = LineClient(self.port)
        self.clients.append(c)
        return c

    def stop(self) -> None:
        """Stop the server (idempotent), then close the test's clients."""
        self.server.request_stop()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"
        for c in self.clients:
            c.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    name = f"lp_sqlnet_app_{uuid.uuid4().hex[:10]}"
    module = load_source(APP_V1, tmp_path, name)
    try:
        yield module
    finally:
        sys.modules.pop(name, None)


@pytest.fixture
def line_factory(app: ModuleType) -> Iterator[Callable[..., LineServer]]:
    started: list[LineServer] = []

    def start(**options: Any) -> LineServer:
        server = LineServer(app, **options)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
