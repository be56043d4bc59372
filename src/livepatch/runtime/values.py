"""Staging's checks for a changed module- or class-level value: did anything copy the live value?

Rebinding `m.LIMIT` (or `Cls.LIMIT`) is what a fresh process at the new version would have, provided the
old value lives only there: code that reads `m.LIMIT` / `LIMIT` / `self.LIMIT` at call time then sees the
new value. The differ refuses the copies it can see in the sources (a module-level statement, a default or
a class body that read it, `from m import LIMIT` in another module of the package). Here the live
program is checked, because modules outside the package and code the differ never saw can hold copies:

- any module's namespace binding the very same object (under any name for a mutable object, which only
  a copy can share; under the same name, in the same package, for an immutable value or a definition,
  which unrelated names share by accident: interned ints and strings, re.compile's cached patterns,
  a class and its aliases) -- `from m import LIMIT`;
- for a non-atom, the namespaces of the classes and the default values of the functions of the modules
  of the same top-level package (where a `def f(limit=m.LIMIT)` or `class C: limit = m.LIMIT` would be).

The walk is over module and class namespaces and function defaults, never the whole heap: bounded by
the size of the loaded modules' namespaces. Runs at staging, with nothing paused.

A module-level name that changes kind (an alias `a = b` becoming its own `def a`, a function becoming a
value) is checked harder, by `heap_holders`: the old object (often still bound under another name,
`b`) is looked up in the whole heap with gc.get_referrers, and any referrer but a module namespace (under
another name, or under this name where the patch follows the copy) and the staging code's own frames
and containers refuses it: a command table, a default, a closure, a wrapper, a bound method, a running
generator would keep calling the old object through this name while a fresh process calls the new one,
and it cannot be told whether they took it through this name or the other. Holders the collector does
not see (C objects without traversal) are not found: a limit, documented in docs/patchability.md.
Scalars (numbers, strings, bytes, None) are shared by unrelated code by accident and carry no identity:
for them only the namespace check applies, as for a changed value. O(heap), once, at staging.

A changed container value can also have been *consumed*: kvserver builds its command table at start-up
from each module's `COMMANDS = [command("GET", get_command, ...), ...]`, so the table holds the
Command objects the list's expression built, not the list. Rebinding `COMMANDS` would leave the table
with the old rows. `consumed_elements` compares the live container with a fresh evaluation of the old
expression (staging does that anyway): elements that are not the very same object in both were built
by the expression (a `command(...)` row, not a function it names), and one gc.get_referrers pass over
them finds any holder but the live container itself: the change is then refused.

Both heap searches see the objects a process froze (gc.freeze(): kvserver freezes everything it holds at
start-up, its command table and its data set included): gc.get_referrers searches the collector's
generations only, not the permanent one, so `_referrers` adds the frozen referrers that
livepatch._frozenheap (a small C helper) finds by walking the permanent generation in place. Nothing is
unfrozen or frozen again: freezing again would also freeze whatever was alive at staging time, and the
cyclic garbage it later became would never be collected (a leak per patch). Without the helper (not
built, or another CPython than 3.11) a search while objects are frozen cannot be exact, and the patch is
refused, saying so.
"""

from __future__ import annotations

import gc
import re
import sys
from collections.abc import Collection, Iterable
from types import BuiltinFunctionType, FrameType, FunctionType, ModuleType
from typing import Any

__all__ = ["consumed_elements", "heap_holders", "other_holders"]

# Values that many unrelated names share by accident or by design: interned atoms, immutable values
# built equal in several places (re.compile caches its patterns: two modules compiling the same pattern
# hold the same object), and definitions (a class is held by its own name and its aliases). For these
# only the same name in a module of the same package counts (`from m import NAME`).
_ATOMS = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    tuple,
    frozenset,
    range,
    re.Pattern,
    type,
    FunctionType,
    BuiltinFunctionType,
    ModuleType,
)
_MAX_HOLDERS = 3  # enough to name in a message


def _is_atom(value: Any) -> bool:
    return isinstance(value, _ATOMS)


