"""Idempotent monkeypatching: each replacement remembers what it replaced, so installing twice does not
wrap twice, and `original()` finds the standard library's own function for tests and diagnostics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_MARK = "__livepatch_replaces__"


def replace(
    owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> bool:
    """Set `owner.name` to `make(current)` unless it is already one of ours. True when it replaced."""
    current = getattr(owner, name)
    if getattr(current, _MARK, None) is not None:
        return False
    replacement = make(current)
    replacement.__dict__[_MARK] = current
    replacement.__name__ = getattr(current, "__name__", name)
    replacement.__qualname__ = getattr(current, "__qualname__", name)
    replacement.__doc__ = getattr(current, "__doc__", None)
    setattr(owner, name, replacement)
    return True


def is_replaced(owner: Any, name: str) -> bool:
    return getattr(getattr(owner, name), _MARK, None) is not None
