"""Sync time of global patches in a thread pool served over real sockets (priority-based quiescence).

The pool is modelled on MariaDB's (REFERENCE.md §1): `--groups` thread groups, each with a listener
(CRITICAL) that polls its connections and a self-pipe with epoll (one-shot: a connection is handed to one
worker at a time), and `--workers` workers that take connections from the group's queue under a condition
(MEDIUM while waiting, LOW while running a request). The wake-up hook does what a real pool's trigger does:
notify_all on every group's condition and a byte into every group's self-pipe.

Clients run in a separate process and send requests over TCP in a closed loop: most send `work`, which
takes its table's lock; one per table sends `begin` (takes the lock and keeps it across requests) then
`commit` (releases it), so a worker can be blocked on a lock that only a later request releases: the case
for which priorities exist. Every request calls two patched functions. The main thread applies and reverts
a global patch (`--patches` times, a `--gap-ms` pause between patches) and reports median, p90 and p99 of
PatchResult.timings["sync"] (request -> all parked) and of request -> finished (events).

    .venv/bin/python bench/pool_sync.py [--groups 2] [--workers 4] [--clients 8] [--patches 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing as mp
import os
import select
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from types import ModuleType

import livepatch
from livepatch import Category, Priority

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "runtime" / "fixtures"
ONESHOT = select.EPOLLIN | select.EPOLLONESHOT


def load(source: str, tmp: Path) -> ModuleType:
    name = "lp_bench_pool_app"
    path = tmp / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class Group:
    """One thread group: a listener, its epoll and self-pipe, a queue of ready connections, workers."""

    def __init__(self, server: Server, index: int, workers: int) -> None:
        self.server = server
        self.epoll = select.epoll()
        self.pipe_r, self.pipe_w = os.pipe()
        os.set_blocking(self.pipe_r, False)
        os.set_blocking(self.pipe_w, False)
        self.epoll.register(self.pipe_r, select.EPOLLIN)
        self.conns: dict[int, socket.socket] = {}
        self.ready: deque[socket.socket] = deque()
        self.cv = threading.Condition()
        self.threads = [threading.Thread(target=self.listener, name=f"g{index}-listener")]
        self.threads += [
            threading.Thread(target=self.worker, name=f"g{index}-worker-{i}")
            for i in range(workers)
        ]

    def add(self, conn: socket.socket) -> None:
        self.conns[conn.fileno()] = conn
        self.epoll.register(conn.fileno(), ONESHOT)

    def wake(self) -> None:
        with self.cv:
            self.cv.notify_all()
        try:
            os.write(self.pipe_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full: the listener has wake-ups pending anyway

    def listener(self) -> None:
        with livepatch.managed_thread("listener", Priority.CRITICAL):
            self.server.started.wait()
            while not self.server.stopping:
                livepatch.quiescence_point()
                for fd, _ in self.epoll.poll():
                    if fd == self.pipe_r:
                        try:
                            os.read(self.pipe_r, 4096)
                        except BlockingIOError:
                            pass
                        continue
                    with self.cv:
                        self.ready.append(self.conns[fd])
                        self.cv.notify()

    def worker(self) -> None:
        with livepatch.managed_thread("worker", Priority.MEDIUM):
            self.server.started.wait()
            while True:
                livepatch.set_priority(Priority.MEDIUM)
                livepatch.quiescence_point()
                with self.cv:
                    if not self.ready and not self.server.stopping:
                        self.cv.wait()
                    if self.server.stopping:
                        return
                    if not self.ready:
                        continue  # woken to pass a quiescence point
                    conn = self.ready.popleft()
                livepatch.set_priority(Priority.LOW)
                self.serve(conn)

    def serve(self, conn: socket.socket) -> None:
        data = conn.recv(16)
        if not data:
            return  # the client left: the connection is not re-armed
        kind, table = data[:1], self.server.tables[data[1] % len(self.server.tables)]
        if self.server.command_points and kind != b"c":
            # MariaDB's do_command(): a quiescence point per command, unless the connection is inside a
            # transaction (a commit's connection holds its table lock: it must not park).
            livepatch.quiescence_point()
        if kind != b"c":
            table.acquire()  # begin keeps it until its commit; work releases it below
        version = self.server.app.first(1)[0]
        if self.server.app.second(1)[0] != version:
            self.server.mixed += 1  # invariant 2 broken: one request ran two versions
        if kind != b"b":
            table.release()
        conn.sendall(version.encode())
        self.epoll.modify(conn.fileno(), ONESHOT)


class Server:
    def __init__(
        self, app: ModuleType, groups: int, workers: int, tables: int, command_points: bool
    ) -> None:
        self.app = app
        self.command_points = command_points
        self.mixed = 0
        self.stopping = False
        self.started = threading.Event()
        self.tables = [threading.Lock() for _ in range(tables)]
        self.groups = [Group(self, i, workers) for i in range(groups)]
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def wake(self) -> None:
        for g in self.groups:
            g.wake()

    def accept(self, n: int) -> None:
        for i in range(n):
            conn, _ = self.sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.groups[i % len(self.groups)].add(conn)

    def start(self) -> None:
        livepatch.add_wakeup_hook(self.wake)
        for g in self.groups:
            for t in g.threads:
                t.start()
        self.started.set()

    def stop(self) -> None:
        self.stopping = True
        self.wake()
        for g in self.groups:
            for t in g.threads:
                t.join(timeout=30)
        livepatch.remove_wakeup_hook(self.wake)
        for g in self.groups:
            for c in g.conns.values():
                c.close()
            g.epoll.close()
            os.close(g.pipe_r)
            os.close(g.pipe_w)
        self.sock.close()


def client_process(port: int, clients: int, tables: int, control: Connection) -> None:
    """Closed-loop clients: client i < tables runs begin/commit on table i, the others `work`. They stop
    when the parent says so over `control` (or goes away); the request count goes back the same way."""
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    for s in socks:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stop = threading.Event()
    counts = [0] * clients

    def run(i: int, s: socket.socket) -> None:
        kinds = [b"b", b"c"] if i < tables else [b"w"]
        n = 0
        while not stop.is_set():
            for k in kinds:
                s.sendall(k + bytes([i % tables]))
                if len(s.recv(16)) == 0:
                    return
                n += 1
        counts[i] = n

    ts = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(socks)]
    for t in ts:
        t.start()
    try:
        control.recv()
    except EOFError:
        pass
    stop.set()
    for t in ts:
        t.join()
    for s in socks:
        s.close()
    control.send(sum(counts))


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def run(args: argparse.Namespace) -> None:
    v1, v2 = (FIXTURES / "app_v1.py").read_text(), (FIXTURES / "app_v2.py").read_text()
    tables = max(1, args.clients // 4)
    with tempfile.TemporaryDirectory() as tmp:
        app = load(v1, Path(tmp))
        spec = livepatch.patch_from_sources(
            {app.__name__: (v1, v2)}, category=Category.PROCESS, patch_id="bench-pool"
        )
        server = Server(app, args.groups, args.workers, tables, args.points == "command")
        ctx = mp.get_context("spawn")
        control, child_end = ctx.Pipe()
        proc = ctx.Process(
            target=client_process, args=(server.port, args.clients, tables, child_end)
        )
        proc.start()
        sync: list[float] = []
        finished: list[float] = []
        aborted = 0
        try:
            server.accept(args.clients)
            server.start()
            time.sleep(0.2)  # let the load settle
            t0 = time.monotonic()
            for i in range(args.patches):
                r = (
                    livepatch.apply_patch(spec, method="global", timeout=10)
                    if i % 2 == 0
                    else livepatch.revert_patch(spec.patch_id, method="global", timeout=10)
                )
                if not r.ok:
                    aborted += 1
                    print(f"patch {i} {r.outcome}: {r.reason}", file=sys.stderr)
                    if livepatch.applied_patches():  # keep apply/revert alternating
                        livepatch.revert_patch(spec.patch_id, method="global", timeout=10)
                    continue
                sync.append(r.timings["sync"])
                finished.append((r.events[-1].t_ns - r.events[0].t_ns) / 1e6)
                time.sleep(args.gap_ms / 1e3)
            elapsed = time.monotonic() - t0
        finally:
            control.send("stop")
            requests = control.recv() if control.poll(30) else 0
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
            server.stop()
            while livepatch.applied_patches():
                livepatch.revert_patch(method="global", timeout=10)
            sys.modules.pop(app.__name__, None)
    print(
        f"{args.groups} groups x (listener + {args.workers} workers), {args.clients} clients "
        f"({tables} transactional), points: {args.points}, {args.patches} global patches, {aborted} aborted, "
        f"{requests / elapsed:,.0f} requests/s, {server.mixed} requests mixed versions"
    )
    for name, xs in (("sync", sync), ("request->finished", finished)):
        if xs:
            print(
                f"{name:<18} median {statistics.median(xs):7.3f} ms  p90 {pct(xs, 0.9):7.3f} ms  "
                f"p99 {pct(xs, 0.99):7.3f} ms  max {max(xs):7.3f} ms"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--workers", type=int, default=4, help="workers per group")
    ap.add_argument("--clients", type=int, default=8, help="client connections")
    ap.add_argument("--patches", type=int, default=200)
    ap.add_argument(
        "--points",
        choices=("command", "waiting"),
        default="command",
        help="command: a point per command outside transactions (MariaDB) and one per wait for work; "
        "waiting: only the one per wait for work (as tests/runtime/test_pool.py)",
    )
    ap.add_argument("--gap-ms", type=float, default=5.0, help="pause between patches")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
