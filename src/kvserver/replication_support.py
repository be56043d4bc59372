"""kvserver's side of hot standby (livepatch.replication.ReplicatedServer; docs/standby.md).

Theory of operation
-------------------
Primary: `install_primary(loop, ...)` makes the keyspaces tracked (kvserver.dirty), sets `loop.replication`
to this object and starts a livepatch Primary. The loop then runs each client's batch of requests
between `begin(commands)` and `end(client)` (its `begin_batch` and `end_batch`, set here; `process` is
the two around the batch, for callers that do not run it themselves): the batch runs as ever, then
the tracker says whether it wrote and which unacknowledged epoch it read, the Protection says how
long its replies must wait, and those replies move from the client's output into `held` (in order
behind any already held). With kvserver._dirtyfast built, begin, end, the hold and the release are
its C versions (same rules). `tick`
runs at the loop's quiescence point (after before_sleep) and lets the Primary capture epochs and stream
the full sync; acknowledgements come back through `call_soon_threadsafe` and `release_replies` puts
held replies back into the clients' output for this iteration's send. A client that asked to be closed
(QUIT, EOF) while replies are held is closed once they are released.

Payloads are pickles of plain data (bytes, deque, dict, set, SortedSet), read back with an unpickler
that refuses every other class, so a peer that reaches the replication port cannot run code through
it. Epoch: (ops, [(db, [(key, value | None, expire_at_ms | None)])]); snapshot chunk: (db, entries).

Standby: `StandbyHost` builds the full sync in fresh Keyspaces and swaps their contents into the
server's (the Keyspace objects stay) at the end; epochs are applied to whichever state is current.

Concurrency: the primary half on the event-loop thread (`call_soon_threadsafe` from any thread); the
standby half on the Standby's thread, before the loop exists.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable
from functools import partial
from typing import Any

from kvserver import dirty
from kvserver.client import ClientState
from kvserver.dirty import DirtyTracker, track
from kvserver.keyspace import Keyspace
from livepatch.replication import (
    HeldReplies,
    Primary,
    PrimaryOptions,
    Protection,
    SnapshotRestart,
)

try:  # the per-read fast path of PrimaryHost.process (optional: see kvserver.dirty)
    from kvserver import _dirtyfast
except ImportError:  # pragma: no cover - exercised by installs without a compiler
    _dirtyfast = None  # type: ignore[assignment]

log = logging.getLogger("kvserver.replication")

SNAPSHOT_KEYS_PER_CHUNK = 1024
_ALLOWED_CLASSES = {("collections", "deque"), ("kvserver.types.zset", "SortedSet")}


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_CLASSES:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a replication payload may not name {module}.{name}")


def _loads(payload: bytes) -> Any:
    return _DataUnpickler(io.BytesIO(payload)).load()


def _dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


class PrimaryHost:
    """The primary half: ReplicatedServer for one kvserver EventLoop."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.server = loop.server
        self.held: HeldReplies[ClientState] = HeldReplies()
        self.primary: Primary | None = None
        self.tracker: DirtyTracker | None = None
        self.protection: Protection = Protection("none")  # the Primary's, once installed
        self._close_when_released: set[ClientState] = set()
        self._dirty_before = 0  # server.dirty when the batch began (the Python begin/end)
        self._snapshot: list[tuple[int, Keyspace, list[bytes]]] = []
        self._snapshot_structure = 0
        # HeldReplies.release, or the same in C (install_primary, when kvserver._dirtyfast is built)
        self.release: Callable[[int], list[tuple[ClientState, bytes]]] = self.held.release

    # ------------------------------------------------------------------ called by the loop
    def process(self, client: ClientState, commands: list[list[bytes]]) -> None:
        """Run one read's requests; hold their replies for as long as the Protection says.

        `begin`, the batch, `end`: the event loop runs those three itself (kvserver.loop). The
        common case (nothing written, nothing unacknowledged read, nothing held for this client,
        mode not "full") returns without a call; kvserver._dirtyfast.Processor
        is the same decision in C, which install_primary puts in place of this method when built
        (keep the two in step). The C version also does `_after_batch`'s work up to `_hold` (the
        tracker's end of batch and Protection.hold_until), so a write that need not wait
        (`--protection none`, or degraded) runs no Python here at all, and it reads server.dirty
        once per batch (against its value after the previous one)."""
        self.begin(commands)
        self.server.process_commands(client, commands)
        self.end(client)

    def begin(self, commands: list[list[bytes]]) -> None:
        """process's first half, before the batch runs (the loop runs it between begin and end)."""
        self._dirty_before = self.server.dirty

    def end(self, client: ClientState) -> None:
        """process's second half, after the batch ran (also when it raised)."""
        server = self.server
        before = self._dirty_before
        t = self.tracker
        assert t is not None
        if server.dirty != before or t.structural:
            self._after_batch(client, True)
            return
        if t.touched:
            t.touched.clear()
        if t.read_epoch or self.protection.mode == "full" or client in self.held.by_conn:
            self._after_batch(client, False)

    def _after_batch(self, client: ClientState, wrote: bool) -> None:
        """The batch wrote, read something unacknowledged, or may have to wait behind held replies."""
        t = self.tracker
        assert t is not None
        wrote, read_epoch = t.end_batch(wrote)
        epoch = self.protection.hold_until(wrote, read_epoch)
        if epoch or client in self.held.by_conn:
            self._hold(client, epoch)

    def _hold(self, client: ClientState, epoch: int) -> None:
        """Move the client's replies into `held` until epoch (0: behind those already held)."""
        held = self.held
        out = client.out
        if out:
            held.hold(client, epoch, b"".join(out))
            out.clear()
        if client.close_after_reply and client in held.by_conn:
            client.close_after_reply = False  # closed once its held replies are out
            self._close_when_released.add(client)

    def drain(self) -> None:
        """The loop executes no more requests (SIGTERM, SHUTDOWN, switchover): ship the last epoch
        and release what the standby then holds; the loop sends released replies before it closes
        the clients, and closes the others unanswered (their writes may not be on the standby)."""
        assert self.primary is not None
        timeout_s = self.primary.options.standby_timeout_ms / 1000.0
        log.info(
            "replication: draining: waiting up to %.0f ms for the standby to hold the last writes "
            "(%d replies held)",
            timeout_s * 1000,
            len(self.held),
        )
        why = self.primary.drain(timeout_s)
        if not why:
            log.info("replication: the standby holds every write: stopping")
        else:
            log.warning(
                "replication: stopping with %d replies held (%s): their clients are closed without "
                "an answer, as their writes may not be on the standby",
                len(self.held),
                why,
            )

    def tick(self, now: float) -> float:
        """Primary.tick (install_primary binds it on the instance: one call less per iteration)."""
        assert self.primary is not None
        return self.primary.tick(now)

    # ------------------------------------------------------------------ ReplicatedServer
    def capture_epoch(self) -> bytes:
        assert self.tracker is not None
        ops, changes = self.tracker.capture()
        if not ops and not changes:
            return b""
        return _dumps((ops, changes))

    def start_snapshot(self) -> None:
        assert self.tracker is not None
        self._snapshot_structure = self.tracker.structural_changes
        self._snapshot = [
            (i, db, Keyspace.keys_snapshot(db))
            for i, db in enumerate(self.server.databases)
            if Keyspace.__len__(db)
        ]

    def snapshot_chunk(self, max_bytes: int) -> bytes | None:
        assert self.tracker is not None
        if self.tracker.structural_changes != self._snapshot_structure:
            # A FLUSHDB/SWAPDB moved keys under the snapshot's key lists, and its epoch operation
            # would be replayed over chunks read after it: start over (rare, and always consistent).
            raise SnapshotRestart("FLUSHDB, FLUSHALL or SWAPDB ran during the full sync")
        while self._snapshot:
            index, db, keys = self._snapshot[-1]
            if not keys:
                self._snapshot.pop()
                continue
            batch = keys[-SNAPSHOT_KEYS_PER_CHUNK:]
            del keys[-SNAPSHOT_KEYS_PER_CHUNK:]
            entries = [e for e in db.entries(batch) if e[1] is not None]
            if entries:
                return _dumps((index, entries))
        return None

    def release_replies(self, acked_epoch: int) -> None:
        assert self.tracker is not None
        self.tracker.acknowledged(acked_epoch)
        self._deliver(self.release(acked_epoch))

    def release_all_replies(self) -> None:
        self._deliver(self.held.release_all())

    def _deliver(self, released: list[tuple[ClientState, bytes]]) -> None:
        for client, data in released:
            if client.sock is None:
                self._close_when_released.discard(client)
                continue  # closed meanwhile: nobody to tell
            client.out.append(data)
            if client in self._close_when_released and not self.held.has(client):
                self._close_when_released.discard(client)
                client.close_after_reply = True
            self.loop.schedule_send(client)

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        self.loop.call_soon_threadsafe(fn)

    def watch_readable(self, fd: int, callback: Callable[[], object]) -> None:
        self.loop.watch_readable(fd, callback)

    def unwatch(self, fd: int) -> None:
        self.loop.unwatch(fd)

    # The standby half is StandbyHost's.
    def begin_full_sync(self) -> None:
        raise NotImplementedError("a primary applies nothing")

    def apply_snapshot_chunk(self, payload: bytes) -> None:
        raise NotImplementedError("a primary applies nothing")

    def end_full_sync(self) -> None:
        raise NotImplementedError("a primary applies nothing")

    def apply_epoch(self, payload: bytes) -> None:
        raise NotImplementedError("a primary applies nothing")


