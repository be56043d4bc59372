"""A session's prepared statements and portals (extended query protocol objects).

Concurrency: owned by one session, used by its thread only.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlserver import infer
from sqlserver import results as res
from sqlserver import statement as k
from sqlserver.protocol import backend as be
from sqlserver.protocol import messages as m


class Prepared:
    """A parsed statement: its translation, its types, and its encoded descriptions."""

    __slots__ = (
        "_decoders",
        "_tags",
        "columns",
        "desc_cache",
        "fast",
        "generation",
        "name",
        "param_oids",
        "stmt",
        "text",
    )

    def __init__(
        self,
        name: str,
        text: str,
        stmt: k.Statement,
        param_oids: tuple[int, ...],
        columns: list[infer.Column] | None,
        generation: int,
    ) -> None:
        self.name = name
        self.text = text
        self.stmt = stmt
        self.param_oids = param_oids
        self.columns = columns  # None: not a row-returning statement
        self.generation = generation
        self.desc_cache: dict[tuple[int, ...], tuple[bytes, tuple[Any, ...]]] = {}
        self._decoders = tuple(res.decoder(o, False) for o in param_oids)  # all-text Bind
        self._tags: dict[int, bytes] = {}  # row count -> CommandComplete bytes
        # fast path (fastpath.py): None = never; False = only without Describe (types unknown)
        self.fast: bool | None = None
        if stmt.kind in (k.SELECT, k.DML) and stmt.sql:
            self.fast = not columns or all(c.oid for c in columns)
        elif stmt.kind in (k.BEGIN, k.COMMIT, k.ROLLBACK):
            self.fast = True  # pgbench -M prepared prepares BEGIN and END too

    def decode(self, raw: tuple[bytes | None, ...], formats: tuple[int, ...]) -> Any:
        """Bind's parameters as SQLite values (PgError 22P02/22P03 for a malformed one)."""
        if not any(formats):
            try:
                return [None if r is None else d(r) for d, r in zip(self._decoders, raw)]  # noqa: B905
            except Exception:
                pass  # decode_params says which parameter is malformed
        return res.decode_params(raw, self.param_oids, formats)

    def complete(self, n: int) -> bytes:
        """CommandComplete for n rows ("SELECT n", "INSERT 0 n", "UPDATE n"...)."""
        out = self._tags.get(n)
        if out is None:
            tag = self.stmt.tag
            out = be.command_complete(f"INSERT 0 {n}" if tag == "INSERT" else f"{tag} {n}")
            if len(self._tags) < 64:
                self._tags[n] = out
        return out

    def describe(self, formats: tuple[int, ...]) -> tuple[bytes, tuple[Any, ...]]:
        """(RowDescription bytes, per-column encoders) for these result formats; cached."""
        hit = self.desc_cache.get(formats)
        if hit is not None:
            return hit
        cols = self.columns or []
        n = len(cols)
        fmts = formats * n if len(formats) == 1 else (formats or (0,) * n)
        fields = []
        encs = []
        for c, f in zip(cols, fmts, strict=False):
            oid = c.oid or res.TEXT
            fields.append(m.FieldDescription(c.name, 0, 0, oid, res.type_size(oid), c.typmod, f))
            encs.append(res.encoder(oid, bool(f), c.typmod))
        out = (be.row_description(fields), tuple(encs))
        if len(self.desc_cache) < 8:
            self.desc_cache[formats] = out
        return out


class Portal:
    __slots__ = ("cursor", "done", "formats", "params", "pending", "prepared", "rows_sent")

    def __init__(self, prepared: Prepared, params: list[Any], formats: tuple[int, ...]) -> None:
        self.prepared = prepared
        self.params = params
        self.formats = formats
        self.cursor: sqlite3.Cursor | None = None
        self.pending: list[Any] = []  # rows fetched but not sent yet
        self.done = False
        self.rows_sent = 0
