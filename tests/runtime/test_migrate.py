"""livepatch.migrate.replace_class on real objects: every kind of holder is rewritten to the new instance
(state copied, new fields given their values), every kind it cannot rewrite exactly refuses with nothing
changed, and the declared undo puts every old object back."""

from __future__ import annotations

import collections
import gc
import itertools
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from livepatch.migrate import ClassReplacementRefused, check_replaceable, replace_class
from tests.fixtures.livefixtures import forget, load_source, unique_name

V1 = """
class Parser:
    __slots__ = ("buf", "count")

    def __init__(self):
        self.buf = []
        self.count = 0


class Holder:
    __slots__ = ("parser",)

    def __init__(self, parser):
        self.parser = parser


class Plain:
    pass
"""

NEW_PARSER = """
class Parser:
    __slots__ = ("buf", "count", "limit")

    def __init__(self):
        self.buf = []
        self.count = 0
        self.limit = 10

    def room(self):
        return self.limit - len(self.buf)
"""


class Recorder:
    """What a HookContext does for a hook: keeps the declared undos."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], object] | None]] = []

    def record(self, what: str, undo: Callable[[], object] | None = None) -> None:
        self.steps.append((what, undo))

    def undo_all(self) -> None:
        for _, undo in reversed(self.steps):
            if undo is not None:
                undo()


def new_class(module: ModuleType, source: str = NEW_PARSER) -> type:
    """The class statement run over the live module's globals, bound nowhere (as the generated hook)."""
    scope: dict[str, Any] = {}
    exec(compile(source, module.__file__ or "<m>", "exec"), vars(module), scope)
    cls = scope["Parser"]
    assert isinstance(cls, type)
    return cls


def init_limit(obj: Any) -> None:
    obj.limit = 10


@pytest.fixture
def live(tmp_path: Path) -> Any:
    module = load_source(V1, tmp_path, unique_name("migrate"))
    yield module
    forget(module)


def closure_over(obj: Any) -> Callable[[], Any]:
    return lambda: obj


# The tests hold live instances only in containers, never in a local of their own frame: a local of a
# running frame is a reference the heap walk cannot see, which refuses (as it must for a server thread;
# test_a_reference_the_heap_walk_cannot_see_refuses).


def test_every_rewritable_holder_gets_the_new_instance_with_its_state(live: Any) -> None:
    old_cls = live.Parser
    made = [live.Parser(), live.Parser()]
    made[0].buf.append(b"partial")
    made[0].count = 3
    buf = made[0].buf
    holders: dict[str, Any] = {
        "list": [made[0], 1, made[1]],
        "dict": {"a": made[0]},
        "key": {made[0]: "by key"},
        "set": {made[0]},
        "deque": collections.deque([made[1]]),
        "ordered": collections.OrderedDict(x=made[0]),
        "slot": live.Holder(made[0]),
        "plain": live.Plain(),
        "closure": closure_over(made[1]),
    }
    holders["plain"].parser = made[1]
    live.Plain.kind = live.Parser  # a class attribute naming the class
    other_module = ModuleType("other_migrate_module")
    other_module.Parser = live.Parser  # type: ignore[attr-defined]  # `from m import Parser`
    ctx = Recorder()
    done = replace_class(ctx, old_cls, new_class(live), init_limit)
    assert done.instances == 2
    new_p, new_q = made
    assert type(new_p) is live.Parser is not old_cls and type(new_q) is live.Parser
    assert new_p.buf == [b"partial"] and new_p.count == 3 and new_p.limit == 10
    assert new_p.room() == 9
    assert new_p.buf is buf  # state is moved, not copied: the very same list
    assert holders["list"][0] is new_p and holders["list"][2] is new_q
    assert holders["dict"]["a"] is new_p and holders["ordered"]["x"] is new_p
    assert list(holders["key"]) == [new_p] and holders["key"][new_p] == "by key"
    assert next(iter(holders["set"])) is new_p and holders["deque"][0] is new_q
    assert holders["slot"].parser is new_p and holders["plain"].parser is new_q
    assert holders["closure"]() is new_q
    assert live.Plain.kind is live.Parser and other_module.Parser is live.Parser
    assert len(ctx.steps) == 1 and "2 live instance(s) rebuilt" in ctx.steps[0][0]


