"""Staging: turn a PatchSpec into ready-to-swap code, before anything pauses.

What the patcher calls:

    stage(spec: PatchSpec) -> StagedPatch
        Runs on the patcher thread with nothing paused. Takes the new code the patch carries compiled
        (signed patches) or compiles the module's new source, resolves every live target through module
        and class namespaces (no heap walk), verifies each live code object's fingerprint against
        `old_fingerprint` and prepares everything the swap needs. Raises livepatch.errors.PatchRefused
        (naming the first problem and how to fix it) and changes nothing when anything does not fit.

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

Also on StagedPatch: `targets` (module:qualname of everything touched), `modules` (name ->
live module, for hook contexts), `applied` (the new side is installed), `skipped_modules` (modules of the
patch this process never imported: nothing live to patch; see stage()). The implementation is split:
resolve.py finds live objects, swap_build.py builds new ones, swap.py holds the operations and the state
machine, dispatch.py the trampolines; this file verifies and decides what to do for each TargetChange.

What staging executes (and nothing else): the decorators, default values and bodies of ADDED definitions
and ADDED imports and values (in the live module's namespace, bound on swap_in), the class-level default
values a CHANGED class adds, changed default expressions of CHANGED functions, the new decorators of a
function whose decorator list changed (run on the live function: accepted when they return it or a
`__wrapped__` wrapper of it), the old and the new expression of a CHANGED value (the old one only to check
that the live value is still what it built: runtime/values.py checks who else holds it), and the whole
source of a module the patch adds. A changed import runs nothing: the new path is looked up in the loaded
modules and must name the live object; a followed copy (`from m import X` where the patch changes `m.X`)
takes the value m's stager built, so modules are staged sources first. Unchanged defaults keep their live objects (a mutable default is a function's static
state: it is carried over, never reset).

Where the new code comes from (the cost of staging): a signed patch carries each CHANGED function's code
and default expressions, and each ADDED module-level statement's code, compiled for this interpreter
(livepatch.patch.compiled; decoded after the signature check). Then staging a changed function is a
lookup, a fingerprint check, two namespace walks and a few comparisons: no parsing, no compiling,
O(targets), whatever the size of the module. Otherwise (an unsigned patch, another interpreter's magic
number, an in-process PatchSpec) the module's new source is parsed and compiled here, as is the source of
a module whose patch adds members to a class or changes a class (those are evaluated from the AST). Fingerprints of live code objects are cached per code object
(immutable), so re-checking the SAME definitions of a module patched before costs a dict lookup each.
"""

from __future__ import annotations

import ast
import contextlib
import enum
import hashlib
import re
import sys
import weakref
from collections.abc import Callable, Iterator
from types import CodeType, FunctionType, ModuleType
from typing import Any, NamedTuple

from livepatch.errors import PatchRefused
from livepatch.patch import block_classes
from livepatch.patch.compiled import (
    CompiledModulePatch,
    CompiledTarget,
    defaults_plan,
)
from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.model import (
    BOUND_BY_BLOCK,
    ChangeKind,
    DefinitionKind,
    ModulePatch,
    PatchSpec,
    TargetChange,
)
from livepatch.patch.patchability import FUNCTION_KINDS, replacement_problems
from livepatch.patch.walk import (
    Definition,
    ModuleWalk,
    binds_only,
    block_binds,
    parse_in_pieces,
    walk_tree,
)
from livepatch.runtime.pacing import Pacer
from livepatch.runtime.resolve import ResolveError, resolve_function, resolve_owner
from livepatch.runtime.swap import MISSING, BindOp, CodeOp, StagedPatch, make_staged_patch
from livepatch.runtime.swap_build import LiveBuilder, new_module
from livepatch.runtime.values import consumed_elements, heap_holders, other_holders
from livepatch.runtime.verify import check_refusals

__all__ = ["StagedPatch", "stage"]


# id(code) -> (weak reference to it, its fingerprint); an entry leaves when its code object dies
_fingerprints: dict[int, tuple[weakref.ref[CodeType], str]] = {}


def live_fingerprint(code: CodeType) -> str:
    """code_fingerprint of a code object (live, or the new code a patch carries), computed once per object
    (code objects are immutable)."""
    key = id(code)
    entry = _fingerprints.get(key)
    if entry is not None and entry[0]() is code:
        return entry[1]
    fp = code_fingerprint(code)
    _fingerprints[key] = (weakref.ref(code, lambda _ref: _fingerprints.pop(key, None)), fp)
    return fp


class _Location(NamedTuple):
    """Where a function-like target is bound, derived from its qualname (model.py conventions)."""

    owner: str  # dotted class path, "" for the module
    name: str  # the name bound in the owner's namespace
    code_qualname: str  # co_qualname of its code
    accessor: str | None  # fget/fset/fdel for a property accessor


def _location(change: TargetChange) -> _Location:
    code_qualname, accessor = change.qualname, None
    if change.definition is DefinitionKind.PROPERTY:
        code_qualname, _, accessor = change.qualname.rpartition(".")
    owner, _, name = code_qualname.rpartition(".")
    return _Location(owner, name, code_qualname, accessor)


