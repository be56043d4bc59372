"""Per-definition diff of two versions of a module, and the patch built from it.

Theory of operation: both sources are walked (livepatch.patch.walk: parsed and compiled, never
executed) into definitions keyed by qualname. Each definition present in both is SAME or CHANGED by the
fingerprint of its code object (line shifts are not changes) and by its default values (evaluated by the
enclosing scope, so not part of its code); definitions only in the new version are ADDED, only in the old
one REMOVED (they stay in memory: old references keep working). Everything the runtime cannot do in place
becomes a `Refusal` with the reason and the way out (docs/patchability.md lists them all).

Every refusal has a kind (model.RefusalKind). A refusal is waived only when the patch's hooks file defines
a hook that covers its kind (model.COVERING_HOOKS: e.g. a transform hook for a new instance attribute,
post_patch for changed module-level state); the waiver is reported with that hook (`SourcesDiff.waived`),
so `livepatch diff` can list it. Refusals CPython itself would reject or silently mis-run (free variables,
generator <-> function, a definition changing kind) are covered by no hook and always stand; only the fix
text of a hookable refusal suggests shipping hooks.

Module-level statements: a module that exists in the old version already ran its top level in the live
server, even when it was empty (an empty `__init__.py`), so new or changed top-level statements there are
refused (MODULE_STATE) like in any other existing module; only a module the old version does not have
(old source None) runs its whole new top level for the first time.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.hooks_info import defined_hooks
from livepatch.patch.model import (
    Category,
    ChangeKind,
    DefinitionKind,
    ModulePatch,
    PatchSpec,
    Refusal,
    RefusalKind,
    TargetChange,
    Waiver,
    covering_hook,
    hook_fix,
)
from livepatch.patch.patchability import builds_fresh_object, replacement_problems
from livepatch.patch.walk import ClassInfo, Definition, ModuleWalk, walk_source

__all__ = ["ModuleDiff", "SourcesDiff", "diff_module", "diff_sources", "patch_from_sources"]


@dataclass(frozen=True)
class ModuleDiff:
    """The diff of one module: every definition's change (SAME ones included) and the refusals."""

    module: str
    changes: tuple[TargetChange, ...]
    refusals: tuple[Refusal, ...]
    new_source: str
    old_source_sha256: str
    waived: tuple[Waiver, ...] = ()  # refusals a hook of the patch covers

    @property
    def has_changes(self) -> bool:
        return any(c.kind is not ChangeKind.SAME for c in self.changes) or bool(self.refusals)

    def counts(self) -> dict[str, int]:
        """Number of definitions per ChangeKind value ("same", "changed", "added", "removed")."""
        out = {k.value: 0 for k in ChangeKind}
        for c in self.changes:
            out[c.kind.value] += 1
        return out

    def to_module_patch(self) -> ModulePatch:
        return ModulePatch(
            module=self.module,
            new_source=self.new_source,
            changes=self.changes,
            old_source_sha256=self.old_source_sha256,
        )


def _fp(d: Definition) -> str | None:
    return code_fingerprint(d.code) if d.code is not None else None


