"""Connection commands against a real kvserver, with redis-py (RESP2 and RESP3) and raw sockets."""

from __future__ import annotations

import socket

import pytest
import redis


def raw(server, payload: bytes, expect_close: bool = False) -> bytes:
    """Send raw bytes, read until the reply stops (or the server closes)."""
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(payload)
        if not expect_close:
            s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_ping_echo_resp2(kv_server):
    r = kv_server.client()
    assert r.ping() is True
    assert r.echo("hello") == b"hello"
    assert raw(kv_server, b"PING msg\r\n") == b"$3\r\nmsg\r\n"
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'ping'"):
        r.execute_command("PING", "a", "b")


def test_unknown_command_error_is_redis_7s(kv_server):
    r = kv_server.client()
    with pytest.raises(redis.ResponseError) as exc:
        r.execute_command("foo", "a", "b")
    assert str(exc.value) == "unknown command 'foo', with args beginning with: 'a' 'b' "
    with pytest.raises(redis.ResponseError) as exc:
        r.execute_command("nosuch")
    assert str(exc.value) == "unknown command 'nosuch', with args beginning with: "


def test_arity_error(kv_server):
    r = kv_server.client()
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'echo' command"):
        r.execute_command("ECHO")


def test_hello_switches_to_resp3(kv_server):
    r = kv_server.client(protocol=3)
    info = r.connection_pool.get_connection().handshake_metadata
    assert info[b"proto"] == 3
    assert info[b"server"] == b"redis"
    assert r.ping() is True
    r.set("k", "v")
    assert r.get("k") == b"v"
    assert r.get("missing") is None
    # A RESP3 map reply comes back as a dict.
    assert r.execute_command("CONFIG", "GET", "appendonly") == {b"appendonly": b"no"}


def test_hello_raw_resp3_encoding(kv_server):
    reply = raw(kv_server, b"HELLO 3\r\nGET nosuch\r\nCONFIG GET appendonly\r\n")
    assert reply.startswith(b"%7\r\n")
    assert b"_\r\n" in reply  # RESP3 null
    assert reply.endswith(b"%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n")


def test_hello_unsupported_protocol(kv_server):
    r = kv_server.client()
    with pytest.raises(redis.ResponseError, match="NOPROTO"):
        r.execute_command("HELLO", "4")


def test_select_databases_are_separate(kv_server):
    r0 = kv_server.client(db=0)
    r1 = kv_server.client(db=1)
    r0.set("k", "zero")
    r1.set("k", "one")
    assert r0.get("k") == b"zero"
    assert r1.get("k") == b"one"
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r0.execute_command("SELECT", "16")


def test_client_setname_getname_id_list(kv_server):
    a = kv_server.client()
    b = kv_server.client()
    assert a.client_setname("alpha") is True
    assert a.client_getname() == "alpha"
    b.ping()
    ida, idb = a.client_id(), b.client_id()
    assert ida != idb
    b.ping()
    a.get("k")
    listed = a.client_list()
    assert {c["id"] for c in listed} >= {str(ida), str(idb)}
    assert [c["name"] for c in listed if c["id"] == str(ida)] == ["alpha"]
    # cmd= is each client's last command; the caller's own is the CLIENT LIST it is running.
    assert [c["cmd"] for c in listed if c["id"] == str(ida)] == ["client"]
    assert [c["cmd"] for c in listed if c["id"] == str(idb)] == ["ping"]
    with pytest.raises(redis.ResponseError, match="cannot contain spaces"):
        a.client_setname("has space")


def test_requirepass_noauth_and_auth(kv_factory):
    server = kv_factory("--requirepass", "s3cret")
    anon = server.client()
    with pytest.raises(redis.AuthenticationError):
        anon.get("k")
    with pytest.raises(redis.AuthenticationError):
        server.client(password="wrong").ping()
    good = server.client(password="s3cret")
    assert good.set("k", "v") is True
    assert good.get("k") == b"v"
    # RESP3 clients authenticate inside HELLO.
    r3 = server.client(protocol=3, password="s3cret")
    assert r3.get("k") == b"v"
    assert raw(server, b"GET k\r\n") == b"-NOAUTH Authentication required.\r\n"
    assert raw(server, b"AUTH s3cret\r\nGET k\r\n") == b"+OK\r\n$1\r\nv\r\n"


def test_auth_without_password_configured(kv_server):
    r = kv_server.client()
    with pytest.raises(redis.RedisError, match="without any password configured"):
        r.execute_command("AUTH", "x")


def test_quit_replies_then_closes(kv_server):
    assert raw(kv_server, b"PING\r\nQUIT\r\nPING\r\n", expect_close=True) == b"+PONG\r\n+OK\r\n"


def test_inline_commands_with_quotes(kv_server):
    reply = raw(kv_server, b"SET greeting \"hello world\"\r\nGET greeting\r\nECHO 'a b'\r\n")
    assert reply == b"+OK\r\n$11\r\nhello world\r\n$3\r\na b\r\n"


def test_pipelined_replies_in_order(kv_server):
    r = kv_server.client()
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"k{i}", i)
        pipe.get(f"k{i}")
    results = pipe.execute()
    assert results[1::2] == [str(i).encode() for i in range(500)]


def test_requests_before_the_peer_closes_its_side_are_all_answered(kv_server):
    # Exactly 4 x 64 KB (the server's read size) and then EOF: when the last full read and the end of
    # the stream land in one readiness event (timing-dependent), nothing may be dropped either.
    payload = b"PING\r\n" * 43690 + b"\r\n\r\n"
    assert len(payload) == 4 * 65536
    assert raw(kv_server, payload) == b"+PONG\r\n" * 43690
