"""Sans-IO server-side authentication helpers: MD5 and SCRAM-SHA-256 (RFC 5802 / RFC 7677).

MD5 (AuthenticationMD5Password): the client sends "md5" + md5(md5(password + user) + salt), hex.
md5_salted_hash computes it from a password; md5_verify checks a response against a stored password
that is either plain text or PostgreSQL's stored form "md5" + md5(password + user).

SCRAM-SHA-256 (AuthenticationSASL "SCRAM-SHA-256", no channel binding):
    server = ScramServer(stored, user)      stored: a password or a scram_verifier() string
    server_first = server.first(client_first)   -> AuthenticationSASLContinue payload
    server_final = server.final(client_final)   -> AuthenticationSASLFinal payload (then AuthOk)
A wrong password raises PgError 28P01 (FATAL); a malformed message raises ProtocolViolation (08P01).
ScramServer(None, user) runs a mock exchange that always fails at final(), as PostgreSQL does for
an unknown user, so the reply does not reveal whether the user exists. One ScramServer per
connection attempt; not thread-safe.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata

from sqlserver.protocol.errors import (
    FATAL,
    INVALID_AUTHORIZATION_SPECIFICATION,
    INVALID_PASSWORD,
    PgError,
    ProtocolViolation,
)

SCRAM_MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096  # PostgreSQL's scram_iterations default
_NONCE_BYTES = 18  # PostgreSQL's SCRAM_RAW_NONCE_LEN
_SALT_BYTES = 16  # PostgreSQL's SCRAM_DEFAULT_SALT_LEN


# ------------------------------------------------------------------------------------------- md5
def md5_password_hash(user: str, password: str) -> str:
    """PostgreSQL's stored MD5 form: "md5" + md5(password + user)."""
    return "md5" + hashlib.md5((password + user).encode()).hexdigest()


def md5_salted_hash(user: str, password: str, salt: bytes) -> str:
    """What a client answers to AuthenticationMD5Password(salt)."""
    inner = md5_password_hash(user, password)[3:]
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def md5_verify(user: str, stored: str, salt: bytes, response: str) -> bool:
    """True when the client's response matches `stored` (a password or "md5..." stored hash)."""
    if len(stored) == 35 and stored.startswith("md5"):
        expected = "md5" + hashlib.md5(stored[3:].encode() + salt).hexdigest()
    else:
        expected = md5_salted_hash(user, stored, salt)
    return hmac.compare_digest(expected.encode(), response.encode())


# ------------------------------------------------------------------------------------------ scram
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raise ProtocolViolation(f"malformed SCRAM message: invalid base64 in {what}") from None


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep as PostgreSQL applies it: on a prohibited character, the raw password."""
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    text = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12, stringprep.in_table_c21, stringprep.in_table_c22,
        stringprep.in_table_c3, stringprep.in_table_c4, stringprep.in_table_c5,
        stringprep.in_table_c6, stringprep.in_table_c7, stringprep.in_table_c8,
        stringprep.in_table_c9, stringprep.in_table_a1,
    )  # fmt: skip
    if any(test(c) for c in text for test in prohibited):
        return password
    return text


def _keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
    client_key = _hmac(salted, b"Client Key")
    return hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")


def scram_verifier(
    password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
) -> str:
    """PostgreSQL's stored form: "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>"."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    stored_key, server_key = _keys(password, salt, iterations)
    return f"{SCRAM_MECHANISM}${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def parse_verifier(verifier: str) -> tuple[int, bytes, bytes, bytes]:
    """(iterations, salt, StoredKey, ServerKey) of a scram_verifier() string; ValueError if not one."""
    try:
        mechanism, params, keys = verifier.split("$")
        iterations, salt = params.split(":")
        stored_key, server_key = keys.split(":")
        if mechanism != SCRAM_MECHANISM or int(iterations) < 1:
            raise ValueError
        return (
            int(iterations),
            base64.b64decode(salt, validate=True),
            base64.b64decode(stored_key, validate=True),
            base64.b64decode(server_key, validate=True),
        )
    except ValueError:
        raise ValueError(f"not a SCRAM-SHA-256 verifier: {verifier[:40]!r}") from None


def _attributes(text: str, what: str) -> list[tuple[str, str]]:
    out = []
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=" or not part[0].isalpha():
            raise ProtocolViolation(
                f"malformed SCRAM message: bad attribute {part[:20]!r} in {what}"
            )
        out.append((part[0], part[2:]))
    return out


