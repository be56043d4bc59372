"""SQL functions PostgreSQL clients call that SQLite lacks, registered on each session's connection.

`install(conn, session)` registers them; the ones that need the session (pg_backend_pid,
current_setting, sequences) go through the small `FunctionHost` protocol so this module knows no
session internals. A function that must fail with a SQLSTATE (pg_div: 22012) records the PgError
on the host and raises; the session reports the recorded error instead of SQLite's generic
"user-defined function raised exception".

Concurrency: called by SQLite on the session's thread, inside a statement.
"""

from __future__ import annotations

import json
import re
import sqlite3
from functools import lru_cache
from typing import Any, Protocol

from sqlserver import results as r
from sqlserver.config import SERVER_VERSION
from sqlserver.extract import extract
from sqlserver.protocol.errors import DIVISION_BY_ZERO, PgError

INVALID_REGULAR_EXPRESSION = "2201B"  # not in the codec's SQLSTATE table (yet)


class FunctionHost(Protocol):
    backend_pid: int
    function_error: PgError | None

    def current_setting(self, name: str, missing_ok: bool = False) -> str | None: ...
    def set_setting(self, name: str, value: str, local: bool) -> str: ...
    def nextval(self, name: str) -> int: ...
    def currval(self, name: str) -> int: ...
    def setval(self, name: str, value: int, called: bool = True) -> int: ...
    def relation_oid(self, name: str) -> int | None: ...
    def index_definition(self, oid: int) -> str | None: ...


def version_string() -> str:
    return (
        f"PostgreSQL {SERVER_VERSION} (livepatch sqlserver over SQLite {sqlite3.sqlite_version}) "
        "on x86_64-pc-linux-gnu, 64-bit"
    )


@lru_cache(maxsize=256)
def _regex(pattern: str, flags: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE if "i" in flags else 0)


def _fail(host: FunctionHost, err: PgError) -> None:
    host.function_error = err
    raise err


