"""The thread pool: G thread groups, each with a listener, workers and a queue (MariaDB's pool).

Theory of operation (MariaDB sql/threadpool_generic.cc, REFERENCE.md section 1)
-------------------------------------------------------------------------------
Connections are assigned to groups round-robin. A group owns an epoll set of its idle connections, each
registered EPOLLONESHOT: once it reports readable it is disarmed, so exactly one thread owns it until
that thread re-arms it. A group has no dedicated listener thread: any worker that finds the queue empty
and nobody listening becomes the listener (`_get_event`), polls, and then
  * if the queue was empty, keeps the first ready connection for itself and stops being the listener
    (no hand-off on the common path: the thread that saw the request runs it), queueing the rest;
  * otherwise queues everything and listens on.
A worker runs one request -- recv, `session.receive`, one sendall -- re-arms the connection (or closes
it), and takes the next queued connection, so one executing thread per group works through the queue
without a hand-off per request. As in MariaDB (`active_thread_count`), queued work wakes a waiting
worker (or creates one) only when no thread of the group is executing: under the GIL a second
executing thread buys no parallelism, and each hand-off costs thread wake-ups (the pool did 5 context
switches per pgbench select-only transaction before this rule, 1.6 after; docs/performance.md). An
executing thread that blocks -- waiting for the write lock or for the fsync of its COMMIT -- says so
through blocking.py (MariaDB's thd_wait_begin/end): it stops counting as executing and, if the
group then has queued work or no listener, another worker is woken or created, because the COMMIT
that ends the wait may be queued behind it. Long statements occupy their worker; the stall check
(MariaDB's timer thread) wakes or creates a thread for any group that has had no listener and no
progress (no I/O event, no request taken from the queue) for STALL_LIMIT_S, so the other
connections of a group are not held up by one slow statement.

Live patching:
  * priorities (the paper's rule): a worker is LOW while executing a request, MEDIUM while waiting,
    CRITICAL while listening; under a global patch a thread parks only when no lower-priority thread
    still runs, so the waiting workers and the listener keep dispatching the requests in-flight work
    depends on (the COMMIT that releases a lock another worker waits for);
  * quiescence points: a worker between two tasks (owns no connection) and a waiting worker woken by
    the hook, both as MEDIUM; the listener after each poll, as CRITICAL;
  * while a patch is pending, a ready connection whose session is idle (no transaction: it holds
    nothing) is not run but held back (`deferred`) and queued again when the patch is over -- the
    pool's counterpart of a connection thread's activate() and of MariaDB's `do_command` point, which
    is skipped inside a transaction. Without it a steady load never lets the executing workers drain
    (new transactions keep arriving), and with executing workers parked instead the statements of
    open transactions found no free thread: both made global patches under pgbench -c 10 abort at
    their deadline. Statements of open transactions still run, so every lock is released and
    everyone parks;
  * births (the runtime's birth rule, registry.py): a worker created while a global patch is
    quiescing is born at once while some executing (LOW) worker still runs -- it is born MEDIUM, so it
    could not park yet anyway -- and becomes the group's listener. That is exactly when the pool
    creates one: every worker of the group waits for the write lock and nobody listens for the COMMIT
    that frees it. Before the rule the new thread waited for the end of the patch and the COMMIT sat
    unread until the deadline (figure 6's deadlocks, docs/results-sql.md). Under naive quiescence
    births still wait;
  * likewise a request that would start a transaction (its first write, which queues on the write
    lock) while a patch is pending backs out before taking anything (sqlserver/blocking.py) and is
    deferred the same way: the patch then waits only for transactions that already hold something;
  * the wake-up hook writes every group's self-pipe (wakes the listener) and notifies every group's
    condition (waiting workers go back to their quiescence point) -- except, while some request
    still executes, the threads whose point would only refuse them (`wakeup_all`): the runtime
    calls the hook repeatedly during a transition, and waking everyone each time starved the very
    requests the patch waits for.
Experiment only (`--pool-quiescence naive`, hidden; lpbench's deadlock figure): every pool thread stays
registered at one priority (MEDIUM), so a global patch parks each thread at its next point whatever the
others do -- the paper's naive MariaDB, which deadlocks when a parked listener holds the COMMIT that a
running statement's lock wait depends on. Never use it to serve.
A request runs on one worker from its first to its last byte, so no thread mixes generations within a
request; a transaction's statements may run on different workers (as in MariaDB's pool).

Concurrency: `dispatch` from the acceptor; `stop` once, after the acceptor returned; the rest on the
pool's threads. Group state is guarded by the group's lock; never held across a poll, a request or a
quiescence point.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import select
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from livepatch import Priority
from sqlserver import blocking
from sqlserver.server.connection import Connection, ConnectionTable
from sqlserver.server.contract import SessionFactory

_LOW, _MEDIUM, _CRITICAL = Priority.LOW, Priority.MEDIUM, Priority.CRITICAL

log = logging.getLogger("sqlserver.server")

STALL_LIMIT_S = 0.02  # a group without listener and without I/O this long gets another thread
MAX_THREADS_PER_GROUP = 64  # bound on workers per group (a group with more busy statements queues)
IDLE_TIMEOUT_S = 60.0  # a waiting worker beyond the group's first retires after this long
_ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT


class _Role:
    """A pool thread's priority as the runtime knows it, changed lazily (one per thread).

    Rule: the registered priority must be right whenever the thread can be found at a quiescence point
    or is executing a request. So `execute()` (LOW) always takes effect before a request runs; MEDIUM
    (waiting) and CRITICAL (listening) are registered only while a patch is pending (`flag.request`),
    right before the thread's quiescence point. So a stale priority only ever belongs to a thread
    blocked outside any request (in poll, or waiting for work) when a patch starts; the wake-up hook
    wakes it and it re-declares its priority before its point. What the priority rule needs holds
    throughout: every executing thread is registered LOW, so no waiting worker and no listener parks
    while a request still runs. One exception (`idle`): a worker about to wait for work while no patch
    is pending re-declares MEDIUM at once -- a blocking wait costs far more than the call, and a waiting
    worker left registered LOW held back every park of the next patch until the hook had woken it. The
    listener's path (poll, run, poll) stays lazy: in steady state it costs no call at all.
    """

    __slots__ = ("current", "flag", "naive", "point", "set_priority")

    def __init__(self, naive: bool = False) -> None:
        import livepatch

        self.flag = livepatch.transition_flag()
        self.point = livepatch.quiescence_point
        self.set_priority = livepatch.set_priority
        self.current = livepatch.Priority.MEDIUM  # managed_thread(priority=MEDIUM) registered it
        self.naive = naive  # experiment only: stay MEDIUM throughout (see the theory)

    def execute(self) -> None:
        if self.current is not _LOW and not self.naive:
            self.set_priority(_LOW)
            self.current = _LOW

    def idle(self) -> None:
        """About to wait for work (a blocking wait: a futex and a wake-up cost far more than this).
        With no patch pending, re-declare MEDIUM now instead of at the next patch's point: the runtime
        call is then one attribute write. A worker still registered LOW when a patch starts holds back
        every other pool thread's park (the priority rule) until the hook has woken it and it has
        re-declared; each such change also makes the runtime call the hooks again."""
        if self.current is _LOW and not self.naive and self.flag.request is None:
            self.set_priority(_MEDIUM)
            self.current = _MEDIUM

    def quiesce_as(self, priority: Priority) -> None:
        """The quiescence point, as `priority` (MEDIUM between tasks, CRITICAL after a poll)."""
        if self.flag.request is not None:
            if self.current is not priority and not self.naive:
                self.set_priority(priority)
                self.current = priority
            self.point()


class _Group:
    """One thread group: connections, epoll set, queue, thread counts. Fields under `lock`."""

    def __init__(self, pool: ThreadPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.queue: collections.deque[Connection] = collections.deque()
        # Ready connections of idle sessions held back while a patch is pending (see the theory).
        self.deferred: list[Connection] = []
        self.epoll = select.epoll()
        self.rpipe, self.wpipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.epoll.register(self.rpipe, select.EPOLLIN)
        self.by_fd: dict[int, Connection] = {}
        self.listening = False
        self.threads = 0
        self.starting = (
            0  # created, not yet serving (a birth waits while a global patch is applied)
        )
        self.waiting = 0
        self.active = 0  # threads executing a request and not blocked in a reported wait
        self.busy = 0  # threads executing a request, blocked in a reported wait or not
        self.listener_role: _Role | None = None  # the listening thread's role, while one listens
        self.waiting_low = 0  # waiting workers still registered LOW (their last request's priority)
        # ready connections seen by a listener plus requests taken from the queue: the stall check's
        # progress count
        self.io_events = 0
        self._names = itertools.count(1)

    def wakeup(self) -> None:
        try:
            os.write(self.wpipe, b"x")
        except OSError:
            pass  # full (a wake-up is pending) or closed at exit

    def drain(self) -> None:
        try:
            while os.read(self.rpipe, 4096):
                pass
        except BlockingIOError:
            pass

    def release_deferred(self) -> None:
        """Lock held. Queue the held-back connections again (the patch is over)."""
        if self.deferred:
            self.queue.extend(self.deferred)
            self.cond.notify(len(self.deferred))
            if self.waiting < len(self.deferred):
                self.wakeup()  # the listener takes queued work too when woken
            self.deferred.clear()

    def spares(self) -> int:
        """Lock held. Threads of this group that will come back to take queued work or to listen:
        those waiting for work, and those on their way back to `_get_event` -- woken by the wake-up
        hook, or parked at a quiescence point (a pool thread parks only while no request executes,
        and is unparked as soon as one does: the priority rule). Not the executing ones, not the
        listener, not one being created.

        `waiting` alone is not this: right after a transition every thread of the group is on its
        way back (the runtime releases them all at once, and at load 40 each needs the GIL before it
        waits again), so `waiting == 0` made the pool create a thread at nearly every request for a
        while after each patch. Under `livepatch stress` the pool grew to its bound of 64 threads per
        group within three minutes (193 threads, every one of which each global patch then had to
        wake and park; docs/performance.md, session 7)."""
        return self.threads - self.busy - self.starting - (1 if self.listening else 0)

    def wake_or_create(self) -> None:
        """Lock held. Another thread for this group: a waiting worker; else none while another
        thread is on its way back (`spares`); else a new one (bounded)."""
        if self.waiting:
            self.cond.notify()
        elif (
            self.spares() == 0
            and self.starting == 0
            and self.threads < self.pool.max_threads_per_group
        ):
            self.start_worker()

    def wait_begin(self) -> None:
        """blocking.wait_begin() on one of this group's workers (see the theory of operation)."""
        with self.lock:
            self.active -= 1
            if self.active == 0 and (self.queue or not self.listening):
                self.wake_or_create()

    def wait_end(self) -> None:
        with self.lock:
            self.active += 1

    def start_worker(self) -> None:
        """Lock held. Create a worker thread (counted at once, so callers do not over-create)."""
        self.threads += 1
        self.starting += 1
        name = f"sql-pool-g{self.index}-w{next(self._names)}"
        threading.Thread(target=self.pool._worker_main, args=(self,), name=name).start()