def readonly_names(server: Any) -> frozenset[bytes]:
    """The names (as upper- or lower-case clients send them) of the commands that only read: a batch
    of these alone notes no key as touched (kvserver._dirtyfast, "Read-only batches"). From the
    command table's flags: "readonly" and not "write"."""
    names = [
        name
        for name, cmd in server.table.items()
        if "readonly" in cmd.flags and "write" not in cmd.flags
    ]
    return frozenset(names + [n.lower() for n in names])


def install_primary(
    loop: Any,
    target: tuple[str, int],
    options: PrimaryOptions,
    term: int = 1,
    native: bool | None = None,
) -> Primary:
    """Replicate `loop`'s server to the standby at target; returns the started Primary. Call before
    the loop runs (or on the loop thread). native: dirty tracking in C (default: when built)."""
    host = PrimaryHost(loop)
    primary = Primary(host, target, options, term=term)
    host.primary = primary
    if native is None:
        native = dirty.NATIVE
    host.tracker = track(loop.server.databases, primary.protection, native=native)
    host.protection = primary.protection
    host.tick = primary.tick  # type: ignore[method-assign]
    if native and _dirtyfast is not None:
        host.process = _dirtyfast.Processor(  # type: ignore[method-assign]
            host.server,
            host.tracker,
            host.held.by_conn,
            host._after_batch,
            host._hold,
            primary.protection.mode == "full",
            readonly_names(loop.server),
            host.held,  # the hold of a write's replies in C too
        )
        # The loop runs each batch between begin and end (kvserver.loop): no interpreter entry from C.
        host.begin = host.process.begin  # type: ignore[method-assign]
        host.end = host.process.end  # type: ignore[method-assign]
        host.release = partial(_dirtyfast.release_held, host.held)
    loop.replication = host
    loop.begin_batch, loop.end_batch = host.begin, host.end
    primary.start()
    return primary


