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
(old source None) runs its whole new top level for the first time. The exception are VALUEs: a name bound
once by a simple assignment in a module or class body is a target of its own. An added one is evaluated
by staging; a changed one is rebound when nothing captured the old value: values computed from it at
import time are evaluated again (`dependents`), copies other modules of the package made by name or by a
star import follow it (`_diff_following`; the importers are diffed too, an unchanged one against
itself), and anything else that read it while the module ran (a default, a decorator, a class body, an
if/try block) refuses it; staging then checks the live objects (docs/patchability.md, "Values").

Also here: a changed import is accepted when the package's sources show both paths bind the same object
(patch/imports.py); a changed decorator list of a function is re-run by staging (old_value marks it); a
new instance attribute read only through getattr(self, "x", d) or covered by a class-level default (also a
base class's in this module) is accepted, and `accept_transformer` generates a transform hook for the
others when the new __init__ computes them from globals and self (patch/transformer.py); the category is
inferred (`infer_category`) unless given.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from livepatch.patch.block_classes import block_class_values
from livepatch.patch.block_classes import encode as encode_block_values
from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.hooks_info import defined_hooks
from livepatch.patch.imports import PackageImports
from livepatch.patch.model import (
    BOUND_BY_BLOCK,
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
from livepatch.patch.patchability import (
    FUNCTION_KINDS,
    builds_fresh_object,
    replacement_problems,
)
from livepatch.patch.transformer import (
    TRANSFORMER_KINDS,
    Candidate,
    ClassReplacement,
    transformer_source,
)
from livepatch.patch.walk import (
    ClassInfo,
    Definition,
    ModuleWalk,
    binds_only,
    class_shape,
    free_reads,
    walk_source,
)

__all__ = [
    "ModuleDiff",
    "SourcesDiff",
    "diff_module",
    "diff_sources",
    "infer_category",
    "patch_from_sources",
]


@dataclass(frozen=True)
class ModuleDiff:
    """The diff of one module: every definition's change (SAME ones included) and the refusals."""

    module: str
    changes: tuple[TargetChange, ...]
    refusals: tuple[Refusal, ...]
    new_source: str
    old_source_sha256: str
    waived: tuple[Waiver, ...] = ()  # refusals a hook of the patch covers
    rebinding: frozenset[str] = frozenset()  # changed functions declaring global/nonlocal
    # module-level names whose value this patch changes (values, re-evaluated values, followed imports)
    changed_names: frozenset[str] = frozenset()
    # instance-attribute refusals a generated transformer could cover (--accept-transformer)
    transformable: Mapping[Refusal, Candidate] = field(default_factory=dict)
    # class-layout refusals a generated class replacement could cover (--accept-transformer)
    replaceable: Mapping[Refusal, ClassReplacement] = field(default_factory=dict)

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
    if d.kind is DefinitionKind.VALUE:
        return hashlib.sha256(d.value.encode()).hexdigest()
    return code_fingerprint(d.code) if d.code is not None else None


# attributes every instance has: assigning them creates no instance attribute (`__class__` is a data
# descriptor of `object`: the assignment changes the type; `__dict__` replaces the dict)
_EVERY_INSTANCE_HAS = frozenset({"__class__", "__dict__"})
_BY_TRANSFORMER = (
    "; or confirm the generated transformer that sets it on every live instance "
    "(`livepatch diff --accept-transformer`)"
)
_BY_REPLACEMENT = (
    "; or confirm the generated transformer that replaces the class and rebuilds its live instances "
    "(`livepatch diff --accept-transformer`)"
)


def _replacement_fix(why_not: str | None) -> str:
    """The end of a layout or fields refusal's fix: class replacement, or why it cannot help."""
    if why_not is None:
        return _BY_REPLACEMENT
    return f" (`--accept-transformer` cannot help: {why_not})"


_NO_TRANSFORMER = (
    " (`--accept-transformer` cannot help: the new __init__ does not give it a value that depends "
    "only on globals, self and constructor arguments the instance keeps unchanged, as `self.a = a`)"
)
_DISPLAYS = {
    ast.List: "list",
    ast.ListComp: "list",
    ast.Dict: "dict",
    ast.DictComp: "dict",
    ast.Set: "set",
    ast.SetComp: "set",
    ast.Tuple: "tuple",
    ast.JoinedStr: "str",
}


# callees that make the same kind of object under two names
_SAME_KIND = {
    "thread.allocate_lock": "threading.Lock",
    "_thread.allocate_lock": "threading.Lock",
    "allocate_lock": "threading.Lock",
    "Lock": "threading.Lock",
    "RLock": "threading.RLock",
    "Condition": "threading.Condition",
    "int": "number",
    "float": "number",
}


# lower-case names of classes whose call makes an object of that class
_TYPES = frozenset(
    {
        "list",
        "dict",
        "set",
        "frozenset",
        "tuple",
        "bytearray",
        "bytes",
        "str",
        "int",
        "float",
        "bool",
    }
    | {"deque", "defaultdict", "object", "memoryview", "array"}
)


def _value_kind(value: ast.expr) -> str | None:
    """What kind of object an expression makes, as far as its text says: the callee of a call, the
    type of a display or a constant (`int` and `float` alike, `bool` apart); None when the text does not say
    (a name, an attribute, an operator)."""
    if isinstance(value, ast.Call):
        callee = ast.unparse(value.func)
        if callee in _SAME_KIND:
            return _SAME_KIND[callee]
        last = callee.rsplit(".", 1)[-1]
        if callee.split(".")[0] in ("self", "cls") or not (last[:1].isupper() or last in _TYPES):
            # a method or a function (`min(...)`, `_fast_limit(...)`): what it returns is not in the
            # text; a class is named in CapWords (PEP 8) or is one of the builtin types below
            return None
        return callee
    if isinstance(value, ast.Constant):
        kind = type(value.value).__name__
        return "number" if kind in ("int", "float") else kind  # 30 -> 30.0 changes no use
    return _DISPLAYS.get(type(value))


# what a module-level function or value may become (module_kind_change): a new object of any of these
_NEW_KINDS_OF_A_NAME = (
    DefinitionKind.FUNCTION,
    DefinitionKind.VALUE,
    DefinitionKind.CLASS,
    DefinitionKind.IMPORT,
)
# a class whose class-level names are fields or members, not plain class attributes
_SPECIAL_BASES = re.compile(r"'(Enum|IntEnum|StrEnum|Flag|IntFlag|NamedTuple|TypedDict)'")
# class-level names that are the class's machinery, not values
_CLASS_MACHINERY = frozenset(
    {"__slots__", "__dict__", "__weakref__", "__class__", "__bases__", "__mro__", "__module__"}
)
_CONTAINER_CALLS = frozenset(
    {"dict", "list", "set", "defaultdict", "OrderedDict", "deque", "bytearray", "Counter"}
)


_REDECORATABLE = (DefinitionKind.FUNCTION, DefinitionKind.METHOD)

# decorators that make a descriptor (a change of kind, refused as such) or are the property machinery
_DESCRIPTORS = frozenset({"staticmethod", "classmethod", "property", "setter", "getter", "deleter"})


def _descriptor_decorators(node: ast.stmt) -> bool:
    decorators = getattr(node, "decorator_list", [])
    for d in decorators:
        name = d.id if isinstance(d, ast.Name) else d.attr if isinstance(d, ast.Attribute) else ""
        if name in _DESCRIPTORS:
            return True
    return False


def _decorator_text(node: ast.stmt) -> str:
    """The decorator list as source, one `@expr` a line ("" for none)."""
    return "\n".join(f"@{ast.unparse(d)}" for d in getattr(node, "decorator_list", []))


def _builds_container(expr: ast.expr) -> bool:
    """Whether an expression builds a mutable container (a display, a comprehension, dict()...)."""
    if isinstance(expr, ast.Call):
        f = expr.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
        return name in _CONTAINER_CALLS
    return isinstance(
        expr, ast.List | ast.Dict | ast.Set | ast.ListComp | ast.DictComp | ast.SetComp
    )


class _Differ:
    def __init__(
        self,
        module: str,
        old: ModuleWalk,
        new: ModuleWalk,
        hooks: frozenset[str],
        added: bool,
        reimported: Mapping[str, str] | None = None,
        same_import: Callable[[str, str], bool] | None = None,
        star_exports: Callable[[int, str], list[frozenset[str] | None]] | None = None,
        star_sources: Callable[[int, str], list[str | None]] | None = None,
        equal_constant: Callable[[str, str], bool] | None = None,
        new_source: str = "",
    ) -> None:
        self.module = module
        self.new_source = new_source  # the text a generated class replacement runs again
        # what `from M import *` (level, M) binds in the old and the new version, when known
        self.star_exports = star_exports
        # what decides the names `from M import *` (level, M) binds, old and new version (walk.all_statements)
        self.star_sources = star_sources
        # whether two import texts (old, new) bind equal immutable constants (imports.constant_value)
        self.equal_constant = equal_constant
        # bound name -> module it is imported from by name, where this patch changes it
        self.reimported = reimported or {}
        self.same_import = same_import
        self.old = old
        self.new = new
        self.hooks = hooks
        self.added = added
        self.changes: list[TargetChange] = []
        self.refusals: list[Refusal] = []
        self.waived: list[Waiver] = []
        self.rebinding: set[str] = set()
        self.reevaluate: set[str] = set()
        self.transformable: dict[Refusal, Candidate] = {}
        self.replaceable: dict[Refusal, ClassReplacement] = {}
        self.kind_changed: set[str] = set()  # module-level names rebound to another kind of object
        self.kind_change_why: dict[str, str] = {}  # why a module-level kind change stays refused
        self.redecorated: dict[str, str] = {}  # qualname -> the old decorator list (source)
        self.blocks_changed: list[
            TargetChange
        ] = []  # BLOCK targets, appended after the definitions

    def refuse(self, kind: RefusalKind, qualname: str, reason: str, fix: str) -> Refusal:
        refusal = Refusal(self.module, qualname, reason, fix + hook_fix(kind), kind)
        hook = covering_hook(kind, self.hooks)
        if hook is not None:
            self.waived.append(Waiver(refusal, hook))
        else:
            self.refusals.append(refusal)
        return refusal

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
        if self.blocks(old, new):
            return
        if not added and not removed and self.star_imports_reordered():
            return
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

    def star_imports_reordered(self) -> bool:
        """The module-level statements are the same, and only star imports moved (isort, h11
        9c68aa86a6): True when that changes no binding. A star import binds what its module's
        `__all__` lists; when each moved import's module has a literal `__all__` (old and new
        version), no two of them list the same name and none lists a name the module binds otherwise,
        every name has the same single binder whatever the order, so the live namespace is already
        what the new order builds: nothing to patch."""
        if self.star_exports is None:
            return False

        def star(n: ast.stmt) -> bool:
            return isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names)

        def rest(w: ModuleWalk) -> list[str]:
            return [
                d for (d, _), n in zip(w.statements, w.statement_nodes, strict=True) if not star(n)
            ]

        if rest(self.old) != rest(self.new):
            return False  # something else moved too
        seen: set[str] = set()
        for n in self.new.statement_nodes:
            if not star(n):
                continue
            assert isinstance(n, ast.ImportFrom)
            versions = self.star_exports(n.level, n.module or "")
            if not versions or any(v is None for v in versions):
                return False
            names = frozenset().union(*(v for v in versions if v is not None))
            if names & seen:
                return False
            seen |= names
        own = {
            q
            for w in (self.old, self.new)
            for q in (*w.definitions, *w.dynamic_names)
            if "." not in q
        }
        return not (seen & own)

    def blocks(self, old: list[str], new: list[str]) -> bool:
        """Module-level statements that changed are all if/try blocks that only bind names
        (walk.binds_only), and the others kept their order: each new or changed block becomes a BLOCK
        target (staging runs it again in the live module, where its tests pick the branch the server
        took, and patches what it binds in place: docs/patchability.md, "Module-level if/try
        blocks"); a removed one leaves its names in memory, like a removed definition. True when so."""
        old_set, new_set = set(old), set(new)
        if [d for d in old if d in new_set] != [d for d in new if d in old_set]:
            return False  # reordered
        changed_old = [
            n for d, n in zip(old, self.old.statement_nodes, strict=True) if d not in new_set
        ]
        changed_new = [
            (i, n)
            for i, (d, n) in enumerate(zip(new, self.new.statement_nodes, strict=True))
            if d not in old_set
        ]
        if not all(binds_only(n) for n in changed_old) or not all(
            binds_only(n) or self.new_star_import(n) for _, n in changed_new
        ):
            return False
        # a class the block defines again is patched in place: only its defs may change. Several
        # branches may define the same name (`if posix: class trigger(...) else: class trigger(...)`):
        # the new class must keep the shape of one of the old ones of that name, in a block or at the
        # top level of the old module
        before: dict[str, set[str]] = {}
        old_nodes: dict[str, list[ast.ClassDef]] = {}
        for n in changed_old:
            for c in ast.walk(n):
                if isinstance(c, ast.ClassDef):
                    before.setdefault(c.name, set()).add(class_shape(c))
                    old_nodes.setdefault(c.name, []).append(c)
        for name, info in self.old.classes.items():
            if "." not in name:
                before.setdefault(name, set()).add(class_shape(info.node))
                old_nodes.setdefault(name, []).append(info.node)
        values: dict[int, dict[str, dict[str, list[str]]]] = {}
        for i, n in changed_new:
            for c in ast.walk(n):
                if isinstance(c, ast.ClassDef) and class_shape(c) not in before.get(
                    c.name, {class_shape(c)}
                ):
                    # only class-level values differ, in a way staging can check and redo on the
                    # live class (block_classes: waitress 50c66211a6's `family`)
                    rules = block_class_values(
                        c,
                        old_nodes.get(c.name, []),
                        (_module_tree(self.old), _module_tree(self.new)),
                        self.old_getter_fingerprints(c.name),
                    )
                    if rules is None or c.name in values.get(i, {}):
                        return False
                    values.setdefault(i, {})[c.name] = rules
        for i, node in changed_new:
            # staged after the definitions: a block's test or values may read an import the patch adds
            self.blocks_changed.append(
                TargetChange(
                    f"<block {i}>",
                    ChangeKind.CHANGED,
                    DefinitionKind.BLOCK,
                    None,
                    hashlib.sha256(ast.dump(node).encode()).hexdigest(),
                    old_value=encode_block_values(values.get(i, {})),
                )
            )
        return True

    def old_getter_fingerprints(self, cls: str) -> dict[str, str]:
        """Property name -> the fingerprint of its getter, for the old top-level class `cls` (a class
        in an old block has no definitions in the walk: staging then checks the property's shape)."""
        found: dict[str, str] = {}
        for q, d in self.old.definitions.items():
            parts = q.split(".")
            fp = _fp(d)
            if len(parts) == 3 and parts[0] == cls and parts[2] == "fget" and fp is not None:
                found[parts[1]] = fp
        return found

    def new_star_import(self, node: ast.stmt) -> bool:
        """A new `from M import *` of a module of the package whose `__all__` is built by the same
        statements in the old and the new version (walk.all_statements: h11 8bdcc7d9ff, `from .state
        import *`, `__all__ = [...]; __all__ += sentinels`): it binds what the live M exports, the names
        a fresh import of the new version binds. It becomes a BLOCK target: staging runs it in the live
        module and binds each name it gives that the live module lacks and the new version binds
        nowhere else; the very same object changes nothing; anything else is refused there
        (docs/patchability.md, "A new star import")."""
        if not (
            isinstance(node, ast.ImportFrom)
            and [a.name for a in node.names] == ["*"]
            and self.star_sources is not None
        ):
            return False
        versions = self.star_sources(node.level, node.module or "")
        return len(versions) == 2 and versions[0] is not None and versions[0] == versions[1]

    # -- classes ------------------------------------------------------------------------------------
    def class_layout(self, qualname: str, old: ClassInfo, new: ClassInfo) -> bool:
        """Refuse layout changes; return True when the class adds class-level defaults (CHANGED)."""
        fix_layout = "keep the class layout (bases, metaclass, __slots__) as it is"
        layout = [
            *(["changes its bases or metaclass"] if self.header(old) != self.header(new) else []),
            *(["changes its __slots__"] if old.slots != new.slots else []),
        ]
        added = [n for n in new.assignments if n not in old.assignments]
        fields = self.new_field_defaults(new, added) if new.node.decorator_list else ()
        why_not = (
            self.not_replaceable(qualname, old, new)
            if layout or (added and new.node.decorator_list)
            else None
        )
        if why_not is None and isinstance(fields, str):
            why_not = fields
        for what in layout:
            refusal = self.refuse(
                RefusalKind.CLASS_LAYOUT,
                qualname,
                f"class `{qualname}` {what} (class layout)",
                fix_layout + _replacement_fix(why_not),
            )
            if why_not is None and not isinstance(fields, str):
                self.replaceable[refusal] = self.replacement(qualname, new, fields)
        if old.decorators != new.decorators:
            self.refuse(
                RefusalKind.DECORATORS,
                qualname,
                f"the decorators of class `{qualname}` changed; they already ran on the live class",
                "keep the class decorators",
            )
        adds_defaults = False
        # names bound once are VALUE targets of their own (see `value`); the rest is class state
        old_values = {n for n in old.assignments if f"{qualname}.{n}" in self.old.definitions}
        new_values = {n for n in new.assignments if f"{qualname}.{n}" in self.new.definitions}
        changed = [
            n
            for n in old.assignments
            if n in new.assignments
            and not (n in old_values and n in new_values)
            and ast.dump(old.assignments[n]) != ast.dump(new.assignments[n])
        ]
        removed = [n for n in old.assignments if n not in new.assignments and n not in old_values]
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
                refusal = self.refuse(
                    RefusalKind.CLASS_FIELDS,
                    qualname,
                    f"class `{qualname}` is decorated and gains class-level names ({', '.join(added)}): "
                    "for a dataclass these are fields that change __init__ and the layout",
                    "leave the fields as they are" + _replacement_fix(why_not),
                )
                if why_not is None and not isinstance(fields, str):
                    self.replaceable[refusal] = self.replacement(qualname, new, fields)
            else:
                # an undecorated class: each added name is an ADDED VALUE target, set on the live class
                adds_defaults = any(n not in new_values for n in added)
        inherited = self.inherited_defaults(qualname)
        for attr, where in new.instance_attributes.items():
            if attr in old.instance_attributes or attr in new.assignments or attr in inherited:
                continue
            if attr not in new.plain_reads and attr in new.guarded_reads:
                continue  # read only as getattr(self, "x", default): live instances without it are fine
            if attr in _EVERY_INSTANCE_HAS:
                continue  # `self.__class__ = C` changes the instance's type: it creates no attribute
            if new.self_fed_stores.get(attr, 0) == new.attribute_stores.get(
                attr
            ) and self.no_made_up_attributes(qualname):
                # every store reads it first (`self.x = int(self.x)`): it only ever changes an x the
                # instance already has, so a live instance without x is what a fresh one would be
                continue
            derived = None
            if attr not in new.init_values:
                derived = self.kept_derivation(qualname, old, new, attr)
            rerun = None
            if attr not in new.init_values and derived is None:
                rerun = self.rerun_if(old, new, attr)
            value = new.init_values.get(attr)
            evaluated: ast.AST | None = value or (derived[0] if derived else None) or rerun
            if not self.transformer_may_read(old, new, evaluated):
                value = derived = rerun = None
            refusal = self.refuse(
                RefusalKind.INSTANCE_ATTRIBUTE,
                qualname,
                f"new instance attribute `self.{attr}` (assigned in `{where}`): live instances of `{qualname}` do not have it",
                f"give the attribute a class-level default (`{attr} = None` in the body of `{qualname}`), or "
                f'read it as getattr(self, "{attr}", default) everywhere, so live instances stay valid'
                + (
                    _BY_TRANSFORMER
                    if value is not None or derived is not None or rerun is not None
                    else _NO_TRANSFORMER
                ),
            )
            if value is not None:  # `--accept-transformer` can set it on the live instances
                self.transformable[refusal] = Candidate(
                    self.module, qualname, attr, ast.unparse(value)
                )
            elif derived is not None:
                expr, kept = derived
                self.transformable[refusal] = Candidate(
                    self.module, qualname, attr, ast.unparse(expr), kept
                )
            elif rerun is not None:
                self.transformable[refusal] = Candidate(
                    self.module, qualname, attr, "", statement=ast.unparse(rerun)
                )
        self.class_values_live_instances_read(qualname, old, new)
        self.attribute_kinds(qualname, old, new)
        return adds_defaults

    def class_values_live_instances_read(
        self, qualname: str, old: ClassInfo, new: ClassInfo
    ) -> None:
        """Refuse a change of which instances carry their own `X` when the class also has an `X`.

        An instance without its own `X` reads the class's. A live instance was made by the old
        `__init__`, so it has its own `X` exactly where the old code stored one; a fresh process's
        instance, where the new code does. Two ways they part (harness11's state check, session 11;
        waitress `Adjustments.clear_untrusted_proxy_headers`, which decides whether untrusted proxy
        headers are stripped):
        - the new `__init__` always stores `X` and the old one did not (36240c88b1: before only with
          a trusted proxy): a live instance without it reads the class value, a fresh one its own;
        - the new code never stores `X` and the old one did (603d2c12ce): a live instance keeps its
          old value, hiding the class value a fresh one reads.
        Not refused when the stored value is the same constant as the class value (nothing to see)."""

        def same_constant(value: ast.expr | None, name: str) -> bool:
            stmt = new.assignments.get(name)
            return (
                isinstance(value, ast.Constant)
                and stmt is not None
                and stmt.value is not None
                and ast.dump(value) == ast.dump(stmt.value)
            )

        for attr in new.assignments:
            before = old.init_store_paths.get(attr, frozenset())
            after = new.init_store_paths.get(attr, frozenset())
            if attr in old.assignments and after and before != after:
                if same_constant(new.init_always.get(attr), attr):
                    continue
                always = () in after and () not in before
                self.refuse(
                    RefusalKind.INSTANCE_ATTRIBUTE,
                    qualname,
                    f"the new `__init__` of `{qualname}` "
                    + (
                        f"always stores `self.{attr}` and the old one did not"
                        if always
                        else f"stores `self.{attr}` under other conditions than the old one"
                    )
                    + f": live instances without their own `{attr}` read the class-level `{attr}`, "
                    "fresh ones the value `__init__` stores (and the reverse)",
                    f"keep where `__init__` stores `self.{attr}` as it was, or write a transform hook that "
                    "gives the live instances the value the new `__init__` would have stored",
                )
            elif attr in old.instance_attributes and attr not in new.instance_attributes:
                if old.attribute_stores.get(attr) == 1 and same_constant(
                    old.init_always.get(attr), attr
                ):
                    continue
                self.refuse(
                    RefusalKind.INSTANCE_ATTRIBUTE,
                    qualname,
                    f"the new code of `{qualname}` no longer stores `self.{attr}`: live instances keep "
                    f"their own `{attr}`, which hides the class-level `{attr}` that fresh ones read",
                    f"keep storing `self.{attr}`, or write a transform hook that deletes it from the live "
                    "instances",
                )

    def attribute_kinds(self, qualname: str, old: ClassInfo, new: ClassInfo) -> None:
        """Refuse an attribute that both `__init__`s store at their top level, as objects of different
        kinds (`threading.RLock()` -> `threading.Condition()`, `[]` -> `deque()`, `None` -> `Buffer()`):
        every live instance keeps an object of the old kind, and the new methods may use what only the
        new kind has (waitress 5583715063: the new `handle_close` calls `outbuf_lock.notify()`, the live
        channel's lock is the old RLock, and the server's loop dies; harness11, session 11). A value
        of the same kind made differently (other arguments, another constant) is not refused: the
        live instances keep theirs, as any live state does."""
        for attr, before in old.init_always.items():
            after = new.init_always.get(attr)
            if after is None:
                continue
            was, now = _value_kind(before), _value_kind(after)
            if was is None or now is None or was == now:
                continue
            self.refuse(
                RefusalKind.INSTANCE_ATTRIBUTE,
                qualname,
                f"the new `__init__` of `{qualname}` makes `self.{attr}` a `{now}` where the old one made "
                f"a `{was}`: live instances keep their `{was}`, which the new code may use as a `{now}`",
                f"keep `self.{attr}` of the same kind and add a new attribute for the new object, read "
                f'with getattr(self, "{attr}_new", None) or given a class-level default',
            )

    def header(self, info: ClassInfo) -> str:
        """The class's bases and keywords as compared for a layout change, with an explicit `object`
        base left out when neither version binds the name `object` in the module (session 11): in
        Python 3 `class C(object):` and `class C:` make the same MRO and the same layout (h11
        c37f9ebe22 and 4746b0a0ff, waitress e2adf082e6: Python 2 compatibility added or dropped)."""
        bases = info.node.bases
        if not any(
            "object" in v.definitions or "object" in v.dynamic_names for v in (self.old, self.new)
        ):
            bases = [b for b in bases if not (isinstance(b, ast.Name) and b.id == "object")]
        return ast.dump(ast.Tuple(elts=list(bases), ctx=ast.Load())) + "".join(
            ast.dump(k) for k in info.node.keywords
        )

    def replacement(
        self, qualname: str, new: ClassInfo, fields: tuple[tuple[str, str], ...]
    ) -> ClassReplacement:
        """The generated replacement of top-level class `qualname` by its new class statement."""
        node = new.node
        lines = self.new_source.splitlines(keepends=True)
        assert node.end_lineno is not None
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])  # decorators included
        return ClassReplacement(
            self.module,
            qualname,
            "".join(lines[first - 1 : node.end_lineno]),
            first,
            ast.unparse(ast.Module(body=list(self.new.future), type_ignores=[])),
            fields,
        )

    def dataclass_decorators(self, old: ClassInfo, new: ClassInfo) -> bool:
        """Both versions are decorated by the very same list, and each decorator is the standard
        library's `dataclass` (bare, or called with constant keyword arguments), bound by an import of
        the module in both versions (`from dataclasses import dataclass`, or `import dataclasses`). Its
        effects are the new class's own (generated __init__, __eq__, __repr__, fields): running the new
        class statement again makes the class a fresh import makes, and registers nothing elsewhere."""
        if not new.node.decorator_list or old.decorators != new.decorators:
            return False
        for d in new.node.decorator_list:
            if isinstance(d, ast.Call):
                if d.args or not all(
                    k.arg is not None and isinstance(k.value, ast.Constant) for k in d.keywords
                ):
                    return False
                d = d.func
            if isinstance(d, ast.Name):
                want = f"from dataclasses import dataclass{'' if d.id == 'dataclass' else ' as ' + d.id}"
            elif (
                isinstance(d, ast.Attribute)
                and d.attr == "dataclass"
                and isinstance(d.value, ast.Name)
                and d.value.id == "dataclasses"
            ):
                d, want = d.value, "import dataclasses"
            else:
                return False
            for version in (self.old, self.new):
                bound = version.definitions.get(d.id)
                if (
                    bound is None
                    or bound.owner
                    or not isinstance(bound.node, ast.Import | ast.ImportFrom)
                ):
                    return False
                names = [a for a in bound.node.names if (a.asname or a.name) == d.id]
                text = ast.unparse(
                    ast.ImportFrom(module=bound.node.module, names=names, level=bound.node.level)
                    if isinstance(bound.node, ast.ImportFrom)
                    else ast.Import(names=names)
                )
                if text != want:
                    return False
        return True

    def new_field_defaults(
        self, new: ClassInfo, added: list[str]
    ) -> tuple[tuple[str, str], ...] | str:
        """The default of each field `added` to a dataclass, as the expression a generated
        transformer gives the live instances (the value the new __init__ gives a field no caller
        passes: `x: T = 0`, `field(default=0)`, `field(default_factory=list)` -> `list()`), or why
        there is none: a field without a default (every caller passes it: no value is the new
        __init__'s own), `ClassVar`/`InitVar`, or a `field(...)` this cannot read. A plain `NAME = value`
        is a class attribute, not a field: it needs no value on the instances."""
        out: list[tuple[str, str]] = []
        for name in added:
            stmt = new.assignments[name]
            if not isinstance(stmt, ast.AnnAssign):
                continue
            if re.search(r"\b(ClassVar|InitVar)\b", ast.unparse(stmt.annotation)):
                return f"the new class-level name `{name}` is a ClassVar or an InitVar"
            value = stmt.value
            if value is None:
                return f"the new field `{name}` has no default: only a caller can give it a value"
            if (
                isinstance(value, ast.Call)
                and isinstance(value.func, ast.Name | ast.Attribute)
                and ast.unparse(value.func) in ("field", "dataclasses.field")
            ):
                given = {k.arg: k.value for k in value.keywords}
                if value.args or set(given) - {"default", "default_factory", "repr", "compare"}:
                    return f"the new field `{name}` is a field(...) with more than a default"
                if "default" in given:
                    out.append((name, ast.unparse(given["default"])))
                elif "default_factory" in given:
                    out.append((name, f"({ast.unparse(given['default_factory'])})()"))
                else:
                    return (
                        f"the new field `{name}` has no default: only a caller can give it a value"
                    )
                continue
            out.append((name, ast.unparse(value)))
        return tuple(out)

    def not_replaceable(self, qualname: str, old: ClassInfo, new: ClassInfo) -> str | None:
        """Why a generated transformer cannot replace class `qualname` whose layout changes (None: it
        can; livepatch.migrate says what is checked on the live objects). The hook runs the new class
        statement over the live module's globals before the swap (the names the patch adds to modules
        bound, session 10), so the statement may read only names the live module binds to what the new
        version binds (reads_live_names); its decorators
        would run again (a dataclass: its fields decide __init__ and the layout); a class of the module
        deriving from it would keep the old layout; and a class that stops assigning an attribute may
        move state the rebuilt instance would drop (session 10)."""
        if "." in qualname:
            return "only a class at the top level of its module is replaced"
        if (new.node.decorator_list or old.node.decorator_list) and not self.dataclass_decorators(
            old, new
        ):
            return (
                "the class is decorated (by something other than the same `dataclass` in both "
                "versions); its decorators would run again"
            )
        if new.node.keywords or old.node.keywords:
            return "the class has a metaclass or class keywords; only plain classes are rebuilt"
        derived = sorted(
            q
            for version in (self.old, self.new)
            for q, info in version.classes.items()
            if any(isinstance(b, ast.Name) and b.id == qualname for b in info.node.bases)
        )
        if derived:
            return f"{', '.join(derived)} derive(s) from it and would keep the old layout"
        if set(old.instance_attributes) - set(new.instance_attributes):
            return "the class stops assigning an attribute: its state may move"
        todo, seen = [qualname], set()
        while (
            todo
        ):  # the module's classes it derives from: one with __init_subclass__ would run it again
            info = self.new.classes.get(todo.pop())
            if info is None or info.qualname in seen:
                continue
            seen.add(info.qualname)
            if info.qualname != qualname and any(
                isinstance(st, ast.FunctionDef) and st.name == "__init_subclass__"
                for st in info.node.body
            ):
                return f"its base {info.qualname} defines __init_subclass__, which would run again"
            todo += [b.id for b in info.node.bases if isinstance(b, ast.Name)]
        reads = set(new.body_reads)
        for expr in [
            *new.node.bases,
            *(k.value for k in new.node.keywords),
            *new.node.decorator_list,
        ]:
            reads |= free_reads(expr)
        if not self.reads_live_names(reads):
            return (
                "the class statement reads a name the patch changes, or one nothing the swap binds"
            )
        return None

    def transformer_may_read(self, old: ClassInfo, new: ClassInfo, node: ast.AST | None) -> bool:
        """Whether a generated transformer may evaluate `node` (an expression or an `if` of the new
        __init__) on live instances. The hook runs under global quiescence before the swap, with the
        names the patch adds to modules already bound and the old code still installed
        (runtime/patcher.py; session 10: StagedPatch.bind_new_names). So it may read a module-level
        name the patch adds (h11 ec0ff35e9fba's `delimiter_regex`, kvserver 1287f55ec9's `PubSub`; in
        session 9 those raised NameError live, or were refused). Refused: a name that nothing the swap
        binds gives (bound only by code that is not a target, and unbound in the old version), a
        module-level definition the patch changes (a value would be read as the old one, a function or
        class would run its old code: the hook would build what the old version builds), and a class
        that stops assigning an attribute (waitress d060d2424292 and 5bd69e954571: `queue_lock` and
        `thread_mgmt_lock` replaced by new locks and conditions): the new attributes take over state
        the live instance keeps elsewhere, which a fresh value drops (both broke live requests when
        applied; session 9). No transformer then. Why not run the hook after the swap instead: a
        thread that is not managed is not parked, and would run the new code on instances the hook
        has not reached yet (waitress a4135c0b2b36 crashed its server so, session 10)."""
        if node is None:
            return True
        if set(old.instance_attributes) - set(new.instance_attributes):
            return False
        return self.reads_live_names(free_reads(node))

    def reads_live_names(self, names: Iterable[str]) -> bool:
        """Every module-level name of `names` is bound, when a transform hook runs (before the swap,
        after StagedPatch.bind_new_names), to what the new version binds: a name the patch adds to the
        module (not one shadowing a builtin), or one it does not change. A definition the patch
        changes would be the old one there (transformer_may_read)."""
        old_top = {q: d for q, d in self.old.definitions.items() if "." not in q}
        for name in names:
            d = self.new.definitions.get(name)
            if d is None and name not in self.new.dynamic_names:
                continue  # a builtin, or `self`
            before = old_top.get(name)
            if before is None and name not in self.old.dynamic_names:
                if d is None or name in vars(builtins):
                    # bound only by code the patch does not stage (unbound live), or a new global
                    # shadowing a builtin (bound by the swap only: the hook would read the builtin)
                    return False
                continue  # added by the patch: bound before the hook runs
            if d is not None and (before is None or ast.dump(before.node) != ast.dump(d.node)):
                return False  # changed by the patch: the hook would see the old definition
        return True

    @staticmethod
    def rerun_if(old: ClassInfo, new: ClassInfo, attr: str) -> ast.If | None:
        """The `if` statement of the new __init__ that stores `self.attr` (walk._init_ifs), when a
        transformer may run it again on live instances: every attribute it stores is new (the old class
        stores none of them anywhere: running it must not reset an attribute the live instance has)
        and the class stops assigning no attribute (its state may move to the new ones)."""
        stmt = new.init_ifs.get(attr)
        if stmt is None or set(old.instance_attributes) - set(new.instance_attributes):
            return None
        stored = {a for a, s in new.init_ifs.items() if s is stmt}
        return None if stored & set(old.instance_attributes) else stmt

    def no_made_up_attributes(self, qualname: str) -> bool:
        """Neither `qualname` nor any class of the module it derives from or that derives from it (both
        versions) defines __getattr__/__getattribute__, and every base of those is a class of the
        module or `object`: a read of a missing `self.x` raises AttributeError, it is never made up."""
        for q in self.related_classes(qualname):
            for version in (self.old, self.new):
                info = version.classes.get(q)
                if info is None:
                    continue
                if info.makes_up_attributes or info.node.keywords:
                    return False
                for base in info.node.bases:
                    if not (
                        isinstance(base, ast.Name)
                        and (base.id in version.classes or base.id == "object")
                    ):
                        return False
        return True

    def kept_derivation(
        self, qualname: str, old: ClassInfo, new: ClassInfo, attr: str
    ) -> tuple[ast.expr, tuple[str, ...]] | None:
        """The expression a transformer can give a live instance for the new `self.attr` that the new
        __init__ computes from constructor arguments the object keeps (`self.adj = adj` ... `self.inbuf =
        Buffer(adj.size)` -> `Buffer(self.adj.size)`), and the kept attributes it reads; None when that is
        not provably the value the new __init__ would have given: each parameter read must be kept by
        the old __init__ the same way (same attribute, same earlier statements rebinding it, e.g. a
        default built when it is None), and the kept attribute assigned by that one statement only, in
        both versions, in no other method and in no base or subclass of the module (the live value is
        still the argument); and the class stops assigning no attribute (its state may move to the new
        one)."""
        derived = new.init_derived.get(attr)
        if derived is None:
            return None
        if set(old.instance_attributes) - set(new.instance_attributes):
            # an attribute the new version stops assigning (waitress 4b6e73772c: `outbuf` becomes
            # `outbufs`) may hold the state the new one takes over: a fresh value would drop it
            return None
        expr, params = derived
        kept: list[str] = []
        related = self.related_classes(qualname) - {qualname}
        for p in sorted(params):
            a, before = new.init_kept[p]
            if old.init_kept.get(p) != (a, before):
                return None
            if old.attribute_stores.get(a) != 1 or new.attribute_stores.get(a) != 1:
                return None
            for q in related:
                for version in (self.old, self.new):
                    other = version.classes.get(q)
                    if other is not None and a in other.instance_attributes:
                        return None
            kept.append(a)
        return expr, tuple(kept)

    def related_classes(self, qualname: str) -> set[str]:
        """`qualname` and the classes of this module it derives from or that derive from it (by base
        name, both versions, transitively)."""
        edges: dict[str, set[str]] = {}
        for version in (self.old, self.new):
            for q, info in version.classes.items():
                for base in info.node.bases:
                    if isinstance(base, ast.Name) and base.id in version.classes:
                        edges.setdefault(q, set()).add(base.id)
                        edges.setdefault(base.id, set()).add(q)
        seen = {qualname}
        todo = [qualname]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    # -- values (names bound once by a simple assignment, module or class level) ------------------------
    def dependents(self) -> set[str]:
        """VALUEs whose statement is unchanged but read a VALUE that changes, transitively: evaluated
        again (after what they read, in source order) as a fresh process would."""
        old_defs, new_defs = self.old.definitions, self.new.definitions

        def is_value(q: str) -> bool:
            o, n = old_defs.get(q), new_defs.get(q)
            return (
                o is not None
                and n is not None
                and o.kind is DefinitionKind.VALUE
                and n.kind is DefinitionKind.VALUE
            )

        changed = {q for q in new_defs if is_value(q) and old_defs[q].value != new_defs[q].value}
        changed |= set(self.reimported)  # a copy of a value another module changes
        out: set[str] = set()
        queue = list(changed)
        while queue:
            for reader in self.old.readers.get(queue.pop(), ()):
                if is_value(reader) and reader not in changed and reader not in out:
                    out.add(reader)
                    queue.append(reader)
        return out

    def value(
        self, qualname: str, old: Definition, new: Definition, reevaluated: bool = False
    ) -> str | None:
        """Check a VALUE present in both; the old expression's text when it changed (or is evaluated
        again because what it read changed), else None."""
        if old.value == new.value and not reevaluated:
            return None
        in_class = bool(new.owner)
        kind = RefusalKind.CLASS_STATE if in_class else RefusalKind.MODULE_STATE
        where = (
            f"class-level value `{qualname}`" if in_class else f"module-level value `{qualname}`"
        )
        old_node = old.node
        assert isinstance(old_node, ast.Assign | ast.AnnAssign) and old_node.value is not None
        if in_class:
            info = self.new.classes[new.owner]
            if info.node.decorator_list or _SPECIAL_BASES.search(info.header):
                self.refuse(
                    kind,
                    qualname,
                    f"{where} changed in a decorated class or an Enum/NamedTuple/TypedDict: a field "
                    "there is part of the class's layout, built when the class was",
                    "keep the value",
                )
                return None
            if new.name in _CLASS_MACHINERY:
                self.refuse(
                    RefusalKind.CLASS_LAYOUT,
                    qualname,
                    f"{where} is part of the class machinery",
                    "keep it as it is",
                )
                return None
        dynamic = (self.old.namespace_readers - {new.name}) | (
            self.new.namespace_readers & {new.name}
        )
        if not in_class and dynamic:
            self.refuse(
                kind,
                qualname,
                f"{where} changed but {', '.join(f'`{c}`' for c in sorted(dynamic)[:3])} read the "
                "module's namespace itself (globals(), vars()...) when the module body ran",
                "compute the value inside the function that uses it",
            )
            return None
        readers = self.old.readers.get(qualname, set()) - {qualname, new.name}
        readers = {
            r for r in readers if not self._reevaluated(r, new.owner) and not self._gone_unread(r)
        }  # a reader that changes too is built again from the new value; a removed one is unread
        if readers:
            names = ", ".join(f"`{r}`" for r in sorted(readers)[:3])
            self.refuse(
                kind,
                qualname,
                f"{where} changed but {names} read it when the {'class' if in_class else 'module'} "
                "body ran: they hold the old value",
                "compute the value inside the function that uses it, or change its readers too",
            )
            return None
        if (
            new.name != "__all__"
            and _builds_container(old_node.value)
            and (new.name in self.old.mutated)
        ):
            self.refuse(
                kind,
                qualname,
                f"{where} is a container the code changes in place: it holds run-time state",
                "keep the container and change its contents in a hook",
            )
            return None
        return ast.unparse(old_node.value)

    def _reevaluated(self, reader: str, owner: str) -> bool:
        """Whether `reader` (a VALUE qualname, or a bare module-level name) is a VALUE this patch
        evaluates again."""
        for q in (reader, f"{owner}.{reader}" if owner else reader):
            old, new = self.old.definitions.get(q), self.new.definitions.get(q)
            if (
                old is not None
                and new is not None
                and old.kind is DefinitionKind.VALUE
                and new.kind is DefinitionKind.VALUE
                and (old.value != new.value or q in self.reevaluate)
            ):
                return True
        return False

    def _gone_unread(self, reader: str) -> bool:
        """Whether `reader` is a module-level VALUE that the new version no longer binds and that no
        code of the new module reads (nor the namespace itself): the old value it computed stays in
        the live module, like any removed definition, but nothing the patch runs can reach it by that
        name, and a fresh process at the new version has no such name at all (kvserver b4999029ef:
        `_BULK_HEADERS` read the changed `_BULK_HEADERS_SIZE` and is removed)."""
        old = self.old.definitions.get(reader)
        return (
            old is not None
            and old.kind is DefinitionKind.VALUE
            and not old.owner
            and reader not in self.new.definitions
            and reader not in self.new.dynamic_names
            and reader not in self.new.loads
            and not self.new.namespace_readers
        )

    def _copy_was_read(self, name: str, source: str, how: str) -> bool:
        """Refuse (True) when the module body read its copy of `name` (from `source`, which the patch
        changes) into something this patch does not evaluate again: that holds the old value."""
        readers = self.old.readers.get(name, set()) - {name}
        readers = {r for r in readers if not self._reevaluated(r, "") and not self._gone_unread(r)}
        if not readers:
            return False
        names = ", ".join(f"`{r}`" for r in sorted(readers)[:3])
        self.refuse(
            RefusalKind.MODULE_STATE,
            name,
            f"`{name}` ({how}) was read by {names} when the module body ran: they hold the old value",
            f"import the module and read `{source.rpartition('.')[2]}.{name}` at call time",
        )
        return True

    def follow(self, qualname: str, old: Definition, new: Definition) -> None:
        """`from m import N` where the patch changes `m.N`: the copy is rebound to the new value (a
        CHANGED import whose old_value is the import statement: staging takes the value `m`'s stager
        built), unless something read the copy while this module ran."""
        source = self.reimported[qualname]
        if old.decorators != new.decorators:
            self.refuse(
                RefusalKind.IMPORT,
                qualname,
                f"`{qualname}` is imported from {source}, which changes it, and its import changes too",
                "change one of them in this patch and the other in the next",
            )
            return
        if self._copy_was_read(
            qualname, source, f"imported by name from {source}, which changes it"
        ):
            return
        self.changes.append(
            TargetChange(qualname, ChangeKind.CHANGED, new.kind, old_value=new.decorators)
        )

    def star_follow(self, name: str, source: str) -> None:
        """`from source import *` may have copied `name`, which the patch changes in `source`: staging
        rebinds the copy when the live one is the very object `source` holds (when `__all__` left the
        name out there is no copy and nothing changes), unless something read it at import time."""
        if self._copy_was_read(
            name, source, f"copied by `from {source} import *`, which changes it"
        ):
            return
        self.changes.append(
            TargetChange(
                name, ChangeKind.CHANGED, DefinitionKind.IMPORT, old_value=f"from {source} import *"
            )
        )

    def imports(self, qualname: str, old: Definition, new: Definition) -> bool:
        """A changed import: True (CHANGED) when both paths bind the same object as far as the package's
        sources tell (staging checks it against the live object), else refused."""
        if old.decorators == new.decorators:
            return False
        if self.same_import is not None and self.same_import(old.decorators, new.decorators):
            return True
        if self.equal_constant is not None and self.equal_constant(old.decorators, new.decorators):
            # both paths lead to a name bound once to the same pure literal of immutable constants
            # (waitress 94e23114bf: PROXY_HEADERS = frozenset({...}) moved to a new module): the live
            # name already holds an equal, immutable object; only its identity differs (session 9)
            return False
        self.refuse(
            RefusalKind.IMPORT,
            qualname,
            f"the import bound to `{qualname}` changed ({old.decorators} -> {new.decorators}) and the "
            "package's sources do not show that both bind the same object",
            "import the new thing under a new name",
        )
        return False

    def inherited_defaults(self, qualname: str) -> set[str]:
        """Class-level names of the bases of `qualname` defined in this module, in both versions (a
        live instance without its own `x` reads the base's `x`), transitively."""
        out: set[str] = set()
        todo = [qualname]
        seen: set[str] = set()
        while todo:
            q = todo.pop()
            if q in seen:
                continue
            seen.add(q)
            for version in (self.old, self.new):
                info = version.classes.get(q)
                if info is None:
                    continue
                for base in info.node.bases:
                    if isinstance(base, ast.Name) and base.id in version.classes:
                        todo.append(base.id)
        for q in seen - {qualname}:
            old, new = self.old.classes.get(q), self.new.classes.get(q)
            if old is not None and new is not None:
                out |= set(old.assignments) & set(new.assignments)
        return out

    def class_member_kind_change(
        self,
        was: Definition,
        new: Definition,
        old_bound: Mapping[tuple[str, str], Definition],
        new_bound: Mapping[tuple[str, str], Definition],
    ) -> TargetChange | None:
        """A plain method of an undecorated class that becomes a class-level value, or the reverse
        (`__nonzero__ = __bool__` becoming a method of its own): the class attribute is rebound, like an
        added member, when nothing read the old one while the class body ran (other than members that
        change kind too). The TargetChange is ADDED and says what the live attribute must be (staging
        checks it): the old method's fingerprint, or the old value's expression. None: refuse."""
        kinds = {was.kind, new.kind}
        if not new.owner or kinds != {DefinitionKind.METHOD, DefinitionKind.VALUE}:
            return None
        info = self.new.classes.get(new.owner)
        before = self.old.classes.get(new.owner)
        if (
            info is None
            or before is None
            or info.node.decorator_list
            or _SPECIAL_BASES.search(info.header)
            or new.name in _CLASS_MACHINERY
            or was.decorators not in ("", "[]")
            or new.decorators not in ("", "[]")
        ):
            return None

        def flips(qualname: str) -> bool:
            owner, _, name = qualname.rpartition(".")
            o, n = old_bound.get((owner, name)), new_bound.get((owner, name))
            return o is not None and n is not None and o.kind is not n.kind

        readers = self.old.readers.get(was.qualname, set()) - {was.qualname}
        if any(not flips(r) for r in readers):
            return None
        if was.kind is DefinitionKind.METHOD:
            return TargetChange(new.qualname, ChangeKind.ADDED, new.kind, _fp(was), _fp(new))
        old_node = was.node
        assert isinstance(old_node, ast.Assign | ast.AnnAssign) and old_node.value is not None
        return TargetChange(
            new.qualname,
            ChangeKind.ADDED,
            new.kind,
            None,
            _fp(new),
            old_value=ast.unparse(old_node.value),
        )

    def module_kind_change(self, was: Definition, new: Definition) -> TargetChange | None:
        """A module-level name that changes kind: an alias `a = b` (or any value) becoming its own `def
        a`, a function becoming a value (`WSGIServer = create_server`) or a class. The name is rebound,
        like an added definition, when nothing can hold the old object through this name but the
        module itself and the copies the patch follows (`from m import a` elsewhere in the package):
        the old object is an undecorated function or a value (a class has instances and subclasses
        that would keep it), no module-level code read the name while the module ran (a table `{"x":
        a}`, a default, a class body, a decorator: they hold the old object), and no code binds it
        dynamically. Staging checks the live object is what the old version bound (fingerprint, or
        the old expression) and that nothing else in the heap refers to it (runtime/values.py,
        `heap_holders`). None: refuse."""
        if (
            new.owner
            or was.kind not in (DefinitionKind.FUNCTION, DefinitionKind.VALUE)
            or new.kind not in _NEW_KINDS_OF_A_NAME
            or (was.decorators not in ("", "[]") and was.kind is DefinitionKind.FUNCTION)
            or new.name in self.old.dynamic_names
            or new.name in self.new.dynamic_names
            or new.name in self.new.namespace_readers
            or self.old.namespace_readers
            or new.name.startswith("__")
        ):
            return None
        readers = self.old.readers.get(was.qualname, set()) - {was.qualname}
        if readers:
            names = ", ".join(f"`{r}`" for r in sorted(readers)[:3])
            self.kind_change_why[new.qualname] = (
                f" and {names} read the old one when the module body ran: they hold it"
            )
            return None
        self.kind_changed.add(new.qualname)
        if was.kind is DefinitionKind.FUNCTION:
            return TargetChange(new.qualname, ChangeKind.ADDED, new.kind, _fp(was), _fp(new))
        old_node = was.node
        assert isinstance(old_node, ast.Assign | ast.AnnAssign) and old_node.value is not None
        return TargetChange(
            new.qualname,
            ChangeKind.ADDED,
            new.kind,
            None,
            _fp(new),
            old_value=ast.unparse(old_node.value),
        )

    # -- functions ----------------------------------------------------------------------------------
    def function(self, qualname: str, old: Definition, new: Definition) -> bool:
        """Check a function-like definition present in both; True when it changed."""
        assert old.code is not None and new.code is not None
        for problem in replacement_problems(qualname, old.code, new.code):
            self.refuse(problem.kind, qualname, problem.reason, problem.fix)
        redecorated = False
        if old.decorators != new.decorators:
            if new.kind in _REDECORATABLE and not (
                _descriptor_decorators(old.node) or _descriptor_decorators(new.node)
            ):
                # staging runs the new decorators on the live function and refuses what they return
                # unless it is that function or a wrapper of it (__wrapped__)
                self.redecorated[qualname] = _decorator_text(old.node)
                redecorated = True
            else:
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
        changed = _fp(old) != _fp(new) or defaults_changed or redecorated
        if changed and any(isinstance(n, ast.Global | ast.Nonlocal) for n in ast.walk(new.node)):
            self.rebinding.add(qualname)
        return changed

    def run(self) -> None:
        self.module_statements()
        self.reevaluate = self.dependents()
        for name, source in sorted(self.reimported.items()):
            d = self.new.definitions.get(name)
            if source.startswith("*"):  # a copy `from M import *` may have made
                if d is None:
                    self.star_follow(name, source[1:])
                continue  # or this module binds the name itself: not a copy
            if d is None or d.kind is not DefinitionKind.IMPORT:
                self.refuse(
                    RefusalKind.MODULE_STATE,
                    name,
                    f"`{name}` is imported by name from {source}, which changes it, in module-level "
                    "code that already ran (an if/try block) or is rebound here",
                    f"import the module and read `{source.rpartition('.')[2]}.{name}` at call time",
                )
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

        old_bound = {(d.owner, d.name): d for d in old_defs.values()}
        new_bound = {(d.owner, d.name): d for d in new_defs.values()}
        for qualname, new in new_defs.items():
            if inside(qualname, added_classes):
                continue
            old = old_defs.get(qualname)
            if old is None:
                was = old_bound.get((new.owner, new.name))
                if was is not None and was.kind is not new.kind:  # e.g. a method becomes a property
                    rebound = self.class_member_kind_change(was, new, old_bound, new_bound)
                    if rebound is not None:
                        self.changes.append(rebound)
                        continue
                    self.refuse(
                        RefusalKind.KIND_CHANGE,
                        qualname,
                        f"`{was.qualname}` changes from a {was.kind} to a {new.kind}",
                        "keep the old definition as it is and add the new one under another name",
                    )
                    continue
                if (
                    new.kind is DefinitionKind.VALUE
                    and not new.owner
                    and (
                        new.name in self.old.dynamic_names or new.name in self.new.namespace_readers
                    )
                ):
                    self.refuse(
                        RefusalKind.MODULE_STATE,
                        qualname,
                        f"`{qualname}` is new but reads the module's namespace itself (globals(), "
                        "vars()...), or the old version bound it in module-level code that already ran",
                        "keep the old module-level code",
                    )
                    continue
                if (
                    not new.owner
                    and new.kind is not DefinitionKind.VALUE
                    and new.name in self.old.dynamic_names
                    and new.name not in self.new.dynamic_names
                ):
                    if new.kind is not DefinitionKind.IMPORT:
                        self.refuse(
                            RefusalKind.MODULE_STATE,
                            qualname,
                            f"`{qualname}` is new at top level but the old version bound it in "
                            "module-level code (an if/try block) that already ran: a new object "
                            "would leave its holders with the old one",
                            "keep the definition inside the block",
                        )
                        continue
                    # `try: from Queue import Queue ...` became `from queue import Queue`: staging
                    # checks the import binds the very object the live name holds (old_value says so)
                    self.changes.append(
                        TargetChange(
                            qualname,
                            ChangeKind.ADDED,
                            new.kind,
                            None,
                            _fp(new),
                            old_value=BOUND_BY_BLOCK,
                        )
                    )
                    continue
                before = self.old.classes.get(new.owner) if new.owner else None
                if (
                    new.kind is DefinitionKind.VALUE
                    and before is not None
                    and new.name in before.assignments
                ):  # the old class body bound it more than once: the live class has it
                    self.refuse(
                        RefusalKind.CLASS_STATE,
                        qualname,
                        f"class-level state of `{new.owner}` changed (`{new.name}`, bound more than "
                        "once in the old class body); the class body already ran",
                        "keep the class-level values and compute new ones in the methods",
                    )
                    continue
                self.changes.append(
                    TargetChange(qualname, ChangeKind.ADDED, new.kind, None, _fp(new))
                )
                continue
            if old.kind is not new.kind:
                rebound = self.class_member_kind_change(
                    old, new, old_bound, new_bound
                ) or self.module_kind_change(old, new)
                if rebound is not None:
                    self.changes.append(rebound)
                    continue
                self.refuse(
                    RefusalKind.KIND_CHANGE,
                    qualname,
                    f"`{qualname}` changes from a {old.kind} to a {new.kind}"
                    + self.kind_change_why.get(qualname, ""),
                    "keep the old definition as it is and add the new one under another name",
                )
                continue
            if new.kind is DefinitionKind.IMPORT:
                if qualname in self.reimported:
                    self.follow(qualname, old, new)
                    continue
                kind = ChangeKind.CHANGED if self.imports(qualname, old, new) else ChangeKind.SAME
                self.changes.append(TargetChange(qualname, kind, new.kind))
                continue
            if new.kind is DefinitionKind.VALUE:
                old_text = self.value(qualname, old, new, qualname in self.reevaluate)
                kind = ChangeKind.CHANGED if old_text is not None else ChangeKind.SAME
                self.changes.append(
                    TargetChange(qualname, kind, new.kind, _fp(old), _fp(new), old_value=old_text)
                )
                continue
            if new.kind is DefinitionKind.CLASS:
                changed = self.class_layout(
                    qualname, self.old.classes[qualname], self.new.classes[qualname]
                )
            else:
                changed = self.function(qualname, old, new)
            kind = ChangeKind.CHANGED if changed else ChangeKind.SAME
            self.changes.append(
                TargetChange(
                    qualname,
                    kind,
                    new.kind,
                    _fp(old),
                    _fp(new),
                    old_value=self.redecorated.get(qualname),
                )
            )
        for qualname, old in old_defs.items():
            if qualname in new_defs or inside(qualname, removed_classes):
                continue
            now = new_bound.get((old.owner, old.name))
            if now is not None and now.kind is not old.kind:
                continue  # refused as a kind change above
            self.changes.append(
                TargetChange(qualname, ChangeKind.REMOVED, old.kind, _fp(old), None)
            )
        self.changes.extend(self.blocks_changed)


