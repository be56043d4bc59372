"""Class-level values of a class that a module-level if/try block defines again (issue 13, session 10).

Theory of operation. Staging runs a changed block again in the live module and patches a class it
defines *in place* (runtime/staging.py, `patch_class_in_place`): the live class object stays (instances,
subclasses and every holder keep it), its functions get the new code. Until session 10 any other
difference in the class body was refused by the differ (`walk.class_shape` had to match an old shape).
waitress 50c66211a6 moves `UnixWSGIServer` into `if hasattr(socket, "AF_UNIX"):` and turns its
getter-only property `family` into a class constant `family = socket.AF_UNIX`; a fresh process has the
constant on the class.

This module decides, from the two sources only, which class-level names may be rebound on the live
class, and what the live attribute must be for that to be what the old version left there. The rules
are those of top-level classes (docs/patchability.md, "Values"), narrowed to what a block's class
allows:

- the class has exactly one old definition of that name (top level or in a changed block): with two
  (`if posix: class X ... else: class X ...`) it is not known which one the live class is;
- bases, keywords and decorators are the same, and every class-body statement other than defs and
  plain `NAME = expr` assignments is the same;
- a changed name is bound once by a plain assignment in the new body, and in the old body either not
  at all (added), by one plain assignment (changed value), or by an undecorated getter-only
  `@property def NAME` (a property becoming a value: no instance can have set `NAME` through the
  property, so no instance attribute is hidden or revealed by the change);
- no statement that runs at import time in either version (module level, class bodies, defaults and
  decorators: everything but function bodies) reads the name, except its own assignment: such a
  reader would hold the old value (a top-level class's value with a reader is refused the same way);
- not class machinery (`__slots__`, dunder names): those are layout, not values;
- a value the new body drops, or a value that becomes a def, is refused (the live class would keep
  it, or the def would be patched over a non-function).

What the live attribute must be is checked at staging, as for top-level classes: the value the old
expression evaluates to in the live class namespace (equal and of the same type, or the very object),
or a `property` without setter and deleter whose getter is the old one (by fingerprint when the old
class was at top level). And the new value must be an immutable constant (str, bytes, numbers,
None, tuples of them): a value built by the new class body that holds objects (a function of the new
class, a list) would not be the live class's own, so it stays refused. The rules are written into
the BLOCK target's `old_value` as JSON (`encode`): {class name: {attribute: [how, detail]}}, how one of
"added", "value" (detail: the old expression's source), "property" (detail: the old getter's
fingerprint, or "").
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping

__all__ = ["block_class_values", "decode", "encode"]

ADDED, VALUE, PROPERTY = "added", "value", "property"


def _plain_assign(stmt: ast.stmt) -> str | None:
    """NAME of `NAME = expr` / `NAME: T = expr` (one plain name target), else None."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target = stmt.targets[0]
        return target.id if isinstance(target, ast.Name) else None
    if isinstance(stmt, ast.AnnAssign) and stmt.value is not None and stmt.simple:
        return stmt.target.id if isinstance(stmt.target, ast.Name) else None
    return None


def _getter_only_property(stmts: list[ast.stmt]) -> bool:
    """The statements binding a name are one `@property def NAME(self)` and nothing else."""
    if len(stmts) != 1 or not isinstance(stmts[0], ast.FunctionDef):
        return False
    deco = stmts[0].decorator_list
    return len(deco) == 1 and isinstance(deco[0], ast.Name) and deco[0].id == "property"


def _members(cls: ast.ClassDef) -> tuple[dict[str, list[ast.stmt]], list[str]]:
    """Name -> the statements of the class body binding it (defs and plain assignments), and the dumps
    of every other statement (the docstring left out)."""
    bound: dict[str, list[ast.stmt]] = {}
    other: list[str] = []
    body = cls.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            bound.setdefault(stmt.name, []).append(stmt)
            continue
        name = _plain_assign(stmt)
        if name is None:
            other.append(ast.dump(stmt))
        else:
            bound.setdefault(name, []).append(stmt)
    return bound, other


