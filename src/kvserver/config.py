"""Server configuration: one dataclass, and the CONFIG GET/SET view of it (names and formats are Redis's).

Concurrency: read and written by the event-loop thread only (CONFIG SET runs there).
Unknown parameters are accepted by CONFIG SET (stored, logged, reported by CONFIG GET) so that tools
written for redis-server never fail against kvserver; they have no effect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvserver.resp import Limits
from kvserver.types.glob import compile_glob

log = logging.getLogger("kvserver.config")

DEFAULT_SAVE = "3600 1 300 100 60 10000"  # Redis's default snapshot policy


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 6379
    dir: str | None = None  # None: no persistence at all
    appendonly: bool = False
    appendfsync: str = "everysec"  # always | everysec | no
    appendfilename: str = "appendonly"
    dbfilename: str = "dump.kvsnap"
    save: list[tuple[int, int]] = field(default_factory=list)  # (seconds, changes)
    requirepass: str | None = None
    databases: int = 16
    maxclients: int = 10000
    # Input limits (kvserver.resp.Limits) and the output limit, per client.
    proto_max_bulk_len: int = 512 * 1024 * 1024
    max_multibulk_len: int = 1024 * 1024
    max_inline_len: int = 64 * 1024
    client_query_buffer_limit: int = 1024 * 1024 * 1024
    client_output_buffer_limit: int = 512 * 1024 * 1024  # hard limit, normal clients; 0 = none
    hz: int = 10  # server cron frequency (active expiry, BGSAVE reaping, save policy)
    active_expire_keys: int = 200  # keys examined per database per cron tick (bounded work)
    livepatch: bool = True
    extra: dict[str, str] = field(default_factory=dict)  # unknown parameters set by CONFIG SET

    def limits(self) -> Limits:
        return Limits(
            max_bulk_len=self.proto_max_bulk_len,
            max_multibulk_len=self.max_multibulk_len,
            max_inline_len=self.max_inline_len,
            query_buffer_limit=self.client_query_buffer_limit,
        )


def parse_save(text: str) -> list[tuple[int, int]]:
    """Redis's save syntax: "<seconds> <changes> ..."; "" disables snapshots by policy."""
    parts = text.split()
    if len(parts) % 2:
        raise ValueError("save needs pairs of <seconds> <changes>")
    return [(int(parts[i]), int(parts[i + 1])) for i in range(0, len(parts), 2)]


def format_save(policy: list[tuple[int, int]]) -> str:
    return " ".join(f"{s} {c}" for s, c in policy)


def _fsync(v: str) -> str:
    if v.lower() not in ("always", "everysec", "no"):
        raise ValueError("argument(s) must be one of the following: always, everysec, no")
    return v.lower()


def _positive(v: str) -> int:
    n = int(v)
    if n <= 0:
        raise ValueError("argument must be positive")
    return n


def _memory(v: str) -> int:
    units = {"k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}
    v = v.lower()
    for suffix in ("kb", "mb", "gb", "k", "m", "g"):
        if v.endswith(suffix):
            return int(v[: -len(suffix)]) * units[suffix]
    return int(v)


# name -> (attribute, to_text, from_text or None if read-only at run time)
_Param = tuple[str, Callable[[Any], str], Callable[[str], Any] | None]
PARAMETERS: dict[str, _Param] = {
    "bind": ("host", str, None),
    "port": ("port", str, None),
    "dir": ("dir", lambda v: v or "", None),
    "dbfilename": ("dbfilename", str, None),
    "appendfilename": ("appendfilename", str, None),
    "appendonly": ("appendonly", lambda v: "yes" if v else "no", None),
    "appendfsync": ("appendfsync", str, _fsync),
    "save": ("save", format_save, parse_save),
    "requirepass": ("requirepass", lambda v: v or "", lambda v: v or None),
    "databases": ("databases", str, None),
    "maxclients": ("maxclients", str, _positive),
    "proto-max-bulk-len": ("proto_max_bulk_len", str, _memory),
    "client-query-buffer-limit": ("client_query_buffer_limit", str, _memory),
    "client-output-buffer-limit": ("client_output_buffer_limit", str, _memory),
    "hz": ("hz", str, _positive),
    "maxmemory": ("_maxmemory", str, None),  # reported as 0: no eviction
}
_FIXED = {"maxmemory": "0", "maxmemory-policy": "noeviction", "timeout": "0"}


def config_get(config: Config, patterns: list[str]) -> dict[str, str]:
    """Every parameter matching any glob pattern (Redis's glob, case-insensitive), like CONFIG GET."""
    result: dict[str, str] = {}
    for pattern in patterns:
        match = compile_glob(pattern.encode(errors="surrogateescape"), nocase=True).fullmatch
        for name, (attr, to_text, _) in PARAMETERS.items():
            if match(name.encode()) and attr != "_maxmemory":
                result[name] = to_text(getattr(config, attr))
        for name, value in list(_FIXED.items()) + list(config.extra.items()):
            if match(name.encode(errors="surrogateescape")) and name not in result:
                result[name] = value
    return result


def config_set(config: Config, name: str, value: str) -> str | None:
    """Apply one CONFIG SET; returns an error message or None. Unknown names are stored and reported."""
    key = name.lower()
    param = PARAMETERS.get(key)
    if param is None:
        log.warning("CONFIG SET of unknown parameter %r accepted without effect", key)
        config.extra[key] = value
        return None
    attr, _, from_text = param
    if from_text is None:
        return f"ERR CONFIG SET failed (possibly related to argument '{key}') - can't set immutable config"
    try:
        setattr(config, attr, from_text(value))
    except ValueError as exc:
        return f"ERR CONFIG SET failed (possibly related to argument '{key}') - {exc}"
    return None