class ScramServer:
    """The server's side of one SCRAM-SHA-256 exchange (see the module docstring)."""

    def __init__(
        self,
        stored: str | None,
        user: str = "",
        iterations: int = DEFAULT_ITERATIONS,
        server_nonce: str | None = None,
    ) -> None:
        self.user = user
        self._mock = stored is None
        if stored is None:
            stored = scram_verifier(secrets.token_hex(16), iterations=iterations)
        elif not stored.startswith(SCRAM_MECHANISM + "$"):
            stored = scram_verifier(stored, iterations=iterations)
        self._iterations, self._salt, self._stored_key, self._server_key = parse_verifier(stored)
        self._server_nonce = server_nonce or _b64(secrets.token_bytes(_NONCE_BYTES))
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2_header = ""
        self._nonce = ""

    def first(self, client_first: bytes) -> bytes:
        """The server-first-message answering the client-first-message."""
        if self._server_first:
            raise ProtocolViolation("malformed SCRAM message: a second client-first-message")
        text = self._text(client_first)
        cbind, sep1, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not (sep1 and sep2):
            raise ProtocolViolation("malformed SCRAM message: no GS2 header")
        if cbind.startswith("p="):
            raise ProtocolViolation(
                "malformed SCRAM message: channel binding was not offered by this server"
            )
        if cbind not in ("n", "y"):
            raise ProtocolViolation(
                f"malformed SCRAM message: unexpected channel binding {cbind!r}"
            )
        if authzid:
            raise ProtocolViolation("client uses authorization identity, but it is not supported")
        attrs = _attributes(bare, "client-first-message")
        if len(attrs) < 2 or attrs[0][0] != "n" or attrs[1][0] != "r" or not attrs[1][1]:
            raise ProtocolViolation("malformed SCRAM message: expected n=<user>,r=<nonce>")
        client_nonce = attrs[1][1]
        if any(not (0x21 <= ord(c) <= 0x7E) or c == "," for c in client_nonce):
            raise ProtocolViolation("malformed SCRAM message: invalid client nonce")
        self._gs2_header = f"{cbind},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + self._server_nonce
        self._server_first = f"r={self._nonce},s={_b64(self._salt)},i={self._iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        """The server-final-message ("v=<signature>") if the proof is right; else PgError 28P01."""
        if not self._server_first:
            raise ProtocolViolation("malformed SCRAM message: client-final-message came first")
        text = self._text(client_final)
        without_proof, _, proof_part = text.rpartition(",")
        attrs = _attributes(text, "client-final-message")
        if len(attrs) < 3 or attrs[0][0] != "c" or attrs[1][0] != "r" or attrs[-1][0] != "p":
            raise ProtocolViolation("malformed SCRAM message: expected c=...,r=...,p=...")
        if _unb64(attrs[0][1], "channel binding") != self._gs2_header.encode():
            raise ProtocolViolation("SCRAM channel binding check failed")
        if attrs[1][1] != self._nonce:
            raise ProtocolViolation("malformed SCRAM message: nonce does not match")
        proof = _unb64(proof_part[2:], "client proof")
        if len(proof) != 32:
            raise ProtocolViolation("malformed SCRAM message: client proof is not 32 bytes")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = _hmac(self._stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if self._mock or not hmac.compare_digest(
            hashlib.sha256(client_key).digest(), self._stored_key
        ):
            raise PgError(
                INVALID_PASSWORD,
                f'password authentication failed for user "{self.user}"',
                severity=FATAL,
            )
        return f"v={_b64(_hmac(self._server_key, auth_message))}".encode()

    @staticmethod
    def _text(data: bytes) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("malformed SCRAM message: not valid UTF-8") from None


class ScramClient:
    """The client's side of SCRAM-SHA-256 (tests and lpbench drivers); one per exchange.

    first() -> client-first; final(server_first) -> client-final; verify(server_final) raises
    PgError 28000 if the server did not prove it knows the password.
    """

    def __init__(self, user: str, password: str, client_nonce: str | None = None) -> None:
        self.user = user
        self._password = password
        self._nonce = client_nonce or _b64(secrets.token_bytes(_NONCE_BYTES))
        self._bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={self._nonce}"
        self._auth_message = b""
        self._server_key = b""

    def first(self) -> bytes:
        return f"n,,{self._bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(_attributes(server_first.decode(), "server-first-message"))
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s", ""), attrs.get("i", "")
        if not nonce.startswith(self._nonce) or not iterations.isdigit():
            raise ProtocolViolation("malformed SCRAM message from the server")
        salted = hashlib.pbkdf2_hmac(
            "sha256", saslprep(self._password).encode(), _unb64(salt, "salt"), int(iterations)
        )
        client_key = _hmac(salted, b"Client Key")
        self._server_key = _hmac(salted, b"Server Key")
        without_proof = f"c=biws,r={nonce}"
        self._auth_message = f"{self._bare},{server_first.decode()},{without_proof}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), self._auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={_b64(proof)}".encode()

    def verify(self, server_final: bytes) -> None:
        expected = f"v={_b64(_hmac(self._server_key, self._auth_message))}".encode()
        if not hmac.compare_digest(expected, server_final):
            raise PgError(
                INVALID_AUTHORIZATION_SPECIFICATION,
                "the server's SCRAM signature is wrong: it does not know the password",
            )
