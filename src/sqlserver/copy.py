"""COPY ... FROM STDIN and COPY ... TO STDOUT in PostgreSQL's text and csv formats.

parse_copy turns the statement into a CopySpec; CopyIn collects CopyData chunks into rows (a row may
span chunks) and inserts them in batches through the session's connection; format_rows writes rows
for COPY TO. Binary COPY is refused with 0A000.

Concurrency: a CopyIn belongs to one session and is used by that session's thread only.
"""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlserver.protocol.errors import FEATURE_NOT_SUPPORTED, SYNTAX_ERROR, PgError
from sqlserver.statement import COPY_FROM, COPY_TO, CopySpec, Statement

BAD_COPY_FILE_FORMAT = "22P04"  # not in the codec's SQLSTATE table (yet): asked for in the report
BATCH_ROWS = 1000  # rows per executemany: bounded memory whatever the size of the COPY

_COPY = re.compile(
    r"^\s*copy\s+(?:(?P<table>[\w.\"]+)\s*(?:\((?P<cols>[^)]*)\))?|\((?P<query>.*)\))\s+"
    r"(?P<dir>from|to)\s+(?P<target>stdin|stdout)\b\s*(?P<opts>.*?)\s*$",
    re.IGNORECASE | re.DOTALL,
)


def _ident(name: str) -> str:
    name = name.strip()
    return name[1:-1] if name.startswith('"') else name.lower()


def _option_value(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] == "'":
        return v[1:-1].replace("''", "'")
    return v


def parse_copy(text: str, translate_query: Callable[[str], Statement]) -> Statement:
    """The Statement for a COPY; raises PgError for COPY to or from a file or in binary."""
    m = _COPY.match(text)
    if m is None:
        raise PgError(
            FEATURE_NOT_SUPPORTED,
            "sqlserver supports COPY only FROM STDIN or TO STDOUT (psql's \\copy uses those)",
            hint="Use psql's \\copy to read or write a file on the client.",
        )
    opts = m["opts"]
    if opts.lower().startswith("with"):
        opts = opts[4:].strip()
    fmt, delim, null, header, quote = "text", None, None, False, '"'
    if opts.startswith("("):
        items = [o.strip() for o in re.split(r",(?=(?:[^']*'[^']*')*[^']*$)", opts.strip("() "))]
        pairs = [([*i.split(None, 1), ""])[:2] for i in items if i]
    else:
        words = re.findall(r"'(?:[^']|'')*'|\S+", opts)
        pairs, i = [], 0
        while i < len(words):
            w = words[i].lower()
            if w in (
                "delimiter",
                "null",
                "quote",
                "escape",
                "encoding",
                "force_not_null",
                "force_null",
            ) and i + 1 < len(words):
                if words[i + 1].lower() == "as" and i + 2 < len(words):
                    i += 1
                pairs.append([w, words[i + 1]])
                i += 2
            else:
                pairs.append([w, "true"])
                i += 1
    for name, value in pairs:
        name, value = name.lower(), _option_value(value)
        if name == "format" or name in ("csv", "binary", "text"):
            fmt = value.lower() if name == "format" else name
        elif name == "delimiter":
            delim = value
        elif name == "null":
            null = value
        elif name == "header":
            header = value.lower() not in ("false", "off", "0")
        elif name == "quote":
            quote = value
        elif name in ("freeze", "encoding", "escape", "oids"):
            pass  # FREEZE is a PostgreSQL storage hint; UTF8 is the only encoding
        else:
            raise PgError(SYNTAX_ERROR, f"COPY option {name!r} is not recognized by sqlserver")
    if fmt == "binary":
        raise PgError(
            FEATURE_NOT_SUPPORTED,
            "COPY in binary format is not supported by sqlserver; use text or csv",
        )
    csv_mode = fmt == "csv"
    spec_kw: dict[str, Any] = {
        "csv": csv_mode,
        "delimiter": delim if delim is not None else ("," if csv_mode else "\t"),
        "null": null if null is not None else ("" if csv_mode else "\\N"),
        "header": header,
        "quote": quote,
    }
    cols = tuple(_ident(c) for c in m["cols"].split(",")) if m["cols"] else ()
    if m["query"] is not None:
        if m["dir"].lower() != "to":
            raise PgError(SYNTAX_ERROR, "COPY (query) works only TO STDOUT")
        q = translate_query(m["query"])
        spec = CopySpec(None, (), q.sql[-1], **spec_kw)
        return Statement(COPY_TO, text, (), "COPY", 0, False, (spec,), q.ast)
    table = _ident(m["table"].split(".")[-1])
    spec = CopySpec(table, cols, None, **spec_kw)
    if m["dir"].lower() == "from":
        return Statement(COPY_FROM, text, (), "COPY", 0, True, (spec,))
    return Statement(COPY_TO, text, (), "COPY", 0, False, (spec,))


_UNESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape_match(m: re.Match[str]) -> str:
    s = m.group(1)
    if s[0] == "x" and len(s) > 1:
        return chr(int(s[1:], 16))
    if s[0] in "01234567":
        return chr(int(s, 8))
    return _ESCAPES.get(s, s)


class CopyIn:
    """Rows of one COPY FROM STDIN in progress, inserted every BATCH_ROWS rows."""

    def __init__(self, spec: CopySpec, conn: sqlite3.Connection, columns: Sequence[str]) -> None:
        self.spec = spec
        self.count = 0
        self._conn = conn
        self._ncols = len(columns)
        names = ", ".join(f'"{c}"' for c in columns)
        marks = ", ".join("?" * len(columns))
        self._sql = f'INSERT INTO "{spec.table}" ({names}) VALUES ({marks})'
        self._partial = b""
        self._rows: list[tuple[Any, ...]] = []
        self._skip_header = spec.header
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        data = self._partial + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._partial = data
            return
        self._partial = data[cut + 1 :]
        self._lines(data[:cut].decode("utf-8").split("\n"))

    def finish(self) -> int:
        """Insert what is left (a last line may lack its newline); returns the row count."""
        if self._partial and not self._done:
            self._lines([self._partial.decode("utf-8")])
        self._partial = b""
        self._flush()
        return self.count

    def _lines(self, lines: list[str]) -> None:
        spec = self.spec
        if spec.csv:
            parsed: Iterable[list[str]] = csv.reader(
                io.StringIO("\n".join(lines)), delimiter=spec.delimiter, quotechar=spec.quote
            )
        else:
            parsed = (ln.split(spec.delimiter) for ln in lines)
        null = spec.null
        for fields in parsed:
            if self._done:
                break
            if fields and fields[0] == "\\." and len(fields) == 1:
                self._done = True  # the end-of-data marker of old clients
                break
            if self._skip_header:
                self._skip_header = False
                continue
            if len(fields) != self._ncols:
                raise PgError(
                    BAD_COPY_FILE_FORMAT,
                    f"COPY {spec.table}: a row has {len(fields)} columns, expected {self._ncols}",
                    detail=f"row {self.count + len(self._rows) + 1}",
                )
            if spec.csv:
                row = tuple(None if f == null else f for f in fields)
            else:
                row = tuple(
                    None if f == null else (_UNESCAPE.sub(_unescape_match, f) if "\\" in f else f)
                    for f in fields
                )
            self._rows.append(row)
            if len(self._rows) >= BATCH_ROWS:
                self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._conn.executemany(self._sql, self._rows)
            self.count += len(self._rows)
            self._rows = []


_TEXT_ESCAPE = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def format_row(values: Sequence[str | None], spec: CopySpec) -> bytes:
    """One COPY TO line from the text forms of a row's values (None = NULL)."""
    if spec.csv:
        out = io.StringIO()
        csv.writer(
            out, delimiter=spec.delimiter, quotechar=spec.quote, lineterminator="\n"
        ).writerow(["" if v is None else v for v in values])
        return out.getvalue().encode()
    parts = [spec.null if v is None else v.translate(_TEXT_ESCAPE) for v in values]
    return (spec.delimiter.join(parts) + "\n").encode()


def format_header(names: Sequence[str], spec: CopySpec) -> bytes:
    return format_row(list(names), spec)
