"""Replace a class whose instance layout changes (`__slots__`, bases), and every live instance of it.

What a transform hook calls (the differ generates such a hook for a `__slots__` or bases change, with
`livepatch diff --accept-transformer`; docs/patchability.md, "Class replacement (session 10)"):

    replace_class(ctx, old_cls, new_cls, init_new_fields=None) -> Replacement

Theory of operation
-------------------
An instance's slot layout is fixed in C when it is made, and CPython refuses `__class__` assignment
between classes of different layouts, so a live object cannot gain a slot in place. What DSU systems do
instead (Smalltalk's `become:`, state transfer) is done here, while every managed thread is parked (a
transform hook runs under global quiescence):

1. **Find** every live instance of `old_cls`: each instance of a heap type refers to its class, so the
   class's referrers are its instances (one heap walk, the objects `gc.freeze()` froze included:
   kvserver freezes its heap at start-up). Exact type: a subclass of `old_cls` refuses, since its
   instances have the old layout too and its `__bases__` hold the old class.
2. **Build** a new instance of `new_cls` for each, without calling `__init__` (`object.__new__`), copy
   its state by attribute name (every slot of the old class's MRO, then its `__dict__`) and give the
   fields the new layout adds their values (`init_new_fields(new)`, the generated values of
   patch/transformer.py; it sees the copied state). A value of the old state that has no place in the
   new layout refuses: dropping it would lose state.
3. **Find every reference** to the old instances and to the old class (one heap walk for all of them
   at once: `livepatch._frozenheap.all_referrers`) and decide, per referrer kind, how to rewrite it exactly:
   plain dict / OrderedDict / defaultdict values (module namespaces: the class's own binding and
   `from m import C` copies in other modules; instance `__dict__`s), their keys when the class hashes
   by identity (the dict is rebuilt in order), a class's `__dict__` (through setattr, so the type
   cache sees it), list and deque items, set members (identity hash), cells, slots and attributes of
   other objects. Everything else refuses: a tuple, a frozenset, a bound method, a frame (a traceback,
   a generator or coroutine suspended with it in a local), a C object that holds it, any other kind.
   A frame of a parked thread holding an old instance or the old class in a local refuses too (found by
   walking every other thread's stack).
4. **Count** the references: for each old instance, `sys.getrefcount` must equal the references the
   walk found (and our own). A reference held where the GC cannot see it (a value on a parked frame's
   evaluation stack, a C structure that does not traverse it) would go on pointing at the old object
   while the rest of the server uses the new one: it refuses. Weak references to an old instance
   refuse (they cannot be pointed elsewhere), and so does an old class with a `__del__` (the old
   objects die after the swap and their finalizer would act on state the new objects share), or a
   base defining `__init_subclass__` (running the class statement again would register the class a
   second time; `check_replaceable` lets the hook check that before it runs the statement).
5. **All or nothing**: nothing is changed until every referrer of every object was decided. Then one
   undo is declared (`ctx.record`) before the first change; each step is idempotent (it puts the old
   object back only where the new one is), so a failed or aborted attempt leaves the process as it was.

Not rewritten, by design: livepatch's own bookkeeping of the attempt (objects of `livepatch.runtime`
modules, e.g. the staged patch's operations, which still name the old class and touch only it); the
old class's own internals (its `__dict__`, `__mro__`, its descriptors and the `__class__` cells of its
methods) and the old instances (they die with it).

Cost, with the server paused: two heap walks (three when a referrer is a dict that is not a module
namespace: whose `__dict__` it is), each O(references * log(targets)) with `_frozenheap.all_referrers`,
plus O(referrers); 0.4 s for 10,000 instances on a heap of a million objects (bench/migrate_cost.py).
Without the C helper, `gc.get_referrers` compares each reference with every target: O(heap * instances)
(24 s there). The garbage collector is off meanwhile (a collection would run finalizers mid-rewrite).
Bounded by `MAX_INSTANCES`; the transform hook's deadline (the patch's timeout) bounds the time.

Dangers (docs/patchability.md): an object's `id()` changes (a dict keyed by `id(obj)` goes stale);
threads livepatch does not manage are not parked and must not touch these objects meanwhile; a revert
cannot move the instances back (the generated hooks veto it: apply the reverse patch instead).

Concurrency: call only from a transform hook (every managed thread parked); not reentrant.
"""

