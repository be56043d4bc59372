"""StagedPatch transitions: direct swaps, their exact inverse, reversed(), and per-thread dispatch."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from livepatch.errors import PatchAborted
from livepatch.patch.diff import patch_from_sources
from livepatch.runtime.staging import StagedPatch, stage
from tests.fixtures.livefixtures import forget, load_source, unique_name

V1 = """
import functools


def first(x):
    return ("v1", x)


def second(x):
    return ("v1", first(x)[1] + 1)


def fails(x):
    return ("v1", x)


def gen(n):
    for i in range(n):
        yield ("v1", i)


async def coro(x):
    return ("v1", x)


async def agen(n):
    for i in range(n):
        yield ("v1", i)


def gen_fails(n):
    yield ("v1", n)
    if n > 1:
        raise KeyError(f"v1 gen_fails {n}")


def kw(a, b=1, *, c=2):
    return ("v1", a, b, c)


def deco(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        return fn(*args)
    return wrapper


@deco
def decorated(x):
    return ("v1", x)


class Base:
    def who(self):
        return "base"


class Child(Base):
    def who(self):
        return ("v1", super().who())
"""
V2 = (
    V1.replace('("v1"', '("v2"')
    .replace('return ("v2", x)\n\n\ndef gen', 'raise ValueError(f"v2 fails {x}")\n\n\ndef gen')
    .replace("b=1, *, c=2", "b=10, *, c=20")
    .replace('KeyError(f"v1 gen_fails {n}")', 'KeyError(f"v2 gen_fails {n}")')
    .replace("if n > 1:", "if n > 0:")
    + "\n\ndef added():\n    return 'added'\n"
)


@pytest.fixture
def patched(tmp_path: Path) -> Iterator[tuple[ModuleType, StagedPatch]]:
    module = load_source(V1, tmp_path, unique_name("swap"))
    try:
        spec = patch_from_sources({module.__name__: (V1, V2)})
        assert spec.refusals == ()
        yield module, stage(spec)
    finally:
        forget(module)


def _versions(m: ModuleType) -> set[str]:
    return {
        m.first(1)[0],
        m.second(1)[0],
        next(m.gen(1))[0],
        asyncio.run(m.coro(1))[0],
        m.kw(1)[0],
        m.decorated(1)[0],
        m.Child().who()[0],
    }


def test_swap_in_out_restores_the_very_same_objects(
    patched: tuple[ModuleType, StagedPatch],
) -> None:
    m, staged = patched
    funcs = [m.first, m.second, m.gen, m.coro, m.kw, m.Child.__dict__["who"]]
    before = [(f.__code__, f.__defaults__, f.__kwdefaults__) for f in funcs]
    assert _versions(m) == {"v1"}
    staged.swap_in()
    assert staged.applied
    assert _versions(m) == {"v2"}
    assert m.kw(0) == ("v2", 0, 10, 20)
    assert m.added() == "added"
    staged.swap_out()
    assert not staged.applied
    after = [(f.__code__, f.__defaults__, f.__kwdefaults__) for f in funcs]
    assert all(
        a[0] is b[0] and a[1] is b[1] and a[2] is b[2] for a, b in zip(before, after, strict=True)
    )
    assert not hasattr(m, "added")
    assert staged.replaced_codes == frozenset(b[0] for b in before) | {
        m.fails.__code__,
        m.decorated.__wrapped__.__code__,
        m.agen.__code__,
        m.gen_fails.__code__,
    }


def test_reversed_is_the_revert_sharing_one_state(patched: tuple[ModuleType, StagedPatch]) -> None:
    m, staged = patched
    revert = staged.reversed()
    with pytest.raises(RuntimeError, match="already installed"):
        revert.swap_in()  # nothing to revert yet
    staged.swap_in()
    new_codes = {
        m.first.__code__,
        m.second.__code__,
        m.gen.__code__,
        m.coro.__code__,
        m.kw.__code__,
    }
    assert new_codes <= revert.replaced_codes and not (new_codes & staged.replaced_codes)
    revert.swap_in()
    assert _versions(m) == {"v1"} and not staged.applied and revert.applied
    revert.swap_out()
    assert _versions(m) == {"v2"}
    with pytest.raises(RuntimeError, match="already installed"):
        staged.swap_in()
    with pytest.raises(RuntimeError, match="no dispatch is active"):
        staged.end_dispatch(keep_new=True)


def test_dispatch_follows_each_threads_choice(patched: tuple[ModuleType, StagedPatch]) -> None:
    m, staged = patched
    local = threading.local()
    staged.begin_dispatch(lambda: getattr(local, "new", False))
    assert _versions(m) == {"v1"}
    local.new = True
    assert _versions(m) == {"v2"}
    assert m.added() == "added"  # new names exist while both versions run
    local.new = False
    assert m.kw(0) == ("v1", 0, 1, 2)
    staged.end_dispatch(keep_new=False)
    assert _versions(m) == {"v1"} and not hasattr(m, "added")
    staged.begin_dispatch(lambda: True)
    staged.end_dispatch(keep_new=True)
    assert _versions(m) == {"v2"}
    assert staged.applied


def test_trampoline_keeps_the_closure_and_the_class_cell(
    patched: tuple[ModuleType, StagedPatch],
) -> None:
    m, staged = patched
    who = m.Child.__dict__["who"]
    assert who.__code__.co_freevars == ("__class__",)
    staged.begin_dispatch(lambda: True)
    assert who.__code__.co_freevars == ("__class__",)  # the trampoline fits the same closure
    assert m.Child().who() == ("v2", "base")
    staged.end_dispatch(keep_new=True)


def test_on_error_sees_errors_of_the_new_code_only_and_they_propagate(
    patched: tuple[ModuleType, StagedPatch],
) -> None:
    m, staged = patched
    seen: list[BaseException] = []
    local = threading.local()
    staged.begin_dispatch(lambda: getattr(local, "new", False), on_error=seen.append)
    assert m.fails(1) == ("v1", 1)
    local.new = True
    with pytest.raises(ValueError, match="v2 fails 2"):
        m.fails(2)
    assert [str(e) for e in seen] == ["v2 fails 2"]

    def broken_monitor(exc: BaseException) -> None:
        raise RuntimeError("monitor bug")

    staged.end_dispatch(keep_new=False)
    staged.begin_dispatch(lambda: True, on_error=broken_monitor)
    with pytest.raises(
        ValueError, match="v2 fails 3"
    ):  # the caller sees its own error, not the monitor's
        m.fails(3)
    staged.end_dispatch(keep_new=False)


def test_watch_window_dispatch_after_swap_in(patched: tuple[ModuleType, StagedPatch]) -> None:
    """RT-core's watch: swap_in, then begin_dispatch(lambda: True, on_error) for a while, then keep new."""
    m, staged = patched
    staged.swap_in()
    errors: list[BaseException] = []
    staged.begin_dispatch(lambda: True, on_error=errors.append)
    with pytest.raises(ValueError):
        m.fails(1)
    assert len(errors) == 1 and _versions(m) == {"v2"}
    staged.end_dispatch(keep_new=True)
    assert m.first.__code__ in staged.reversed().replaced_codes
    # ... or an automatic rollback: the revert, through the same kind of dispatch
    revert = staged.reversed()
    revert.begin_dispatch(lambda: True)
    assert _versions(m) == {"v1"}
    revert.end_dispatch(keep_new=True)
    assert _versions(m) == {"v1"} and not hasattr(m, "added")


def test_interference_is_detected_and_nothing_changes(
    patched: tuple[ModuleType, StagedPatch],
) -> None:
    m, staged = patched
    m.second.__code__ = m.first.__code__.replace(co_name="second", co_qualname="second")
    with pytest.raises(PatchAborted, match="second was changed since the patch was staged"):
        staged.swap_in()
    assert m.first(1) == ("v1", 1)
    with pytest.raises(PatchAborted):
        staged.begin_dispatch(lambda: True)
    assert m.first(1) == ("v1", 1) and not hasattr(m, "added")


@pytest.mark.timeout(60)
def test_no_call_mixes_versions_under_concurrent_dispatch_cycles(
    patched: tuple[ModuleType, StagedPatch],
) -> None:
    """8 threads call two patched functions per 'request' while the main thread begins and ends dispatch
    200 times. Threads that chose the old version never see new code, and every answer is right."""
    m, staged = patched
    local = threading.local()
    stop = threading.Event()
    started = threading.Barrier(9)
    problems: list[str] = []
    counts = {"v1": 0, "v2": 0}
    lock = threading.Lock()
    calls = [0] * 8  # per worker: the cycles go on until every worker has really run among them

    def worker(index: int) -> None:
        local.new = index % 2 == 0
        started.wait()
        seen = {"v1": 0, "v2": 0}
        while not stop.is_set():
            a = m.first(index)
            b = m.second(index)
            if not local.new and (a[0] != "v1" or b[0] != "v1"):
                problems.append(f"old-generation thread {index} saw {a} {b}")
            if a[1] != index or b[1] != index + 1:
                problems.append(f"wrong result {a} {b}")
            seen[a[0]] += 1
            calls[index] += 1
        with lock:
            for k in seen:
                counts[k] += seen[k]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    started.wait()
    # On a loaded machine the workers may not get the GIL during 200 quick cycles: keep cycling (bounded)
    # until each of them has made calls while cycles ran, so the assertions below test something.
    deadline = time.monotonic() + 60
    try:
        cycles = 0
        while cycles < 200 or (min(calls) < 20 and time.monotonic() < deadline):
            staged.begin_dispatch(lambda: getattr(local, "new", False))
            staged.end_dispatch(keep_new=False)
            assert m.first(0) == ("v1", 0)
            cycles += 1
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert problems == []
    assert counts["v1"] > 0
    staged.begin_dispatch(lambda: True)
    staged.end_dispatch(keep_new=True)
    assert m.first(0) == ("v2", 0)


async def _collect(agen):  # type: ignore[no-untyped-def]
    return [item async for item in agen]


def test_dispatch_keeps_the_flavour_of_generators_and_coroutines(
    patched: tuple[ModuleType, StagedPatch],
) -> None:
    import inspect

    m, staged = patched
    local = threading.local()
    staged.begin_dispatch(lambda: getattr(local, "new", False))
    assert inspect.isgeneratorfunction(m.gen) and inspect.iscoroutinefunction(m.coro)
    assert inspect.isasyncgenfunction(m.agen) and not inspect.isgeneratorfunction(m.first)
    for flag, version in ((False, "v1"), (True, "v2")):
        local.new = flag
        assert list(m.gen(2)) == [(version, 0), (version, 1)]
        assert asyncio.run(m.coro(5)) == (version, 5)
        assert asyncio.run(_collect(m.agen(2))) == [(version, 0), (version, 1)]
    staged.end_dispatch(keep_new=True)


def test_on_error_sees_errors_raised_while_a_generator_runs(
    patched: tuple[ModuleType, StagedPatch],
) -> None:
    m, staged = patched
    seen: list[BaseException] = []
    staged.swap_in()
    staged.begin_dispatch(lambda: True, on_error=seen.append)
    it = m.gen_fails(1)
    assert next(it) == ("v2", 1)
    with pytest.raises(KeyError, match="v2 gen_fails 1"):
        next(it)
    assert [type(e) for e in seen] == [KeyError]
    it2 = m.gen_fails(1)
    next(it2)
    it2.close()  # closing a generator early is not an error of the new code
    assert len(seen) == 1
    staged.end_dispatch(keep_new=True)


def test_bind_new_names_binds_only_names_the_patch_adds_to_modules(tmp_path: Path) -> None:
    """What the transform hook sees before the swap (StagedPatch.bind_new_names): the names the patch
    adds to the module, not a changed one, not the new code, and not a new global that shadows a
    builtin (the old code reads that name); the returned undo takes them out again."""
    v1 = "LIMIT = 4\n\n\nclass C:\n    pass\n\n\ndef first(x):\n    return ('v1', len(x))\n"
    v2 = v1.replace("LIMIT = 4\n", "LIMIT = 5\nADDED = 7\nlen = str\n").replace("v1", "v2")
    live = load_source(v1, tmp_path, unique_name("bindnew"))
    try:
        staged = stage(patch_from_sources({live.__name__: (v1, v2)}))
        unbind = staged.bind_new_names()
        assert live.ADDED == 7 and live.LIMIT == 4 and "len" not in vars(live)
        assert live.first("ab") == ("v1", 2)
        unbind()
        assert "ADDED" not in vars(live)
        staged.swap_in()
        assert live.ADDED == 7 and live.LIMIT == 5 and live.first("ab") == ("v2", "ab")  # len = str
        staged.swap_out()
        assert "ADDED" not in vars(live) and "len" not in vars(live) and live.LIMIT == 4
    finally:
        forget(live)
