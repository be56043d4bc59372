"""Which of a patch's new functions the follower has run yet, at no cost per request.

Theory of operation
-------------------
Promotion waits until every function the patch changed has run at least once in the follower (or a
timeout). A profile hook (sys.setprofile) would see every Python call of the replay: it made the follower
4-6x slower, so it fell behind any busy leader for as long as one changed function was not exercised.

Instead each changed function gets a *tripwire*: its `__code__` is replaced by the code of a small
wrapper that, on the first call, puts the real code back, records the hit and calls the function (now
its real self) with the same arguments. Until then the wrapper costs one extra call on that function
only; afterwards nothing at all. Function objects keep their identity (tables holding them, e.g.
kvserver's dispatch rows, stay right), and so do defaults, closures (the wrapper is built with the same
number of free variables, as `__code__` assignment requires) and `__class__` for `super()` (the real
code runs in its own frame). The follower is single-threaded, so the swap needs no lock. `disarm()`
puts every remaining real code back (the hand-over: the promoted process keeps no wrapper).
"""

from __future__ import annotations

import sys
from types import CodeType, FunctionType
from typing import Any

_GLOBAL = "__livepatch_mve_tripwire__"  # one name in each patched module's globals, while armed


def functions_of(staged: Any) -> list[FunctionType]:
    """The live function objects of the patch's targets (module:qualname), after swap_in."""
    found: list[FunctionType] = []
    for target in staged.targets:
        module_name, _, qualname = target.partition(":")
        obj: Any = sys.modules.get(module_name)
        for part in qualname.split("."):
            if obj is None:
                break
            obj = getattr(obj, part, None)
        obj = getattr(obj, "__func__", obj)  # classmethod / staticmethod seen through the class
        if isinstance(obj, FunctionType):
            found.append(obj)
    return found


def _wrapper_code(nfree: int, key: int) -> CodeType:
    """A code object `(*args, **kwargs)` with `nfree` free variables that trips wire `key`."""
    names = [f"_lp_free{i}" for i in range(nfree)]
    lines = ["def _outer():"]
    if names:
        lines.append("    " + " = ".join(names) + " = None")
    lines.append("    def _lp_tripwire(*args, **kwargs):")
    if names:
        lines.append(
            "        (" + ", ".join(names) + ",)"
        )  # makes them free variables of the wrapper
    lines.append(f"        return {_GLOBAL}({key})(*args, **kwargs)")
    lines.append("    return _lp_tripwire")
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), "<livepatch tripwire>", "exec"), namespace)
    code: CodeType = namespace["_outer"]().__code__
    return code


class Coverage:
    """Tripwires on `functions`; `uncovered()` names those not run yet. Follower (one thread) only."""

    def __init__(self, functions: list[FunctionType]) -> None:
        self._armed: dict[int, tuple[FunctionType, CodeType]] = {}
        self._namespaces: list[dict[str, Any]] = []
        for fn in functions:
            key = id(fn)
            if key in self._armed:
                continue
            real = fn.__code__
            self._armed[key] = (fn, real)
            if _GLOBAL not in fn.__globals__:
                self._namespaces.append(fn.__globals__)
            fn.__globals__[_GLOBAL] = self._hit
            fn.__code__ = _wrapper_code(len(real.co_freevars), key)
        self._names = {key: real.co_qualname for key, (_, real) in self._armed.items()}

    def _hit(self, key: int) -> FunctionType:
        fn, real = self._armed.pop(key)
        fn.__code__ = real
        return fn

    def uncovered(self) -> list[str]:
        return sorted(self._names[key] for key in self._armed)

    def disarm(self) -> None:
        for fn, real in self._armed.values():
            fn.__code__ = real
        self._armed.clear()
        for namespace in self._namespaces:
            namespace.pop(_GLOBAL, None)
        self._namespaces.clear()
