"""HyperLogLog as Redis 7.0 computes it (hyperloglog.c): same hash, same registers, same estimator, so
PFCOUNT gives Redis's exact numbers for the same elements, not merely numbers within its error.

* Hash: MurmurHash64A with seed 0xadc83b19; the low 14 bits pick one of 16384 registers, the register
  keeps the longest run of zeros (+1) seen in the remaining 50 bits (capped at 51).
* Estimator: Otmar Ertl's improved raw estimate (hllTau / hllSigma), Redis's hllCount.
* Stored value: a Redis *dense* HLL string ("HYLL", encoding 0, cached cardinality in bytes 8..15 with
  the top bit of byte 15 meaning "stale", then 16384 6-bit registers packed little-endian, 12304 bytes).
  GET returns a value redis-server itself accepts. Sparse HLLs written by Redis (encoding 1) are read
  too; kvserver always writes dense (Redis promotes to dense past 3000 bytes; results are the same).

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


def encode(regs: bytearray, cached: int | None = None) -> bytes:
    """A dense HLL string; `cached` is the cardinality to store as fresh (None: marked stale)."""
    header = bytearray(MAGIC + b"\x00\x00\x00\x00")
    if cached is None:
        header += b"\x00" * 7 + b"\x80"
    else:
        header += cached.to_bytes(8, "little")
    out = bytearray(DENSE_SIZE - 16)
    j = 0
    for i in range(0, REGISTERS, 4):
        word = regs[i] | (regs[i + 1] << 6) | (regs[i + 2] << 12) | (regs[i + 3] << 18)
        out[j] = word & 0xFF
        out[j + 1] = (word >> 8) & 0xFF
        out[j + 2] = word >> 16
        j += 3
    return bytes(header + out)


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
