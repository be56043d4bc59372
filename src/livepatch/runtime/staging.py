"""Staging: turn a PatchSpec into ready-to-swap code, before anything pauses.

CONTRACT (used by runtime.patcher; implemented here):

    stage(spec: PatchSpec) -> StagedPatch
        Runs on the patcher thread with nothing paused. Compiles every module's new source, resolves every
        live target through module and class namespaces (no heap walk), verifies each live code object's
        fingerprint against `old_fingerprint` and prepares everything the swap needs. Raises
        livepatch.errors.PatchRefused (naming the first problem and how to fix it) and changes nothing
        when anything does not fit.

    class StagedPatch:
        patch_id: str
        replaced_codes: frozenset[CodeType]   # live code objects that stop being current (activeness check)
        function_count: int                   # functions swapped (benchmarks: swap time vs patch size)
        source_bytes: int                     # bytes of new source involved
        def swap_in(self) -> None             # direct swap; all or nothing; O(number of targets)
        def swap_out(self) -> None            # exact inverse: restores the very same previous objects
        def begin_dispatch(self, use_new: Callable[[], bool],
                           on_error: Callable[[BaseException], None] | None = None) -> None
            # every target now calls the new implementation when use_new() is true for the calling thread
            # and the old one otherwise; on_error (if given) sees each exception escaping the new code.
        def end_dispatch(self, keep_new: bool) -> None
            # remove the dispatchers, leaving the new code (keep_new) or exactly the old code in place.
        def reversed(self) -> StagedPatch     # the revert of this patch, to go through the same quiescence

Also on StagedPatch (extensions): `targets` (module:qualname of everything touched), `modules` (name ->
live module, for hook contexts), `applied` (the new side is installed), `skipped_modules` (modules of the
patch this process never imported: nothing live to patch; see stage()). The implementation is split:
resolve.py finds live objects, swap.py holds the operations and the state machine, dispatch.py the
trampolines; this file decides what to do for each TargetChange.

What staging executes (and nothing else): the decorators, default values and bodies of ADDED definitions
and ADDED imports (in the live module's namespace, bound on swap_in), the class-level default values a
CHANGED class adds, and changed default expressions of CHANGED functions. Unchanged defaults keep their
live objects (a mutable default is a function's static state: it is carried over, never reset).
"""

from __future__ import annotations

import ast
import builtins
import enum
import sys
from collections import ChainMap
from collections.abc import Mapping
from types import CellType, FunctionType, ModuleType
from typing import Any

from livepatch.errors import PatchRefused
from livepatch.patch.diff_walk import Definition, ModuleWalk, walk_source
from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.model import ChangeKind, DefinitionKind, ModulePatch, PatchSpec, TargetChange
from livepatch.runtime.resolve import ResolveError, resolve_function, resolve_owner
from livepatch.runtime.swap import MISSING, BindOp, CodeOp, StagedPatch, make_staged_patch

__all__ = ["StagedPatch", "stage"]

_KIND_FLAGS = (
    0x20 | 0x80 | 0x100 | 0x200
)  # CO_GENERATOR, CO_COROUTINE, CO_ITERABLE_COROUTINE, CO_ASYNC_GENERATOR
_FUNCTION_KINDS = {
    DefinitionKind.FUNCTION,
    DefinitionKind.METHOD,
    DefinitionKind.STATICMETHOD,
    DefinitionKind.CLASSMETHOD,
    DefinitionKind.PROPERTY,
}
_FRESH_OBJECT = (ast.List, ast.Dict, ast.Set, ast.Call, ast.ListComp, ast.DictComp, ast.SetComp)


def flavour(flags: int) -> str:
    """What calling a function with these code flags gives: a plain call, a generator, a coroutine..."""
    if flags & 0x200:
        return "an async generator"
    if flags & 0x80:
        return "a coroutine function"
    if flags & 0x20:
        return "a generator"
    return "a plain function"


def _accessor(qualname: str, kind: DefinitionKind) -> str | None:
    if kind is DefinitionKind.PROPERTY:
        return qualname.rsplit(".", 1)[1]
    return None


