"""Staging's heap searches while the process has frozen objects (gc.freeze(), as kvserver does at
start-up): the frozen holders are found (tests/patch/test_values.py), and the search leaves the frozen set
exactly as it was, so cyclic garbage made later by objects alive at staging time is still collected and
nothing grows across many patch/revert cycles. Without livepatch._frozenheap the patch is refused."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from livepatch.errors import PatchRefused
from livepatch.patch.diff import patch_from_sources
from livepatch.patch.model import PatchSpec
from livepatch.runtime import values
from livepatch.runtime.staging import stage
from tests.fixtures.livefixtures import forget, is_frozen, load_source, unique_name

CORPUS = Path(__file__).resolve().parent / "values_corpus" / "module_kind_change"


class _Connection:
    """What a server holds per client: an object in a reference cycle (here, with itself)."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def kind_change(tmp_path: Path) -> Iterator[tuple[ModuleType, PatchSpec]]:
    """A live module and a patch whose staging searches the heap (a name that changes kind)."""
    v1, v2 = (CORPUS / "v1.py").read_text(), (CORPUS / "v2.py").read_text()
    live = load_source(v1, tmp_path, unique_name("frozen_heap"))
    try:
        yield live, patch_from_sources({live.__name__: (v1, v2)})
    finally:
        forget(live)


@pytest.fixture
def frozen() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _apply_and_revert(spec: PatchSpec) -> None:
    staged = stage(spec)
    staged.swap_in()
    staged.swap_out()


@pytest.mark.usefixtures("frozen")
def test_an_object_alive_at_staging_is_not_frozen_by_it(
    kind_change: tuple[ModuleType, PatchSpec],
) -> None:
    """A connection open while a patch stages, closed afterwards: its cycle is collected. (Unfreezing for
    the search and freezing again froze it with the rest, and it was never collected.)"""
    live, spec = kind_change
    before = gc.get_freeze_count()
    conn = _Connection()
    closed = weakref.ref(conn)
    _apply_and_revert(spec)
    assert not is_frozen(conn) and gc.get_freeze_count() <= before
    del conn
    gc.collect()
    assert closed() is None, "the connection's cycle was frozen by staging: it is never collected"
    assert live.hmset_command is live.hset_command  # reverted


@pytest.mark.usefixtures("frozen")
def test_nothing_grows_across_many_patch_revert_cycles(
    kind_change: tuple[ModuleType, PatchSpec],
) -> None:
    """100 patch/revert cycles, a connection opened before each staging and closed after it: the
    frozen set stays the same size and the tracked objects do not grow with the cycles."""
    _, spec = kind_change
    _apply_and_revert(spec)  # caches filled once (fingerprints, the parsed patch)
    gc.collect()
    frozen, tracked = gc.get_freeze_count(), len(gc.get_objects())
    for _ in range(100):
        conn = _Connection()
        _apply_and_revert(spec)
        del conn
    gc.collect()
    # <=, not ==: a frozen object of the process (not of this test) may die meanwhile
    assert gc.get_freeze_count() <= frozen
    assert len(gc.get_objects()) - tracked < 50  # less than one object per cycle


@pytest.mark.usefixtures("frozen")
def test_refused_when_the_frozen_objects_cannot_be_searched(
    kind_change: tuple[ModuleType, PatchSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the C helper (not built, or another CPython), a search over half the heap would be a
    guess: the patch is refused and the message says why; nothing is unfrozen."""
    _, spec = kind_change
    old = [[]]  # frozen with the rest (the fixture froze before it existed)
    gc.freeze()
    fresh = [[]]  # alive, not frozen, during the staging
    monkeypatch.setattr(values, "_frozenheap", None)
    with pytest.raises(PatchRefused, match=r"gc\.freeze\(\) froze, which this build cannot search"):
        stage(spec)
    assert is_frozen(old) and not is_frozen(fresh)


def test_nothing_frozen_needs_no_helper(
    kind_change: tuple[ModuleType, PatchSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, spec = kind_change
    monkeypatch.setattr(values, "_frozenheap", None)
    _apply_and_revert(spec)


def test_the_helper_walks_the_permanent_generation_in_place() -> None:
    """_frozenheap.referrers finds a frozen holder gc.get_referrers does not see, and moves nothing."""
    helper = values._frozenheap
    assert helper is not None, "livepatch._frozenheap is not built (setup.py)"
    target: list[int] = []  # tracked, so the dict holding it is too
    holder = {"target": target}
    gc.collect()
    gc.freeze()
    try:
        count = gc.get_freeze_count()
        assert helper.count() == count
        assert not any(r is holder for r in gc.get_referrers(target))
        assert any(r is holder for r in helper.referrers(target))
        assert gc.get_freeze_count() == count
    finally:
        gc.unfreeze()
