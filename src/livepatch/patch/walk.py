"""Walk one module's source into its patchable definitions (shared by the differ and the runtime stager).

Theory of operation: the source is parsed (AST) and compiled (code objects), never executed. The AST says
what each definition is (function, method, static/class method, property accessor, class, import) and
gives the parts that live outside the function's own code object: decorators and default values are
evaluated by the *enclosing* scope, so a changed default does not change the function's code. The code
objects give the bodies. A `def` node is matched to its code object among the constants of the enclosing
scope's code by `co_qualname` and source order (a property's getter and setter share a qualname; the
k-th node with a qualname gets the k-th code object with it).

Only definitions directly in the module body or directly in a class body (recursively, for nested classes)
are targets. Functions nested in functions are part of their parent; definitions inside `if`/`try` blocks at
top level are module-level statements (they ran once at import). Everything is line-number free:
statements are compared by `ast.dump` without attributes.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import CodeType

from livepatch.patch.model import DefinitionKind

__all__ = ["ClassInfo", "Definition", "ModuleWalk", "walk_source"]

_ACCESSORS = {"setter": "fset", "getter": "fget", "deleter": "fdel"}
FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass
class Definition:
    """One target: a def, a class or an imported name, where it is bound and how it was compiled."""

    qualname: str  # the target name (model.py conventions: `Cls.prop.fget` for an accessor)
    kind: DefinitionKind
    node: ast.stmt  # FunctionDef / AsyncFunctionDef / ClassDef / Import / ImportFrom
    code: CodeType | None  # the function's code, the class body's code; None for an import
    owner: str  # qualname of the class it is bound in, "" for module level
    name: str  # the name it is bound to in its namespace
    decorators: str = ""  # ast.dump of the decorator list
    defaults: dict[str, str] = field(default_factory=dict)  # parameter -> ast.dump of its default

    @property
    def code_qualname(self) -> str:
        return self.code.co_qualname if self.code is not None else self.qualname


@dataclass
class ClassInfo:
    """What a class's layout and class-level state consist of, for the layout checks."""

    qualname: str
    node: ast.ClassDef
    header: str  # bases and keywords (metaclass=...)
    decorators: str
    slots: str | None  # dump of the __slots__ value, None without __slots__
    assignments: dict[
        str, ast.Assign | ast.AnnAssign
    ]  # simple class-level `NAME = value` (or `NAME: T = value`)
    other_statements: list[str]  # every other class-body statement that is not a def or a class
    instance_attributes: dict[str, str]  # `self.X = ...` in any method -> first method assigning it


@dataclass
class ModuleWalk:
    definitions: dict[str, Definition]  # by target qualname, in source order
    classes: dict[str, ClassInfo]
    statements: list[
        tuple[str, str]
    ]  # module-level statements that are not defs/classes/imports: (dump, text)
    future: list[ast.stmt]  # the `from __future__` imports (needed to compile slices of the module)
    code: CodeType  # the module's code


def _dump(node: ast.AST | Sequence[ast.AST] | None) -> str:
    if node is None:
        return ""
    if isinstance(node, ast.AST):
        return ast.dump(node)
    return "[" + ", ".join(ast.dump(n) for n in node) + "]"


def _consts_by_qualname(code: CodeType) -> dict[str, list[CodeType]]:
    found: dict[str, list[CodeType]] = {}
    for const in code.co_consts:
        if isinstance(const, CodeType):
            found.setdefault(const.co_qualname, []).append(const)
    return found


def _defaults(node: FunctionNode) -> dict[str, str]:
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    out = {}
    for arg, default in zip(
        positional[len(positional) - len(args.defaults) :], args.defaults, strict=True
    ):
        out[arg.arg] = ast.dump(default)
    for arg, kwdefault in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        if kwdefault is not None:
            out[arg.arg] = ast.dump(kwdefault)
    return out


