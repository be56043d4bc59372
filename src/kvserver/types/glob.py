"""Redis's glob (util.c stringmatchlen) compiled to a regular expression, for KEYS and SCAN MATCH.

Supported like Redis: `*`, `?`, `[abc]`, `[^abc]`, ranges `[a-z]` (reversed ranges are swapped),
`\\x` escapes inside and outside brackets, an unterminated `[` closing at the end of the pattern and a
trailing lone backslash matching itself. Compiled patterns are cached (bounded).
"""

from __future__ import annotations

import re
from functools import lru_cache


def _lit(c: int) -> bytes:
    return b"\\x%02x" % c


@lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> re.Pattern[bytes]:
    out: list[bytes] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == 0x2A:  # '*': consecutive stars are one
            while i + 1 < n and pattern[i + 1] == 0x2A:
                i += 1
            out.append(b".*")
        elif c == 0x3F:  # '?'
            out.append(b".")
        elif c == 0x5B:  # '['
            i += 1
            negate = i < n and pattern[i] == 0x5E
            if negate:
                i += 1
            members: list[bytes] = []
            while i < n and pattern[i] != 0x5D:
                if pattern[i] == 0x5C and i + 1 < n:
                    i += 1
                    members.append(_lit(pattern[i]))
                elif i + 2 < n and pattern[i + 1] == 0x2D:
                    lo, hi = sorted((pattern[i], pattern[i + 2]))
                    members.append(_lit(lo) + b"-" + _lit(hi))
                    i += 2
                else:
                    members.append(_lit(pattern[i]))
                i += 1
            if members:
                out.append(b"[" + (b"^" if negate else b"") + b"".join(members) + b"]")
            else:
                out.append(b"." if negate else b"(?!)")  # [^] matches any byte, [] none
        elif c == 0x5C and i + 1 < n:  # '\x': literal x
            i += 1
            out.append(_lit(pattern[i]))
        else:
            out.append(_lit(c))
        i += 1
    # Redis's matcher stops when the subject is exhausted: an empty subject matches only the empty
    # pattern, even "*" (KEYS * and SCAN without MATCH bypass matching, so they still see key "").
    prefix = b"(?=.)" if pattern else b""
    return re.compile(prefix + b"".join(out), re.DOTALL)


def glob_match(pattern: bytes, subject: bytes) -> bool:
    return compile_glob(pattern).fullmatch(subject) is not None
