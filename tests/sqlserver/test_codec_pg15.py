"""The codec's client side against a real PostgreSQL 15 over a real socket.

A fresh cluster (initdb; run as user postgres through runuser when the tests run as root) on a free
port. What this shows that the unit tests cannot: PostgreSQL accepts what encode_frontend writes;
BackendParser reads everything PostgreSQL sends (startup, extended query, errors, COPY, a protocol
violation's FATAL); RowDescription sizes match types.TYPES; PostgreSQL answers protocol 3.1 with the
NegotiateProtocolVersion that negotiation() predicts; and authentication interoperates both ways:
PostgreSQL accepts our scram_verifier and md5 hashes, our ScramServer accepts PostgreSQL's verifiers.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lpbench.servers import ManagedProcess
from sqlserver.protocol import (
    PROTOCOL_3_0,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    BackendParser,
    Bind,
    CommandComplete,
    CopyData,
    CopyDone,
    CopyOutResponse,
    DataRow,
    Describe,
    ErrorResponse,
    Execute,
    NegotiateProtocolVersion,
    ParameterStatus,
    Parse,
    ParseComplete,
    PasswordMessage,
    PgError,
    PortalSuspended,
    Query,
    ReadyForQuery,
    RowDescription,
    SSLRequest,
    StartupMessage,
    Sync,
    encode_frontend,
    md5_password_hash,
    md5_salted_hash,
    negotiation,
    password_message,
    sasl_initial_response,
    types,
)
from sqlserver.protocol.auth import ScramClient, ScramServer, scram_verifier
from tests.conftest import free_port, require_tool

PGBIN = Path("/usr/lib/postgresql/15/bin")
READY = re.compile(r"database system is ready to accept connections")
HBA = """\
host all postgres 127.0.0.1/32 trust
host all alice 127.0.0.1/32 scram-sha-256
host all carol 127.0.0.1/32 scram-sha-256
host all bob 127.0.0.1/32 md5
"""


def as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@pytest.fixture(scope="module")
def pg_port() -> Iterator[int]:
    require_tool(str(PGBIN / "postgres"))
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    with tempfile.TemporaryDirectory(prefix="sqlcodec-pg15-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o777)
        data, port = work / "data", free_port()
        initdb = [str(PGBIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
        done = subprocess.run(as_postgres(initdb), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        (data / "pg_hba.conf").write_text(HBA)
        server = ManagedProcess(
            as_postgres([str(PGBIN / "postgres"), "-D", str(data), "-p", str(port),
                         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={work}",
                         "-c", "fsync=off"]),
            READY, work / "postgres.log",
        )  # fmt: skip
        server.start()
        try:
            yield port
        finally:
            server.stop()


class Client:
    """A raw socket speaking through the codec's client side."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.parser = BackendParser()

    def send(self, *messages: Any) -> None:
        self.sock.sendall(b"".join(encode_frontend(m) for m in messages))

    def receive(self) -> Any:
        while (msg := self.parser.next()) is None:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("the server closed the connection")
            self.parser.feed(data)
        return msg

    def until_ready(self) -> list[Any]:
        out = [self.receive()]
        while not isinstance(out[-1], ReadyForQuery):
            out.append(self.receive())
        return out

    def close(self) -> None:
        self.sock.close()


def login(port: int, user: str = "postgres", password: str | None = None) -> Client:
    client = Client(port)
    client.send(StartupMessage(PROTOCOL_3_0, {"user": user, "database": "postgres"}))
    msg = client.receive()
    if isinstance(msg, AuthenticationMD5Password):
        assert password is not None
        client.send(password_message(md5_salted_hash(user, password, msg.salt)))
        msg = client.receive()
    elif isinstance(msg, AuthenticationSASL):
        assert password is not None and "SCRAM-SHA-256" in msg.mechanisms
        scram = ScramClient(user, password)
        client.send(sasl_initial_response("SCRAM-SHA-256", scram.first()))
        server_first = client.receive()
        assert isinstance(server_first, AuthenticationSASLContinue)
        client.send(PasswordMessage(scram.final(server_first.data)))
        final = client.receive()
        assert isinstance(final, AuthenticationSASLFinal), final
        scram.verify(final.data)
        msg = client.receive()
    assert msg == AuthenticationOk(), msg
    rest = client.until_ready()
    assert any(isinstance(m, BackendKeyData) for m in rest)
    assert ParameterStatus("server_encoding", "UTF8") in rest
    assert rest[-1] == ReadyForQuery("I")
    return client


def query(client: Client, sql: str) -> list[Any]:
    client.send(Query(sql))
    return client.until_ready()


def test_ssl_refused_then_startup(pg_port: int) -> None:
    client = Client(pg_port)
    client.send(SSLRequest())
    while (answer := client.parser.next_byte()) is None:
        client.parser.feed(client.sock.recv(1))
    assert answer == b"N"  # the cluster has ssl off
    client.send(StartupMessage(PROTOCOL_3_0, {"user": "postgres"}))
    assert client.receive() == AuthenticationOk()
    assert client.until_ready()[-1] == ReadyForQuery("I")
    client.close()


