"""What a patch is, as data: the contract between the differ, the file format, the agent and the runtime.

A patch (`PatchSpec`) names, per module, the definitions it changes, adds or removes, each with the
fingerprint of the code it expects to find running (`old_fingerprint`) and of the code it brings
(`new_fingerprint`), plus the complete new source of the module, from which the runtime compiles the new
code objects. Nothing here executes code; everything is immutable and JSON-friendly (`to_dict`/`from_dict`),
so the `.lpatch` file format can carry it and `livepatch inspect` can show it.

Qualnames are dotted paths inside the module, exactly as `co_qualname` spells them for functions
(`helper`, `Store.get`, `Outer.Inner.method`); nested functions are never targets of their own (a changed
inner function is a change of its parent). Properties are named by accessor: `Cls.prop.fget`,
`Cls.prop.fset`, `Cls.prop.fdel`. Classes are named by their qualname (`Store`, `Outer.Inner`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1


class ChangeKind(enum.StrEnum):
    SAME = "same"
    CHANGED = "changed"
    ADDED = "added"
    REMOVED = "removed"


class DefinitionKind(enum.StrEnum):
    FUNCTION = "function"  # module-level def / async def
    METHOD = "method"  # plain def in a class body
    STATICMETHOD = "staticmethod"
    CLASSMETHOD = "classmethod"
    PROPERTY = "property"  # one accessor of a property (qualname ends in .fget/.fset/.fdel)
    CLASS = "class"
    IMPORT = "import"  # a new top-level import (qualname: the bound name)
    VALUE = "value"  # a name bound by a simple assignment in a module or class body (`LIMIT = 10`)
    # a module-level if/try block that only binds names (`try: import x except ImportError: x = None`),
    # run again in the live module (qualname `<block N>`: N-th module-level statement of the new source)
    BLOCK = "block"


# TargetChange.old_value of an ADDED import whose name the old version bound in a module-level if/try
# block: staging accepts it only when it binds the very object the live name holds
BOUND_BY_BLOCK = "<bound by a module-level block>"


class Category(enum.StrEnum):
    """Which quiescence methods a patch may use (DESIGN.md, "Concepts")."""

    THREAD_LOCAL = "thread-local"  # local or global quiescence
    PROCESS = "process"  # global only
    DATA = "data"  # carries a state transformer: global only (or a validated update)


@dataclass(frozen=True)
class TargetChange:
    """One definition of one module that the patch touches."""

    qualname: str
    kind: ChangeKind
    definition: DefinitionKind
    old_fingerprint: str | None = None  # None for ADDED
    new_fingerprint: str | None = None  # None for REMOVED
    # a CHANGED VALUE: the old version's expression, which staging evaluates in the live namespace and
    # compares with the live value (equal: the live value is what the old code built, no state in it)
    old_value: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {
            "qualname": self.qualname,
            "kind": self.kind.value,
            "definition": self.definition.value,
            "old_fingerprint": self.old_fingerprint,
            "new_fingerprint": self.new_fingerprint,
        }
        if self.old_value is not None:  # only VALUE changes carry it: other patches read as before
            d["old_value"] = self.old_value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetChange:
        return cls(
            qualname=str(d["qualname"]),
            kind=ChangeKind(d["kind"]),
            definition=DefinitionKind(d["definition"]),
            old_fingerprint=d.get("old_fingerprint"),
            new_fingerprint=d.get("new_fingerprint"),
            old_value=None if d.get("old_value") is None else str(d["old_value"]),
        )


class RefusalKind(enum.StrEnum):
    """What kind of change a refusal is about; decides which hook, if any, can take care of it."""

    MODULE_STATE = "module-state"  # module-level statements added, changed, removed or reordered
    IMPORT = "import"  # a top-level name is bound to another import
    CLASS_LAYOUT = "class-layout"  # bases, metaclass or __slots__
    CLASS_STATE = "class-state"  # class-level values changed or removed
    CLASS_FIELDS = "class-fields"  # a decorated class (dataclass) gains class-level names
    INSTANCE_ATTRIBUTE = "instance-attribute"  # a method assigns a new `self.X`
    DECORATORS = "decorators"  # a function's or class's decorators changed
    MUTABLE_DEFAULT = "mutable-default"  # a default built by an expression that makes a new object
    CLOSURE = "closure"  # free variables changed
    FLAVOUR = "flavour"  # function <-> generator/coroutine
    KIND_CHANGE = "kind-change"  # a definition changes kind (function -> class ...)
    OTHER = "other"  # read from a patch written by another version


_REFUSAL_KINDS = frozenset(k.value for k in RefusalKind)


@dataclass(frozen=True)
class HookCover:
    """The hooks that can take care of one kind of refusal (any one of them), and what it must do."""

    hooks: tuple[str, ...]
    does: str


# THE rule for waiving refusals with hooks (`livepatch diff --hooks FILE`): a refusal is waived only when
# FILE defines one of these hooks; kinds not listed here cannot be fixed by any hook. The runtime calls
# pre_patch before and post_patch after the swap, transform while every thread is parked (global only).
COVERING_HOOKS: dict[RefusalKind, HookCover] = {
    # pre_patch first: the new values must exist before the first call of the new code
    RefusalKind.MODULE_STATE: HookCover(
        ("pre_patch", "post_patch"), "sets the new module-level values on the live module"
    ),
    RefusalKind.IMPORT: HookCover(
        ("pre_patch", "post_patch"), "binds the new import on the live module"
    ),
    RefusalKind.CLASS_LAYOUT: HookCover(("transform",), "rebuilds the live objects"),
    RefusalKind.CLASS_STATE: HookCover(
        ("transform", "post_patch"), "sets the new class-level values on the live class"
    ),
    RefusalKind.CLASS_FIELDS: HookCover(("transform",), "migrates the live objects"),
    RefusalKind.INSTANCE_ATTRIBUTE: HookCover(
        ("transform",), "sets the attribute on every live instance"
    ),
    RefusalKind.DECORATORS: HookCover(("post_patch",), "re-decorates the live definition"),
    RefusalKind.MUTABLE_DEFAULT: HookCover(
        ("post_patch",), "sets __defaults__/__kwdefaults__ on the live function"
    ),
}


def covering_hook(kind: RefusalKind, defined: Iterable[str]) -> str | None:
    """The hook of `defined` (hook names a hooks file defines) that covers `kind`, or None."""
    cover = COVERING_HOOKS.get(kind)
    names = set(defined)
    return next((h for h in cover.hooks if h in names), None) if cover else None


def hook_fix(kind: RefusalKind) -> str:
    """The "or ship hooks" part of a refusal's fix, or "" when no hook can help."""
    cover = COVERING_HOOKS.get(kind)
    if cover is None:
        return ""
    hooks = " or ".join(f"{h}(ctx)" for h in cover.hooks)
    return f"; or ship --hooks FILE defining {hooks} that {cover.does}"