from __future__ import annotations

import abc
import collections
import gc
import sys
import threading
import weakref
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from types import CellType, FrameType, MemberDescriptorType, ModuleType
from typing import Any, Protocol

try:
    from livepatch import _frozenheap
except ImportError:  # the optional C helper was not built (setup.py)
    _frozenheap = None

__all__ = [
    "MAX_INSTANCES",
    "ClassReplacementRefused",
    "Replacement",
    "check_replaceable",
    "live_instances",
    "replace_class",
]

# more live instances than this: refused (the pause grows with them; say so rather than stall)
MAX_INSTANCES = 200_000

_HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made by a class statement (or type())
_DICTS = (dict, collections.OrderedDict, collections.defaultdict)
_OWN_MODULES = ("livepatch.runtime.", "livepatch.migrate", "livepatch_hooks_")


class ClassReplacementRefused(RuntimeError):
    """The class cannot be replaced exactly; nothing was changed. The message says what holds it."""


class _Recorder(Protocol):
    def record(self, what: str, undo: Callable[[], object] | None = None) -> None: ...


@dataclass(frozen=True)
class Replacement:
    """What replace_class did: instances rebuilt, references rewritten (by kind)."""

    cls: str
    instances: int
    references: dict[str, int]
    # attributes the new instances have that their old ones did not (init_new_fields gave them): what
    # the way back drops (replace_class's `drop`), since an instance of the old class never had them
    added: frozenset[str] = frozenset()


class _Step:
    """One reference to rewrite: `do` puts the new object where the old one is, `undo` the reverse;
    both idempotent (they check what is there first)."""

    kind = "?"

    def do(self) -> None:
        raise NotImplementedError

    def undo(self) -> None:
        raise NotImplementedError


class _Swap(_Step):
    """A step at one place holding one object: `_put(frm, to)` puts `to` there if `frm` is what is
    there, so `do` and `undo` are the same move in the two directions."""

    old: Any
    new: Any

    def _put(self, frm: Any, to: Any) -> None:
        raise NotImplementedError

    def do(self) -> None:
        self._put(self.old, self.new)

    def undo(self) -> None:
        self._put(self.new, self.old)


@dataclass
class _DictValue(_Swap):
    d: dict[Any, Any]
    key: Any
    old: Any
    new: Any
    kind = "dict value"

    def _put(self, frm: Any, to: Any) -> None:
        if self.d.get(self.key, None) is frm:
            dict.__setitem__(self.d, self.key, to)


@dataclass
class _DictKeys(_Step):
    """Keys of a dict rewritten: the dict is rebuilt in the same order (its identity kept)."""

    d: dict[Any, Any]
    mapping: dict[int, tuple[Any, Any]]  # id(old) -> (old, new)
    kind = "dict key"

    def _rebuild(self, swap: Callable[[Any], Any]) -> None:
        items = [(swap(k), v) for k, v in self.d.items()]
        dict.clear(self.d)
        for k, v in items:
            dict.__setitem__(self.d, k, v)

    def do(self) -> None:
        m = self.mapping
        self._rebuild(lambda k: m[id(k)][1] if id(k) in m and m[id(k)][0] is k else k)

    def undo(self) -> None:
        back = {id(new): (new, old) for old, new in self.mapping.values()}
        self._rebuild(lambda k: back[id(k)][1] if id(k) in back and back[id(k)][0] is k else k)


@dataclass
class _Item(_Swap):
    seq: Any  # list or deque
    index: int
    old: Any
    new: Any
    kind = "list item"

    def _put(self, frm: Any, to: Any) -> None:
        if len(self.seq) > self.index and self.seq[self.index] is frm:
            self.seq[self.index] = to


@dataclass
class _Member(_Swap):
    s: set[Any]
    old: Any
    new: Any
    kind = "set member"

    def _put(self, frm: Any, to: Any) -> None:
        if any(x is frm for x in self.s):
            self.s.discard(frm)
            self.s.add(to)


