"""Stable fingerprints of code objects: equal for the same definition wherever and whenever it was compiled.

A fingerprint is the hex sha256 of everything in a code object that decides what it does, and nothing that
only says where it came from: no line numbers, no column positions, no file name. `co_code` on 3.11 is
already free of positions (and `co_code` returns the un-specialised bytecode, so a function that has run
hot fingerprints the same as a freshly compiled one). Nested code objects (inner functions, lambdas,
comprehensions) enter by their own fingerprint, so a change anywhere inside a function changes it.

The live function's `__code__` fingerprints the same as the same `def` compiled from the source it was
imported from: that is how the runtime checks that a patch was built against the code actually running.
"""

from __future__ import annotations

import hashlib
from types import CodeType
from typing import Any

__all__ = ["code_fingerprint"]


def _const_bytes(value: Any) -> bytes:
    """A canonical, type-tagged encoding of one constant (1, 1.0 and True must differ)."""
    if isinstance(value, CodeType):
        return b"code:" + code_fingerprint(value).encode()
    if isinstance(value, tuple):
        return b"tuple(" + b",".join(_const_bytes(v) for v in value) + b")"
    if isinstance(value, frozenset):
        # set iteration order depends on hashing: sort the encodings
        return b"frozenset(" + b",".join(sorted(_const_bytes(v) for v in value)) + b")"
    return f"{type(value).__name__}:{value!r}".encode()


def _names(names: tuple[str, ...]) -> bytes:
    return ",".join(names).encode()


def code_fingerprint(code: CodeType) -> str:
    """The fingerprint (64 hex digits) of `code`: ignores line numbers, positions and file names.

    Pure function of the code object; safe to call from any thread.
    """
    h = hashlib.sha256()
    parts = (
        code.co_code,
        code.co_exceptiontable,
        b"|".join(_const_bytes(c) for c in code.co_consts),
        _names(code.co_names),
        _names(code.co_varnames),
        _names(code.co_freevars),
        _names(code.co_cellvars),
        f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},{code.co_flags}".encode(),
        code.co_name.encode(),
        code.co_qualname.encode(),
    )
    for part in parts:
        # length-prefix every field so that no two different field lists hash alike
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()