class _ModuleStager:
    """Stages one ModulePatch against one live module."""

    def __init__(
        self, mp: ModulePatch, module: ModuleType, walk: ModuleWalk, filename: str
    ) -> None:
        self.mp = mp
        self.module = module
        self.walk = walk
        self.filename = filename
        self.codes: list[CodeOp] = []
        self.binds: dict[tuple[int, str], BindOp] = {}
        self._overlay: dict[
            int, dict[str, Any]
        ] = {}  # per class: names staged so far (decorators see them)
        self._exec_cache: dict[int, dict[str, Any]] = {}

    def name(self, qualname: str) -> str:
        return f"{self.mp.module}:{qualname}"

    def refuse(self, qualname: str, message: str) -> PatchRefused:
        return PatchRefused(f"{self.name(qualname)}: {message}")

    # -- evaluation in the live namespaces ----------------------------------------------------------
    def _scope(self, owner: Any) -> Mapping[str, Any] | None:
        if isinstance(owner, type):
            return ChainMap(self._overlay.setdefault(id(owner), {}), vars(owner))  # type: ignore[arg-type]
        return None

    def eval_expr(self, expr: ast.expr, owner: Any, qualname: str) -> Any:
        if isinstance(expr, ast.Constant):
            return expr.value  # the common case (None, numbers, strings): nothing to compile
        code = compile(ast.Expression(expr), self.filename, "eval", dont_inherit=True)
        try:
            return eval(code, vars(self.module), self._scope(owner))
        except Exception as exc:
            raise self.refuse(
                qualname, f"evaluating `{ast.unparse(expr)}` failed: {exc!r}"
            ) from exc

    def exec_statement(self, stmt: ast.stmt, qualname: str) -> dict[str, Any]:
        """Run one top-level statement in the live module's globals, binding into a private dict."""
        cached = self._exec_cache.get(id(stmt))
        if cached is not None:
            return cached
        tree = ast.Module(body=[*self.walk.future, stmt], type_ignores=[])
        code = compile(tree, self.filename, "exec", dont_inherit=True)
        bound: dict[str, Any] = {}
        try:
            exec(code, vars(self.module), bound)
        except Exception as exc:
            raise self.refuse(qualname, f"executing the new definition failed: {exc!r}") from exc
        self._exec_cache[id(stmt)] = bound
        return bound

    def bind(self, owner: Any, name: str, value: Any, qualname: str) -> None:
        key = (id(owner), name)
        existing = self.binds.get(key)
        old = existing.old if existing is not None else vars(owner).get(name, MISSING)
        self.binds[key] = BindOp(self.name(qualname), owner, name, old, value)
        if isinstance(owner, type):
            self._overlay.setdefault(id(owner), {})[name] = value

    # -- targets ------------------------------------------------------------------------------------
    def new_definition(self, change: TargetChange) -> Definition:
        d = self.walk.definitions.get(change.qualname)
        if d is None:
            raise self.refuse(
                change.qualname, "the patch's new source does not define it (corrupt patch)"
            )
        if d.kind is not change.definition:
            raise self.refuse(
                change.qualname,
                f"is a {d.kind} in the new source but the patch says {change.definition}",
            )
        return d

    def live_function(self, change: TargetChange, d: Definition) -> FunctionType:
        try:
            return resolve_function(
                self.module,
                d.owner,
                d.name,
                d.code_qualname,
                _accessor(change.qualname, change.definition),
            )
        except ResolveError as exc:
            raise PatchRefused(f"{self.name(change.qualname)} cannot be patched: {exc}") from exc

    def verify(self, qualname: str, func: FunctionType, expected: str | None) -> None:
        if expected is not None and code_fingerprint(func.__code__) != expected:
            raise PatchRefused(
                f"{self.name(qualname)} does not match the patch: the server runs another version"
            )

    def stage_same(self, change: TargetChange) -> None:
        # A SAME definition is checked when it can be found: the new code may rely on it being the old one.
        if change.definition not in _FUNCTION_KINDS or change.old_fingerprint is None:
            return
        d = self.walk.definitions.get(change.qualname)
        if d is None:
            return
        try:
            func = resolve_function(
                self.module,
                d.owner,
                d.name,
                d.code_qualname,
                _accessor(change.qualname, change.definition),
            )
        except ResolveError:
            return
        self.verify(change.qualname, func, change.old_fingerprint)

    def stage_changed_function(self, change: TargetChange) -> None:
        d = self.new_definition(change)
        func = self.live_function(change, d)
        self.verify(change.qualname, func, change.old_fingerprint)
        new_code = d.code
        assert new_code is not None
        if (
            change.new_fingerprint is not None
            and code_fingerprint(new_code) != change.new_fingerprint
        ):
            raise self.refuse(
                change.qualname,
                "the new source does not produce the code the patch names (corrupt patch)",
            )
        old_code = func.__code__
        if old_code.co_freevars != new_code.co_freevars:
            raise self.refuse(
                change.qualname,
                f"Cannot replace closure `{change.qualname}` because its free variables changed: "
                f"{old_code.co_freevars} -> {new_code.co_freevars} (fix: keep the same free variables; "
                "for a method, use super()/__class__ in both versions or in neither)",
            )
        if (old_code.co_flags & _KIND_FLAGS) != (new_code.co_flags & _KIND_FLAGS):
            raise self.refuse(
                change.qualname,
                f"Cannot replace `{change.qualname}`: it would turn from {flavour(old_code.co_flags)} into "
                f"{flavour(new_code.co_flags)}, and callers holding it expect the former "
                "(fix: add a new function under another name and call that)",
            )
        owner = resolve_owner(self.module, d.owner)
        defaults, kwdefaults = self.new_defaults(func, d, owner)
        self.codes.append(
            CodeOp(
                self.name(change.qualname),
                func,
                old_code,
                new_code,
                func.__defaults__,
                defaults,
                func.__kwdefaults__,
                kwdefaults,
            )
        )

    def default_value(self, expr: ast.expr, live: Any, owner: Any, qualname: str) -> Any:
        if live is not MISSING and isinstance(expr, _FRESH_OBJECT):
            return (
                live  # a container or an object built by a call: the function's static state, kept
            )
        value = self.eval_expr(expr, owner, qualname)
        if live is not MISSING and (
            live is value or (type(live) is type(value) and _equal(live, value))
        ):
            return live
        return value

    def new_defaults(
        self, func: FunctionType, d: Definition, owner: Any
    ) -> tuple[tuple[Any, ...] | None, dict[str, Any] | None]:
        node = d.node
        assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        code = func.__code__
        positional = code.co_varnames[: code.co_argcount]
        live_defaults = func.__defaults__ or ()
        live: dict[str, Any] = dict(
            zip(positional[len(positional) - len(live_defaults) :], live_defaults, strict=True)
        )
        live_kw = dict(func.__kwdefaults__ or {})
        args = node.args
        params = [*args.posonlyargs, *args.args]
        new_pos = []
        for arg, expr in zip(
            params[len(params) - len(args.defaults) :], args.defaults, strict=True
        ):
            new_pos.append(self.default_value(expr, live.get(arg.arg, MISSING), owner, d.qualname))
        new_kw = {}
        for arg, kexpr in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            if kexpr is not None:
                new_kw[arg.arg] = self.default_value(
                    kexpr, live_kw.get(arg.arg, MISSING), owner, d.qualname
                )
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

    def stage_changed_class(self, change: TargetChange) -> None:
        # A CHANGED class adds class-level defaults (see patch.diff); its methods are targets of their own.
        info = self.walk.classes.get(change.qualname)
        if info is None:
            raise self.refuse(
                change.qualname, "the patch's new source does not define it (corrupt patch)"
            )
        try:
            cls = resolve_owner(self.module, change.qualname)
        except ResolveError as exc:
            raise PatchRefused(f"{self.name(change.qualname)} cannot be patched: {exc}") from exc
        if isinstance(cls, enum.EnumMeta):
            # a name set on a live Enum class would be a plain attribute, never a member
            raise self.refuse(
                change.qualname,
                "new members cannot be added to a live Enum (fix: ship a hook, or keep the members)",
            )
        for name, stmt in info.assignments.items():
            if name in vars(cls) or stmt.value is None:
                continue
            self.bind(
                cls,
                name,
                self.eval_expr(stmt.value, cls, f"{change.qualname}.{name}"),
                f"{change.qualname}.{name}",
            )

    def stage_added(self, change: TargetChange) -> None:
        d = self.new_definition(change)
        if not d.owner:
            bound = self.exec_statement(d.node, change.qualname)
            if d.name not in bound:
                raise self.refuse(change.qualname, "the new definition did not bind its name")
            self.bind(self.module, d.name, bound[d.name], change.qualname)
            return
        try:
            cls = resolve_owner(self.module, d.owner)
        except ResolveError as exc:
            raise PatchRefused(f"{self.name(change.qualname)} cannot be added: {exc}") from exc
        if d.kind is DefinitionKind.CLASS:
            value = self.build_class(d, cls)
        else:
            value = self.build_function(d, cls)
        self.bind(cls, d.name, value, change.qualname)

    def _decorate(
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
        return self._decorate(func, node, cls, d.qualname)

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
        return self._decorate(cls, node, outer, d.qualname)

    def run(self) -> None:
        for change in self.mp.changes:
            if change.kind is ChangeKind.SAME:
                self.stage_same(change)
            elif change.kind is ChangeKind.REMOVED:
                continue  # removed definitions stay in memory: old references keep working
            elif change.kind is ChangeKind.ADDED:
                self.stage_added(change)
            elif change.definition is DefinitionKind.CLASS:
                self.stage_changed_class(change)
            elif change.definition in _FUNCTION_KINDS:
                self.stage_changed_function(change)
            else:
                raise self.refuse(
                    change.qualname, f"a changed {change.definition} cannot be live-patched"
                )


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def _new_module(mp: ModulePatch) -> tuple[ModuleType, list[BindOp]]:
    """A module the patch adds: built from its source (its top level has never run anywhere, so running it
    now is not re-running it) and registered in sys.modules and on its parent package by swap_in."""
    name = mp.module
    parent_name, _, child = name.rpartition(".")
    module = ModuleType(name)
    module.__file__ = f"<livepatch {name}>"
    module.__package__ = parent_name
    try:
        exec(compile(mp.new_source, module.__file__, "exec", dont_inherit=True), vars(module))
    except Exception as exc:
        raise PatchRefused(f"{name}: the new module's source failed to run: {exc!r}") from exc
    binds = [BindOp(f"{name}:<module>", sys.modules, name, MISSING, module)]
    parent = sys.modules.get(parent_name) if parent_name else None
    if parent is not None:
        binds.append(
            BindOp(f"{name}:<module>", parent, child, vars(parent).get(child, MISSING), module)
        )
    return module, binds


def stage(spec: PatchSpec) -> StagedPatch:
    """Compile, resolve, verify and prepare `spec` (see the module docstring for the full contract).

    Modules of the patch that this process has not imported have no live code to patch: they are skipped
    (listed in `StagedPatch.skipped_modules`; a later import reads them from disk), unless the patch adds
    them (every change ADDED), in which case they are built from the patch. A patch none of whose modules
    is loaded is refused. Runs on the patcher thread while the server keeps running; changes nothing in
    the live program. Raises PatchRefused naming the first problem.
    """
    if spec.refusals:
        raise PatchRefused(
            f"patch {spec.patch_id} was built with refusals; first: {spec.refusals[0]}"
        )
    codes: list[CodeOp] = []
    binds: list[BindOp] = []
    modules: dict[str, ModuleType] = {}
    skipped: list[str] = []
    source_bytes = 0
    for mp in spec.modules:
        module = sys.modules.get(mp.module)
        if module is None:
            if mp.changes and all(c.kind is ChangeKind.ADDED for c in mp.changes):
                module, module_binds = _new_module(mp)
                binds.extend(module_binds)
                modules[mp.module] = module
                source_bytes += len(mp.new_source.encode())
            else:
                skipped.append(mp.module)
            continue
        filename = getattr(module, "__file__", None) or f"<livepatch {mp.module}>"
        try:
            walk = walk_source(mp.new_source, filename)
        except (SyntaxError, ValueError) as exc:
            raise PatchRefused(
                f"{mp.module}: the patch's new source does not compile: {exc}"
            ) from exc
        stager = _ModuleStager(mp, module, walk, filename)
        stager.run()
        codes.extend(stager.codes)
        binds.extend(stager.binds.values())
        modules[mp.module] = module
        source_bytes += len(mp.new_source.encode())
    if spec.modules and not modules:
        raise PatchRefused(
            f"none of the patch's modules is loaded in this process ({', '.join(skipped)}): "
            "the patch targets a program this server does not run"
        )
    seen: set[int] = set()
    for op in codes:
        if id(op.func) in seen:
            raise PatchRefused(
                f"{op.target}: the same live function is targeted twice (corrupt patch)"
            )
        seen.add(id(op.func))
    return make_staged_patch(
        spec.patch_id,
        binds,
        codes,
        source_bytes=source_bytes,
        modules=modules,
        skipped_modules=tuple(skipped),
    )