@dataclass(frozen=True)
class Refusal:
    """A change that cannot be live-patched as it stands: why, and how to make it patchable."""

    module: str
    qualname: str
    reason: str
    fix: str
    kind: RefusalKind = RefusalKind.OTHER

    def __str__(self) -> str:
        return f"{self.module}:{self.qualname}: {self.reason} (fix: {self.fix})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "qualname": self.qualname,
            "reason": self.reason,
            "fix": self.fix,
            "kind": self.kind.value,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Refusal:
        kind = str(d.get("kind", RefusalKind.OTHER.value))
        return cls(
            str(d["module"]),
            str(d["qualname"]),
            str(d["reason"]),
            str(d["fix"]),
            RefusalKind(kind) if kind in _REFUSAL_KINDS else RefusalKind.OTHER,
        )


@dataclass(frozen=True)
class Waiver:
    """A refusal the differ waived because the patch's hooks file defines `hook`, which covers it."""

    refusal: Refusal
    hook: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.refusal.to_dict(), "hook": self.hook}


@dataclass(frozen=True)
class ModulePatch:
    """The changes to one module, and its complete new source (what the new code is compiled from)."""

    module: str
    new_source: str
    changes: tuple[TargetChange, ...]
    old_source_sha256: str = ""  # informational: which file the patch was built from

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "new_source": self.new_source,
            "old_source_sha256": self.old_source_sha256,
            "changes": [c.to_dict() for c in self.changes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModulePatch:
        return cls(
            module=str(d["module"]),
            new_source=str(d["new_source"]),
            old_source_sha256=str(d.get("old_source_sha256", "")),
            changes=tuple(TargetChange.from_dict(c) for c in d["changes"]),
        )


@dataclass(frozen=True)
class PatchSpec:
    """Everything the runtime needs to apply a patch. Signatures are the file format's business.

    `hooks_source`, when given, is the source of a small module the patch author wrote; the runtime
    looks up these optional functions in it, each called with a `HookContext`:
    `pre_patch` (may veto by raising), `transform` (runs while threads are parked, global only),
    `post_patch`, `pre_revert`, `post_revert`.
    """

    patch_id: str
    package: str
    category: Category
    modules: tuple[ModulePatch, ...]
    description: str = ""
    hooks_source: str | None = None
    refusals: tuple[Refusal, ...] = field(default=())  # a spec with refusals must not be applied

    @property
    def changed_count(self) -> int:
        return sum(1 for m in self.modules for c in m.changes if c.kind is not ChangeKind.SAME)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "patch_id": self.patch_id,
            "package": self.package,
            "category": self.category.value,
            "description": self.description,
            "hooks_source": self.hooks_source,
            "modules": [m.to_dict() for m in self.modules],
            "refusals": [r.to_dict() for r in self.refusals],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PatchSpec:
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"unsupported patch format version {version!r} (this livepatch reads {FORMAT_VERSION})"
            )
        hooks_source = d.get("hooks_source")
        if hooks_source is not None and not isinstance(hooks_source, str):
            raise TypeError("hooks_source must be a string or null")
        return cls(
            patch_id=str(d["patch_id"]),
            package=str(d["package"]),
            category=Category(d["category"]),
            description=str(d.get("description", "")),
            hooks_source=hooks_source,
            modules=tuple(ModulePatch.from_dict(m) for m in d["modules"]),
            refusals=tuple(Refusal.from_dict(r) for r in d.get("refusals", ())),
        )