@dataclass
class _Cell(_Swap):
    cell: CellType
    old: Any
    new: Any
    kind = "cell"

    def _put(self, frm: Any, to: Any) -> None:
        if self.cell.cell_contents is frm:
            self.cell.cell_contents = to


@dataclass
class _Slot(_Swap):
    obj: Any
    slot: MemberDescriptorType
    old: Any
    new: Any
    kind = "slot"

    def _get(self) -> Any:
        try:
            return self.slot.__get__(self.obj, type(self.obj))
        except AttributeError:
            return None

    def _put(self, frm: Any, to: Any) -> None:
        if self._get() is frm:
            self.slot.__set__(self.obj, to)


@dataclass
class _ClassAttr(_Swap):
    """A value in a class's __dict__: set with setattr, which keeps the type's method cache right."""

    cls: type
    name: str
    old: Any
    new: Any
    kind = "class attribute"

    def _put(self, frm: Any, to: Any) -> None:
        if vars(self.cls).get(self.name) is frm:
            type.__setattr__(self.cls, self.name, to)


# the metaclasses whose classes are rebuilt (_check_plain)
_METACLASSES = (type, abc.ABCMeta)


def _is_heap(t: type) -> bool:
    return bool(t.__flags__ & _HEAPTYPE)


def _slots(cls: type) -> dict[str, MemberDescriptorType]:
    """The slot descriptors of cls's layout, by the name an instance's attribute has (the first in
    MRO order, as attribute lookup finds it)."""
    out: dict[str, MemberDescriptorType] = {}
    for k in cls.__mro__:
        for name, d in vars(k).items():
            if isinstance(d, MemberDescriptorType) and name not in out:
                out[name] = d
    return out


def _instance_dict(obj: object) -> dict[str, Any] | None:
    try:
        d = object.__getattribute__(obj, "__dict__")
    except (AttributeError, TypeError):
        return None
    return d if type(d) is dict else None


def _check_plain(cls: type) -> None:
    # ABCMeta (an inherited `collections.abc` base, h11 0f719f05b3; session 11): what it does when
    # the class statement runs is confined to the new class (its own `_abc_impl`, its
    # `__abstractmethods__`); the bases' caches hold the old class weakly (and a stale entry only
    # answers for the old class, which nothing uses after the swap). Another metaclass may register
    # the class anywhere, or make its objects another way: refused.
    if not isinstance(cls, type) or type(cls) not in _METACLASSES or not _is_heap(cls):
        raise ClassReplacementRefused(
            f"{cls!r} is not a plain class (a metaclass other than ABCMeta, or a C type): its "
            "objects cannot be rebuilt"
        )
    abstract = getattr(cls, "__abstractmethods__", None)
    if abstract:
        raise ClassReplacementRefused(
            f"{cls.__qualname__} is abstract ({', '.join(sorted(abstract))}): it "
            "has no instances to rebuild as"
        )
    c_bases = [k for k in cls.__mro__[1:] if k is not object and not _is_heap(k)]
    if c_bases or cls.__new__ is not object.__new__:
        raise ClassReplacementRefused(
            f"{cls.__qualname__} derives from a C type or defines __new__ "
            f"({', '.join(k.__qualname__ for k in c_bases) or '__new__'}): its objects cannot be "
            "built without calling __init__; keep its layout or restart the server"
        )
    hooked = [
        k.__qualname__
        for k in cls.__mro__[1:]
        if k is not object and "__init_subclass__" in vars(k)
    ]
    if hooked:
        raise ClassReplacementRefused(
            f"{cls.__qualname__}: {', '.join(hooked)} define(s) __init_subclass__, which running the "
            "class statement again would call a second time (a registry would hold both classes)"
        )


