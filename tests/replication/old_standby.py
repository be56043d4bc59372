"""A standby of replication protocol version 1 (livepatch of session 8 and older), for the version
tests: it answers HELLO with a WELCOME that says no version (flags 0), acknowledges a full sync and
then each epoch as that release did, and drops the link on a frame type it does not know, as that
release's FrameDecoder does ("unknown frame type"). It applies nothing (no state is asked of it)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from livepatch.replication.wire import HEADER, Frame, Kind, encode

V1_KINDS = set(range(1, 12))  # HELLO .. DENIED: what a version-1 decoder knows


class OldStandby:
    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.errors: list[str] = []  # what a version-1 standby would have logged and dropped on
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        term = 0
        last = 0
        synced = False
        with conn:
            try:
                while True:
                    data = conn.recv(1 << 20)
                    if not data:
                        return
                    buf += data
                    while len(buf) >= HEADER.size:
                        kind, _flags, epoch, fterm, length = HEADER.unpack_from(buf)
                        if len(buf) < HEADER.size + length:
                            break
                        buf = buf[HEADER.size + length :]
                        if kind not in V1_KINDS:
                            self.errors.append(f"unknown frame type {kind}")
                            return  # dropped, as a version-1 standby does
                        ack = self._answer(Kind(kind), epoch, fterm, term, last, synced)
                        if kind == Kind.HELLO:
                            term = fterm
                            conn.sendall(encode(Frame(Kind.WELCOME, 0, term)))  # no version
                            continue
                        if kind == Kind.SNAPSHOT_BEGIN:
                            last, synced = epoch - 1, False
                        elif kind == Kind.EPOCH:
                            last = epoch
                        elif kind == Kind.SNAPSHOT_END:
                            synced = True
                        if ack is not None:
                            conn.sendall(encode(Frame(Kind.ACK, ack, term)))
            except (OSError, struct.error):
                return

    @staticmethod
    def _answer(
        kind: Kind, epoch: int, fterm: int, term: int, last: int, synced: bool
    ) -> int | None:
        """The epoch a version-1 standby acknowledges for this frame (0: alive only)."""
        if kind == Kind.EPOCH:
            return epoch if synced else 0
        if kind == Kind.SNAPSHOT_END:
            return max(last, epoch)
        if kind in (Kind.HEARTBEAT, Kind.SNAPSHOT_BEGIN, Kind.SNAPSHOT_CHUNK):
            return 0
        return None

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self.listener.close()