def _module_tree(walk: ModuleWalk) -> ast.Module:
    """The top-level statements a walk knows (definitions and other statements), as one tree: what
    runs at import time, for block_classes' reader scan."""
    nodes = [d.node for d in walk.definitions.values() if not d.owner]
    return ast.Module(body=[*nodes, *walk.statement_nodes], type_ignores=[])


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
    module: str,
    old_source: str | None,
    new_source: str,
    *,
    hooks: Iterable[str] = (),
    package: PackageImports | None = None,
    reimported: Mapping[str, str] | None = None,
    new_package: PackageImports | None = None,
) -> ModuleDiff:
    """Compare two versions of one module, definition by definition (sources are compiled, never run).

    `old_source` None: the old version has no such module (its whole top level will run for the first
    time); "" is an existing, empty module. `hooks`: the hook names the patch's hooks file defines
    (hooks_info.defined_hooks); a refusal one of them covers (model.COVERING_HOOKS) is moved to `waived`.
    Returns every definition's TargetChange (SAME ones included, in new-source order, then REMOVED ones),
    the Refusals and the waivers. `package`: the import statements of the package's other modules (old
    version), for the cross-module rules (a value another module copied by name; two imports binding
    the same object). `reimported`: names this module imports by name (bound name -> source module,
    "*module" for a copy a `from module import *` may have made) from a module where the patch changes
    them (diff_sources finds them). Raises
    SyntaxError when either source does not compile (its filename names the module and version). Pure
    function; any thread.
    """
    old = walk_source(old_source or "", f"<{module} (old)>")
    new = walk_source(new_source, f"<{module} (new)>")
    same = (lambda a, b: package.same_object(module, a, b)) if package is not None else None

    def star_exports(level: int, source: str) -> list[frozenset[str] | None]:
        return [p.star_exports(module, level, source) for p in (package, new_package) if p]

    def star_sources(level: int, source: str) -> list[str | None]:
        return [p.all_source(module, level, source) for p in (package, new_package) if p]

    def equal_constant(old_text: str, new_text: str) -> bool:
        if package is None or new_package is None:
            return False
        before = package.constant_value(module, old_text)
        return before is not None and before == new_package.constant_value(module, new_text)

    differ = _Differ(
        module,
        old,
        new,
        frozenset(hooks),
        added=old_source is None,
        reimported=reimported,
        same_import=same,
        star_exports=star_exports if package is not None and new_package is not None else None,
        star_sources=star_sources if package is not None and new_package is not None else None,
        equal_constant=equal_constant,
        new_source=new_source,
    )
    differ.run()
    return ModuleDiff(
        module=module,
        changes=tuple(differ.changes),
        refusals=tuple(differ.refusals),
        new_source=new_source,
        old_source_sha256=hashlib.sha256((old_source or "").encode()).hexdigest(),
        waived=tuple(differ.waived),
        rebinding=frozenset(differ.rebinding),
        transformable=differ.transformable,
        replaceable=differ.replaceable,
        changed_names=frozenset(
            c.qualname
            for c in differ.changes
            if c.kind is ChangeKind.CHANGED
            and "." not in c.qualname
            and c.definition in (DefinitionKind.VALUE, DefinitionKind.IMPORT)
            and (c.definition is DefinitionKind.VALUE or c.old_value is not None)
        )
        | differ.kind_changed,
    )


