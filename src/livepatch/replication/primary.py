"""The primary's side of the replication link: epochs, the full sync, acknowledgements, degradation.

Theory of operation
-------------------
Two halves that share only a queue and a few counters:

* The **loop half** (`tick`, `_on_ack`) runs on the server's serving thread. The server calls `tick` at
  its quiescence point every iteration, and sleeps at most until the time `tick` returns. A tick
    1. starts a full sync when a new connection was handshaken (`_link_gen` changed): SNAPSHOT_BEGIN
       carrying the epoch being filled, then chunks, at most CHUNK_TICK_BYTES per tick and only while
       less than SYNC_QUEUE_BYTES wait to be sent (the server keeps serving between chunks);
    2. captures an epoch every `epoch_ms`, or sooner when a reply waits for the epoch being filled,
       every earlier epoch is acknowledged and `group_commit_ms` have passed since the last capture
       (a group commit: with commit protection a write then waits about one round trip to the
       standby plus up to `group_commit_ms`, not half an epoch; the gap bounds the epochs per second,
       each of which costs a capture, a send, an acknowledgement and a release pass whatever it
       holds); an epoch is captured even without a link (its changes are then covered by the next
       full sync) and even when empty (a heartbeat);
    3. gives up on a link that is silent for 2 x `standby_timeout_ms` (at least 2 s; 5 times that
       during a full sync, i.e. from SNAPSHOT_BEGIN until the standby acknowledges an epoch after
       SNAPSHOT_END: the last chunks are sent long before a loaded standby has applied them) or
       whose queue passed `max_queue_bytes` (the standby is gone or too slow): the connection is
       dropped, the next one starts with a full sync;
    4. under `on_standby_loss="degrade"`, releases every held reply once the oldest has waited
       `standby_timeout_ms`, with a loud warning, and stops holding until the standby acknowledges an
       epoch captured after that (it has caught up); under "hold" replies wait for as long as it takes.
  A frame of at most INLINE_MAX bytes is sent by the loop itself when nothing waits before it (a
  non-blocking send; what the kernel does not take goes to the queue): in the steady state no other
  thread runs, so the loop never waits for the GIL. Acknowledgements are read on the loop thread too:
  the server watches the link's socket (`watch_readable`) and calls `_on_readable`, which releases
  replies. (A reader thread and a wake-up per acknowledgement cost the loop more than the replication
  itself: docs/performance.md, "Hot standby: the cost of commit protection".)
* The **sender thread** connects with backoff, says HELLO with the term, waits for WELCOME (or FENCED:
  a newer primary exists; this one then never releases a held reply again and stops reconnecting),
  hands the socket to the loop (`_attach`), then compresses (zstd, payloads of COMPRESS_MIN bytes or
  more) and sends the queued frames: large ones, full-sync chunks, and what an inline send left.
  It never calls into the server except `call_soon_threadsafe`. The loop owns closing the socket
  (it must stop watching the number first): the sender only shuts a failed one down.

Nothing the loop half does waits for the network: the worst it does is copy changed values, and send
or queue them. Frames queued for an older connection are dropped by the sender.

Concurrency: `tick` and `protection` on the loop thread only; `start`, `stop`, `status` on any thread.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import select
import socket
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from livepatch.replication import auth, wire
from livepatch.replication.host import ReplicatedServer, SnapshotRestart
from livepatch.replication.protection import Mode, Protection
from livepatch.replication.wire import Frame, Kind

log = logging.getLogger("livepatch.replication")

CHUNK_TICK_BYTES = 1 << 20  # snapshot bytes produced per loop iteration: bounds the pause per tick
SYNC_QUEUE_BYTES = 8 << 20  # produce no more chunks while this much waits to be sent
COMPRESS_MIN = 512  # smaller payloads go uncompressed (a pickled epoch of a few keys gains nothing)
INLINE_MAX = 64 << 10  # frames up to this size are sent by the loop itself when nothing waits
HANDSHAKE_TIMEOUT_S = 2.0
BACKOFF_S = (0.05, 0.1, 0.2, 0.5, 1.0)
STATS_WINDOW = 64  # epochs in the moving averages of status()
CHECK_S = 0.01  # how often the standby timeouts are looked at, at least (see _check_s)
CHECK_FRACTION = 50  # ... and at most every --standby-timeout-ms / this (2% of the timeout)
LINK_SILENCE_FACTOR = 2  # the link is dropped after this many --standby-timeout-ms of silence
LINK_SILENCE_MIN_S = 2.0  # ... and never sooner than this
SYNC_SILENCE_FACTOR = 5  # ... times this from a full sync's start until the standby acknowledges it
HEARTBEAT_S = 0.05  # a frame at least this often, so silence means trouble even with long epochs
RESUME_WINDOW_S = 10.0  # how long a new primary keeps its resume offer open (see PrimaryOptions)
# --group-commit-ms's default: the shortest gap between two epochs closed because a reply waits
# (docs/standby.md, "Tuning"; the trade measured in docs/performance.md, branch protect8).
GROUP_COMMIT_MS = 0.0

LossPolicy = Literal["degrade", "hold"]

# The frame kinds of the per-epoch paths, as module globals: `Kind.EPOCH` costs ~190 ns in CPython
# 3.11 (a lookup on the enum's class through EnumType), a global ~10 ns; a few per epoch.
_EPOCH, _ACK, _FENCED, _SNAPSHOT_CHUNK = Kind.EPOCH, Kind.ACK, Kind.FENCED, Kind.SNAPSHOT_CHUNK


@dataclass
class PrimaryOptions:
    epoch_ms: float = 50.0
    group_commit_ms: float = GROUP_COMMIT_MS
    protection: Mode = "commit"
    on_standby_loss: LossPolicy = "degrade"
    standby_timeout_ms: float = 1000.0
    max_queue_bytes: int = 64 << 20
    chunk_bytes: int = 256 << 10
    compression_level: int = 1
    secret: bytes | None = None  # --replication-secret-file: mutual proof at connection (auth.py)
    # A switchover's new primary: the last epoch of the previous term it held when it took over.
    # Offered in HELLO; a standby whose state is that epoch's (the old primary, drained cleanly)
    # accepts, and only the epochs since the takeover are shipped: no full sync. Until the first
    # link (at most RESUME_WINDOW_S) no epoch is captured, so the first one holds every change.
    resume_after: int = 0
    # A planned switchover's new primary (its old primary said SWITCHOVER on the wire, wire.py): that
    # server joins as this one's standby within tens of ms, so under "degrade" too write replies
    # are held until a standby holds them (at most --standby-timeout-ms, as any held reply), not
    # acknowledged while no standby does. After a failover (kill -9) nobody is about to join: False.
    await_standby: bool = False


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
        # No standby yet: under "degrade" nothing is held until one has synchronised, unless one is
        # known to be joining (await_standby).
        if self.options.on_standby_loss == "degrade" and not self.options.await_standby:
            self.protection.active = False
        self._protect_from = 1  # protection resumes once an epoch >= this is acknowledged
        # loop half
        self._epoch_s = self.options.epoch_ms / 1000.0
        self._timeout_s = self.options.standby_timeout_ms / 1000.0
        # Each check looks at every connection with a held reply; 2% of the timeout is precise
        # enough, and a long timeout then costs fewer checks.
        self._check_s = max(CHECK_S, self._timeout_s / CHECK_FRACTION)
        self._next_check_at = 0.0
        self._next_heartbeat_at = 0.0
        self._next_epoch_at = time.monotonic() + self._epoch_s
        # A waiting reply closes the epoch being filled no sooner than this (capture + the gap).
        self._gap_s = min(self.options.group_commit_ms, self.options.epoch_ms) / 1000.0
        self._next_group_at = 0.0
        self._synced_gen = 0  # connection generation the sync was started for
        self._syncing = False  # producing the snapshot's chunks
        # A full sync was begun on _synced_gen and the standby has not acknowledged its end yet (it
        # acknowledges no epoch before it applied SNAPSHOT_END): the link's longer patience holds.
        self._sync_unacked = False
        self._sync_started_epoch = 0
        self._captured: collections.deque[tuple[int, float]] = collections.deque()  # unacked
        self._resume_until = (
            time.monotonic() + RESUME_WINDOW_S if self.options.resume_after else 0.0
        )
        self._resumed_gen = 0  # the connection the standby accepted the resume offer on
        self.resume_accepted = False  # sender thread: the last handshake's answer to the offer
        self.standby_version = 0  # sender thread: the last WELCOME's protocol version (0: none yet)
        self.drained_epoch = 0  # drain(): the last epoch, when the standby acknowledged it
        self._warned_unprotected = False
        # shared (under _cv)
        # The loop's hot paths (_enqueue, once per epoch) take the lock itself: a C-level enter and
        # exit, where `with self._cv` runs Condition's Python __enter__/__exit__.
        self._lock = threading.RLock()
        self._cv = threading.Condition(self._lock)
        # frames to send, or the encoded rest of a frame an inline send could not finish
        self._queue: collections.deque[tuple[int, Frame | bytes]] = collections.deque()
        self._queue_bytes = 0
        self._link_gen = 0  # generation of the handshaken connection, 0: none
        self._gen_counter = 0
        self._sock: socket.socket | None = None
        self._sending = False  # the sender thread is writing to _sock: the loop must not
        self._attached: tuple[int, socket.socket, wire.FrameDecoder] | None = None  # loop thread
        self._loop_compressor: Any = None
        self._last_heard = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.fenced = False
        self._refusal = ""  # the last handshake refusal logged
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
        self.hand_off()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def hand_off(self) -> None:
        """Drop the link now, without waiting for the sender thread to end (stop() waits): the
        stopped loop hands over at once (the standby takes over), its process stops later."""
        self._stop.set()
        self._drop_link("stopping")
        with self._cv:
            self._cv.notify_all()

    def announce_switchover(self) -> bool:
        """Tell the standby that this is a planned hand-over (wire.Kind.SWITCHOVER), after drain()
        succeeded and before hand_off() (loop thread). False, logged, when it could not be said:
        the standby then takes over as after a failover (the new primary holds nothing for us)."""
        gen = self._link_gen
        attached = self._attached
        epoch = self.drained_epoch
        why = ""
        if not epoch:
            why = "the drain did not complete"
        elif not gen or attached is None or attached[0] != gen:
            why = "the link is gone"
        elif self.standby_version < 2:
            why = f"the standby speaks protocol version {self.standby_version}"
        data = wire.encode(Frame(Kind.SWITCHOVER, epoch, self.term))
        deadline = time.monotonic() + 0.5
        with self._cv:
            # Behind any frame still queued (a heartbeat): wait for the sender to have written it.
            while not why and (self._queue or self._sending):
                if self._link_gen != gen or time.monotonic() > deadline:
                    why = "the link is gone or stuck"
                    break
                self._cv.wait(0.002)
            if not why:
                assert attached is not None
                try:
                    # 22 bytes into an idle socket. Were only part taken, the standby would read a
                    # cut frame and then the close: a failover's path, which is safe.
                    sent = attached[1].send(data, socket.MSG_DONTWAIT)
                except OSError as exc:
                    sent, why = 0, str(exc)
                if sent != len(data) and not why:
                    why = "the socket's buffer is full"
        if why:
            log.warning(
                "replication: could not tell the standby at %s:%d that this is a switchover (%s): "
                "it takes over as after a failover",
                *self.target,
                why,
            )
            return False
        log.info(
            "replication: told the standby at %s:%d to take over after epoch %d (switchover)",
            *self.target,
            epoch,
        )
        return True

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
            "group_commit_ms": self.options.group_commit_ms,
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
            "full_sync_unacked": self._sync_unacked,
            "degradations": self.degradations,
            "queue_bytes": self._queue_bytes,
            "refused": self._refusal or None,
        }

    def _held_count(self) -> int:
        return len(self.server.held)

    # ------------------------------------------------------------------------------ loop thread
    def tick(self, now: float = 0.0) -> float:
        """Run at the server's quiescence point; returns the time.monotonic() by which to tick again.

        now: time.monotonic() read by the server this iteration (0: read it here). A few
        milliseconds stale is fine: the deadlines here are tens of milliseconds."""
        if not now:
            now = time.monotonic()
        # The common case, once per loop iteration: streaming, no epoch due, and no reply waiting for
        # an epoch to be captured now (none waits, or an epoch is in flight: its acknowledgement
        # triggers the next capture). Replies wait most of the time under a load that writes.
        p = self.protection
        held = self.server.held.count
        if (
            now < self._next_epoch_at
            and now < self._next_heartbeat_at
            and now < self._next_check_at
            and (not held or p.acked != p.epoch - 1 or now < self._next_group_at)
            and not self._syncing
            and self._link_gen == self._synced_gen
        ):
            at = min(self._next_epoch_at, self._next_heartbeat_at)
            if held and p.acked == p.epoch - 1 and self._next_group_at < at:
                at = self._next_group_at  # a group commit is due then
            return at
        return self._tick(time.monotonic())

    def _tick(self, now: float) -> float:
        link_gen = self._link_gen
        if not link_gen:
            self._syncing = False  # the sync's connection is gone: the next one starts afresh
        elif link_gen != self._synced_gen:
            if link_gen == self._resumed_gen and self.protection.epoch == 1:
                self._resume(link_gen)  # nothing captured yet: the first epoch holds everything
            else:
                self._begin_sync(link_gen)
        if self._syncing:
            self._produce_chunks(link_gen)
        if now >= self._next_epoch_at or (
            now >= self._next_group_at and self._waiting_for_current_epoch(link_gen)
        ):
            self._capture(link_gen, now)
        if now >= self._next_heartbeat_at:
            if link_gen:
                self._enqueue(link_gen, Frame(Kind.HEARTBEAT, 0, self.term))
            else:
                self._next_heartbeat_at = now + HEARTBEAT_S
        if now >= self._next_check_at:
            # The timeouts are in hundreds of ms: looking every CHECK_S is enough, and keeps the
            # per-iteration cost low while replies wait (every iteration then takes this path).
            self._next_check_at = now + self._check_s
            self._check_timeouts(link_gen, now)
        if self._syncing:
            # More chunks to make: come back at once, unless the queue is full (then let it drain).
            return now if self._queue_bytes < SYNC_QUEUE_BYTES else now + 0.005
        at = min(self._next_epoch_at, self._next_check_at, self._next_heartbeat_at)
        if self._next_group_at < at and self._waiting_for_current_epoch(link_gen):
            at = self._next_group_at  # a reply waits for the gap to pass
        return at

    def _check_timeouts(self, link_gen: int, now: float) -> None:
        p = self.protection
        # Dropping the link costs a full sync, so it waits longer than a held reply does (that one
        # is --on-standby-loss's business); longer still during a sync, whose chunks a busy standby
        # may take seconds to get through: until it acknowledges the sync's end, not until the last
        # chunk is sent (a loaded standby applied one for 35 s after that, and was dropped after 2 s
        # of silence, again and again: docs/performance.md, session 7).
        silence = max(LINK_SILENCE_FACTOR * self._timeout_s, LINK_SILENCE_MIN_S)
        if self._syncing or self._sync_unacked:
            silence *= SYNC_SILENCE_FACTOR
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
        self._sync_unacked = True
        self._sync_started_epoch = self.protection.epoch
        self.syncs += 1
        self.state = "syncing"
        # The changes so far are in the snapshot (its chunks are read after this): epochs from here on
        # must hold only later ones, so the epoch being filled is cut here and dropped.
        self.server.capture_epoch()
        self.server.start_snapshot()
        self._enqueue(gen, Frame(Kind.SNAPSHOT_BEGIN, self.protection.epoch, self.term))
        log.info("replication: full sync to %s:%d started", *self.target)

    def _resume(self, gen: int) -> None:
        self._synced_gen = gen
        self._syncing = False
        self._sync_unacked = False
        self._resume_until = 0.0
        self.state = "streaming"
        # Capture the first epoch (every change since the takeover) in this tick: the sooner the
        # standby acknowledges it, the sooner those writes are protected (and held replies go).
        self._next_epoch_at = 0.0
        log.info(
            "replication: the standby at %s:%d holds epoch %d of the previous term: streaming "
            "without a full sync",
            *self.target,
            self.options.resume_after,
        )

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
        if not gen and self._resume_until:
            if now < self._resume_until:
                self._next_epoch_at = now + self._epoch_s
                return  # the changes wait for the resumed link's first epoch
            self._resume_until = 0.0  # too late: the first link gets a full sync
        payload = self.server.capture_epoch()
        epoch = p.epoch
        p.epoch += 1
        self.epochs_captured += 1
        self._next_epoch_at = now + self._epoch_s
        self._next_group_at = now + self._gap_s
        if gen and not self.fenced:
            self._captured.append((epoch, now))
            self._enqueue(gen, Frame(_EPOCH, epoch, self.term, payload))
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
        # A standby acknowledges no epoch on a connection before it applied that connection's
        # SNAPSHOT_END (ACK(0) until then): this is the end of the full sync.
        self._sync_unacked = False
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

    def drain(self, timeout_s: float) -> str:
        """Ship the last changes and wait until the standby holds them (loop thread, once the server
        executes no more requests: SIGTERM, SHUTDOWN, a switchover). Acknowledgements release held
        replies as usual (the server sends them before closing its clients).

        Returns "" when the standby acknowledged everything, otherwise why not (nothing more is then
        released: the caller closes those connections unanswered): no synchronised, attached
        standby, this primary is fenced, or the standby did not answer within timeout_s."""
        p = self.protection
        gen = self._link_gen
        attached = self._attached
        self.drained_epoch = 0
        if self.fenced:
            return "fenced"
        if not gen or attached is None or attached[0] != gen:
            return "no standby connected"
        if self._syncing or gen != self._synced_gen:
            return "the standby's full sync is not complete"
        self._capture(gen, time.monotonic())
        target = p.epoch - 1
        deadline = time.monotonic() + timeout_s
        sock = attached[1]
        while p.acked < target:
            left = deadline - time.monotonic()
            if left <= 0:
                return (
                    f"the standby did not acknowledge epoch {target} in {timeout_s * 1000:.0f} ms"
                )
            if self._link_gen != gen:
                return "the link to the standby was lost"
            try:
                readable, _, _ = select.select([sock], [], [], min(left, 0.05))
            except (OSError, ValueError) as exc:
                return f"the link to the standby failed: {exc}"
            if readable:
                self._on_readable(gen)
        self.drained_epoch = target
        return ""

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
        with self._lock:
            if not gen or gen != self._link_gen:
                return  # no link, or frames for a connection given up since
            attached = self._attached
            if (
                not self._queue
                and not self._sending
                and attached is not None
                and attached[0] == gen
                and len(frame.payload) <= INLINE_MAX
            ):
                self._send_inline(gen, attached[1], frame)
            else:
                self._queue.append((gen, frame))
                self._queue_bytes += len(frame.payload)
                self._cv.notify()
        self._next_heartbeat_at = time.monotonic() + HEARTBEAT_S

    def _send_inline(self, gen: int, sock: socket.socket, frame: Frame) -> None:
        """Send one frame from the loop without blocking (under _cv); queue what the kernel left."""
        if self._loop_compressor is None:
            import zstandard

            self._loop_compressor = zstandard.ZstdCompressor(level=self.options.compression_level)
        data = self._encode(frame, self._loop_compressor)
        self._count(frame, data)
        try:
            sent = sock.send(data, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the sender meets the same error and reports the link lost
        if sent < len(data):
            rest = data[sent:]
            self._queue.append((gen, rest))
            self._queue_bytes += len(rest)
            self._cv.notify()

    @staticmethod
    def _encode(frame: Frame, compressor: Any) -> bytes:
        """The frame's bytes, compressed when that pays."""
        payload = frame.payload
        if len(payload) >= COMPRESS_MIN and frame.kind in (_EPOCH, _SNAPSHOT_CHUNK):
            packed = compressor.compress(payload)
            if len(packed) < len(payload):
                return wire.encode(
                    Frame(frame.kind, frame.epoch, frame.term, packed, wire.COMPRESSED)
                )
        return wire.encode(frame)  # as it is: no second Frame (one per epoch otherwise)

    def _count(self, frame: Frame, data: bytes) -> None:
        """Statistics of a frame sent as data (under _cv: both the loop and the sender send)."""
        self.sent_bytes += len(data)
        if frame.kind == _EPOCH:
            raw = len(frame.payload) + wire.HEADER.size
            self.epochs_sent += 1
            self.raw_bytes += raw
            self.epoch_bytes += len(data)
            self._recent.append((raw, len(data)))

    # ------------------------------------------------------------------------------ link half
    def _drop_link(self, why: str) -> None:
        """Give the connection up (loop thread, or any thread once the loop has stopped)."""
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
                sock.shutdown(socket.SHUT_RDWR)  # the sender's send fails: it reconnects
        self._detach()
        if not self.fenced:
            self.state = "connecting"

    def _attach(self, sock: socket.socket, gen: int) -> None:
        """The sender handshook `sock` as connection gen: read its acknowledgements here (loop)."""
        self._detach()
        if gen != self._link_gen:
            with contextlib.suppress(OSError):
                sock.close()  # given up before it was attached
            return
        self.server.watch_readable(sock.fileno(), partial(self._on_readable, gen))
        with self._cv:
            self._attached = (gen, sock, wire.FrameDecoder())

    def _detach(self) -> None:
        with self._cv:
            attached, self._attached = self._attached, None
        if attached is not None:
            sock = attached[1]
            with contextlib.suppress(OSError, ValueError):
                self.server.unwatch(sock.fileno())
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _on_readable(self, gen: int) -> None:
        """Acknowledgements (or FENCED) from the standby, read on the loop thread."""
        attached = self._attached
        if attached is None or attached[0] != gen:
            return
        _, sock, decoder = attached
        try:
            data = sock.recv(4096, socket.MSG_DONTWAIT)  # acknowledgements: 22 bytes each
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop_if(gen, f"receive failed: {exc}")
            return
        if not data:
            self._drop_if(gen, "closed by the standby")
            return
        try:
            frames = decoder.feed(data)
        except wire.WireError as exc:
            self._drop_if(gen, f"bad data from the standby: {exc}")
            return
        self._last_heard = time.monotonic()
        acked = 0
        for frame in frames:
            if frame.kind == _ACK:
                acked = max(acked, frame.epoch)
            elif frame.kind == _FENCED:
                self._on_fenced(frame.term)
                self._drop_if(gen, "fenced")
                return
        if acked:
            self._on_ack(gen, acked)

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
                if self.resume_accepted:
                    self._resumed_gen = gen
                else:
                    self._resume_until = 0.0  # the first link decides: a full sync
            # The loop reads acknowledgements from now on (and starts the full sync: this wakes it).
            self.server.call_soon_threadsafe(partial(self._attach, sock, gen))
            self._send_loop(sock, gen, compressor)
            with self._cv:
                if self._link_gen == gen and not self._stop.is_set():
                    # A send failed: the loop gives the link up (and closes the socket, which it may
                    # be watching). Wait for that before connecting again.
                    self.server.call_soon_threadsafe(partial(self._drop_if, gen, "send failed"))
                    while self._link_gen == gen and not self._stop.is_set():
                        self._cv.wait(0.5)

    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self.target, timeout=HANDSHAKE_TIMEOUT_S)
        except OSError:
            return None
        secret = self.options.secret
        mine = auth.nonce() if secret is not None else b""
        offer = self.options.resume_after if self._resume_until else 0
        self.resume_accepted = False
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hello = Frame(Kind.HELLO, offer, self.term, mine, wire.with_version())
            sock.sendall(wire.encode(hello))
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
            if answer.kind == Kind.DENIED:
                self._refused(answer.payload.decode("utf-8", "replace"))
                sock.close()
                return None
            if answer.kind != Kind.WELCOME:
                raise wire.WireError(f"expected WELCOME, got {answer.kind.name}")
            self.standby_version = wire.version_of(answer)
            if secret is not None:
                theirs, given = (
                    answer.payload[: auth.NONCE_BYTES],
                    answer.payload[auth.NONCE_BYTES :],
                )
                if len(theirs) != auth.NONCE_BYTES or not auth.check(
                    secret, b"standby", mine, theirs, given
                ):
                    self._refused(
                        "the standby did not prove the shared secret: its "
                        "--replication-secret-file differs from this primary's, or it has none"
                    )
                    sock.close()
                    return None
                proof = auth.proof(secret, b"primary", theirs, mine)
                sock.sendall(wire.encode(Frame(Kind.AUTH, 0, self.term, proof)))
            sock.settimeout(None)
            self._refusal = ""
            self.resume_accepted = bool(offer) and answer.epoch == offer
            log.info("replication: connected to the standby at %s:%d", *self.target)
            return sock
        except (OSError, wire.WireError) as exc:
            log.debug("replication: handshake with %s:%d failed: %s", *self.target, exc)
            sock.close()
            return None

    def _refused(self, why: str) -> None:
        """The standby refused us, or we refused it: said once per distinct reason (we retry)."""
        if why != self._refusal:
            self._refusal = why
            log.error("replication: REFUSED by or of the standby at %s:%d: %s", *self.target, why)

    def _send_loop(self, sock: socket.socket, gen: int, compressor: Any) -> None:
        while not self._stop.is_set():
            with self._cv:
                while not self._queue and self._link_gen == gen and not self._stop.is_set():
                    self._cv.wait(0.5)
                if self._link_gen != gen or self._stop.is_set():
                    return
                batch = list(self._queue)
                self._queue.clear()
                self._sending = True
            try:
                out = []
                encoded = []
                for frame_gen, item in batch:
                    if frame_gen != gen:
                        continue
                    if isinstance(item, bytes):
                        out.append(item)  # what an inline send left: already encoded and counted
                    else:
                        data = self._encode(item, compressor)
                        encoded.append((item, data))
                        out.append(data)
                with self._cv:
                    for frame, data in encoded:
                        self._count(frame, data)
                sock.sendall(b"".join(out))
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF, errno.ENOTCONN):
                    log.info("replication: sending to %s:%d failed: %s", *self.target, exc)
                return
            finally:
                with self._cv:
                    self._sending = False
                    if self._link_gen == gen:
                        self._queue_bytes = max(
                            0, self._queue_bytes - sum(_size(i) for _, i in batch)
                        )

    def _drop_if(self, gen: int, why: str) -> None:
        if self._link_gen == gen:
            self._drop_link(why)


def _size(item: Frame | bytes) -> int:
    return len(item) if isinstance(item, bytes) else len(item.payload)
