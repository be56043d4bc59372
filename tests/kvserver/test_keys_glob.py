"""KEYS/SCAN glob against a line-by-line port of Redis's util.c stringmatchlen (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvserver.types.glob import glob_match


def stringmatchlen(p: bytes, s: bytes) -> bool:
    """Redis 7 util.c stringmatchlen (nocase=0), transcribed; indices instead of pointers."""
    pi, si = 0, 0
    plen, slen = len(p), len(s)
    while plen and slen:
        c = p[pi]
        if c == ord("*"):
            while plen > 1 and p[pi + 1] == ord("*"):
                pi += 1
                plen -= 1
            if plen == 1:
                return True
            while slen:
                if stringmatchlen(p[pi + 1 : pi + plen], s[si : si + slen]):
                    return True
                si += 1
                slen -= 1
            return False
        if c == ord("?"):
            si += 1
            slen -= 1
        elif c == ord("["):
            pi += 1
            plen -= 1
            negate = plen > 0 and p[pi] == ord("^")
            if negate:
                pi += 1
                plen -= 1
            match = False
            while True:
                if plen == 0:
                    pi -= 1  # unterminated class: the pattern ends here
                    plen += 1
                    break
                if p[pi] == ord("\\") and plen >= 2:
                    pi += 1
                    plen -= 1
                    if p[pi] == s[si]:
                        match = True
                elif p[pi] == ord("]"):
                    break
                elif plen >= 3 and p[pi + 1] == ord("-"):
                    start, end = p[pi], p[pi + 2]
                    if start > end:
                        start, end = end, start
                    pi += 2
                    plen -= 2
                    if start <= s[si] <= end:
                        match = True
                elif p[pi] == s[si]:
                    match = True
                pi += 1
                plen -= 1
            if negate:
                match = not match
            if not match:
                return False
            si += 1
            slen -= 1
        else:
            if c == ord("\\") and plen >= 2:
                pi += 1
                plen -= 1
            if p[pi] != s[si]:
                return False
            si += 1
            slen -= 1
        pi += 1
        plen -= 1
        if slen == 0:
            while plen and p[pi] == ord("*"):
                pi += 1
                plen -= 1
            break
    return plen == 0 and slen == 0


pattern_bytes = st.lists(st.sampled_from(list(b"ab*?[]^-\\")), max_size=8).map(bytes)
subject_bytes = st.lists(st.sampled_from(list(b"ab-]\\^*")), max_size=6).map(bytes)


@settings(max_examples=600, deadline=None)
@given(pattern=pattern_bytes, subject=subject_bytes)
def test_glob_agrees_with_redis_stringmatchlen(pattern: bytes, subject: bytes) -> None:
    assert glob_match(pattern, subject) == stringmatchlen(pattern, subject)


def test_reference_port_sanity() -> None:
    assert stringmatchlen(b"h[ae]llo", b"hello") and not stringmatchlen(b"h[^e]llo", b"hello")
    assert stringmatchlen(b"a*", b"a") and not stringmatchlen(b"*", b"")  # Redis quirk
