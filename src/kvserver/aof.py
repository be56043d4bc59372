"""The append-only file: every successful write command, in RESP, in the order it ran.

Theory of operation
-------------------
Writes are appended to an in-memory buffer while the loop runs commands (`feed`); `flush` (called by the
loop in before_sleep, before any reply of that iteration is sent) writes the buffer with one write()
and, under appendfsync always, fsyncs it: a group commit per loop iteration. Hence a reply never
acknowledges a write that a crash (kill -9, or power loss under `always`) could lose. Under everysec a
helper thread fsyncs once a second (it holds no logic but an fsync; the lock only guards the fd against
a concurrent rotation); under `no` the kernel decides.

Files are numbered generations: <basename>.<generation>.aof. A snapshot records the generation that
starts after it (kvserver.persistence), so a restart loads the snapshot and replays that generation and
every later one. A database change is logged as SELECT; a transaction's writes as MULTI ... EXEC in one
buffer. On replay, a torn last record (a crash mid-write) or an unterminated MULTI is truncated away with
a warning; garbage in the middle of a file is refused (that is corruption, not a torn write).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from kvserver.resp import Limits, ProtocolError, PythonRequestParser, encode_command, encode_request

log = logging.getLogger("kvserver.aof")

FSYNC_POLICIES = ("always", "everysec", "no")


class AofCorrupt(Exception):
    """The append-only file holds bytes that are not a torn last record: refuse to start."""


def generation_path(directory: str, basename: str, generation: int) -> Path:
    return Path(directory) / f"{basename}.{generation}.aof"


def existing_generations(directory: str, basename: str) -> list[int]:
    gens = []
    for path in Path(directory).glob(f"{basename}.*.aof"):
        middle = path.name[len(basename) + 1 : -4]
        if middle.isdigit():
            gens.append(int(middle))
    return sorted(gens)


class AppendOnlyFile:
    """Appender for the active generation.

    Concurrency: feed/feed_transaction/flush/rotate/close run on the event-loop thread; the everysec
    helper thread only calls os.fsync on the current fd under `_fd_lock`.
    """

    def __init__(self, directory: str, basename: str, fsync: str, generation: int) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.directory = directory
        self.basename = basename
        self.fsync_policy = fsync
        self.generation = generation
        self._buf: list[bytes] = []
        self._selected_db = -1
        self._fd_lock = threading.Lock()
        self._fd = self._open(generation)
        self._stop = threading.Event()
        self._fsync_thread: threading.Thread | None = None
        self.last_write_ok = True
        self.set_policy(fsync)

    def _open(self, generation: int) -> int:
        path = generation_path(self.directory, self.basename, generation)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        _fsync_directory(self.directory)
        return fd

    # -------------------------------------------------------------------- event-loop thread only
    def set_policy(self, fsync: str) -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.fsync_policy = fsync
        if fsync == "everysec" and self._fsync_thread is None:
            self._fsync_thread = threading.Thread(
                target=self._fsync_every_second, name="kvserver-aof-fsync", daemon=True
            )
            self._fsync_thread.start()

    def feed(self, db_index: int, commands: list[list[bytes]]) -> None:
        buf = self._buf
        if db_index != self._selected_db:
            buf.append(encode_command(b"SELECT", str(db_index)))
            self._selected_db = db_index
        for argv in commands:
            buf.append(encode_request(argv))

    def feed_one(self, db_index: int, argv: list[bytes]) -> None:
        """`feed(db_index, [argv])` without the list: the dispatcher's path for a plain write."""
        if db_index != self._selected_db:
            self._buf.append(encode_command(b"SELECT", str(db_index)))
            self._selected_db = db_index
        self._buf.append(encode_request(argv))

    def feed_transaction(self, items: list[tuple[int, list[bytes]]]) -> None:
        self._buf.append(b"*1\r\n$5\r\nMULTI\r\n")
        for db_index, argv in items:
            self.feed(db_index, [argv])
        self._buf.append(b"*1\r\n$4\r\nEXEC\r\n")

    def has_pending(self) -> bool:
        return bool(self._buf)

    def flush(self) -> None:
        """Write the buffer (one write call); fsync it under `always`. Raises OSError on failure."""
        if not self._buf:
            return
        data = b"".join(self._buf)
        self._buf.clear()
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            if self.fsync_policy == "always":
                os.fsync(self._fd)
        except OSError:
            self.last_write_ok = False
            raise
        self.last_write_ok = True

    def fsync_now(self) -> None:
        self.flush()
        with self._fd_lock:
            os.fsync(self._fd)

    def rotate(self, generation: int) -> None:
        """Finish the current generation (written and fsynced) and append to a new one from now on."""
        self.fsync_now()
        new_fd = self._open(generation)
        with self._fd_lock:
            old, self._fd = self._fd, new_fd
            os.close(old)
        self.generation = generation
        self._selected_db = -1

    def close(self) -> None:
        self._stop.set()
        try:
            self.fsync_now()
        finally:
            with self._fd_lock:
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
        if self._fsync_thread is not None:
            self._fsync_thread.join(timeout=5)

    # ---------------------------------------------------------------------- the everysec thread
    def _fsync_every_second(self) -> None:
        while not self._stop.wait(1.0):
            if self.fsync_policy != "everysec":
                continue
            with self._fd_lock:
                if self._fd >= 0:
                    try:
                        os.fsync(self._fd)
                    except OSError as exc:  # reported by INFO (last_write_ok stays the loop's view)
                        log.error("background fsync of the append-only file failed: %s", exc)


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encoded_length(argv: list[bytes]) -> int:
    """Length of argv as a canonical multibulk (how kvserver writes it, and all the parser accepts)."""
    total = 3 + len(str(len(argv)))
    for arg in argv:
        n = len(arg)
        total += 5 + len(str(n)) + n
    return total


def replay(path: Path, execute: Callable[[list[bytes]], None], limits: Limits | None = None) -> int:
    """Execute every committed command of one AOF file; truncate a torn tail. Returns commands run.

    Commands between MULTI and EXEC are held back until EXEC, so a transaction torn by a crash is
    dropped as a whole (and truncated away with the torn bytes). Raises AofCorrupt on bytes that are
    not a torn tail.
    """
    size = path.stat().st_size
    parser = PythonRequestParser(limits or Limits(query_buffer_limit=2**62))
    offset = 0  # end of the last complete command
    committed = 0  # end of the last command outside a transaction
    held: list[list[bytes]] | None = None
    executed = 0
    fed = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            parser.feed(chunk)
            fed += len(chunk)
            try:
                commands = parser.commands()
            except ProtocolError as exc:
                raise AofCorrupt(
                    f"{path}: bad record after offset {offset}: {exc.reason}"
                ) from None
            for argv in commands:
                offset += encoded_length(argv)
                name = argv[0].upper()
                if name == b"MULTI":
                    held = []
                elif name == b"EXEC" and held is not None:
                    for queued in held:
                        execute(queued)
                    executed += len(held)
                    held = None
                elif held is not None:
                    held.append(argv)
                else:
                    execute(argv)
                    executed += 1
                if held is None:
                    committed = offset
            if offset != fed - parser.buffered():
                raise AofCorrupt(f"{path}: record near offset {offset} was not written by kvserver")
    if committed != size:
        log.warning(
            "append-only file %s: torn last record (%d bytes after offset %d) truncated",
            path,
            size - committed,
            committed,
        )
        with open(path, "r+b") as f:
            f.truncate(committed)
            f.flush()
            os.fsync(f.fileno())
    return executed