def check_replaceable(old_cls: type) -> None:
    """What replace_class checks of the live class, without a new class: a hook calls it before it
    runs the new class statement, whose side effects (a base's __init_subclass__) nothing undoes.
    Raises ClassReplacementRefused."""
    _check_plain(old_cls)
    subclasses: list[type] = old_cls.__subclasses__()
    if subclasses:
        raise ClassReplacementRefused(
            f"{old_cls.__qualname__} has subclasses ({', '.join(s.__qualname__ for s in subclasses)}): "
            "their instances keep the old layout; replace them in the same patch or restart the server"
        )
    if any("__del__" in vars(k) for k in old_cls.__mro__):
        raise ClassReplacementRefused(
            f"{old_cls.__qualname__} has a __del__: the old objects die after the swap and their "
            "finalizer would act on state the new objects share"
        )


def _check_classes(old_cls: type, new_cls: type) -> None:
    if old_cls is new_cls:
        raise ClassReplacementRefused(f"{old_cls.__qualname__}: the new class is the live one")
    check_replaceable(old_cls)
    _check_plain(new_cls)


def _state(obj: object, slots: dict[str, MemberDescriptorType]) -> Iterator[tuple[str, Any]]:
    for name, d in slots.items():
        if name in ("__dict__", "__weakref__"):
            continue
        try:
            yield name, d.__get__(obj, type(obj))
        except AttributeError:
            continue  # an unset slot stays unset
    yield from (_instance_dict(obj) or {}).items()


def _rebuild(
    old: object,
    new_cls: type,
    old_slots: dict[str, MemberDescriptorType],
    new_slots: dict[str, MemberDescriptorType],
    new_has_dict: bool,
    replace: Callable[[Any], Any],
    drop: frozenset[str],
) -> object:
    new: object = object.__new__(new_cls)
    for name, value in _state(old, old_slots):
        if name in drop:
            continue  # the way back: what the forward step gave it (Replacement.added)
        value = replace(value)
        if name in new_slots:
            new_slots[name].__set__(new, value)
        elif new_has_dict:
            object.__getattribute__(new, "__dict__")[name] = value
        else:
            raise ClassReplacementRefused(
                f"{type(old).__qualname__}.{name} holds a value on a live instance but the new layout "
                "has no place for it (a slot removed): the state would be lost; keep the slot"
            )
    return new


def _referrers(objs: tuple[Any, ...]) -> list[Any]:
    """gc.get_referrers(*objs), the objects gc.freeze() froze included: kvserver freezes its heap at
    start-up, and gc.get_referrers does not search the permanent generation (livepatch._frozenheap
    walks it in place; without it a search while objects are frozen is refused, not half done)."""
    if _frozenheap is not None and hasattr(_frozenheap, "all_referrers"):
        # one walk of everything, the targets bisected: O(references * log(targets)) where
        # gc.get_referrers compares each reference with every target (bench/migrate_cost.py)
        return [r for r in _frozenheap.all_referrers(*objs) if r is not objs]
    found = [r for r in gc.get_referrers(*objs) if r is not objs]
    if gc.get_freeze_count():
        if _frozenheap is None:
            raise ClassReplacementRefused(
                "objects are frozen (gc.freeze) and livepatch._frozenheap is not built for this "
                "interpreter: the heap cannot be searched exactly"
            )
        found.extend(_frozenheap.referrers(*objs))
    return found


def live_instances(cls: type) -> list[Any]:
    """Every live instance of `cls` or of one of its subclasses, the frozen ones included (each
    instance of a heap type refers to its class: one referrer search of the classes). The generated
    attribute transformer uses it: `gc.get_objects()` does not list what `gc.freeze()` froze, and
    kvserver freezes its heap, its EventLoop included, at start-up (kvserver 34145cf84b: the live loop
    was skipped and lacked `begin_batch`, so every connection failed after the patch; session 11).
    Raises ClassReplacementRefused when objects are frozen and `_frozenheap` is not built."""
    classes: list[type] = [cls]
    for c in classes:  # grows while it runs: every subclass, at any depth, once
        subclasses: list[type] = c.__subclasses__()
        classes.extend(s for s in subclasses if s not in classes)
    kinds = {id(c): c for c in classes}
    return [
        o
        for o in _referrers(tuple(classes))
        if kinds.get(id(type(o))) is type(o) and not isinstance(o, type)
    ]


