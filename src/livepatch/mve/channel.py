"""The leader -> follower log and the follower -> leader messages: length-prefixed pickle frames.

Both ends are the same program split by fork() (the follower is the leader's child), so pickle is safe
here: nothing on these channels comes from outside the process pair.

`LogWriter` is the leader's side of the log. It never blocks the leader: records are pickled into a
bounded in-memory backlog and written with non-blocking send(); whatever the kernel does not take waits
for the next `flush`. Past `max_backlog` bytes the follower is hopelessly behind: the writer marks itself
`overflowed`, drops everything, and the session discards the follower.
"""

from __future__ import annotations

import pickle
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

_LEN = struct.Struct("!I")
STOP_CHECK_S = 0.05  # a blocking send looks this often whether to give up
READ_CHUNK = 1 << 20  # the follower reads the log in pieces of up to this
MAX_FRAME = 1 << 30  # a frame is one loop iteration's worth of records (or the hand-over state)


def encode(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(data)) + data


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError("the other process closed the channel")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> Any:
    """Block until one whole frame arrived (EOFError when the peer is gone)."""
    (size,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if size > MAX_FRAME:
        raise EOFError(f"corrupt frame length {size}")
    return pickle.loads(_recv_exact(sock, size))


def send_frame(sock: socket.socket, obj: Any) -> None:
    """Blocking send of one frame (follower messages, small)."""
    sock.sendall(encode(obj))


class LogWriter:
    """The leader's end of the log. Loop thread only (`append`, `flush`, `flush_blocking`)."""

    def __init__(self, sock: socket.socket, max_backlog: int) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.max_backlog = max_backlog
        self.records: list[
            Any
        ] = []  # appended, not pickled yet (Session.executed appends directly)
        self._backlog = bytearray()
        # A faster encoder of a batch's frame, same bytes on the wire as far as pickle.loads goes
        # (kvserver's is in C); None for a batch it does not handle: then encode() it is.
        self.encode_frame: Callable[[list[Any]], bytes | None] | None = None
        self.overflowed = False
        self.broken = False  # the follower's end is gone (it died): the session notices by waitpid

    def append(self, record: Any) -> None:
        self.records.append(record)

    @property
    def backlog_bytes(self) -> int:
        return len(self._backlog)

    def flush(self) -> None:
        """Pickle what was appended and send what the kernel takes now; never waits."""
        if self.overflowed or self.broken:
            self.records.clear()
            return
        if self.records:
            frame = self.encode_frame(self.records) if self.encode_frame is not None else None
            self._backlog += frame if frame is not None else encode(self.records)
            self.records.clear()  # the same list: the recording appends to it directly
        if not self._backlog:
            return
        try:
            sent = self.sock.send(self._backlog)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.broken = True
            self._backlog.clear()
            return
        del self._backlog[:sent]
        if len(self._backlog) > self.max_backlog:
            self.overflowed = True
            self._backlog.clear()

    def flush_blocking(self, timeout: float, give_up: Callable[[], bool] | None = None) -> bool:
        """Send everything (the hand-over marker); False if the follower did not take it in time, or
        `give_up()` became true (checked every STOP_CHECK_S while the follower does not read)."""
        self.flush()
        deadline = time.monotonic() + timeout
        while self._backlog and not self.broken:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (give_up is not None and give_up()):
                return False
            self.sock.settimeout(min(remaining, STOP_CHECK_S))
            try:
                sent = self.sock.send(self._backlog)
            except TimeoutError:
                continue
            except OSError:
                self.broken = True
                return False
            finally:
                self.sock.setblocking(False)
            del self._backlog[:sent]
        return not self.broken


class FrameReader:
    """Frames out of bytes that arrive in arbitrary pieces (a reader that polls with a timeout).

    Whole frames are decoded straight from the piece just read; only an incomplete tail is kept."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        if self._buf:
            self._buf += data
            data = self._buf
        frames: list[Any] = []
        end = len(data)
        pos = 0
        unpack, loads, head = _LEN.unpack_from, pickle.loads, _LEN.size
        while end - pos >= head:
            (size,) = unpack(data, pos)
            if end - pos - head < size:
                break
            frames.append(loads(data[pos + head : pos + head + size]))
            pos += head + size
        if data is self._buf:
            del self._buf[:pos]
        else:
            self._buf = bytearray(data[pos:])
        return frames


FD_CHUNK = 200  # below the kernel's SCM_MAX_FD (253) per message


def send_fds(sock: socket.socket, fds: list[int]) -> None:
    """Pass `fds` (SCM_RIGHTS), one byte per chunk of FD_CHUNK descriptors."""
    for i in range(0, len(fds), FD_CHUNK):
        socket.send_fds(sock, [b"F"], fds[i : i + FD_CHUNK])


def recv_fds(sock: socket.socket, count: int) -> list[int]:
    fds: list[int] = []
    while len(fds) < count:
        data, got, _flags, _addr = socket.recv_fds(sock, 1, FD_CHUNK)
        if not data:
            raise EOFError("the leader closed the channel during the hand-over")
        fds.extend(got)
    return fds