class _Differ:
    def __init__(
        self, module: str, old: ModuleWalk, new: ModuleWalk, hooks: frozenset[str], added: bool
    ) -> None:
        self.module = module
        self.old = old
        self.new = new
        self.hooks = hooks
        self.added = added
        self.changes: list[TargetChange] = []
        self.refusals: list[Refusal] = []
        self.waived: list[Waiver] = []

    def refuse(self, kind: RefusalKind, qualname: str, reason: str, fix: str) -> None:
        refusal = Refusal(self.module, qualname, reason, fix + hook_fix(kind), kind)
        hook = covering_hook(kind, self.hooks)
        if hook is not None:
            self.waived.append(Waiver(refusal, hook))
        else:
            self.refusals.append(refusal)

    # -- module-level state -------------------------------------------------------------------------
    def module_statements(self) -> None:
        if self.added or not (self.new.definitions or self.new.statements):
            return  # an added module's top level runs for the first time; an emptied one stays as it is
        old = [dump for dump, _ in self.old.statements]
        new = [dump for dump, _ in self.new.statements]
        if old == new:
            return
        old_texts = {dump: text for dump, text in self.old.statements}
        new_texts = {dump: text for dump, text in self.new.statements}
        added = [new_texts[d] for d in new if d not in old_texts]
        removed = [old_texts[d] for d in old if d not in new_texts]
        if added or removed:
            what = "; ".join(
                [
                    *(f"`{_short(t)}` is new or changed" for t in added[:3]),
                    *(f"`{_short(t)}` is gone" for t in removed[:3]),
                ]
            )
        else:
            what = "module-level statements were reordered"
        self.refuse(
            RefusalKind.MODULE_STATE,
            "<module>",
            f"module-level state changed ({what}); module-level code already ran in the live server",
            "compute the value inside the function that uses it (or as a class-level default)",
        )

    # -- classes ------------------------------------------------------------------------------------
    def class_layout(self, qualname: str, old: ClassInfo, new: ClassInfo) -> bool:
        """Refuse layout changes; return True when the class adds class-level defaults (CHANGED)."""
        fix_layout = "keep the class layout (bases, metaclass, __slots__) as it is"
        if old.header != new.header:
            self.refuse(
                RefusalKind.CLASS_LAYOUT,
                qualname,
                f"class `{qualname}` changes its bases or metaclass (class layout)",
                fix_layout,
            )
        if old.slots != new.slots:
            self.refuse(
                RefusalKind.CLASS_LAYOUT,
                qualname,
                f"class `{qualname}` changes its __slots__ (class layout)",
                fix_layout,
            )
        if old.decorators != new.decorators:
            self.refuse(
                RefusalKind.DECORATORS,
                qualname,
                f"the decorators of class `{qualname}` changed; they already ran on the live class",
                "keep the class decorators",
            )
        adds_defaults = False
        changed = [
            n
            for n in old.assignments
            if n in new.assignments and ast.dump(old.assignments[n]) != ast.dump(new.assignments[n])
        ]
        removed = [n for n in old.assignments if n not in new.assignments]
        added = [n for n in new.assignments if n not in old.assignments]
        if changed or removed or old.other_statements != new.other_statements:
            names = ", ".join(f"`{n}`" for n in [*changed, *removed]) or "its class-body statements"
            self.refuse(
                RefusalKind.CLASS_STATE,
                qualname,
                f"class-level state of `{qualname}` changed ({names}); the class body already ran",
                "keep the class-level values and compute new ones in the methods",
            )
        if added:
            if new.node.decorator_list:
                self.refuse(
                    RefusalKind.CLASS_FIELDS,
                    qualname,
                    f"class `{qualname}` is decorated and gains class-level names ({', '.join(added)}): "
                    "for a dataclass these are fields that change __init__ and the layout",
                    "leave the fields as they are",
                )
            else:
                adds_defaults = True
        for attr, where in new.instance_attributes.items():
            if attr in old.instance_attributes or attr in new.assignments:
                continue
            self.refuse(
                RefusalKind.INSTANCE_ATTRIBUTE,
                qualname,
                f"new instance attribute `self.{attr}` (assigned in `{where}`): live instances of `{qualname}` do not have it",
                f"give the attribute a class-level default (`{attr} = None` in the body of `{qualname}`) so live "
                "instances stay valid",
            )
        return adds_defaults

    # -- functions ----------------------------------------------------------------------------------
    def function(self, qualname: str, old: Definition, new: Definition) -> bool:
        """Check a function-like definition present in both; True when it changed."""
        assert old.code is not None and new.code is not None
        for problem in replacement_problems(qualname, old.code, new.code):
            self.refuse(problem.kind, qualname, problem.reason, problem.fix)
        if old.decorators != new.decorators:
            self.refuse(
                RefusalKind.DECORATORS,
                qualname,
                f"the decorators of `{qualname}` changed; they already ran when the live function was defined",
                "keep the decorators and put the new behaviour in the body",
            )
        defaults_changed = old.defaults != new.defaults
        if defaults_changed:
            node = new.node
            assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            exprs = _default_exprs(node)
            for param, dump in new.defaults.items():
                if (
                    param in old.defaults
                    and old.defaults[param] != dump
                    and builds_fresh_object(exprs[param])
                ):
                    self.refuse(
                        RefusalKind.MUTABLE_DEFAULT,
                        qualname,
                        f"the default of `{param}` in `{qualname}` is a mutable object or built by a call; the "
                        "live function's object is its static state and is carried over, not rebuilt",
                        "use a `None` default and build the value in the body",
                    )
        return _fp(old) != _fp(new) or defaults_changed

    def run(self) -> None:
        self.module_statements()
        old_defs, new_defs = self.old.definitions, self.new.definitions
        # a class only in one version comes or goes as a whole: its members are not targets of their own
        added_classes = [
            q for q, d in new_defs.items() if d.kind is DefinitionKind.CLASS and q not in old_defs
        ]
        removed_classes = [
            q for q, d in old_defs.items() if d.kind is DefinitionKind.CLASS and q not in new_defs
        ]

        def inside(qualname: str, classes: list[str]) -> bool:
            return any(qualname.startswith(c + ".") for c in classes)

        for qualname, new in new_defs.items():
            if inside(qualname, added_classes):
                continue
            old = old_defs.get(qualname)
            if old is None:
                self.changes.append(
                    TargetChange(qualname, ChangeKind.ADDED, new.kind, None, _fp(new))
                )
                continue
            if old.kind is not new.kind:
                self.refuse(
                    RefusalKind.KIND_CHANGE,
                    qualname,
                    f"`{qualname}` changes from a {old.kind} to a {new.kind}",
                    "keep the old definition as it is and add the new one under another name",
                )
                continue
            if new.kind is DefinitionKind.IMPORT:
                if old.decorators != new.decorators:
                    self.refuse(
                        RefusalKind.IMPORT,
                        qualname,
                        f"the import bound to `{qualname}` changed ({old.decorators} -> {new.decorators})",
                        "import the new thing under a new name",
                    )
                self.changes.append(TargetChange(qualname, ChangeKind.SAME, new.kind))
                continue
            if new.kind is DefinitionKind.CLASS:
                changed = self.class_layout(
                    qualname, self.old.classes[qualname], self.new.classes[qualname]
                )
            else:
                changed = self.function(qualname, old, new)
            kind = ChangeKind.CHANGED if changed else ChangeKind.SAME
            self.changes.append(TargetChange(qualname, kind, new.kind, _fp(old), _fp(new)))
        for qualname, old in old_defs.items():
            if qualname in new_defs or inside(qualname, removed_classes):
                continue
            self.changes.append(
                TargetChange(qualname, ChangeKind.REMOVED, old.kind, _fp(old), None)
            )


