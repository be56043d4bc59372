"""Session parameters (SET/SHOW/RESET, current_setting, ParameterStatus) with PostgreSQL's defaults.

Concurrency: one Settings per session, used by that session's thread only.
"""

from __future__ import annotations

from sqlserver.config import SERVER_VERSION, SERVER_VERSION_NUM
from sqlserver.protocol.errors import (
    CANT_CHANGE_RUNTIME_PARAM,
    FEATURE_NOT_SUPPORTED,
    UNDEFINED_OBJECT,
    PgError,
)

# name (lower case) -> (display name, default). Names not listed here may still be SET (they are
# kept and shown back, like PostgreSQL's placeholder variables with a dot, e.g. myapp.x).
DEFAULTS: dict[str, tuple[str, str]] = {
    k.lower(): (k, v)
    for k, v in {
        "server_version": SERVER_VERSION,
        "server_version_num": SERVER_VERSION_NUM,
        "server_encoding": "UTF8",
        "client_encoding": "UTF8",
        "DateStyle": "ISO, MDY",
        "IntervalStyle": "postgres",
        "integer_datetimes": "on",
        "standard_conforming_strings": "on",
        "TimeZone": "UTC",
        "application_name": "",
        "is_superuser": "on",
        "session_authorization": "postgres",
        "search_path": '"$user", public',
        "transaction_isolation": "serializable",
        "default_transaction_isolation": "serializable",
        "transaction_read_only": "off",
        "default_transaction_read_only": "off",
        "max_identifier_length": "63",
        "lc_collate": "C",
        "lc_ctype": "C",
        "lc_messages": "C",
        "lc_monetary": "C",
        "lc_numeric": "C",
        "lc_time": "C",
        "extra_float_digits": "1",
        "statement_timeout": "0",
        "lock_timeout": "0",
        "idle_in_transaction_session_timeout": "0",
        "bytea_output": "hex",
        "synchronous_commit": "on",
        "client_min_messages": "notice",
        "default_text_search_config": "pg_catalog.english",
        "max_connections": "100",
        "block_size": "8192",
        "data_checksums": "off",
        "in_hot_standby": "off",
        "jit": "off",
        "row_security": "on",
        "enable_seqscan": "on",
        "work_mem": "4MB",
        "search_path_default": "public",
        "default_tablespace": "",
        "array_nulls": "on",
        "escape_string_warning": "on",
        "xmloption": "content",
        "cursor_tuple_fraction": "0.1",
    }.items()
}
# Sent as ParameterStatus at startup and whenever they change (PostgreSQL's GUC_REPORT set).
REPORTED = (
    "server_version",
    "server_encoding",
    "client_encoding",
    "DateStyle",
    "IntervalStyle",
    "integer_datetimes",
    "standard_conforming_strings",
    "TimeZone",
    "application_name",
    "is_superuser",
    "session_authorization",
    "in_hot_standby",
)
_REPORTED_LOWER = {n.lower() for n in REPORTED}
_READ_ONLY = {
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "lc_collate",
    "lc_ctype",
    "max_identifier_length",
    "block_size",
    "is_superuser",
}
_ALIASES = {
    "transaction isolation level": "transaction_isolation",
    "time zone": "timezone",
    "session authorization": "session_authorization",
}


class Settings:
    def __init__(self, user: str, max_connections: int) -> None:
        self._values: dict[str, str] = {k: v for k, (_n, v) in DEFAULTS.items()}
        self._values["session_authorization"] = user
        self._values["max_connections"] = str(max_connections)
        self._names: dict[str, str] = {k: n for k, (n, _v) in DEFAULTS.items()}
        self._local: dict[
            str, str
        ] = {}  # values to restore at the end of the transaction (SET LOCAL)

    @staticmethod
    def key(name: str) -> str:
        name = " ".join(name.lower().split())
        return _ALIASES.get(name, name)

    def get(self, name: str, missing_ok: bool = False) -> str | None:
        k = self.key(name)
        if k in self._values:
            return self._values[k]
        if missing_ok:
            return None
        raise PgError(UNDEFINED_OBJECT, f'unrecognized configuration parameter "{name}"')

    def display_name(self, name: str) -> str:
        k = self.key(name)
        return self._names.get(k, k)

    def set(
        self, name: str, value: str, local: bool = False, *, startup: bool = False
    ) -> tuple[str, str] | None:
        """Set a parameter; returns (display name, value) when clients must be told (ParameterStatus)."""
        k = self.key(name)
        if k == "all":
            raise PgError(FEATURE_NOT_SUPPORTED, "SET ALL is not a parameter")
        if k in _READ_ONLY and not startup:
            raise PgError(CANT_CHANGE_RUNTIME_PARAM, f'parameter "{name}" cannot be changed')
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]  # asyncpg sends client_encoding as 'utf-8', quotes included
        if value == "":
            value = DEFAULTS.get(k, ("", ""))[1]
        if k == "client_encoding" and value.replace("-", "").replace("_", "").upper() not in (
            "UTF8",
            "UNICODE",
        ):
            raise PgError(
                FEATURE_NOT_SUPPORTED,
                f"client_encoding {value!r} is not supported by sqlserver; use UTF8",
            )
        if k == "client_encoding":
            value = "UTF8"
        if k == "timezone" and value.upper() not in (
            "UTC",
            "GMT",
            "ETC/UTC",
            "Z",
            "0",
            "+00",
            "00:00",
        ):
            raise PgError(
                FEATURE_NOT_SUPPORTED, f"sqlserver runs in UTC only, not TimeZone {value!r}"
            )
        if local and k not in self._local:
            self._local[k] = self._values.get(k, "")
        self._values[k] = value
        if "." not in k:
            self._names.setdefault(k, k)
        return (self._names.get(k, k), value) if k in _REPORTED_LOWER else None

    def reset(self, name: str) -> list[tuple[str, str]]:
        keys = list(self._values) if self.key(name) == "all" else [self.key(name)]
        changed = []
        for k in keys:
            if k in _READ_ONLY:
                continue
            if k in DEFAULTS:
                if k == "session_authorization":
                    continue
                self._values[k] = DEFAULTS[k][1]
                if k in _REPORTED_LOWER:
                    changed.append((DEFAULTS[k][0], self._values[k]))
            else:
                self._values.pop(k, None)
        return changed

    def end_transaction(self) -> None:
        """SET LOCAL values last until the end of the transaction."""
        for k, v in self._local.items():
            self._values[k] = v
        self._local.clear()

    def reported(self) -> list[tuple[str, str]]:
        return [(n, self._values[n.lower()]) for n in REPORTED]
