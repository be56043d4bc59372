"""The runtime's state in one object (core.py): fresh runtimes start empty and share nothing, and the
`livepatch` functions are the default runtime's."""

from __future__ import annotations

import threading

import livepatch
from livepatch.runtime import core
from livepatch.runtime.core import Runtime
from tests.runtime.runtime_helpers import Versioned


def test_a_fresh_runtime_starts_empty(rt: Runtime) -> None:
    stats = rt.statistics()
    assert (stats.generation, stats.transition, stats.managed) == (0, None, 0)
    assert rt.history() == [] and rt.applied_patches() == []
    assert rt.transition_flag().request is None and not rt.is_managed()


def test_two_runtimes_share_nothing(rt: Runtime) -> None:
    """A thread managed by one runtime is unmanaged for another: the other never waits for it, and its
    transitions change only its own generation."""
    other = Runtime()
    inside, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    def managed_by_rt() -> None:
        with rt.managed_thread("busy"):
            seen.append(other.is_managed())
            inside.set()
            release.wait(30)  # no quiescence point: a transition of `rt` would wait for it

    t = threading.Thread(target=managed_by_rt, daemon=True)
    t.start()
    try:
        assert inside.wait(10)
        code = Versioned()
        timings = other.run_global(code.swap, timeout=5)
        assert timings.reached == [] and code.current == 1
        other.run_local(code.begin, code.end, timeout=5)
        assert code.current == 2
    finally:
        release.set()
        t.join(10)
    assert seen == [False]
    assert other.statistics().generation == 2 and rt.statistics().generation == 0
    assert rt.statistics().managed == 0 and other.history() == rt.history() == []


def test_the_public_functions_are_the_default_runtimes() -> None:
    for name in ("managed_thread", "apply_patch", "revert_patch", "history", "statistics"):
        fn = getattr(livepatch, name)
        assert fn.__self__ is core.DEFAULT, name
        assert fn.__doc__ == getattr(Runtime, name).__doc__  # the method's docstring, for help()
    # quiescence_point is a plain function (the hot path) reading the default runtime's flag
    assert livepatch.quiescence_point.__doc__ == Runtime.quiescence_point.__doc__
    assert livepatch.transition_flag() is core.DEFAULT.transition_flag()
