"""Whole-value operations shared by COPY, SORT, DUMP/RESTORE, OBJECT and MEMORY: copying a stored value
and describing it the way Redis 7.0 does (encodings, approximate memory).

Values are the Keyspace's plain objects: bytes (string), deque (list), dict (hash), set, SortedSet.
"""

from __future__ import annotations

import sys
from collections import deque
from typing import Any

from kvserver.types.numbers import INT64_MAX, INT64_MIN
from kvserver.types.zset import SortedSet

# Redis 7.0's defaults for the compact encodings (the names CONFIG GET reports).
ENCODING_LIMITS = {
    "hash-max-listpack-entries": 128,
    "hash-max-listpack-value": 64,
    "set-max-intset-entries": 512,
    "zset-max-listpack-entries": 128,
    "zset-max-listpack-value": 64,
}
EMBSTR_LIMIT = 44  # OBJ_ENCODING_EMBSTR_SIZE_LIMIT


def copy_value(value: Any) -> Any:
    """An independent copy (COPY): containers are new objects, members (immutable bytes) shared."""
    t = type(value)
    if t is bytes:
        return value
    if t is deque:
        return deque(value)
    if t is dict:
        return dict(value)
    if t is set:
        return set(value)
    if t is SortedSet:
        z = SortedSet()
        z.__setstate__(value.__getstate__())
        return z
    raise TypeError(f"cannot copy a {t.__name__}")


def _is_int(raw: bytes) -> bool:
    if not raw or len(raw) > 20:
        return False
    try:
        n = int(raw)
    except ValueError:
        return False
    return INT64_MIN <= n <= INT64_MAX and b"%d" % n == raw


def encoding(value: Any, limits: dict[str, int] | None = None) -> bytes:
    """OBJECT ENCODING as Redis 7.0 would report it for a value built fresh with these contents.

    Redis converts compact encodings one way (a hash that once outgrew listpack stays a hashtable after
    shrinking); we describe the current contents only.
    """
    lim = dict(ENCODING_LIMITS)
    if limits:
        lim.update(limits)
    t = type(value)
    if t is bytes:
        if _is_int(value):
            return b"int"
        return b"embstr" if len(value) <= EMBSTR_LIMIT else b"raw"
    if t is deque:
        return b"quicklist"  # Redis 7.0 lists are always quicklists (listpack lists came in 7.2)
    if t is dict:
        small = len(value) <= lim["hash-max-listpack-entries"] and all(
            len(k) <= lim["hash-max-listpack-value"] and len(v) <= lim["hash-max-listpack-value"]
            for k, v in value.items()
        )
        return b"listpack" if small else b"hashtable"
    if t is set:
        if len(value) <= lim["set-max-intset-entries"] and all(_is_int(m) for m in value):
            return b"intset"
        return b"hashtable"
    if t is SortedSet:
        small = len(value) <= lim["zset-max-listpack-entries"] and all(
            len(m) <= lim["zset-max-listpack-value"] for m, _ in value
        )
        return b"listpack" if small else b"skiplist"
    return b"unknown"


def memory_usage(key: bytes, value: Any, samples: int = 5) -> int:
    """MEMORY USAGE: bytes held by the key and its value in this process (Python object sizes).

    `samples` elements of a container are measured and the average extrapolated, as Redis does
    (0: all of them). The figures are CPython's, so they differ from Redis's (and are larger).
    """
    size = sys.getsizeof(key) + sys.getsizeof(value)
    t = type(value)
    if t is bytes:
        return size
    if t is dict:
        items: list[Any] = list(value.items())
    elif t is SortedSet:
        items = list(value)
    else:
        items = list(value)
    if not items:
        return size
    picked = items if samples == 0 or samples >= len(items) else items[:samples]
    per = 0
    for item in picked:
        if isinstance(item, tuple):
            per += sum(sys.getsizeof(x) for x in item)
        else:
            per += sys.getsizeof(item)
    if t is SortedSet:
        per += 64  # the (score, member) tuple in the ordered list and its slot
    return size + per * len(items) // len(picked)
