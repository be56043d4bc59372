"""Per-thread dispatch for local quiescence: a function runs its old or its new body depending on the caller.

Theory of operation: during a local migration each patched function keeps its identity (every holder keeps
calling the same object) but its `__code__` is replaced by a small trampoline. The trampoline has exactly
the function's free variables (so the function's closure still fits, as CPython requires) and the same
flavour (plain, generator, coroutine, async generator: `inspect`/`asyncio` checks keep answering the same),
takes `*args, **kwargs`, and forwards them to a `Dispatcher` stored as a constant of the trampoline's own
code (the function's globals belong to the module, so the constant pool is the one private place for it).
The dispatcher calls one of two separate function objects built from the old and the new code; both share
the live function's globals and closure, and each has its own defaults. Recursive calls go through the live
function again, so each call re-decides on the calling thread's generation.

Cost per call of a plain function: one extra Python frame, one `choose()` call and one forwarding call.
While a dispatch is active (one migration or one watch window): `inspect.signature` shows
`(*args, **kwargs)`; a generator or async generator decides its version when it first runs (on the thread
that iterates it), and values sent into an async generator with `asend` are not forwarded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Generator
from functools import cache
from types import CodeType, FunctionType
from typing import Any

__all__ = ["Dispatcher", "make_impl", "make_trampoline"]

_PLACEHOLDER = "__livepatch_dispatcher__"
_GENERATOR, _COROUTINE, _ASYNC_GENERATOR = 0x20, 0x80, 0x200

# The trampoline's body per flavour; DISPATCHER is replaced by the Dispatcher object in the code's constants.
_BODIES = {
    "plain": ("def", "return DISPATCHER.call(args, kwargs)"),
    "generator": ("def", "return (yield from DISPATCHER.call_generator(args, kwargs))"),
    "coroutine": ("async def", "return await DISPATCHER.call_coroutine(args, kwargs)"),
    "async generator": (
        "async def",
        "async for item in DISPATCHER.call_async_generator(args, kwargs):\n            yield item",
    ),
}


def flavour_of(code: CodeType) -> str:
    if code.co_flags & _ASYNC_GENERATOR:
        return "async generator"
    if code.co_flags & _COROUTINE:
        return "coroutine"
    if code.co_flags & _GENERATOR:
        return "generator"
    return "plain"


class Dispatcher:
    """Calls `preferred` when `choose()` is true for the calling thread, else `other`.

    `on_error`, if set, sees every exception (subclasses of Exception) escaping `preferred` (for generators
    and coroutines: escaping while they run) before it propagates; an exception raised by `on_error` itself
    is ignored (the caller must see its own error, not the monitor's). Called from any thread, concurrently;
    holds no lock.
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

    def _report(self, exc: BaseException) -> None:
        if self.on_error is not None:
            try:
                self.on_error(exc)
            except Exception:
                pass

    def call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.choose():
            return self.other(*args, **kwargs)
        if self.on_error is None:
            return self.preferred(*args, **kwargs)
        try:
            return self.preferred(*args, **kwargs)
        except Exception as exc:
            self._report(exc)
            raise

    def call_generator(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Generator[Any, Any, Any]:
        if not self.choose():
            return (yield from self.other(*args, **kwargs))
        try:
            return (yield from self.preferred(*args, **kwargs))
        except Exception as exc:
            self._report(exc)
            raise

    async def call_coroutine(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.choose():
            return await self.other(*args, **kwargs)
        try:
            return await self.preferred(*args, **kwargs)
        except Exception as exc:
            self._report(exc)
            raise

    async def call_async_generator(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        chosen = self.preferred if self.choose() else self.other
        try:
            async for item in chosen(*args, **kwargs):
                yield item
        except Exception as exc:
            if chosen is self.preferred:
                self._report(exc)
            raise


@cache
def _template(freevars: tuple[str, ...], flavour: str) -> CodeType:
    """A trampoline code object with these free variables and flavour (compiled once per pair)."""
    keyword, body = _BODIES[flavour]
    names = ", ".join(freevars)
    # `if 0: a, b` makes the names free variables of `t` (the symbol table sees them) and compiles to
    # nothing, so the trampoline does no work for them.
    src = "def _outer():\n"
    if freevars:
        src += f"    {names} = {', '.join('None' for _ in freevars)}\n"
    src += f"    {keyword} t(*args, **kwargs):\n"
    if freevars:
        src += f"        if 0:\n            {names},\n"
    src += f"        {body.replace('DISPATCHER', repr(_PLACEHOLDER))}\n    return t\n"
    ns: dict[str, Any] = {}
    exec(compile(src, "<livepatch trampoline>", "exec"), ns)
    code: CodeType = ns["_outer"]().__code__
    assert code.co_freevars == freevars and flavour_of(code) == flavour, (
        code.co_freevars,
        freevars,
        flavour,
    )
    return code


def make_trampoline(func: FunctionType, dispatcher: Dispatcher) -> CodeType:
    """A code object for `func` that forwards every call to `dispatcher` (same free variables, same flavour)."""
    template = _template(func.__code__.co_freevars, flavour_of(func.__code__))
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