def _default_exprs(node: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, ast.expr]:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    out: dict[str, ast.expr] = {}
    for arg, default in zip(
        positional[len(positional) - len(args.defaults) :], args.defaults, strict=True
    ):
        out[arg.arg] = default
    for arg, kw in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if kw is not None:
            out[arg.arg] = kw
    return out


def _short(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def diff_module(
    module: str, old_source: str | None, new_source: str, *, hooks: Iterable[str] = ()
) -> ModuleDiff:
    """Compare two versions of one module, definition by definition (sources are compiled, never run).

    `old_source` None: the old version has no such module (its whole top level will run for the first
    time); "" is an existing, empty module. `hooks`: the hook names the patch's hooks file defines
    (hooks_info.defined_hooks); a refusal one of them covers (model.COVERING_HOOKS) is moved to `waived`.
    Returns every definition's TargetChange (SAME ones included, in new-source order, then REMOVED ones),
    the Refusals and the waivers. Raises SyntaxError when either source does not compile (its filename
    names the module and version). Pure function; any thread.
    """
    old = walk_source(old_source or "", f"<{module} (old)>")
    new = walk_source(new_source, f"<{module} (new)>")
    differ = _Differ(module, old, new, frozenset(hooks), added=old_source is None)
    differ.run()
    return ModuleDiff(
        module=module,
        changes=tuple(differ.changes),
        refusals=tuple(differ.refusals),
        new_source=new_source,
        old_source_sha256=hashlib.sha256((old_source or "").encode()).hexdigest(),
        waived=tuple(differ.waived),
    )


@dataclass(frozen=True)
class SourcesDiff:
    """A patch and the refusals its hooks waived (each with the hook that covers it)."""

    spec: PatchSpec
    waived: tuple[Waiver, ...]


def diff_sources(
    modules: Mapping[str, tuple[str | None, str]],
    *,
    category: Category = Category.PROCESS,
    patch_id: str | None = None,
    package: str | None = None,
    description: str = "",
    hooks_source: str | None = None,
) -> SourcesDiff:
    """Build a PatchSpec from {module name: (old source or None for a new module, new source)}, and
    report the waived refusals.

    Modules without any change (and without refusals or waivers) are left out. The refusals of every
    module are collected in `PatchSpec.refusals` (a spec with refusals must not be applied); a refusal is
    waived only when `hooks_source` defines a hook that covers it (see diff_module). `patch_id` defaults to
    the first 12 hex digits of a sha256 of the patch's content; `package` defaults to the first component
    of the first module's name. Raises SyntaxError when a source does not compile. Pure; any thread.
    """
    hooks = defined_hooks(hooks_source)
    diffs = [
        diff_module(name, old, new, hooks=hooks) for name, (old, new) in sorted(modules.items())
    ]
    kept = tuple(d.to_module_patch() for d in diffs if d.has_changes or d.waived)
    refusals = tuple(r for d in diffs for r in d.refusals)
    if package is None:
        package = next(iter(sorted(modules)), "").split(".")[0]
    if patch_id is None:
        content = json.dumps(
            {
                "modules": [m.to_dict() for m in kept],
                "hooks": hooks_source,
                "category": category.value,
            },
            sort_keys=True,
        )
        patch_id = hashlib.sha256(content.encode()).hexdigest()[:12]
    spec = PatchSpec(
        patch_id=patch_id,
        package=package,
        category=category,
        modules=kept,
        description=description,
        hooks_source=hooks_source,
        refusals=refusals,
    )
    return SourcesDiff(spec, tuple(w for d in diffs for w in d.waived))


def patch_from_sources(
    modules: Mapping[str, tuple[str | None, str]],
    *,
    category: Category = Category.PROCESS,
    patch_id: str | None = None,
    package: str | None = None,
    description: str = "",
    hooks_source: str | None = None,
) -> PatchSpec:
    """diff_sources(...).spec: the patch alone (the waivers are in diff_sources's result)."""
    return diff_sources(
        modules,
        category=category,
        patch_id=patch_id,
        package=package,
        description=description,
        hooks_source=hooks_source,
    ).spec