def _dict_owners(dicts: list[dict[Any, Any]]) -> dict[int, Any]:
    """id(d) -> the class whose real __dict__ d is, or the object whose instance __dict__ it is, for
    each of `dicts` that has one. One more heap walk, for all of them at once (few: in 3.11 most
    instance attributes live in the object, not in a dict; module namespaces are known already)."""
    if not dicts:
        return {}
    wanted = {id(d) for d in dicts}
    out: dict[int, Any] = {}
    for o in _referrers(tuple(dicts)):
        if isinstance(o, type):
            inner = gc.get_referents(vars(o))
            if inner and id(inner[0]) in wanted:
                out[id(inner[0])] = o
        else:
            d = _instance_dict(o)
            if d is not None and id(d) in wanted:
                out[id(d)] = o
    return out


def _own(r: Any) -> bool:
    """livepatch's own bookkeeping of this attempt (the staged patch's operations, the hook context):
    they name the old class or objects but are not server state."""
    return type(r).__module__.startswith(_OWN_MODULES)


def _owned(old_cls: type) -> set[int]:
    """Objects that belong to the old class itself and die with it (ids)."""
    owned = {id(gc.get_referents(vars(old_cls))[0]), id(old_cls.__mro__)}
    for value in vars(old_cls).values():
        if getattr(value, "__objclass__", None) is old_cls:
            owned.add(id(value))  # slot and __dict__/__weakref__ descriptors
        funcs = [value, getattr(value, "__func__", None)]
        funcs += [getattr(value, a, None) for a in ("fget", "fset", "fdel")]
        for f in funcs:
            for cell in getattr(f, "__closure__", None) or ():
                try:
                    if cell.cell_contents is old_cls:
                        owned.add(id(cell))  # a method's `__class__` cell (super())
                except ValueError:
                    continue
    return owned


def _count_references(referrers: list[Any], targets: dict[int, Any]) -> collections.Counter[int]:
    """id(target) -> the references to it the heap walk found. A function of its own so that no loop
    variable of the caller is left holding a target (a reference the count would not explain)."""
    found: collections.Counter[int] = collections.Counter()
    for r in referrers:
        found.update(_referent_ids(r, targets))
        # the list `referrers` itself holds the old instances (each refers to the old class)
        if id(r) in targets and targets[id(r)] is r:
            found[id(r)] += 1
    return found


def _referent_ids(r: Any, targets: dict[int, Any]) -> list[int]:
    """The ids of the targets `r` refers to, once per reference."""
    return [id(x) for x in gc.get_referents(r) if id(x) in targets and targets[id(x)] is x]


def _frame_holders(targets: dict[int, Any]) -> str | None:
    """A frame of another thread (a parked one, or one livepatch does not manage) whose locals hold
    one of the targets."""
    me = threading.get_ident()
    for ident, top in sys._current_frames().items():
        if ident == me:
            continue
        f: FrameType | None = top
        while f is not None:
            for name, v in f.f_locals.items():
                if id(v) in targets and targets[id(v)] is v:
                    return (
                        f"a frame of thread {ident} ({f.f_code.co_qualname}, "
                        f"{f.f_code.co_filename}:{f.f_lineno}) holds it in `{name}`"
                    )
            f = f.f_back
    return None


def replace_class(
    ctx: _Recorder,
    old_cls: type,
    new_cls: type,
    init_new_fields: Callable[[Any], None] | None = None,
    drop: Collection[str] = (),
) -> Replacement:
    """Rebuild every live instance of `old_cls` as an instance of `new_cls`, and point every reference
    to the old instances and to the old class at the new ones (module docstring). Raises
    ClassReplacementRefused, having changed nothing, when some reference cannot be rewritten exactly;
    any other exception from `init_new_fields` propagates, also with nothing changed.

    `drop`: attributes not copied. Only for the way back (a revert replacing the new class by the old
    one again): the `added` of the forward Replacement, which instances of the old class never had.

    Concurrency: only from a transform hook (every managed thread parked); declares its undo with
    `ctx.record` before changing anything."""
    _check_classes(old_cls, new_cls)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _replace(ctx, old_cls, new_cls, init_new_fields, frozenset(drop))
    finally:
        if enabled:
            gc.enable()


