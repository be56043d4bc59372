"""The C fast path (_pgfast.c) from the session's side: which statements it may serve, and when.

Theory of operation
-------------------
The session serves every statement in Python first. After its Python fast path (Session._fast) has
answered a prepared statement once, `plan()` decides whether the C fast path can answer that statement
the same way byte for byte, and if so `register()`s it with the session's `Native` (which prepares its
own SQLite statement on the session's SQLite handle). From then on the exact libpq burst for that
statement (Bind/[Describe]/Execute/Sync, fastpath.py) is answered in C without the GIL:
`Native.serve(fd)` in thread-per-connection's request loop (recv, run, send: one GIL release per
transaction), `Native.run(data)` in Session.receive for bytes already read (the pool).

What qualifies (`plan`): a SELECT of one SQLite statement, read-only (so a burst the C code declines
after stepping can run again in Python), outside any transaction block, with text-format parameters
that the general path decodes with `_dec_int` or `_dec_text` (binary-format integers of their type's
size too), and result columns encoded in text format by `_text_int` or `_text_any`. Everything else, and any value the C code does not expect, stays in Python.

Live patching: `GUARDED` lists the Python functions the C code stands in for. Their code objects at
import time are the guards (`_pgfast.set_guards`); the C code compares each function's current
`__code__` with its guard before serving anything, so once a patch replaced one of them (a global or a
local patch: both replace `__code__`), the C path stops and the patched Python runs -- at the
session's next request, as for any other patch. A revert that restores the original code objects
turns it back on. Nothing else in the request loop changes: quiescence points, transactions and the
write lock stay in Python, and the C path returns to the Python loop after every request.

The `sqlite3*` handle is read from CPython's `sqlite3.Connection` object (see _pgfast.c), only for the
exact type `sqlite3.Connection`, and checked: SQLite must report, through that pointer, the database
file PRAGMA database_list reports. Set SQLSERVER_NATIVE=0 to turn the C path off.

Concurrency: `Native` objects belong to one session (its thread); the guards are set once at import.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from types import FunctionType, ModuleType
from typing import TYPE_CHECKING, Any

from sqlserver import executor as _executor
from sqlserver import fastpath as _fastpath
from sqlserver import prepared as _prepared
from sqlserver import results as res
from sqlserver import statement as k
from sqlserver.protocol import backend as _backend

if TYPE_CHECKING:
    from sqlserver.prepared import Prepared

_pgfast: ModuleType | None
try:  # built from src/sqlserver/_pgfast.c when a C compiler was there at install time
    from sqlserver import _pgfast
except ImportError:  # not built: Python serves everything
    _pgfast = None

_P_INT, _P_TEXT = 1, 2
_E_INT, _E_ANY = 1, 2
_PARAM_KINDS: dict[Any, int] = {res._dec_int: _P_INT, res._dec_text: _P_TEXT}
# binary-format integer parameters: the decoder of each size (struct's big-endian signed integers)
_BINARY_SIZES: dict[Any, int] = {
    res.BINARY_DECODERS[res.INT2]: 2,
    res.BINARY_DECODERS[res.INT4]: 4,
    res.BINARY_DECODERS[res.INT8]: 8,
}
_ENCODER_KINDS: dict[Any, int] = {res._text_int: _E_INT, res._text_any: _E_ANY}


def _guarded() -> list[Any]:
    """The functions the C path stands in for (Session's are added by session.py, which imports this)."""
    return [
        _fastpath.parse_burst,
        _prepared.Prepared.decode,
        _prepared.Prepared.describe,
        _prepared.Prepared.complete,
        _executor.Executor.run,
        _executor.Executor.release_after_autocommit,
        res._dec_int,
        res._dec_text,
        res._text_int,
        res._text_any,
        res.decoder,
        res.decode_params,
        *_BINARY_SIZES,
        res.encoder,
        _backend.data_row,
        _backend.ready_for_query,
        plan,  # which statements the C code takes: a patch of the rule applies to planned ones too
        register,
    ]


def _load() -> bool:
    if _pgfast is None or os.environ.get("SQLSERVER_NATIVE", "1") == "0":
        return False
    if not (3, 8) <= sys.version_info[:2] <= (3, 13) or sys.implementation.name != "cpython":
        return False  # the Connection layout _pgfast.c relies on is checked for these versions
    import _sqlite3

    path = getattr(_sqlite3, "__file__", None)
    return bool(path) and bool(_pgfast.load(str(path)))


AVAILABLE = _load()


def arm(extra: list[Any]) -> None:
    """Set the guards: GUARDED functions plus `extra` (the session's), with their current code."""
    if not AVAILABLE or _pgfast is None:
        return
    funcs = _guarded() + extra
    _pgfast.set_guards([(f, f.__code__) for f in funcs if isinstance(f, FunctionType)])


def guards_hold() -> bool:
    """Whether no guarded function has been replaced by a patch (False when the C path is absent)."""
    return AVAILABLE and _pgfast is not None and bool(_pgfast.guards_hold())


def open_native(conn: sqlite3.Connection) -> Any | None:
    """A Native for this session's SQLite connection, or None (not built, or a handle it cannot trust)."""
    if not AVAILABLE or _pgfast is None or type(conn) is not sqlite3.Connection:
        return None
    try:
        native = _pgfast.Native(conn)
        main = [row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"]
    except (sqlite3.Error, RuntimeError):
        return None
    if not main or not main[0] or native.filename() != main[0]:
        native.close()
        return None  # an in-memory database, or not the handle we think: stay in Python
    return native


def plan(p: Prepared, in_block: bool) -> tuple[bytes, bytes, bytes, bytes, bytes] | None:
    """(text parameter kinds, binary parameter sizes, encoder kinds, RowDescription, tag) if the C path
    may serve `p`, else None."""
    st = p.stmt
    if in_block or st.kind != k.SELECT or st.writes or len(st.sql) != 1 or p.fast is not True:
        return None
    if not p.columns or len(p.param_oids) != st.nparams:
        return None
    pk = bytes(_PARAM_KINDS.get(res.decoder(o, False), 0) for o in p.param_oids)
    if 0 in pk:
        return None
    bk = bytes(_BINARY_SIZES.get(res.decoder(o, True), 0) for o in p.param_oids)
    desc, encs = p.describe(())
    ek = bytes(_ENCODER_KINDS.get(e, 0) for e in encs)
    if 0 in ek:
        return None
    return pk, bk, ek, desc, st.tag.encode()


def register(native: Any, p: Prepared, in_block: bool) -> bool:
    """Hand `p` to the C path when it qualifies (see plan); True when registered."""
    planned = plan(p, in_block)
    if planned is None:
        return False
    pk, bk, ek, desc, tag = planned
    try:
        return bool(native.register(p.name.encode(), p.stmt.sql[0].encode(), pk, bk, ek, desc, tag))
    except (UnicodeEncodeError, ValueError):
        return False