@dataclass(frozen=True)
class SourcesDiff:
    """A patch and the refusals its hooks waived (each with the hook that covers it)."""

    spec: PatchSpec
    waived: tuple[Waiver, ...]
    # why the patch has its category (inferred, or given and what was inferred)
    category_reason: str = ""
    generated_transformer: str | None = None  # the transform hook --accept-transformer generated


def diff_sources(
    modules: Mapping[str, tuple[str | None, str]],
    *,
    category: Category | None = Category.PROCESS,
    patch_id: str | None = None,
    package: str | None = None,
    description: str = "",
    hooks_source: str | None = None,
    context: Mapping[str, str] | None = None,
    accept_transformer: bool = False,
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
    old_sources = {name: old for name, (old, _) in modules.items() if old is not None}
    everything = {**(context or {}), **old_sources}
    imports = PackageImports(everything)
    new_imports = PackageImports(
        {**everything, **{name: new for name, (_, new) in modules.items()}}
    )  # the new version: what star imports bind after the patch
    diffs = _diff_following(modules, everything, hooks, imports, new_imports)
    refusals = tuple(r for d in diffs for r in d.refusals)
    if accept_transformer and "transform" not in hooks:
        candidates = {r: c for d in diffs for r, c in d.transformable.items()}
        replaceable = {r: c for d in diffs for r, c in d.replaceable.items()}
        attributes = [r for r in refusals if r.kind is RefusalKind.INSTANCE_ATTRIBUTE]
        # a class replaced: its layout changes, or a dataclass's fields do (session 11)
        layouts = [
            r for r in refusals if r.kind in (RefusalKind.CLASS_LAYOUT, RefusalKind.CLASS_FIELDS)
        ]
        # a transform hook waives every refusal of the kinds it covers (model.COVERING_HOOKS), so it
        # is generated only when it takes care of each of them: none of another such kind (class
        # state, dataclass fields) may stand silently waived
        waived = [r for r in refusals if covering_hook(r.kind, ["transform"]) is not None]
        if (
            (attributes or layouts)
            and all(r.kind in TRANSFORMER_KINDS for r in waived)
            and all(r in candidates for r in attributes)
            and all(r in replaceable for r in layouts)
        ):
            # the author confirmed: the generated transform hook covers every new attribute and
            # replaces every class whose layout changes
            generated = transformer_source(
                [candidates[r] for r in attributes],
                list({(c.module, c.cls): c for c in (replaceable[r] for r in layouts)}.values()),
            )
            result = diff_sources(
                modules,
                category=category,
                patch_id=patch_id,
                package=package,
                description=description,
                hooks_source=(hooks_source or "") + generated,
                context=context,
            )
            return dataclasses.replace(result, generated_transformer=generated)
    kept = tuple(d.to_module_patch() for d in diffs if d.has_changes or d.waived)
    if package is None:
        package = next(iter(sorted(modules)), "").split(".")[0]
    inferred, why = infer_category(diffs, modules, hooks_source)
    if category is None:
        category = inferred
    else:
        why = f"{category.value}: given by the author ({inferred.value} would be inferred: {why})"
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
    return SourcesDiff(spec, tuple(w for d in diffs for w in d.waived), why)


_MAX_FOLLOW_ROUNDS = 8  # chains of re-exports (a -> b -> c) deeper than this are not followed


def _diff_following(
    modules: Mapping[str, tuple[str | None, str]],
    everything: Mapping[str, str],
    hooks: frozenset[str],
    imports: PackageImports,
    new_imports: PackageImports | None = None,
) -> list[ModuleDiff]:
    """Diff every module; then, while a changed module-level value is imported by name elsewhere in the
    package, diff the importer again (an unchanged one against itself) following that name."""
    pairs: dict[str, tuple[str | None, str]] = dict(modules)
    follow: dict[str, dict[str, str]] = {}
    for _ in range(_MAX_FOLLOW_ROUNDS):
        diffs = [
            diff_module(
                name,
                old,
                new,
                hooks=hooks,
                package=imports,
                reimported=follow.get(name),
                new_package=new_imports,
            )
            for name, (old, new) in sorted(pairs.items())
        ]
        grew = False
        for d in diffs:
            if not d.changed_names:
                continue
            by_name = imports.imported_by(d.module)
            for name in d.changed_names:
                importers = [(k, b, d.module) for k, b in by_name.get(name, [])]
                if not name.startswith("_"):  # "*" marks a copy a star import may have made
                    importers += [(k, name, "*" + d.module) for k, _ in by_name.get("*", [])]
                for importer, bound, source in importers:
                    if importer not in everything or bound in follow.get(importer, {}):
                        continue
                    follow.setdefault(importer, {})[bound] = source
                    if importer not in pairs:
                        pairs[importer] = (everything[importer], everything[importer])
                    grew = True
        if not grew:
            return diffs
    return diffs


def infer_category(
    diffs: Iterable[ModuleDiff],
    modules: Mapping[str, tuple[str | None, str]],
    hooks_source: str | None,
) -> tuple[Category, str]:
    """The category a patch needs, and why (docs/patchability.md, "Category").

    thread-local (local quiescence is enough: each thread switches at its own quiescence point while
    others may still run the old code) only when every change is a function body or default of an
    existing function and no changed function declares `global`/`nonlocal` (it rebinds shared state);
    anything added, removed or rebound (values, imports, class members, modules) is shared by every
    thread and needs them all to switch at once: process. A hooks file makes it process too (a
    transform hook needs global quiescence: data).
    """
    if hooks_source is not None:
        if "transform" in defined_hooks(hooks_source):
            return (
                Category.DATA,
                "the hooks file defines transform(ctx), which migrates live objects",
            )
        return Category.PROCESS, "the hooks file runs code around the swap"
    shared: list[str] = []
    rebinding: list[str] = []
    bodies = 0
    for d in diffs:
        if d.module in modules and modules[d.module][0] is None:
            shared.append(f"adds module {d.module}")
            continue
        for c in d.changes:
            if c.kind is ChangeKind.SAME:
                continue
            if c.kind is ChangeKind.CHANGED and c.definition in FUNCTION_KINDS:
                bodies += 1
                if c.qualname in d.rebinding:
                    rebinding.append(f"{d.module}:{c.qualname}")
                continue
            shared.append(f"{c.kind.value} {c.definition.value} {d.module}:{c.qualname}")
    if shared:
        more = f" and {len(shared) - 3} more" if len(shared) > 3 else ""
        return Category.PROCESS, "shared definitions change: " + ", ".join(shared[:3]) + more
    if rebinding:
        return Category.PROCESS, "changed functions rebind globals: " + ", ".join(rebinding[:3])
    return (
        Category.THREAD_LOCAL,
        f"only the bodies or defaults of {bodies} existing function(s) change and none rebinds "
        "shared state: each thread may switch at its own quiescence point",
    )


def patch_from_sources(
    modules: Mapping[str, tuple[str | None, str]],
    *,
    category: Category | None = Category.PROCESS,
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
