"""A synthetic thread pool (listener + workers + queue), patched for real: why priorities matter.

The pool follows REFERENCE.md §1 "Worker loop": a worker is MEDIUM while waiting for a task and LOW while
running one; the listener, which turns network events into tasks, is CRITICAL. A transaction takes the table
lock in its `begin` task and releases it in its `commit` task, which is a separate network event: between
the two, the lock is held by the connection, not by any thread, so workers pass quiescence points freely.
A `work` task needs the table lock. If the listener (or every free worker) parks while a worker is blocked
on that lock, nobody dispatches the commit: the naive protocol deadlocks (the deadline turns that into an
abort). With priorities the listener and free workers keep going until the blocked worker finished.

The load test runs with the points of REFERENCE.md §1 (before waiting for work) and also with MariaDB's
per-command point (docs/runtime.md, "Thread pools"): both must never deadlock nor mix versions.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

import livepatch
from livepatch import Category, Outcome, Priority
from livepatch.runtime.core import Runtime
from livepatch.runtime.lifecycle import EventName
from tests.runtime.runtime_helpers import LoadedModules, fixture_source, wait_for

V1, V2 = fixture_source("app_v1.py"), fixture_source("app_v2.py")


@dataclass
class Request:
    kind: str  # "begin" | "commit" | "work"
    reply: queue.Queue[str] = field(default_factory=lambda: queue.Queue(maxsize=1))


class Pool:
    def __init__(
        self, rt: Runtime, app: ModuleType, workers: int, command_points: bool = False
    ) -> None:
        self.rt = rt
        self.app = app
        self.command_points = command_points
        self.net: deque[Request] = deque()
        self.net_cv = threading.Condition()
        self.tasks: deque[Request] = deque()
        self.tasks_cv = threading.Condition()
        self.table_lock = threading.Lock()
        self.work_blocked = threading.Event()  # a work task is about to wait for the table lock
        self.stopping = False
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self.listener, name="listener", daemon=True)]
        self.threads += [
            threading.Thread(target=self.worker, name=f"worker-{i}", daemon=True)
            for i in range(workers)
        ]
        self.ready = threading.Barrier(len(self.threads) + 1)

    def start(self) -> Pool:
        self.rt.add_wakeup_hook(self.wake)
        for t in self.threads:
            t.start()
        self.ready.wait(timeout=30)
        return self

    def stop(self) -> None:
        self.stopping = True
        self.wake()
        for t in self.threads:
            t.join(timeout=30)
        self.rt.remove_wakeup_hook(self.wake)
        assert not [t.name for t in self.threads if t.is_alive()]

    def wake(self) -> None:
        """The wake-up hook: interrupt the listener's wait and every idle worker's wait."""
        with self.net_cv:
            self.net_cv.notify_all()
        with self.tasks_cv:
            self.tasks_cv.notify_all()

    def send(self, kind: str) -> Request:
        req = Request(kind)
        with self.net_cv:
            self.net.append(req)
            self.net_cv.notify()
        return req

    def listener(self) -> None:
        with self.rt.managed_thread("listener", Priority.CRITICAL):
            self.ready.wait(timeout=30)
            while True:
                self.rt.quiescence_point()
                with self.net_cv:
                    if not self.net and not self.stopping:
                        self.net_cv.wait()
                    if self.stopping:
                        return
                    if not self.net:
                        continue  # woken to pass a quiescence point
                    req = self.net.popleft()
                with self.tasks_cv:
                    self.tasks.append(req)
                    self.tasks_cv.notify()

    def worker(self) -> None:
        with self.rt.managed_thread("worker", Priority.MEDIUM):
            self.ready.wait(timeout=30)
            while True:
                self.rt.set_priority(Priority.MEDIUM)
                self.rt.quiescence_point()
                with self.tasks_cv:
                    if not self.tasks and not self.stopping:
                        self.tasks_cv.wait()
                    if self.stopping:
                        return
                    if not self.tasks:
                        continue
                    req = self.tasks.popleft()
                self.rt.set_priority(Priority.LOW)
                if self.command_points and req.kind != "commit":
                    # MariaDB's do_command(): a point per command, except inside a transaction (the
                    # commit's connection holds the table lock).
                    self.rt.quiescence_point()
                req.reply.put(self.run(req))

    def run(self, req: Request) -> str:
        gen = self.rt.current_generation()
        if req.kind == "begin":
            self.table_lock.acquire()
            version = self.app.second(0)[0]
        elif req.kind == "commit":
            version = self.app.second(0)[0]
            self.table_lock.release()
        else:
            self.work_blocked.set()
            with self.table_lock:
                version = self.app.first(0)[0]
        expected = "v2" if gen % 2 else "v1"  # a fresh runtime: odd generations run the patch
        if version != expected:
            self.errors.append(f"{req.kind}: generation {gen} ran {version}")
        return version


@pytest.fixture
def app(tmp_path: Path) -> Iterator[ModuleType]:
    lm = LoadedModules(tmp_path)
    try:
        yield lm.load(V1)
    finally:
        lm.close()


def _parked(rt: Runtime, name: str) -> bool:
    return any(t.name == name and t.state == "parked" for t in rt.statistics().threads)


def _blocked_transaction(pool: Pool) -> Request:
    """Leave the table lock held by an open transaction and a worker blocked on it."""
    assert pool.send("begin").reply.get(timeout=10) == "v1"
    work = pool.send("work")
    assert pool.work_blocked.wait(timeout=10)
    return work


def test_naive_quiescence_deadlocks_until_the_deadline(rt: Runtime, app: ModuleType) -> None:
    spec = livepatch.patch_from_sources({app.__name__: (V1, V2)}, category=Category.PROCESS)
    pool = Pool(rt, app, workers=3).start()
    old = app.first.__code__
    try:
        work = _blocked_transaction(pool)
        result: list[livepatch.PatchResult] = []
        patcher = threading.Thread(
            target=lambda: result.append(rt.apply_patch(spec, timeout=1.0, use_priorities=False))
        )
        patcher.start()
        wait_for(lambda: _parked(rt, "listener"), what="the listener to park")
        commit = pool.send(
            "commit"
        )  # the event that would end the transaction: nobody dispatches it
        patcher.join(timeout=30)
        r = result[0]
        assert r.outcome is Outcome.ABORTED, r.reason
        assert "(role worker, priority LOW)" in r.reason  # the worker blocked on the table lock
        assert app.first.__code__ is old
        # released: the commit is dispatched and the blocked work completes, in the old version
        assert commit.reply.get(timeout=10) == "v1"
        assert work.reply.get(timeout=10) == "v1"
    finally:
        pool.stop()
    assert pool.errors == []


def test_priorities_avoid_the_deadlock(rt: Runtime, app: ModuleType) -> None:
    spec = livepatch.patch_from_sources({app.__name__: (V1, V2)}, category=Category.PROCESS)
    pool = Pool(rt, app, workers=3).start()
    try:
        work = _blocked_transaction(pool)
        result: list[livepatch.PatchResult] = []
        patcher = threading.Thread(target=lambda: result.append(rt.apply_patch(spec, timeout=30)))
        patcher.start()
        wait_for(lambda: rt.statistics().transition == "global", what="the patch request")
        commit = pool.send("commit")
        assert commit.reply.get(timeout=10) == "v1"  # dispatched although a patch is pending
        assert work.reply.get(timeout=10) == "v1"
        patcher.join(timeout=30)
        assert result[0].outcome is Outcome.APPLIED, result[0].reason
        reached = [e.thread for e in result[0].events if e.name is EventName.REACHED]
        assert reached[-1] == "listener"  # the listener parks last
        assert pool.send("work").reply.get(timeout=10) == "v2"
        assert rt.revert_patch().ok
    finally:
        pool.stop()
    assert pool.errors == []


PATCHES = 500


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command_points", [False, True], ids=["waiting-points", "command-points"])
def test_priority_quiescence_never_deadlocks_under_load(
    rt: Runtime, app: ModuleType, command_points: bool
) -> None:
    spec = livepatch.patch_from_sources({app.__name__: (V1, V2)}, category=Category.PROCESS)
    pool = Pool(rt, app, workers=5, command_points=command_points).start()
    stop = threading.Event()
    done = [0, 0, 0, 0]
    client_errors: list[str] = []

    def client(i: int, kinds: tuple[str, ...]) -> None:
        while not stop.is_set():
            for kind in kinds:
                try:
                    pool.send(kind).reply.get(timeout=30)
                except queue.Empty:
                    client_errors.append(f"client {i}: no reply to {kind} within 30 s")
                    return
            done[i] += 1

    # At most 4 requests are outstanding for 5 workers: the pool itself can never run out of workers.
    clients = [threading.Thread(target=client, args=(0, ("begin", "commit")), daemon=True)]
    clients += [
        threading.Thread(target=client, args=(i, ("work",)), daemon=True) for i in (1, 2, 3)
    ]
    for c in clients:
        c.start()
    outcomes: list[Outcome] = []
    try:
        for n in range(PATCHES):
            r = rt.apply_patch(spec, timeout=10) if n % 2 == 0 else rt.revert_patch(timeout=10)
            outcomes.append(r.outcome)
            assert r.ok, f"patch {n}: {r.outcome}: {r.reason}"
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=60)
        pool.stop()
    assert client_errors == []
    assert outcomes.count(Outcome.APPLIED) == outcomes.count(Outcome.REVERTED) == PATCHES // 2
    assert all(d > 0 for d in done)
    assert pool.errors == []
