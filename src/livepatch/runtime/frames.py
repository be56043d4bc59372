"""Every thread's current frame, without CPython 3.11's deadlock in `sys._current_frames()`.

In CPython 3.11 `sys._current_frames()` holds the runtime's thread-list lock (HEAD_LOCK) while it creates
frame objects; an allocation may start a garbage collection, and a collection that frees a thread-local
(or anything whose deallocation takes HEAD_LOCK) or waits for the GIL deadlocks the whole process:
python/cpython#106883 and #116969 (fixed in 3.12, where collections run only from the eval breaker).
lpbench's figure-6 runs hung 13 of 104 sqlserver pool runs this way: the patcher inside
`_current_frames()` at its activeness check, the pool starting a thread.

The remedy is CPython's own proposal: no collection during the call. The collector is switched off only
around it, and only when it was on (an application that turned it off keeps it off). Another thread that
turns the collector on or off during those microseconds may see its setting undone: the price of a
process-wide switch, documented in docs/runtime.md.
"""

from __future__ import annotations

import gc
import sys
from types import FrameType

_NEEDS_GC_OFF = sys.version_info < (3, 12)


def current_frames() -> dict[int, FrameType]:
    """sys._current_frames(), safe from the 3.11 lock-order deadlock."""
    if not _NEEDS_GC_OFF or not gc.isenabled():
        return sys._current_frames()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        gc.enable()
