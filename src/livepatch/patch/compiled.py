"""The compiled code a patch carries, so that staging inside the server compiles and parses nothing.

Theory of operation: staging a changed function needs its new code object and, when the function has
default values, what each default expression is. Getting both from the module's new source means parsing
and compiling the whole module on the patcher thread, which holds the GIL for milliseconds (a latency
column in every client's figures). So `livepatch diff` does that work once, offline, and the patch file
carries the result for each CHANGED function-like target, and for each ADDED module-level definition (def,
class or import) the code of its statement:

    manifest["compiled"] = {"format": 1, "code": {"<MAGIC hex>": {"<module>": "<base64 of marshal>"}}}

and, when the module has one, its staging view (patch.view: the few top-level statements staging reads,
so that it parses those instead of the whole source), in JSON beside the code:

    manifest["compiled"]["views"] = {"<MAGIC hex>": {"<module>": {"spans": [...], "blocks": {...}}}}

The marshal payload of one module is `(1, {qualname: (code, defaults)}, {qualname: statement code})`,
`defaults` a tuple of `(param, keyword_only, how, value, text)` (see `DefaultExpr`); a statement's code is
the module-level statement compiled alone with the module's `from __future__` imports (`statement_code`),
executed by staging in the live module's namespace. What is not in the payload (definitions added inside
a class, CHANGED classes, new modules) staging still builds from the source. The section is keyed by the
bytecode magic number of the interpreter that compiled it (`importlib.util.MAGIC_NUMBER`): an interpreter
with another magic number ignores it and compiles from the source, like before.

Trust: `marshal` is not safe on hostile input (malformed bytes can crash the interpreter), so the payload
is decoded only by `attach()`, which the patch file calls only after the signature over the manifest
(payload included) has verified against a trusted key. An unsigned patch, even one an agent accepts with
`allow_unsigned`, is never unmarshalled: its code is compiled from its source (slower, same result). One
rule for default values lives here too (`defaults_plan`): staging builds the same plan from the AST when it
compiles from source, so both paths treat defaults alike.
"""

from __future__ import annotations

import ast
import base64
import binascii
import dataclasses
import enum
import marshal
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

from livepatch.patch.model import ChangeKind, ModulePatch, PatchSpec
from livepatch.patch.patchability import FUNCTION_KINDS, builds_fresh_object
from livepatch.patch.view import ModuleView, build_view, decode_view

__all__ = [
    "CompiledModulePatch",
    "CompiledTarget",
    "DefaultExpr",
    "How",
    "attach",
    "build_section",
    "defaults_plan",
    "magic",
    "statement_code",
]

SECTION_FORMAT = 1  # of manifest["compiled"]; another value is ignored (compiled from source)
_PAYLOAD_FORMAT = 1  # of one module's marshal payload


class How(enum.IntEnum):
    """How staging gets a default value of a changed function."""

    CONST = 0  # a literal: `value` is the value
    FRESH = 1  # a display or a call: keep the live object if there is one, else evaluate `value`
    EXPR = 2  # any other expression: evaluate `value` (an eval code object); keep the live one if equal


@dataclass(frozen=True)
class DefaultExpr:
    param: str
    keyword_only: bool
    how: How
    value: Any  # the constant (CONST) or a code object compiled for eval() (FRESH, EXPR)
    text: str  # the expression as written, for messages

    def as_tuple(self) -> tuple[Any, ...]:
        return (self.param, self.keyword_only, int(self.how), self.value, self.text)


@dataclass(frozen=True)
class CompiledTarget:
    """What staging needs to swap one changed function: its new code and its default expressions."""

    code: CodeType
    defaults: tuple[DefaultExpr, ...]


@dataclass(frozen=True)
class CompiledModulePatch(ModulePatch):
    """A ModulePatch with trusted compiled code for this interpreter (made only by `attach`)."""

    compiled: Mapping[str, CompiledTarget] = field(default_factory=dict, compare=False, repr=False)
    added: Mapping[str, CodeType] = field(default_factory=dict, compare=False, repr=False)
    # the top-level statements staging reads (patch.view); None: staging parses the whole source
    view: ModuleView | None = field(default=None, compare=False, repr=False)


def statement_code(stmt: ast.stmt, future: list[ast.stmt], filename: str) -> CodeType:
    """One module-level statement compiled alone, with the module's `from __future__` imports."""
    tree = ast.Module(body=[*future, stmt], type_ignores=[])
    return compile(tree, filename, "exec", dont_inherit=True)