def _replace(
    ctx: _Recorder,
    old_cls: type,
    new_cls: type,
    init_new_fields: Callable[[Any], None] | None,
    drop: frozenset[str],
) -> Replacement:
    name = f"{old_cls.__module__}.{old_cls.__qualname__}"
    # each instance of a heap type refers to its class (subtype_traverse): the class's referrers are
    # its instances, the frozen ones included, without a walk of their own
    instances = [o for o in _referrers((old_cls,)) if type(o) is old_cls]
    if len(instances) > MAX_INSTANCES:
        raise ClassReplacementRefused(
            f"{name}: {len(instances)} live instances, more than {MAX_INSTANCES} (the pause would be "
            "too long); restart the server instead"
        )
    for o in instances:
        if weakref.getweakrefcount(o):
            raise ClassReplacementRefused(
                f"{name}: a live instance is weakly referenced; a weak reference cannot be pointed "
                "at the new object"
            )
    old_slots, new_slots = _slots(old_cls), _slots(new_cls)
    new_has_dict = "__dict__" in new_slots or any(
        "__dict__" in vars(k) for k in new_cls.__mro__ if k is not object
    )
    # id(old) -> (old, new): the class first, so the instances' state maps to new objects too
    mapping: dict[int, tuple[Any, Any]] = {id(old_cls): (old_cls, new_cls)}

    def replace(v: Any) -> Any:
        hit = mapping.get(id(v))
        return hit[1] if hit is not None and hit[0] is v else v

    for o in instances:
        mapping[id(o)] = (o, None)
    for o in instances:
        mapping[id(o)] = (
            o,
            _rebuild(o, new_cls, old_slots, new_slots, new_has_dict, replace, drop),
        )
    news = [n for _, n in mapping.values()]
    if init_new_fields is not None:
        for o in instances:
            init_new_fields(mapping[id(o)][1])  # may raise: nothing live was changed yet
    added: set[str] = set()
    for o in instances:
        added |= {n for n, _ in _state(mapping[id(o)][1], new_slots)} - {
            n for n, _ in _state(o, old_slots)
        }
    targets = {k: old for k, (old, _) in mapping.items()}
    where = _frame_holders(targets)
    if where is not None:
        raise ClassReplacementRefused(
            f"{name}: {where}; replace the class when no thread is inside code that holds it"
        )
    skip = _owned(old_cls) | {id(x) for x in (instances, news)}
    skip |= {id(mapping), id(targets)} | {id(o) for o in instances}
    # an old instance's own __dict__ dies with it
    skip |= {id(d) for d in map(_instance_dict, instances) if d is not None}
    skip |= {id(pair) for pair in mapping.values()}
    referrers = _referrers(tuple(targets.values()))
    # every reference the heap walk sees, counted without holding any of them (a list of the targets
    # would be one more reference to each)
    found = _count_references(referrers, targets)
    # references the heap walk cannot see (a parked frame's evaluation stack, a C structure): the
    # count of an instance must be what the walk found, plus this loop's `o` and getrefcount's argument
    for o in instances:
        hidden = sys.getrefcount(o) - 2 - found[id(o)]
        if hidden > 0:
            raise ClassReplacementRefused(
                f"{name}: {hidden} reference(s) to a live instance are held where they cannot be "
                "rewritten (a thread's evaluation stack or a C object); replace the class when no "
                "thread is inside code that uses it"
            )
    module_dicts = {id(vars(m)) for m in list(sys.modules.values()) if isinstance(m, ModuleType)}
    owners = _dict_owners(
        [
            r
            for r in referrers
            if type(r) in _DICTS and id(r) not in module_dicts and id(r) not in skip
        ]
    )
    steps: list[_Step] = []
    for r in referrers:
        if id(r) in skip or r is referrers or _own(r):
            continue
        refs = [x for x in gc.get_referents(r) if id(x) in targets and targets[id(x)] is x]
        owner = owners.get(id(r))
        if owner is not None and _own(owner):
            continue
        made = _steps_for(r, refs, mapping, owner)
        if isinstance(made, str):
            raise ClassReplacementRefused(
                f"{name}: {made} holds {'the class' if refs[0] is old_cls else 'a live instance'}; "
                "it cannot be rewritten exactly (keep the class layout, or restart the server)"
            )
        steps.extend(made)
    del referrers
    counts = collections.Counter(s.kind for s in steps)

    def undo() -> None:
        for s in reversed(steps):
            s.undo()

    ctx.record(
        f"{name} replaced by the new class: {len(instances)} live instance(s) rebuilt, "
        f"{len(steps)} reference(s) rewritten",
        undo,
    )
    for s in steps:
        s.do()
    return Replacement(name, len(instances), dict(counts), frozenset(added))


