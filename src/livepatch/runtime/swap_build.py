"""Building what a patch adds, in the live namespaces: new definitions, new modules, new default values.

Theory of operation: staging must create objects exactly as the new version's `def`/`class`/`import`
statements would have, but inside the running program and without running anything else. Top-level
statements are compiled alone (with the module's `from __future__` imports) and executed with the live
module's dict as globals and a private dict as locals, so nothing is bound until the swap. Members of
existing classes are built from the code objects compiled from the whole new source (so their
`co_qualname` is right, and a method using super() gets a `__class__` cell for the live class); their
decorators, defaults, bases and keywords are evaluated with the class namespace (plus what this patch
adds to it so far: `@prop.setter` sees the property) as locals, like a class body would. Default values of
changed functions come as a plan (livepatch.patch.compiled.defaults_plan, compiled offline for a signed
patch): a literal is its value, a container display or a call keeps the live object (static state), and
any other expression is evaluated and keeps the live object when the value is equal.
Every failure becomes PatchRefused naming the definition.
"""

from __future__ import annotations

import ast
import builtins
import sys
from collections import ChainMap
from collections.abc import Callable, Mapping
from types import CellType, CodeType, FunctionType, ModuleType
from typing import Any

from livepatch.errors import PatchRefused
from livepatch.patch.compiled import DefaultExpr, How, statement_code
from livepatch.patch.model import ModulePatch
from livepatch.patch.walk import Definition
from livepatch.runtime.swap import MISSING, BindOp

__all__ = ["LiveBuilder", "new_module"]


class LiveBuilder:
    """Evaluates and builds new objects for one live module (used by one staging, on one thread)."""

    def __init__(
        self,
        module: ModuleType,
        filename: str,
        future: list[ast.stmt],
        refuse: Callable[[str, str], PatchRefused],
    ) -> None:
        self.module = module
        self.filename = filename
        self.future = future
        self.refuse = refuse
        self._overlay: dict[int, dict[str, Any]] = {}  # per class: names staged so far
        self._exec_cache: dict[int, tuple[object, dict[str, Any]]] = {}  # by id of stmt/code

    def remember(self, owner: Any, name: str, value: Any) -> None:
        """Later decorators, defaults and values evaluated in `owner`'s namespace (a class, or the
        module: then everywhere) see `name` = `value` (bound only by the swap)."""
        if isinstance(owner, type) or owner is self.module:
            self._overlay.setdefault(id(owner), {})[name] = value

    def scope(self, owner: Any) -> Mapping[str, Any] | None:
        staged = self._overlay.setdefault(id(self.module), {})
        if isinstance(owner, type):
            return ChainMap(self._overlay.setdefault(id(owner), {}), vars(owner), staged)  # type: ignore[arg-type]
        return staged or None

    def eval_expr(self, expr: ast.expr, owner: Any, qualname: str) -> Any:
        if isinstance(expr, ast.Constant):
            return expr.value  # the common case (None, numbers, strings): nothing to compile
        code = compile(ast.Expression(expr), self.filename, "eval", dont_inherit=True)
        return self.eval_code(code, ast.unparse(expr), owner, qualname)

    def eval_code(self, code: CodeType, text: str, owner: Any, qualname: str) -> Any:
        try:
            return eval(code, vars(self.module), self.scope(owner))
        except Exception as exc:
            raise self.refuse(qualname, f"evaluating `{text}` failed: {exc!r}") from exc

    def exec_statement(self, stmt: ast.stmt, qualname: str) -> dict[str, Any]:
        """Run one top-level statement in the live module's globals, binding into a private dict."""
        cached = self._exec_cache.get(id(stmt))
        if cached is not None:
            return cached[1]
        bound = self.exec_code(statement_code(stmt, self.future, self.filename), qualname)
        self._exec_cache[id(stmt)] = (stmt, bound)
        return bound

    def exec_code(self, code: CodeType, qualname: str) -> dict[str, Any]:
        """Run a statement's code in the live module's globals, binding into a private dict (once per
        code object: a statement that adds several names runs once)."""
        cached = self._exec_cache.get(id(code))
        if cached is not None:
            return cached[1]
        # what this patch added to the module so far (a new table naming a new function) is visible
        staged = self._overlay.get(id(self.module), {})
        bound: dict[str, Any] = dict(staged)
        namespace: dict[str, Any] = vars(self.module)
        if staged and _reads_globals(code):
            # `"{vchar}+".format(**globals())` must see the patch's new values too, as the new module's
            # body would: a copy of the live namespace with them (only for a statement that creates no
            # function, class or generator, which would keep the copy as its globals)
            namespace = {**namespace, **staged}
        try:
            exec(code, namespace, bound)
        except Exception as exc:
            raise self.refuse(qualname, f"executing the new definition failed: {exc!r}") from exc
        self._exec_cache[id(code)] = (
            code,
            bound,
        )  # the key object stays alive: its id stays unique
        return bound

    def default_value(self, expr: DefaultExpr, live: Any, owner: Any, qualname: str) -> Any:
        if live is not MISSING and expr.how is How.FRESH:
            return (
                live  # a container or an object built by a call: the function's static state, kept
            )
        if expr.how is How.CONST:
            value = expr.value
        else:
            value = self.eval_code(expr.value, expr.text, owner, qualname)
        if live is not MISSING and (
            live is value or (type(live) is type(value) and _equal(live, value))
        ):
            return live
        return value

    def new_defaults(
        self, func: FunctionType, plan: tuple[DefaultExpr, ...], owner: Any, qualname: str
    ) -> tuple[tuple[Any, ...] | None, dict[str, Any] | None]:
        """The new __defaults__ and __kwdefaults__ of live `func` (the very same objects where unchanged)."""
        code = func.__code__
        positional = code.co_varnames[: code.co_argcount]
        live_defaults = func.__defaults__ or ()
        live: dict[str, Any] = dict(
            zip(positional[len(positional) - len(live_defaults) :], live_defaults, strict=True)
        )
        live_kw = dict(func.__kwdefaults__ or {})
        new_pos = [
            self.default_value(e, live.get(e.param, MISSING), owner, qualname)
            for e in plan
            if not e.keyword_only
        ]
        new_kw = {
            e.param: self.default_value(e, live_kw.get(e.param, MISSING), owner, qualname)
            for e in plan
            if e.keyword_only
        }
        defaults = tuple(new_pos) if new_pos else None
        if (
            defaults is not None
            and len(defaults) == len(live_defaults)
            and all(a is b for a, b in zip(defaults, live_defaults, strict=True))
        ):
            defaults = func.__defaults__  # nothing changed: keep the very same tuple
        kwdefaults = new_kw or None
        if (
            kwdefaults is not None
            and func.__kwdefaults__ is not None
            and kwdefaults.keys() == live_kw.keys()
            and all(kwdefaults[k] is live_kw[k] for k in kwdefaults)
        ):
            kwdefaults = func.__kwdefaults__
        return defaults, kwdefaults

    def decorate(
        self,
        value: Any,
        node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef,
        owner: Any,
        qualname: str,
    ) -> Any:
        decorators = [self.eval_expr(e, owner, qualname) for e in node.decorator_list]
        for deco in reversed(decorators):
            try:
                value = deco(value)
            except Exception as exc:
                raise self.refuse(qualname, f"applying a decorator failed: {exc!r}") from exc
        return value

    def build_function(self, d: Definition, cls: type) -> Any:
        code = d.code
        node = d.node
        assert code is not None and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        closure: tuple[CellType, ...] | None = None
        if code.co_freevars == ("__class__",):
            closure = (
                CellType(cls),
            )  # what the class statement would have given it (super() works)
        elif code.co_freevars:
            raise self.refuse(d.qualname, f"a new method cannot close over {code.co_freevars}")
        args = node.args
        defaults = tuple(self.eval_expr(e, cls, d.qualname) for e in args.defaults) or None
        func = FunctionType(code, vars(self.module), code.co_name, defaults, closure)
        kw = {
            a.arg: self.eval_expr(e, cls, d.qualname)
            for a, e in zip(args.kwonlyargs, args.kw_defaults, strict=True)
            if e is not None
        }
        func.__kwdefaults__ = kw or None
        return self.decorate(func, node, cls, d.qualname)

    def build_class(self, d: Definition, outer: type) -> Any:
        code = d.code
        node = d.node
        assert code is not None and isinstance(node, ast.ClassDef)
        if code.co_freevars:
            raise self.refuse(
                d.qualname, f"a new nested class cannot close over {code.co_freevars}"
            )
        if any(isinstance(b, ast.Starred) for b in node.bases) or any(
            k.arg is None for k in node.keywords
        ):
            raise self.refuse(
                d.qualname,
                "a new nested class with *bases or **keywords is not supported (fix: define it at module level)",
            )
        bases = [self.eval_expr(b, outer, d.qualname) for b in node.bases]
        keywords = {
            k.arg: self.eval_expr(k.value, outer, d.qualname) for k in node.keywords if k.arg
        }
        body = FunctionType(code, vars(self.module), node.name)
        try:
            cls = builtins.__build_class__(body, node.name, *bases, **keywords)
        except Exception as exc:
            raise self.refuse(d.qualname, f"creating the new class failed: {exc!r}") from exc
        return self.decorate(cls, node, outer, d.qualname)