def magic() -> str:
    """This interpreter's bytecode magic number, as hex (the key of the compiled code it can run)."""
    from importlib.util import MAGIC_NUMBER  # only when a patch is built or verified

    return MAGIC_NUMBER.hex()


def defaults_plan(
    node: ast.FunctionDef | ast.AsyncFunctionDef, filename: str
) -> tuple[DefaultExpr, ...]:
    """The default expressions of a `def`, in the order of its parameters (positional, then keyword-only)."""
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    pairs: list[tuple[str, bool, ast.expr]] = [
        (arg.arg, False, expr)
        for arg, expr in zip(
            positional[len(positional) - len(args.defaults) :], args.defaults, strict=True
        )
    ]
    pairs += [
        (arg.arg, True, expr)
        for arg, expr in zip(args.kwonlyargs, args.kw_defaults, strict=True)
        if expr is not None
    ]
    plan = []
    for param, keyword_only, expr in pairs:
        if isinstance(expr, ast.Constant):
            plan.append(DefaultExpr(param, keyword_only, How.CONST, expr.value, ""))
            continue
        code = compile(ast.Expression(expr), filename, "eval", dont_inherit=True)
        how = How.FRESH if builds_fresh_object(expr) else How.EXPR
        plan.append(DefaultExpr(param, keyword_only, how, code, ast.unparse(expr)))
    return tuple(plan)


def _module_payload(mp: ModulePatch) -> bytes | None:
    from livepatch.patch.walk import walk_source  # the offline side only

    wanted = _changed_functions(mp)
    added = {c.qualname for c in mp.changes if c.kind is ChangeKind.ADDED}
    if not wanted and not added:
        return None
    filename = f"<livepatch {mp.module}>"  # staging gives the code the live module's file name
    try:
        walk = walk_source(mp.new_source, filename)
    except (SyntaxError, ValueError):
        return None  # staging compiles from source and refuses, naming the problem
    targets: dict[str, tuple[Any, ...]] = {}
    for qualname in sorted(wanted):
        d = walk.definitions.get(qualname)
        if (
            d is None
            or d.code is None
            or not isinstance(d.node, ast.FunctionDef | ast.AsyncFunctionDef)
        ):
            continue  # a corrupt patch: staging finds out from the source and refuses
        plan = defaults_plan(d.node, filename)
        targets[qualname] = (d.code, tuple(e.as_tuple() for e in plan))
    statements: dict[str, CodeType] = {}
    by_node: dict[int, CodeType] = {}  # one code per statement (`import a, b` adds two names)
    for qualname in sorted(added):
        d = walk.definitions.get(qualname)
        if d is None or d.owner:
            continue  # added inside a class: staging builds it from the source
        code = by_node.get(id(d.node))
        if code is None:
            code = by_node[id(d.node)] = statement_code(d.node, walk.future, filename)
        statements[qualname] = code
    if not targets and not statements:
        return None
    return marshal.dumps((_PAYLOAD_FORMAT, targets, statements))


def _changed_functions(mp: ModulePatch) -> set[str]:
    return {
        c.qualname
        for c in mp.changes
        if c.kind is ChangeKind.CHANGED and c.definition in FUNCTION_KINDS
    }


def build_section(spec: PatchSpec) -> dict[str, Any] | None:
    """manifest["compiled"] for `spec`, compiled by this interpreter; None when nothing is to be compiled."""
    modules = {}
    views = {}
    for mp in spec.modules:
        payload = _module_payload(mp)
        if payload is not None:
            modules[mp.module] = base64.b64encode(payload).decode("ascii")
        view = build_view(mp, f"<livepatch {mp.module}>")
        if view is not None:
            views[mp.module] = view.to_json()
    if not modules and not views:
        return None
    section: dict[str, Any] = {"format": SECTION_FORMAT, "code": {magic(): modules}}
    if views:
        section["views"] = {magic(): views}
    return section


