"""Bit commands on string values (Redis 7.0 bitops.c): SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP,
BITFIELD, BITFIELD_RO.

Bit 0 is the most significant bit of byte 0, as in Redis. Strings are immutable bytes, so a write builds
a new value: SETBIT and BITFIELD are O(length of the string) per call where Redis is O(1) (documented).
Counting and searching convert the byte range to one Python int (C speed) instead of looping over bits.
Writes past the end grow the string with zero bytes, up to proto-max-bulk-len (512 MiB by default).

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvserver.commands.table import Command, command
from kvserver.replies import SYNTAX, CommandError, Reply
from kvserver.types.numbers import parse_int

if TYPE_CHECKING:
    from kvserver.context import CommandContext

BAD_OFFSET = "ERR bit offset is not an integer or out of range"
BAD_BIT = "ERR bit is not an integer or out of range"
BAD_TYPE = "ERR Invalid bitfield type. Use something like i16 u8. Note that u64 is not supported but i64 is."
MAX_STRING = 512 * 1024 * 1024


def _string(ctx: CommandContext, key: bytes) -> bytes | None:
    value: bytes | None = ctx.db.lookup_typed(key, ctx.now_ms, bytes)
    return value


def _max_bits(ctx: CommandContext) -> int:
    config = getattr(ctx.server, "config", None)
    return int(getattr(config, "proto_max_bulk_len", MAX_STRING)) * 8


def _offset(ctx: CommandContext, arg: bytes, bits: int = 1, hashed: bool = False) -> int:
    if hashed:
        arg = arg[1:]
    offset = parse_int(arg, BAD_OFFSET)
    if hashed:
        offset *= bits
    if offset < 0 or offset + bits > _max_bits(ctx):
        raise CommandError(BAD_OFFSET)
    return offset


def _save(ctx: CommandContext, key: bytes, old: bytes | None, new: bytes) -> None:
    if old is None:
        ctx.db.store(key, new)
    else:
        ctx.db.replace(key, new)


def setbit_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    offset = _offset(ctx, argv[2])
    if argv[3] not in (b"0", b"1"):
        raise CommandError(BAD_BIT)
    on = argv[3] == b"1"
    old = _string(ctx, argv[1])
    buf = bytearray(old or b"")
    index = offset >> 3
    if index >= len(buf):
        buf.extend(bytes(index + 1 - len(buf)))
    mask = 0x80 >> (offset & 7)
    previous = 1 if buf[index] & mask else 0
    if on:
        buf[index] |= mask
    else:
        buf[index] &= ~mask & 0xFF
    new = bytes(buf)
    if new == old:
        ctx.no_propagation()  # nothing changed: not a change for the AOF, the dirty count or WATCH
    else:
        _save(ctx, argv[1], old, new)
    return previous


def getbit_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    offset = _offset(ctx, argv[2])
    value = _string(ctx, argv[1])
    index = offset >> 3
    if value is None or index >= len(value):
        return 0
    return 1 if value[index] & (0x80 >> (offset & 7)) else 0


def _range(
    argv: list[bytes], first: int, total_bytes: int, bitcount: bool = False
) -> tuple[int, int, bool] | None:
    """Redis's start/end [BYTE|BIT] normalisation: (first bit, last bit, end given) or None if empty."""
    start, end = 0, total_bytes * 8 - 1
    end_given = False
    n = len(argv)
    if n > first:
        start = parse_int(argv[first])
        is_bit = False
        if n > first + 1:
            end = parse_int(argv[first + 1])
            end_given = True
            if n > first + 2:
                unit = argv[first + 2].upper()
                if unit == b"BIT":
                    is_bit = True
                elif unit != b"BYTE":
                    raise CommandError(SYNTAX)
        else:
            end = -1
        total = total_bytes * 8 if is_bit else total_bytes
        if bitcount and start < 0 and end < 0 and start > end:
            return None  # Redis 7.0.15's BITCOUNT (not BITPOS): an inverted negative range is empty
        if start < 0:
            start += total
        if end < 0:
            end += total
        start = max(start, 0)
        end = max(end, 0)
        end = min(end, total - 1)
        if start > end or total == 0:
            return None
        if not is_bit:
            start, end = start * 8, end * 8 + 7
    elif total_bytes == 0:
        return None
    return start, end, end_given


