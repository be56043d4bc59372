"""The standby: receive and apply epochs, acknowledge them, and take over when the primary is gone.

Theory of operation
-------------------
One thread (`run`, the caller's) does everything with select() over the replication listener and the
primary's connection, so applying, acknowledging and taking over never interleave: a takeover sees
whole epochs only.

* A connection starts with HELLO(term). With a shared secret the primary must then prove it (AUTH;
  livepatch.replication.auth) before anything else, its term included, is believed; a primary that
  cannot is answered DENIED and dropped. A primary whose term is older than the newest this standby
  has seen is answered FENCED (another primary took over since) and dropped; otherwise WELCOME.
  A newer connection replaces an older one (the primary reconnected).
* Every connection begins with a full sync (one exception: after a switchover, the old primary,
  drained cleanly, holds exactly the state the new one took over with; it accepts the new primary's
  HELLO offering that epoch (StandbyOptions.resume) and gets only the epochs since, numbered from 1): SNAPSHOT_BEGIN(S), chunks and epochs in the order the
  primary produced them, SNAPSHOT_END. The server builds the new state beside the current one and
  swaps it in at the end; a sync cut short leaves the previous state, which is what the primary's
  acknowledged replies rely on. Only then does this connection acknowledge: ACK(max(S-1, last epoch)),
  then ACK(e) after applying each epoch e. Frames that acknowledge nothing (chunks, epochs during a
  sync) are answered ACK(0): the primary hears the standby is alive. One read may bring seconds of
  work (a whole compressed snapshot, a huge epoch, what piled up while this process or the primary
  was paused): the acknowledgement so far goes out whenever ALIVE_S passed since the last one, not
  only after the whole read, or the primary hears nothing for that long and drops the link as silent.
* The primary is declared gone when its connection closes, or when it has been silent for
  `failover_after_ms` (the primary sends a frame at least every 50 ms). During a full sync, and
  before one ever completed (such a standby cannot take over), it waits SYNC_SILENCE_S instead:
  dropping the link restarts the full sync, which on a loaded machine then never finished (the
  100-kill benchmark stalled so twice at load 40-60, docs/performance.md session 7). A primary that
  dies mid-sync closes the link at once; only a hung one is noticed later (on one machine it keeps
  the address anyway; with etcd the lease decides), as the primary waits 5 x longer too. Then, if a takeover address is given and a sync
  ever completed, the standby binds that address, retrying every TAKEOVER_RETRY_S while no new
  connection comes. On one machine the address is the lock: it cannot be bound while the primary's
  process lives (even stopped), so a primary that is only cut off or paused is never doubled (no
  split brain); it is free the moment the process is gone. Bound, the standby closes its replication
  listener (fencing: a primary that comes back can never get an acknowledgement from it again, so
  it never releases a held reply), takes the next term, and returns the listener to serve on.

Concurrency: `run` on one thread; `request_stop` and `status` from any thread (or signal handler).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from livepatch.replication import auth, wire
from livepatch.replication.host import ReplicatedServer
from livepatch.replication.wire import Frame, Kind

log = logging.getLogger("livepatch.replication")

TAKEOVER_RETRY_S = 0.02
POLL_S = 0.02
ACK_SEND_TIMEOUT_S = 1.0
SYNC_SILENCE_S = 10.0  # silence tolerated during a full sync and before the first one (above)
# While applying one read's frames, acknowledge what is applied so far at least this often: the
# primary drops a link silent for 2 s (10 s in a full sync); a loaded standby once spent over 10 s on
# one read (a whole 300,000-key snapshot) and was dropped mid-sync, the sync restarted (session 9).
# One frame is applied whole: a huge epoch (one command that wrote millions of keys) stays silent.
ALIVE_S = 0.1


@dataclass
class StandbyOptions:
    failover_after_ms: float = 300.0
    takeover: tuple[str, int] | None = None  # the primary's service address; None: never take over
    term: int = 0
    # The old primary of a switchover, drained cleanly: (its term, its last epoch), which the
    # standby that took over holds too. A primary of the next term offering that epoch in HELLO
    # (PrimaryOptions.resume_after) is accepted without a full sync, once.
    resume: tuple[int, int] | None = None
    # Asked before each attempt to bind the takeover address: False -> not now (e.g. the etcd leader
    # key is still held: the primary lives, only this standby cannot reach it). None: always yes.
    may_take_over: Callable[[], bool] | None = None
    secret: bytes | None = None  # --replication-secret-file: the primary must prove it (auth.py)


def listen(address: tuple[str, int], backlog: int = 1024) -> socket.socket:
    """A TCP listener on address (SO_REUSEADDR: a predecessor's TIME_WAIT connections do not block)."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class Standby:
    def __init__(
        self,
        server: ReplicatedServer,
        address: tuple[str, int],
        options: StandbyOptions,
        listener: socket.socket | None = None,
    ) -> None:
        """listener: already bound to address (a switchover binds it before it hands over)."""
        self.server = server
        self.options = options
        self.term = options.term
        self.listener = listener if listener is not None else listen(address, 8)
        self.address = self.listener.getsockname()[:2]
        self._stop = False
        self._conn: socket.socket | None = None
        self._decoder = wire.FrameDecoder()
        import zstandard  # the kv extra; imported where used so the CLI starts without it

        self._decompressor = zstandard.ZstdDecompressor()
        self._welcomed = False
        self._authenticating: tuple[int, bytes, bytes] | None = None  # (HELLO's term, Np, Ns)
        self._resume_epoch = 0
        self._syncing = False
        self._synced_conn = False  # this connection's full sync completed: it may acknowledge
        self._sync_base = 0
        self.synced_ever = False
        self.last_epoch = 0
        self.acked_epoch = 0
        self.state = "waiting"
        self.epochs_applied = 0
        self.bytes_received = 0
        self.full_syncs = 0
        self.connections = 0
        self._last_frame = time.monotonic()
        self._next_bind_try = 0.0
        self._bind_refusals = 0
        # The primary said SWITCHOVER (wire.py) after we acknowledged its last epoch: a planned
        # hand-over, so it follows us as our standby (kvserver.replication_cli: the new primary then
        # holds write replies until it has joined). Stays False after a failover.
        self.planned_handover = False

    # ------------------------------------------------------------------------------ any thread
    def request_stop(self) -> None:
        self._stop = True

    def status(self) -> dict[str, Any]:
        return {
            "role": "standby",
            "state": self.state,
            "listen": f"{self.address[0]}:{self.address[1]}",
            "takeover": (
                f"{self.options.takeover[0]}:{self.options.takeover[1]}"
                if self.options.takeover
                else None
            ),
            "term": self.term,
            "epoch": self.last_epoch,
            "acked_epoch": self.acked_epoch,
            "since_last_frame_ms": round((time.monotonic() - self._last_frame) * 1000, 1),
            "epochs_applied": self.epochs_applied,
            "bytes_received": self.bytes_received,
            "full_syncs": self.full_syncs,
            "connections": self.connections,
            "planned_handover": self.planned_handover,
            "failover_after_ms": self.options.failover_after_ms,
        }

    # ------------------------------------------------------------------------------ run thread
    def run(self) -> socket.socket | None:
        """Follow primaries until one is gone and the takeover address is ours: returns that listener
        (the caller serves on it). Returns None when stopped."""
        try:
            while not self._stop:
                rlist: list[socket.socket] = [self.listener]
                if self._conn is not None:
                    rlist.append(self._conn)
                try:
                    ready, _, _ = select.select(rlist, [], [], POLL_S)
                except InterruptedError:
                    ready = []
                if self.listener in ready:
                    self._accept()
                if self._conn is not None and self._conn in ready:
                    self._receive()
                now = time.monotonic()
                silence_s = self.options.failover_after_ms / 1000.0
                if self._syncing or not self.synced_ever:
                    silence_s = max(silence_s, SYNC_SILENCE_S)
                if self._conn is not None and now - self._last_frame > silence_s:
                    log.warning(
                        "replication: the primary has been silent for %.0f ms: declaring it gone",
                        silence_s * 1000,
                    )
                    self._lose_connection("silent")
                if (
                    self._conn is None
                    and self.synced_ever
                    and self.options.takeover
                    and now >= self._next_bind_try
                ):
                    self._next_bind_try = now + TAKEOVER_RETRY_S
                    service = self._try_takeover()
                    if service is not None:
                        return service
            return None
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            self.listener.close()

    def _accept(self) -> None:
        try:
            conn, peer = self.listener.accept()
        except OSError:
            return
        if self._conn is not None:
            log.info("replication: a new primary connection replaces the current one")
            self._lose_connection("replaced")
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(ACK_SEND_TIMEOUT_S)
        self._conn = conn
        self._decoder = wire.FrameDecoder()
        self._welcomed = False
        self._authenticating = None
        self._resume_epoch = 0  # HELLO's resume offer, when this standby accepts it (else 0)
        self.planned_handover = False  # said on this connection or not at all
        self._syncing = False
        self._synced_conn = False
        self._last_frame = time.monotonic()
        self.connections += 1
        log.info("replication: primary connected from %s:%d", *peer[:2])

    def _lose_connection(self, why: str) -> None:
        conn = self._conn
        self._conn = None
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.close()
        if self._syncing:
            log.warning("replication: full sync cut short (%s): keeping the previous state", why)
        self._syncing = False
        self._synced_conn = False
        self._bind_refusals = 0
        self.state = "primary-lost" if self.synced_ever else "waiting"

    def _receive(self) -> None:
        conn = self._conn
        assert conn is not None
        try:
            data = conn.recv(1 << 20)
        except (BlockingIOError, InterruptedError, TimeoutError):
            return
        except OSError as exc:
            self._lose_connection(f"receive failed: {exc}")
            return
        if not data:
            self._lose_connection("closed by the primary")
            return
        self.bytes_received += len(data)
        self._last_frame = time.monotonic()
        try:
            ack = self._handle(self._decoder.feed(data))
        except (wire.WireError, ProtocolViolation) as exc:
            log.warning("replication: bad data from the primary (%s): dropping the connection", exc)
            self._lose_connection("protocol error")
            return
        except Exception:
            log.exception(
                "replication: applying the primary's data failed: dropping the connection"
            )
            self._lose_connection("apply failed")
            return
        # Silence counts from when the data was dealt with: applying a large batch on a busy
        # machine may take longer than failover_after_ms, and more may be waiting already.
        self._last_frame = time.monotonic()
        if ack is not None and self._conn is not None:
            self._send(Frame(Kind.ACK, ack, self.term))

    def _send(self, frame: Frame) -> None:
        conn = self._conn
        if conn is None:
            return
        try:
            conn.sendall(wire.encode(frame))
        except OSError as exc:
            self._lose_connection(f"send failed: {exc}")

    def _handle(self, frames: list[Frame]) -> int | None:
        """Apply frames in order; returns the epoch to acknowledge (0: alive only), or None."""
        ack: int | None = None
        said_at = time.monotonic()
        for frame in frames:
            if ack is not None and time.monotonic() - said_at >= ALIVE_S:
                # Applying this read takes long: say what is applied so far (at least "alive").
                self._send(Frame(Kind.ACK, ack, self.term))
                if self._conn is None:
                    return None  # the send failed: the connection is gone, and with it the rest
                ack = None
                said_at = time.monotonic()
            if not self._welcomed:
                if not self._greet(frame):
                    return None
                continue
            kind = frame.kind
            if kind == Kind.EPOCH:
                if not (self._syncing or self._synced_conn):
                    raise ProtocolViolation("an epoch before the full sync")
                self.server.apply_epoch(wire.payload_of(frame, self._decompressor))
                self.last_epoch = frame.epoch
                self.epochs_applied += 1
                if self._synced_conn:
                    self.acked_epoch = frame.epoch
                    ack = frame.epoch
                elif ack is None:
                    ack = 0
            elif kind == Kind.HEARTBEAT:
                if ack is None:
                    ack = 0  # alive
            elif kind == Kind.SWITCHOVER:
                self._on_switchover(frame)
                return None  # the primary closes the link: nothing more to read or acknowledge
            elif kind == Kind.SNAPSHOT_CHUNK:
                if not self._syncing:
                    raise ProtocolViolation("a snapshot chunk outside a full sync")
                self.server.apply_snapshot_chunk(wire.payload_of(frame, self._decompressor))
                if ack is None:
                    ack = 0
            elif kind == Kind.SNAPSHOT_BEGIN:
                self.server.begin_full_sync()
                self._syncing = True
                self._synced_conn = False
                self._sync_base = frame.epoch - 1
                self.last_epoch = self._sync_base
                self.state = "syncing"
                self.full_syncs += 1
                if ack is None:
                    ack = 0
            elif kind == Kind.SNAPSHOT_END:
                if not self._syncing:
                    raise ProtocolViolation("SNAPSHOT_END outside a full sync")
                self.server.end_full_sync()
                self._syncing = False
                self._synced_conn = True
                self.synced_ever = True
                self.state = "streaming"
                self.acked_epoch = max(self._sync_base, self.last_epoch)
                ack = self.acked_epoch
                log.info("replication: full sync complete at epoch %d", self.acked_epoch)
            else:
                raise ProtocolViolation(f"unexpected {kind.name} from the primary")
        return ack

    def _on_switchover(self, frame: Frame) -> None:
        """The primary hands over: take over at once (its address is free already), and say it
        was planned only if we hold exactly its last epoch (else it is treated as a failover)."""
        if self._synced_conn and frame.term == self.term and frame.epoch == self.acked_epoch:
            self.planned_handover = True
            log.info(
                "replication: the primary hands over after epoch %d (switchover): taking over",
                frame.epoch,
            )
        else:
            log.warning(
                "replication: SWITCHOVER after epoch %d of term %d, but this standby holds epoch "
                "%d of term %d: taking over as after a failover",
                frame.epoch,
                frame.term,
                self.acked_epoch,
                self.term,
            )
        self._lose_connection("switchover")
        self._next_bind_try = 0.0

    def _greet(self, frame: Frame) -> bool:
        """The handshake: HELLO (and AUTH with a secret). False: the connection was refused."""
        secret = self.options.secret
        if self._authenticating is None:
            if frame.kind != Kind.HELLO:
                raise ProtocolViolation(f"expected HELLO, got {frame.kind.name}")
            resume = self.options.resume
            if frame.epoch and resume is not None and resume == (frame.term - 1, frame.epoch):
                self._resume_epoch = frame.epoch  # applied once admitted (after AUTH, if any)
            if secret is None:
                if frame.payload:
                    return self._deny(
                        "the primary has a --replication-secret-file and this standby has none: "
                        "give both the same file"
                    )
                return self._admit(frame.term)
            if len(frame.payload) != auth.NONCE_BYTES:
                return self._deny(
                    "the primary has no --replication-secret-file and this standby has one: give "
                    "both the same file"
                )
            mine = auth.nonce()
            self._authenticating = (frame.term, frame.payload, mine)
            welcome = mine + auth.proof(secret, b"standby", frame.payload, mine)
            self._send(
                Frame(Kind.WELCOME, self._resume_epoch, self.term, welcome, wire.with_version())
            )
            return self._conn is not None
        term, theirs, mine = self._authenticating
        assert secret is not None
        if frame.kind != Kind.AUTH or not auth.check(
            secret, b"primary", mine, theirs, frame.payload
        ):
            return self._deny(
                "the primary did not prove the shared secret: its --replication-secret-file "
                "differs from this standby's"
            )
        self._authenticating = None
        return self._admit(term, welcomed=True)

    def _admit(self, term: int, welcomed: bool = False) -> bool:
        if term < self.term:
            log.warning(
                "replication: refusing a primary of term %d (this standby follows term %d)",
                term,
                self.term,
            )
            self._send(Frame(Kind.FENCED, 0, self.term))
            self._lose_connection("fenced an old primary")
            return False
        self.term = term
        self._welcomed = True
        resumed = self._resume_epoch
        if not welcomed:
            self._send(Frame(Kind.WELCOME, resumed, self.term, b"", wire.with_version()))
        if resumed and self._conn is not None:
            # This state is the new primary's at its takeover: its epochs since then follow.
            self.options.resume = None
            self._synced_conn = True
            self.synced_ever = True
            self.state = "streaming"
            self.last_epoch = self.acked_epoch = 0
            log.info(
                "replication: resumed after epoch %d of term %d: no full sync", resumed, term - 1
            )
        return self._conn is not None

    def _deny(self, why: str) -> bool:
        log.error("replication: REFUSED the primary: %s", why)
        self._send(Frame(Kind.DENIED, 0, self.term, why.encode()))
        self._lose_connection("refused")
        return False

    def _try_takeover(self) -> socket.socket | None:
        assert self.options.takeover is not None
        may = self.options.may_take_over
        if may is not None:
            try:
                allowed = may()
            except Exception as exc:  # an unreachable arbiter means: not now
                log.warning("replication: cannot ask whether to take over: %s", exc)
                allowed = False
            if not allowed:
                if self._bind_refusals == 0:
                    log.warning(
                        "replication: the primary is unreachable but still the leader: waiting"
                    )
                self._bind_refusals += 1
                return None
        try:
            service = listen(self.options.takeover)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                log.error(
                    "replication: cannot bind %s:%d to take over: %s", *self.options.takeover, exc
                )
            elif self._bind_refusals == 0:
                log.warning(
                    "replication: the primary is unreachable but %s:%d is still in use (its process "
                    "lives): not taking over; waiting for it to reconnect or to be gone",
                    *self.options.takeover,
                )
            self._bind_refusals += 1
            return None
        self.term += 1
        self.state = "took-over"
        self.listener.close()  # fencing: no primary can reach (or be acknowledged by) us again
        log.warning(
            "replication: TOOK OVER %s:%d at epoch %d (term %d)",
            *self.options.takeover,
            self.acked_epoch,
            self.term,
        )
        return service


class ProtocolViolation(Exception):
    """Frames in an order the protocol does not allow: the connection is dropped."""