def install(conn: sqlite3.Connection, host: FunctionHost) -> None:
    def pg_div(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if b == 0:
            _fail(host, PgError(DIVISION_BY_ZERO, "division by zero"))
        if isinstance(a, int) and isinstance(b, int):
            q = abs(a) // abs(b)  # PostgreSQL truncates toward zero, like C
            return q if (a >= 0) == (b >= 0) else -q
        return a / b

    def pg_mod(a: Any, b: Any) -> Any:
        if a is None or b is None:
            return None
        if b == 0:
            _fail(host, PgError(DIVISION_BY_ZERO, "division by zero"))
        m = abs(a) % abs(b)
        return m if a >= 0 else -m

    def pg_regex(s: Any, pattern: Any, flags: str) -> Any:
        if s is None or pattern is None:
            return None
        try:
            return 1 if _regex(str(pattern), flags).search(str(s)) else 0
        except re.error as e:
            _fail(host, PgError(INVALID_REGULAR_EXPRESSION, f"invalid regular expression: {e}"))

    def pg_extract(field: Any, value: Any) -> Any:
        try:
            return extract(str(field), value)
        except PgError as e:
            _fail(host, e)

    def current_setting(name: str, missing_ok: Any = 0) -> str | None:
        return host.current_setting(str(name), bool(missing_ok))

    def set_config(name: str, value: str, local: Any) -> str:
        return host.set_setting(str(name), str(value), bool(local))

    def pg_bool(v: Any) -> Any:
        if v is None:
            return None
        return 1 if str(v).strip().lower() in ("1", "t", "true", "on", "yes", "y") else 0

    def pg_regclass(name: Any) -> Any:
        if name is None or isinstance(name, int):
            return name
        oid = host.relation_oid(str(name).split(".")[-1].strip('"'))
        if oid is None:
            _fail(host, PgError("42P01", f'relation "{name}" does not exist'))
        return oid

    def pg_regtype(name: Any) -> Any:
        return r.declared_oid(str(name)) if isinstance(name, str) else name

    def format_type(oid: Any, typmod: Any = None) -> Any:
        if oid is None:
            return None
        base = r.DISPLAY_NAMES.get(oid) or r.TYPES.get(oid, ("???", 0))[0]
        if typmod is not None and typmod >= 4:
            if oid == r.NUMERIC:
                return f"numeric({(typmod - 4) >> 16},{(typmod - 4) & 0xFFFF})"
            if oid in (r.VARCHAR, r.BPCHAR):
                return f"{base}({typmod - 4})"
        return base

    def decl_typmod(decl: Any) -> int:
        if not decl or "(" not in str(decl):
            return -1
        args = [a.strip() for a in str(decl).split("(", 1)[1].rstrip(")").split(",")]
        try:
            if len(args) == 2:
                return ((int(args[0]) << 16) | int(args[1])) + 4
            return int(args[0]) + 4
        except ValueError:
            return -1

    constants: dict[str, Any] = {
        "version": version_string(),
        "current_database": "postgres",
        "current_schema": "public",
        "current_user": "postgres",
        "session_user": "postgres",
        "pg_is_in_recovery": 0,
        "pg_postmaster_start_time": None,
    }
    for name, value in constants.items():
        conn.create_function(name, 0, lambda v=value: v, deterministic=True)
    fns: list[tuple[str, int, Any]] = [
        ("pg_div", 2, pg_div),
        ("pg_mod", 2, pg_mod),
        ("pg_regex", 3, pg_regex),
        ("regexp", 2, lambda p, s: pg_regex(s, p, "")),
        ("extract", 2, pg_extract),  # EXTRACT(f FROM x) and date_part('f', x): rewrite.py
        ("ascii", 1, lambda s: None if s is None else (ord(str(s)[0]) if str(s) else 0)),
        ("current_setting", 1, current_setting),
        ("current_setting", 2, current_setting),
        ("set_config", 3, set_config),
        ("pg_backend_pid", 0, lambda: host.backend_pid),
        ("nextval", 1, lambda n: host.nextval(str(n))),
        ("currval", 1, lambda n: host.currval(str(n))),
        ("setval", 2, lambda n, v: host.setval(str(n), int(v))),
        ("setval", 3, lambda n, v, c: host.setval(str(n), int(v), bool(c))),
        ("pg_bool", 1, pg_bool),
        ("pg_regclass", 1, pg_regclass),
        ("to_regclass", 1, lambda n: host.relation_oid(str(n).split(".")[-1].strip('"'))),
        ("pg_regtype", 1, pg_regtype),
        ("pg_regproc", 1, lambda _n: 0),
        ("pg_oid", 1, lambda v: None if v is None else int(v)),
        ("pg_regrole", 1, lambda _n: 10),
        ("pg_regnamespace", 1, lambda n: {"pg_catalog": 11, "public": 2200}.get(str(n), 0)),
        ("format_type", 2, format_type),
        ("pg_decl_oid", 1, r.declared_oid),
        ("pg_decl_typmod", 1, decl_typmod),
        ("pg_get_userbyid", 1, lambda _o: "postgres"),
        ("pg_table_is_visible", 1, lambda _o: 1),
        ("pg_type_is_visible", 1, lambda _o: 1),
        ("pg_function_is_visible", 1, lambda _o: 1),
        ("pg_encoding_to_char", 1, lambda _e: "UTF8"),
        ("pg_get_expr", 2, lambda e, _r: e),
        ("pg_get_expr", 3, lambda e, _r, _p: e),
        ("obj_description", 1, lambda _o: None),
        ("obj_description", 2, lambda _o, _c: None),
        ("col_description", 2, lambda _o, _c: None),
        ("shobj_description", 2, lambda _o, _c: None),
        ("has_table_privilege", 2, lambda _a, _b: 1),
        ("has_table_privilege", 3, lambda _a, _b, _c: 1),
        ("has_schema_privilege", 2, lambda _a, _b: 1),
        ("has_database_privilege", 2, lambda _a, _b: 1),
        ("pg_total_relation_size", 1, lambda _o: 0),
        ("pg_table_size", 1, lambda _o: 0),
        ("pg_relation_size", 1, lambda _o: 0),
        ("pg_database_size", 1, lambda _o: 0),
        ("pg_size_pretty", 1, lambda n: f"{int(n or 0) // 1024} kB"),
        (
            "quote_ident",
            1,
            lambda s: (
                s
                if re.fullmatch(r"[a-z_][a-z0-9_$]*", str(s))
                else '"' + str(s).replace('"', '""') + '"'
            ),
        ),
        ("current_schemas", 1, lambda _b: "{pg_catalog,public}" if _b else "{public}"),
        ("array_to_string", 2, lambda a, sep: None if a is None else sep.join(parse_array(a))),
        ("txid_current", 0, lambda: 1),
        ("pg_current_xact_id", 0, lambda: 1),
        ("pg_get_indexdef", 1, lambda o: host.index_definition(int(o)) if o is not None else None),
        (
            "pg_get_indexdef",
            3,
            lambda o, _c, _p: host.index_definition(int(o)) if o is not None else None,
        ),
        ("pg_get_constraintdef", 1, lambda _o: None),
        ("pg_get_constraintdef", 2, lambda _o, _p: None),
        ("pg_get_partkeydef", 1, lambda _o: None),
        ("pg_get_statisticsobjdef_columns", 1, lambda _o: None),
        ("pg_get_triggerdef", 2, lambda _o, _p: None),
        ("pg_get_ruledef", 2, lambda _o, _p: None),
        ("pg_partition_tree", 1, lambda _o: None),
        ("pg_tablespace_location", 1, lambda _o: ""),
        ("pg_get_function_result", 1, lambda _o: None),
        ("pg_get_function_arguments", 1, lambda _o: None),
        ("pg_relation_is_publishable", 1, lambda _o: 0),
        ("pg_get_viewdef", 1, lambda _o: None),
        ("pg_get_viewdef", 2, lambda _o, _p: None),
        ("pg_get_serial_sequence", 2, lambda t, c: f"public.{t}_{c}_seq"),
    ]
    for name, nargs, fn in fns:
        conn.create_function(name, nargs, fn)
    conn.create_function("pg_array", -1, lambda *items: format_array(items))
    conn.create_function(
        "pg_array_json", 1, lambda a: "[]" if a is None else json.dumps(parse_array(a))
    )
    conn.create_function(
        "pg_any_eq",
        2,
        lambda x, arr: None if x is None or arr is None else int(str(x) in parse_array(arr)),
    )
    conn.create_aggregate("pg_array_agg", 1, _ArrayAgg)  # type: ignore[arg-type]


def format_array(items: Any) -> str:
    """PostgreSQL's text form of a one-dimensional array."""
    out = []
    for v in items:
        if v is None:
            out.append("NULL")
            continue
        t = str(v)
        if t == "" or any(c in t for c in ',{}" \\') or t.upper() == "NULL":
            t = '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(t)
    return "{" + ",".join(out) + "}"


def parse_array(text: Any) -> list[str]:
    """The elements of a one-dimensional array's text form (quotes removed); a non-array: itself."""
    t = str(text).strip()
    if not (t.startswith("{") and t.endswith("}")):
        return [t]
    body = t[1:-1]
    if not body:
        return []
    items, cur, quoted, i = [], [], False, 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            cur.append(body[i + 1])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c == "," and not quoted:
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    items.append("".join(cur))
    return items


class _ArrayAgg:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def step(self, v: Any) -> None:
        self.items.append(v)

    def finalize(self) -> str:
        return format_array(self.items)