def _method_kind(node: FunctionNode, properties: set[str]) -> tuple[DefinitionKind, str | None]:
    """The kind of a def in a class body, and the property accessor it defines (if any)."""
    for deco in node.decorator_list:
        if isinstance(deco, ast.Name):
            if deco.id == "staticmethod":
                return DefinitionKind.STATICMETHOD, None
            if deco.id == "classmethod":
                return DefinitionKind.CLASSMETHOD, None
            if deco.id == "property":
                return DefinitionKind.PROPERTY, "fget"
        if (
            isinstance(deco, ast.Attribute)
            and deco.attr in _ACCESSORS
            and isinstance(deco.value, ast.Name)
            and deco.value.id in properties
        ):
            return DefinitionKind.PROPERTY, _ACCESSORS[deco.attr]
    return DefinitionKind.METHOD, None


def _assigned_names(stmt: ast.stmt) -> list[str] | None:
    """Names bound by a simple assignment statement (`A = B = 1`, `A: int = 1`), else None."""
    if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if (
        isinstance(stmt, ast.AnnAssign)
        and isinstance(stmt.target, ast.Name)
        and stmt.value is not None
    ):
        return [stmt.target.id]
    return None


def _self_attributes(node: FunctionNode) -> Iterator[str]:
    """Attribute names assigned on the method's first parameter (`self.X = ...`)."""
    params = [*node.args.posonlyargs, *node.args.args]
    if not params:
        return
    self_name = params[0].arg
    for sub in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(sub, ast.Assign):
            targets = list(sub.targets)
        elif isinstance(sub, ast.AugAssign | ast.AnnAssign):
            targets = [sub.target]
        while targets:
            t = targets.pop()
            if isinstance(t, ast.Tuple | ast.List):
                targets.extend(t.elts)
            elif isinstance(t, ast.Starred):
                targets.append(t.value)
            elif (
                isinstance(t, ast.Attribute)
                and isinstance(t.value, ast.Name)
                and t.value.id == self_name
            ):
                yield t.attr


def _import_bindings(stmt: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str]]:
    """(bound name, a line-free description of what it is bound to) per alias."""
    for alias in stmt.names:
        if isinstance(stmt, ast.Import):
            bound = alias.asname or alias.name.split(".")[0]
            what = f"import {alias.name}" + (f" as {alias.asname}" if alias.asname else "")
        else:
            bound = alias.asname or alias.name
            what = f"from {'.' * stmt.level}{stmt.module or ''} import {alias.name}"
        yield bound, what


def _is_main_guard(stmt: ast.stmt) -> bool:
    """`if __name__ == "__main__":` never runs in a server: its changes don't matter."""
    return (
        isinstance(stmt, ast.If)
        and isinstance(stmt.test, ast.Compare)
        and isinstance(stmt.test.left, ast.Name)
        and stmt.test.left.id == "__name__"
    )


_LINE_END = re.compile(r"(?<=\r\n)|(?<=\r)(?!\n)|(?<=\n)")


