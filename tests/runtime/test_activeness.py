"""The activeness check sees every thread that may return into patched code, whatever the timing.

A managed thread sits inside `serve` (a loop the patch changes): after the swap that frame would keep
running the old code. Whether the thread is parked at a quiescence point inside it, deactivated before the
patch request, or deactivated while the patch waits for it, the same stack must give the same answer:
refused, naming the thread and the function. Deactivated threads once escaped the check (only parked ones
were inspected), so the answer depended on when the thread happened to rt.deactivate.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

import livepatch
from livepatch import Category
from livepatch.runtime.core import Runtime
from tests.runtime.runtime_helpers import fixture_source, loaded_app

V1 = fixture_source("app_v1.py")
SERVE_CHANGED = V1.replace("        point()\n", "        point()\n        x = 1\n")


@pytest.fixture
def app(rt: Runtime, tmp_path: Path) -> Iterator[ModuleType]:
    with loaded_app(rt, tmp_path, V1, timeout=10) as mod:
        yield mod


class Connection:
    """A managed thread running `app.serve(stop, point)`, where `point` is one of the ways below."""

    def __init__(self, rt: Runtime, app: ModuleType, how: str) -> None:
        self.rt = rt
        self.app = app
        self.how = how
        self.stop = threading.Event()
        self.in_place = threading.Event()  # inside serve, in the state the test wants
        self.gate = threading.Event()  # lets a deactivated thread go back to work
        self.thread = threading.Thread(target=self._run, name=f"conn-{how}", daemon=True)

    def __enter__(self) -> Connection:
        self.thread.start()
        if self.how != "deactivates-during-the-request":
            assert self.in_place.wait(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.gate.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()

    def _run(self) -> None:
        points: dict[str, Callable[[], None]] = {
            "parked": self._park,
            "deactivated-before-the-request": self._idle,
            "deactivates-during-the-request": self._idle_when_requested,
        }
        with self.rt.managed_thread("connection"):
            self.app.serve(self.stop, points[self.how])

    def _park(self) -> None:
        self.in_place.set()
        self.rt.quiescence_point()

    def _idle(self) -> None:
        """Wait for the next client outside the work loop (but inside serve's frame)."""
        self.rt.deactivate()
        self.in_place.set()
        self.gate.wait(timeout=30)
        self.rt.activate()

    def _idle_when_requested(self) -> None:
        # Active and busy until a patch is requested; then it deactivates instead of parking.
        if self.rt.transition_flag().request is not None:
            self._idle()


WAYS = ["parked", "deactivated-before-the-request", "deactivates-during-the-request"]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", WAYS)
def test_a_thread_inside_a_replaced_loop_is_refused_however_it_waits(
    rt: Runtime, app: ModuleType, how: str
) -> None:
    spec = livepatch.patch_from_sources(
        {app.__name__: (V1, SERVE_CHANGED)}, category=Category.PROCESS
    )
    old = app.serve.__code__
    with Connection(rt, app, how) as conn:
        r = rt.apply_patch(spec, method="global", timeout=10)
        assert r.outcome == "refused", r.reason
        assert f"thread conn-{how} (role connection)" in r.reason
        assert "serve" in r.reason and "allow_active" in r.reason
        assert app.serve.__code__ is old
        if how != "parked":
            assert conn.in_place.is_set()  # it really was deactivated when the check ran
    # the thread has left serve: the same patch applies
    r = rt.apply_patch(spec, method="global", timeout=10)
    assert r.outcome == "applied", r.reason
    assert app.serve.__code__ is not old


@pytest.mark.timeout(60)
def test_a_deactivated_thread_outside_patched_code_does_not_block_a_patch(
    rt: Runtime, app: ModuleType
) -> None:
    spec = livepatch.patch_from_sources(
        {app.__name__: (V1, fixture_source("app_v2.py"))}, category=Category.PROCESS
    )
    ready, gate = threading.Event(), threading.Event()

    def idle_connection() -> None:
        with rt.managed_thread("connection"):
            rt.deactivate()
            ready.set()
            gate.wait(timeout=30)
            rt.activate()
            rt.quiescence_point()

    t = threading.Thread(target=idle_connection, name="idle", daemon=True)
    t.start()
    try:
        assert ready.wait(timeout=10)
        r = rt.apply_patch(spec, method="global", timeout=10)
        assert r.outcome == "applied", r.reason
        assert app.first(1) == ("v2", 1)
    finally:
        gate.set()
        t.join(timeout=10)
    assert not t.is_alive()