def _steps_for(
    r: Any,
    refs: list[Any],
    mapping: dict[int, tuple[Any, Any]],
    owner: Any,
) -> list[_Step] | str:
    """How to rewrite referrer `r`'s references `refs` (in the order gc.get_referents gives them), or
    what `r` is when it cannot be rewritten exactly."""
    steps: list[_Step] = []
    t = type(r)

    def new(x: Any) -> Any:
        return mapping[id(x)][1]

    def hit(x: Any) -> bool:
        m = mapping.get(id(x))
        return m is not None and m[0] is x

    if t in _DICTS:
        owner = owner if isinstance(owner, type) else None
        keyed = [k for k in r if hit(k)]
        valued = [(k, v) for k, v in r.items() if hit(v)]
        if keyed and (owner is not None or t is not dict):
            return (
                f"the __dict__ of class {owner.__qualname__} (as a key)"
                if owner
                else f"a {t.__name__} (as a key)"
            )
        if any(type(k).__hash__ is not object.__hash__ for k in keyed if not isinstance(k, type)):
            return "a dict (as a key, with a __hash__ of its own)"
        if owner is not None:
            steps += [_ClassAttr(owner, k, v, new(v)) for k, v in valued]
        else:
            steps += [_DictValue(r, k, v, new(v)) for k, v in valued]
        if keyed:
            steps.append(_DictKeys(r, {id(k): (k, new(k)) for k in keyed}))
        return steps if len(refs) == len(valued) + len(keyed) else f"a {t.__name__}"
    elif t is list or t is collections.deque:
        steps += [_Item(r, i, v, new(v)) for i, v in enumerate(r) if hit(v)]
    elif t is set:
        if any(type(x).__hash__ is not object.__hash__ for x in refs if not isinstance(x, type)):
            return "a set (with a __hash__ of its own)"
        steps += [_Member(r, x, new(x)) for x in r if hit(x)]
    elif t is CellType:
        steps.append(_Cell(r, r.cell_contents, new(r.cell_contents)))
    elif _is_heap(t) and not isinstance(r, type):
        # an instance of a Python class: its slots and its __dict__ (whichever holds the reference);
        # its class is a reference too (subtype_traverse): never a target here (old instances skipped)
        refs = [x for x in refs if x is not t]
        for slot in _slots(t).values():
            try:
                v = slot.__get__(r, t)
            except AttributeError:
                continue
            if hit(v):
                steps.append(_Slot(r, slot, v, new(v)))
        d = _instance_dict(r)
        if d is not None:
            steps += [_DictValue(d, k, v, new(v)) for k, v in d.items() if hit(v)]
            if any(hit(k) for k in d):
                return f"the __dict__ of a {t.__qualname__} (as a key)"
    else:
        what = {
            tuple: "a tuple",
            frozenset: "a frozenset",
            FrameType: "a frame (a traceback, or a suspended generator's)",
        }.get(t, f"a {t.__module__}.{t.__qualname__} object")
        return what
    if len(steps) != len(refs):
        # the referrer holds it somewhere the rewrite does not reach (a C field of a subclass of a
        # builtin, a key of an instance dict...): refuse rather than leave it pointing at the old one
        return f"a {t.__module__}.{t.__qualname__} object (in a place that cannot be rewritten)"
    return steps
