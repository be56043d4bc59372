"""Patchability rules: which live definition may be replaced by which new one, as pure functions over code
objects and AST nodes. The one home of these rules: the differ (diff.py) turns each problem into a
`Refusal` when it builds a patch, and the stager (runtime/staging.py) refuses the same problems when a
patch reaches a live server without them (a hand-made or tampered spec), with the same texts.
docs/patchability.md lists every refusal for users.

- Definition kinds: FUNCTION_KINDS are replaced by swapping their code objects; classes and imports are
  bound, never swapped.
- Closures: a function's free variables are part of its calling convention (the cells CPython passes):
  the new code must close over exactly the same names.
- Flavour: a plain function, a generator, a coroutine and an async generator are called differently;
  a function may not change flavour (callers holding it expect the old one).
- Fresh objects: a default written as a container display or a call builds a fresh object at definition
  time; the live function's object is its static state, carried over, never rebuilt.

Nothing here executes code or reads live state beyond the objects it is given.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from types import CodeType

from livepatch.patch.model import DefinitionKind, RefusalKind

__all__ = [
    "FRESH_OBJECT_NODES",
    "FUNCTION_KINDS",
    "KIND_FLAGS",
    "Problem",
    "builds_fresh_object",
    "flavour",
    "replacement_problems",
]

# Definitions replaced by swapping their code object (everything else is bound: classes, imports).
FUNCTION_KINDS = frozenset(
    {
        DefinitionKind.FUNCTION,
        DefinitionKind.METHOD,
        DefinitionKind.STATICMETHOD,
        DefinitionKind.CLASSMETHOD,
        DefinitionKind.PROPERTY,
    }
)

# CO_GENERATOR, CO_COROUTINE, CO_ITERABLE_COROUTINE, CO_ASYNC_GENERATOR: what calling the function gives.
KIND_FLAGS = 0x20 | 0x80 | 0x100 | 0x200

# A default written as a container display or a call builds a fresh object: a function's static state.
FRESH_OBJECT_NODES = (
    ast.List,
    ast.Dict,
    ast.Set,
    ast.Call,
    ast.ListComp,
    ast.DictComp,
    ast.SetComp,
)


@dataclass(frozen=True)
class Problem:
    """Why a replacement is not patchable, and how to make it so (a Refusal without its module)."""

    kind: RefusalKind
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.reason} (fix: {self.fix})"


def flavour(flags: int) -> str:
    """What calling a function with these code flags gives: a plain call, a generator, a coroutine..."""
    if flags & 0x200:
        return "an async generator"
    if flags & 0x80:
        return "a coroutine function"
    if flags & 0x20:
        return "a generator"
    return "a plain function"


def replacement_problems(qualname: str, old: CodeType, new: CodeType) -> list[Problem]:
    """The closure and flavour rules for replacing the code `old` of `qualname` by `new`."""
    problems: list[Problem] = []
    if old.co_freevars != new.co_freevars:
        problems.append(
            Problem(
                RefusalKind.CLOSURE,
                f"Cannot replace closure `{qualname}` because its free variables changed: "
                f"{old.co_freevars} -> {new.co_freevars}",
                "keep the same free variables (for a method: use super()/__class__ in both versions or "
                "in neither), or add a new function under another name and call it",
            )
        )
    if (old.co_flags & KIND_FLAGS) != (new.co_flags & KIND_FLAGS):
        problems.append(
            Problem(
                RefusalKind.FLAVOUR,
                f"Cannot replace `{qualname}`: it turns from {flavour(old.co_flags)} into "
                f"{flavour(new.co_flags)}, which callers holding it do not expect",
                "keep it what it was and add a new function under another name that the callers use",
            )
        )
    return problems


def builds_fresh_object(expr: ast.expr) -> bool:
    """Whether a default expression builds a fresh object each time it is evaluated."""
    return isinstance(expr, FRESH_OBJECT_NODES)
