"""HyperLogLog as Redis 7.0 computes it (hyperloglog.c): same hash, same registers, same estimator, so
PFCOUNT gives Redis's exact numbers for the same elements, not merely numbers within its error.

* Hash: MurmurHash64A with seed 0xadc83b19; the low 14 bits pick one of 16384 registers, the register
  keeps the longest run of zeros (+1) seen in the remaining 50 bits (capped at 51).
* Estimator: Otmar Ertl's improved raw estimate (hllTau / hllSigma), Redis's hllCount.
* Stored value: a Redis HLL string ("HYLL", the encoding byte, the cached cardinality in bytes 8..15
  with the top bit of byte 15 meaning "stale"), then either Redis's *sparse* opcodes (ZERO, XZERO,
  VAL runs) while they fit in hll-sparse-max-bytes (3000) and no register exceeds 32, or the *dense*
  16384 6-bit registers packed little-endian (12304 bytes). Like Redis, a dense HLL never goes back
  to sparse. GET returns a value redis-server itself accepts, and Redis's HLLs are read here.

Cost: PFADD hashes in Python (~microseconds per element); PFCOUNT unpacks 16384 registers (a few ms)
unless the cached cardinality is fresh.
"""

from __future__ import annotations

import math
from collections import Counter

P = 14
REGISTERS = 1 << P  # 16384
Q = 64 - P
DENSE_SIZE = 16 + (REGISTERS * 6 + 7) // 8  # 12304
MAGIC = b"HYLL"
_M64 = (1 << 64) - 1
_MURMUR_M = 0xC6A4A7935BD1E995
_SEED = 0xADC83B19
ALPHA_INF = 0.721347520444481703680


class InvalidHLL(Exception):
    """Not a HyperLogLog string (WRONGTYPE) or a corrupted one (INVALIDOBJ)."""

    def __init__(self, corrupted: bool) -> None:
        super().__init__("corrupted" if corrupted else "not an HLL")
        self.corrupted = corrupted


def murmurhash64a(data: bytes, seed: int = _SEED) -> int:
    m = _MURMUR_M
    n = len(data)
    h = (seed ^ (n * m)) & _M64
    end = n - (n & 7)
    for i in range(0, end, 8):
        k = int.from_bytes(data[i : i + 8], "little")
        k = (k * m) & _M64
        k ^= k >> 47
        k = (k * m) & _M64
        h ^= k
        h = (h * m) & _M64
    tail = data[end:]
    if tail:
        h ^= int.from_bytes(tail, "little")
        h = (h * m) & _M64
    h ^= h >> 47
    h = (h * m) & _M64
    h ^= h >> 47
    return h


def register_of(element: bytes) -> tuple[int, int]:
    """(register index, run length) for one element (Redis's hllPatLen)."""
    h = murmurhash64a(element)
    index = h & (REGISTERS - 1)
    h >>= P
    h |= 1 << Q
    count = 1
    bit = 1
    while not h & bit:
        count += 1
        bit <<= 1
    return index, count


def empty_registers() -> bytearray:
    return bytearray(REGISTERS)


def decode(value: bytes) -> bytearray:
    """The 16384 registers of a stored HLL string; InvalidHLL if it is not one."""
    if len(value) < 16 or value[:4] != MAGIC or value[4] > 1:
        raise InvalidHLL(False)
    if value[4] == 0:
        if len(value) != DENSE_SIZE:
            raise InvalidHLL(False)
        regs = bytearray(REGISTERS)
        data = value[16:]
        j = 0
        for i in range(0, len(data), 3):
            word = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16)
            regs[j] = word & 63
            regs[j + 1] = (word >> 6) & 63
            regs[j + 2] = (word >> 12) & 63
            regs[j + 3] = (word >> 18) & 63
            j += 4
        return regs
    return _decode_sparse(value[16:])


def _decode_sparse(data: bytes) -> bytearray:
    regs = bytearray(REGISTERS)
    idx = 0
    i = 0
    n = len(data)
    while i < n:
        op = data[i]
        if op & 0xC0 == 0:  # ZERO: 00xxxxxx, run of xxxxxx+1 zero registers
            idx += (op & 0x3F) + 1
            i += 1
        elif op & 0xC0 == 0x40:  # XZERO: 01xxxxxx yyyyyyyy
            if i + 1 >= n:
                raise InvalidHLL(True)
            idx += (((op & 0x3F) << 8) | data[i + 1]) + 1
            i += 2
        else:  # VAL: 1vvvvvxx, xx+1 registers of value vvvvv+1
            run = (op & 3) + 1
            val = ((op >> 2) & 0x1F) + 1
            if idx + run > REGISTERS:
                raise InvalidHLL(True)
            regs[idx : idx + run] = bytes([val]) * run
            idx += run
            i += 1
        if idx > REGISTERS:
            raise InvalidHLL(True)
    if idx != REGISTERS:
        raise InvalidHLL(True)
    return regs