def other_holders(module: ModuleType, owner: Any, name: str, live: Any) -> list[str]:
    """Where else the live program holds `live`, the value `owner.name` of `module` (at most a few)."""
    atom = _is_atom(live)
    top = module.__name__.partition(".")[0]
    found: list[str] = []
    for mod_name, mod in list(sys.modules.items()):
        if not isinstance(mod, ModuleType):
            continue
        try:
            ns = vars(mod)
        except TypeError:
            continue
        same_package = mod_name == top or mod_name.startswith(top + ".")
        if atom:
            if mod is not module and same_package and ns.get(name, _NOTHING) is live:
                found.append(f"{mod_name}.{name}")
        else:
            found.extend(
                f"{mod_name}.{k}"
                for k, v in list(ns.items())
                if v is live and not (mod is module and owner is module and k == name)
            )
            if same_package:
                found.extend(_in_classes_and_defaults(ns, mod_name, owner, name, live))
        if len(found) >= _MAX_HOLDERS:
            break
    return found[:_MAX_HOLDERS]


_NOTHING = object()


def _in_classes_and_defaults(
    ns: dict[str, Any], mod_name: str, owner: Any, name: str, live: Any
) -> list[str]:
    found: list[str] = []
    for k, v in list(ns.items()):
        if isinstance(v, type) and v.__module__ == mod_name:
            for ck, cv in list(vars(v).items()):
                if cv is live and not (v is owner and ck == name):
                    found.append(f"{mod_name}.{k}.{ck}")
                func = getattr(cv, "__func__", cv)
                if isinstance(func, FunctionType) and _in_defaults(func, live):
                    found.append(f"the defaults of {mod_name}.{k}.{ck}")
        elif isinstance(v, FunctionType) and _in_defaults(v, live):
            found.append(f"the defaults of {mod_name}.{k}")
    return found


def _in_defaults(func: FunctionType, live: Any) -> bool:
    return any(d is live for d in func.__defaults__ or ()) or any(
        d is live for d in (func.__kwdefaults__ or {}).values()
    )


_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS = (dict, list, tuple, set, frozenset)
_KEEP_LIMIT = 100_000  # containers of the staging code's own state walked at most


def heap_holders(
    module: ModuleType,
    live: Any,
    name: str,
    followed: Collection[tuple[str, str]],
    keep: Iterable[Any] = (),
) -> list[str]:
    """What in the heap refers to `live`, the object `module.name` is bound to, other than module
    namespaces binding it under another name (or under `name` in `module` itself or in a copy the patch
    follows: `followed` (module, name) pairs), the calling thread's frames, and the containers
    reachable from `keep` (the stager's own state). At most a few, described.

    Garbage counts as a holder until the collector frees it, and an earlier refused staging leaves some (its
    exception's traceback keeps the frames and their bind operations, which hold the live objects, in a
    cycle). So a holder found is confirmed after one full collection: the cost falls on a patch about to be
    refused, never on one that stages cleanly."""
    if isinstance(live, _SCALARS):
        return []
    try:
        found = _heap_holders(module, live, name, followed, keep)
        if found:
            gc.collect()
            found = _heap_holders(module, live, name, followed, keep)
    except _Unsearchable:
        return [UNSEARCHABLE]
    return found


try:
    from livepatch import _frozenheap
except ImportError:  # the optional C helper was not built (setup.py)
    _frozenheap = None

# what a search reports when objects are frozen and the helper is missing: the patch is refused
UNSEARCHABLE = (
    "the objects gc.freeze() froze, which this build cannot search (livepatch._frozenheap is not "
    "built for this interpreter)"
)


class _Unsearchable(Exception):
    """Objects are frozen and livepatch._frozenheap is missing: no exact search."""


def _referrers(objs: tuple[Any, ...]) -> list[Any]:
    """gc.get_referrers(*objs), the frozen objects included (see the module docstring). `objs` is one
    tuple, passed on as is, so that the only container of the arguments is the one skipped."""
    found = [r for r in gc.get_referrers(*objs) if r is not objs]  # not this call's own arguments
    if gc.get_freeze_count():
        if _frozenheap is None:
            raise _Unsearchable
        found.extend(_frozenheap.referrers(*objs))
    return found


