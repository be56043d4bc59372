"""Server-side authentication helpers: MD5 and SCRAM-SHA-256.

References: RFC 7677 section 3's example exchange (fixed nonces and salt), PostgreSQL's MD5 scheme
computed independently with hashlib, and scramp's SCRAM client (the library pg8000 uses), so the
server is not only checked against our own client.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import scramp
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlserver.protocol import ProtocolViolation
from sqlserver.protocol.auth import (
    ScramClient,
    ScramServer,
    md5_password_hash,
    md5_salted_hash,
    md5_verify,
    parse_verifier,
    saslprep,
    scram_verifier,
)
from sqlserver.protocol.errors import PgError

passwords = st.text(st.characters(exclude_categories=("Cs",)), max_size=16)
FAST = 16  # iterations for property tests (the protocol does not depend on the count)


# ------------------------------------------------------------------------------------------- md5
def test_md5_is_postgresqls_scheme() -> None:
    salt = b"\x01\x02\x03\x04"
    inner = hashlib.md5(b"secretalice").hexdigest()
    expected = "md5" + hashlib.md5(inner.encode() + salt).hexdigest()
    assert md5_salted_hash("alice", "secret", salt) == expected
    assert md5_password_hash("alice", "secret") == "md5" + inner


# deadline=None on every property: on a busy shared machine timing must not fail a test.
@settings(deadline=None)
@given(st.text(max_size=10), passwords, st.binary(min_size=4, max_size=4))
def test_md5_verify_accepts_a_password_or_its_stored_hash(user, password, salt) -> None:
    response = md5_salted_hash(user, password, salt)
    assert md5_verify(user, password, salt, response)
    assert md5_verify(user, md5_password_hash(user, password), salt, response)
    assert not md5_verify(user, password + "x", salt, response)
    assert not md5_verify(user, password, bytes(4 - len(salt)) + salt[::-1] + b"x", response)


# ------------------------------------------------------------------------------------------ scram
RFC_CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")


def rfc_server(password: str = "pencil") -> ScramServer:
    verifier = scram_verifier(password, salt=RFC_SALT, iterations=4096)
    return ScramServer(verifier, "user", server_nonce=RFC_SERVER_NONCE)


def test_rfc7677_example_exchange() -> None:
    server = rfc_server()
    assert server.first(RFC_CLIENT_FIRST) == RFC_SERVER_FIRST
    assert server.final(RFC_CLIENT_FINAL) == RFC_SERVER_FINAL


def test_rfc7677_client_side_too() -> None:
    client = ScramClient("user", "pencil", client_nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.first() == RFC_CLIENT_FIRST
    assert client.final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    client.verify(RFC_SERVER_FINAL)
    with pytest.raises(PgError):
        client.verify(b"v=" + base64.b64encode(bytes(32)))


def test_a_wrong_password_is_28p01_fatal() -> None:
    server = rfc_server("not pencil")
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(PgError) as info:
        server.final(RFC_CLIENT_FINAL)
    assert info.value.sqlstate == "28P01" and info.value.fatal
    assert 'password authentication failed for user "user"' in info.value.message


def test_an_unknown_user_runs_a_mock_exchange_that_fails_at_the_end() -> None:
    server = ScramServer(None, "ghost", iterations=FAST)
    client = ScramClient("ghost", "anything")
    server_first = server.first(client.first())
    assert b",s=" in server_first and b",i=16" in server_first
    with pytest.raises(PgError) as info:
        server.final(client.final(server_first))
    assert info.value.sqlstate == "28P01"


@settings(max_examples=30, deadline=None)
@given(passwords, passwords)
def test_our_client_and_server_agree_exactly_when_passwords_match(stored, tried) -> None:
    server = ScramServer(scram_verifier(stored, iterations=FAST), "u")
    client = ScramClient("u", tried)
    server_first = server.first(client.first())
    client_final = client.final(server_first)
    if saslprep(stored) == saslprep(tried):
        client.verify(server.final(client_final))
    else:
        with pytest.raises(PgError):
            server.final(client_final)


def test_a_plain_stored_password_works_like_its_verifier() -> None:
    server = ScramServer("pencil", "user", iterations=FAST)
    client = ScramClient("user", "pencil")
    client.verify(server.final(client.final(server.first(client.first()))))


def test_scramp_client_against_our_server() -> None:
    for password, tried, ok in [("pencil", "pencil", True), ("pencil", "pencils", False)]:
        client = scramp.ScramClient(["SCRAM-SHA-256"], "user", tried)
        server = ScramServer(scram_verifier(password), "user")  # scramp insists on >= 4096
        server_first = server.first(client.get_client_first().encode())
        client.set_server_first(server_first.decode())
        client_final = client.get_client_final().encode()
        if ok:
            client.set_server_final(server.final(client_final).decode())  # raises if wrong
        else:
            with pytest.raises(PgError):
                server.final(client_final)


def test_verifier_format_is_postgresqls() -> None:
    verifier = scram_verifier("pencil", salt=RFC_SALT, iterations=4096)
    mechanism, params, keys = verifier.split("$")
    assert mechanism == "SCRAM-SHA-256" and params == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    # RFC 5802 section 3, spelled out independently.
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", RFC_SALT, 4096)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    assert keys == f"{b64(stored_key).decode()}:{b64(server_key).decode()}"
    assert parse_verifier(verifier) == (4096, RFC_SALT, stored_key, server_key)
    with pytest.raises(ValueError):
        parse_verifier("md5abcdef")


@pytest.mark.parametrize(
    "client_first",
    [
        b"",
        b"n,,",
        b"p=tls-server-end-point,,n=u,r=abc",
        b"n,a=admin,n=u,r=abc",
        b"x,,n=u,r=abc",
        b"n,,r=abc",
        b"n,,n=u,r=",
        b"n,,n=u,r=a,b",
        b"n,,n=u,r=ab\x7f",
        b"n,,\xff\xfe",
    ],
)
def test_malformed_client_first_messages_are_violations(client_first: bytes) -> None:
    with pytest.raises(ProtocolViolation):
        ScramServer("pw", "u", iterations=FAST).first(client_first)


@pytest.mark.parametrize(
    "client_final",
    [
        b"",
        b"c=biws,r=WRONG,p=" + base64.b64encode(bytes(32)),
        b"c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=!!",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,c=biws,p=AAAA",
    ],
)
def test_malformed_client_final_messages_are_violations(client_final: bytes) -> None:
    server = rfc_server()
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(ProtocolViolation):
        server.final(client_final)


def test_messages_out_of_order_are_violations() -> None:
    with pytest.raises(ProtocolViolation):
        rfc_server().final(RFC_CLIENT_FINAL)
    server = rfc_server()
    server.first(RFC_CLIENT_FIRST)
    with pytest.raises(ProtocolViolation):
        server.first(RFC_CLIENT_FIRST)


@settings(deadline=None, max_examples=200)
@given(st.binary(max_size=120), st.binary(max_size=120))
def test_arbitrary_scram_messages_give_a_pg_error_only(first: bytes, final: bytes) -> None:
    server = ScramServer("pw", "u", iterations=FAST)
    try:
        server.first(first)
        server.final(final)
    except PgError:
        return
    raise AssertionError("arbitrary bytes authenticated")


def test_saslprep_maps_spaces_and_keeps_prohibited_passwords_raw() -> None:
    assert saslprep("I\u00adX") == "IX"  # soft hyphen maps to nothing (RFC 4013 example)
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space becomes a space
    assert saslprep("\u2168") == "IX"  # NFKC
    assert saslprep("a\x07b") == "a\x07b"  # prohibited: PostgreSQL uses the raw password
