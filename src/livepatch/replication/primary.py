"""The primary's side of the replication link: epochs, the full sync, acknowledgements, degradation.

Theory of operation
-------------------
Two halves that share only a queue and a few counters:

* The **loop half** (`tick`, `_on_ack`) runs on the server's serving thread. The server calls `tick` at
  its quiescence point every iteration, and sleeps at most until the deadline `tick` returns. A tick
    1. starts a full sync when a new connection was handshaken (`_link_gen` changed): SNAPSHOT_BEGIN
       carrying the epoch being filled, then chunks, at most CHUNK_TICK_BYTES per tick and only while
       less than SYNC_QUEUE_BYTES wait to be sent (the server keeps serving between chunks);
    2. captures an epoch every `epoch_ms`, or at once when a reply waits for the epoch being filled and
       every earlier epoch is acknowledged (a group commit: with commit protection a write then waits
       about one round trip to the standby, not half an epoch); an epoch is captured even without a
       link (its changes are then covered by the next full sync) and even when empty (a heartbeat);
    3. gives up on a link that is silent for 2 x `standby_timeout_ms` (at least 2 s; 5 times that
       during a full sync) or whose queue passed `max_queue_bytes` (the standby is gone or too slow):
       the connection is dropped, the next one starts with a full sync;
    4. under `on_standby_loss="degrade"`, releases every held reply once the oldest has waited
       `standby_timeout_ms`, with a loud warning, and stops holding until the standby acknowledges an
       epoch captured after that (it has caught up); under "hold" replies wait for as long as it takes.
  Acknowledgements arrive through the server's `call_soon_threadsafe` (`_on_ack`) and release replies.
* The **link half** (a sender thread and, per connection, a reader thread) connects with backoff, says
  HELLO with the term, waits for WELCOME (or FENCED: a newer primary exists; this one then never
  releases a held reply again and stops reconnecting), then compresses (zstd) and sends queued frames.
  It never calls into the server except `call_soon_threadsafe`.

Nothing the loop half does waits for the network: the worst it does is copy changed values and put
them on the queue. Frames queued for an older connection are dropped by the sender.

Concurrency: `tick` and `protection` on the loop thread only; `start`, `stop`, `status` on any thread.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from livepatch.replication import wire
from livepatch.replication.host import ReplicatedServer, SnapshotRestart
from livepatch.replication.protection import Mode, Protection
from livepatch.replication.wire import Frame, Kind

log = logging.getLogger("livepatch.replication")

CHUNK_TICK_BYTES = 1 << 20  # snapshot bytes produced per loop iteration: bounds the pause per tick
SYNC_QUEUE_BYTES = 8 << 20  # produce no more chunks while this much waits to be sent
COMPRESS_MIN = 64  # smaller payloads go uncompressed
HANDSHAKE_TIMEOUT_S = 2.0
BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
STATS_WINDOW = 64  # epochs in the moving averages of status()
CHECK_S = 0.01  # how often the standby timeouts are looked at
LINK_SILENCE_FACTOR = 2  # the link is dropped after this many --standby-timeout-ms of silence
LINK_SILENCE_MIN_S = 2.0  # ... and never sooner than this
HEARTBEAT_S = 0.05  # a frame at least this often, so silence means trouble even with long epochs

LossPolicy = Literal["degrade", "hold"]


@dataclass
class PrimaryOptions:
    epoch_ms: float = 50.0
    protection: Mode = "commit"
    on_standby_loss: LossPolicy = "degrade"
    standby_timeout_ms: float = 1000.0
    max_queue_bytes: int = 64 << 20
    chunk_bytes: int = 256 << 10
    compression_level: int = 1


class Primary:
    """Ships a server's epochs to one standby at `target` (host, port)."""

    def __init__(
        self,
        server: ReplicatedServer,
        target: tuple[str, int],
        options: PrimaryOptions | None = None,
        term: int = 1,
    ) -> None:
        self.server = server
        self.target = target
        self.options = options or PrimaryOptions()
        self.term = term
        self.protection = Protection(self.options.protection)
        # No standby yet: under "degrade" nothing is held until one has synchronised.
        if self.options.on_standby_loss == "degrade":
            self.protection.active = False
        self._protect_from = 1  # protection resumes once an epoch >= this is acknowledged
        # loop half
        self._epoch_s = self.options.epoch_ms / 1000.0
        self._timeout_s = self.options.standby_timeout_ms / 1000.0
        self._next_check_at = 0.0
        self._next_heartbeat_at = 0.0
        self._next_epoch_at = time.monotonic() + self._epoch_s
        self._synced_gen = 0  # connection generation the sync was started for
        self._syncing = False
        self._sync_started_epoch = 0
        self._captured: collections.deque[tuple[int, float]] = collections.deque()  # unacked
        self._warned_unprotected = False
        # shared (under _cv)
        self._cv = threading.Condition()
        self._queue: collections.deque[tuple[int, Frame]] = collections.deque()
        self._queue_bytes = 0
        self._link_gen = 0  # generation of the handshaken connection, 0: none
        self._gen_counter = 0
        self._sock: socket.socket | None = None
        self._last_heard = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fenced = False
        self.state = "connecting"
        # statistics (written by one thread each, read by status())
        self.epochs_captured = 0
        self.epochs_sent = 0
        self.raw_bytes = 0  # epochs' payloads before compression
        self.epoch_bytes = 0  # epochs' frames as sent (compressed, with headers)
        self.sent_bytes = 0  # every frame sent (epochs and full syncs)
        self.syncs = 0
        self.degradations = 0
        self._recent: collections.deque[tuple[int, int]] = collections.deque(maxlen=STATS_WINDOW)

    # ------------------------------------------------------------------------------ any thread
    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._sender, name="livepatch-replication-sender", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._drop_link("stopping")
        with self._cv:
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        p = self.protection
        captured = list(self._captured)
        recent = list(self._recent)
        raw = sum(r for r, _ in recent)
        sent = sum(s for _, s in recent)
        return {
            "role": "primary",
            "state": "fenced" if self.fenced else self.state,
            "standby": f"{self.target[0]}:{self.target[1]}",
            "term": self.term,
            "epoch": p.epoch,
            "acked_epoch": p.acked,
            "lag_epochs": p.epoch - 1 - p.acked,
            "lag_ms": round((now - captured[0][1]) * 1000, 1) if captured else 0.0,
            "epoch_ms": self.options.epoch_ms,
            "protection": p.mode,
            "protected": p.active,
            "on_standby_loss": self.options.on_standby_loss,
            "held_replies": self._held_count(),
            "epochs_captured": self.epochs_captured,
            "epochs_sent": self.epochs_sent,
            "bytes_per_epoch": round(sent / len(recent), 1) if recent else 0.0,
            "raw_bytes_per_epoch": round(raw / len(recent), 1) if recent else 0.0,
            "compression_ratio": round(raw / sent, 2) if sent else None,
            "bytes_sent": self.sent_bytes,
            "epoch_bytes_sent": self.epoch_bytes,
            "epoch_bytes_raw": self.raw_bytes,
            "full_syncs": self.syncs,
            "degradations": self.degradations,
            "queue_bytes": self._queue_bytes,
        }

    def _held_count(self) -> int:
        return len(self.server.held)

    # ------------------------------------------------------------------------------ loop thread
    def tick(self) -> float:
        """Run at the server's quiescence point; returns the seconds until the next tick is due."""
        now = time.monotonic()
        # The common case, once per loop iteration: streaming, no epoch due, no reply waiting.
        if (
            now < self._next_epoch_at
            and now < self._next_heartbeat_at
            and not self.server.held.count
            and not self._syncing
            and self._link_gen == self._synced_gen
            and now < self._next_check_at
        ):
            return min(self._next_epoch_at, self._next_heartbeat_at) - now
        return self._tick(now)

    def _tick(self, now: float) -> float:
        link_gen = self._link_gen
        if not link_gen:
            self._syncing = False  # the sync's connection is gone: the next one starts afresh
        elif link_gen != self._synced_gen:
            self._begin_sync(link_gen)
        if self._syncing:
            self._produce_chunks(link_gen)
        if now >= self._next_epoch_at or self._waiting_for_current_epoch(link_gen):
            self._capture(link_gen, now)
        if now >= self._next_heartbeat_at:
            if link_gen:
                self._enqueue(link_gen, Frame(Kind.HEARTBEAT, 0, self.term))
            else:
                self._next_heartbeat_at = now + HEARTBEAT_S
        if now >= self._next_check_at:
            # The timeouts are in hundreds of ms: looking every CHECK_S is enough, and keeps the
            # per-iteration cost low while replies wait (every iteration then takes this path).
            self._next_check_at = now + CHECK_S
            self._check_timeouts(link_gen, now)
        if self._syncing:
            # More chunks to make: come back at once, unless the queue is full (then let it drain).
            return 0.0 if self._queue_bytes < SYNC_QUEUE_BYTES else 0.005
        due = min(self._next_epoch_at, self._next_check_at, self._next_heartbeat_at)
        return max(0.0, due - time.monotonic())

    def _check_timeouts(self, link_gen: int, now: float) -> None:
        p = self.protection
        # Dropping the link costs a full sync, so it waits longer than a held reply does (that one
        # is --on-standby-loss's business); longer still during a sync, whose chunks a busy standby
        # may take seconds to get through.
        silence = max(LINK_SILENCE_FACTOR * self._timeout_s, LINK_SILENCE_MIN_S)
        if self._syncing:
            silence *= 5
        if link_gen and now - self._last_heard > silence:
            log.warning(
                "replication: no word from the standby at %s:%d for %.0f ms: dropping the link "
                "(it will be resynchronised when it answers again)",
                *self.target,
                silence * 1000,
            )
            self._drop_link("silent standby")
        if p.active and not self.fenced and self.options.on_standby_loss == "degrade":
            since = self._oldest_hold()
            if since is not None and now - since > self._timeout_s:
                self._degrade()

    def _oldest_hold(self) -> float | None:
        held = self.server.held
        return held.oldest_since() if len(held) else None

    def _waiting_for_current_epoch(self, link_gen: int) -> bool:
        p = self.protection
        if not (link_gen and p.active and not self._syncing and self._synced_gen == link_gen):
            return False
        if p.acked != p.epoch - 1:
            return False  # an epoch is in flight: its ack triggers the next capture
        held = self.server.held
        return len(held) > 0 and held.newest_epoch() >= p.epoch

    def _begin_sync(self, gen: int) -> None:
        self._synced_gen = gen
        self._syncing = True
        self._sync_started_epoch = self.protection.epoch
        self.syncs += 1
        self.state = "syncing"
        # The changes so far are in the snapshot (its chunks are read after this): epochs from here on
        # must hold only later ones, so the epoch being filled is cut here and dropped.
        self.server.capture_epoch()
        self.server.start_snapshot()
        self._enqueue(gen, Frame(Kind.SNAPSHOT_BEGIN, self.protection.epoch, self.term))
        log.info("replication: full sync to %s:%d started", *self.target)

    def _produce_chunks(self, gen: int) -> None:
        budget = CHUNK_TICK_BYTES
        while budget > 0 and self._queue_bytes < SYNC_QUEUE_BYTES:
            try:
                chunk = self.server.snapshot_chunk(self.options.chunk_bytes)
            except SnapshotRestart as exc:
                log.info("replication: full sync restarted (%s)", exc)
                self._begin_sync(gen)
                return
            if chunk is None:
                self._syncing = False
                self.state = "streaming"
                self._enqueue(gen, Frame(Kind.SNAPSHOT_END, self.protection.epoch - 1, self.term))
                log.info("replication: full sync to %s:%d sent", *self.target)
                return
            budget -= len(chunk)
            self._enqueue(gen, Frame(Kind.SNAPSHOT_CHUNK, 0, self.term, chunk))

    def _capture(self, gen: int, now: float) -> None:
        p = self.protection
        payload = self.server.capture_epoch()
        epoch = p.epoch
        p.epoch += 1
        self.epochs_captured += 1
        self._next_epoch_at = now + self._epoch_s
        if gen and not self.fenced:
            self._captured.append((epoch, now))
            self._enqueue(gen, Frame(Kind.EPOCH, epoch, self.term, payload))
            if self._queue_bytes > self.options.max_queue_bytes:
                log.warning(
                    "replication: %d bytes wait for the standby at %s:%d (limit %d): it is too "
                    "slow; dropping the link (it will be resynchronised)",
                    self._queue_bytes,
                    *self.target,
                    self.options.max_queue_bytes,
                )
                self._drop_link("queue limit")

    def _degrade(self) -> None:
        p = self.protection
        p.active = False
        self._protect_from = p.epoch
        self.degradations += 1
        log.warning(
            "REPLICATION UNPROTECTED: the standby at %s:%d has not acknowledged for %.0f ms; "
            "releasing every held reply and acknowledging writes without it: writes acknowledged "
            "from now until it catches up MAY BE LOST ON FAILOVER (use --on-standby-loss hold to wait "
            "instead)",
            *self.target,
            self.options.standby_timeout_ms,
        )
        self.server.release_all_replies()

    def _on_ack(self, gen: int, epoch: int) -> None:
        """An acknowledgement of `epoch` on connection `gen` (loop thread, via call_soon_threadsafe)."""
        if gen != self._link_gen or gen != self._synced_gen or self.fenced:
            return  # from a connection given up since: it says nothing about the current standby
        p = self.protection
        if epoch > p.acked:
            p.acked = epoch
        captured = self._captured
        while captured and captured[0][0] <= epoch:
            captured.popleft()
        if not p.active and p.mode != "none" and epoch >= self._protect_from:
            p.active = True
            log.warning(
                "replication: the standby at %s:%d holds epoch %d: replies are protected again",
                *self.target,
                epoch,
            )
        self.server.release_replies(p.acked)

    def fence(self) -> None:
        """Acknowledge no write from now on: nothing held is released again (loop thread)."""
        self.fenced = True
        self.protection.active = True  # whatever the mode or policy: every write waits, forever

    def _on_fenced(self, standby_term: int) -> None:
        self.fence()
        log.critical(
            "REPLICATION FENCED: the standby at %s:%d follows term %d, newer than ours (%d): another "
            "primary took over; this server acknowledges no write from now on. Stop it and restart "
            "it as a standby (livepatch serve kv --standby ...)",
            *self.target,
            standby_term,
            self.term,
        )

    def _enqueue(self, gen: int, frame: Frame) -> None:
        with self._cv:
            if not gen or gen != self._link_gen:
                return  # no link, or frames for a connection given up since
            self._queue.append((gen, frame))
            self._queue_bytes += len(frame.payload)
            self._cv.notify()
        self._next_heartbeat_at = time.monotonic() + HEARTBEAT_S

    # ------------------------------------------------------------------------------ link half
    def _drop_link(self, why: str) -> None:
        with self._cv:
            sock = self._sock
            self._sock = None
            self._link_gen = 0
            self._queue.clear()
            self._queue_bytes = 0
            self._cv.notify_all()
        self._captured.clear()
        if sock is not None:
            log.info("replication: link to %s:%d dropped (%s)", *self.target, why)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if not self.fenced:
            self.state = "connecting"

    def _sender(self) -> None:
        import zstandard  # the kv extra; imported where used so the CLI starts without it

        attempt = 0
        compressor = zstandard.ZstdCompressor(level=self.options.compression_level)
        while not self._stop.is_set() and not self.fenced:
            sock = self._connect()
            if sock is None:
                self._stop.wait(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
                attempt += 1
                continue
            attempt = 0
            with self._cv:
                self._gen_counter += 1
                gen = self._gen_counter
                self._sock = sock
                self._queue.clear()
                self._queue_bytes = 0
                self._last_heard = time.monotonic()
                self._link_gen = gen
            threading.Thread(
                target=self._reader,
                args=(sock, gen),
                name="livepatch-replication-acks",
                daemon=True,
            ).start()
            self.server.call_soon_threadsafe(lambda: None)  # wake the loop: start the sync now
            self._send_loop(sock, gen, compressor)
            with self._cv:
                if self._link_gen == gen:
                    self._link_gen = 0
                    self._sock = None
            with contextlib.suppress(OSError):
                sock.close()

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.target, timeout=HANDSHAKE_TIMEOUT_S)
        except OSError:
            return None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(wire.encode(Frame(Kind.HELLO, 0, self.term)))
            decoder = wire.FrameDecoder()
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT_S
            while True:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                data = sock.recv(4096)
                if not data:
                    raise ConnectionError("closed during the handshake")
                frames = decoder.feed(data)
                if frames:
                    break
            answer = frames[0]
            if answer.kind == Kind.FENCED:
                self.server.call_soon_threadsafe(partial(self._on_fenced, answer.term))
                self.fenced = True
                sock.close()
                return None
            if answer.kind != Kind.WELCOME:
                raise wire.WireError(f"expected WELCOME, got {answer.kind.name}")
            sock.settimeout(None)
            log.info("replication: connected to the standby at %s:%d", *self.target)
            return sock
        except (OSError, wire.WireError) as exc:
            log.debug("replication: handshake with %s:%d failed: %s", *self.target, exc)
            sock.close()
            return None

    def _send_loop(self, sock: socket.socket, gen: int, compressor: Any) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._queue and self._link_gen == gen and not self._stop.is_set():
                    self._cv.wait(0.5)
                if self._link_gen != gen or self._stop.is_set():
                    return
                batch = list(self._queue)
                self._queue.clear()
            out = []
            for frame_gen, frame in batch:
                if frame_gen != gen:
                    continue
                payload = frame.payload
                flags = 0
                if len(payload) >= COMPRESS_MIN and frame.kind in (Kind.EPOCH, Kind.SNAPSHOT_CHUNK):
                    packed = compressor.compress(payload)
                    if len(packed) < len(payload):
                        payload, flags = packed, wire.COMPRESSED
                data = wire.encode(Frame(frame.kind, frame.epoch, frame.term, payload, flags))
                out.append(data)
                if frame.kind == Kind.EPOCH:
                    self.epochs_sent += 1
                    self.raw_bytes += len(frame.payload) + wire.HEADER.size
                    self.epoch_bytes += len(data)
                    self.sent_bytes += len(data)
                    self._recent.append((len(frame.payload) + wire.HEADER.size, len(data)))
                else:
                    self.sent_bytes += len(data)
            try:
                sock.sendall(b"".join(out))
            except OSError:
                return
            with self._cv:
                if self._link_gen == gen:
                    self._queue_bytes = max(
                        0, self._queue_bytes - sum(len(f.payload) for _, f in batch)
                    )

    def _reader(self, sock: socket.socket, gen: int) -> None:
        decoder = wire.FrameDecoder()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for frame in decoder.feed(data):
                    self._last_heard = time.monotonic()
                    if frame.kind == Kind.ACK and frame.epoch:
                        self.server.call_soon_threadsafe(partial(self._on_ack, gen, frame.epoch))
                    elif frame.kind == Kind.FENCED:
                        self.server.call_soon_threadsafe(partial(self._on_fenced, frame.term))
                        return
        except (OSError, wire.WireError):
            pass
        finally:
            if self._link_gen == gen:
                self.server.call_soon_threadsafe(partial(self._drop_if, gen, "connection lost"))

    def _drop_if(self, gen: int, why: str) -> None:
        if self._link_gen == gen:
            self._drop_link(why)
