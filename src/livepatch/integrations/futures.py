"""concurrent.futures thread pools under livepatch: managed workers, a point between tasks.

Theory of operation
- `ThreadPoolExecutor.__init__` is wrapped to give the executor a `WorkQueue` in place of its
  `queue.SimpleQueue` (same put/get/get_nowait contract, plus `wake()`), and
  `concurrent.futures.thread._worker` (the body of every worker thread; the executor looks it up when it
  starts one) is wrapped to run the worker as a managed thread (role "pool-worker") for its life, taking
  its tasks through `WorkQueue.take`.
- `take` is the worker loop of docs/runtime.md ("Thread pools: priorities"): MEDIUM while waiting,
  a quiescence point before each task (after taking it off the queue, so a task submitted after a
  local patch was published never runs on the old code), LOW while running it. A waiting worker stays *active* and is woken
  by a wake-up hook (`wake()` on every pool's queue) to pass its point. Why not wait inactive, as a
  connection does: a thread that submits a task and waits for its result (`pool.submit(f).result()` in a
  request handler, a LOW thread, active) needs a worker to run that task while a global patch waits; an
  inactive worker would block in `activate()` until the patch ends, and the patch would wait for the
  submitter: an abort at the deadline. With priorities, a waiting worker (MEDIUM) returns from its point
  while a LOW thread still runs, so it takes the task, and parks only once every LOW thread has parked.
  The cost: during a transition the patcher's wake-ups spin idle workers through their points (every
  0.5-20 ms, until quiescence or the deadline); none when no patch is pending.
- A task runs on one generation from start to end. asyncio's default executor
  (`loop.run_in_executor(None, ...)`) is such a pool.
- Not managed: livepatch's own pools (thread name prefix "livepatch": the agent's patcher thread must not
  be a managed thread), and executors built before `install()` (they keep their SimpleQueue).
"""

from __future__ import annotations

import concurrent.futures.thread
import queue
import threading
import weakref
from collections import deque
from typing import Any

from livepatch.integrations import marks
from livepatch.runtime import core as runtime

_OWN_PREFIX = "livepatch"
_NOTHING = object()  # take(): woken without a task

_queues: weakref.WeakSet[WorkQueue] = weakref.WeakSet()
_queues_lock = (
    threading.Lock()
)  # guards _queues (the patcher thread iterates it in the wake-up hook)


class WorkQueue:
    """An executor's work queue that idle managed workers wait on actively and a patch can wake.

    Any thread may call put/get/get_nowait (the queue.SimpleQueue contract the executor relies on);
    `take` is for the executor's managed workers only; `wake` for the patcher's hook (never blocks for
    long: it takes the queue's lock to notify)."""

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self._cond = threading.Condition(threading.Lock())

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        with self._cond:
            if not self._cond.wait_for(lambda: self._items, timeout if block else 0):
                raise queue.Empty
            return self._items.popleft()

    def take(self) -> Any:
        """The next task, for a managed worker: MEDIUM while waiting, a quiescence point before it,
        LOW on return (the worker runs it)."""
        runtime.set_priority(runtime.Priority.MEDIUM)
        while True:
            with self._cond:
                if not self._items:
                    self._cond.wait()  # woken by put() or by a patch's wake()
                item = self._items.popleft() if self._items else _NOTHING
            # The point comes after the task is taken, not before the wait: a worker that waited
            # through the start of a local patch and was woken by put() (before the patch's wake())
            # would otherwise run the task on the old code although the patch was published before
            # it was submitted -- a client whose earlier request another worker already answered on
            # the new code would see old after new. Still MEDIUM here: under a global patch the
            # worker parks with the task in hand only once no LOW thread (its submitter) runs.
            runtime.quiescence_point()
            if item is not _NOTHING:  # None is a task too: the executor's shutdown signal
                break
        runtime.set_priority(runtime.Priority.LOW)
        return item

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


class _Worker:
    """What a managed worker sees as its work queue: `get` is `take`; put (the shutdown signal) passes."""

    __slots__ = ("_queue",)

    def __init__(self, work_queue: WorkQueue) -> None:
        self._queue = work_queue

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self._queue.take()

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self._queue.put(item)


def _wake_all() -> None:
    """The wake-up hook: every idle managed worker passes its quiescence point."""
    with _queues_lock:
        pools = list(_queues)
    for q in pools:
        q.wake()


def install() -> None:
    """Patch ThreadPoolExecutor (idempotent): executors built afterwards have managed workers."""

    def executor_init(original: Any) -> Any:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            if str(self._thread_name_prefix).startswith(_OWN_PREFIX):
                return
            self._work_queue = WorkQueue()  # no worker exists yet: they start on the first submit
            with _queues_lock:
                _queues.add(self._work_queue)

        return wrapper

    def worker(original: Any) -> Any:
        def wrapper(executor_reference: Any, work_queue: Any, *args: Any) -> None:
            if runtime.is_managed() or not isinstance(work_queue, WorkQueue):
                original(executor_reference, work_queue, *args)
                return
            with runtime.managed_thread(role="pool-worker"):
                original(executor_reference, _Worker(work_queue), *args)

        return wrapper

    executor = concurrent.futures.thread.ThreadPoolExecutor
    if marks.replace(executor, "__init__", executor_init):
        runtime.add_wakeup_hook(_wake_all)
    marks.replace(concurrent.futures.thread, "_worker", worker)