def _bits(value: bytes, first: int, last: int) -> tuple[int, int]:
    """The bits first..last of value as an int (first bit most significant) and their count."""
    chunk = value[first >> 3 : (last >> 3) + 1]
    x = int.from_bytes(chunk, "big")
    width = last - first + 1
    x >>= (len(chunk) * 8) - (first & 7) - width
    return x & ((1 << width) - 1), width


def bitcount_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    value = _string(ctx, argv[1])
    if len(argv) == 3 or len(argv) > 5:
        raise CommandError(SYNTAX)
    if value is None:
        if len(argv) > 2:
            parse_int(argv[2])
            parse_int(argv[3])
        return 0
    window = _range(argv, 2, len(value), bitcount=True)
    if window is None:
        return 0
    x, _ = _bits(value, window[0], window[1])
    return x.bit_count()


def bitpos_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    if argv[2] not in (b"0", b"1"):
        parse_int(argv[2])
        raise CommandError("ERR The bit argument must be 1 or 0.")
    bit = argv[2] == b"1"
    if len(argv) > 6:
        raise CommandError(SYNTAX)
    value = _string(ctx, argv[1])
    if value is None:
        return -1 if bit else 0
    window = _range(argv, 3, len(value))
    if window is None:
        return -1
    first, last, end_given = window
    x, width = _bits(value, first, last)
    if not bit:
        x = ~x & ((1 << width) - 1)
    if x == 0:
        if bit or end_given:
            return -1
        return last + 1
    return first + width - x.bit_length()


def bitop_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    op = argv[1].upper()
    if op not in (b"AND", b"OR", b"XOR", b"NOT"):
        raise CommandError(SYNTAX)
    if op == b"NOT" and len(argv) != 4:
        raise CommandError("ERR BITOP NOT must be called with a single source key.")
    sources = [_string(ctx, k) or b"" for k in argv[3:]]
    size = max(len(s) for s in sources)
    dest = argv[2]
    if size == 0:
        ctx.db.delete(dest)
        return 0
    ints = [int.from_bytes(s.ljust(size, b"\x00"), "big") for s in sources]
    result = ints[0]
    if op == b"NOT":
        result = ~result & ((1 << (8 * size)) - 1)
    for other in ints[1:]:
        if op == b"AND":
            result &= other
        elif op == b"OR":
            result |= other
        else:
            result ^= other
    ctx.db.store(dest, result.to_bytes(size, "big"))
    return size


class _Field:
    __slots__ = ("bits", "offset", "op", "overflow", "signed", "value")

    def __init__(self, op: str, signed: bool, bits: int, offset: int, value: int, overflow: str):
        self.op, self.signed, self.bits, self.offset = op, signed, bits, offset
        self.value, self.overflow = value, overflow


def _field_type(arg: bytes) -> tuple[bool, int]:
    kind = arg[:1].lower()
    try:
        bits = int(arg[1:])
    except ValueError:
        raise CommandError(BAD_TYPE) from None
    if kind == b"i" and 1 <= bits <= 64 and arg[1:].isdigit():
        return True, bits
    if kind == b"u" and 1 <= bits <= 63 and arg[1:].isdigit():
        return False, bits
    raise CommandError(BAD_TYPE)


def _parse_bitfield(ctx: CommandContext, argv: list[bytes], readonly: bool) -> list[_Field]:
    fields: list[_Field] = []
    overflow = "wrap"
    i = 2
    n = len(argv)
    while i < n:
        sub = argv[i].upper()
        left = n - i - 1
        if sub == b"GET" and left >= 2:
            signed, bits = _field_type(argv[i + 1])
            offset = _offset(ctx, argv[i + 2], bits, argv[i + 2][:1] == b"#")
            fields.append(_Field("get", signed, bits, offset, 0, overflow))
            i += 3
        elif sub in (b"SET", b"INCRBY") and left >= 3:
            if readonly:
                raise CommandError("ERR BITFIELD_RO only supports the GET subcommand")
            signed, bits = _field_type(argv[i + 1])
            offset = _offset(ctx, argv[i + 2], bits, argv[i + 2][:1] == b"#")
            value = parse_int(argv[i + 3])
            fields.append(_Field(sub.decode().lower(), signed, bits, offset, value, overflow))
            i += 4
        elif sub == b"OVERFLOW" and left >= 1:  # accepted (and meaningless) in BITFIELD_RO too
            kind = argv[i + 1].upper()
            if kind not in (b"WRAP", b"SAT", b"FAIL"):
                raise CommandError("ERR Invalid OVERFLOW type specified")
            overflow = kind.decode().lower()
            i += 2
        else:
            raise CommandError(SYNTAX)
    return fields


