"""Saying which threads a patch waited for, and what they were doing (for the abort reason).

A global patch aborts when some active managed thread never reaches a quiescence point before the
deadline. The usual cause is a thread blocked outside its work loop: an idle keep-alive connection
waiting in recv() for the next request, a pool thread waiting for a task. The abort reason names each
such thread (name, role, priority), where it was blocked (its innermost frame and, when that is in the
standard library, the nearest frame of the program's own code), and what to do about it (HINT).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import FrameType

from livepatch.runtime.frames import current_frames
from livepatch.runtime.registry import ThreadRecord

HINT = (
    "a thread that waits outside its work loop (an idle keep-alive connection, a pool thread waiting "
    "for a task) never reaches a quiescence point: call livepatch.deactivate() before its blocking read "
    "and livepatch.activate() after it (docs/runtime.md, socketserver and http.server recipe)"
)

# The standard library's directory (sysconfig's "stdlib" path, without importing sysconfig: this module
# is on a server's import path, and its report runs while an aborting patch still holds threads parked).
_STDLIB = os.path.normcase(os.path.dirname(os.__file__))


def _frame_text(frame: FrameType) -> str:
    code = frame.f_code
    return f"{code.co_qualname} ({os.path.basename(code.co_filename)}:{frame.f_lineno})"


def where(frame: FrameType | None) -> str:
    """ "waiting in X (file:line)[, called from Y (file:line)]" for a thread's current frame; "" if none."""
    if frame is None:
        return ""
    text = f"waiting in {_frame_text(frame)}"
    if os.path.normcase(frame.f_code.co_filename).startswith(_STDLIB):
        caller = frame.f_back
        while caller is not None and os.path.normcase(caller.f_code.co_filename).startswith(
            _STDLIB
        ):
            caller = caller.f_back
        if caller is not None:
            text += f", called from {_frame_text(caller)}"
    return text


def describe_blocked(records: Iterable[ThreadRecord]) -> str:
    """Each record described, with where its thread is now ("(none)" when there is none)."""
    frames = current_frames()
    parts = []
    for r in records:
        at = where(frames.get(r.ident))
        parts.append(f"{r.describe()} {at}" if at else r.describe())
    return ", ".join(parts) or "(none)"


def describe_stragglers(records: Iterable[ThreadRecord]) -> str:
    """describe_blocked, taken at the moment a deadline passed; "" when no thread was left (every one
    had parked: the patcher itself was late)."""
    records = list(records)
    return describe_blocked(records) if records else ""