def test_extended_query_in_both_formats(pg_port: int) -> None:
    client = login(pg_port)
    sql = (
        "select $1::int4 + 1 as n, $2::text as t, NULL::int8 as z, 1.50::numeric as d, now() as ts"
    )
    client.send(
        Parse("s1", sql, (types.INT4, types.TEXT)),
        Bind("", "s1", (1, 0), (types.encode_binary(types.INT4, 41), b"hi"), (1, 0, 1, 1, 1)),
        Describe("P", ""),
        Execute("", 0),
        Sync(),
    )
    out = client.until_ready()
    assert out[0] == ParseComplete()
    desc = out[2]
    assert isinstance(desc, RowDescription)
    oids = [f.type_oid for f in desc.fields]
    assert oids == [types.INT4, types.TEXT, types.INT8, types.NUMERIC, types.TIMESTAMPTZ]
    assert [f.type_size for f in desc.fields] == [types.type_size(o) for o in oids]
    assert [f.format for f in desc.fields] == [1, 0, 1, 1, 1]
    row = out[3]
    assert isinstance(row, DataRow)
    assert types.decode_binary(types.INT4, row.values[0]) == 42
    assert types.decode_text(types.TEXT, row.values[1]) == "hi"
    assert row.values[2] is None
    assert str(types.decode_binary(types.NUMERIC, row.values[3])) == "1.50"
    assert types.decode_binary(types.TIMESTAMPTZ, row.values[4]).tzinfo is not None
    assert out[4:] == [CommandComplete("SELECT 1"), ReadyForQuery("I")]
    client.close()


def test_row_limits_errors_and_copy(pg_port: int) -> None:
    client = login(pg_port)
    client.send(Parse("", "select generate_series(1, 3)"), Bind("", ""), Execute("", 2), Sync())
    out = client.until_ready()
    assert [type(m) for m in out[2:]] == [DataRow, DataRow, PortalSuspended, ReadyForQuery]
    error = query(client, "select 1/0")
    assert isinstance(error[0], ErrorResponse) and error[0].sqlstate == "22012"
    assert error[0].severity == "ERROR" and error[-1] == ReadyForQuery("I")
    out = query(client, "copy (select 1, 'a b') to stdout")
    assert out[:4] == [CopyOutResponse(0, (0, 0)), CopyData(b"1\ta b\n"), CopyDone(),
                       CommandComplete("COPY 1")]  # fmt: skip
    client.close()


def test_a_violation_gets_postgresqls_fatal_08p01(pg_port: int) -> None:
    client = login(pg_port)
    client.sock.sendall(b"!\x00\x00\x00\x04")
    msg = client.receive()
    assert isinstance(msg, ErrorResponse) and (msg.severity, msg.sqlstate) == ("FATAL", "08P01")
    client.close()


def test_protocol_3_1_is_negotiated_as_negotiation_predicts(pg_port: int) -> None:
    startup = StartupMessage(PROTOCOL_3_0 | 1, {"user": "postgres", "_pq_.option": "x"})
    client = Client(pg_port)
    client.send(startup)
    first = client.receive()
    assert first == negotiation(startup) == NegotiateProtocolVersion(0, ("_pq_.option",))
    assert client.receive() == AuthenticationOk()
    client.close()


def test_postgresql_accepts_our_scram_verifier_and_md5_hash(pg_port: int) -> None:
    admin = login(pg_port)
    verifier = scram_verifier("alice-pw")
    assert query(admin, f"create role alice login password '{verifier}'")[0] == CommandComplete(
        "CREATE ROLE"
    )
    query(admin, f"create role bob login password '{md5_password_hash('bob', 'bob-pw')}'")
    login(pg_port, "alice", "alice-pw").close()
    login(pg_port, "bob", "bob-pw").close()
    wrong = Client(pg_port)
    wrong.send(StartupMessage(PROTOCOL_3_0, {"user": "bob"}))
    salt = wrong.receive()
    assert isinstance(salt, AuthenticationMD5Password)
    wrong.send(password_message(md5_salted_hash("bob", "nope", salt.salt)))
    refused = wrong.receive()
    assert isinstance(refused, ErrorResponse) and refused.sqlstate == "28P01"
    wrong.close()
    admin.close()


def test_our_scram_server_accepts_postgresqls_verifier(pg_port: int) -> None:
    admin = login(pg_port)
    query(admin, "set password_encryption = 'scram-sha-256'")
    query(admin, "create role carol login password 'carol-pw'")
    rows = query(admin, "select rolpassword from pg_authid where rolname = 'carol'")
    stored = rows[1].values[0].decode()
    assert stored.startswith("SCRAM-SHA-256$4096:")
    for password, ok in (("carol-pw", True), ("carol-pW", False)):
        server, client = ScramServer(stored, "carol"), ScramClient("carol", password)
        client_final = client.final(server.first(client.first()))
        if ok:
            client.verify(server.final(client_final))
        else:
            with pytest.raises(PgError):
                server.final(client_final)
    login(pg_port, "carol", "carol-pw").close()
    admin.close()
