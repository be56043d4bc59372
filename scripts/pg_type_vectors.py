#!/usr/bin/env python3
"""Record how a real PostgreSQL 15 writes values of each type, for tests/sqlserver/test_types_pg15.py.

For every (input literal, type) below, asks the server for the value's text output and its binary
form (the type's typsend function), and writes them with the type OID to
tests/sqlserver/pg15_type_vectors.json. The test then holds sqlserver.protocol.types to PostgreSQL's
own answers: decoding PostgreSQL's input literal and re-encoding it must give PostgreSQL's text
output, and the binary form must decode to the same value and re-encode to the same bytes.

Run against a throwaway server (as user postgres; TimeZone is forced to UTC):
    /usr/lib/postgresql/15/bin/initdb -D /tmp/pg/data -A trust -U postgres
    /usr/lib/postgresql/15/bin/pg_ctl -D /tmp/pg/data -o "-p 55931 -k /tmp/pg" start
    python3 scripts/pg_type_vectors.py --host /tmp/pg --port 55931
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "sqlserver" / "pg15_type_vectors.json"

VECTORS: list[tuple[str, list[str]]] = [
    ("bool", ["true", "false", " yes ", "of", "1", "T"]),
    ("int2", ["0", "-32768", "32767", " +12 "]),
    ("int4", ["0", "-2147483648", "2147483647", "42", "  -7"]),
    ("int8", ["-9223372036854775808", "9223372036854775807", "0"]),
    ("oid", ["0", "4294967295", "1259"]),
    ("float4", ["0", "-0", "1.5", "0.1", "1e6", "100000", "3.4028235e38", "1e-45", "NaN",
                "Infinity", "-Infinity", "123456.7", "1.17549435e-38", "-inf", "  2.5e-3 "]),
    ("float8", ["0", "-0", "0.1", "1e15", "1e14", "123456789012345680", "1e-5", "0.0001", "nan",
                "Infinity", "-infinity", "1.7976931348623157e308", "5e-324", "2.5", "100",
                "1234.5678", "1e16", "-123.456e-7", "0.3"]),
    ("numeric", ["0", "0.00", "1.5", "-1.50", "123456789.0123456789", "0.0001", "10000", "1e20",
                 "NaN", "Infinity", "-Infinity", "-0.000000001", "99999999", "1.0000", "1e-3",
                 "12345678901234567890.5", "-0", ".5", "5.", "  7  "]),
    ("text", ["", "hello", "héllo ✓", 'a"b\\c', "line\nbreak"]),
    ("varchar", ["abc", ""]),
    ("bpchar", ["ab  ", "x"]),
    ("name", ["pg_class", "Mixed Case"]),
    ("bytea", ["\\x00ff", "", "\\x41 42", "a\\000b", "\\\\", "plain", "\\x"]),
    ("date", ["2000-01-01", "1999-12-31", "0001-01-01", "9999-12-31", "infinity", "-infinity",
              "2024-02-29", "2024-1-5", "epoch"]),
    ("time", ["00:00", "23:59:59.999999", "12:34:56.5", "1:02:03"]),
    ("timestamp", ["2000-01-01 00:00", "2024-02-29 12:34:56.123456", "1970-01-01", "infinity",
                   "-infinity", "0001-01-01 00:00", "1999-12-31 23:59:59.5", "2024-01-01T10:00:00",
                   "2024-01-01 10:00:00+05", "2024-01-01 10:00:00.1234564"]),
    ("timestamptz", ["2024-01-01 10:00+02", "infinity", "-infinity", "2000-01-01 00:00:00.000001+00",
                     "2024-06-30 23:59:59Z", "2024-01-01 10:00", "1999-12-31 23:00:00-05:30",
                     "2024-01-01 10:00:00 UTC"]),
    ("uuid", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{A0EEBC99-9C0B4EF8-BB6D-6BB9BD380A11}",
              "a0eebc999c0b4ef8bb6d6bb9bd380a11"]),
    ("json", ['{"a": [1, 2.5, null]}', "[]", ' "s" ']),
    ("jsonb", ['{"b": 1, "a": [true]}', "[1,2]", "null"]),
    ("int2vector", ["1 2 3", ""]),
    ("oidvector", ["23 25", "0"]),
    ("int4[]", ["{1,NULL,3}", "{}", "{{1,2},{3,4}}", " { 5 , 6 } ", "[0:1]={7,8}"]),
    ("int8[]", ["{9223372036854775807}"]),
    ("text[]", ['{"a b","",NULL,"NULL","q\\"\\\\",x}', "{}", '{{a,b},{"c d",NULL}}', "{ x y ,z}"]),
    ("varchar[]", ["{a,b}"]),
    ("name[]", ["{a,b}"]),
    ("bool[]", ["{t,f,NULL}"]),
    ("float8[]", ["{1.5,NaN,-Infinity,1e100}"]),
    ("float4[]", ["{0.1}"]),
    ("numeric[]", ["{1.50,NaN,-3}"]),
    ("date[]", ["{2024-01-01,infinity}"]),
    ("timestamp[]", ['{"2024-01-01 10:00:00"}']),
    ("uuid[]", ["{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"]),
    ("oid[]", ["{1,2}"]),
    ("bytea[]", ['{"\\\\x00ff"}']),
    ("char", ["a", "r"]),
]  # fmt: skip


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", default="5432")
    ap.add_argument("--user", default="postgres")
    args = ap.parse_args()
    selects = []
    cases = []
    for typ, literals in VECTORS:
        sql_type = '"char"' if typ == "char" else typ
        for literal in literals:
            value = f"({_quote(literal)}::{sql_type})"
            # typsend of the type, looked up by the server itself so no name is guessed here.
            out_fn, send_fn = _functions(args, sql_type)
            # The type's output function (what the wire carries), not a cast to text: bool::text
            # is 'true' where boolout writes 't'.
            selects.append(
                f"select {len(cases)}, pg_catalog.{out_fn}({value})::text, "
                f"'{sql_type}'::regtype::oid, encode(pg_catalog.{send_fn}({value}), 'hex')"
            )
            cases.append((typ, literal))
    rows = _psql(args, " union all ".join(selects))
    out = []
    for row in rows:
        index, text, oid, hexdata = row.split("\x1f")
        typ, literal = cases[int(index)]
        out.append(
            {"type": typ, "oid": int(oid), "input": literal, "text": text, "binary": hexdata}
        )
    out.sort(key=lambda r: (r["type"], r["input"]))
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(out)} vectors to {OUT}")
    return 0


_FUNCTIONS: dict[str, tuple[str, str]] = {}


def _functions(args: argparse.Namespace, sql_type: str) -> tuple[str, str]:
    """(typoutput, typsend) of a type, as the server names them."""
    if not _FUNCTIONS:
        query = "select oid::regtype::text, typoutput::text, typsend::text from pg_type"
        for row in _psql(args, query):
            name, out_fn, send_fn = row.split("\x1f")
            _FUNCTIONS[name] = (out_fn, send_fn)
    canonical = _psql(args, f"select '{sql_type}'::regtype::text")[0]
    return _FUNCTIONS[canonical]


def _psql(args: argparse.Namespace, query: str) -> list[str]:
    cmd = ["psql", "-X", "-h", args.host, "-p", str(args.port), "-U", args.user, "-At"]
    cmd += ["-F", "\x1f", "-R", "\x1e", "-v", "ON_ERROR_STOP=1", "-c", query]
    # TimeZone UTC as the SQL server reports it; extra_float_digits 1 is PostgreSQL's default.
    env = dict(os.environ, PGOPTIONS="-c timezone=UTC -c extra_float_digits=1")
    result = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return [r for r in result.stdout.rstrip("\n").split("\x1e") if r]


if __name__ == "__main__":
    raise SystemExit(main())
