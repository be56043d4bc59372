"""Redis's glob (util.c stringmatchlen) as a regular expression that cannot backtrack catastrophically.

Used by KEYS, SCAN/HSCAN/SSCAN/ZSCAN MATCH (case-sensitive) and CONFIG GET (nocase, as in Redis).
Supported like Redis: `*`, `?`, `[abc]`, `[^abc]`, ranges `[a-z]` (reversed ranges are swapped), `\\x`
escapes inside and outside brackets, an unterminated `[` closing at the end of the pattern, a trailing
lone backslash matching itself, an empty subject matching only the empty pattern (even `*` does not:
KEYS * and SCAN without MATCH do not match at all), and Redis's protection against abusive patterns (a
pattern with more than 1000 `*` before something else matches nothing). Compiled patterns are cached.

Theory of operation (why matching takes O(p * n) for a pattern of length p and a subject of length n)
--------------------------------------------------------------------------------------------------
Every token but `*` matches exactly one byte; the pattern is compiled token by token into the set of
bytes it matches (with nocase, Redis's tolower rules: a bracket's escaped members stay exact), so the
pattern is `S0 * S1 * ... * Sk` where each segment Si is a fixed-length run of byte sets. A subject
matches iff S0 matches its start, Sk its end, and S1 ... Sk-1 occur in order in between without
overlapping; and then they also occur at their leftmost places (moving a middle segment left only
lengthens the star after it). So each middle segment is searched once, leftmost, and never revisited:
`(?>.*?Si)`, an atomic group (Python 3.11), which the regex engine does not backtrack into. A naive
translation (`.*S1.*S2...`) backtracks through every split of the subject among the stars: 12 stars
against a 40-byte key took 26 s (issue 10); Redis's own recursive matcher bounds this by giving up on
longer matches. Each segment costs at most (n * its length) steps, the last one (`.*Sk`) too.
"""

from __future__ import annotations

import re
from functools import lru_cache

_STAR, _QUESTION, _OPEN, _CLOSE, _CARET, _DASH, _BACKSLASH = b"*?[]^-\\"
_MAX_STARS = 1000  # util.c: "if (nesting > 1000) return 0" (protection against abusive patterns)
_UPPER = range(0x41, 0x5B)


def _tolower(c: int) -> int:
    return c + 32 if 0x41 <= c <= 0x5A else c


def _tokens(pattern: bytes, nocase: bool) -> list[bytearray | None]:
    """The pattern as tokens: None for a run of stars, else the 256-entry membership mask of one byte."""
    out: list[bytearray | None] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == _STAR:
            while i + 1 < n and pattern[i + 1] == _STAR:
                i += 1
            out.append(None)
        elif c == _QUESTION:
            out.append(bytearray(b"\x01" * 256))
        elif c == _OPEN:
            i += 1
            negate = i < n and pattern[i] == _CARET
            if negate:
                i += 1
            mask = bytearray(256)
            while i < n and pattern[i] != _CLOSE:
                if pattern[i] == _BACKSLASH and i + 1 < n:
                    i += 1
                    mask[pattern[i]] = 1  # util.c compares an escaped member exactly, even nocase
                elif i + 2 < n and pattern[i + 1] == _DASH:
                    lo, hi = sorted((pattern[i], pattern[i + 2]))
                    if (
                        nocase
                    ):  # util.c: tolower(start) <= tolower(c) <= tolower(end), after the swap
                        lo, hi = _tolower(lo), _tolower(hi)
                        for b in range(lo, hi + 1):
                            if b not in _UPPER:
                                mask[b] = 1
                        for b in _UPPER:
                            if lo <= b + 32 <= hi:
                                mask[b] = 1
                    elif lo <= hi:
                        mask[lo : hi + 1] = b"\x01" * (hi - lo + 1)
                    i += 2
                else:
                    _set_literal(mask, pattern[i], nocase)
                i += 1
            if negate:
                mask = bytearray(1 - m for m in mask)
            out.append(mask)
            # i is at the closing "]", or past the end of an unterminated class
        else:
            if c == _BACKSLASH and i + 1 < n:
                i += 1
            mask = bytearray(256)
            _set_literal(mask, pattern[i], nocase)
            out.append(mask)
        i += 1
    return out


def _set_literal(mask: bytearray, c: int, nocase: bool) -> None:
    mask[c] = 1
    if nocase:
        mask[_tolower(c)] = 1
        if 0x61 <= c <= 0x7A:
            mask[c - 32] = 1


def _class(mask: bytearray) -> bytes:
    """A regex matching one byte in mask."""
    members = [b for b in range(256) if mask[b]]
    if len(members) == 256:
        return b"."
    if not members:
        return b"(?!)"
    if len(members) == 1:
        return b"\\x%02x" % members[0]
    parts = []
    start = prev = members[0]
    for b in [*members[1:], -2]:
        if b != prev + 1:
            parts.append(
                b"\\x%02x" % start if start == prev else b"\\x%02x-\\x%02x" % (start, prev)
            )
            start = b
        prev = b
    return b"[" + b"".join(parts) + b"]"


@lru_cache(maxsize=256)
def compile_glob(pattern: bytes, nocase: bool = False) -> re.Pattern[bytes]:
    """The pattern as a compiled regex; use its fullmatch (any thread: the result is immutable)."""
    tokens = _tokens(pattern, nocase)
    stars = [i for i, t in enumerate(tokens) if t is None]
    if len(stars) > _MAX_STARS and stars[_MAX_STARS] != len(tokens) - 1:
        return re.compile(b"(?!)")  # like util.c, whose recursion gives up at that depth
    segments: list[list[bytes]] = [[]]
    for token in tokens:
        if token is None:
            segments.append([])
        else:
            segments[-1].append(_class(token))
    joined = [b"".join(s) for s in segments]
    if len(joined) == 1:
        body = joined[0]
    else:
        middle = b"".join(b"(?>.*?" + s + b")" for s in joined[1:-1] if s)
        body = joined[0] + middle + b".*" + joined[-1]
    # Redis's matcher stops when the subject is exhausted: an empty subject matches only the empty
    # pattern, even "*" (KEYS * and SCAN without MATCH bypass matching, so they still see key "").
    prefix = b"(?=.)" if pattern else b""
    return re.compile(prefix + body, re.DOTALL)


def glob_match(pattern: bytes, subject: bytes, nocase: bool = False) -> bool:
    return compile_glob(pattern, nocase).fullmatch(subject) is not None