def test_undo_puts_every_old_object_back(live: Any) -> None:
    old_cls = live.Parser
    holders = [live.Parser()]
    before = id(holders[0])
    by_key = {holders[0]: 1}
    slot = live.Holder(holders[0])
    ctx = Recorder()
    replace_class(ctx, old_cls, new_class(live), init_limit)
    assert type(holders[0]) is not old_cls and live.Parser is not old_cls
    ctx.undo_all()
    assert id(holders[0]) == before and type(holders[0]) is old_cls and live.Parser is old_cls
    assert next(iter(by_key)) is holders[0] and slot.parser is holders[0]
    ctx.undo_all()  # idempotent
    assert id(holders[0]) == before and live.Parser is old_cls


@pytest.mark.parametrize(
    ("hold", "what"),
    [
        (lambda p: (p, 1), "a tuple"),
        (lambda p: frozenset([p]), "a frozenset"),
        (lambda p: itertools.repeat(p), "itertools.repeat"),
    ],
)
def test_a_holder_that_cannot_be_rewritten_refuses_with_nothing_changed(
    live: Any, hold: Callable[[Any], Any], what: str
) -> None:
    old_cls = live.Parser
    rewritable = [live.Parser()]
    before = id(rewritable[0])
    held = [hold(rewritable[0])]
    ctx = Recorder()
    with pytest.raises(ClassReplacementRefused, match=what):
        replace_class(ctx, old_cls, new_class(live), init_limit)
    assert id(rewritable[0]) == before and live.Parser is old_cls and ctx.steps == []
    del held


def test_a_bound_method_refuses(live: Any) -> None:
    live.Parser.feed = lambda self: None
    made = [live.Parser()]
    bound = [made[0].feed]
    with pytest.raises(ClassReplacementRefused, match="method"):
        replace_class(Recorder(), live.Parser, new_class(live), init_limit)
    del bound


def test_a_parked_thread_holding_an_instance_in_a_local_refuses(live: Any) -> None:
    old_cls = live.Parser
    parked = threading.Event()
    release = threading.Event()
    holders = [live.Parser()]

    def worker(parser: Any) -> None:
        local = parser  # noqa: F841 - what the check must see
        parked.set()
        release.wait(30)

    t = threading.Thread(target=worker, args=(holders[0],))
    t.start()
    try:
        assert parked.wait(30)
        with pytest.raises(ClassReplacementRefused, match="a frame of thread"):
            replace_class(Recorder(), old_cls, new_class(live), init_limit)
        assert type(holders[0]) is old_cls and live.Parser is old_cls
    finally:
        release.set()
        t.join(30)


def test_a_reference_the_heap_walk_cannot_see_refuses(live: Any) -> None:
    """An instance referenced only from this frame's evaluation stack and locals (not gc-visible):
    the reference count shows it."""
    old_cls = live.Parser
    p = live.Parser()
    with pytest.raises(ClassReplacementRefused, match="where they cannot be rewritten"):
        replace_class(Recorder(), old_cls, new_class(live), init_limit)
    assert type(p) is old_cls and live.Parser is old_cls


def test_a_removed_slot_holding_state_refuses(live: Any) -> None:
    holders = [live.Parser()]
    narrower = NEW_PARSER.replace('("buf", "count", "limit")', '("buf", "limit")')
    with pytest.raises(ClassReplacementRefused, match="no place for it"):
        replace_class(Recorder(), live.Parser, new_class(live, narrower), init_limit)
    assert holders[0].count == 0


def test_subclasses_weak_references_and_finalizers_refuse(live: Any) -> None:
    sub = type("Sub", (live.Parser,), {"__slots__": ()})
    with pytest.raises(ClassReplacementRefused, match="has subclasses"):
        replace_class(Recorder(), live.Parser, new_class(live), init_limit)
    del sub
    gc.collect()
    live.Plain.__del__ = lambda self: None
    with pytest.raises(ClassReplacementRefused, match="__del__"):
        replace_class(Recorder(), live.Plain, type("Plain", (), {}), None)


