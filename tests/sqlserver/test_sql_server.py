"""The sqlserver process: ready line, --max-connections, SIGTERM/SIGINT, bad options, the network edge.

Tests that need only the network layer use the in-process line server (conftest); the others start the
real `python -m sqlserver.cli` process and talk PostgreSQL to it with psycopg or the project's codec.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading

import pytest

from sqlserver.protocol import (
    PROTOCOL_3_0,
    BackendParser,
    ErrorResponse,
    SSLRequest,
    StartupMessage,
    encode_frontend,
)
from tests.sqlserver.conftest import POLICIES

pytestmark = pytest.mark.timeout(120)


def _startup(port: int, ssl_first: bool = True) -> tuple[bytes, list[object]]:
    """Connect like libpq (SSLRequest, then StartupMessage); return the SSL answer and the messages
    received until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        answer = b""
        if ssl_first:
            s.sendall(encode_frontend(SSLRequest()))
            answer = s.recv(1)
        s.sendall(encode_frontend(StartupMessage(PROTOCOL_3_0, {"user": "postgres"})))
        parser = BackendParser()
        messages: list[object] = []
        while chunk := s.recv(65536):
            parser.feed(chunk)
            while (msg := parser.next()) is not None:
                messages.append(msg)
        return answer, messages


@pytest.mark.parametrize("policy", POLICIES)
def test_max_connections_turns_the_extra_client_away_like_postgres(line_factory, policy):
    server = line_factory(policy=policy, max_connections=2)
    held = [server.client(), server.client()]
    for c in held:
        assert c.ask("call") == "v1"
    answer, messages = _startup(server.port)
    assert answer == b"N"
    assert len(messages) == 1 and isinstance(messages[0], ErrorResponse), messages
    err = messages[0]
    assert (err.severity, err.sqlstate) == ("FATAL", "53300")
    assert err.message == "sorry, too many clients already"
    for c in held:  # the admitted clients are unaffected
        assert c.ask("call") == "v1"
    held[0].ask("quit")
    held[0].close()
    # A slot is free again once the first client's connection is closed.
    for _ in range(200):
        if len(server.server.table) < 2:
            break
        server.state.sleeping.wait(0.01)
    assert server.client().ask("call") == "v1"


def test_a_client_that_never_sends_its_startup_is_not_waited_for(line_factory):
    """A full server: the rejection of a silent client runs off the acceptor thread."""
    server = line_factory(policy="thread-per-connection", max_connections=1)
    held = server.client()
    assert held.ask("call") == "v1"
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        _, messages = _startup(server.port, ssl_first=False)
        assert isinstance(messages[0], ErrorResponse) and messages[0].sqlstate == "53300"
    finally:
        silent.close()


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sqlserver.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--policy", "fibers"], "--policy"),
        (["--pool-groups", "0"], "--pool-groups"),
        (["--max-connections", "0"], "--max-connections"),
        (["--allow-unsigned"], "--livepatch-socket"),
        (["--no-livepatch", "--livepatch-socket", "/tmp/x.sock"], "exclude each other"),
    ],
)
def test_bad_options_are_refused_with_a_usage_message(args, message):
    done = _cli(*args)
    assert done.returncode == 2, done
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_busy_port_is_reported_without_a_traceback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        done = _cli("--port", str(port))
    assert done.returncode == 1
    assert "cannot listen" in done.stderr and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("policy", POLICIES)
def test_signal_stops_accepting_closes_sessions_and_exits_0(sql_factory, tmp_path, policy, sig):
    psycopg = pytest.importorskip("psycopg")
    server = sql_factory("--policy", policy, "--dir", str(tmp_path / "data"))
    conns = [psycopg.connect(server.dsn, autocommit=True) for _ in range(3)]
    for c in conns:
        assert c.execute("select 1").fetchone() == (1,)
    in_tx = psycopg.connect(server.dsn)
    in_tx.execute("select 1")  # psycopg opened a transaction: the session is not idle
    server.process.send_signal(sig)
    assert server.wait_exit(30) == 0
    for c in [*conns, in_tx]:
        with pytest.raises(psycopg.OperationalError):
            c.execute("select 1")
        c.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    assert "Traceback" not in server.log(), server.log()


@pytest.mark.parametrize("policy", POLICIES)
def test_cancel_request_works_when_the_server_is_full(sql_factory, tmp_path, policy):
    """The one allowed client runs a long query; its cancel arrives on a new connection past
    --max-connections and must still stop the query (PostgreSQL does not count cancel requests)."""
    psycopg = pytest.importorskip("psycopg")
    from tests.sqlserver.test_clients_drivers import LONG_QUERY

    server = sql_factory("--policy", policy, "--max-connections", "1", "--dir", str(tmp_path / "d"))
    with psycopg.connect(server.dsn, autocommit=True) as c:
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            psycopg.connect(server.dsn)
        outcome: list[BaseException | None] = []
        started = threading.Event()

        def run() -> None:
            started.set()
            try:
                c.execute(LONG_QUERY).fetchone()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=run)
        t.start()
        assert started.wait(10)
        for _ in range(100):  # until it lands: the first may arrive before the statement started
            c.cancel()
            t.join(0.2)
            if not t.is_alive():
                break
        t.join(30)
        assert not t.is_alive(), "the long query was not cancelled"
        assert outcome and isinstance(outcome[0], psycopg.errors.QueryCanceled), outcome
        assert c.execute("select 3").fetchone() == (3,)


def test_the_control_socket_may_live_in_a_data_directory_that_does_not_exist_yet(
    sql_factory, tmp_path
):
    """`--dir data --livepatch-socket data/lp.sock` on a fresh directory (the README's example): the
    data directory is created before the agent binds its socket inside it."""
    data = tmp_path / "fresh" / "data"
    server = sql_factory(
        "--dir", str(data), "--livepatch-socket", str(data / "lp.sock"), "--allow-unsigned"
    )
    assert (data / "lp.sock").is_socket()
    import psycopg

    with psycopg.connect(server.dsn, connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
