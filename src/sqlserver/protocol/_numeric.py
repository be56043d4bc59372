"""numeric as decimal.Decimal: PostgreSQL's text form and its binary NUMERIC format.

Binary format (numeric_send): int16 ndigits, int16 weight, uint16 sign, uint16 dscale, then ndigits
base-10000 digits (uint16 each, most significant first). The value is
sum(digit[i] * 10000 ** (weight - i)); dscale is the number of decimal digits shown after the point.
sign: 0x0000 positive, 0x4000 negative, 0xC000 NaN, 0xD000 +Infinity, 0xF000 -Infinity (PG 14+).
Leading and trailing zero base-10000 digits are not sent (as PostgreSQL strips them).
"""

from __future__ import annotations

import re
import struct
from decimal import Decimal
from typing import Any

from sqlserver.protocol._scalars import bad_binary, invalid_text, out_of_range

POS, NEG, NAN, PINF, NINF = 0x0000, 0x4000, 0xC000, 0xD000, 0xF000
_HEAD = struct.Struct("!hhHH")
# PostgreSQL's limits: NUMERIC_MAX_DISPLAY_SCALE is 1000 for typmod'd columns, but an unconstrained
# numeric holds up to 131072 digits before the point and 16383 after.
MAX_INT_DIGITS = 131072
MAX_DSCALE = 0x3FFF

_TEXT_RE = re.compile(
    rb"\s*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|nan|inf|infinity)\s*", re.I
)


def from_text(data: bytes) -> Decimal:
    if _TEXT_RE.fullmatch(data) is None:
        raise invalid_text("numeric", data)
    text = data.strip().decode("ascii")
    if text.lower() in ("+nan", "-nan"):
        raise invalid_text("numeric", data)  # PostgreSQL's NaN has no sign
    d = Decimal(text)
    _check_range(d, data)
    return d


def _check_range(d: Decimal, shown: object) -> None:
    if not d.is_finite() or not d:
        return
    exp = int(d.as_tuple().exponent)
    if d.adjusted() >= MAX_INT_DIGITS or -exp > MAX_DSCALE:
        raise out_of_range("numeric", shown)


def _as_decimal(v: Any) -> Decimal:
    if isinstance(v, Decimal):
        return v
    if isinstance(v, bool):
        return Decimal(int(v))
    if isinstance(v, int):
        return Decimal(v)
    if isinstance(v, float):
        return Decimal(repr(v)) if v == v and abs(v) != float("inf") else Decimal(v)
    if isinstance(v, str | bytes):
        return from_text(v.encode() if isinstance(v, str) else v)
    raise TypeError(f"cannot send {type(v).__name__} as numeric")


def to_text(v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode()
    d = _as_decimal(v)
    if d.is_nan():
        return b"NaN"
    if d.is_infinite():
        return b"-Infinity" if d < 0 else b"Infinity"
    if not d:
        d = abs(d)  # PostgreSQL has no negative zero
    return format(d, "f").encode()


def to_binary(v: Any) -> bytes:
    d = _as_decimal(v)
    if d.is_nan():
        return _HEAD.pack(0, 0, NAN, 0)
    if d.is_infinite():
        # dscale 32: what numeric_send writes for infinities (bits of their on-disk header)
        return _HEAD.pack(0, 0, NINF if d < 0 else PINF, 32)
    _check_range(d, d)
    sign, digits, exponent = d.as_tuple()
    exp = int(exponent)
    dscale = max(0, -exp)
    # Scale the coefficient so the decimal point falls on a base-10000 digit boundary.
    pad = -(-dscale // 4) * 4
    n = int("".join(map(str, digits)) or "0") * 10 ** (exp + pad)
    groups: list[int] = []
    while n:
        n, r = divmod(n, 10000)
        groups.append(r)
    groups.reverse()
    if not groups:
        return _HEAD.pack(0, 0, POS, dscale)
    weight = len(groups) - 1 - pad // 4
    while groups and groups[-1] == 0:
        groups.pop()
    body = struct.pack(f"!{len(groups)}H", *groups)
    return _HEAD.pack(len(groups), weight, NEG if sign else POS, dscale) + body


def from_binary(data: bytes) -> Decimal:
    if len(data) < 8:
        raise bad_binary("numeric", f"expected at least 8 bytes, got {len(data)}")
    ndigits, weight, sign, dscale = _HEAD.unpack_from(data)
    if ndigits < 0 or len(data) != 8 + 2 * ndigits:
        raise bad_binary("numeric", f"{ndigits} digits do not fit {len(data)} bytes")
    if sign == NAN:
        return Decimal("NaN")
    if sign in (PINF, NINF):
        return Decimal("-Infinity" if sign == NINF else "Infinity")
    if sign not in (POS, NEG):
        raise bad_binary("numeric", f"invalid sign 0x{sign:04x}")
    if dscale > MAX_DSCALE:
        raise bad_binary("numeric", f"invalid scale {dscale}")
    groups = struct.unpack_from(f"!{ndigits}H", data, 8)
    if any(g >= 10000 for g in groups):
        raise bad_binary("numeric", "a base-10000 digit is 10000 or more")
    coeff = "".join(f"{g:04d}" for g in groups).lstrip("0")
    exp = (weight - ndigits + 1) * 4
    # Show exactly dscale digits after the point: pad with zeros, or truncate digits beyond it
    # (as numeric_recv does; a well-formed sender never sends them).
    if exp > -dscale:
        coeff += "0" * (exp + dscale)
    elif exp < -dscale:
        cut = -dscale - exp
        coeff = coeff[:-cut] if cut < len(coeff) else ""
    digits = tuple(int(c) for c in coeff) or (0,)
    return Decimal((1 if sign == NEG and coeff.strip("0") else 0, digits, -dscale))