def test_a_failing_init_of_new_fields_changes_nothing(live: Any) -> None:
    old_cls = live.Parser
    holders = [live.Parser()]

    def broken(obj: Any) -> None:
        raise ValueError("no value")

    ctx = Recorder()
    with pytest.raises(ValueError, match="no value"):
        replace_class(ctx, old_cls, new_class(live), broken)
    assert type(holders[0]) is old_cls and live.Parser is old_cls and ctx.steps == []


def test_frozen_instances_and_holders_are_found(live: Any) -> None:
    """kvserver freezes its heap at start-up: instances and holders made before are in the permanent
    generation, which gc.get_referrers does not search."""
    holders = [live.Parser()]
    gc.freeze()
    try:
        later = [live.Parser()]
        replace_class(Recorder(), holders[0].__class__, new_class(live), init_limit)
        assert type(holders[0]) is live.Parser and type(later[0]) is live.Parser
        assert holders[0].limit == 10
    finally:
        gc.unfreeze()


def test_all_referrers_finds_the_holders_in_every_generation_and_the_frozen_one() -> None:
    """livepatch._frozenheap.all_referrers (one walk, targets bisected) finds what gc.get_referrers and
    the frozen search find together, for many targets at once."""
    from livepatch import _frozenheap

    targets = [Recorder() for _ in range(300)]
    young = [[t] for t in targets[:150]]
    gc.freeze()
    try:
        later = {i: t for i, t in enumerate(targets[150:])}
        found = _frozenheap.all_referrers(*targets)
        ids = {id(r) for r in found}
        assert all(id(h) in ids for h in young) and id(later) in ids and id(targets) in ids
        expected = {id(r) for r in gc.get_referrers(*targets)} | {
            id(r) for r in _frozenheap.referrers(*targets)
        }
        assert ids <= expected and {id(h) for h in young} | {id(later)} <= ids
    finally:
        gc.unfreeze()


def test_a_base_with_init_subclass_refuses_before_the_class_statement_runs_again(live: Any) -> None:
    registry: list[type] = []

    class Registering:
        __slots__ = ()

        def __init_subclass__(cls) -> None:
            registry.append(cls)

    old = type("Item", (Registering,), {"__slots__": ("a",)})
    with pytest.raises(ClassReplacementRefused, match="__init_subclass__"):
        check_replaceable(old)
    assert registry == [old]


ABC_V1 = """
from collections.abc import Sequence


class Headers:
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)


ALL = [Headers([1, 2])]
"""

ABC_NEW = """
class Headers(Sequence):
    __slots__ = ("items",)

    def __init__(self, items):
        self.items = items

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)
"""


def test_a_base_with_abcmeta_is_rebuilt_and_another_metaclass_refuses(tmp_path: Path) -> None:
    """h11 0f719f05b3: `Headers` gains `collections.abc.Sequence` as a base, whose metaclass is ABCMeta
    (session 11). What ABCMeta does is the new class's own: its instances are what a fresh import
    makes, Sequence's mixin methods included. Another metaclass, or an abstract class, refuses."""
    module = load_source(ABC_V1, tmp_path, unique_name("abc"))
    try:
        scope: dict[str, Any] = {}
        exec(compile(ABC_NEW, "<m>", "exec"), vars(module), scope)
        replace_class(Recorder(), module.Headers, scope.pop("Headers"), None)
        assert isinstance(module.ALL[0], module.Sequence) and module.ALL[0].index(2) == 1
        assert type(module.ALL[0]).__name__ == "Headers" and module.ALL[0].items == [1, 2]
        meta = type("Meta", (type,), {})
        exec(
            compile(ABC_NEW.replace("(Sequence)", "(metaclass=Meta)"), "<m>", "exec"),
            {**vars(module), "Meta": meta},
            scope,
        )
        with pytest.raises(ClassReplacementRefused, match="metaclass other than ABCMeta"):
            replace_class(Recorder(), module.Headers, scope.pop("Headers"), None)
        abstract = ABC_NEW.replace("    def __len__(self):\n        return len(self.items)\n", "")
        exec(compile(abstract, "<m>", "exec"), vars(module), scope)
        with pytest.raises(ClassReplacementRefused, match="is abstract"):
            replace_class(Recorder(), module.Headers, scope.pop("Headers"), None)
        assert type(module.ALL[0]) is module.Headers
    finally:
        forget(module)
