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
resolve.py finds live objects, swap_build.py builds new ones, swap.py holds the operations and the state
machine, dispatch.py the trampolines; this file verifies and decides what to do for each TargetChange.

What staging executes (and nothing else): the decorators, default values and bodies of ADDED definitions
and ADDED imports (in the live module's namespace, bound on swap_in), the class-level default values a
CHANGED class adds, changed default expressions of CHANGED functions, and the whole source of a module
the patch adds. Unchanged defaults keep their live objects (a mutable default is a function's static
state: it is carried over, never reset).
"""

from __future__ import annotations

import enum
import sys
from types import FunctionType, ModuleType
from typing import Any

from livepatch.errors import PatchRefused
from livepatch.patch.diff import flavour
from livepatch.patch.diff_walk import Definition, ModuleWalk, walk_source
from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.model import ChangeKind, DefinitionKind, ModulePatch, PatchSpec, TargetChange
from livepatch.runtime.resolve import ResolveError, resolve_function, resolve_owner
from livepatch.runtime.swap import MISSING, BindOp, CodeOp, StagedPatch, make_staged_patch
from livepatch.runtime.swap_build import LiveBuilder, new_module

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
        self.build = LiveBuilder(module, filename, walk.future, self.refuse)

    def name(self, qualname: str) -> str:
        return f"{self.mp.module}:{qualname}"

    def refuse(self, qualname: str, message: str) -> PatchRefused:
        return PatchRefused(f"{self.name(qualname)}: {message}")

    def bind(self, owner: Any, name: str, value: Any, qualname: str) -> None:
        key = (id(owner), name)
        existing = self.binds.get(key)
        old = existing.old if existing is not None else vars(owner).get(name, MISSING)
        self.binds[key] = BindOp(self.name(qualname), owner, name, old, value)
        self.build.remember(owner, name, value)

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
        defaults, kwdefaults = self.build.new_defaults(func, d, owner)
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
                self.build.eval_expr(stmt.value, cls, f"{change.qualname}.{name}"),
                f"{change.qualname}.{name}",
            )

    def stage_added(self, change: TargetChange) -> None:
        d = self.new_definition(change)
        if not d.owner:
            bound = self.build.exec_statement(d.node, change.qualname)
            if d.name not in bound:
                raise self.refuse(change.qualname, "the new definition did not bind its name")
            self.bind(self.module, d.name, bound[d.name], change.qualname)
            return
        try:
            cls = resolve_owner(self.module, d.owner)
        except ResolveError as exc:
            raise PatchRefused(f"{self.name(change.qualname)} cannot be added: {exc}") from exc
        if d.kind is DefinitionKind.CLASS:
            value = self.build.build_class(d, cls)
        else:
            value = self.build.build_function(d, cls)
        self.bind(cls, d.name, value, change.qualname)

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
                module, module_binds = new_module(mp)
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
