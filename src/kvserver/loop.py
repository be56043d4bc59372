"""The event loop: one thread, epoll, a self-pipe, a cron timer, and before_sleep (Redis ae.c).

Theory of operation
-------------------
One iteration (`_run_once`) = poll -> handle every ready fd -> cron if due -> before_sleep.
  readable client   recv everything available (up to READ_LIMIT per event), parse every complete
                    request, dispatch each (kvserver.server), queue the encoded replies on the client.
  before_sleep      1. write the AOF buffer of this iteration, fsync under `always` (group commit);
                    2. send each client's replies with one send(); what the kernel does not take waits
                       for EPOLLOUT; past the output-buffer limit the client is closed;
                    3. close the clients that asked for it (QUIT, protocol error, CLIENT KILL);
                    4. the quiescence point (livepatch): the one place where this thread holds no
                       request, so a live patch swaps code between two iterations (DESIGN.md).
With an AOF, replies are only ever sent in before_sleep, after step 1, which is what makes
`appendfsync always` lose no acknowledged write; without one, a client's replies are sent right after its
read (nothing to wait for, and one pass over the clients less). Other threads never touch loop state: they enqueue a callable and write a
byte to the self-pipe (`call_soon_threadsafe`, STYLE.md §7); the livepatch wake-up hook writes that byte
so that a loop asleep in epoll reaches its quiescence point at once. Signal handlers only enqueue
(STYLE.md §8). A failure while serving one client is logged and closes that client only.

Concurrency: `run` on one thread (the main thread under the CLI); `wakeup`, `call_soon_threadsafe` and
`request_stop` from any thread or signal handler; everything else on the loop thread.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import select
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from kvserver.client import ClientState
from kvserver.memory import Trimmer
from kvserver.resp import ProtocolError
from kvserver.server import ServerState

log = logging.getLogger("kvserver.loop")

READ_SIZE = 64 * 1024  # recv allocates this much per call: keep it moderate (Redis reads 16 KB)
READ_LIMIT = 16 * READ_SIZE  # per event, so one flooding client cannot starve the others
EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLL_ERRS = select.EPOLLERR | select.EPOLLHUP
_READABLE = EPOLLIN | EPOLL_ERRS


class EventLoop:
    def __init__(self, server: ServerState, listener: socket.socket) -> None:
        self.server = server
        server.loop = self
        self.listener = listener
        listener.setblocking(False)
        self.epoll = select.epoll()
        self.epoll.register(listener.fileno(), EPOLLIN)
        self._rpipe, self._wpipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(self._rpipe, EPOLLIN)
        self.by_fd: dict[int, ClientState] = {}
        self._pending: dict[ClientState, None] = {}  # clients with replies to send (ordered set)
        self._to_close: list[ClientState] = []
        self._calls: collections.deque[Callable[[], object]] = collections.deque()
        self._stop_requested = False
        self._stopping = False
        self.iterations = 0
        self.trimmer = Trimmer()
        # With an AOF, replies wait for before_sleep (after the AOF write); without one they are sent
        # as soon as they are computed, which saves a pass over the clients per iteration.
        self._defer_replies = server.aof is not None
        self._cron_interval = 1.0 / max(1, server.config.hz)
        self._next_cron = time.monotonic() + self._cron_interval
        self.now = time.monotonic()  # read once per iteration, right after epoll returns
        # Hot standby (kvserver.replication_support): runs each read's requests, holds replies,
        # and ticks at the end of every iteration; None without --replicate-to.
        self.replication: Any = None
        # Its begin(commands) and end(client), run around each batch (kvserver.replication_support):
        # attributes of the loop, so that the per-read lookup is a specialised instance attribute.
        self.begin_batch: Callable[[list[list[bytes]]], object] | None = None
        self.end_batch: Callable[[ClientState], object] = lambda client: None
        self._tick_at = float("inf")
        # Other descriptors read on this thread (replication acknowledgements): fd -> callback.
        self._watched: dict[int, Callable[[], object]] = {}
        # Called once the stopped loop has drained its standby and closed its clients and address
        # (kvserver.replication_cli: release the etcd lease, drop the link).
        self.after_drain: Callable[[], None] | None = None

    # ---------------------------------------------------------------------------- any thread
    def wakeup(self) -> None:
        """Make a sleeping loop return from epoll now (wake-up hook; any thread; signal-safe)."""
        try:
            os.write(self._wpipe, b"x")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (a wake-up is already pending) or the loop is gone

    def call_soon_threadsafe(self, fn: Callable[[], object]) -> None:
        """Run fn on the loop thread at its next iteration (any thread). Exceptions are logged."""
        self._calls.append(fn)
        self.wakeup()

    def request_stop(self) -> None:
        """SIGTERM/SIGINT: shut down like SHUTDOWN (default save policy) at the next iteration.

        Also while a long command runs: the handler runs between its bytecodes, and commands that can
        run for seconds poll `stop_requested` (CommandContext.check_shutdown) and give up."""
        self._stop_requested = True
        self.wakeup()

    @property
    def stop_requested(self) -> bool:
        """A stop was requested and this iteration has not acted on it yet (any thread may read it)."""
        return self._stop_requested

    # ------------------------------------------------------------------------- loop thread only
    def run(self, livepatch_enabled: bool = True) -> None:
        """Serve until SHUTDOWN or request_stop. With livepatch, the thread is a managed CRITICAL
        "eventloop" thread with a quiescence point per iteration and a self-pipe wake-up hook."""
        if livepatch_enabled:
            self._run_patchable()
        else:
            while not self._stopping:
                self._run_once()
        if self.replication is not None:
            self.replication.drain()  # released replies go out with the others just below
        self._close_everything()

    def close_listener(self) -> None:
        """Stop accepting and free the service address (loop thread, once the loop has stopped)."""
        with contextlib.suppress(OSError, ValueError):
            self.epoll.unregister(self.listener.fileno())
        self.listener.close()

    def _run_patchable(self) -> None:
        import livepatch

        with ExitStack() as stack:
            stack.enter_context(
                livepatch.managed_thread(role="eventloop", priority=livepatch.Priority.CRITICAL)
            )
            livepatch.add_wakeup_hook(self.wakeup)
            from kvserver import mve_support

            mve_support.install(self)  # validated updates (livepatch.mve): registers, costs nothing
            stack.callback(livepatch.remove_wakeup_hook, self.wakeup)
            quiescence_point = livepatch.quiescence_point
            # The quiescence point's own first test, inline: one attribute read per iteration while
            # no patch is pending instead of a call (docs/performance.md, the cost of being patchable).
            flag = livepatch.transition_flag()
            while not self._stopping:
                self._run_once()
                if flag.request is not None:
                    quiescence_point()  # before sleeping: no request is in flight on this thread

    def _run_once(self) -> None:
        now = time.monotonic()
        timeout = (
            0.0
            if self._calls or self._stop_requested
            else max(0.0, min(self._next_cron, self._tick_at) - now)
        )
        try:
            events = self.epoll.poll(timeout)
        except InterruptedError:
            events = []
        # The clocks are read once per iteration, not per client read or per command: `now` feeds
        # CLIENT LIST's idle times, `server.now_ms` is the instant every command of this iteration
        # sees (ctx.now_ms: expiry, TTLs).
        self.now = time.monotonic()
        self.server.now_ms = int(time.time() * 1000)
        listen_fd = self.listener.fileno()
        # Locals: this loop runs once per ready client, tens of times per iteration under load.
        by_fd = self.by_fd
        on_readable = self._on_readable
        for fd, mask in events:
            if self._stopping:
                break  # SHUTDOWN ran: nothing more is executed, so nothing unlogged is acknowledged
            client = by_fd.get(fd)
            if client is not None:
                if mask & _READABLE:
                    on_readable(client)
                if mask & EPOLLOUT and client.sock is not None:
                    self._send(client)
            elif fd == listen_fd:
                self._accept()
            elif fd == self._rpipe:
                self._drain_pipe()
            else:
                watcher = self._watched.get(fd)
                if watcher is not None:
                    self._run_watcher(watcher)
        if self._calls:
            self._run_calls()
        if self._stop_requested and not self._stopping:
            self._stop_requested = False
            error = self.shutdown(None)
            if error:
                log.error("shutdown failed: %s; still serving", error)
        now = time.monotonic()
        if now >= self._next_cron:
            self._next_cron = now + self._cron_interval
            try:
                self.server.cron(int(time.time() * 1000))
            except Exception:
                log.exception("cron failed; serving continues")
            self.trimmer.maybe_trim()
        self._before_sleep()
        if self.replication is not None:
            # The quiescence point of replication: every request of this iteration is done.
            # Replies the tick released (degradation) go out in the next iteration, without a wait.
            tick_at = self.replication.tick(self.now)
            self._tick_at = 0.0 if self._pending else tick_at
        self.iterations += 1

    def _before_sleep(self) -> None:
        aof = self.server.aof
        if aof is not None and aof.has_pending():
            try:
                aof.flush()
            except OSError as exc:
                # Like Redis under appendfsync always: a write we cannot persist must not be
                # acknowledged, and there is no way back: stop serving.
                log.critical("cannot write the append-only file (%s): shutting down", exc)
                self._pending.clear()
                self._stopping = True
                return
        if self._pending:
            pending = self._pending
            self._pending = {}
            for client in pending:
                if client.sock is not None:
                    self._send(client)
        if self._to_close:
            victims, self._to_close = self._to_close, []
            for client in victims:
                self._close(client)

    # ------------------------------------------------------------------------------ connections
    def _accept(self) -> None:
        for _ in range(256):
            try:
                sock, addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed: %s", exc)
                    return
                raise
            sock.setblocking(False)
            if len(self.by_fd) >= self.server.config.maxclients:
                self.server.stats.rejected_connections += 1
                try:
                    sock.send(b"-ERR max number of clients reached\r\n")
                except OSError:
                    pass
                sock.close()
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # a Unix socket
            peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
            client = self.server.new_client(sock, peer)
            self.by_fd[client.fd] = client
            self.epoll.register(client.fd, EPOLLIN)

    def _on_readable(self, client: ClientState) -> None:
        sock = client.sock
        assert sock is not None
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(client)
            return
        try:
            parser = client.parser
            if data and len(data) < READ_SIZE:
                # The common case: one recv() took everything there was; the parser gets it whole.
                client.last_interaction = self.now
                try:
                    commands = parser.parse(data)
                except ProtocolError as exc:
                    self._protocol_error(client, exc)
                    return
            else:
                commands = self._read_more(client, data)
                if commands is None:
                    return
            if commands:
                begin = self.begin_batch
                if begin is None:
                    self.server.process_commands(client, commands)
                else:
                    # Hot standby: begin and end decide which replies wait (replication_support);
                    # end after every begin, also when the batch raised. (`end` is read into a local:
                    # `self.end_batch(client)` would be a method lookup the interpreter does not
                    # specialise for a callable instance attribute.)
                    end = self.end_batch
                    begin(commands)
                    try:
                        self.server.process_commands(client, commands)
                    finally:
                        end(client)
                if parser.pending_error is not None:
                    self._protocol_error(client, parser.pending_error)
                    return
            out = client.out
            if self._defer_replies:
                if out or client.close_after_reply:
                    self._pending[client] = None
            elif out and not client.out_pending and not client.close_after_reply:
                # _send's common case inlined (one Python call less per read): nothing queued from
                # before (out_pending is empty exactly when EPOLLOUT is not registered), so
                # everything goes out in one send(); a short send hands over to _hold.
                data = out[0] if len(out) == 1 else b"".join(out)
                out.clear()
                try:
                    sent = sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    self._close(client)
                    return
                if sent < len(data):
                    self._hold(client, data[sent:])
            elif out or client.close_after_reply:
                self._send(client)
        except Exception:
            log.exception("serving client %d (%s) failed: closing it", client.id, client.addr)
            self._close(client)

    def _read_more(self, client: ClientState, data: bytes) -> list[list[bytes]] | None:
        """The uncommon reads: EOF (data is empty) or a full first recv() that more may follow.

        Reads on up to READ_LIMIT bytes per event (one flooding client cannot starve the others) and
        returns the complete commands, or None if the client was closed or answered a protocol error.
        """
        sock = client.sock
        assert sock is not None
        parser = client.parser
        received = 0
        while data:
            parser.feed(data)
            received += len(data)
            if len(data) < READ_SIZE or received >= READ_LIMIT:
                break
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(client)
                return None
        if not data:
            # The peer closed (or half-closed) its side: no more requests will come. What it sent
            # before is still executed and answered (redis-cli pipes rely on that).
            client.close_after_reply = True
        if not received:
            return []
        client.last_interaction = self.now
        try:
            return parser.commands()
        except ProtocolError as exc:
            self._protocol_error(client, exc)
            return None

    def _protocol_error(self, client: ClientState, exc: ProtocolError) -> None:
        log.info("protocol error from client %d (%s): %s", client.id, client.addr, exc.reason)
        client.out.append(exc.reply)
        client.close_after_reply = True
        self._pending[client] = None

    def _send(self, client: ClientState) -> None:
        sock = client.sock
        assert sock is not None
        out = client.out
        if len(out) == 1 and not client.out_pending:  # the common case: one reply, nothing queued
            data = out[0]
            out.clear()
        elif out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            if client.out_pending:
                data = client.out_pending + data
        else:
            data = client.out_pending
        if data:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(client)
                return
        else:
            sent = 0
        rest = data[sent:] if sent < len(data) else b""
        if rest:
            self._hold(client, rest)
            return
        client.out_pending = b""
        if client.writable_registered:
            self.epoll.modify(client.fd, EPOLLIN)
            client.writable_registered = False
        if client.close_after_reply:
            self._close(client)

    def _hold(self, client: ClientState, rest: bytes) -> None:
        """Keep what send() did not take for EPOLLOUT; past the output-buffer limit close the client."""
        client.out_pending = rest
        limit = self.server.config.client_output_buffer_limit
        if limit and len(rest) > limit:
            log.warning(
                "client %d (%s) exceeded the output buffer limit (%d bytes): closing it",
                client.id,
                client.addr,
                limit,
            )
            self._close(client)
            return
        if not client.writable_registered:
            self.epoll.modify(client.fd, EPOLLIN | EPOLLOUT)
            client.writable_registered = True

    def schedule_send(self, client: ClientState) -> None:
        """Send `client`'s queued replies in this iteration's before_sleep: held replies just released
        (replication), or a parked client answered because of another client's command or the cron
        (kvserver.commands.blocking). A client without a socket (a replay's virtual client) has none."""
        if client.sock is not None:
            self._pending[client] = None

    def watch_readable(self, fd: int, callback: Callable[[], object]) -> None:
        """Call `callback` on this thread whenever fd is readable, until `unwatch` (loop thread)."""
        self._watched[fd] = callback
        self.epoll.register(fd, EPOLLIN)

    def unwatch(self, fd: int) -> None:
        """Stop watching fd (before closing it: a closed number may be reused by a client)."""
        if self._watched.pop(fd, None) is not None:
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(fd)

    def _run_watcher(self, callback: Callable[[], object]) -> None:
        try:
            callback()
        except Exception:
            log.exception("a watched descriptor's callback failed")

    def schedule_close(self, client: ClientState) -> None:
        """Close a client after this iteration's replies (CLIENT KILL)."""
        self._to_close.append(client)

    def _close(self, client: ClientState) -> None:
        sock = client.sock
        if sock is None:
            return
        self.by_fd.pop(client.fd, None)
        self._pending.pop(client, None)
        try:
            self.epoll.unregister(client.fd)
        except (OSError, ValueError):
            pass
        sock.close()
        client.sock = None
        self.trimmer.released(client.buffered_bytes())
        client.release_buffers()
        self.server.forget_client(client)

    # ------------------------------------------------------------------------------- internals
    def _drain_pipe(self) -> None:
        try:
            while os.read(self._rpipe, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _run_calls(self) -> None:
        while self._calls:
            fn = self._calls.popleft()
            try:
                fn()
            except Exception:
                log.exception("a call scheduled on the loop failed")

    def shutdown(self, save: bool | None) -> str | None:
        """SHUTDOWN / SIGTERM: make everything durable, then stop after this iteration.

        save=None follows the save policy (snapshot if one is configured). Returns an error line if
        the data could not be made durable (the server then keeps running, like Redis).
        """
        persistence = self.server.persistence
        if persistence is not None:
            policy_save = bool(self.server.config.save)
            try:
                persistence.shutdown(save if save is not None else policy_save)
            except Exception as exc:
                log.error("SHUTDOWN could not save: %s", exc)
                return "ERR Errors trying to SHUTDOWN. Check logs."
        log.info("shutting down")
        self._stopping = True
        return None

    def _close_everything(self) -> None:
        for client in list(self.by_fd.values()):
            if client.out or client.out_pending:
                try:
                    client.sock.setblocking(True)  # type: ignore[union-attr]
                    client.sock.settimeout(1.0)  # type: ignore[union-attr]
                    client.sock.sendall(client.out_pending + b"".join(client.out))  # type: ignore[union-attr]
                except OSError:
                    pass
            self._close(client)
        self.close_listener()
        if self.after_drain is not None:
            # The standby holds every acknowledged write and the address is free: hand over now,
            # not after the rest of the process's stop (its agent). The clients were closed first:
            # they start their reconnection backoff (redis-py: 20 ms) while the standby binds,
            # which measured shorter pauses than handing over first (docs/performance.md, session 8).
            self.after_drain()
        self.epoll.close()
        os.close(self._rpipe)
        os.close(self._wpipe)

    # ------------------------------------------------- validated updates (kvserver.mve_support)
    @property
    def serving(self) -> bool:
        """False once the loop is stopping (any thread may read it)."""
        return not self._stopping

    def drop_inherited_io(self) -> None:
        """In a forked follower: forget the leader's sockets, epoll and self-pipe without touching them
        (they stay the leader's). The follower's livepatch.mve pointed the descriptors at /dev/null."""
        for client in self.by_fd.values():
            if client.sock is not None:
                os.close(client.sock.detach())
                client.sock = None
        self.by_fd = {}
        self._pending = {}
        self._to_close = []
        os.close(self.listener.detach())
        # The epoll instance is shared with the leader: close our descriptor, never unregister.
        self.epoll.close()
        os.close(self._rpipe)
        os.close(self._wpipe)

    def release_for_handover(self) -> None:
        """The follower serves these connections now: close this process's copies, stop, save nothing."""
        for client in list(self.by_fd.values()):
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(client.fd)
            if client.sock is not None:
                client.sock.close()  # the follower holds its own descriptor: the connection stays
                client.sock = None
        self.by_fd = {}
        self._pending = {}
        self._to_close = []
        self._stopping = True

    def adopt_after_handover(
        self, listener: socket.socket, clients: list[tuple[ClientState, bytes]]
    ) -> None:
        """In a promoted follower: serve `listener` and `clients` (each with its unsent output)."""
        listener.setblocking(False)
        self.listener = listener
        self.epoll = select.epoll()
        self.epoll.register(listener.fileno(), EPOLLIN)
        self._rpipe, self._wpipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(self._rpipe, EPOLLIN)
        self._calls.clear()
        # What the replay scheduled for its stand-in connections: the leader handed over the real output.
        self._pending = {}
        self._to_close = []
        for client, unsent in clients:
            self.by_fd[client.fd] = client
            self.epoll.register(client.fd, EPOLLIN)
            if unsent or client.close_after_reply:
                client.out.append(unsent)
                self._pending[client] = None
        self._defer_replies = self.server.aof is not None
        self._stop_requested = False

    def statistics(self) -> dict[str, Any]:
        return {
            "iterations": self.iterations,
            "clients": len(self.by_fd),
            "pending_writes": len(self._pending),
        }
