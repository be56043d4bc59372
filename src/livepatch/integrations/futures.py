"""concurrent.futures thread pools under livepatch: managed workers, a point between tasks.

`concurrent.futures.thread._worker` (the body of every ThreadPoolExecutor thread; the executor looks it
up when it starts a thread) is wrapped: the worker runs as a managed thread (role "pool-worker") for its
life, and reads its work queue through `_TaskQueue`, which passes a quiescence point before taking each
task and, when no task is waiting, waits for one *inactive* (deactivate, blocking get, activate): an idle
pool never holds a patch, and a task runs on one generation from start to end. asyncio's default executor
(`loop.run_in_executor(None, ...)`) is such a pool.

Not managed: livepatch's own pools (thread name prefix "livepatch"; the agent's patcher thread must not
be a managed thread), and workers started before `install()`. A task that blocks waiting for another
task of the same pool never reaches a point: a global patch then aborts at its deadline, naming it.
"""

from __future__ import annotations

import concurrent.futures.thread
import queue
from typing import Any

from livepatch.integrations import marks
from livepatch.runtime import threads

_OWN_PREFIX = "livepatch"


class _TaskQueue:
    """A worker's view of its executor's work queue: a point before each task, idle waits inactive."""

    __slots__ = ("_queue",)

    def __init__(self, work_queue: Any) -> None:
        self._queue = work_queue

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        threads.quiescence_point()  # between two tasks: the worker holds nothing
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            if not block:
                raise
        threads.deactivate()
        try:
            return self._queue.get(block, timeout)
        finally:
            threads.activate()

    def __getattr__(self, name: str) -> Any:  # put (the shutdown signal) and the rest
        return getattr(self._queue, name)


def install() -> None:
    """Patch concurrent.futures.thread._worker (idempotent). Workers started afterwards are managed."""

    def worker(original: Any) -> Any:
        def wrapper(executor_reference: Any, work_queue: Any, *args: Any) -> None:
            executor = executor_reference()
            prefix = str(getattr(executor, "_thread_name_prefix", "") or "")
            del executor  # the worker must not keep its executor alive (the weakref ends workers)
            if threads.is_managed() or prefix.startswith(_OWN_PREFIX):
                original(executor_reference, work_queue, *args)
                return
            with threads.managed_thread(role="pool-worker"):
                original(executor_reference, _TaskQueue(work_queue), *args)

        return wrapper

    marks.replace(concurrent.futures.thread, "_worker", worker)
