"""Input and output limits with a real server: the offending client gets a protocol error and is
closed; every other client keeps being served."""

from __future__ import annotations

import socket

import pytest

from tests.support import wait_for


def exchange(server, payload: bytes) -> bytes:
    """Send payload; read until the server closes the connection."""
    with socket.create_connection((server.host, server.port), timeout=20) as s:
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still sending: the reply is already queued for us
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


@pytest.fixture
def limited(kv_factory):
    return kv_factory(
        "--proto-max-bulk-len", "1kb",
        "--max-multibulk-len", "8",
        "--max-inline-len", "256",
        "--client-query-buffer-limit", "64kb",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"*1\r\n$2000\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
        (b"*9\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"x" * 300, b"-ERR Protocol error: too big inline request\r\n"),
        (b"*1\r\n$" + b"9" * 300, b"-ERR Protocol error: too big bulk count string\r\n"),
        (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n:5\r\n", b"-ERR Protocol error: expected '$', got ':'\r\n"),
    ],
)
def test_protocol_error_closes_only_that_client(limited, payload, error):
    bystander = limited.client()
    bystander.set("k", "v")
    # Commands before the bad bytes are answered first, as Redis does.
    reply = exchange(limited, b"PING\r\n" + payload)
    assert reply == b"+PONG\r\n" + error
    assert bystander.get("k") == b"v"
    assert limited.alive()


def test_values_up_to_the_limit_are_fine(limited):
    r = limited.client()
    r.set("big", b"x" * 1024)
    assert len(r.get("big")) == 1024
    assert r.mset({f"k{i}": i for i in range(3)}) is True  # 7 arguments <= 8


def test_query_buffer_limit(kv_factory):
    server = kv_factory("--proto-max-bulk-len", "10mb", "--client-query-buffer-limit", "1mb")
    bystander = server.client()
    reply = exchange(server, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5000000\r\n" + b"a" * 2_000_000)
    assert reply == b"-ERR Protocol error: query buffer limit exceeded\r\n"
    assert bystander.ping()


def test_output_buffer_limit_closes_a_client_that_does_not_read(kv_factory):
    server = kv_factory("--client-output-buffer-limit", "1mb")
    r = server.client()
    r.set("big", b"x" * 200_000)
    with socket.create_connection((server.host, server.port), timeout=20) as s:
        # Ask for ~20 MB of replies and do not read them until the server has given up on us: reading
        # earlier races the limit (a client that drains as fast as a slow server writes never exceeds it).
        s.sendall(b"GET big\r\n" * 100)
        # The server closes us once more than 1 MB waits; the others are served meanwhile.
        assert r.ping()
        wait_for(
            lambda: "output buffer limit" in server.log(), timeout=30, what="the limit to close us"
        )
        s.settimeout(30)
        got = 0
        while True:
            try:
                chunk = s.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            got += len(chunk)
        assert got < 100 * 200_000
    assert r.get("big") is not None
    assert "output buffer limit" in server.log()


def test_many_bad_clients_never_crash_the_server(kv_server):
    r = kv_server.client()
    garbage = [b"\x00\xff" * 50, b"*-5\r\n*2\r\n$x\r\n", b'"unterminated\r\n', b"*1\r\n$1\r\nab"]
    for g in garbage * 5:
        with socket.create_connection((kv_server.host, kv_server.port), timeout=5) as s:
            s.sendall(g)  # and hang up without reading: the server must cope
        assert r.ping()
    assert kv_server.alive()