class StandbyHost:
    """The standby half: applies snapshot chunks and epochs to a ServerState's databases."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.held: HeldReplies[Any] = HeldReplies()  # a standby holds nothing
        self._staging: list[Keyspace] | None = None

    def begin_full_sync(self) -> None:
        self._staging = [Keyspace() for _ in self.server.databases]

    def apply_snapshot_chunk(self, payload: bytes) -> None:
        assert self._staging is not None
        index, entries = _loads(payload)
        db = self._target()[self._index(index)]
        for key, value, expire_at in entries:
            db.store(key, value, expire_at)

    def end_full_sync(self) -> None:
        assert self._staging is not None
        for live, new in zip(self.server.databases, self._staging, strict=True):
            live.swap_with(new)
        self._staging = None

    def apply_epoch(self, payload: bytes) -> None:
        if not payload:
            return  # a heartbeat: nothing changed
        ops, changes = _loads(payload)
        dbs = self._target()
        for op in ops:
            if op[0] == "flush":
                dbs[self._index(op[1])].clear()
            elif op[0] == "swap":
                dbs[self._index(op[1])].swap_with(dbs[self._index(op[2])])
            else:
                raise ValueError(f"unknown operation {op[0]!r} in an epoch")
        for index, entries in changes:
            db = dbs[self._index(index)]
            for key, value, expire_at in entries:
                if value is None:
                    db.delete(key)
                else:
                    db.store(key, value, expire_at)

    def _target(self) -> list[Keyspace]:
        return self._staging if self._staging is not None else self.server.databases

    def _index(self, index: Any) -> int:
        if type(index) is not int or not 0 <= index < len(self.server.databases):
            raise ValueError(
                f"the primary sent database {index!r}; this server has "
                f"{len(self.server.databases)} (start both with the same --databases)"
            )
        return index

    # The primary half is PrimaryHost's.
    def capture_epoch(self) -> bytes:
        raise NotImplementedError

    def start_snapshot(self) -> None:
        raise NotImplementedError

    def snapshot_chunk(self, max_bytes: int) -> bytes | None:
        raise NotImplementedError

    def release_replies(self, acked_epoch: int) -> None:
        pass

    def release_all_replies(self) -> None:
        pass

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        fn()

    def watch_readable(self, fd: int, callback: Callable[[], object]) -> None:
        raise NotImplementedError("a standby watches nothing")

    def unwatch(self, fd: int) -> None:
        raise NotImplementedError("a standby watches nothing")