def _import_time_names(trees: Iterable[ast.AST]) -> dict[str, int]:
    """How often each name is read, as a variable or as an attribute, by code that runs at import time
    (everything but the bodies of functions and lambdas; their defaults and decorators do run)."""
    counts: dict[str, int] = {}

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for part in [*node.decorator_list, *node.args.defaults, *node.args.kw_defaults]:
                if part is not None:
                    visit(part)
            return
        if isinstance(node, ast.Lambda):
            for part in [*node.args.defaults, *node.args.kw_defaults]:
                if part is not None:
                    visit(part)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            counts[node.id] = counts.get(node.id, 0) + 1
        elif isinstance(node, ast.Attribute):
            counts[node.attr] = counts.get(node.attr, 0) + 1
        for child in ast.iter_child_nodes(node):
            visit(child)

    for tree in trees:
        visit(tree)
    return counts


def block_class_values(
    new: ast.ClassDef,
    olds: list[ast.ClassDef],
    modules: tuple[ast.AST, ast.AST],
    getters: Mapping[str, str] | None = None,
) -> dict[str, list[str]] | None:
    """The class-level names of `new` (a class a changed block defines) that staging may rebind on the
    live class, with what the live attribute must be ({name: [how, detail]}); None when the class
    differs from its one old definition `olds[0]` in any other way (see the module docstring).
    `modules`: the old and the new module trees (for import-time readers). `getters`: property name ->
    the old getter's fingerprint, when the old class is at top level (the walk has its code)."""
    if len(olds) != 1:
        return None
    old = olds[0]
    for part in ("bases", "keywords", "decorator_list"):
        if ast.dump(ast.List(getattr(old, part))) != ast.dump(ast.List(getattr(new, part))):
            return None
    old_bound, old_other = _members(old)
    new_bound, new_other = _members(new)
    if old_other != new_other:
        return None
    readers = _import_time_names(modules)
    rules: dict[str, list[str]] = {}
    for name, stmts in new_bound.items():
        before = old_bound.get(name, [])
        values = [s for s in stmts if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)]
        if not values:
            if any(_plain_assign(s) for s in before):
                return None  # a value becoming a def: the def would be patched over a non-function
            continue  # defs: patched in place by staging
        if len(stmts) != 1:
            return None  # bound twice in the new body
        if (
            len(before) == 1
            and _plain_assign(before[0])
            and ast.dump(before[0]) == ast.dump(stmts[0])
        ):
            continue  # unchanged
        if name.startswith("__") or readers.get(name, 0):
            return None  # class machinery, or read while the module or a class body ran
        if not before:
            rules[name] = [ADDED, ""]
        elif len(before) == 1 and _plain_assign(before[0]):
            rules[name] = [VALUE, ast.unparse(_value_of(before[0]))]
        elif _getter_only_property(before):
            rules[name] = [PROPERTY, (getters or {}).get(name, "")]
        else:
            return None
    for name, stmts in old_bound.items():
        if name not in new_bound and any(_plain_assign(s) for s in stmts):
            return None  # a value the new body drops: the live class would keep it
    return rules


def _value_of(stmt: ast.stmt) -> ast.expr:
    assert isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None
    return stmt.value


def encode(rules: Mapping[str, Mapping[str, list[str]]]) -> str | None:
    """The BLOCK target's old_value: None when no class of the block has a value to rebind."""
    kept = {cls: dict(r) for cls, r in rules.items() if r}
    return json.dumps(kept, sort_keys=True) if kept else None


def decode(text: str | None) -> dict[str, dict[str, list[str]]]:
    """What encode wrote; {} for None. ValueError when it is not that shape (a corrupt patch)."""
    if text is None:
        return {}
    raw = json.loads(text)
    if not isinstance(raw, dict) or not all(
        isinstance(c, str)
        and isinstance(r, dict)
        and all(
            isinstance(a, str)
            and isinstance(v, list)
            and len(v) == 2
            and v[0] in (ADDED, VALUE, PROPERTY)
            and isinstance(v[1], str)
            for a, v in r.items()
        )
        for c, r in raw.items()
    ):
        raise ValueError("a block's class values are not {class: {attribute: [how, detail]}}")
    return raw
