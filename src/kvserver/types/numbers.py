"""Numbers stored as strings: Redis's strict parsing (string2ll, strtod) and INCRBYFLOAT's formatting.

Python's int() and float() are more lenient than Redis ("+1", " 1", "1_0", "nan" all parse), so every
argument a client sends as a number goes through these. Errors are CommandError with Redis's line.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import overload

from kvserver.replies import MUST_BE_POSITIVE, NOT_FLOAT, NOT_INTEGER, SYNTAX, CommandError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# strtod accepts a lot; Redis additionally refuses leading space and trailing garbage. Python's float()
# accepts '_' separators and surrounding spaces, which strtod does not: refuse them up front.
_FLOAT_BAD = re.compile(rb"[\s_]")


def parse_int(arg: bytes, error: str = NOT_INTEGER) -> int:
    """A signed 64-bit integer written exactly as Redis's string2ll accepts it."""
    try:
        value = int(arg)
    except ValueError:
        raise CommandError(error) from None
    # int() also takes '+', spaces, '_' and leading zeros, which string2ll refuses: only the
    # canonical spelling round-trips (and this is cheaper than a regular expression on the hot path).
    if value < INT64_MIN or value > INT64_MAX or b"%d" % value != arg:
        raise CommandError(error)
    return value


@overload
def optional_count(argv: list[bytes], default: int) -> int: ...
@overload
def optional_count(argv: list[bytes], default: None) -> int | None: ...
def optional_count(argv: list[bytes], default: int | None) -> int | None:
    """The optional COUNT of `CMD key [count]` (LPOP, RPOP, SPOP, ZPOPMIN, ZPOPMAX): `default` when absent;
    a syntax error for more arguments; Redis's "must be positive" error for a negative or non-integer one."""
    if len(argv) > 3:
        raise CommandError(SYNTAX)
    if len(argv) < 3:
        return default
    count = parse_int(argv[2], MUST_BE_POSITIVE)
    if count < 0:
        raise CommandError(MUST_BE_POSITIVE)
    return count


def parse_float(arg: bytes, error: str = NOT_FLOAT) -> float:
    """A double as strtod reads it (inf, -inf, 1e5 accepted); NaN and spaces refused."""
    if not arg or _FLOAT_BAD.search(arg) is not None:
        raise CommandError(error)
    try:
        value = float(arg)
    except ValueError:
        raise CommandError(error) from None
    if math.isnan(value):
        raise CommandError(error)
    return value


def format_float(value: float) -> bytes:
    """INCRBYFLOAT's human format: no exponent, no trailing zeros ('10.6', '5200', '0.00003').

    Python's repr is the shortest string that round-trips; Decimal spells it without an exponent.
    """
    if value == int(value) and abs(value) < 1e17:
        return b"%d" % int(value)
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.encode()


def parse_expire(arg: bytes, seconds: bool, absolute: bool, now_ms: int, command: str) -> int:
    """An absolute expiry in ms from EX/PX/EXAT/PXAT-style arguments (Redis's getExpireMilliseconds).

    Zero, negative and overflowing times are refused with "invalid expire time in '<command>' command".
    """
    value = parse_int(arg)
    invalid = f"ERR invalid expire time in '{command}' command"
    if value <= 0 or (seconds and value > INT64_MAX // 1000):
        raise CommandError(invalid)
    if seconds:
        value *= 1000
    if not absolute:
        value += now_ms
        if value > INT64_MAX:
            raise CommandError(invalid)
    return value


NUMKEYS_POSITIVE = "ERR numkeys should be greater than 0"
NUMKEYS_TOO_MANY = "ERR Number of keys can't be greater than number of args"


def parse_numkeys(argv: list[bytes], index: int, too_many: str = NUMKEYS_TOO_MANY) -> int:
    """The `numkeys` argument of LMPOP, ZMPOP (too_many=SYNTAX) and SINTERCARD: a positive integer, and
    no more keys than arguments after it (Redis's errors for each case)."""
    numkeys = parse_int(argv[index], NUMKEYS_POSITIVE)
    if numkeys <= 0:
        raise CommandError(NUMKEYS_POSITIVE)
    if numkeys > len(argv) - index - 1:
        raise CommandError(too_many)
    return numkeys


def parse_mpop_tail(argv: list[bytes], start: int, where: tuple[bytes, bytes]) -> tuple[bool, int]:
    """`LEFT|RIGHT [COUNT n]` (LMPOP) or `MIN|MAX [COUNT n]` (ZMPOP) from argv[start:]: (first?, count)."""
    if start >= len(argv):
        raise CommandError(SYNTAX)
    side = argv[start].upper()
    if side not in where:
        raise CommandError(SYNTAX)
    count = 1
    i = start + 1
    seen_count = False
    while i < len(argv):
        if argv[i].upper() == b"COUNT" and i + 1 < len(argv) and not seen_count:
            count = parse_int(argv[i + 1], "ERR count should be greater than 0")
            if count <= 0:
                raise CommandError("ERR count should be greater than 0")
            seen_count = True
            i += 2
        else:
            raise CommandError(SYNTAX)
    return side == where[0], count