def _read(buf: bytearray | bytes, offset: int, bits: int, signed: bool) -> int:
    need = (offset + bits + 7) >> 3
    chunk = bytes(buf[offset >> 3 : need]).ljust(need - (offset >> 3), b"\x00")
    x = int.from_bytes(chunk, "big")
    x >>= len(chunk) * 8 - (offset & 7) - bits
    x &= (1 << bits) - 1
    if signed and x >> (bits - 1):
        x -= 1 << bits
    return x


def _write(buf: bytearray, offset: int, bits: int, value: int) -> None:
    first, need = offset >> 3, (offset + bits + 7) >> 3
    chunk = buf[first:need]
    x = int.from_bytes(chunk, "big")
    shift = len(chunk) * 8 - (offset & 7) - bits
    mask = ((1 << bits) - 1) << shift
    x = (x & ~mask) | ((value & ((1 << bits) - 1)) << shift)
    buf[first:need] = x.to_bytes(len(chunk), "big")


def _fit(total: int, signed: bool, bits: int, overflow: str) -> int | None:
    """`total` fitted in the field per OVERFLOW (None: FAIL refused it)."""
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if lo <= total <= hi:
        return total
    if overflow == "fail":
        return None
    if overflow == "sat":
        return hi if total > hi else lo
    return ((total - lo) % (1 << bits)) + lo


def _bitfield(ctx: CommandContext, argv: list[bytes], readonly: bool) -> Reply:
    fields = _parse_bitfield(ctx, argv, readonly)
    key = argv[1]
    old = _string(ctx, key)
    writes = [f for f in fields if f.op != "get"]
    if not writes:
        ctx.no_propagation()
        data = old or b""
        return [_read(data, f.offset, f.bits, f.signed) for f in fields]
    buf = bytearray(old or b"")
    need = max((f.offset + f.bits + 7) >> 3 for f in writes)
    if len(buf) < need:
        buf.extend(bytes(need - len(buf)))
    out: list[Any] = []
    for f in fields:
        current = _read(buf, f.offset, f.bits, f.signed)
        if f.op == "get":
            out.append(current)
            continue
        if f.op == "set":
            value = f.value if f.signed or f.value >= 0 else f.value + (1 << 64)
            fitted = _fit(value, f.signed, f.bits, f.overflow)
            reply: int | None = current
        else:
            fitted = _fit(current + f.value, f.signed, f.bits, f.overflow)
            reply = fitted
        if fitted is None:
            out.append(None)
            continue
        _write(buf, f.offset, f.bits, fitted)
        out.append(reply)
    new = bytes(buf)
    if new == old:
        ctx.no_propagation()
    else:
        _save(ctx, key, old, new)
    return out


def bitfield_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bitfield(ctx, argv, readonly=False)


def bitfield_ro_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    return _bitfield(ctx, argv, readonly=True)


COMMANDS: list[Command] = [
    command("SETBIT", setbit_command, 4, "write", (1, 1, 1), "bitmap",
            summary="Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist."),
    command("GETBIT", getbit_command, 3, "readonly fast", (1, 1, 1), "bitmap",
            summary="Returns a bit value by offset."),
    command("BITCOUNT", bitcount_command, -2, "readonly", (1, 1, 1), "bitmap",
            summary="Counts the number of set bits (population counting) in a string."),
    command("BITPOS", bitpos_command, -3, "readonly", (1, 1, 1), "bitmap",
            summary="Finds the first set (1) or clear (0) bit in a string."),
    command("BITOP", bitop_command, -4, "write", (2, -1, 1), "bitmap",
            summary="Performs bitwise operations on multiple strings, and stores the result."),
    command("BITFIELD", bitfield_command, -2, "write", (1, 1, 1), "bitmap",
            summary="Performs arbitrary bitfield integer operations on strings."),
    command("BITFIELD_RO", bitfield_ro_command, -2, "readonly fast", (1, 1, 1), "bitmap",
            summary="Performs arbitrary read-only bitfield integer operations on strings."),
]  # fmt: skip
