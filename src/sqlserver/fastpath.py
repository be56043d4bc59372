"""Recognise the hot extended-query burst without building message objects.

libpq (pgbench -M prepared, psycopg with prepared statements) sends, for each execution of a
prepared statement, exactly: Bind (unnamed portal) [Describe portal ""] Execute ("" , 0 rows) Sync,
usually in one TCP segment. `parse_burst` recognises that burst when it is the whole of what the
session received and returns its parts; anything else (other messages, a partial message, named
portals, a row limit) returns None, and the session's general path (the codec's FrontendParser)
handles the bytes. So this file only ever decides "fast or not"; every reply is still built by
session.py, and a malformed burst simply falls back to the general path, which reports it.

Concurrency: pure function.
"""

from __future__ import annotations

import struct

_I32 = struct.Struct("!i")
_H = struct.Struct("!H")
_DESCRIBE_PORTAL = b"D\x00\x00\x00\x06P\x00"
_EXECUTE_ALL = b"E\x00\x00\x00\x09\x00\x00\x00\x00\x00"
_SYNC = b"S\x00\x00\x00\x04"
_TAIL_WITH_DESCRIBE = _DESCRIBE_PORTAL + _EXECUTE_ALL + _SYNC
_TAIL = _EXECUTE_ALL + _SYNC

Burst = tuple[str, tuple[int, ...], tuple[bytes | None, ...], tuple[int, ...], bool]


def parse_burst(data: bytes) -> Burst | None:
    """(statement, param formats, params, result formats, describe) of a B[D]ES burst, or None."""
    if len(data) < 20 or data[0] != 0x42 or data[5] != 0:  # not Bind, or a named portal
        return None
    end = 1 + _I32.unpack_from(data, 1)[0]
    tail = data[end:]
    if tail == _TAIL_WITH_DESCRIBE:
        describe = True
    elif tail == _TAIL:
        describe = False
    else:
        return None
    try:
        z = data.index(0, 6, end)
        name = data[6:z].decode()
        pos = z + 1
        (nf,) = _H.unpack_from(data, pos)
        pos += 2
        fmts = struct.unpack_from(f"!{nf}H", data, pos) if nf else ()
        pos += 2 * nf
        (np,) = _H.unpack_from(data, pos)
        pos += 2
        if nf > 1 and nf != np:
            return None  # a protocol violation: the general path reports it
        params: list[bytes | None] = []
        for _ in range(np):
            (n,) = _I32.unpack_from(data, pos)
            pos += 4
            if n < 0:
                params.append(None)
            else:
                params.append(data[pos : pos + n])
                pos += n
        (nr,) = _H.unpack_from(data, pos)
        pos += 2
        rfmts = struct.unpack_from(f"!{nr}H", data, pos) if nr else ()
        pos += 2 * nr
    except (ValueError, struct.error, UnicodeDecodeError):
        return None
    if pos != end:
        return None
    return name, fmts, tuple(params), rfmts, describe
