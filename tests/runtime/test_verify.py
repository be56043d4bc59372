"""One home per rule (runtime/verify.py, patch/patchability.py): the in-process API and the agent refuse
with the same text because both call the same step; the runtime does not import the differ; the one
history keeps the agent's refusals, bounded."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from livepatch import Category, PatchRefused, Refusal, patch_from_sources
from livepatch.runtime import patcher, verify
from livepatch.runtime.core import Runtime
from livepatch.runtime.lifecycle import Action, Event, EventName, Outcome, PatchResult
from tests.runtime.runtime_helpers import fixture_source, loaded_app

V1 = fixture_source("app_v1.py")
V2 = fixture_source("app_v2.py")


@pytest.fixture
def app(rt: Runtime, tmp_path: Path) -> Iterator[ModuleType]:
    with loaded_app(rt, tmp_path, V1) as mod:
        yield mod


def _refusal_text(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(PatchRefused) as info:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(info.value)


def test_the_api_refuses_with_the_verification_step_s_own_text(
    rt: Runtime, app: ModuleType
) -> None:
    process = patch_from_sources({app.__name__: (V1, V2)}, category=Category.PROCESS)
    transform = patch_from_sources(
        {app.__name__: (V1, V2)},
        category=Category.THREAD_LOCAL,
        hooks_source="def transform(ctx):\n    pass\n",
    )
    refused = dataclasses.replace(
        process, refusals=(Refusal(app.__name__, "Store", "a new attribute", "a default"),)
    )
    cases = [
        (process, "local", ("--method global", "--category thread-local")),
        (transform, "auto", ("transform hook", "--method global")),
        (refused, "global", ("cannot be live-patched", "a new attribute")),
        (process, "sideways", ("unknown method",)),
    ]
    for spec, method, words in cases:
        expected = _refusal_text(
            verify.verify_apply,
            spec,
            method,
            timeout=5.0,
            applied=rt.applied_patches(),
            hooks=("transform",) if spec.hooks_source else (),
            managed=False,
        )
        r = rt.apply_patch(spec, method=method)
        assert r.outcome is Outcome.REFUSED and r.reason == expected
        assert all(w in r.reason for w in words), r.reason
        assert [e.name for e in r.events] == [EventName.REQUESTED, EventName.REFUSED]
    assert app.first(1) == ("v1", 1)
    assert rt.apply_patch(process).ok
    again = rt.apply_patch(process)
    assert again.reason == _refusal_text(
        verify.verify_apply,
        process,
        "auto",
        timeout=5.0,
        applied=rt.applied_patches(),
        hooks=(),
        managed=False,
    )
    assert "livepatch revert" in again.reason


def test_who_may_call_is_checked_once_for_both_actions(rt: Runtime) -> None:
    results: list[PatchResult] = []
    texts: list[str] = []

    def run() -> None:
        with rt.managed_thread("server"):
            texts.append(_refusal_text(verify.check_caller, "apply_patch", managed=rt.is_managed()))
            results.append(rt.revert_patch())

    t = threading.Thread(target=run, name="managed-verify")
    t.start()
    t.join(timeout=30)
    assert "managed thread (managed-verify)" in texts[0]
    assert results[0].outcome is Outcome.REFUSED
    assert "revert_patch was called from a managed thread" in results[0].reason


def test_the_runtime_does_not_import_the_differ() -> None:
    code = (
        "import sys, livepatch.runtime.patcher, livepatch.runtime.staging, livepatch.agent.agent\n"
        "print(sorted(m for m in sys.modules if m.startswith('livepatch.patch.diff')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
    runtime = Path(patcher.__file__).parent
    offenders = [
        p.name
        for p in runtime.glob("*.py")
        if "livepatch.patch.diff" in p.read_text()
        or "from livepatch.patch import diff" in p.read_text()
    ]
    assert offenders == []


def _refusal(i: int) -> PatchResult:
    return PatchResult(
        f"r{i}",
        Action.APPLY,
        "auto",
        Outcome.REFUSED,
        "bad",
        (Event(EventName.RECEIVED, i), Event(EventName.REFUSED, i)),
    )


def test_one_history_keeps_recorded_refusals_in_order_and_bounded(
    rt: Runtime, app: ModuleType
) -> None:
    rt.max_recorded_refusals = 5
    rt.record(_refusal(0))
    applied = rt.apply_patch(patch_from_sources({app.__name__: (V1, V2)}))
    assert applied.ok
    for i in range(1, 12):
        rt.record(_refusal(i))
    history = rt.history()
    # the runtime's own attempt stays (it came before r1..r11); of the recorded refusals only the
    # newest 5 are kept, in arrival order, after it
    recorded = [r.patch_id for r in history if r.action is Action.APPLY and r.reason == "bad"]
    assert recorded == ["r7", "r8", "r9", "r10", "r11"]
    assert history.index(applied) < history.index(next(r for r in history if r.patch_id == "r7"))
    assert rt._history.recorded_kept == 5