class ThreadPool:
    def __init__(
        self,
        state: SessionFactory,
        table: ConnectionTable,
        groups: int = 3,
        livepatch_enabled: bool = True,
        max_threads_per_group: int = MAX_THREADS_PER_GROUP,
        stall_limit_s: float = STALL_LIMIT_S,
        naive: bool = False,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        if groups < 1:
            raise ValueError("a pool needs at least one thread group (--pool-groups 1 or more)")
        self.state = state
        self.table = table
        self.livepatch_enabled = livepatch_enabled
        self.max_threads_per_group = max_threads_per_group
        self.stall_limit_s = stall_limit_s
        self.idle_timeout_s = idle_timeout_s
        self.naive = naive
        self.groups = [_Group(self, i) for i in range(groups)]
        self._next_group = itertools.cycle(self.groups)
        self._stopping = False
        self._stop_event = threading.Event()
        self._timer: threading.Thread | None = None
        self._all_threads_gone = threading.Condition()
        self._live_threads = 0
        self._flag: Any = None  # livepatch.transition_flag(), when patchable
        if livepatch_enabled:
            import livepatch

            self._flag = livepatch.transition_flag()

    # ---------------------------------------------------------------------------- acceptor thread
    def start(self) -> None:
        if self.livepatch_enabled:
            import livepatch

            livepatch.add_wakeup_hook(self.wakeup_all)
        for group in self.groups:
            with group.lock:
                group.start_worker()  # the group's first listener
        self._timer = threading.Thread(target=self._stall_check, name="sql-pool-timer", daemon=True)
        self._timer.start()

    def dispatch(self, conn: Connection) -> None:
        group = next(self._next_group)
        fd = conn.sock.fileno()
        with group.lock:
            group.by_fd[fd] = conn
        # A new client speaks first (SSLRequest or StartupMessage): wait for it like any idle client.
        group.epoll.register(fd, _ONESHOT_IN)

    def wakeup_all(self) -> None:
        """Livepatch wake-up hook (patcher thread; does not block): listeners and waiting workers go
        back to their quiescence points.

        While some request still executes, a waiting worker registered MEDIUM would only be refused
        at its point (the priority rule) and wait again, so it is not woken: the runtime calls this
        hook again and again while a transition is pending, and waking every worker each time cost
        about a thousand refused points per patch under pgbench TPC-B, slowing the very requests
        the patch waits for. The last request to finish wakes them (`_done_during_patch`). The same
        holds for a listener already registered CRITICAL. Workers and listeners still registered
        with an older priority (it is changed lazily) are always woken."""
        busy = any(g.busy for g in self.groups)
        for group in self.groups:
            listener = group.listener_role
            if not busy or listener is None or listener.current is not _CRITICAL:
                group.wakeup()
            with group.lock:
                if not busy or group.waiting_low:
                    group.cond.notify_all()

    def _done_during_patch(self, group: _Group) -> None:
        """A request finished while a patch is pending: this thread no longer executes. If it was
        the pool's last executing thread, the waiting workers can now park: wake them."""
        with group.lock:
            group.busy -= 1
            group.active -= 1
        if not any(g.busy for g in self.groups):
            self.wakeup_all()

    def stop(self, timeout: float) -> None:
        self._stopping = True
        self._stop_event.set()
        if self.livepatch_enabled:
            import livepatch

            livepatch.remove_wakeup_hook(self.wakeup_all)
        for group in self.groups:
            group.wakeup()
            with group.lock:
                group.cond.notify_all()
        for conn in self.table.snapshot():
            conn.interrupt()  # busy workers finish (cancelled) and close their connection
        deadline = time.monotonic() + timeout
        with self._all_threads_gone:
            while self._live_threads and time.monotonic() < deadline:
                self._all_threads_gone.wait(max(0.0, deadline - time.monotonic()))
            stuck = self._live_threads
        if stuck:
            log.warning("%d pool threads still running at exit", stuck)
        for group in self.groups:
            with group.lock:
                idle = list(group.by_fd.values())
                group.by_fd.clear()
            for conn in idle:
                conn.close()  # idle in the poll set: no thread owns them any more
            if not stuck:
                group.epoll.close()
                os.close(group.rpipe)
                os.close(group.wpipe)

    # ---------------------------------------------------------------------------- pool threads
    def _worker_main(self, group: _Group) -> None:
        with self._all_threads_gone:
            self._live_threads += 1
        try:
            if self.livepatch_enabled:
                import livepatch

                ctx: AbstractContextManager[None] = livepatch.managed_thread(
                    role="pool-worker", priority=livepatch.Priority.MEDIUM
                )
            else:
                ctx = nullcontext()
            with ctx:
                self._work(group)  # returns once _get_event has taken this thread off the count
        except Exception:
            log.exception("pool worker of group %d failed", group.index)
            with group.lock:
                group.threads -= 1
        finally:
            with self._all_threads_gone:
                self._live_threads -= 1
                self._all_threads_gone.notify_all()

    def _work(self, group: _Group) -> None:
        with group.lock:
            group.starting -= 1
        role = _Role(self.naive) if self.livepatch_enabled else None
        flag = self._flag
        back_out = blocking.BackOutRule(flag) if flag is not None and not self.naive else None
        blocking.install(group.wait_begin, group.wait_end, back_out)
        ran = False
        # When this thread last had work: it retires after IDLE_TIMEOUT_S without any, however often
        # the wake-up hook woke it meanwhile (each wake-up used to restart the timeout, so under a
        # patch every few seconds no thread ever retired).
        idle_since = time.monotonic()
        while True:
            if group.deferred and flag is not None and flag.request is None:
                with group.lock:
                    group.release_deferred()
            conn, retire = self._get_event(group, role, ran, idle_since)
            if retire:
                return
            ran = conn is not None
            if conn is not None:
                idle_since = time.monotonic()
                self._run(group, conn, role)
                if flag is not None and flag.request is not None:
                    self._done_during_patch(group)
                    ran = False
            if role is not None:
                # Between two tasks (owns no connection), or woken without work by the hook: as a
                # waiting worker (MEDIUM), which parks only once no request executes any more.
                role.quiesce_as(_MEDIUM)

    def _get_event(
        self, group: _Group, role: _Role | None, ran: bool, idle_since: float
    ) -> tuple[Connection | None, bool]:
        """A ready connection for this worker, (None, False) to pass the quiescence point again (woken
        without work), or (None, True) when the thread should exit (stop, or idle too long; the thread
        is then already off the group's count, decided under the lock so a group never over-retires).
        ran: this thread has just finished a request (it stops counting as executing). idle_since:
        when it last had work (time.monotonic()). A returned connection counts this thread as
        executing again."""
        with group.lock:
            if ran:
                group.active -= 1
                group.busy -= 1
            while True:
                if self._stopping:
                    group.threads -= 1
                    return None, True
                if group.queue:
                    group.io_events += 1
                    group.active += 1
                    group.busy += 1
                    return group.queue.popleft(), False
                if not group.listening:
                    group.listening = True
                    group.listener_role = role
                    try:
                        conn = self._listen(group, role)
                    finally:
                        group.listening = False
                        group.listener_role = None
                    if conn is not None:
                        group.active += 1
                        group.busy += 1
                    return conn, False
                idle_for = time.monotonic() - idle_since
                if idle_for >= self.idle_timeout_s and group.threads > 1:
                    group.threads -= 1  # idle that long and not the group's last thread
                    return None, True
                if role is not None:
                    role.idle()
                low = role is not None and role.current is _LOW
                group.waiting += 1
                group.waiting_low += low
                try:
                    # the group's last thread never retires: it just waits (a timeout is harmless)
                    last = group.threads <= 1
                    woken = group.cond.wait(
                        self.idle_timeout_s if last else self.idle_timeout_s - idle_for
                    )
                finally:
                    group.waiting -= 1
                    group.waiting_low -= low
                if group.queue or self._stopping:
                    continue
                if woken:
                    return None, False  # a wake-up without work (the patcher's hook): go round

    def _listen(self, group: _Group, role: _Role | None) -> Connection | None:
        """Lock held on entry and exit (released while polling). Poll until there is a ready connection
        this thread should run itself (returned), or the pool stops / a wake-up arrives (None)."""
        while True:
            group.lock.release()
            try:
                try:
                    events = group.epoll.poll()
                except InterruptedError:
                    events = []
                ready: list[Connection] = []
                woken = False
                by_fd = group.by_fd
                for fd, _mask in events:
                    if fd == group.rpipe:
                        woken = True
                        group.drain()
                    else:
                        conn = by_fd.get(fd)
                        if conn is not None:
                            ready.append(conn)
                if role is not None:
                    # After the poll, as the listener: while a lower-priority worker still runs, the
                    # listener does not park, so it keeps dispatching (the ready connections wait in
                    # `ready` meanwhile).
                    role.quiesce_as(_CRITICAL)
            finally:
                group.lock.acquire()
            if self._stopping:
                group.queue.extend(ready)  # closed by stop() through the table
                return None
            if not ready:
                if woken and group.queue:
                    return None  # queued work (released after a patch): take it as a worker
                # Woken by the hook: the point was passed above, as CRITICAL. Going back to the
                # worker loop would pass a MEDIUM point too, and each priority change during a
                # patch makes the runtime call the hooks again, which woke the listener again: a
                # loop of ~15,000 refused points per patch under pgbench TPC-B.
                continue
            group.io_events += len(ready)
            pick = not group.queue
            first = ready[0]
            rest = ready[1:] if pick else ready
            if rest:
                group.queue.extend(rest)
                if not pick and group.active == 0:
                    group.wake_or_create()  # nobody executes: someone must take the queue
            if pick:
                # This thread is about to execute and the group has no listener until it returns.
                # Keep one spare waiting so the stall check can make it the listener if the request
                # blocks (e.g. on a lock whose COMMIT is still in this group's poll set). Created now,
                # ahead of need: a thread is slow to start on a loaded machine (and, under naive
                # quiescence, one born during a global patch waits for its end).
                if (
                    group.spares() == 0  # none waiting, and none on its way back (see spares())
                    and group.starting == 0
                    and group.threads < self.max_threads_per_group
                ):
                    group.start_worker()
                return first

    def _run(self, group: _Group, conn: Connection, role: _Role | None) -> None:
        """One request of `conn` (owned by this worker until re-armed)."""
        flag = self._flag
        if flag is not None and flag.request is not None:
            session = conn.session
            if session is None or session.idle:
                # A patch is pending and this session holds nothing: its next transaction waits
                # until the patch is over (like a connection thread's activate()), so that no new
                # work keeps the executing workers busy forever; it is queued again afterwards.
                # Decided before the thread declares itself executing (LOW): it runs nothing, and
                # turning LOW would unpark every parked waiting worker and listener of the pool
                # (the priority rule), which then have to be woken and park again -- once per
                # client whose next request arrives during the patch.
                with group.lock:
                    group.deferred.append(conn)
                return
        if role is not None:
            role.execute()
        try:
            keep = conn.serve_once(self.state) and not self._stopping
        except Exception:
            log.exception("serving %s failed; closing it", conn.peer)
            keep = False
        fd = conn.sock.fileno()
        if keep and conn.pending is not None:
            # The request backed out for a pending patch (blocking.py): its session holds nothing;
            # it runs again, from conn.pending, once the patch is over.
            with group.lock:
                group.deferred.append(conn)
            return
        if keep:
            try:
                group.epoll.modify(fd, _ONESHOT_IN)  # back to the listener; no longer ours
                return
            except OSError:
                pass  # the socket is gone: close below
        with group.lock:
            group.by_fd.pop(fd, None)
        try:
            group.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        conn.close()

    def _stall_check(self) -> None:
        """MariaDB's timer thread: a group whose listener became a worker for a long statement, and
        that made no progress since the last check, gets a waiting worker woken or a new one created."""
        last = [g.io_events for g in self.groups]
        while not self._stop_event.wait(self.stall_limit_s):
            patch_pending = self._flag is not None and self._flag.request is not None
            for i, group in enumerate(self.groups):
                with group.lock:
                    if group.deferred and not patch_pending:
                        group.release_deferred()  # nobody passed by since the patch ended
                    progress = group.io_events != last[i]
                    stalled = (not group.listening and not progress and bool(group.by_fd)) or (
                        bool(group.queue) and not progress
                    )
                    last[i] = group.io_events
                    if not stalled:
                        continue
                    group.wake_or_create()
                    if group.queue and group.listening:
                        group.wakeup()  # the listener takes queued work too when woken
