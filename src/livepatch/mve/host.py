"""What a server implements to take part in a validated update (kvserver: kvserver.mve_support).

The mechanism (livepatch.mve) knows no server. A server registers one `Host` (`livepatch.mve.register`)
and the mechanism drives it:

leader side (the running server)
    is_serving()              False once the server is stopping (any thread): the update is discarded.
    stop_requested()          a stop was asked (SIGTERM) and the loop has not acted on it yet (any
                              thread): the update gives way at once, even in the middle of the
                              hand-over (whose waits on the loop thread look every 50 ms).
    call_on_loop(fn)          run fn on the thread that owns the server's state, between two requests
                              (its quiescence point); any thread may call it; it must wake the loop.
    prepare_fork()            loop thread, just before fork(): make buffered state durable (e.g. write
                              the append-only file's buffer) so that the child holds no copy of it.
    start_recording(rec)      loop thread: from now on report every executed request with its reply,
                              every connection opened or closed, and every run of the periodic work
                              that changes data (kvserver: active expiry), to `rec` (a `Recorder`),
                              in order.
    stop_recording()          loop thread: stop reporting (cheap: the steady state costs nothing).
    export_handover()         loop thread, recording stopped: (fds, state): the listening socket and
                              every client socket, and a picklable state (per connection its unread
                              input and unsent output; the persistence position).
    finish_handover()         loop thread: the follower took over: forget every socket without closing
                              the connections, and stop serving without saving (the follower saves).
    resume_after_failed_handover()  loop thread: the follower did not take over: keep serving.

follower side (the forked child; alone: one thread, no sockets)
    enter_follower()          right after fork: drop the copies of the leader's sockets, stop persisting.
    replay_open(cid, info) / replay_close(cid)   connection events, in the leader's order.
    replay(cid, now_ms, request) -> bytes        execute one request through the virtual client `cid`
                              at the leader's clock; the encoded reply.
    replay_tick(now_ms)       the leader's periodic work ran here, at this clock: run it (the follower
                              runs no timer of its own, so both expire the same keys at the same point).
    adopt(fds, state)         promoted: serve these sockets with this state; returns, and the server's
                              loop (which forked) carries on serving as the new leader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol


class Recorder(Protocol):
    def executed(
        self, cid: int, now_ms: int, requests: list[Any], replies: list[bytes]
    ) -> None: ...

    def opened(self, cid: int, info: Any) -> None: ...

    def closed(self, cid: int) -> None: ...

    def tick(self, now_ms: int) -> None: ...

    # The fast path: append ("x1", cid, now_ms, request, reply) to `pending` (always the same list),
    # then call flush() once it holds `flush_at` records.
    @property
    def pending(self) -> list[Any]: ...

    flush_at: int

    def flush(self) -> None: ...

    # Optional: a faster encoder of a batch's log frame (what channel.encode makes, or None when it
    # does not handle that batch): kvserver's is kvserver._mverecord.encode_frame, in C.
    def use_frame_encoder(self, encode: Callable[[list[Any]], bytes | None]) -> None: ...


class Host(Protocol):
    def is_serving(self) -> bool: ...

    def stop_requested(self) -> bool: ...

    def call_on_loop(self, fn: Any) -> None: ...

    def prepare_fork(self) -> None: ...

    def start_recording(self, recorder: Recorder) -> None: ...

    def stop_recording(self) -> None: ...

    def export_handover(self) -> tuple[list[int], Any]: ...

    def finish_handover(self) -> None: ...

    def resume_after_failed_handover(self) -> None: ...

    def enter_follower(self) -> None: ...

    def replay_open(self, cid: int, info: Any) -> None: ...

    def replay_close(self, cid: int) -> None: ...

    def replay(self, cid: int, now_ms: int, request: Any) -> bytes: ...

    def replay_tick(self, now_ms: int) -> None: ...

    def adopt(self, fds: list[int], state: Any) -> None: ...


_host: Host | None = None


def register(host: Host | None) -> None:
    """The server's Host (one per process); None unregisters. Called by the server at start."""
    global _host
    _host = host


def current() -> Host | None:
    return _host