class _Walker:
    def __init__(self, source: str) -> None:
        self.source = source
        self._lines: list[bytes] | None = None
        self.definitions: dict[str, Definition] = {}
        self.classes: dict[str, ClassInfo] = {}

    def _segment(self, node: ast.stmt) -> str | None:
        """ast.get_source_segment, with the source split into lines once per walk instead of once per
        call (which made staging a large module quadratic and held the GIL for tens of milliseconds)."""
        end_lineno, end_col = node.end_lineno, node.end_col_offset
        if end_lineno is None or end_col is None:
            return None
        if self._lines is None:
            # only \r\n, \r and \n end a line for the tokenizer (str.splitlines also splits on \f, \x1c...)
            self._lines = [line.encode() for line in _LINE_END.split(self.source) if line]
        lines = self._lines[node.lineno - 1 : end_lineno]
        if not lines:
            return None
        if len(lines) == 1:
            return lines[0][node.col_offset : end_col].decode()
        first, last = lines[0][node.col_offset :], lines[-1][:end_col]
        return b"".join([first, *lines[1:-1], last]).decode()

    def _function(
        self, node: FunctionNode, owner: str, pool: dict[str, list[CodeType]], properties: set[str]
    ) -> None:
        if owner:
            kind, accessor = _method_kind(node, properties)
            code_qualname = f"{owner}.{node.name}"
        else:
            kind, accessor = DefinitionKind.FUNCTION, None
            code_qualname = node.name
        codes = pool.get(code_qualname) or []
        code = codes.pop(0) if codes else None
        qualname = code_qualname + (f".{accessor}" if accessor else "")
        if kind is DefinitionKind.PROPERTY:
            properties.add(node.name)
        else:
            properties.discard(node.name)
        # a later def of the same name rebinds it: the last one is what runs
        self.definitions.pop(qualname, None)
        self.definitions[qualname] = Definition(
            qualname=qualname,
            kind=kind,
            node=node,
            code=code,
            owner=owner,
            name=node.name,
            decorators=_dump(node.decorator_list),
            defaults=_defaults(node),
        )

    def _class(self, node: ast.ClassDef, owner: str, pool: dict[str, list[CodeType]]) -> None:
        qualname = f"{owner}.{node.name}" if owner else node.name
        codes = pool.get(qualname) or []
        code = codes.pop(0) if codes else None
        self.definitions.pop(qualname, None)
        self.definitions[qualname] = Definition(
            qualname=qualname,
            kind=DefinitionKind.CLASS,
            node=node,
            code=code,
            owner=owner,
            name=node.name,
            decorators=_dump(node.decorator_list),
        )
        info = ClassInfo(
            qualname=qualname,
            node=node,
            header=_dump(node.bases) + _dump(node.keywords),
            decorators=_dump(node.decorator_list),
            slots=None,
            assignments={},
            other_statements=[],
            instance_attributes={},
        )
        self.classes[qualname] = info
        inner_pool = _consts_by_qualname(code) if code is not None else {}
        properties: set[str] = set()
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the docstring
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                self._function(stmt, qualname, inner_pool, properties)
                for attr in _self_attributes(stmt):
                    info.instance_attributes.setdefault(attr, f"{qualname}.{stmt.name}")
            elif isinstance(stmt, ast.ClassDef):
                self._class(stmt, qualname, inner_pool)
            else:
                names = _assigned_names(stmt)
                if names == ["__slots__"] and isinstance(stmt, ast.Assign | ast.AnnAssign):
                    info.slots = _dump(stmt.value)
                elif names is not None and isinstance(stmt, ast.Assign | ast.AnnAssign):
                    for name in names:
                        info.assignments[name] = stmt
                elif not isinstance(stmt, ast.Pass):
                    info.other_statements.append(_dump(stmt))

    def walk(self, tree: ast.Module, code: CodeType) -> ModuleWalk:
        pool = _consts_by_qualname(code)
        statements: list[tuple[str, str]] = []
        future: list[ast.stmt] = []
        body = tree.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the module docstring
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                self._function(stmt, "", pool, set())
            elif isinstance(stmt, ast.ClassDef):
                self._class(stmt, "", pool)
            elif isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                future.append(stmt)
            elif isinstance(stmt, ast.Import | ast.ImportFrom):
                for bound, what in _import_bindings(stmt):
                    self.definitions.pop(bound, None)
                    self.definitions[bound] = Definition(
                        qualname=bound,
                        kind=DefinitionKind.IMPORT,
                        node=stmt,
                        code=None,
                        owner="",
                        name=bound,
                        decorators=what,  # for an import: what the name is bound to
                    )
            elif not _is_main_guard(stmt):
                text = self._segment(stmt) or ast.unparse(stmt)
                statements.append((ast.dump(stmt), text))
        return ModuleWalk(self.definitions, self.classes, statements, future, code)


def walk_source(source: str, filename: str = "<livepatch>") -> ModuleWalk:
    """Parse and compile `source` (never execute it) and list its definitions.

    Raises SyntaxError (with `filename`) when the source does not compile. Pure; any thread.
    """
    tree = ast.parse(source, filename)
    # compiling the tree gives the same code objects as compiling the text (what the import system does:
    # tests/patch/test_fingerprint.py checks it) and saves a second parse
    code = compile(tree, filename, "exec", dont_inherit=True)
    return _Walker(source).walk(tree, code)
