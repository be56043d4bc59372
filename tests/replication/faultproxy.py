"""A fault-injecting TCP proxy on loopback for the replication link: delay, drop, half-open.

Each accepted connection gets two pump threads (one per direction). `delay_s` is slept before each
forwarded chunk; `drop()` closes every current connection at once (both sides see EOF/RST);
`blackhole()` stops forwarding while keeping the sockets open, so each side sees a silent, half-open
peer, until `heal()`; `blackhole(hide_closes=True)` also keeps a side's close from the other until
then (as a loaded peer that has not read the EOF yet).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.delay_s = 0.0
        self._flowing = threading.Event()
        self._flowing.set()
        self._hide_closes = False
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._closed = False
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self._flowing.wait()
                if self.delay_s:
                    time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            if self._hide_closes:
                self._flowing.wait()  # close() heals: never left waiting
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def drop(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def blackhole(self, hide_closes: bool = False) -> None:
        self._hide_closes = hide_closes
        self._flowing.clear()

    def heal(self) -> None:
        self.delay_s = 0.0
        self._flowing.set()

    def close(self) -> None:
        self._closed = True
        self.heal()
        self.drop()
        self.listener.close()
