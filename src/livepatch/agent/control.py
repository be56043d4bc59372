"""The control socket: a Unix stream socket that accepts one request per connection from trusted peers.

Theory of operation
- start(): refuse to replace a live socket (another agent answers on it) or a non-socket file; remove a
  stale socket; bind, chmod to `mode` (0600 by default), and only then listen(), so no one can connect
  while the permissions are still the umask's.
- An acceptor thread accepts connections and hands each to a short-lived handler thread (at most
  MAX_CONNECTIONS at once; beyond that the peer gets a "busy" error). A slow apply therefore never
  blocks a status request.
- Each connection is checked first: the peer's uid (SO_PEERCRED, from the kernel, not from the peer)
  must be the agent's effective uid or root. Anyone else gets an error line and is logged.
  Note: with mode 0600 a non-root user of another uid cannot even connect (EACCES from connect()); the
  uid check is the second line of defence (a relaxed `mode` for tests, root-owned sockets, ACLs).
- Then one request line (MAX_REQUEST_BYTES, REQUEST_TIMEOUT_S), one reply line, close. Every exception
  of a handler becomes an error reply or a log line: the control socket never takes the server down.
- stop(): shut the listener down (wakes accept()), wait for the threads, remove the socket file if it
  is still the one we created.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable

from livepatch.agent import protocol
from livepatch.runtime.pacing import Pacer

log = logging.getLogger("livepatch.agent")

MAX_CONNECTIONS = 16
REQUEST_TIMEOUT_S = 30.0  # to receive the whole request line (a 16 MiB patch over a local socket)
REPLY_TIMEOUT_S = 30.0

Handler = Callable[[protocol.Request], protocol.Reply]
_UCRED = struct.Struct("3i")  # struct ucred {pid_t pid; uid_t uid; gid_t gid;}


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected Unix socket."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return pid, uid, gid


class ControlServer:
    """Serve `handler` on a Unix socket. start()/stop() from one controlling thread; `handler` is called
    on connection threads, possibly concurrently, and must be thread-safe."""

    def __init__(self, path: str, handler: Handler, *, mode: int = 0o600) -> None:
        self.path = path
        self.mode = mode
        self._handler = handler
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._conn_threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self.allowed_uids = frozenset({os.geteuid(), 0})

    def start(self) -> None:
        self._stopping.clear()  # a stopped server may be started again
        self._clear_stale_socket()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.path)
            os.chmod(self.path, self.mode)
            self._inode = os.stat(self.path).st_ino
            listener.listen(64)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="livepatch-control", daemon=True
        )
        self._acceptor.start()

    def check_path(self) -> None:
        """Fail as start() would for a path held by a live agent or by a file that is not a socket
        (removing a stale socket), or in a directory that does not exist: lets the agent say so before
        it does anything else."""
        parent = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"no such directory: {parent}")
        self._clear_stale_socket()

    def _clear_stale_socket(self) -> None:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise FileExistsError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(1.0)
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)  # nobody listens: left over from a process that died
            return
        finally:
            probe.close()
        raise FileExistsError(f"another agent is listening on {self.path}")

    def stop(self) -> None:
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() on Linux
            listener.close()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5.0)
        with self._lock:
            threads = list(self._conn_threads)
        for t in threads:
            t.join(timeout=REQUEST_TIMEOUT_S)
        with contextlib.suppress(FileNotFoundError):
            # only our socket: a later agent may already have bound the same path
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("control socket accept failed")
                time.sleep(0.1)  # e.g. EMFILE: back off instead of spinning
                continue
            if not self._slots.acquire(blocking=False):
                self._reply_and_close(conn, protocol.ErrorReply("agent busy: too many connections"))
                continue
            t = threading.Thread(
                target=self._serve_connection,
                args=(conn,),
                name="livepatch-control-conn",
                daemon=True,
            )
            with self._lock:
                self._conn_threads.add(t)
            t.start()

    def _serve_connection(self, conn: socket.socket) -> None:
        try:
            reply = self._handle(conn)
            if reply is not None:
                self._reply_and_close(conn, reply)
        except Exception:
            log.exception("control connection failed")
        finally:
            conn.close()
            self._slots.release()
            with self._lock:
                self._conn_threads.discard(threading.current_thread())

    def _handle(self, conn: socket.socket) -> protocol.Reply | None:
        pid, uid, _ = peer_credentials(conn)
        if uid not in self.allowed_uids:
            log.warning(
                "refused control connection from pid %d uid %d (allowed uids: %s)",
                pid,
                uid,
                sorted(self.allowed_uids),
            )
            return protocol.ErrorReply(
                f"permission denied: uid {uid} may not control this server "
                f"(only uid {os.geteuid()} or root)"
            )
        try:
            line = protocol.read_line(
                conn, protocol.MAX_REQUEST_BYTES, time.monotonic() + REQUEST_TIMEOUT_S
            )
            # decoding an apply's patch (~0.3 ms for 115 kB) holds the GIL as staging does: paced
            pace = Pacer()
            request = protocol.validate(protocol.decode(line, pace))
            pace.rest()  # the patcher thread, next, starts with the GIL freshly handed round
        except protocol.ProtocolError as exc:
            return protocol.ErrorReply(f"bad request: {exc}")
        except TimeoutError:
            return protocol.ErrorReply(f"bad request: not received within {REQUEST_TIMEOUT_S} s")
        except (ConnectionError, OSError) as exc:
            log.info("control connection from pid %d closed early: %s", pid, exc)
            return None
        log.info("control request %s from pid %d uid %d", request.op, pid, uid)
        try:
            return self._handler(request)
        except Exception as exc:  # a bug in a handler is an error reply, never a dead server
            log.exception("control request %s failed", request.op)
            return protocol.ErrorReply(f"internal error: {type(exc).__name__}: {exc}")

    @staticmethod
    def _reply_and_close(conn: socket.socket, reply: protocol.Reply) -> None:
        try:
            conn.settimeout(REPLY_TIMEOUT_S)
            conn.sendall(protocol.encode(reply.to_wire()))
        except OSError as exc:
            log.info("could not send control reply: %s", exc)
        finally:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