SPARSE_MAX_BYTES = 3000  # Redis's hll-sparse-max-bytes default
_SPARSE_VAL_MAX = 32  # a VAL opcode holds values 1..32


def _header(encoding: int, cached: int | None) -> bytearray:
    header = bytearray(MAGIC + bytes([encoding, 0, 0, 0]))
    if cached is None:
        header += b"\x00" * 7 + b"\x80"
    else:
        header += cached.to_bytes(8, "little")
    return header


def _sparse_body(regs: bytearray, limit: int) -> bytes | None:
    """Redis's sparse opcodes for `regs`, None if a register exceeds 32 or the HLL exceeds `limit`."""
    out = bytearray()
    i = 0
    while i < REGISTERS:
        value = regs[i]
        j = i + 1
        while j < REGISTERS and regs[j] == value:
            j += 1
        run = j - i
        i = j
        if value == 0:
            while run:
                if run > 64:
                    chunk = min(run, 16384)
                    out += bytes([0x40 | ((chunk - 1) >> 8), (chunk - 1) & 0xFF])
                else:
                    chunk = run
                    out.append(chunk - 1)
                run -= chunk
        else:
            if value > _SPARSE_VAL_MAX:
                return None
            while run:
                chunk = min(run, 4)
                out.append(0x80 | ((value - 1) << 2) | (chunk - 1))
                run -= chunk
        if len(out) + 16 > limit:
            return None
    return bytes(out)


def encode(
    regs: bytearray,
    cached: int | None = None,
    dense: bool = False,
    sparse_max_bytes: int = SPARSE_MAX_BYTES,
) -> bytes:
    """An HLL string: sparse like Redis while it fits in `sparse_max_bytes` and every register is at
    most 32 (unless `dense`, e.g. the value already was: Redis never goes back), else dense.
    `cached` is the cardinality to store as fresh (None: marked stale)."""
    if not dense:
        body = _sparse_body(regs, sparse_max_bytes)
        if body is not None:
            return bytes(_header(1, cached)) + body
    out = bytearray(DENSE_SIZE - 16)
    j = 0
    for i in range(0, REGISTERS, 4):
        word = regs[i] | (regs[i + 1] << 6) | (regs[i + 2] << 12) | (regs[i + 3] << 18)
        out[j] = word & 0xFF
        out[j + 1] = (word >> 8) & 0xFF
        out[j + 2] = word >> 16
        j += 3
    return bytes(_header(0, cached) + out)


def keep_stale_cache(new: bytes, old: bytes | None) -> bytes:
    """`new` with the old value's cached-cardinality bytes, marked stale (Redis's HLL_INVALIDATE_CACHE
    only sets the top bit, so the header stays byte-identical to Redis's)."""
    if old is None:
        return new
    card = bytearray(old[8:16])
    card[7] |= 0x80
    return new[:8] + bytes(card) + new[16:]


def is_dense(value: bytes) -> bool:
    return value[4] == 0


def cached_count(value: bytes) -> int | None:
    """The cardinality cached in a stored HLL's header, None if stale."""
    if value[15] & 0x80:
        return None
    return int.from_bytes(value[8:16], "little")


def _tau(x: float) -> float:
    if x == 0.0 or x == 1.0:
        return 0.0
    y = 1.0
    z = 1 - x
    while True:
        x = math.sqrt(x)
        z_prime = z
        y *= 0.5
        z -= math.pow(1 - x, 2) * y
        if z_prime == z:
            return z / 3


def _sigma(x: float) -> float:
    if x == 1.0:
        return math.inf
    y = 1.0
    z = x
    while True:
        x *= x
        z_prime = z
        z += x * y
        y += y
        if z_prime == z:
            return z


def count(regs: bytearray) -> int:
    """Redis's hllCount over 16384 registers."""
    histogram = Counter(regs)
    m = float(REGISTERS)
    z = m * _tau((m - histogram.get(Q + 1, 0)) / m)
    for j in range(Q, 0, -1):
        z += histogram.get(j, 0)
        z *= 0.5
    z += m * _sigma(histogram.get(0, 0) / m)
    return math.floor(ALPHA_INF * m * m / z + 0.5)