def _heap_holders(
    module: ModuleType,
    live: Any,
    name: str,
    followed: Collection[tuple[str, str]],
    keep: Iterable[Any],
) -> list[str]:
    own = _reachable_containers(keep)
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        own.add(id(frame))
        frame = frame.f_back
    module_dicts: dict[int, str] = {}
    for mod_name, mod in list(sys.modules.items()):
        if isinstance(mod, ModuleType):
            try:
                module_dicts[id(vars(mod))] = mod_name
            except TypeError:
                continue
    found: list[str] = []
    for r in _referrers((live,)):
        if id(r) in own:
            continue
        in_module = module_dicts.get(id(r))
        if in_module is not None:
            if (
                r.get(name, _NOTHING) is live
                and in_module != module.__name__
                and (in_module, name) not in followed
            ):
                found.append(f"{in_module}.{name}")
            continue
        found.append(_describe(r))
        if len(found) >= _MAX_HOLDERS:
            break
    return found


def _reachable_containers(roots: Iterable[Any]) -> set[int]:
    """ids of the objects' __dict__s and the plain containers reachable from them (bounded)."""
    seen: set[int] = set()
    todo: list[Any] = []
    for root in roots:
        d = getattr(root, "__dict__", None)
        todo.append(d if d is not None else root)
    while todo and len(seen) < _KEEP_LIMIT:
        obj = todo.pop()
        if id(obj) in seen or not isinstance(obj, _CONTAINERS):
            continue
        seen.add(id(obj))
        items = obj.values() if isinstance(obj, dict) else obj
        for item in list(items):
            if isinstance(item, _CONTAINERS):
                todo.append(item)
            else:
                inner = getattr(item, "__dict__", None)
                if isinstance(inner, dict) and not isinstance(item, ModuleType | type):
                    todo.append(inner)
    return seen


def _describe(r: Any) -> str:
    if isinstance(r, FrameType):
        return f"a running frame of {r.f_code.co_qualname}"
    if isinstance(r, dict):
        return "a dict (a table, or an object's attributes)"
    return f"a {type(r).__name__} object"


def consumed_elements(live: Any, fresh: Any) -> str:
    """Holders, other than `live` itself, of the elements of the container `live` that its expression
    built (not identical in `fresh`, a new evaluation of the same expression); "" when none."""
    if isinstance(live, dict) and isinstance(fresh, dict):
        pairs = [(v, fresh.get(k, _NOTHING)) for k, v in list(live.items())]
    elif isinstance(live, list | tuple) and type(live) is type(fresh) and len(live) == len(fresh):
        pairs = list(zip(live, fresh, strict=True))
    else:
        return ""
    built = [old for old, new in pairs if old is not new and not _plain(old) and gc.is_tracked(old)]
    if not built:
        return ""
    own = {id(live), id(fresh), id(pairs), id(built)}
    frame: FrameType | None = sys._getframe()
    while frame is not None:
        own.add(id(frame))
        frame = frame.f_back
    try:
        referrers = _referrers(tuple(built))
    except _Unsearchable:
        return f"{', '.join(sorted({type(o).__name__ for o in built}))} objects, maybe held by {UNSEARCHABLE}"
    found = [r for r in referrers if id(r) not in own and not _is_pair(r, pairs)]
    if not found:
        return ""
    kinds = sorted({type(o).__name__ for o in built})
    return f"{', '.join(kinds)} objects, held by {_describe(found[0])}"


def _is_pair(r: Any, pairs: list[tuple[Any, Any]]) -> bool:
    """The (old, new) tuples consumed_elements built itself."""
    return isinstance(r, tuple) and len(r) == 2 and any(r is p for p in pairs)


def _plain(value: Any) -> bool:
    """A scalar, or a tuple/frozenset of plain values: no identity anyone could rely on."""
    if isinstance(value, _SCALARS):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_plain(v) for v in value)
    return False
