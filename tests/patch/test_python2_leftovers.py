"""Two exact rules for what Python 2 compatibility adds or drops (session 11): an explicit `object` base
(`class C(object):` is `class C:` in Python 3: same MRO, same layout) and a class-body `if` that is true
on Python 2 only (its body never runs on an interpreter livepatch runs on). Both change no live object;
the differ used to refuse them as a layout change and as changed class state (h11 c37f9ebe22 and
4746b0a0ff, refused before for these alone)."""

from __future__ import annotations

from pathlib import Path

import pytest

from livepatch import apply_patch, revert_patch
from livepatch.patch.diff import diff_sources
from livepatch.patch.model import RefusalKind
from tests.fixtures.livefixtures import forget, load_source, unique_name

V1 = """
import sys


class Buffer:
    def __init__(self):
        self.data = b"ab"

    def __bytes__(self):
        return bytes(self.data)

    def __len__(self):
        return len(self.data)


BUFFERS = [Buffer()]
"""

# Python 2 compatibility added (c37f9ebe22's shape) and a method changed
V2 = (
    V1.replace("class Buffer:", "class Buffer(object):")
    .replace(
        "    def __len__(self):",
        "    if sys.version_info[0] < 3:\n        __str__ = __bytes__\n\n    def __len__(self):",
    )
    .replace("return len(self.data)", "return len(self.data) + 100")
)


def kinds(v1: str, v2: str) -> list[RefusalKind]:
    return [r.kind for r in diff_sources({"m": (v1, v2)}).spec.refusals]


def test_python2_compatibility_added_or_dropped_is_no_refusal() -> None:
    assert kinds(V1, V2) == []
    assert kinds(V2, V1) == []  # dropped (4746b0a0ff's shape)


@pytest.mark.parametrize(
    ("v2", "kind"),
    [
        # `object` bound in the module is another class: a real bases change
        (V2.replace("import sys\n", "import sys\nobject = dict\n"), RefusalKind.CLASS_LAYOUT),
        (V1.replace("class Buffer:", "class Buffer(dict):"), RefusalKind.CLASS_LAYOUT),
        # a test of the minor version could hold on the live interpreter
        (
            V2.replace("sys.version_info[0] < 3", "sys.version_info < (3, 12)"),
            RefusalKind.CLASS_STATE,
        ),
        # an `else` runs on Python 3
        (
            V2.replace(
                "        __str__ = __bytes__\n",
                "        __str__ = __bytes__\n    else:\n        x = 1\n",
            ),
            RefusalKind.CLASS_STATE,
        ),
        (
            V2.replace("sys.version_info[0] < 3", "sys.version_info[0] >= 3"),
            RefusalKind.CLASS_STATE,
        ),
    ],
    ids=["object-rebound", "another-base", "minor-version", "else", "true-on-python3"],
)
def test_what_is_not_a_python2_leftover_stays_refused(v2: str, kind: RefusalKind) -> None:
    assert kind in kinds(V1, v2)


def test_the_patch_applies_live_and_reverts(tmp_path: Path) -> None:
    live = load_source(V1, tmp_path, unique_name("py2"))
    try:
        cls = live.Buffer
        result = diff_sources({live.__name__: (V1, V2)}, category=None)
        assert result.spec.refusals == ()
        applied = apply_patch(result.spec, method="global", timeout=10)
        assert applied.outcome == "applied", applied.reason
        assert live.Buffer is cls and len(live.BUFFERS[0]) == 102  # the live class, new code
        assert not hasattr(live.Buffer, "__str__") or live.Buffer.__str__ is object.__str__
        assert revert_patch().ok and len(live.BUFFERS[0]) == 2
    finally:
        forget(live)


HASH_V1 = """
class Event:
    def __init__(self, n):
        self.n = n

    def __eq__(self, other):
        return self.n == other.n


EVENTS = [Event(1)]
"""
# c37f9ebe22's shape: Python 2 needed `__ne__` and an explicit `__hash__ = None`
HASH_V2 = HASH_V1.replace(
    "        return self.n == other.n\n",
    "        return self.n == other.n\n\n    def __ne__(self, other):\n"
    "        return not self.__eq__(other)\n\n    __hash__ = None\n",
)


def test_an_explicit_hash_none_next_to_eq_binds_what_the_live_class_has(tmp_path: Path) -> None:
    """A class defining `__eq__` already has `__hash__ = None` in its dict: the added statement binds
    the very object the live class holds. Staging binds nothing (it refused before: "the live namespace
    already has it"), and a revert leaves the class unhashable, as the old version made it."""
    live = load_source(HASH_V1, tmp_path, unique_name("hash"))
    try:
        result = diff_sources({live.__name__: (HASH_V1, HASH_V2)}, category=None)
        assert result.spec.refusals == ()
        applied = apply_patch(result.spec, method="global", timeout=10)
        assert applied.outcome == "applied", applied.reason
        assert live.EVENTS[0] != live.Event(2) and vars(live.Event)["__hash__"] is None
        assert revert_patch().ok
        assert "__hash__" in vars(live.Event) and live.Event.__hash__ is None
        with pytest.raises(TypeError):
            hash(live.EVENTS[0])
    finally:
        forget(live)
