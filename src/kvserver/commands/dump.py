"""DUMP, RESTORE, OBJECT and MEMORY USAGE (Redis 7.0 cluster.c, object.c).

DUMP payload (kvserver's own format, not RDB; Redis's layout is followed only in spirit):

    type byte | body | format version (2 bytes, little endian) | checksum (8 bytes)

The checksum is BLAKE2b-64 of everything before it. Types: 0 string (body = the bytes), 1 list,
2 set, 3 sorted set, 4 hash; container bodies are a 4-byte count then length-prefixed items (sorted
sets: member then an 8-byte IEEE double score; hashes: field then value). RESTORE checks the version and
the checksum before decoding, so a payload from redis-server (RDB) or a corrupted one is refused with
Redis's own "ERR DUMP payload version or checksum are wrong"; decoding never runs on unchecked bytes,
and a checked payload that still does not parse is refused with "ERR Bad data format" (Redis's line).
No pickle: a payload comes from a client, so it must never be able to run code.

OBJECT IDLETIME always answers 0 and OBJECT FREQ the LFU error (kvserver tracks neither: that would cost
the GET/SET hot path); OBJECT REFCOUNT answers 1 (2147483647 for small integers, Redis's shared ints).

Concurrency: handlers run only on the event-loop thread, one at a time (kvserver.context).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections import deque
from typing import TYPE_CHECKING, Any

from kvserver.commands.table import Command, command
from kvserver.replies import OK, SYNTAX, CommandError, Reply, SimpleString
from kvserver.types.numbers import parse_int
from kvserver.types.values import encoding, memory_usage
from kvserver.types.zset import SortedSet

if TYPE_CHECKING:
    from kvserver.context import CommandContext

FORMAT_VERSION = 0x4B01  # 'K', 1: never a valid RDB version (Redis 7.0 writes 10)
BAD_PAYLOAD = "ERR DUMP payload version or checksum are wrong"
BAD_FORMAT = "ERR Bad data format"
BUSYKEY = "BUSYKEY Target key name already exists."
LFU_ERROR = (
    "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when "
    "switching between policies at runtime LRU and LFU data will take some time to adjust."
)
_VERSION = struct.Struct("<H")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")
_TYPES = {bytes: 0, deque: 1, set: 2, SortedSet: 3, dict: 4}


def _checksum(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=8).digest()


def _item(out: list[bytes], data: bytes) -> None:
    out.append(_U32.pack(len(data)))
    out.append(data)


def serialize(value: Any) -> bytes:
    kind = _TYPES[type(value)]
    out = [bytes([kind])]
    if kind == 0:
        out.append(value)
    else:
        out.append(_U32.pack(len(value)))
        if kind in (1, 2):
            for item in value:
                _item(out, item)
        elif kind == 3:
            for member, score in value:
                _item(out, member)
                out.append(_F64.pack(score))
        else:
            for field, val in value.items():
                _item(out, field)
                _item(out, val)
    body = b"".join(out)
    head = body + _VERSION.pack(FORMAT_VERSION)
    return head + _checksum(head)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CommandError(BAD_FORMAT)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def item(self) -> bytes:
        return self.take(self.u32())


def deserialize(payload: bytes) -> Any:
    """The value of a DUMP payload; CommandError (Redis's lines) for a foreign or damaged one."""
    if len(payload) < 11:
        raise CommandError(BAD_PAYLOAD)
    head, checksum = payload[:-8], payload[-8:]
    version = _VERSION.unpack(head[-2:])[0]
    if version != FORMAT_VERSION or _checksum(head) != checksum:
        raise CommandError(BAD_PAYLOAD)
    body = head[:-2]
    kind = body[0]
    if kind == 0:
        return body[1:]
    r = _Reader(body)
    r.pos = 1
    count = r.u32()
    value: Any
    if kind == 1:
        value = deque(r.item() for _ in range(count))
    elif kind == 2:
        value = {r.item() for _ in range(count)}
    elif kind == 3:
        value = SortedSet()
        for _ in range(count):
            member = r.item()
            score = _F64.unpack(r.take(8))[0]
            if math.isnan(score):
                raise CommandError(BAD_FORMAT)
            value.add(member, score)
    elif kind == 4:
        value = {}
        for _ in range(count):
            field = r.item()
            value[field] = r.item()
    else:
        raise CommandError(BAD_FORMAT)
    if r.pos != len(body) or (kind != 0 and not value):
        raise CommandError(BAD_FORMAT)
    return value


def dump_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    value = ctx.db.lookup(argv[1], ctx.now_ms)
    return None if value is None else serialize(value)


def restore_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    """RESTORE key ttl payload [REPLACE] [ABSTTL] [IDLETIME s] [FREQ f] (IDLETIME/FREQ checked, unused)."""
    key = argv[1]
    replace = absttl = False
    i = 4
    n = len(argv)
    while i < n:
        opt = argv[i].upper()
        if opt == b"REPLACE":
            replace = True
        elif opt == b"ABSTTL":
            absttl = True
        elif opt == b"IDLETIME" and i + 1 < n:
            idle = parse_int(argv[i + 1])
            if idle < 0:
                raise CommandError("ERR Invalid IDLETIME value, must be >= 0")
            i += 1
        elif opt == b"FREQ" and i + 1 < n:
            freq = parse_int(argv[i + 1])
            if freq < 0 or freq > 255:
                raise CommandError("ERR Invalid FREQ value, must be >= 0 and <= 255")
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    ttl = parse_int(argv[2])
    if ttl < 0:
        raise CommandError("ERR Invalid TTL value, must be >= 0")
    db = ctx.db
    if not replace and db.lookup(key, ctx.now_ms) is not None:
        raise CommandError(BUSYKEY)
    value = deserialize(argv[3])
    expire_at = None
    if ttl:
        expire_at = ttl if absttl else ttl + ctx.now_ms
    if expire_at is not None and expire_at <= ctx.now_ms:
        # Already expired (ABSTTL in the past): Redis deletes the key and replies OK.
        db.delete(key)
        ctx.propagate_as([b"DEL", key])
        return OK
    db.store(key, value, expire_at)
    logged = [b"RESTORE", key, b"%d" % (expire_at or 0), argv[3], b"REPLACE"]
    if expire_at is not None:
        logged.append(b"ABSTTL")
    ctx.propagate_as(logged)
    return OK


def _shared_int(value: Any) -> bool:
    return type(value) is bytes and encoding(value) == b"int" and 0 <= int(value) < 10000


def object_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    sub = argv[1].upper()
    if sub == b"HELP" and len(argv) == 2:
        return [
            SimpleString(line)
            for line in (
                "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ENCODING <key>",
                "    Return the kind of internal representation used in order to store the value",
                "    associated with a <key>.",
                "FREQ <key>",
                "    Return the access logarithmic access frequency counter associated with a <key>.",
                "IDLETIME <key>",
                "    Return the idle time associated with a <key>.",
                "REFCOUNT <key>",
                "    Return the number of references of the value associated with a <key>.",
                "HELP",
                "    Print this help.",
            )
        ]
    if sub not in (b"ENCODING", b"FREQ", b"IDLETIME", b"REFCOUNT"):
        raise CommandError(_unknown_subcommand(argv[1], "OBJECT"))
    if len(argv) != 3:
        raise CommandError(
            f"ERR wrong number of arguments for 'object|{sub.decode().lower()}' command"
        )
    value = ctx.db.lookup(argv[2], ctx.now_ms)
    if value is None:
        return None
    if sub == b"ENCODING":
        extra = ctx.server.config.extra
        limits = {}
        for name in ("hash-max-listpack-entries", "hash-max-listpack-value", "set-max-intset-entries",
                     "zset-max-listpack-entries", "zset-max-listpack-value"):  # fmt: skip
            raw = extra.get(name)
            if raw is not None and raw.lstrip("-").isdigit():
                limits[name] = int(raw)
        return encoding(value, limits)
    if sub == b"FREQ":
        raise CommandError(LFU_ERROR)
    if sub == b"IDLETIME":
        return 0
    return 2147483647 if _shared_int(value) else 1


def memory_command(ctx: CommandContext, argv: list[bytes]) -> Reply:
    sub = argv[1].upper()
    if sub == b"USAGE" and len(argv) >= 3:
        samples = 5
        rest = argv[3:]
        if rest:
            if len(rest) != 2 or rest[0].upper() != b"SAMPLES":
                raise CommandError(SYNTAX)
            samples = parse_int(rest[1])
            if samples < 0:
                raise CommandError(SYNTAX)
        value = ctx.db.lookup(argv[2], ctx.now_ms)
        return None if value is None else memory_usage(argv[2], value, samples)
    if sub == b"USAGE":
        raise CommandError("ERR wrong number of arguments for 'memory|usage' command")
    raise CommandError(_unknown_subcommand(argv[1], "MEMORY"))


def _unknown_subcommand(sub: bytes, parent: str) -> str:
    return f"ERR unknown subcommand '{sub.decode(errors='replace')}'. Try {parent} HELP."


COMMANDS: list[Command] = [
    command("DUMP", dump_command, 2, "readonly", (1, 1, 1), "generic",
            summary="Returns a serialized representation of the value stored at a key."),
    command("RESTORE", restore_command, -4, "write", (1, 1, 1), "generic",
            summary="Creates a key from the serialized representation of a value."),
    command("OBJECT", object_command, -2, "readonly", (2, 2, 1), "generic",
            summary="A container for object introspection commands."),
    command("MEMORY", memory_command, -2, "readonly", (2, 2, 1), "server",
            summary="A container for memory diagnostics commands."),
]  # fmt: skip
