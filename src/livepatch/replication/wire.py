"""The replication link's frames, sans-IO: `encode` builds one, `FrameDecoder` cuts a byte stream into them.

A frame is a 22-byte header (type, flags, epoch, term, payload length; big-endian) and the payload.
Flag bit 0 says the payload is zstd-compressed (the sender compresses epochs and snapshot chunks; the
receiver decompresses: `payload_of`). A frame longer than MAX_PAYLOAD or of an unknown type is a
`WireError`: the receiver drops the connection, and the other side reconnects and resynchronises.

Who sends what (livepatch.replication.primary / standby):
  primary -> standby   HELLO(term, nonce if a secret is set), AUTH(proof; with a secret),
                       SNAPSHOT_BEGIN(epoch S), SNAPSHOT_CHUNK, EPOCH(e), SNAPSHOT_END,
                       HEARTBEAT (when nothing else was sent for HEARTBEAT_S, whatever the epoch length),
                       SWITCHOVER(e) (version 2: a planned hand-over, see below)
  standby -> primary   WELCOME(term, nonce + proof with a secret) or FENCED(term) or DENIED(why),
                       ACK(e)

Versions. HELLO and WELCOME carry the sender's protocol VERSION in the high nibble of their flags
(`with_version`, `version_of`); a peer of session 8 or older sends 0 there and ignores the nibble,
and counts as version 1. Version 2 adds SWITCHOVER(e): the draining primary of a planned switchover
says, after the standby acknowledged its last epoch e and just before it closes the link, that the
standby is to take over now and that this server will follow it as its standby (the new primary then
holds write replies until it has: kvserver.replication_cli). It is sent only to a standby whose
WELCOME said version 2 or more; a version-1 standby would drop the link on it ("unknown frame type
12"), so a switchover to one is refused with that reason instead.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Any

HEADER = struct.Struct(">BBQQI")
MAX_PAYLOAD = 1 << 30  # 1 GiB: one epoch (or chunk) may carry a large value whole
COMPRESSED = 1
VERSION = 2  # this side's protocol version (above); 1: a peer that sends none
_VERSION_SHIFT = (
    4  # HELLO's and WELCOME's flags: the version in the high nibble (bit 0 is COMPRESSED)
)


class Kind(enum.IntEnum):
    HELLO = 1
    WELCOME = 2
    FENCED = 3
    SNAPSHOT_BEGIN = 4
    SNAPSHOT_CHUNK = 5
    SNAPSHOT_END = 6
    EPOCH = 7
    ACK = 8
    HEARTBEAT = 9
    AUTH = 10  # the primary's proof of the shared secret (livepatch.replication.auth)
    DENIED = 11  # the standby refuses the primary: payload says why (no or wrong secret)
    SWITCHOVER = 12  # version 2: a planned hand-over after the standby acknowledged epoch e


_KINDS = {k.value: k for k in Kind}  # Kind(n) without the enum call (per frame received)


class WireError(Exception):
    """The peer sent bytes that are not a frame: the connection is dropped."""


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 2.5x (frames are made per epoch)
class Frame:
    kind: Kind
    epoch: int = 0
    term: int = 0
    payload: bytes = b""
    flags: int = 0


def with_version(version: int = VERSION) -> int:
    """The flags of a HELLO or WELCOME saying `version`."""
    return version << _VERSION_SHIFT


def version_of(frame: Frame) -> int:
    """The protocol version a HELLO or WELCOME says (1: a peer that predates versions)."""
    return (frame.flags >> _VERSION_SHIFT) or 1


def encode(frame: Frame) -> bytes:
    return (
        HEADER.pack(frame.kind, frame.flags, frame.epoch, frame.term, len(frame.payload))
        + frame.payload
    )


def payload_of(frame: Frame, decompressor: Any) -> bytes:
    """The frame's payload, decompressed (a zstandard.ZstdDecompressor) if it was sent compressed."""
    if frame.flags & COMPRESSED:
        import zstandard  # here, not at import: `livepatch` without the kv extra still starts

        try:
            return bytes(decompressor.decompress(frame.payload))
        except zstandard.ZstdError as exc:
            raise WireError(f"undecodable compressed payload: {exc}") from None
    return frame.payload


class FrameDecoder:
    """Feed received bytes, take complete frames. Not thread-safe: one per connection and reader."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER.size:
            kind, flags, epoch, term, length = HEADER.unpack_from(buf, pos)
            if length > MAX_PAYLOAD:
                raise WireError(f"frame of {length} bytes exceeds the {MAX_PAYLOAD} byte limit")
            k = _KINDS.get(kind)
            if k is None:
                raise WireError(f"unknown frame type {kind}")
            end = pos + HEADER.size + length
            if end > len(buf):
                break
            frames.append(Frame(k, epoch, term, bytes(buf[pos + HEADER.size : end]), flags))
            pos = end
        if pos:
            del buf[:pos]
        return frames