_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>"})


def _reads_globals(code: CodeType) -> bool:
    """Whether a statement's code calls globals()/vars() and creates nothing that outlives it holding
    its globals (a function, class, lambda or generator: only comprehensions, which run at once)."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            if const.co_name not in _COMPREHENSIONS:
                return False
            names |= set(const.co_names)
    return bool(names & {"globals", "vars"})


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def new_module(mp: ModulePatch) -> tuple[ModuleType, list[BindOp]]:
    """A module the patch adds: built from its source (its top level has never run anywhere, so running it
    now is not re-running it) and registered in sys.modules and on its parent package by swap_in."""
    name = mp.module
    parent_name, _, child = name.rpartition(".")
    module = ModuleType(name)
    module.__file__ = f"<livepatch {name}>"
    module.__package__ = parent_name
    # While its top level runs the module is in sys.modules under its name, as in an import: code that
    # looks its own module up there gets it (dataclasses reads `sys.modules[cls.__module__].__dict__`
    # for string annotations, and failed with "'NoneType' object has no attribute '__dict__'" on
    # kvserver 804f2324e2's replication_cli.py and 1287f55ec9's pubsub.py). Taken out again whatever
    # happens: swap_in binds it (BindOp below). The name is one this process has not loaded (stage()
    # builds only modules missing from sys.modules), so nothing is hidden; a thread importing it in
    # that window gets the module being built, as with a concurrent first import (_visible's window).
    shown = name not in sys.modules
    if shown:
        sys.modules[name] = module
    try:
        exec(compile(mp.new_source, module.__file__, "exec", dont_inherit=True), vars(module))
    except Exception as exc:
        raise PatchRefused(f"{name}: the new module's source failed to run: {exc!r}") from exc
    finally:
        if shown and sys.modules.get(name) is module:
            del sys.modules[name]
    binds = [BindOp(f"{name}:<module>", sys.modules, name, MISSING, module)]
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent is not None:
        binds.append(
            BindOp(f"{name}:<module>", parent, child, vars(parent).get(child, MISSING), module)
        )
    return module, binds
