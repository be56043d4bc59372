"""kvserver's side of a validated update (livepatch.mve.Host; docs/validated-updates.md).

Theory of operation
-------------------
Nothing here runs, and nothing costs, until an update is validated: `install(loop)` only registers the
host. Recording then replaces four methods *on the ServerState instance* (process_commands, new_client,
forget_client, cron) by recording wrappers, and `stop_recording` deletes them again: the steady-state hot path
is the class's own method, with no test at all. The wrapper runs one request at a time through the
class's process_commands, so that each request's reply is exactly what that call appended to the
client's output (the hot path encodes replies into client.out in place). The common request (one per
read, nobody parked or subscribed) is recorded in C (kvserver._mverecord, _mverecord.c) when it was
built; the pure-Python recorder here does the same, record for record (tests/mve/test_recording_c.py).

The follower keeps the forked ClientState objects as its virtual clients (same id, database, MULTI,
WATCH and authentication state as the leader's connections); a connection opened after the fork is
created with the leader's id. Replies of the replay are taken out of client.out and compared. The
follower does not persist (server.aof and server.persistence are None) and runs no cron: the leader
does both until promotion; the follower replays the leader's cron (active expiry, deterministic: a
heap of expiry times) at the same points of the log ("t" records), so both hold the same keys.

Hand-over (leader): write the AOF buffer, then per connection its unsent output and its parser (unread
input, pickled), the listening socket and every client socket. The follower adopts them into its own
copy of the EventLoop (new epoll, new self-pipe) and reopens the append-only file's current generation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from typing import Any

from kvserver.client import ClientState
from kvserver.server import ServerState

log = logging.getLogger("kvserver.mve")

_CRecorder: Any = None
_encode_frame: Any = None
try:  # built from src/kvserver/_mverecord.c when a C compiler was there at install time
    from kvserver._mverecord import Recorder as _CRecorder
    from kvserver._mverecord import encode_frame as _encode_frame
except ImportError:  # pragma: no cover - the pure-Python recorder below does the same
    pass

_RECORDING_METHODS = ("process_commands", "new_client", "forget_client", "cron")


class KvHost:
    """livepatch.mve.Host for one kvserver EventLoop. Concurrency: see livepatch.mve.host."""

    def __init__(self, loop: Any) -> None:
        self.loop = loop
        self.server: ServerState = loop.server
        self._aof_stash: Any = None
        self._persistence_stash: Any = None

    # ---------------------------------------------------------------------------------- leader
    def is_serving(self) -> bool:
        return self.loop.serving

    def stop_requested(self) -> bool:
        return bool(self.loop.stop_requested)

    def call_on_loop(self, fn: Any) -> None:
        self.loop.call_soon_threadsafe(fn)

    def prepare_fork(self) -> None:
        aof = self.server.aof
        if aof is not None:
            aof.flush()  # the child must not hold (and later write) a copy of this buffer

    def start_recording(self, recorder: Any) -> None:
        server = self.server
        process = ServerState.process_commands
        new_client = ServerState.new_client
        forget_client = ServerState.forget_client
        cron = ServerState.cron

        blocked, subscribed = server.blocked_clients, server.pubsub.by_client
        executed = recorder.executed
        pending = recorder.pending  # the log's open batch: the fast path appends to it directly
        one = pending.append
        flush_at = recorder.flush_at
        gate: Any = _Depth()  # .depth is 1 while the slow path runs a read (the C recorder's own)

        def recording_slow(client: ClientState, commands: list[list[bytes]]) -> None:
            # Several requests in one read, or someone parked or subscribed: one request at a time,
            # each with what it sent to other connections (a wake-up, a published message).
            out = client.out
            ran: list[list[bytes]] = []
            replies: list[bytes] = []
            gate.depth = 1
            try:
                for argv in commands:
                    if client.close_after_reply:
                        break  # what process_commands would not run either
                    others = _listeners(server, client)
                    start = len(out)
                    process(server, client, [argv])
                    ran.append(argv)
                    reply = out[start] if len(out) == start + 1 else b"".join(out[start:])
                    if others:
                        reply += _side_output(others)
                    replies.append(reply)
            finally:
                gate.depth = 0
            executed(client.id, server.now_ms, ran, replies)

        def recording_process(client: ClientState, commands: list[list[bytes]]) -> None:
            # The pure-Python recorder (no C compiler at install time; LIVEPATCH_MVE_PY_RECORDER=1):
            # the reference that _mverecord.c's Recorder does the same as, record for record.
            if gate.depth:
                # A parked client's backlog, run inside another request (its wake-up): part of that
                # request, and replayed as such (the follower wakes the same client at the same point).
                process(server, client, commands)
                return
            if len(commands) != 1 or blocked or subscribed:
                recording_slow(client, commands)
                return
            # The common case (one request per read, nobody parked or subscribed, so no wake-up can
            # run nested): one call, what it appended is the reply, one tuple in the log.
            out = client.out
            start = len(out)
            process(server, client, commands)
            end = len(out)
            one(
                (
                    "x1",
                    client.id,
                    server.now_ms,
                    commands[0],
                    out[start] if end == start + 1 else b"".join(out[start:]),
                )
            )
            if len(pending) >= flush_at:
                recorder.flush()

        recording: Any = recording_process
        if _CRecorder is not None and not os.environ.get("LIVEPATCH_MVE_PY_RECORDER"):
            recording = gate = _CRecorder(
                process, server, pending, recorder.flush, flush_at, blocked, subscribed,
                recording_slow,
            )  # fmt: skip
            recorder.use_frame_encoder(_encode_frame)

        def recording_new_client(sock: Any, addr: str) -> ClientState:
            client = new_client(server, sock, addr)
            recorder.opened(client.id, addr)
            return client

        def recording_forget_client(client: ClientState) -> None:
            forget_client(server, client)
            recorder.closed(client.id)

        def recording_cron(now_ms: int) -> None:
            cron(server, now_ms)
            recorder.tick(now_ms)

        vars(server).update(
            process_commands=recording,
            new_client=recording_new_client,
            forget_client=recording_forget_client,
            cron=recording_cron,
        )

    def stop_recording(self) -> None:
        for name in _RECORDING_METHODS:
            vars(self.server).pop(name, None)

    def export_handover(self) -> tuple[list[int], Any]:
        server = self.server
        if server.aof is not None:
            server.aof.flush()  # every reply handed over acknowledges only what is written
        loop = self.loop
        fds = [loop.listener.fileno()]
        clients = []
        for client in loop.by_fd.values():
            fds.append(client.fd)
            unsent = client.out_pending + b"".join(client.out)
            clients.append((client.id, unsent, client.parser, client.close_after_reply))
        persistence = server.persistence
        state = {
            "clients": clients,
            "next_client_id": server.next_client_id,
            "aof_generation": server.aof.generation if server.aof is not None else None,
            "generation": getattr(persistence, "generation", None),
            "dirty": server.dirty,
        }
        return fds, state

    def fallback_argv(self) -> list[str]:
        """Follow-back (livepatch.mve.fallback): the command line that starts the old version again,
        from the data directory, on the inherited listening socket. `--state-dir none`: the agent's
        kept patches include the validated one (the new version) and must not come back with it."""
        return [*sys.orig_argv, "--state-dir", "none"]

    def finish_handover(self) -> None:
        self.loop.release_for_handover()

    def resume_after_failed_handover(self) -> None:
        pass  # nothing was given away: the loop carries on with every socket it has

    # -------------------------------------------------------------------------------- follower
    def enter_follower(self) -> None:
        server = self.server
        live = list(self.loop.by_fd.values())
        self.loop.drop_inherited_io()
        for client in live:
            client.sock = VIRTUAL_SOCKET  # the replay decides as the leader's live connection did
        for client in server.clients.values():
            # The leader sends what its clients have queued; the replay starts with nothing owed.
            client.out.clear()
            client.out_pending = b""
        self._aof_stash = server.aof
        server.aof = None  # the leader logs; the follower's replay must not write the file again
        # Nor snapshot: a replayed SHUTDOWN or SAVE must not write the leader's files (they answer
        # differently here, so the update is discarded: the safe side).
        self._persistence_stash = server.persistence
        server.persistence = None
        self._clients_at_fork = set(server.clients)

    def replay_open(self, cid: int, info: Any) -> None:
        server = self.server
        client = ServerState.new_client(server, VIRTUAL_SOCKET, str(info))
        if client.id != cid:  # ids are given in order, so they agree; keep the leader's if not
            server.clients.pop(client.id, None)
            client.id = cid
            server.clients[cid] = client
            server.next_client_id = max(server.next_client_id, cid + 1)

    def replay_close(self, cid: int) -> None:
        client = self.server.clients.get(cid)
        if client is not None:
            ServerState.forget_client(self.server, client)
            client.release_buffers()

    def replay(self, cid: int, now_ms: int, request: Any) -> bytes:
        server = self.server
        client = server.clients[cid]
        server.now_ms = now_ms
        out = client.out
        out.clear()  # what other requests sent this connection (wake-ups, messages) was compared there
        others = _listeners(server, client)
        ServerState.process_commands(server, client, [request])
        reply = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if others:
            reply += _side_output(others)
        return reply

    def replay_tick(self, now_ms: int) -> None:
        ServerState.cron(self.server, now_ms)  # persistence is None here: active expiry only

    def adopt(self, fds: list[int], state: Any) -> None:
        server = self.server
        listener = socket.socket(fileno=fds[0])
        adopted: list[tuple[ClientState, bytes]] = []
        for (cid, unsent, parser, close_after_reply), fd in zip(
            state["clients"], fds[1:], strict=True
        ):
            client = server.clients.get(cid)
            if client is None:  # cannot happen: every open is logged before the marker
                log.error("hand-over: connection %d unknown to the follower; closing it", cid)
                os.close(fd)
                continue
            client.sock = socket.socket(fileno=fd)
            client.sock.setblocking(False)
            client.fd = fd
            client.parser = parser
            client.out.clear()
            client.out_pending = b""
            client.close_after_reply = close_after_reply
            client.writable_registered = False
            adopted.append((client, unsent))
        handed = {c.id for c, _ in adopted}
        for cid in [c for c in server.clients if c not in handed]:
            ServerState.forget_client(server, server.clients[cid])
        server.next_client_id = max(server.next_client_id, state["next_client_id"])
        self._reopen_aof(state)
        self.loop.adopt_after_handover(listener, adopted)

    def _reopen_aof(self, state: dict[str, Any]) -> None:
        self.server.persistence = self._persistence_stash
        stale = self._aof_stash
        if stale is None:
            return
        from kvserver.aof import AppendOnlyFile

        # Not stale.close(): its lock may have been held by the leader's fsync thread at fork time. Its
        # buffer is empty (prepare_fork); only this process's copy of the descriptor goes.
        with contextlib.suppress(OSError):
            os.close(stale._fd)
        generation = state["aof_generation"]
        fresh = AppendOnlyFile(stale.directory, stale.basename, stale.fsync_policy, generation)
        server = self.server
        server.aof = fresh
        persistence = server.persistence
        if persistence is not None:
            persistence.aof = fresh
            if state["generation"] is not None:
                persistence.generation = state["generation"]


class _Depth:
    """The pure-Python recorder's nesting flag (the C recorder has its own `depth`)."""

    __slots__ = ("depth",)

    def __init__(self) -> None:
        self.depth = 0


