"""PLACEHOLDER with the final public signatures, so servers can be written against them today.
The runtime helper replaces this file with the real thread registry and quiescence protocol."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Priority(enum.IntEnum):
    LOW = 0
    MEDIUM = 1
    CRITICAL = 2


class _Control:
    request: object | None = None


_control = _Control()


def quiescence_point() -> None:
    if _control.request is None:
        return


@contextmanager
def managed_thread(role: str = "worker", priority: Priority = Priority.LOW) -> Iterator[None]:
    yield


def activate() -> None:
    pass


def deactivate() -> None:
    pass


def set_priority(priority: Priority) -> None:
    pass


def add_wakeup_hook(fn: Callable[[], object]) -> None:
    pass


def remove_wakeup_hook(fn: Callable[[], object]) -> None:
    pass
