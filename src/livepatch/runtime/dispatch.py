"""Per-thread dispatch for local quiescence: a function runs its old or its new body depending on the caller.

Theory of operation: during a local migration each patched function keeps its identity (every holder keeps
calling the same object) but its `__code__` is replaced by a small trampoline. The trampoline has exactly
the function's free variables (so the function's closure still fits, as CPython requires), takes
`*args, **kwargs`, and forwards them to a `Dispatcher` stored as a constant of the trampoline's own code
(the function's globals belong to the module, so the constant pool is the one private place to keep it).
The dispatcher calls one of two separate function objects built from the old and the new code; both share
the live function's globals and closure, and each has its own defaults. Recursive calls go through the live
function again, so each call re-decides on the calling thread's generation.

Cost per call: one extra Python frame, one `use_new()` call and one forwarding call. Limitations while a
dispatch is active (it lasts one migration or one watch window): `inspect.signature` shows `(*args,
**kwargs)`, and for generator and coroutine functions `on_error` sees only errors raised while creating the
generator or coroutine, not those raised while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from types import CodeType, FunctionType
from typing import Any

__all__ = ["Dispatcher", "make_impl", "make_trampoline"]

_PLACEHOLDER = "__livepatch_dispatcher__"


class Dispatcher:
    """Calls `preferred` when `choose()` is true for the calling thread, else `other`.

    `on_error`, if set, sees every exception escaping `preferred` before it propagates; an exception
    raised by `on_error` itself is ignored (the caller must see its own error, not the monitor's).
    Called from any thread, concurrently; holds no lock.
    """

    __slots__ = ("choose", "on_error", "other", "preferred")

    def __init__(
        self,
        preferred: Callable[..., Any],
        other: Callable[..., Any],
        choose: Callable[[], bool],
        on_error: Callable[[BaseException], None] | None,
    ) -> None:
        self.preferred = preferred
        self.other = other
        self.choose = choose
        self.on_error = on_error

    def dispatch(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.choose():
            return self.other(*args, **kwargs)
        if self.on_error is None:
            return self.preferred(*args, **kwargs)
        try:
            return self.preferred(*args, **kwargs)
        except BaseException as exc:
            try:
                self.on_error(exc)
            except Exception:
                pass
            raise


@cache
def _template(freevars: tuple[str, ...]) -> CodeType:
    """A trampoline code object with these free variables (compiled once per distinct tuple)."""
    names = ", ".join(freevars)
    # `if 0: a, b` makes the names free variables of `t` (the symbol table sees them) and compiles to
    # nothing, so the trampoline does no work for them.
    src = "def _outer():\n"
    if freevars:
        src += f"    {names} = {', '.join('None' for _ in freevars)}\n"
    src += "    def t(*args, **kwargs):\n"
    if freevars:
        src += f"        if 0:\n            {names},\n"
    src += f"        return {_PLACEHOLDER!r}.dispatch(args, kwargs)\n    return t\n"
    ns: dict[str, Any] = {}
    exec(compile(src, "<livepatch trampoline>", "exec"), ns)
    code: CodeType = ns["_outer"]().__code__
    assert code.co_freevars == freevars, (code.co_freevars, freevars)
    return code


def make_trampoline(func: FunctionType, dispatcher: Dispatcher) -> CodeType:
    """A code object for `func` that forwards every call to `dispatcher` (same free variables)."""
    template = _template(func.__code__.co_freevars)
    consts = tuple(dispatcher if c == _PLACEHOLDER else c for c in template.co_consts)
    return template.replace(
        co_consts=consts,
        co_name=func.__code__.co_name,
        co_qualname=func.__code__.co_qualname,
        co_filename=func.__code__.co_filename,
    )


def make_impl(
    func: FunctionType,
    code: CodeType,
    defaults: tuple[Any, ...] | None,
    kwdefaults: dict[str, Any] | None,
) -> FunctionType:
    """A separate function object running `code` with `func`'s globals and closure and the given defaults."""
    impl = FunctionType(code, func.__globals__, func.__name__, defaults, func.__closure__)
    impl.__kwdefaults__ = dict(kwdefaults) if kwdefaults is not None else None
    impl.__qualname__ = func.__qualname__
    impl.__module__ = func.__module__
    return impl
