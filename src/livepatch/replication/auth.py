"""Mutual authentication of the replication link with a shared secret (--replication-secret-file).

Challenge-response with HMAC-SHA256, so the secret never crosses the link and a recorded exchange
cannot be replayed: the primary's HELLO carries a fresh nonce Np; the standby's WELCOME carries its
own nonce Ns and proof("standby", Np, Ns); the primary checks it and sends AUTH with proof("primary",
Ns, Np); the standby accepts no other frame, and no term, before that proof. Either side refuses a
peer that does not prove the secret, or that has none when it has one, with a log line saying which
option to set. The link is authenticated, not encrypted (docs/standby.md).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat

NONCE_BYTES = 32
PROOF_BYTES = 32
MIN_SECRET_BYTES = 16


class SecretError(Exception):
    """The secret file is unusable (the message says what to do)."""


def load_secret(path: str) -> bytes:
    """The secret in path (surrounding whitespace ignored): at least MIN_SECRET_BYTES bytes, in a file
    that only its owner can read."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            secret = f.read(1 << 16).strip()
    except OSError as exc:
        raise SecretError(
            f"cannot read the replication secret file {path}: {exc.strerror}"
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"the replication secret file {path} can be read by others: chmod 600 {path}"
        )
    if len(secret) < MIN_SECRET_BYTES:
        raise SecretError(
            f"the replication secret in {path} is shorter than {MIN_SECRET_BYTES} bytes: "
            f"e.g. head -c 32 /dev/urandom | base64 > {path}"
        )
    return secret


def nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def proof(secret: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(secret, role + b"\0" + first + second, hashlib.sha256).digest()


def check(secret: bytes, role: bytes, first: bytes, second: bytes, given: bytes) -> bool:
    return hmac.compare_digest(proof(secret, role, first, second), given)
