"""Find the live objects a patch targets, through module and class namespaces only.

Theory of operation: a target is named by its module and a dotted qualname (`Store.get`,
`Outer.Inner.method`, `Store.size.fget`). The owner is found by walking `sys.modules[module]` and then the
`__dict__` of each class on the path (never `getattr`, so no descriptor or `__getattr__` runs). The bound
object is then unwrapped until a plain function whose `co_qualname` is the target's turns up:
static/class methods (`__func__`), property accessors (`fget`/`fset`/`fdel`), `functools.wraps`
decorators (`__wrapped__`), `functools.partial` / `cached_property` (`func`), click commands
(`callback`), and decorators written without `functools.wraps`, whose wrapper keeps the original in a
closure cell. The cost is proportional to the number of targets and the depth of their wrapping, never
to the size of the heap (no gc walk).
"""

from __future__ import annotations

import sys
from types import FunctionType, MethodType, ModuleType
from typing import Any

__all__ = ["ResolveError", "find_function", "live_module", "resolve_function", "resolve_owner"]

_MAX_DEPTH = 8  # wrappers of wrappers deeper than this are not followed


class ResolveError(LookupError):
    """A target is not where the patch expects it; the message says what was missing."""


def live_module(name: str) -> ModuleType:
    mod = sys.modules.get(name)
    if mod is None:
        raise ResolveError(f"module {name} is not loaded in this process")
    return mod


def resolve_owner(module: ModuleType, owner: str) -> Any:
    """The namespace owner (module or class) named by a dotted class path ("" for the module)."""
    obj: Any = module
    if not owner:
        return obj
    walked = []
    for part in owner.split("."):
        walked.append(part)
        ns = vars(obj)
        if part not in ns:
            raise ResolveError(
                f"{module.__name__}:{'.'.join(walked)} does not exist in the live module"
            )
        obj = ns[part]
        if not isinstance(obj, type):
            raise ResolveError(
                f"{module.__name__}:{'.'.join(walked)} is a {type(obj).__name__}, not a class"
            )
    return obj


def _children(obj: Any) -> list[Any]:
    """Objects an unwrapping step may lead to, most specific first."""
    out: list[Any] = []
    if isinstance(obj, staticmethod | classmethod | MethodType):
        out.append(obj.__func__)
    elif isinstance(obj, property):
        out.extend(f for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
    if isinstance(obj, FunctionType):
        wrapped = obj.__dict__.get("__wrapped__")
        if wrapped is not None:
            out.append(wrapped)
        # a decorator without functools.wraps: the original lives in the wrapper's closure
        for cell in obj.__closure__ or ():
            try:
                out.append(cell.cell_contents)
            except ValueError:  # an empty cell
                continue
    elif not isinstance(obj, type | ModuleType):
        for attr in ("__wrapped__", "func", "__func__", "callback"):  # callback: click commands
            try:
                child = getattr(obj, attr, None)
            except Exception:  # a hostile __getattr__ must not break resolution
                child = None
            if child is not None:
                out.append(child)
    return out


def find_function(obj: Any, code_qualname: str) -> FunctionType | None:
    """The plain function reachable from `obj` (itself or by unwrapping) whose code is `code_qualname`."""
    seen: set[int] = set()
    level = [obj]
    for _ in range(_MAX_DEPTH):
        nxt: list[Any] = []
        for item in level:
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, FunctionType) and item.__code__.co_qualname == code_qualname:
                return item
            nxt.extend(_children(item))
        if not nxt:
            return None
        level = nxt
    return None


def resolve_function(
    module: ModuleType, owner: str, name: str, code_qualname: str, accessor: str | None
) -> FunctionType:
    """The live function object for one function-like target; ResolveError when it is not there."""
    holder = resolve_owner(module, owner)
    ns = vars(holder)
    where = f"{module.__name__}:{owner + '.' if owner else ''}{name}"
    if name not in ns:
        raise ResolveError(f"{where} does not exist in the live module")
    obj = ns[name]
    if accessor is not None:
        if not isinstance(obj, property):
            raise ResolveError(f"{where} is a {type(obj).__name__}, not a property")
        obj = getattr(obj, accessor)
        if obj is None:
            raise ResolveError(f"{where} has no {accessor} in the live module")
    fn = find_function(obj, code_qualname)
    if fn is None:
        raise ResolveError(
            f"{where} is a {type(obj).__name__} in which no function named {code_qualname} could be found"
            " (decorators must keep the original in __wrapped__ or in their closure)"
        )
    return fn
