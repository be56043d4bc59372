"""sqlserver's configuration: one frozen dataclass, shared read-only by every thread.

Concurrency: immutable; any thread may read it at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AUTH_METHODS = ("trust", "password", "md5", "scram-sha-256")
SYNCHRONOUS_MODES = ("full", "normal", "off")
POLICIES = ("thread-per-connection", "pool")

# PostgreSQL 15 as clients see it (server_version, version()).
SERVER_VERSION = "15.0"
SERVER_VERSION_NUM = "150000"


@dataclass(frozen=True)
class SqlConfig:
    """Everything `livepatch serve sql` can be told.

    data_dir None means a fresh temporary directory, removed by ServerState.shutdown() (tests). lock_timeout_ms bounds every wait for the write lock (and SQLite's busy
    handler); past it a statement fails with 55P03. statement_max_bytes bounds one SQL text.
    """

    host: str = "127.0.0.1"
    port: int = 5432
    data_dir: str | None = None
    policy: str = "thread-per-connection"
    pool_groups: int = 3
    pool_quiescence: str = "priority"  # "naive": experiment only (server/pool.py)
    thread_cache: int = 8
    max_connections: int = 100
    auth: str = "trust"
    password_file: str | None = None
    synchronous: str = "full"
    lock_timeout_ms: int = 30_000
    statement_max_bytes: int = 16 * 1024 * 1024
    translation_cache_size: int = 4096
    database_file: str = "sqlserver.db"

    def __post_init__(self) -> None:
        if self.auth not in AUTH_METHODS:
            raise ValueError(f"--auth must be one of {', '.join(AUTH_METHODS)}, not {self.auth!r}")
        if self.synchronous not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"--synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {self.synchronous!r}"
            )
        if self.policy not in POLICIES:
            raise ValueError(f"--policy must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.auth != "trust" and not self.password_file:
            raise ValueError(f"--auth {self.auth} needs --password-file (lines of user:password)")
        if self.lock_timeout_ms <= 0:
            raise ValueError("the lock timeout must be positive (milliseconds)")


def load_passwords(path: str) -> dict[str, str]:
    """Read a password file: one `user:password` per line; blank lines and `#` comments ignored.

    The password may itself be a SCRAM verifier ("SCRAM-SHA-256$...") for --auth scram-sha-256, so
    plain passwords need not be stored. Raises ValueError naming the bad line.
    """
    users: dict[str, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user:
            raise ValueError(f"{path}:{n}: expected `user:password`")
        users[user] = password
    return users
