"""The runtime's state in one object, and the `livepatch` functions as facades over a default instance.

Theory of operation
-------------------
A `Runtime` is everything one process needs to be live-patched: the thread registry and its lock,
condition and progress event, the wake-up hooks, the flag quiescence points read, the transition slot,
the patcher's lock, the stack of applied patches, the history and the open watch window. Its behaviour
comes in three layers, one file each, each using only the state created here:

- `threads.ThreadSide`: what managed threads call (quiescence points, birth and death, priorities);
- `quiescence.Quiescence`: the global and the local protocol, run by the patcher;
- `patcher.Patcher`: apply, revert (forced too), the stack, the history, the watch window.

A server has one runtime: `DEFAULT`, created on import; the public functions below (re-exported by
`livepatch`) are its bound methods. Tests create a fresh `Runtime()` each, so none depends on what an
earlier test left behind (a generation, a released thread, an applied patch, the history). Two runtimes
share nothing: a thread managed by one is unmanaged for the other, and a patch applied through one is
invisible to the other's history (the code it swapped is of course the process's).

Lock order
----------
Take locks only in this order; a lock further down is never held while taking one further up. This is
the one place it is written (docs/architecture.md repeats it); `Runtime.__init__` creates them in it.

1. `_patcher_lock`: one apply/revert/rollback/end-of-window at a time (the whole transition). A forced
   revert takes it with a timeout; the watch thread takes it to end its window.
2. `_slot`: one registry transition at a time. May be released by another thread than the one that took
   it (a detached local reversal finishes in the background); `wait_idle` waits for it.
3. `_lock` with its condition `_threads_cv`: the thread registry. Managed threads take it at the slow
   path of a quiescence point; the patcher takes it in short sections, never while calling out (wake-up
   hooks, the swap and the transform run without it).
4. Leaves, held briefly and never while taking another lock: the staged patch's `_Core._lock` (swap
   state; taken by swap operations, which run with `_slot` held but not the registry lock),
   `Watch._count_lock`, `_records_lock` (the history, so
   `history()` never waits for a transition).

`_progress` (doorbell.py `Doorbell`) and the watch's wake-up are signals, not locks. Each managed thread's
gate (`ThreadRecord.gate`, threads.py `_parked`) is a lock it holds while parked and waits on outside
`_lock`; it is released, never taken, by whoever unparks it (under `_lock`). Hooks run on helper
threads (hook_runner.py) bounded by the patch's timeout, so a hook cannot hold `_patcher_lock` forever.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from livepatch.runtime.doorbell import Doorbell
from livepatch.runtime.history import History
from livepatch.runtime.patcher import (
    Patcher,
    _Applied,
    _Watching,
    load_patching,
)
from livepatch.runtime.registry import Priority, Registry
from livepatch.runtime.threads import Control

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: this module is on a server's import path
if TYPE_CHECKING:
    pass

__all__ = [
    "DEFAULT",
    "Priority",
    "Runtime",
    "activate",
    "add_wakeup_hook",
    "applied_patches",
    "apply_patch",
    "current_generation",
    "deactivate",
    "history",
    "history_since",
    "history_totals",
    "is_managed",
    "load_patching",
    "managed_thread",
    "quiescence_point",
    "record",
    "release_threads",
    "remove_wakeup_hook",
    "revert_patch",
    "set_priority",
    "statistics",
    "transition_flag",
]


class Runtime(Patcher):
    """One process's live-patching state (see the theory of operation); its methods are the API."""

    def __init__(self) -> None:
        # the locks, in the lock order
        self._patcher_lock = threading.Lock()
        self._slot = threading.Lock()
        self._lock = threading.Lock()
        self._threads_cv = threading.Condition(self._lock)
        self._records_lock = threading.Lock()
        # signals
        self._progress = Doorbell()
        # the thread side (guarded by _lock; _control and _hooks are read without it)
        self._registry = Registry()
        self._local = threading.local()
        self._control = Control()
        self._deadline = float("inf")  # the pending global transition's (threads.py _wait_global)
        self._expired = None
        self._hooks: tuple[Callable[[], object], ...] = ()
        # the patcher side (guarded by _patcher_lock; the history by _records_lock)
        self._stack: list[_Applied] = []
        self._watch: _Watching | None = None
        self._history = History()  # bounded: the newest attempts, totals of all (history.py)


DEFAULT = Runtime()

_flag = DEFAULT._control


# The hot one is a plain function, as cheap as before (one global, one attribute read); a bound method
# cost ~10% more per idle point (bench/quiescence_fastpath.py).
def quiescence_point() -> None:
    if _flag.request is None:
        return
    DEFAULT._slow_point()


quiescence_point.__doc__ = Runtime.quiescence_point.__doc__

# The other facades: bound methods of the default runtime (their docstrings are the methods').
transition_flag = DEFAULT.transition_flag
managed_thread = DEFAULT.managed_thread
activate = DEFAULT.activate
deactivate = DEFAULT.deactivate
set_priority = DEFAULT.set_priority
add_wakeup_hook = DEFAULT.add_wakeup_hook
remove_wakeup_hook = DEFAULT.remove_wakeup_hook
statistics = DEFAULT.statistics
current_generation = DEFAULT.current_generation
is_managed = DEFAULT.is_managed
release_threads = DEFAULT.release_threads
apply_patch = DEFAULT.apply_patch
revert_patch = DEFAULT.revert_patch
history = DEFAULT.history
history_since = DEFAULT.history_since
history_totals = DEFAULT.history_totals
record = DEFAULT.record
applied_patches = DEFAULT.applied_patches
adopt_applied = DEFAULT.adopt_applied
