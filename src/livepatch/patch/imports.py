"""Who imports what inside a package: the cross-module part of the differ's rules, from sources only.

Two questions need the other modules of the package (the old version's, as the live server loaded them):

- Did another module copy a module-level value by name (`from m import LIMIT`, or `from m import *` for a
  public name) while it was imported? Then changing `m.LIMIT` would leave that copy with the old value:
  the patch rebinds the copy too (a "follow" import, checked and built by staging after `m`), and the
  importer's own values computed from it are evaluated again, as a fresh process would.
- What does `from m import *` bind? Only what a literal `__all__` of `m` lists is known from the
  sources (a module without one exports every public name it has, its own imports included): used to
  tell that reordering star imports changes no binding (their exports are disjoint).
- Do two import statements bind the same object (`from a import X` -> `from b import X` where `b` got
  `X` from `a`)? Each side is followed through the package's re-exports (`from .a import X` in `b`) to
  where the name comes from; same origin, same object. The differ accepts such a change and staging
  checks the live object (an import resolving to another object is refused there).

Sources are parsed, never run. Only imports executed at import time count (module level, if/try blocks,
class bodies); imports inside functions run at call time and read the current value.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping

from livepatch.patch.walk import all_statements, from_imports

__all__ = ["PackageImports"]

_FROM = re.compile(r"^from (\.*)(\S*) import (\S+)$")
_MAX_HOPS = 8  # re-exports of re-exports deeper than this are not followed


class PackageImports:
    """The import-time `from ... import` statements of every module of one package version."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.modules = set(sources)
        self.packages = {
            m for m in sources if any(o.startswith(m + ".") for o in sources)
        }  # modules that are packages (an __init__): relative imports start from them
        self._imports: dict[str, list[tuple[int, str, str, str]]] = {}
        # each module parsed once (None: it does not compile; the differ reports the module's own problem)
        self._trees: dict[str, ast.Module | None] = {}
        for name, source in sources.items():
            try:
                self._trees[name] = ast.parse(source)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                self._trees[name] = None
            tree = self._trees[name]
            self._imports[name] = from_imports(tree) if tree is not None else []

    def absolute(self, importer: str, level: int, module: str) -> str:
        """The absolute name of `from {'.' * level}{module} import ...` written in `importer`."""
        if level == 0:
            return module
        base = importer if importer in self.packages else importer.rpartition(".")[0]
        for _ in range(level - 1):
            base = base.rpartition(".")[0]
        return f"{base}.{module}" if module else base

    def imported_by(self, module: str) -> dict[str, list[tuple[str, str]]]:
        """name -> (importer, the name it binds) for the other modules that import it from `module` by
        name; "*" -> the star importers."""
        out: dict[str, list[tuple[str, str]]] = {}
        for importer, imports in sorted(self._imports.items()):
            if importer == module:
                continue
            for level, source, name, bound in imports:
                if self.absolute(importer, level, source) == module:
                    out.setdefault(name, []).append((importer, bound))
        return out

    def star_exports(self, importer: str, level: int, module: str) -> frozenset[str] | None:
        """The names `from {'.' * level}{module} import *` in `importer` binds, when the module is in
        the package and binds `__all__` once, at its top level, to a literal list or tuple of strings;
        else None (not known from the sources)."""
        tree = self._trees.get(self.absolute(importer, level, module))
        if tree is None:
            return None
        found: list[ast.expr | None] = []
        for node in ast.walk(tree):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AugAssign | ast.AnnAssign)
                else []
            )
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "__all__"
            ):
                return None  # `__all__.append(...)`, `.extend`: changed in place
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                top = node in tree.body and isinstance(node, ast.Assign | ast.AnnAssign)
                found.append(node.value if top and isinstance(node, ast.Assign) else None)
        if len(found) != 1 or not isinstance(found[0], ast.List | ast.Tuple):
            return None
        names = [e.value if isinstance(e, ast.Constant) else None for e in found[0].elts]
        if not all(isinstance(n, str) for n in names):
            return None
        return frozenset(n for n in names if isinstance(n, str))

    def all_source(self, importer: str, level: int, module: str) -> str | None:
        """What decides the names `from {'.' * level}{module} import *` in `importer` binds, as text to
        compare between versions (walk.all_statements): None when the module is not in the package, does
        not compile or has no `__all__` built by top-level statements alone."""
        tree = self._trees.get(self.absolute(importer, level, module))
        return all_statements(tree) if tree is not None else None

    def constant_value(self, importer: str, text: str) -> str | None:
        """For `from M import N` (walk's import text) in `importer`: where N really comes from
        (following re-exports), when that module binds it once, at its top level, to a pure literal of
        immutable constants (a str, bytes, number, None or bool; a tuple of them; `frozenset({...})` of
        them): the expression's AST dump. None otherwise."""
        m = _FROM.match(text)
        if m is None:
            return None
        where, name = self.origin(importer, len(m[1]), m[2], m[3])
        tree = self._trees.get(where)
        if tree is None:
            return None
        found: list[ast.expr] = []
        for node in ast.walk(tree):
            stored = {
                t.id
                for t in ast.walk(node)
                if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)
            }
            if isinstance(node, ast.stmt) and (name in stored or "frozenset" in stored):
                if isinstance(node, ast.Assign) and node in tree.body and len(node.targets) == 1:
                    found.append(node.value)
                else:
                    return None  # bound otherwise (a loop, a block, `+=`), or frozenset rebound
            elif (
                isinstance(node, ast.alias) and (node.asname or node.name) in (name, "frozenset")
            ) or (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and node.name in (name, "frozenset")
            ):
                return None
        if len(found) != 1 or not _pure_constant(found[0]):
            return None
        return ast.dump(found[0])

    def origin(self, importer: str, level: int, module: str, name: str) -> tuple[str, str]:
        """Where `name` imported from that module really comes from, following re-exports."""
        where = self.absolute(importer, level, module)
        for _ in range(_MAX_HOPS):
            if where not in self._imports:
                break
            hop = next(((lv, src, n) for lv, src, n, b in self._imports[where] if b == name), None)
            if hop is None:
                break
            where, name = self.absolute(where, hop[0], hop[1]), hop[2]
        return where, name

    def same_object(self, importer: str, old: str, new: str) -> bool:
        """Whether two `from M import N` descriptions (walk's import texts) bind the same object."""
        a, b = _FROM.match(old), _FROM.match(new)
        if a is None or b is None:
            return False
        return self.origin(importer, len(a[1]), a[2], a[3]) == self.origin(
            importer, len(b[1]), b[2], b[3]
        )


def _pure_constant(e: ast.expr) -> bool:
    """A literal that always builds an equal immutable object: constants, tuples of them,
    `frozenset(<set, list or tuple of them>)` (the module must not rebind `frozenset`)."""
    if isinstance(e, ast.Constant):
        return True
    if isinstance(e, ast.Tuple):
        return all(_pure_constant(x) for x in e.elts)
    return (
        isinstance(e, ast.Call)
        and isinstance(e.func, ast.Name)
        and e.func.id == "frozenset"
        and not e.keywords
        and len(e.args) <= 1
        and all(
            isinstance(a, ast.Set | ast.List | ast.Tuple) and all(_pure_constant(x) for x in a.elts)
            for a in e.args
        )
    )