class _VirtualSocket:
    """A follower's connection: no I/O, but a live client for the commands (kvserver tells a live
    connection by `client.sock is not None`: BLPOP parks only such a client, CLIENT KILL/LIST see only
    those), so that the replay decides as the leader did."""

    def fileno(self) -> int:
        return -1

    def getsockname(self) -> Any:
        raise OSError("a replayed connection has no socket")

    def close(self) -> None:
        pass


VIRTUAL_SOCKET: Any = _VirtualSocket()
SIDE_MARK = b"\r\n>>> connection %d received: "


def _listeners(server: ServerState, caller: ClientState) -> dict[ClientState, int] | None:
    """The other connections a request may send something to (parked clients it may wake, pub/sub
    subscribers it may publish to), with the length of their output now; None when there are none
    (the common case: one truth test of two dicts)."""
    if not server.blocked_clients and not server.pubsub.by_client:
        return None
    found = {c: len(c.out) for c in server.blocked_clients if c is not caller}
    for c in server.pubsub.by_client:
        if c is not caller:
            found[c] = len(c.out)
    return found or None


def _side_output(before: dict[ClientState, int]) -> bytes:
    """What a request sent to other connections (a blocked client's wake-up with its backlog's replies,
    a published message), in connection-id order, appended to the caller's reply: so the comparison
    covers whom the request woke or reached and what they got."""
    parts = []
    for client in sorted(before, key=lambda c: c.id):
        out = client.out
        if len(out) > before[client]:
            parts.append(SIDE_MARK % client.id + b"".join(out[before[client] :]))
    return b"".join(parts)


def install(loop: Any) -> None:
    """Register kvserver's host with livepatch.mve (at loop start, when livepatch is enabled)."""
    from livepatch import mve

    mve.register(KvHost(loop))