def _decode_target(qualname: str, raw: Any) -> CompiledTarget:
    if not (isinstance(raw, tuple) and len(raw) == 2 and isinstance(raw[0], CodeType)):
        raise ValueError(f"{qualname}: not a (code, defaults) pair")
    code, raw_defaults = raw
    if not isinstance(raw_defaults, tuple):
        raise ValueError(f"{qualname}: defaults are not a tuple")
    defaults = []
    for item in raw_defaults:
        if not (
            isinstance(item, tuple)
            and len(item) == 5
            and isinstance(item[0], str)
            and isinstance(item[1], bool)
            and item[2] in {h.value for h in How}
            and isinstance(item[4], str)
        ):
            raise ValueError(f"{qualname}: a malformed default")
        how = How(item[2])
        if how is not How.CONST and not isinstance(item[3], CodeType):
            raise ValueError(f"{qualname}: a default expression that is not code")
        defaults.append(DefaultExpr(item[0], item[1], how, item[3], item[4]))
    return CompiledTarget(code, tuple(defaults))


def _decode_module(
    mp: ModulePatch, encoded: Any
) -> tuple[dict[str, CompiledTarget], dict[str, CodeType]]:
    if not isinstance(encoded, str):
        raise ValueError(f"{mp.module}: compiled code is not a string")
    try:
        payload = marshal.loads(base64.b64decode(encoded.encode("ascii"), validate=True))
    except (binascii.Error, UnicodeEncodeError, ValueError, EOFError, TypeError) as exc:
        raise ValueError(f"{mp.module}: compiled code cannot be decoded ({exc})") from exc
    if not (
        isinstance(payload, tuple)
        and len(payload) == 3
        and payload[0] == _PAYLOAD_FORMAT
        and isinstance(payload[1], dict)
        and isinstance(payload[2], dict)
    ):
        raise ValueError(f"{mp.module}: compiled code of an unknown layout")
    changed = _changed_functions(mp)
    targets = {}
    for qualname, raw in payload[1].items():
        if not isinstance(qualname, str) or qualname not in changed:
            raise ValueError(
                f"{mp.module}: compiled code for {qualname!r}, which the patch does not change"
            )
        targets[qualname] = _decode_target(qualname, raw)
    added = {c.qualname for c in mp.changes if c.kind is ChangeKind.ADDED}
    statements = {}
    for qualname, code in payload[2].items():
        if not isinstance(qualname, str) or qualname not in added:
            raise ValueError(
                f"{mp.module}: compiled code for {qualname!r}, which the patch does not add"
            )
        if not isinstance(code, CodeType):
            raise ValueError(f"{mp.module}: {qualname}: a statement that is not code")
        statements[qualname] = code
    return targets, statements


def _views(section: dict[str, Any]) -> dict[str, Any]:
    """This interpreter's staging views (patch.view) of `section`, undecoded; {} when there are none."""
    by_magic = section.get("views", {})
    if not isinstance(by_magic, dict):
        raise ValueError('"compiled" has a "views" that is not an object')
    views = by_magic.get(magic(), {})
    if not isinstance(views, dict):
        raise ValueError("staging views are not an object of modules")
    return views


def attach(spec: PatchSpec, section: Any) -> PatchSpec:
    """`spec` with the compiled code of `section` (manifest["compiled"]) that this interpreter can run.

    ONLY for a section covered by a verified signature (marshal is unsafe on untrusted bytes). Returns
    `spec` itself when there is nothing usable: no section, another section format, or code compiled for
    another magic number (staging then compiles from source). Raises ValueError when the section is
    malformed.
    """
    if not isinstance(section, dict) or section.get("format") != SECTION_FORMAT:
        return spec
    by_magic = section.get("code")
    if not isinstance(by_magic, dict):
        raise ValueError('"compiled" has no "code" object')
    modules = by_magic.get(magic())
    if modules is None:
        return spec
    if not isinstance(modules, dict):
        raise ValueError("compiled code is not an object of modules")
    views = _views(section)
    unknown = (set(modules) | set(views)) - {mp.module for mp in spec.modules}
    if unknown:
        raise ValueError(f"compiled code for modules the patch does not change: {sorted(unknown)}")
    new_modules: list[ModulePatch] = []
    for mp in spec.modules:
        if mp.module not in modules and mp.module not in views:
            new_modules.append(mp)
            continue
        targets, statements = (
            _decode_module(mp, modules[mp.module]) if mp.module in modules else ({}, {})
        )
        new_modules.append(
            CompiledModulePatch(
                module=mp.module,
                new_source=mp.new_source,
                changes=mp.changes,
                old_source_sha256=mp.old_source_sha256,
                compiled=targets,
                added=statements,
                view=decode_view(views[mp.module], mp.module) if mp.module in views else None,
            )
        )
    return dataclasses.replace(spec, modules=tuple(new_modules))
