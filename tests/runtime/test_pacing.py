"""Pacing (runtime/pacing.py): a long staging lets a thread waiting for the GIL run between its pieces; a
short one never pauses; beside a CPU-bound thread it stops pausing after one late pause.

The GIL is made deterministic by the switch interval: at 1 s, a thread waiting for the GIL gets it from
the staging thread only when that thread gives it up (a pause), never because it waited an interval."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from livepatch.patch.diff import patch_from_sources
from livepatch.patch.model import PatchSpec
from livepatch.runtime import pacing
from livepatch.runtime.staging import stage
from tests.fixtures.livefixtures import forget, load_source, unique_name


@pytest.fixture
def switch_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def _large(tmp_path: Path) -> tuple[ModuleType, PatchSpec]:
    """A live module of 600 functions and an unsigned patch of one of them: staging parses the whole
    new source (in pieces) and compiles it, tens of ms of CPU."""
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(600))
    live = load_source(text, tmp_path, unique_name("pacing_large"))
    return live, patch_from_sources({live.__name__: (text, text.replace("x + 7\n", "x + 70\n"))})


class _Waiter:
    """A thread that sleeps 0.1 ms in a loop and counts the times it ran while `staging` was set: with a
    1 s switch interval, each one is the GIL given up by the staging thread."""

    def __init__(self) -> None:
        self.staging = False
        self.ran_during = 0
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._started.wait(10)

    def _run(self) -> None:
        self._started.set()
        while not self._stop.is_set():
            if self.staging:
                self.ran_during += 1
            time.sleep(0.0001)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _stage_beside_waiter(spec: PatchSpec) -> tuple[pacing.Pacer, int]:
    sys.setswitchinterval(1.0)
    waiter = _Waiter()
    try:
        pacer = pacing.Pacer()
        waiter.staging = True
        stage(spec, pacer)
        waiter.staging = False
    finally:
        sys.setswitchinterval(0.005)  # the waiter must get the GIL to see its stop
        waiter.stop()
    return pacer, waiter.ran_during


def test_a_long_staging_lets_a_waiting_thread_run(tmp_path: Path, switch_interval: None) -> None:
    live, spec = _large(tmp_path)
    try:
        stage(spec)  # warm: the first staging also fills the fingerprint cache
        pacer, ran = _stage_beside_waiter(spec)
    finally:
        forget(live)
    # without pacing the waiter gets the GIL only after the staging (0 runs during it)
    assert pacer.pauses >= 10 and not pacer.stopped
    assert ran >= 3, f"the waiting thread ran {ran} times during {pacer.pauses} pauses"


def test_a_one_function_staging_never_pauses(tmp_path: Path, switch_interval: None) -> None:
    text = "def greet(name):\n    return 'hello ' + name\n"
    live = load_source(text, tmp_path, unique_name("pacing_small"))
    try:
        spec = patch_from_sources({live.__name__: (text, text.replace("hello", "hi"))})
        stage(spec)
        pacer, ran = _stage_beside_waiter(spec)
    finally:
        forget(live)
    # bench/sync_time.py's request->finished: a short staging keeps the GIL, as before pacing
    assert pacer.pauses == 0
    assert ran == 0


def test_beside_a_cpu_bound_thread_pausing_stops_after_one_late_pause(
    tmp_path: Path, switch_interval: None
) -> None:
    live, spec = _large(tmp_path)
    stop = threading.Event()
    spinning = threading.Event()

    def spin() -> None:
        spinning.set()
        n = 0
        while not stop.is_set():
            n += 1  # pure Python: holds the GIL until asked for it after a switch interval

    sys.setswitchinterval(0.05)  # a pause that lets the spinner in costs ~50 ms: "late"
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        assert spinning.wait(10)
        stage(spec)
        pacer = pacing.Pacer()
        stage(spec, pacer)
    finally:
        stop.set()
        spinner.join(10)
        forget(live)
    # the first pause the spinner takes the GIL in comes back ~50 ms late and is the last (a loaded
    # machine may not run the spinner during the first pause or two; alone, this staging pauses >= 10
    # times: test_a_long_staging_lets_a_waiting_thread_run)
    assert pacer.stopped
    assert pacer.pauses <= 3


def test_the_threshold_is_the_pacers_own_cpu_time() -> None:
    """Time spent off the CPU (another thread's turn, a sleep) does not bring the first pause closer."""
    pacer = pacing.Pacer(after_s=0.005)
    time.sleep(0.02)
    pacer()
    assert pacer.pauses == 0
    t = time.thread_time()
    while time.thread_time() - t < 0.006:
        pass
    pacer()
    assert pacer.pauses == 1


def test_rest_pauses_at_once_after_long_work_and_never_after_short_work() -> None:
    """rest() (the agent before handing a patch to the runtime, the control thread before the patcher):
    a pause now if the work has been long, whatever the last pause; none for a short piece of work."""
    short = pacing.Pacer(after_s=0.005)
    short.rest()
    assert short.pauses == 0
    pacer = pacing.Pacer(after_s=0.001, every_s=10.0)
    t = time.thread_time()
    while time.thread_time() - t < 0.002:
        pass
    pacer()
    assert pacer.pauses == 1
    pacer()  # the next pause is due in 10 s
    assert pacer.pauses == 1
    pacer.rest()
    assert pacer.pauses == 2