def _relocated(code: CodeType, filename: str) -> CodeType:
    """`code` (and the code nested in it) as compiled from `filename`: tracebacks name the live file."""
    if code.co_filename == filename:
        return code
    consts = tuple(
        _relocated(c, filename) if isinstance(c, CodeType) else c for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


class _ModuleStager:
    """Stages one ModulePatch against one live module."""

    def __init__(
        self,
        mp: ModulePatch,
        module: ModuleType,
        filename: str,
        shared: dict[tuple[str, str], Any] | None = None,
        followed: frozenset[tuple[str, str]] = frozenset(),
        pace: Callable[[], None] = lambda: None,
    ) -> None:
        self.mp = mp
        self.pace = pace  # called between pieces of work (runtime.pacing.Pacer)
        self.module = module
        self.filename = filename
        # (module, name) -> the new module-level value this patch binds there (for follow imports)
        self.shared = shared if shared is not None else {}
        self.followed = followed  # (module, name) copies this patch rebinds too
        self.compiled = mp.compiled if isinstance(mp, CompiledModulePatch) else {}
        self.added = mp.added if isinstance(mp, CompiledModulePatch) else {}
        # the few top-level statements staging reads, carried by a signed compiled patch (patch.view)
        self.view = mp.view if isinstance(mp, CompiledModulePatch) else None
        self._relocated: dict[int, CodeType] = {}  # id of a code in self.added (kept alive there)
        self._walk: ModuleWalk | None = None
        self._tree: ast.Module | None = None  # the new source's AST, once parsed
        self._coded: ModuleWalk | None = None  # the walk with code objects, when compiled lazily
        self._build: LiveBuilder | None = None
        self.codes: list[CodeOp] = []
        self.binds: dict[tuple[int, str], BindOp] = {}
        self.changed_all: frozenset[str] = frozenset()  # modules whose __all__ the patch changes
        # (source module, name, value, where) a new star import copied: checked against `shared`
        self.star_copies: list[tuple[str, str, Any, str]] = []

    @property
    def walk(self) -> ModuleWalk:
        """The new source, parsed on first use (not at all for a compiled patch of changed functions) and
        walked for what staging reads only (walk_source's `full=False`: none of the differ's analyses).
        Compiled at once when the patch carries no compiled code (its source must compile, whatever
        changes); a compiled patch's source was compiled by `livepatch diff` for this interpreter, and
        is compiled here only when a definition's code is needed (`coded`): a changed block or an
        import needs only its node, and compiling kvserver's resp.py (40 kB) is ~6 ms of CPU in one
        call that holds the GIL. With a staging view (patch.view) only the statements it names are
        parsed, walked and, if need be, compiled: the walk of that partial module is the whole one's
        for every target staging reads (checked by `livepatch diff` when it made the view)."""
        if self._walk is None:
            if self.view is not None:
                try:
                    # the statements the patch's view names, each parsed alone: not the whole module
                    self._tree = self.view.parse(self.mp.new_source, self.filename, self.pace)
                except (SyntaxError, ValueError) as exc:
                    raise PatchRefused(
                        f"{self.mp.module}: the patch's staging view does not match its new source "
                        f"(corrupt patch): {exc}"
                    ) from exc
                code = None
            else:
                try:
                    # one parse per top-level statement: the GIL is not held for the whole module
                    self._tree = parse_in_pieces(self.mp.new_source, self.filename, self.pace)
                    code = None if isinstance(self.mp, CompiledModulePatch) else self._compile()
                except (SyntaxError, ValueError) as exc:
                    raise PatchRefused(
                        f"{self.mp.module}: the patch's new source does not compile: {exc}"
                    ) from exc
            self._walk = walk_tree(
                self.mp.new_source, self._tree, code, full=False, between=self.pace
            )
            if self._build is not None:
                self._build.future = self._walk.future
        return self._walk

    def _compile(self) -> CodeType:
        assert self._tree is not None
        # compiling the tree gives the code compiling the text gives (walk_source)
        return compile(self._tree, self.filename, "exec", dont_inherit=True)

    def coded(self, d: Definition) -> Definition:
        """`d` (a definition of `walk`) with its code object: the module is compiled now if the walk was
        made without."""
        walk = self.walk
        if walk.code is not None:
            return d
        if self._coded is None:
            assert self._tree is not None
            try:
                code = self._compile()
            except (SyntaxError, ValueError) as exc:
                raise PatchRefused(
                    f"{self.mp.module}: the patch's new source does not compile: {exc}"
                ) from exc
            self._coded = walk_tree(
                self.mp.new_source, self._tree, code, full=False, between=self.pace
            )
        return self._coded.definitions.get(d.qualname, d)

    @property
    def build(self) -> LiveBuilder:
        if self._build is None:
            # statements are only ever compiled after the walk, which sets the `from __future__` imports
            future: list[ast.stmt] = self._walk.future if self._walk is not None else []
            self._build = LiveBuilder(self.module, self.filename, future, self.refuse)
        return self._build

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
        if owner is self.module:
            self.shared[(self.mp.module, name)] = value

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
        if self.view is not None:
            self.check_view(d, change.new_fingerprint)
        return d

    def check_view(self, d: Definition, expected: str | None) -> None:
        """A definition read through the patch's staging view is the one the patch names (its code's or
        value's fingerprint): a view whose span cuts a class or def short, or names another statement,
        is refused, as a patch whose compiled code is not what it names."""
        if expected is None:
            return
        if d.kind is DefinitionKind.VALUE:
            value = _assigned_value(d)
            got: str | None = hashlib.sha256(ast.dump(value).encode()).hexdigest()
        else:
            code = self.coded(d).code
            got = live_fingerprint(code) if code is not None else None
        if got != expected:
            raise self.refuse(
                d.qualname,
                "the patch's staging view does not match its new source (corrupt patch): the "
                "statement it names does not define what the patch names",
            )

    def new_target(self, change: TargetChange) -> CompiledTarget:
        """The new code and default expressions of a CHANGED function: compiled by the patch's author, or
        from the source here."""
        target = self.compiled.get(change.qualname)
        if target is not None:
            return target
        d = self.coded(self.new_definition(change))
        assert d.code is not None and isinstance(d.node, ast.FunctionDef | ast.AsyncFunctionDef)
        return CompiledTarget(d.code, defaults_plan(d.node, self.filename))

    def live_function(self, change: TargetChange, where: _Location) -> FunctionType:
        try:
            return resolve_function(
                self.module, where.owner, where.name, where.code_qualname, where.accessor
            )
        except ResolveError as exc:
            raise PatchRefused(f"{self.name(change.qualname)} cannot be patched: {exc}") from exc

    def verify(self, qualname: str, func: FunctionType, expected: str | None) -> None:
        if expected is not None and live_fingerprint(func.__code__) != expected:
            raise PatchRefused(
                f"{self.name(qualname)} does not match the patch: the server runs another version"
            )

    def stage_same(self, change: TargetChange) -> None:
        # A SAME definition is checked when it can be found: the new code may rely on it being the old one.
        if change.definition not in FUNCTION_KINDS or change.old_fingerprint is None:
            return
        where = _location(change)
        try:
            func = resolve_function(
                self.module, where.owner, where.name, where.code_qualname, where.accessor
            )
        except ResolveError:
            return
        self.verify(change.qualname, func, change.old_fingerprint)

    def stage_changed_function(self, change: TargetChange) -> None:
        where = _location(change)
        func = self.live_function(change, where)
        self.verify(change.qualname, func, change.old_fingerprint)
        target = self.new_target(change)
        new_code = target.code
        if new_code.co_qualname != where.code_qualname or (
            change.new_fingerprint is not None
            and live_fingerprint(new_code) != change.new_fingerprint
        ):
            raise self.refuse(
                change.qualname,
                "the new source does not produce the code the patch names (corrupt patch)",
            )
        old_code = func.__code__
        problems = replacement_problems(change.qualname, old_code, new_code)
        if problems:
            raise self.refuse(change.qualname, str(problems[0]))
        if target.defaults or func.__defaults__ is not None or func.__kwdefaults__ is not None:
            owner = resolve_owner(self.module, where.owner)
            defaults, kwdefaults = self.build.new_defaults(
                func, target.defaults, owner, change.qualname
            )
        else:
            defaults, kwdefaults = None, None  # none before, none after: nothing to evaluate
        self.codes.append(
            CodeOp(
                self.name(change.qualname),
                func,
                old_code,
                _relocated(new_code, self.filename),
                func.__defaults__,
                defaults,
                func.__kwdefaults__,
                kwdefaults,
            )
        )
        if change.old_value is not None:  # its decorators changed: run the new ones
            self.redecorate(change, where, func)

    def redecorate(self, change: TargetChange, where: _Location, func: FunctionType) -> None:
        """Run the new decorators on the live function (whose code the swap replaces) and bind what they
        return when it is that function or a wrapper leading to it through `__wrapped__`; what the old
        decorators registered stays registered (the function object is the same). Anything else is
        refused: a decorator returning another object would leave every holder of the function out."""
        d = self.new_definition(change)
        assert isinstance(d.node, ast.FunctionDef | ast.AsyncFunctionDef)
        holder = resolve_owner(self.module, where.owner)
        result = self.build.decorate(func, d.node, holder, change.qualname)
        if not _wraps(result, func):
            raise self.refuse(
                change.qualname,
                f"its new decorators returned a {type(result).__name__}, not the function they were "
                "given or a wrapper of it (__wrapped__); fix: keep the decorators, or re-decorate in a "
                "post_patch hook",
            )
        bound = vars(holder).get(where.name, MISSING)
        if bound is result:
            return  # e.g. a registering decorator added or removed: the binding is the function itself
        if bound is not MISSING:
            holders = other_holders(self.module, holder, where.name, bound)
            if holders:
                raise self.refuse(
                    change.qualname,
                    f"its decorated object is also held by {', '.join(holders)}, which would keep the "
                    "old decoration; fix: keep the decorators, or rebind the copies in a post_patch hook",
                )
        self.bind(holder, where.name, result, change.qualname)

    def stage_changed_class(self, change: TargetChange) -> None:
        # A CHANGED class adds class-level defaults (see patch.diff); its methods are targets of their own.
        info = self.walk.classes.get(change.qualname)
        if info is None:
            raise self.refuse(
                change.qualname, "the patch's new source does not define it (corrupt patch)"
            )
        if self.view is not None:
            self.new_definition(change)  # which checks the class the view names (check_view)
        try:
            cls = resolve_owner(self.module, change.qualname)
        except ResolveError as exc:
            raise PatchRefused(f"{self.name(change.qualname)} cannot be patched: {exc}") from exc
        self.check_not_enum(cls, change.qualname)
        for name, stmt in info.assignments.items():
            if name in vars(cls) or stmt.value is None:
                continue
            if f"{change.qualname}.{name}" in self.walk.definitions:
                continue  # a VALUE target of its own (added or changed by its own TargetChange)
            self.bind(
                cls,
                name,
                self.build.eval_expr(stmt.value, cls, f"{change.qualname}.{name}"),
                f"{change.qualname}.{name}",
            )

    def staged_import(self, change: TargetChange) -> bool:
        """An added `from M import N` where this patch adds or changes `M.N` (or adds module M): bind
        the value M's stager built (M is staged first) instead of importing the live, old M."""
        if change.definition is not DefinitionKind.IMPORT:
            return False
        d = self.walk.definitions.get(change.qualname)
        if d is None or d.kind is not DefinitionKind.IMPORT:
            return False
        where = _import_source(self.module, d.node, d.name)
        if where is None:
            return False
        if where in self.shared:
            self.bind(self.module, d.name, self.shared[where], change.qualname)
            return True
        # `from M import NEW, OLD` where the patch adds M.NEW: run as one statement, the import would
        # fail on NEW (bound in M on swap only), so OLD is taken from the loaded M, which is what the
        # statement binds it to (kvserver df042c96163d: `from kvserver.replies import
        # MUST_BE_POSITIVE, ..., SYNTAX`)
        assert isinstance(d.node, ast.ImportFrom)
        source = sys.modules.get(where[0])
        live = vars(source).get(where[1], MISSING) if source is not None else MISSING
        if live is MISSING or not any((where[0], a.name) in self.shared for a in d.node.names):
            return False
        self.bind(self.module, d.name, live, change.qualname)
        return True

    def stage_added(self, change: TargetChange) -> None:
        if change.old_value == BOUND_BY_BLOCK and change.definition is DefinitionKind.IMPORT:
            self.stage_import_over_block(change)
            return
        if self.staged_import(change):
            return
        if "." not in change.qualname and (
            change.old_fingerprint is not None or change.old_value is not None
        ):
            self.check_replaced_global(change)
        code = self.added.get(change.qualname)
        if code is not None:  # a module-level def, class or import, compiled by the patch's author
            # one relocated code per statement, so that a statement adding several names runs once
            local = self._relocated.get(id(code))
            if local is None:
                local = self._relocated[id(code)] = _relocated(code, self.filename)
            self.check_unbound(self.module, change)
            bound = self.build.exec_code(local, change.qualname)
            if change.qualname not in bound:
                raise self.refuse(change.qualname, "the new definition did not bind its name")
            self.bind(self.module, change.qualname, bound[change.qualname], change.qualname)
            return
        d = self.new_definition(change)
        if not d.owner:
            self.check_unbound(self.module, change)
            bound = self.build.exec_statement(d.node, change.qualname)
            if d.name not in bound:
                raise self.refuse(change.qualname, "the new definition did not bind its name")
            self.bind(self.module, d.name, bound[d.name], change.qualname)
            return
        try:
            cls = resolve_owner(self.module, d.owner)
        except ResolveError as exc:
            raise PatchRefused(f"{self.name(change.qualname)} cannot be added: {exc}") from exc
        if change.old_fingerprint is not None or change.old_value is not None:
            self.check_replaced_member(cls, d, change)
        elif d.kind is DefinitionKind.VALUE:
            if _implicit_hash(cls, d):
                return  # nothing to bind, nothing to restore on revert
            self.check_unbound(cls, change)
        if d.kind is DefinitionKind.VALUE:
            self.check_not_enum(cls, change.qualname)
            value = self.build.eval_expr(_assigned_value(d), cls, change.qualname)
        elif d.kind is DefinitionKind.CLASS:
            value = self.build.build_class(self.coded(d), cls)
        else:
            value = self.build.build_function(self.coded(d), cls)
        self.bind(cls, d.name, value, change.qualname)

    def stage_import_over_block(self, change: TargetChange) -> None:
        """A new top-level import of a name the old version bound in an if/try block: accepted when the
        import binds the very object the live name holds (nothing to rebind), or the name is unbound."""
        d = self.new_definition(change)
        bound = self.build.exec_statement(d.node, change.qualname)
        if d.name not in bound:
            raise self.refuse(change.qualname, "the new import did not bind its name")
        live = vars(self.module).get(d.name, MISSING)
        if live is MISSING:
            self.bind(self.module, d.name, bound[d.name], change.qualname)
        elif live is not bound[d.name]:
            raise self.refuse(
                change.qualname,
                f"the new import ({d.decorators}) binds another object than the one the old version's "
                "module-level block bound; fix: import the new thing under a new name",
            )

    def stage_block(self, change: TargetChange) -> None:
        """Run a module-level if/try block that only binds names (walk.binds_only) again in the live
        module, into a private namespace: its tests pick the branch this server took. Then for each
        name the branch binds: unbound in the live module -> bound on swap; the very same object (an
        import), or an equal str/bytes/number/None/tuple of them -> nothing; a function -> its code
        (and changed defaults) swapped in place, the live function object kept; a class -> its methods
        patched in place the same way, new plain methods added, everything else must be the same;
        anything else -> refused (a new object would leave every holder of the old one behind)."""
        node = (
            self.view.block(self.walk, change.qualname)
            if self.view is not None
            else self.walk.block(change.qualname)
        )
        if (
            node is None
            or hashlib.sha256(ast.dump(node).encode()).hexdigest() != change.new_fingerprint
            or not (binds_only(node) or _star_import(node))
        ):
            raise self.refuse(
                change.qualname, "the patch's new source does not have this block (corrupt patch)"
            )
        try:
            class_values = block_classes.decode(change.old_value)
        except ValueError as exc:
            raise self.refuse(change.qualname, f"corrupt patch: {exc}") from exc
        bound = self.build.exec_statement(node, change.qualname)
        if _star_import(node):
            self.stage_new_star(change, node, bound)
            return
        names = sorted(block_binds(node))
        for name in names:
            if name not in bound:
                continue  # bound in a branch this server did not take
            value = bound[name]
            live = vars(self.module).get(name, MISSING)
            where = f"{change.qualname} ({name})"
            if live is MISSING:
                self.bind(self.module, name, value, where)
            elif live is value or _same_constant(live, value):
                continue
            elif isinstance(live, FunctionType) and isinstance(value, FunctionType):
                self.swap_in_place(where, live, value)
            elif isinstance(live, type) and isinstance(value, type):
                self.patch_class_in_place(where, live, value, class_values.get(value.__name__, {}))
            else:
                raise self.refuse(
                    where,
                    f"the block binds `{name}` to another {type(value).__name__} than the live one; "
                    "a new object would leave its holders with the old one; fix: keep the block as "
                    "it is, or set it in a post_patch hook",
                )

    def stage_new_star(self, change: TargetChange, node: ast.stmt, bound: dict[str, Any]) -> None:
        """A new `from M import *` (diff._Differ.new_star_import: M's `__all__` is built the same in
        both versions), run in the live module: it gave what the live M exports. Each name: the very
        object the live module holds -> nothing; unbound there and bound nowhere else by the new
        version -> bound on swap; anything else refused (the order of the new module's bindings would
        decide, or a holder keeps another object). stage() then refuses a copy of a name the same
        patch rebinds in M (`star_copies`)."""
        assert isinstance(node, ast.ImportFrom)
        source = _star_source(self.module, node)
        defs = self.walk.definitions
        for name, value in sorted(bound.items()):
            live = vars(self.module).get(name, MISSING)
            where = f"{change.qualname} ({name})"
            # another binder of the name in the new version: harmless only when it is an import of
            # the very object (whatever the order, the name ends bound to it)
            other = name in self.walk.dynamic_names or (
                name in defs and defs[name].kind is not DefinitionKind.IMPORT
            )
            if live is value and not other:
                continue
            if live is not MISSING or other or name in defs:
                raise self.refuse(
                    where,
                    f"the new `from {'.' * node.level}{node.module or ''} import *` binds `{name}`, "
                    "which the module also binds otherwise (live or in the new version): which one "
                    "wins depends on the order; fix: import the names explicitly",
                )
            self.bind(self.module, name, value, where)
            self.star_copies.append((source, name, value, self.name(where)))

    def swap_in_place(self, where: str, live: FunctionType, new: FunctionType) -> None:
        """Give live function `live` the code (and, when they differ, the defaults) of `new`."""
        if live_fingerprint(live.__code__) == code_fingerprint(new.__code__) and _same_defaults(
            live, new
        ):
            return
        problems = replacement_problems(where, live.__code__, new.__code__)
        if problems:
            raise self.refuse(where, str(problems[0]))
        defaults = (
            live.__defaults__ if _same(live.__defaults__, new.__defaults__) else new.__defaults__
        )
        kwdefaults = (
            live.__kwdefaults__
            if _same(live.__kwdefaults__, new.__kwdefaults__)
            else new.__kwdefaults__
        )
        if any(op.func is live for op in self.codes):
            raise self.refuse(where, "the same live function is patched twice (corrupt patch)")
        self.codes.append(
            CodeOp(
                self.name(where),
                live,
                live.__code__,
                _relocated(new.__code__, self.filename),
                live.__defaults__,
                defaults,
                live.__kwdefaults__,
                kwdefaults,
            )
        )

    def patch_class_in_place(
        self, where: str, live: type, new: type, values: dict[str, list[str]]
    ) -> None:
        """A class a block defines again: same bases, its functions patched in place (plain methods,
        static and class methods, property accessors), new plain methods added, and the class-level
        values the differ found rebindable (`values`, patch.block_classes) rebound after the same
        checks as a top-level class's (`rebind_block_value`); any other class-level difference is
        refused."""
        if live.__bases__ != new.__bases__ or type(live) is not type(new):
            raise self.refuse(
                where, "the block's class has other bases or another metaclass than the live one"
            )
        live_ns, new_ns = vars(live), vars(new)
        for attr, value in new_ns.items():
            if attr in _CLASS_NOISE:
                continue
            old = live_ns.get(attr, MISSING)
            if attr in values:
                self.rebind_block_value(f"{where}.{attr}", live, attr, value, values[attr])
                continue
            pairs = _function_pairs(old, value)
            if pairs is not None:
                for a, b in pairs:
                    self.swap_in_place(f"{where}.{attr}", a, b)
            elif (
                old is MISSING
                and isinstance(value, FunctionType)
                and not value.__code__.co_freevars
            ):
                value.__qualname__ = f"{live.__qualname__}.{attr}"
                self.bind(live, attr, value, f"{where}.{attr}")
            elif old is value or _same_constant(old, value):
                continue
            else:
                raise self.refuse(
                    f"{where}.{attr}",
                    "the block's class changes this class-level member in a way that cannot be done "
                    "in place (a value, a descriptor, a new method using super()); fix: keep it",
                )

    def rebind_block_value(
        self, where: str, cls: type, attr: str, value: Any, rule: list[str]
    ) -> None:
        """Rebind class-level `attr` of the live class `cls` (defined again by a block) to `value`, what
        the block's new class body gave it, when the live attribute is what the old version left there
        (`rule`, patch.block_classes: absent, the old expression's value, or a getter-only property
        with the old getter), nothing else holds a live value (runtime/values.py, as for a changed
        top-level value), and the new value is an immutable constant (a value holding objects of the
        new class body would not be the live class's own)."""
        how, detail = rule
        live = vars(cls).get(attr, MISSING)
        if not _constant(value):
            raise self.refuse(
                where,
                f"the block's class gives `{attr}` a {type(value).__name__}, not an immutable "
                "constant: it cannot be rebound on the live class; fix: keep it, or set it in a "
                "post_patch hook",
            )
        if how == block_classes.ADDED:
            ok, was = live is MISSING, "unbound (the old class did not have it)"
        elif how == block_classes.VALUE:
            try:
                before = self.build.eval_expr(ast.parse(detail, mode="eval").body, cls, where)
            except SyntaxError as exc:
                raise self.refuse(where, f"the patch's old value does not compile: {exc}") from exc
            ok = live is before or (type(live) is type(before) and _equal(live, before))
            was = f"what the old version's `{_short(detail)}` builds"
            if ok and live is not MISSING:
                holders = other_holders(self.module, cls, attr, live)
                if holders:
                    raise self.refuse(
                        where,
                        f"the live value is also held by {', '.join(holders)}, which would keep the "
                        "old value; fix: read it through the class at call time",
                    )
        else:
            getter = live.fget if isinstance(live, property) else None
            ok = (
                isinstance(live, property)
                and live.fset is None
                and live.fdel is None
                and isinstance(getter, FunctionType)
                and getter.__name__ == attr
                and (not detail or live_fingerprint(getter.__code__) == detail)
            )
            was = "the old version's getter-only property"
        if not ok:
            raise self.refuse(
                where,
                f"the live class-level `{attr}` is not {was}: it was changed at run time or the "
                "server runs another version; fix: keep the old value",
            )
        self.bind(cls, attr, value, where)

    def check_replaced_member(self, cls: Any, d: Definition, change: TargetChange) -> None:
        """An added class member that replaces one of another kind (patch.diff: a method becoming a
        value, or the reverse): the live attribute must be what the old version bound, the very method
        (by fingerprint) or what the old value's expression evaluates to, else the class was changed at
        run time or the server runs another version."""
        live = vars(cls).get(d.name, MISSING)
        if change.old_fingerprint is not None:
            ok = isinstance(live, FunctionType) and (
                live_fingerprint(live.__code__) == change.old_fingerprint
            )
            was = "the old method"
        else:
            assert change.old_value is not None
            try:
                expr = ast.parse(change.old_value, mode="eval").body
            except SyntaxError as exc:
                raise self.refuse(
                    change.qualname, f"the patch's old value does not compile: {exc}"
                ) from exc
            before = self.build.eval_expr(expr, cls, change.qualname)
            ok = live is before or (type(live) is type(before) and _equal(live, before))
            was = f"what the old version's `{_short(change.old_value)}` builds"
        if not ok:
            raise self.refuse(
                change.qualname,
                f"replaces a class member of another kind, but the live one is not {was}: it was "
                "changed at run time or the server runs another version; fix: keep the old member",
            )

    def check_replaced_global(self, change: TargetChange) -> None:
        """A module-level name that changes kind (patch.diff.module_kind_change: a function or a value
        becoming another kind of object): the live object must be what the old version bound (the very
        function, by fingerprint, or what the old expression evaluates to now), and nothing may hold it
        but module namespaces under other names, the copies this patch follows, and the staging code
        itself (runtime/values.py, `heap_holders`): a table, a default, a bound method, an instance
        holding it would keep the old object while a fresh process would hold the new one."""
        name = change.qualname
        live = vars(self.module).get(name, MISSING)
        if live is MISSING:
            raise self.refuse(name, "does not exist in the live module")
        if change.old_fingerprint is not None:
            ok = isinstance(live, FunctionType) and (
                live_fingerprint(live.__code__) == change.old_fingerprint
            )
            was = "the old function"
        else:
            assert change.old_value is not None
            try:
                old_code = compile(change.old_value, self.filename, "eval", dont_inherit=True)
                before = eval(old_code, vars(self.module))
            except Exception as exc:
                raise self.refuse(
                    name,
                    f"evaluating the old version's `{_short(change.old_value)}` failed ({exc!r}): the "
                    "server does not run the version the patch was built from",
                ) from exc
            ok = live is before or (type(live) is type(before) and _equal(live, before))
            was = f"what the old version's `{_short(change.old_value)}` builds"
            del before
        if not ok:
            raise self.refuse(
                name,
                f"changes kind, but the live object is not {was}: it was changed at run time or the "
                "server runs another version; fix: keep the old definition",
            )
        holders = [
            h
            for h in other_holders(self.module, self.module, name, live)
            if tuple(h.rsplit(".", 1)) not in self.followed
        ]
        holders += heap_holders(
            self.module, live, name, self.followed, keep=(self, self.build, self.shared)
        )
        if holders:
            raise self.refuse(
                name,
                f"changes kind, but the live object is also held by {', '.join(holders[:3])}, which "
                "would keep the old object; fix: keep the old definition and add the new one under "
                "another name",
            )

    def check_unbound(self, owner: Any, change: TargetChange) -> None:
        """An added VALUE must not exist yet: if the live namespace has the name, code the differ did not
        see (a loop, `globals()[...]`, a run-time assignment) bound it, and its value may be state."""
        if change.definition is not DefinitionKind.VALUE:
            return
        if "." not in change.qualname and (
            change.old_fingerprint is not None or change.old_value is not None
        ):
            return  # a name that changes kind: check_replaced_global checked the live one
        name = change.qualname.rpartition(".")[2]
        if name in vars(owner):
            raise self.refuse(
                change.qualname,
                "the patch adds this value but the live namespace already has it (bound at run time or "
                "by code the differ did not see); fix: keep it, or set it in a post_patch hook",
            )

    def check_not_enum(self, cls: Any, qualname: str) -> None:
        if isinstance(cls, enum.EnumMeta):
            # a name set on a live Enum class would be a plain attribute, never a member
            raise self.refuse(
                qualname,
                "new members cannot be added to a live Enum (fix: ship a hook, or keep the members)",
            )

    def stage_changed_value(self, change: TargetChange) -> None:
        """Rebind a changed module- or class-level value, when the live value is exactly what the old
        version's statement builds (no state in it) and nothing else holds it (runtime/values.py)."""
        d = self.new_definition(change)
        try:
            owner = resolve_owner(self.module, d.owner)
        except ResolveError as exc:
            raise PatchRefused(f"{self.name(change.qualname)} cannot be patched: {exc}") from exc
        if d.owner:
            self.check_not_enum(owner, change.qualname)
        live = vars(owner).get(d.name, MISSING)
        if live is MISSING:
            raise self.refuse(change.qualname, "does not exist in the live module")
        if change.old_value is None:
            raise self.refuse(
                change.qualname, "the patch does not say what the old value was (corrupt patch)"
            )
        try:
            old_code = compile(change.old_value, self.filename, "eval", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            raise self.refuse(
                change.qualname, f"the patch's old value does not compile: {exc}"
            ) from exc
        try:
            before = eval(old_code, vars(self.module), vars(owner) if d.owner else None)
        except Exception as exc:
            raise self.refuse(
                change.qualname,
                f"evaluating the old version's `{change.old_value}` failed ({exc!r}): the server does "
                "not run the version the patch was built from",
            ) from exc
        if not (live is before or (type(live) is type(before) and _equal(live, before))):
            raise self.refuse(
                change.qualname,
                f"the live value is not what the old version's `{_short(change.old_value)}` builds: "
                "it was changed at run time (it is state) or the server runs another version; fix: "
                "keep the value, or set the new one in a post_patch hook",
            )
        holders = [
            h
            for h in other_holders(self.module, owner, d.name, live)
            if tuple(h.rsplit(".", 1)) not in self.followed  # a copy this patch rebinds too
        ]
        if holders:
            raise self.refuse(
                change.qualname,
                f"the live value is also held by {', '.join(holders)}, which would keep the old value; "
                "fix: read it through its module at call time, or set every copy in a post_patch hook",
            )
        consumed = consumed_elements(live, before)
        del before
        if consumed:
            raise self.refuse(
                change.qualname,
                f"objects the live value's expression built ({consumed}) are also held elsewhere: "
                "something consumed the value at run time (a table built from it at start-up, as "
                "kvserver's command table from each module's COMMANDS) and would keep the old ones; "
                "fix: rebuild what consumed it in a post_patch hook",
            )
        if d.name == "__all__" and not d.owner:
            self.check_all_sources(d)
        if d.owner:
            value = self.build.eval_expr(_assigned_value(d), owner, change.qualname)
        else:
            bound = self.build.exec_statement(d.node, change.qualname)
            if d.name not in bound:
                raise self.refuse(change.qualname, "the new statement did not bind its name")
            value = bound[d.name]
        self.bind(owner, d.name, value, change.qualname)

    def check_all_sources(self, d: Definition) -> None:
        """A module's `__all__` built from other modules' (`__all__ += _events.__all__`, folded into one
        value by walk.fold_all_chain) is evaluated now: refused when this patch also changes one of
        those, whose live `__all__` is still the old one."""
        for n in ast.walk(d.node):
            if (
                isinstance(n, ast.Attribute)
                and n.attr == "__all__"
                and isinstance(n.value, ast.Name)
            ):
                other = vars(self.module).get(n.value.id)
                if isinstance(other, ModuleType) and other.__name__ in self.changed_all:
                    raise self.refuse(
                        "__all__",
                        f"is built from {other.__name__}.__all__, which this patch changes too; fix: "
                        "change one of them in this patch and the other in the next",
                    )

    def stage_changed_import(self, change: TargetChange) -> None:
        """A changed import is accepted only when the new path names the very object the live name is
        bound to (checked here, without importing anything): then nothing needs to change."""
        if change.old_value is not None and change.old_value.endswith(" import *"):
            self.stage_star_follow(change, change.old_value[len("from ") : -len(" import *")])
            return
        d = self.new_definition(change)
        live = vars(self.module).get(d.name, MISSING)
        if change.old_value is not None:
            self.stage_follow(change, d, live)
            return
        found = _imported_object(self.module, d.node, d.name)
        if found is MISSING:
            raise self.refuse(
                change.qualname,
                f"the new import ({d.decorators}) names a module or name this process has not loaded; "
                "fix: keep the old import, or import the new thing under a new name",
            )
        if found is not live:
            raise self.refuse(
                change.qualname,
                f"the new import ({d.decorators}) binds another object than the live one; fix: import "
                "the new thing under a new name",
            )

    def stage_star_follow(self, change: TargetChange, source: str) -> None:
        """A copy `from source import *` may have made: rebound only when the live name is the very
        object `source` holds (else the star import did not copy it: `__all__`, or a later binding)."""
        src = sys.modules.get(source)
        live = vars(self.module).get(change.qualname, MISSING)
        if src is None or live is MISSING or vars(src).get(change.qualname, MISSING) is not live:
            return
        new = self.shared.get((source, change.qualname), MISSING)
        if new is MISSING:
            raise self.refuse(
                change.qualname,
                f"the patch does not change {source}.{change.qualname}, which it follows (corrupt patch)",
            )
        self.bind(self.module, change.qualname, new, change.qualname)

    def stage_follow(self, change: TargetChange, d: Definition, live: Any) -> None:
        """`from m import N` where this patch changes `m.N`: rebind the copy to the value m's stager
        built (m is staged first), when the live copy is the very object `m.N` is now."""
        where = _import_source(self.module, d.node, d.name)
        if where is None:
            raise self.refuse(change.qualname, "is not a `from ... import` of a loaded module")
        source, original = where
        src = sys.modules.get(source)
        if src is None or live is MISSING or vars(src).get(original, MISSING) is not live:
            raise self.refuse(
                change.qualname,
                f"the live copy is not the object {source}.{original} holds: it was rebound at run "
                "time or the server runs another version; fix: set it in a post_patch hook",
            )
        new = self.shared.get((source, original), MISSING)
        if new is MISSING:
            raise self.refuse(
                change.qualname,
                f"the patch does not change {source}.{original}, which it follows (corrupt patch)",
            )
        self.bind(self.module, d.name, new, change.qualname)

    def run(self) -> None:
        for change in self.ordered_changes():
            self.pace()
            if change.kind is ChangeKind.SAME:
                self.stage_same(change)
            elif change.kind is ChangeKind.REMOVED:
                continue  # removed definitions stay in memory: old references keep working
            elif change.kind is ChangeKind.ADDED:
                self.stage_added(change)
            elif change.definition is DefinitionKind.CLASS:
                self.stage_changed_class(change)
            elif change.definition is DefinitionKind.VALUE:
                self.stage_changed_value(change)
            elif change.definition is DefinitionKind.IMPORT:
                self.stage_changed_import(change)
            elif change.definition is DefinitionKind.BLOCK:
                self.stage_block(change)
            elif change.definition in FUNCTION_KINDS:
                self.stage_changed_function(change)
            else:
                raise self.refuse(
                    change.qualname, f"a changed {change.definition} cannot be live-patched"
                )

    def ordered_changes(self) -> list[TargetChange]:
        """The patch's changes in the order a fresh import of the new version runs their statements.

        The differ lists definitions in source order but appends the changed if/try blocks after them
        (diff._Differ.blocks). Staging evaluates added values, decorators and class bodies in the live
        module with what the patch staged so far visible (swap_build.LiveBuilder's overlay), so a value
        that reads a name a block binds (kvserver b29989ec9d: `HAVE_NATIVE = _native_parse is not
        None` after `try: from kvserver._respfast import parse_requests as _native_parse`) must be
        staged after that block, and a block that reads an added import after the import: exactly
        the order of their statements in the new source. So when the patch changes a block, the
        other changes are staged by the line of the top-level statement that defines them (stable:
        the members of one class keep the differ's order); SAME ones (only checked) and REMOVED ones
        (nothing to do) first. Without a changed block the differ's order already is the source
        order, and nothing is parsed to find it."""
        changes = list(self.mp.changes)
        if not any(c.definition is DefinitionKind.BLOCK for c in changes):
            return changes
        inert = [c for c in changes if c.kind in (ChangeKind.SAME, ChangeKind.REMOVED)]
        keyed: list[tuple[int, int, TargetChange]] = []
        for i, change in enumerate(changes):
            if change.kind in (ChangeKind.SAME, ChangeKind.REMOVED):
                continue
            line = self.statement_line(change)
            if line is None:
                return changes  # staging of that change refuses it (corrupt patch): order moot
            keyed.append((line, i, change))
        return inert + [c for _, _, c in sorted(keyed, key=lambda k: (k[0], k[1]))]

    def statement_line(self, change: TargetChange) -> int | None:
        """The first line of the top-level statement of the new source that defines `change` (the
        class, for a member), None when the new source (or the patch's view of it) has none."""
        qualname = change.qualname
        if change.definition is DefinitionKind.BLOCK:
            node = (
                self.view.block(self.walk, qualname)
                if self.view is not None
                else self.walk.block(qualname)
            )
            return None if node is None else node.lineno
        top = qualname.partition(".")[0]
        d = self.walk.definitions.get(top)
        if d is not None:
            return d.node.lineno
        info = self.walk.classes.get(top)
        return None if info is None else info.node.lineno


# class attributes every class statement makes anew: not members to compare
_CLASS_NOISE = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__", "__doc__"})
_CONSTANTS = (str, bytes, int, float, complex, bool, type(None))


def _same_constant(a: Any, b: Any) -> bool:
    """Equal immutable constants (and tuples of them): rebinding one to the other changes nothing."""
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_same_constant(x, y) for x, y in zip(a, b, strict=True))
    return isinstance(a, _CONSTANTS) and _equal(a, b)


def _constant(value: Any) -> bool:
    """An immutable constant (str, bytes, numbers, None, and tuples of them): rebinding a class
    attribute to it gives the class nothing that belongs to another class body."""
    if isinstance(value, tuple):
        return all(_constant(v) for v in value)
    return isinstance(value, _CONSTANTS)


def _same(a: Any, b: Any) -> bool:
    """Two __defaults__ tuples / __kwdefaults__ dicts that hold the same or equal constant values."""
    if a is None or b is None:
        return a is b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(a[k] is b[k] or _same_constant(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(
        x is y or _same_constant(x, y) for x, y in zip(a, b, strict=True)
    )


def _same_defaults(a: FunctionType, b: FunctionType) -> bool:
    return _same(a.__defaults__, b.__defaults__) and _same(a.__kwdefaults__, b.__kwdefaults__)


def _function_pairs(old: Any, new: Any) -> list[tuple[FunctionType, FunctionType]] | None:
    """(live function, new function) pairs to patch when a class member is the same kind of
    function-holding object in both versions; None otherwise."""
    if isinstance(old, FunctionType) and isinstance(new, FunctionType):
        return [(old, new)]
    if type(old) is type(new) and isinstance(old, staticmethod | classmethod):
        a, b = old.__func__, new.__func__
        if isinstance(a, FunctionType) and isinstance(b, FunctionType):
            return [(a, b)]
        return None
    if type(old) is property and type(new) is property:
        pairs: list[tuple[FunctionType, FunctionType]] = []
        for part in ("fget", "fset", "fdel"):
            a, b = getattr(old, part), getattr(new, part)
            if a is None and b is None:
                continue
            if not (isinstance(a, FunctionType) and isinstance(b, FunctionType)):
                return None
            pairs.append((a, b))
        return pairs
    return None


def _star_import(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and [a.name for a in node.names] == ["*"]


def _star_source(module: ModuleType, node: ast.ImportFrom) -> str:
    """The absolute name of the module a (relative) star import in `module` reads."""
    if not node.level:
        return node.module or ""
    package = getattr(module, "__package__", None) or module.__name__.rpartition(".")[0]
    base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{base}.{node.module}" if node.module else base


def _wraps(obj: Any, func: FunctionType) -> bool:
    """Whether `obj` is `func` or leads to it through `__wrapped__` (functools.wraps)."""
    for _ in range(8):
        if obj is func:
            return True
        try:
            obj = vars(obj).get("__wrapped__") if hasattr(obj, "__dict__") else None
        except TypeError:
            return False
        if obj is None:
            return False
    return False


def _implicit_hash(cls: type, d: Definition) -> bool:
    """An added `__hash__ = None` in a class whose live version defines `__eq__` and no `__hash__`:
    Python already set `__hash__` to None in the class's dict when the class statement ran (h11
    c37f9ebe22 adds it explicitly for Python 2). The live class binds the very object the new
    statement binds, so there is nothing to bind, and a revert has nothing to restore (session 11)."""
    value = _assigned_value(d)
    return (
        d.name == "__hash__"
        and isinstance(value, ast.Constant)
        and value.value is None
        and "__eq__" in vars(cls)
        and "__hash__" in vars(cls)
        and vars(cls)["__hash__"] is None
    )


def _assigned_value(d: Definition) -> ast.expr:
    node = d.node
    assert isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None
    return node.value


def _equal(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


def _short(text: str, limit: int = 60) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _import_source(module: ModuleType, node: ast.stmt, bound: str) -> tuple[str, str] | None:
    """(absolute module, imported name) of `from M import NAME [as bound]` written in `module`."""
    if not isinstance(node, ast.ImportFrom):
        return None
    base = node.module or ""
    if node.level:
        package = module.__package__ or ""
        parts = package.split(".") if package else []
        if node.level - 1 > len(parts):
            return None
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join([*parts, base] if base else parts)
    for alias in node.names:
        if (alias.asname or alias.name) == bound:
            return base, alias.name
    return None


def _imported_object(module: ModuleType, node: ast.stmt, bound: str) -> Any:
    """What `bound` would be bound to by the import statement `node` run in `module`, looked up in the
    loaded modules only (no import runs); MISSING when something is not loaded."""
    if isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.__package__ or ""
            parts = package.split(".") if package else []
            if node.level - 1 > len(parts):
                return MISSING
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, base] if base else parts)
        source = sys.modules.get(base)
        if source is None:
            return MISSING
        for alias in node.names:
            if (alias.asname or alias.name) == bound:
                value = vars(source).get(alias.name, MISSING)
                if value is MISSING:
                    value = sys.modules.get(f"{base}.{alias.name}", MISSING)
                return value
        return MISSING
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname == bound:
                return sys.modules.get(alias.name, MISSING)
            if alias.asname is None and alias.name.split(".")[0] == bound:
                return sys.modules.get(bound, MISSING)
    return MISSING


_FROM = re.compile(r"^from (\.*)(\S*) import (\S+)$")
_FROM_LINE = re.compile(r"^from (\.*)([\w.]*) import (.+)$")
_IMPORT_LINE = re.compile(r"^import ([\w., ]+)$")


def _sources_first(modules: tuple[ModulePatch, ...]) -> list[ModulePatch]:
    """The modules in an order where the source of every follow import (a CHANGED import whose
    old_value is its `from M import N` text) is staged before the module that follows it: its stager
    reads the value the source's stager built. A cycle keeps the patch's order (staging then refuses
    the follow it cannot resolve)."""
    if len(modules) < 2:
        # Nothing to order; and scanning the new source's lines cost a one-function kvserver patch
        # (strings.py, 530 lines) ~40 µs quiet, a third of its staging.
        return list(modules)
    by_name = {mp.module: mp for mp in modules}
    deps: dict[str, set[str]] = {}
    for mp in modules:
        live = sys.modules.get(mp.module)
        package = (
            (live.__package__ if live is not None else None)
            or (mp.module if any(o.startswith(mp.module + ".") for o in by_name) else "")
            or mp.module.rpartition(".")[0]
        )
        # follow imports (old_value), and every top-level `from M import ...` of the new source: an
        # added import of a name the patch adds to M takes it from M's stager
        texts = [c.old_value or "" for c in mp.changes if c.definition is DefinitionKind.IMPORT]
        # only the import lines matter: stripping and matching every line of resp.py (916) was ~0.5 ms
        lines = [
            line.rstrip()
            for line in mp.new_source.splitlines()
            if line.startswith(("from ", "import "))
        ]
        texts += [line for line in lines if line.startswith("from ")]
        for text in texts:
            m = _FROM.match(text) or _FROM_LINE.match(text)
            if m is None:
                continue
            base = m[2]
            if m[1]:
                parts = package.split(".") if package else []
                parts = parts[: max(0, len(parts) - (len(m[1]) - 1))]
                base = ".".join([*parts, base] if base else parts)
            # `from M import N`: M, and M.N when N is a module the patch adds (`from . import util`)
            names = [n.split(" as ")[0].strip(" (),") for n in m[3].split(",")]
            for dep in [base, *(f"{base}.{n}" if base else n for n in names)]:
                if dep in by_name and dep != mp.module:
                    deps.setdefault(mp.module, set()).add(dep)
        for line in lines:  # `import pkg.util`: a module the patch adds, imported by its whole name
            im = _IMPORT_LINE.match(line)
            for dep in (n.split(" as ")[0].strip() for n in im[1].split(",")) if im else ():
                if dep in by_name and dep != mp.module:
                    deps.setdefault(mp.module, set()).add(dep)
    order: list[ModulePatch] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str) -> None:
        if state.get(name):
            return
        state[name] = 1
        for dep in sorted(deps.get(name, ())):
            visit(dep)
        state[name] = 2
        order.append(by_name[name])

    for mp in modules:
        visit(mp.module)
    return order


@contextlib.contextmanager
def _visible(added: dict[str, ModuleType], shared: dict[tuple[str, str], Any]) -> Iterator[None]:
    """While a module the patch adds runs its source, the modules the same patch added before it (it
    imports them: `from .util import X`, `from . import util`, `import pkg.util`; _sources_first puts
    them first) are in sys.modules, and the names the patch adds to loaded modules staged before it
    (`from .zsets import check_range_options`, kvserver b79fb53110) are set on those modules, so its
    imports bind the very objects the swap will bind, as a fresh import of the new version would. Only
    names the live process lacks (new modules, new names), only for the time of that source's top
    level, and taken out again whatever happens: the swap binds them. A thread reading such a name in
    that window sees the staged object (a name that did not exist)."""
    shown = [name for name in added if name not in sys.modules]
    names = [
        (live, name, value)
        for (m, name), value in shared.items()
        if m not in added and (live := sys.modules.get(m)) is not None and name not in vars(live)
    ]
    try:
        for name in shown:
            sys.modules[name] = added[name]
        for live, name, value in names:
            setattr(live, name, value)
        yield
    finally:
        for live, name, value in names:
            if vars(live).get(name, MISSING) is value:
                delattr(live, name)
        for name in shown:
            if sys.modules.get(name) is added[name]:
                del sys.modules[name]


def _check_no_old_copies(
    name: str, module: ModuleType, added: dict[str, ModuleType], shared: dict[tuple[str, str], Any]
) -> None:
    """A new module that copied (`from m import X`) a value the same patch changes in a loaded module
    got the live, old one: a fresh import of the new version would have the new one. Refused, naming
    it (by identity: an equal small int or string held for another reason is refused too, the safe
    side)."""
    for (m, attr), value in shared.items():
        live = sys.modules.get(m)
        if live is None or m in added:
            continue
        old = vars(live).get(attr, MISSING)
        if old is MISSING or old is value or isinstance(old, ModuleType):
            continue
        for k, v in vars(module).items():
            if v is old and not k.startswith("__"):
                raise PatchRefused(
                    f"{name}: the new module's `{k}` is the live `{m}.{attr}`, which the same patch "
                    f"changes: it would keep the old value; fix: read it as `{m}.{attr}` at call time, "
                    "or ship the new module first"
                )


def stage(spec: PatchSpec, pacer: Pacer | None = None) -> StagedPatch:
    """Compile (unless `spec` carries compiled code), resolve, verify and prepare `spec` (see the module
    docstring for what StagedPatch offers).

    Modules of the patch that this process has not imported have no live code to patch: they are skipped
    (listed in `StagedPatch.skipped_modules`; a later import reads them from disk), unless the patch adds
    them (every change ADDED), in which case they are built from the patch. A patch none of whose modules
    is loaded is refused. Runs on the patcher thread while the server keeps running; changes nothing in
    the live program. Raises PatchRefused naming the first problem. Gives up the GIL between its pieces
    once it has been long (`pacer`, a new one by default: runtime/pacing.py).
    """
    check_refusals(spec)
    pace = pacer or Pacer()  # a long staging lets the server's threads run between its pieces
    codes: list[CodeOp] = []
    binds: list[BindOp] = []
    modules: dict[str, ModuleType] = {}
    skipped: list[str] = []
    source_bytes = 0
    shared: dict[tuple[str, str], Any] = {}
    followed = frozenset(
        (mp.module, c.qualname)
        for mp in spec.modules
        for c in mp.changes
        if c.definition is DefinitionKind.IMPORT
        and c.kind is ChangeKind.CHANGED
        and c.old_value is not None
    )
    # modules whose `__all__` the patch changes: a folded `__all__ += m.__all__` chain (walk.fold_all_chain)
    # evaluated now would read their old one
    changed_all = frozenset(
        mp.module
        for mp in spec.modules
        for c in mp.changes
        if c.qualname == "__all__" and c.kind is not ChangeKind.SAME
    )
    added: dict[str, ModuleType] = {}  # modules this patch adds, built so far
    star_copies: list[
        tuple[str, str, Any, str]
    ] = []  # what new star imports copied (stage_new_star)
    for mp in _sources_first(spec.modules):
        module = sys.modules.get(mp.module)
        if module is None:
            if mp.changes and all(c.kind is ChangeKind.ADDED for c in mp.changes):
                with _visible(added, shared):
                    module, module_binds = new_module(mp)
                _check_no_old_copies(mp.module, module, added, shared)
                added[mp.module] = module
                # what later modules of the patch import from it by name, and the module itself as
                # its package's attribute (`from kvserver import replication_cli` in a loaded module:
                # kvserver 804f2324e2), which swap_in binds (new_module's BindOp)
                shared.update({(mp.module, k): v for k, v in vars(module).items()})
                parent, _, child = mp.module.rpartition(".")
                if parent:
                    shared[(parent, child)] = module
                binds.extend(module_binds)
                modules[mp.module] = module
                source_bytes += len(mp.new_source.encode())
            else:
                skipped.append(mp.module)
            continue
        filename = getattr(module, "__file__", None) or f"<livepatch {mp.module}>"
        pace()
        stager = _ModuleStager(mp, module, filename, shared, followed, pace)
        stager.changed_all = changed_all
        if not isinstance(mp, CompiledModulePatch):
            stager.walk  # noqa: B018 - without compiled code the source must compile, whatever changes
        stager.run()
        star_copies.extend(stager.star_copies)
        codes.extend(stager.codes)
        binds.extend(stager.binds.values())
        modules[mp.module] = module
        source_bytes += len(mp.new_source.encode())
    for source, name, value, where in star_copies:
        if shared.get((source, name), value) is not value:
            raise PatchRefused(
                f"{where}: the new star import copies the live `{source}.{name}`, which the same "
                "patch changes: it would keep the old value; fix: import the names explicitly"
            )
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
