"""StagedPatch.force_out (swap.py): the forced transition, from the new side and from a dispatch."""

from __future__ import annotations

import threading
from types import FunctionType, ModuleType, SimpleNamespace
from typing import Any

import pytest

from livepatch.errors import PatchAborted
from livepatch.runtime.swap import MISSING, BindOp, CodeOp, StagedPatch, make_staged_patch

pytestmark = pytest.mark.timeout(30)


def _v1(x: int) -> str:
    return f"v1 {x}"


def _v2(x: int) -> str:
    return f"v2 {x}"


def _staged() -> tuple[StagedPatch, FunctionType, SimpleNamespace]:
    def target(x: int) -> str:
        return f"v1 {x}"

    owner = SimpleNamespace(LIMIT=1)  # a namespace object: BindOp sets and deletes its attributes
    code = CodeOp(
        "m:target",
        target,
        target.__code__,
        _v2.__code__,
        None,
        None,
        None,
        None,
    )
    rebind = BindOp("m:LIMIT", owner, "LIMIT", 1, 2)  # type: ignore[arg-type]
    added = BindOp("m:helper", owner, "helper", MISSING, "new helper")  # type: ignore[arg-type]
    sp = make_staged_patch("p", [rebind, added], [code], source_bytes=0, modules={})
    return sp, target, owner


def test_force_out_from_the_new_side_keeps_added_names_and_restores_rebound_ones() -> None:
    sp, target, owner = _staged()
    sp.swap_in()
    assert target(1) == "v2 1" and owner.LIMIT == 2 and owner.helper == "new helper"
    kept = sp.force_out()
    assert kept == ("m:helper",)
    assert target(1) == "v1 1" and owner.LIMIT == 1
    assert owner.helper == "new helper"  # frames still in the new code may use it
    assert not sp.applied and not sp.dispatching
    with pytest.raises(RuntimeError, match="already installed"):
        sp.force_out()
    sp.swap_in()  # the patch can be applied again, and a normal revert removes everything
    sp.swap_out()
    assert not hasattr(owner, "helper")


def test_force_out_from_a_dispatch_and_a_late_end_dispatch_is_a_no_op() -> None:
    sp, target, owner = _staged()
    sp.swap_in()
    sp.begin_dispatch(lambda: True)  # a watch window
    assert sp.dispatching and target(3) == "v2 3"
    sp.force_out()
    assert target(3) == "v1 3" and owner.LIMIT == 1 and target.__code__ is not None
    rev = sp.reversed()
    rev.end_dispatch(keep_new=False, missing_ok=True)  # a detached reversal arriving late
    assert target(3) == "v1 3"
    with pytest.raises(RuntimeError, match="no dispatch"):
        rev.end_dispatch(keep_new=False)


def test_force_out_of_a_changed_target_fails_and_changes_nothing() -> None:
    sp, target, owner = _staged()
    sp.swap_in()
    target.__code__ = _v1.__code__  # someone else changed it since
    with pytest.raises(PatchAborted, match="changed since"):
        sp.force_out()
    assert owner.LIMIT == 2 and sp.applied


_gate, _entered = threading.Event(), threading.Event()


def _slow(x: int) -> str:
    return f"v1 {x}"


def _slow_v2(x: int) -> str:
    _entered.set()
    _gate.wait(10)
    return f"v2 {x}"


def test_a_running_frame_finishes_in_the_new_code() -> None:
    """What 'threads already inside finish where they are' means: the frame owns its code object."""
    replies: list[Any] = []
    op = CodeOp("m:slow", _slow, _slow.__code__, _slow_v2.__code__, None, None, None, None)
    sp = make_staged_patch("q", [], [op], source_bytes=0, modules={"m": ModuleType("m")})
    sp.swap_in()
    t = threading.Thread(target=lambda: replies.append(_slow(1)))
    t.start()
    try:
        assert _entered.wait(10)
        sp.force_out()
        assert _slow(2) == "v1 2"
    finally:
        _gate.set()
        t.join(10)
    assert replies == ["v2 1"]
