"""Helpers for the runtime tests: a stand-in for patched code, and busy managed worker threads.

`Versioned` behaves like a StagedPatch of one function whose answer is its version number: `swap` is the
global swap, `begin`/`end` the local dispatch. Each worker request reads it twice around a GIL yield and
checks both reads agree with each other and with the thread's generation (invariant 2): in a fresh
runtime (the `rt` fixture) generation N runs version N, for a `Versioned` that starts at 0 and is changed
by nothing but that runtime's transitions.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from livepatch.runtime.core import Runtime
from livepatch.runtime.threads import Priority
from tests.fixtures.livefixtures import load_source
from tests.support import wait_for  # noqa: F401  (the runtime tests import it from here)


class Versioned:
    def __init__(self) -> None:
        self.current = 0
        self._next = 0
        self._use_new: Callable[[], bool] | None = None
        self.swaps = 0

    def call(self) -> int:
        use_new = self._use_new
        if use_new is not None:
            return self._next if use_new() else self.current
        return self.current

    # global protocol action
    def swap(self, parked: object = None) -> None:
        self.current += 1
        self.swaps += 1

    # local protocol
    def begin(self, use_new: Callable[[], bool]) -> None:
        self._next = self.current + 1
        self._use_new = use_new

    def end(self, keep_new: bool) -> None:
        if keep_new:
            self.current = (
                self._next
            )  # before removing the dispatch: callers see the new version throughout
        self._use_new = None


@dataclass
class Workers:
    """`n` busy managed threads of `rt`; each request = quiescence point, then two reads of `code`."""

    rt: Runtime
    code: Versioned
    n: int
    role: str = "worker"
    priority: Priority = Priority.LOW
    errors: list[str] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    max_gap_s: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _started: threading.Barrier | None = None
    _threads: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.requests = [0] * self.n
        self.max_gap_s = [0.0] * self.n

    def start(self) -> Workers:
        self._started = threading.Barrier(self.n + 1)
        for i in range(self.n):
            t = threading.Thread(target=self._run, args=(i,), name=f"{self.role}-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        self._started.wait(timeout=30)
        return self

    def _run(self, i: int) -> None:
        assert self._started is not None
        rt = self.rt
        with rt.managed_thread(self.role, self.priority):
            self._started.wait(timeout=30)
            last = time.monotonic()
            while not self._stop.is_set():
                rt.quiescence_point()
                now = time.monotonic()
                self.max_gap_s[i] = max(self.max_gap_s[i], now - last)
                last = now
                gen = rt.current_generation()
                a = self.code.call()
                time.sleep(0)  # yield the GIL inside the request, so a swap could land here
                b = self.code.call()
                if not (a == b == gen):
                    self.errors.append(
                        f"{threading.current_thread().name}: gen {gen} saw {a} then {b}"
                    )
                self.requests[i] += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"workers did not stop: {alive}"

    def wait_requests(self, at_least: int, timeout: float = 30.0) -> None:
        """Wait until every worker has completed `at_least` more requests (progress, no sleep guesses)."""
        target = [r + at_least for r in self.requests]
        deadline = time.monotonic() + timeout
        while any(r < t for r, t in zip(self.requests, target, strict=True)):
            assert time.monotonic() < deadline, "workers made no progress"
            time.sleep(0.001)


FIXTURES = Path(__file__).parent / "fixtures"


def fixture_source(name: str) -> str:
    return (FIXTURES / name).read_text()


class LoadedModules:
    """Imports fixture sources under fresh module names (so tests never share live code) and unloads them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.names: list[str] = []

    def load(self, source: str, stem: str = "lp_rt_app") -> ModuleType:
        name = f"{stem}_{uuid.uuid4().hex[:10]}"
        self.names.append(name)
        return load_source(source, self.tmp_path, name)

    def close(self) -> None:
        for name in self.names:
            sys.modules.pop(name, None)


@contextmanager
def loaded_app(
    rt: Runtime,
    tmp_path: Path,
    source: str,
    stem: str = "lp_rt_app",
    *,
    force: bool = False,
    timeout: float = 5.0,
) -> Iterator[ModuleType]:
    """A test's app: `source` loaded under a fresh name. At the end, whatever the test did: its `gate`
    Event (the escape-hatch apps' hanging calls wait on one) opens, every patch still applied through `rt`
    is reverted (`force`: by force, for patches whose code may still hang), and the module is unloaded."""
    lm = LoadedModules(tmp_path)
    mod = lm.load(source, stem)
    try:
        yield mod
    finally:
        gate = getattr(mod, "gate", None)
        if gate is not None:
            gate.set()
        while rt.applied_patches():
            if not rt.revert_patch(method="global", force=force, timeout=timeout).ok:
                break
        lm.close()
