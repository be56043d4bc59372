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
import builtins
import copy
import re
import string
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import CodeType

from livepatch.patch.model import DefinitionKind

__all__ = [
    "ClassInfo",
    "Definition",
    "ModuleWalk",
    "all_statements",
    "binds_only",
    "class_shape",
    "fold_all_chain",
    "fold_prebound_blocks",
    "free_reads",
    "from_imports",
    "module_scope_imports",
    "parse_in_pieces",
    "source_lines",
    "walk_source",
    "walk_tree",
]

_ACCESSORS = {"setter": "fset", "getter": "fget", "deleter": "fdel"}
# where a `global` statement can start: a line, or after `;` or a compound header's `:` (a superset:
# the same text in a string or a comment matches too, which only costs the scan)
_GLOBAL_KEYWORD = re.compile(r"(?:^|[;:])(?:\s|\\\n)*global\b", re.MULTILINE)
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
    value: str = ""  # a VALUE: ast.dump of the assigned expression

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
    # names read while the class body runs (its statements, decorators and defaults of its methods)
    body_reads: dict[str, set[str]] = field(default_factory=dict)  # name -> readers (qualnames)
    # `self.X` read in a method as getattr(self, "X", default) only: a live instance without X is fine
    guarded_reads: set[str] = field(default_factory=set)
    # `self.X` read any other way in a method of the class
    plain_reads: set[str] = field(default_factory=set)
    # `self.X = expr` at the top level of __init__, when `expr` reads no parameter or local variable:
    # the value a transformer can give a live instance (patch/transformer.py)
    init_values: dict[str, ast.expr] = field(default_factory=dict)
    # `self.X = expr` at the top level of __init__, whatever `expr` reads (first one of each X): the
    # attributes every instance the __init__ finishes has of its own (diff.py's shadowing rules)
    init_always: dict[str, ast.expr] = field(default_factory=dict)
    # X -> where __init__ stores `self.X`: for each store, the compound statements around it (an `if`'s
    # test and branch, a loop's header, a `try` part, a `with`'s items), as text (walk._init_store_paths)
    init_store_paths: dict[str, frozenset[tuple[str, ...]]] = field(default_factory=dict)
    # `self.X = expr` at the top level of __init__ whose expression also reads parameters the object
    # keeps: the expression with each such parameter `p` read as `self.A` (`self.A = p` in __init__,
    # see _kept_parameters), and the parameters it read (the diff checks the old version kept them too)
    init_derived: dict[str, tuple[ast.expr, frozenset[str]]] = field(default_factory=dict)
    # X -> the `if` statement at the top level of __init__ that stores `self.X` (walk._init_ifs): its
    # tests and values read only globals, builtins and `self`, and it stores nothing but `self.Y`
    init_ifs: dict[str, ast.If] = field(default_factory=dict)
    # parameter -> (attribute A of `self.A = p` at the top level of __init__, dumps of the statements
    # before it that rebind p, e.g. `if adj is None: adj = Adjustments()`); only when nothing after it
    # rebinds p
    init_kept: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # how many statements of the class's methods assign `self.X` (an augmented assignment counts)
    attribute_stores: dict[str, int] = field(default_factory=dict)
    # how many of those read `self.X` first, whatever happens (walk._self_fed_stores)
    self_fed_stores: dict[str, int] = field(default_factory=dict)
    # the class body defines __getattr__ or __getattribute__ (a read of a missing attribute may succeed)
    makes_up_attributes: bool = False


@dataclass
class ModuleWalk:
    definitions: dict[str, Definition]  # by target qualname, in source order
    classes: dict[str, ClassInfo]
    statements: list[
        tuple[str, str]
    ]  # module-level statements that are not defs/classes/imports: (dump, text)
    # what a slice of the module is compiled with (compiled.statement_code): the `from __future__`
    # imports, then the module-scope imports under `if False:` (never run) so the compiler knows which
    # names are imported modules: CPython 3.11 compiles `os.unlink(x)` without LOAD_METHOD when `os` is
    # imported in the module, and a slice compiled without them would get other bytecode (same
    # behaviour, another fingerprint than a fresh import)
    future: list[ast.stmt]
    code: CodeType | None  # the module's code (None: walk_tree was given none)
    # VALUE qualname -> the other definitions and statements that read it while the module (or its class
    # body) runs: they captured its value (module-level names under their name, class-level ones
    # under `Cls.NAME`)
    readers: dict[str, set[str]] = field(default_factory=dict)
    dynamic_names: set[str] = field(default_factory=set)  # bound by code that is not a target
    # readers (as in `readers`) whose import-time code reads the namespace itself: globals(), vars()...
    namespace_readers: set[str] = field(default_factory=set)
    mutated: set[str] = field(default_factory=set)  # names/attributes changed in place anywhere
    # `from M import NAME [as BOUND]` (or `*`) executed at import time: (level, module, name, bound)
    from_imports: list[tuple[int, str, str, str]] = field(default_factory=list)
    statement_nodes: list[ast.stmt] = field(default_factory=list)  # the nodes of `statements`
    # every name any code of the module reads as a variable (module level, functions, classes): a name
    # outside it is read by nothing of the module but through the namespace (globals(), getattr);
    # empty in a light walk (full=False)
    loads: frozenset[str] = frozenset()

    def block(self, qualname: str) -> ast.stmt | None:
        """The statement a BLOCK target (`<block N>`) names, None when there is no such statement."""
        m = re.fullmatch(r"<block (\d+)>", qualname)
        if m is None or int(m[1]) >= len(self.statement_nodes):
            return None
        return self.statement_nodes[int(m[1])]


_BINDING = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Pass,
)


def binds_only(stmt: ast.stmt) -> bool:
    """An `if`/`try` block whose branches only bind names: imports (not `*`), defs, classes,
    assignments to plain names, `pass`, nested blocks of the same kind (the tests and the handlers'
    types may be any expression). Running it again in the live module runs no other code than
    what binds those names (and the tests). The other module-level statements (calls, loops, `+=`,
    `del`, a raise) are state."""
    if isinstance(stmt, ast.If):
        return all(binds_only(s) or _binds_plainly(s) for s in [*stmt.body, *stmt.orelse])
    if isinstance(stmt, ast.Try):
        if stmt.finalbody:
            return False
        parts = [*stmt.body, *stmt.orelse, *(s for h in stmt.handlers for s in h.body)]
        return all(h.name is None for h in stmt.handlers) and all(
            binds_only(s) or _binds_plainly(s) for s in parts
        )
    return False


# decorators a def in a block's class may have: staging patches the functions they hold in place
_DESCRIPTOR_DECORATORS = frozenset({"staticmethod", "classmethod", "property"})
_ACCESSOR_DECORATORS = frozenset({"setter", "getter", "deleter"})


def _plain_decorators(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> bool:
    for d in node.decorator_list:
        if isinstance(d, ast.Name) and d.id in _DESCRIPTOR_DECORATORS:
            continue
        if isinstance(d, ast.Attribute) and d.attr in _ACCESSOR_DECORATORS:
            continue
        return False
    return True


def class_shape(node: ast.ClassDef) -> str:
    """What of a class a block defines must stay the same for staging to patch the live class in place:
    bases, keywords, decorators and every class-body statement that is not a def (the defs are patched)."""
    body = [s for s in node.body if not isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)]
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return _dump(node.bases) + _dump(node.keywords) + _dump(node.decorator_list) + _dump(body)


def _binds_plainly(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
        return False
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        # a decorator runs code and returns another object: not patchable in place
        if stmt.decorator_list:
            return False
        if isinstance(stmt, ast.ClassDef):
            return all(
                _plain_decorators(s)
                for s in stmt.body
                if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)
            )
        return True
    if isinstance(stmt, _BINDING):
        return True
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return True  # a docstring-like constant
    return _assigned_names(stmt) is not None


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
    for sub in ast.walk(node):
        yield from _self_stores(sub, params[0].arg)


def _self_stores(sub: ast.AST, self_name: str) -> Iterator[str]:
    """The attributes X one node stores as `self_name.X` (assignment, loop or `with` target, unpacked
    or not)."""
    targets: list[ast.expr] = []
    if isinstance(sub, ast.Assign):
        targets = list(sub.targets)
    elif isinstance(sub, ast.AugAssign | ast.AnnAssign | ast.For | ast.AsyncFor):
        targets = [sub.target]
    elif isinstance(sub, ast.With | ast.AsyncWith):
        targets = [i.optional_vars for i in sub.items if i.optional_vars is not None]
    elif isinstance(sub, ast.NamedExpr | ast.comprehension):
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


def _always_read(expr: ast.expr, me: str) -> set[str]:
    """Attributes `me.X` an expression certainly reads whenever it completes: not in the branches of
    `and`/`or`/`if-else` past the first operand, nor in comparisons past the first one of a chain, nor
    in lambdas or in a comprehension past its first iterable (short-circuited or deferred)."""
    out: set[str] = set()
    todo: list[ast.AST] = [expr]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == me:
            if isinstance(n.ctx, ast.Load):
                out.add(n.attr)
        elif isinstance(n, ast.BoolOp):
            todo.append(n.values[0])
        elif isinstance(n, ast.IfExp):
            todo.append(n.test)
        elif isinstance(n, ast.Compare):
            todo.extend([n.left, n.comparators[0]])
        elif isinstance(n, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            if not isinstance(n, ast.GeneratorExp):
                todo.append(n.generators[0].iter)
        elif isinstance(n, ast.Lambda):
            continue
        else:
            todo.extend(ast.iter_child_nodes(n))
    return out


def _self_fed_stores(node: FunctionNode) -> dict[str, int]:
    """How many of a method's stores of each `self.X` read `self.X` first, whatever happens
    (`self.X = int(self.X)`, `self.X += 1`): such a store runs only on an instance that has X already
    (unless a `__getattr__` makes one up), so it never gives X to an instance that lacks it."""
    params = [*node.args.posonlyargs, *node.args.args]
    out: dict[str, int] = {}
    if not params:
        return out
    me = params[0].arg
    for sub in ast.walk(node):
        target: ast.expr | None = None
        if isinstance(sub, ast.Assign) and len(sub.targets) == 1:
            target = sub.targets[0]
        elif isinstance(sub, ast.AugAssign):
            target = sub.target
        if not (
            isinstance(target, ast.Attribute)
            and isinstance(target.value, ast.Name)
            and target.value.id == me
        ):
            continue
        assert isinstance(sub, ast.Assign | ast.AugAssign)
        if isinstance(sub, ast.AugAssign) or target.attr in _always_read(sub.value, me):
            out[target.attr] = out.get(target.attr, 0) + 1
    return out


# builtins that read a namespace as a whole: code calling them may read any name
_NAMESPACE_READERS = frozenset({"globals", "vars", "locals", "eval", "exec"})

# methods that change a container in place: a table a function mutates is state, not a constant
_MUTATORS = frozenset(
    [
        "append",
        "extend",
        "insert",
        "pop",
        "popitem",
        "remove",
        "clear",
        "update",
        "setdefault",
        "add",
        "discard",
        "sort",
        "reverse",
        "appendleft",
        "extendleft",
        "popleft",
        "rotate",
        "__setitem__",
        "__delitem__",
        "difference_update",
        "intersection_update",
        "symmetric_difference_update",
    ]
)


def _names_read_now(node: ast.AST) -> set[str]:
    """Names an expression or statement reads when it runs (not what its nested function bodies and
    lambdas read later: those look globals up at call time)."""
    out: set[str] = set()
    stack: list[ast.AST] = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            out.add(n.id)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
            stack.extend(n.decorator_list)
            stack.extend(d for d in [*n.args.defaults, *n.args.kw_defaults] if d is not None)
            continue
        elif isinstance(n, ast.Lambda):
            stack.extend(d for d in [*n.args.defaults, *n.args.kw_defaults] if d is not None)
            continue
        stack.extend(ast.iter_child_nodes(n))
    return out


# namespace builtins whose module-level uses `_named_namespace_reads` can see through
_WHOLE_NAMESPACE = frozenset({"globals", "vars"})
_FORMAT_FIELD = re.compile(r"%\(([^)]*)\)")


def _format_fields(text: str) -> set[str] | None:
    """The top-level names a `str.format` template reads (`{a.b[0]:>{w}}` -> a, w); None when a field
    is positional (`{}`, `{0}`) or the template is malformed."""
    out: set[str] = set()
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError:
        return None
    for _, field_name, spec, _ in parsed:
        if field_name is None:
            continue
        head = re.split(r"[.\[]", field_name, maxsplit=1)[0]
        if not head.isidentifier():
            return None
        out.add(head)
        if spec and "{" in spec:
            inner = _format_fields(spec)
            if inner is None:
                return None
            out |= inner
    return out


def _named_namespace_reads(node: ast.AST) -> set[str] | None:
    """The names a statement reads through `globals()`/`vars()` when every such use names them in the
    source (what staging can evaluate with the patch's new values, see swap_build.exec_code):
    `"...{name}...".format(**globals())` on a literal template, `"...%(name)s..." % globals()` on a
    literal, and `globals()[k] = v` (a store: reads nothing). None when any other use (or locals(),
    eval, exec) may read any name. Nested function bodies and lambdas run later and are not looked at,
    as in `_names_read_now`."""
    parents: dict[int, ast.AST] = {}
    stack: list[ast.AST] = [node]
    calls: list[ast.Call] = []
    while stack:
        n = stack.pop()
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            kids: list[ast.AST] = [
                *getattr(n, "decorator_list", []),
                *(d for d in [*n.args.defaults, *n.args.kw_defaults] if d is not None),
            ]
        else:
            kids = list(ast.iter_child_nodes(n))
        for k in kids:
            parents[id(k)] = n
            stack.append(k)
        if isinstance(n, ast.Name) and n.id in _NAMESPACE_READERS and isinstance(n.ctx, ast.Load):
            parent = parents.get(id(n))
            if not (
                n.id in _WHOLE_NAMESPACE
                and isinstance(parent, ast.Call)
                and parent.func is n
                and not parent.args
                and not parent.keywords
            ):
                return None
            calls.append(parent)
    out: set[str] = set()
    for call in calls:
        parent = parents.get(id(call))
        if isinstance(parent, ast.Subscript) and parent.value is call:
            if isinstance(parent.ctx, ast.Store | ast.Del):
                continue  # globals()[k] = v binds a name, reads none
            return None
        if isinstance(parent, ast.keyword) and parent.arg is None:
            fmt = parents.get(id(parent))
            if (
                isinstance(fmt, ast.Call)
                and not fmt.args
                and len(fmt.keywords) == 1
                and isinstance(fmt.func, ast.Attribute)
                and fmt.func.attr == "format"
                and isinstance(fmt.func.value, ast.Constant)
                and isinstance(fmt.func.value.value, str)
            ):
                fields = _format_fields(fmt.func.value.value)
                if fields is None:
                    return None
                out |= fields
                continue
            return None
        if (
            isinstance(parent, ast.BinOp)
            and isinstance(parent.op, ast.Mod)
            and parent.right is call
            and isinstance(parent.left, ast.Constant)
            and isinstance(parent.left.value, str | bytes)
        ):
            template = parent.left.value
            text = template.decode("latin-1") if isinstance(template, bytes) else template
            out |= set(_FORMAT_FIELD.findall(text))
            continue
        return None
    return out


def _stored_names(stmt: ast.stmt, bodies: bool = True) -> set[str]:
    """Names a module-level or class-level statement binds in its own namespace (also through defs and
    classes inside a compound statement). A def binds its name; what runs in the enclosing scope when
    the def or class statement runs (decorators, defaults, annotations, bases: a walrus there) binds
    there too; the assignments of a function body bind its local variables, never the enclosing
    namespace (waitress `OverflowableBuffer._create_buffer`'s local `strbuf` is not the class-level
    `strbuf`), except the names it declares `global`, which are counted (conservatively, also for a
    method, whose `global` names are the module's); a nested class body binds its own namespace.
    Comprehension targets are counted (conservative). `bodies=False` skips the scan of the bodies for
    `global`: exact when the source has no `global` keyword (_Walker checks its text once)."""
    out: set[str] = set()
    todo: list[ast.AST] = [stmt]
    while todo:
        n = todo.pop()
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda):
            if not isinstance(n, ast.Lambda):
                out.add(n.name)
            # evaluated in the enclosing scope when the statement runs
            if isinstance(n, ast.ClassDef):
                todo.extend([*n.decorator_list, *n.bases, *n.keywords])
            else:
                a = n.args
                todo.extend([*a.defaults, *(d for d in a.kw_defaults if d is not None)])
                if not isinstance(n, ast.Lambda):
                    todo.extend(n.decorator_list)
                    todo.extend(
                        x.annotation
                        for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
                        if x is not None and x.annotation is not None
                    )
                    todo.extend([n.returns] if n.returns is not None else [])
            if bodies:
                for sub in ast.walk(n):  # the body: only what it declares global
                    if isinstance(sub, ast.Global):
                        out.update(sub.names)
            continue
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            out.add(n.id)
        elif isinstance(n, ast.alias):
            out.add(n.asname or n.name.split(".")[0])
        elif isinstance(n, ast.Global):
            out.update(n.names)
        todo.extend(ast.iter_child_nodes(n))
    return out


def _mutated(tree: ast.Module) -> set[str]:
    """Names and attribute names a module changes in place anywhere (functions included): `N[k] = v`,
    `del N[k]`, `N += x`, `N.append(x)`, `self.N.update(...)`, and every name a function declares
    `global` (it rebinds it at run time)."""
    out: set[str] = set()

    def base(e: ast.expr) -> str | None:
        if isinstance(e, ast.Name):
            return e.id
        if isinstance(e, ast.Attribute):
            return e.attr
        return None

    for n in ast.walk(tree):
        if isinstance(n, ast.Global):
            out.update(n.names)
        elif isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store | ast.Del):
            b = base(n.value)
            if b:
                out.add(b)
        elif isinstance(n, ast.AugAssign):
            b = base(n.target)
            if b:
                out.add(b)
        elif (
            isinstance(n, ast.Call)
            and isinstance(n.func, ast.Attribute)
            and n.func.attr in _MUTATORS
        ):
            b = base(n.func.value)
            if b:
                out.add(b)
    return out


def from_imports(tree: ast.Module) -> list[tuple[int, str, str, str]]:
    """`from M import NAME [as BOUND]` run at import time (module level, inside if/try, class bodies):
    (level, M, NAME, BOUND)."""
    out: list[tuple[int, str, str, str]] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        n = stack.pop()
        if isinstance(n, ast.ImportFrom) and n.module != "__future__":
            out.extend((n.level, n.module or "", a.name, a.asname or a.name) for a in n.names)
        elif isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        else:
            stack.extend(ast.iter_child_nodes(n))
    return out


def _self_reads(node: FunctionNode) -> tuple[set[str], set[str]]:
    """(`self.X` read only through getattr(self, "X", default), `self.X` read otherwise) in a method."""
    params = [*node.args.posonlyargs, *node.args.args]
    if not params:
        return set(), set()
    me = params[0].arg
    guarded: set[str] = set()
    plain: set[str] = set()
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Name)
            and sub.func.id in {"getattr", "hasattr"}
            and len(sub.args) >= 2
            and isinstance(sub.args[0], ast.Name)
            and sub.args[0].id == me
            and isinstance(sub.args[1], ast.Constant)
            and isinstance(sub.args[1].value, str)
            and (sub.func.id == "hasattr" or len(sub.args) == 3)
        ):
            guarded.add(sub.args[1].value)
        elif (
            isinstance(sub, ast.Attribute)
            and isinstance(sub.ctx, ast.Load)
            and isinstance(sub.value, ast.Name)
            and sub.value.id == me
        ):
            plain.add(sub.attr)
    return guarded, plain


def _init_locals(node: FunctionNode) -> set[str]:
    """An __init__'s parameters other than `self`, and every name it assigns: what a transformer's
    expression, run later on a live instance, cannot read as they were."""
    params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    local = {a.arg for a in params[1:]} | {
        a.arg for a in (node.args.vararg, node.args.kwarg) if a is not None
    }
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            local.add(sub.id)
    return local


def _init_values(node: FunctionNode) -> dict[str, ast.expr]:
    """`self.X = expr` statements at the top level of an __init__ whose expression reads no parameter
    and no local variable (only globals, builtins and `self`), first assignment of each X."""
    params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    if not params:
        return {}
    me, local = params[0].arg, _init_locals(node)
    out: dict[str, ast.expr] = {}
    once = _stored_once(node)
    for stmt in node.body:
        attr = _self_target(stmt, me)
        if attr is None or attr not in once:
            continue
        assert isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None
        if attr not in out and not (_free_reads(stmt.value) & local):
            out[attr] = stmt.value
    return out


def _init_always(node: FunctionNode) -> dict[str, ast.expr]:
    """`self.X = expr` statements at the top level of an __init__ (first of each X), whatever they read."""
    params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    if not params:
        return {}
    out: dict[str, ast.expr] = {}
    for stmt in node.body:
        attr = _self_target(stmt, params[0].arg)
        if attr is not None and attr not in out:
            assert isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None
            out[attr] = stmt.value
    return out


def _init_store_paths(node: FunctionNode) -> dict[str, frozenset[tuple[str, ...]]]:
    """For each `self.X = ...` (or `self.X += ...`) in an __init__, outside nested functions and
    classes: the statements it is nested in, each as text (`if TEST` / `else of TEST`, `for TARGET in
    ITER`, `while TEST`, `try`, `except TYPE`, `finally`, `with ITEMS`). Two __init__s with the same
    paths for X store X under the same conditions."""
    params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    if not params:
        return {}
    me = params[0].arg
    out: dict[str, set[tuple[str, ...]]] = {}

    def visit(body: list[ast.stmt], path: tuple[str, ...]) -> None:
        for stmt in body:
            for attr in _self_stores(stmt, me):
                out.setdefault(attr, set()).add(path)
            if isinstance(stmt, ast.If):
                test = ast.dump(stmt.test)
                visit(stmt.body, (*path, f"if {test}"))
                visit(stmt.orelse, (*path, f"else of {test}"))
            elif isinstance(stmt, ast.For | ast.AsyncFor):
                head = f"for {ast.dump(stmt.target)} in {ast.dump(stmt.iter)}"
                visit(stmt.body, (*path, head))
                visit(stmt.orelse, (*path, f"else of {head}"))
            elif isinstance(stmt, ast.While):
                visit(stmt.body, (*path, f"while {ast.dump(stmt.test)}"))
                visit(stmt.orelse, (*path, f"else of while {ast.dump(stmt.test)}"))
            elif isinstance(stmt, ast.Try | ast.TryStar):
                visit(stmt.body, (*path, "try"))
                for handler in stmt.handlers:
                    kind = ast.dump(handler.type) if handler.type is not None else ""
                    visit(handler.body, (*path, f"except {kind}"))
                visit(stmt.orelse, (*path, "try else"))
                visit(stmt.finalbody, (*path, "finally"))
            elif isinstance(stmt, ast.With | ast.AsyncWith):
                visit(stmt.body, (*path, f"with {[ast.dump(i) for i in stmt.items]}"))
            elif isinstance(stmt, ast.Match):
                for case in stmt.cases:
                    visit(
                        case.body,
                        (
                            *path,
                            f"case {ast.dump(case.pattern)} {ast.dump(case.guard) if case.guard else ''}",
                        ),
                    )

    visit(node.body, ())
    return {attr: frozenset(paths) for attr, paths in out.items()}


def _major_version(node: ast.expr) -> bool:
    """`sys.version_info[0]` or `sys.version_info.major`."""
    return (
        isinstance(node, ast.Subscript)
        and ast.unparse(node.value) == "sys.version_info"
        and isinstance(node.slice, ast.Constant)
        and node.slice.value == 0
    ) or ast.unparse(node) == "sys.version_info.major"


def python2_only(stmt: ast.stmt) -> bool:
    """An `if` without `else` whose test is true on Python 2 only: `sys.version_info[0] < 3`,
    `sys.version_info[0] == 2`, `sys.version_info.major < 3`, `sys.version_info < (3,)` (session 11).
    Every interpreter livepatch runs on is a Python 3 (the patches hold 3.x bytecode), so the body
    never runs, in the live process or in a fresh one: a class body gaining or losing such a
    statement (h11 c37f9ebe22 adds `if sys.version_info[0] < 3: __str__ = __bytes__`, 4746b0a0ff
    removes it) binds the same names either way. The test must read the major version only: a test of
    the minor version could differ between interpreters."""
    if not (isinstance(stmt, ast.If) and not stmt.orelse and isinstance(stmt.test, ast.Compare)):
        return False
    test = stmt.test
    if len(test.ops) != 1:
        return False
    left, op, right = test.left, test.ops[0], test.comparators[0]
    if not isinstance(right, ast.Constant | ast.Tuple):
        return False
    if _major_version(left) and isinstance(right, ast.Constant):
        return (isinstance(op, ast.Lt) and right.value == 3) or (
            isinstance(op, ast.Eq) and right.value == 2
        )
    return (
        ast.unparse(left) == "sys.version_info"
        and isinstance(op, ast.Lt)
        and isinstance(right, ast.Tuple)
        and [ast.unparse(e) for e in right.elts] == ["3"]
    )


def free_reads(node: ast.AST) -> set[str]:
    """Names an expression or statement reads from the scope it is written in (_free_reads)."""
    return _free_reads(node)


def _init_ifs(node: FunctionNode) -> dict[str, ast.If]:
    """`if` statements at the top level of an __init__ without `return` (each runs once per instance,
    whatever happens before it) whose branches hold only `self.X = expr` stores and nested `if`s of the
    same kind, whose tests and values read no parameter and no local variable (only globals, builtins and
    `self`), and each of whose X the __init__ stores only there, once (waitress e828cd5731: `if
    _is_seekable(self.file): self.seek = self.file.seek ...`): X -> the statement. Run again on a live
    instance, such a statement gives it what the new __init__ would have given (the same attributes, or
    none when the test is false), as far as `self`'s attributes it reads still hold what they held
    when __init__ ran it (the author's call, as for any transformer)."""
    params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    if not params or any(isinstance(s, ast.Return) for s in ast.walk(node)):
        return {}
    me, local = params[0].arg, _init_locals(node)
    once = _stored_once(node)

    def stores(stmt: ast.stmt) -> list[str] | None:
        """The attributes a stores-only statement stores, None when it does anything else."""
        if isinstance(stmt, ast.If):
            if _free_reads(stmt.test) & local:
                return None
            out: list[str] = []
            for sub in [*stmt.body, *stmt.orelse]:
                got = stores(sub)
                if got is None:
                    return None
                out += got
            return out
        attr = _self_target(stmt, me)
        if attr is None or not isinstance(stmt, ast.Assign | ast.AnnAssign) or stmt.value is None:
            return None
        return None if _free_reads(stmt.value) & local else [attr]

    found: dict[str, ast.If] = {}
    for stmt in node.body:
        if not isinstance(stmt, ast.If):
            continue
        attrs = stores(stmt)
        if attrs and len(set(attrs)) == len(attrs) and set(attrs) <= once:
            found.update(dict.fromkeys(attrs, stmt))
    return found


def _free_reads(node: ast.AST, bound: frozenset[str] = frozenset()) -> set[str]:
    """Names an expression reads from the scope it is written in: what its comprehensions and lambdas
    bind is theirs (`{n: c for n, c in self.table.items()}` reads only `self`), but what a lambda's body
    reads from outside is read too (later, through a closure: a parameter of `__init__` it reads is
    not available to a transformer)."""
    if isinstance(node, ast.Name):
        return {node.id} if isinstance(node.ctx, ast.Load) and node.id not in bound else set()
    out: set[str] = set()
    if isinstance(node, ast.Lambda):
        a = node.args
        for d in [*a.defaults, *a.kw_defaults]:
            if d is not None:
                out |= _free_reads(d, bound)
        params = {x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg] if x}
        return out | _free_reads(node.body, bound | params)
    if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
        inner = set(bound)
        for g in node.generators:  # the first iterable is read outside, the others inside
            out |= _free_reads(g.iter, frozenset(inner))
            inner |= _stored_in(g.target)
            for cond in g.ifs:
                out |= _free_reads(cond, frozenset(inner))
        parts = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]
        for e in parts:
            out |= _free_reads(e, frozenset(inner))
        return out
    for child in ast.iter_child_nodes(node):
        out |= _free_reads(child, bound)
    return out


def _stored_once(node: FunctionNode) -> set[str]:
    """`self.X` an __init__ stores exactly once (anywhere in it): a second store (`self._reader = None`
    then `if fast: self._reader = Reader()`, kvserver 71b3105b40) may change the value the first gives,
    so neither is the value a transformer can give a live instance."""
    counts: dict[str, int] = {}
    for attr in _self_attributes(node):
        counts[attr] = counts.get(attr, 0) + 1
    return {a for a, n in counts.items() if n == 1}


def _stored_in(node: ast.AST) -> set[str]:
    """Names a statement (or expression) binds, nested scopes included (conservative)."""
    out: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store | ast.Del):
            out.add(sub.id)
        elif isinstance(sub, ast.arg):
            out.add(sub.arg)
        elif isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(sub.name)
        elif isinstance(sub, ast.alias):
            out.add((sub.asname or sub.name).split(".")[0])
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            out.add(sub.name)
    return out


def _self_target(stmt: ast.stmt, me: str) -> str | None:
    """X of a statement `me.X = expr` (one target) or `me.X: T = expr`, else None."""
    if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
        target: ast.expr = stmt.targets[0]
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        target = stmt.target
    else:
        return None
    if (
        isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == me
    ):
        return target.attr
    return None


def _kept_parameters(node: FunctionNode) -> dict[str, tuple[str, tuple[str, ...], int]]:
    """Parameters an __init__ keeps on the instance: p -> (A, dumps of the earlier statements that
    rebind p, index of `self.A = p` among the top-level statements), for the first top-level `self.A = p`
    after which nothing rebinds p, in an __init__ without `return` (it always reaches the end)."""
    params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    if not params or any(isinstance(s, ast.Return) for s in ast.walk(node)):
        return {}
    me = params[0].arg
    names = {a.arg for a in params[1:]}
    stores = [_stored_in(stmt) for stmt in node.body]
    out: dict[str, tuple[str, tuple[str, ...], int]] = {}
    for i, stmt in enumerate(node.body):
        attr = _self_target(stmt, me)
        value = stmt.value if isinstance(stmt, ast.Assign) else None
        if attr is None or not isinstance(value, ast.Name) or value.id not in names:
            continue
        p = value.id
        if p in out or any(p in s for s in stores[i + 1 :]):
            continue
        before = tuple(_dump(s) for s, st in zip(node.body[:i], stores[:i], strict=True) if p in st)
        out[p] = (attr, before, i)
    return out


def _with_kept(expr: ast.expr, me: str, kept: Mapping[str, str]) -> ast.expr:
    """`expr` with each read of a kept parameter `p` replaced by `me.A` (a copy)."""

    class _Sub(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name) -> ast.expr:
            if isinstance(n.ctx, ast.Load) and n.id in kept:
                return ast.copy_location(
                    ast.Attribute(
                        value=ast.Name(id=me, ctx=ast.Load()), attr=kept[n.id], ctx=ast.Load()
                    ),
                    n,
                )
            return n

    return ast.fix_missing_locations(_Sub().visit(copy.deepcopy(expr)))


def _init_derived(
    node: FunctionNode, kept: Mapping[str, tuple[str, tuple[str, ...], int]]
) -> dict[str, tuple[ast.expr, frozenset[str]]]:
    """`self.X = expr` at the top level of __init__ whose expression reads kept parameters (and
    otherwise only globals, builtins and `self`): X -> (expr with each kept p read as `self.A`, the
    parameters read). A parameter counts only when its value where X is assigned is the one kept:
    nothing rebinds it between the two statements."""
    params = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    if not params or not kept:
        return {}
    me, local = params[0].arg, _init_locals(node)
    stores = [_stored_in(stmt) for stmt in node.body]
    once = _stored_once(node)
    out: dict[str, tuple[ast.expr, frozenset[str]]] = {}
    for j, stmt in enumerate(node.body):
        attr = _self_target(stmt, me)
        if attr is None or attr in out or attr not in once:
            continue
        assert isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None
        read = _names_read_now(stmt.value) & local
        if (
            not read or _stored_in(stmt.value) & read
        ):  # a lambda or comprehension binding p: keep out
            continue
        usable = {
            p
            for p in read
            if p in kept
            and kept[p][0] != attr
            and (j > kept[p][2] or not any(p in s for s in stores[j : kept[p][2]]))
        }
        if usable != read:
            continue
        out[attr] = (_with_kept(stmt.value, me, {p: kept[p][0] for p in read}), frozenset(read))
    return out


def _is_instance_method(node: FunctionNode) -> bool:
    """A def whose first parameter is an instance (not a static or class method)."""
    return not any(
        isinstance(d, ast.Name) and d.id in {"staticmethod", "classmethod"}
        for d in node.decorator_list
    )


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
    """`if __name__ == "__main__":` never runs in a server, and a module-level `assert` binds nothing
    (`python -O` drops it): their changes don't matter."""
    return isinstance(stmt, ast.Assert) or (
        isinstance(stmt, ast.If)
        and isinstance(stmt.test, ast.Compare)
        and isinstance(stmt.test.left, ast.Name)
        and stmt.test.left.id == "__name__"
    )


_LINE_END = re.compile(r"(?<=\r\n)|(?<=\r)(?!\n)|(?<=\n)")


class _Walker:
    def __init__(
        self, source: str, full: bool = True, between: Callable[[], None] | None = None
    ) -> None:
        self.source = source
        self.between = between or _nothing
        # full=False: what staging reads only (walk_source's docstring)
        self.full = full
        # `global` declared in a def body binds that name where the def is (_stored_names): only a
        # source containing the keyword can have one, so the bodies are scanned only then
        self.bodies = _may_declare_global(source)
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
            defaults=_defaults(node) if self.full else {},
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
            header=_dump(node.bases) + _dump(node.keywords) if self.full else "",
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
        bindings: dict[str, int] = {}
        for stmt in body:
            names = _assigned_names(stmt)
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                reader = f"{qualname}.{stmt.name}"
            else:
                reader = f"{qualname}.{names[0]}" if names else qualname
            if self.full:
                for read in _names_read_now(stmt):
                    info.body_reads.setdefault(read, set()).add(reader)
            for name in names or _stored_names(stmt, self.bodies):
                bindings[name] = bindings.get(name, 0) + 1
        info.makes_up_attributes = any(
            name in {"__getattr__", "__getattribute__"} for name in bindings
        )
        for stmt in body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                self._function(stmt, qualname, inner_pool, properties)
                if self.full and _is_instance_method(stmt):
                    if stmt.name == "__init__":
                        info.init_values = _init_values(stmt)
                        info.init_always = _init_always(stmt)
                        info.init_store_paths = _init_store_paths(stmt)
                        kept = _kept_parameters(stmt)
                        info.init_kept = {p: (a, b) for p, (a, b, _) in kept.items()}
                        info.init_derived = _init_derived(stmt, kept)
                        info.init_ifs = _init_ifs(stmt)
                    for attr in _self_attributes(stmt):
                        info.instance_attributes.setdefault(attr, f"{qualname}.{stmt.name}")
                        info.attribute_stores[attr] = info.attribute_stores.get(attr, 0) + 1
                    for attr, n in _self_fed_stores(stmt).items():
                        info.self_fed_stores[attr] = info.self_fed_stores.get(attr, 0) + n
                    guarded, plain = _self_reads(stmt)
                    info.guarded_reads |= guarded
                    info.plain_reads |= plain
            elif isinstance(stmt, ast.ClassDef):
                self._class(stmt, qualname, inner_pool)
            else:
                names = _assigned_names(stmt)
                if names == ["__slots__"] and isinstance(stmt, ast.Assign | ast.AnnAssign):
                    info.slots = _dump(stmt.value) if self.full else ""
                elif names is not None and isinstance(stmt, ast.Assign | ast.AnnAssign):
                    for name in names:
                        info.assignments[name] = stmt
                        if bindings.get(name) == 1:
                            self._value(stmt, name, qualname)
                elif not isinstance(stmt, ast.Pass) and not python2_only(stmt) and self.full:
                    info.other_statements.append(_dump(stmt))

    def _value(self, stmt: ast.Assign | ast.AnnAssign, name: str, owner: str) -> None:
        qualname = f"{owner}.{name}" if owner else name
        assert stmt.value is not None
        self.definitions.pop(qualname, None)
        self.definitions[qualname] = Definition(
            qualname=qualname,
            kind=DefinitionKind.VALUE,
            node=stmt,
            code=None,
            owner=owner,
            name=name,
            value=ast.dump(stmt.value) if self.full else "",
        )

    def walk(self, tree: ast.Module, code: CodeType | None) -> ModuleWalk:
        pool = _consts_by_qualname(code) if code is not None else {}
        statements: list[tuple[str, str]] = []
        statement_nodes: list[ast.stmt] = []
        future: list[ast.stmt] = []
        body = tree.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]  # the module docstring
        body = fold_prebound_blocks(fold_all_chain(body))
        # a name bound once, by a simple assignment, is a VALUE target; bound more than once (or also
        # by an if/try block, a loop...) it stays part of the module-level statements
        bindings: dict[str, int] = {}
        dynamic: set[str] = set()
        readers: dict[str, set[str]] = {}
        namespace_readers: set[str] = set()
        for stmt in body:
            self.between()
            names = _assigned_names(stmt)
            if names is None and not isinstance(
                stmt,
                ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom,
            ):
                if _is_main_guard(stmt):
                    continue
                dynamic |= _stored_names(stmt, self.bodies)
            for name in names or _stored_names(stmt, self.bodies):
                bindings[name] = bindings.get(name, 0) + 1
            if not self.full:
                continue
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                reader = stmt.name
            elif names:
                reader = names[0]
            else:
                reader = "<module>"
            reads = _names_read_now(stmt)
            if reads & _NAMESPACE_READERS:
                named = _named_namespace_reads(stmt)
                if named is None:
                    namespace_readers.add(reader)
                else:  # every use names what it reads: it reads those, like any other statement
                    reads = (reads - _WHOLE_NAMESPACE) | named
            for read in reads:
                readers.setdefault(read, set()).add(reader)
        for stmt in body:
            self.between()
            names = _assigned_names(stmt)
            if (
                names
                and isinstance(stmt, ast.Assign | ast.AnnAssign)
                and all(bindings.get(n) == 1 and n not in dynamic for n in names)
            ):
                for name in names:
                    self._value(stmt, name, "")
                continue
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                self._function(stmt, "", pool, set())
            elif isinstance(stmt, ast.ClassDef):
                self._class(stmt, "", pool)
            elif isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__":
                future.append(stmt)
            elif isinstance(stmt, ast.ImportFrom) and any(a.name == "*" for a in stmt.names):
                # binds names the source does not show: module-level code, not a target
                statements.append(self._statement(stmt))
                statement_nodes.append(stmt)
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
                statements.append(self._statement(stmt))
                statement_nodes.append(stmt)
        imported = _module_scope_imports(body)
        if imported:
            prelude = ast.If(test=ast.Constant(False), body=imported, orelse=[])
            future.append(ast.fix_missing_locations(ast.copy_location(prelude, imported[0])))
        for info in self.classes.values():
            for read, by in info.body_reads.items():
                readers.setdefault(f"{info.qualname}.{read}", set()).update(by)
        return ModuleWalk(
            self.definitions,
            self.classes,
            statements,
            future,
            code,
            readers=readers,
            dynamic_names=dynamic,
            namespace_readers=namespace_readers,
            mutated=_mutated(tree) if self.full else set(),
            from_imports=from_imports(tree) if self.full else [],
            statement_nodes=statement_nodes,
            loads=frozenset(
                n.id
                for n in ast.walk(tree)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            )
            if self.full
            else frozenset(),  # the differ's; staging never reads it (a walk of every node)
        )

    def _statement(self, stmt: ast.stmt) -> tuple[str, str]:
        """(dump, text) of a module-level statement; empty for staging, which reads the node only."""
        if not self.full:
            return "", ""
        return ast.dump(stmt), self._segment(stmt) or ast.unparse(stmt)


def fold_all_chain(body: list[ast.stmt]) -> list[ast.stmt]:
    """`__all__ = [...]` followed by `__all__ += expr` statements (h11: `__all__ += _events.__all__`,
    `__all__ += sentinels`) is one value: `__all__ = [..., *expr, ...]`, in place of the first statement
    (the others dropped), so that an edit is a changed VALUE like any other. The list the chain builds
    is the same: `+=` on a list extends it with any iterable, in order, and each name the extensions
    read must be bound once in the module (what it read then is what it holds at the end). Anything
    else binding `__all__` (a loop, a second `=`, `.append`) leaves the body as it is: module state."""
    if not any(
        isinstance(stmt, ast.AugAssign)
        and isinstance(stmt.target, ast.Name)
        and stmt.target.id == "__all__"
        for stmt in body
    ):
        return body  # no chain (the common case: no full walk of the module)
    first: int | None = None
    extensions: list[int] = []
    for i, stmt in enumerate(body):
        if _assigned_names(stmt) == ["__all__"] and isinstance(stmt, ast.Assign):
            if first is not None:
                return body
            first = i
        elif (
            isinstance(stmt, ast.AugAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == "__all__"
            and isinstance(stmt.op, ast.Add)
        ):
            if first is None:
                return body
            extensions.append(i)
        elif "__all__" in _stored_names(stmt) or "__all__" in _mutated_in(stmt):
            return body
    if first is None or not extensions:
        return body
    head = body[first]
    assert isinstance(head, ast.Assign)
    if not isinstance(head.value, ast.List):
        return body
    read: set[str] = set()
    for j in extensions:
        read |= _names_read_now(body[j])
    read.discard("__all__")
    for name in read:
        if sum(1 for stmt in body if name in _bound_by(stmt)) > 1:
            return body
    elts: list[ast.expr] = list(head.value.elts)
    for j in extensions:
        ext = body[j]
        assert isinstance(ext, ast.AugAssign)
        elts.append(ast.Starred(value=ext.value, ctx=ast.Load()))
    folded = ast.Assign(
        targets=[ast.Name(id="__all__", ctx=ast.Store())],
        value=ast.List(elts=elts, ctx=ast.Load()),
    )
    folded = ast.fix_missing_locations(ast.copy_location(folded, head))
    dropped = set(extensions)
    return [folded if i == first else stmt for i, stmt in enumerate(body) if i not in dropped]


def fold_prebound_blocks(body: list[ast.stmt]) -> list[ast.stmt]:
    """Simple assignments just before an if/try block that only binds names, each of whose names the
    block binds again (kvserver 8aa57725fb: `_CRecorder: Any = None` then `try: from ._mverecord
    import Recorder as _CRecorder except ImportError: pass`), are one block with it: `if True:
    <assignments>; <block>`. The module runs exactly that sequence; without the fold each name is
    "bound twice", module state. As one block it is staged like any other (run again in the live
    module, what it binds patched in place or refused: docs/patchability.md, "Module-level if/try
    blocks"), and the assignment, run first as in the module, is the fallback the block relies on when
    its branch binds nothing. Only the contiguous run right before the block whose every name the
    block binds is taken: an assignment of a name the block does not bind stays a value of its own."""
    out: list[ast.stmt] = []
    for stmt in body:
        if isinstance(stmt, ast.If | ast.Try) and binds_only(stmt):
            again = block_binds(stmt)
            run: list[ast.stmt] = []
            while out:
                names = _assigned_names(out[-1])
                if not names or not set(names) <= again:
                    break
                run.insert(0, out.pop())
            if run:
                folded = ast.If(test=ast.Constant(True), body=[*run, stmt], orelse=[])
                ast.copy_location(folded, run[0])
                folded.end_lineno, folded.end_col_offset = stmt.end_lineno, stmt.end_col_offset
                out.append(ast.fix_missing_locations(folded))
                continue
        out.append(stmt)
    return out


def all_statements(tree: ast.Module) -> str | None:
    """The top-level statements that build a module's `__all__` (bind it, `+=` it, change it in place)
    and, transitively, those that bind a name they read (h11's `__all__ += sentinels`, `sentinels =
    "CLIENT SERVER ...".split()`), dumped in order: two versions whose dumps are equal export the same
    names through `from m import *`, whatever else changed. None when the module has no top-level
    `__all__`, or something not at the top level (a function's `global`, a block) binds or changes it."""
    body = tree.body
    wanted = {"__all__"}
    top = [s for s in body if wanted & (_bound_by(s) | _mutated_in(s))]
    if not top or any(
        isinstance(s, ast.If | ast.Try | ast.For | ast.While | ast.With) for s in top
    ):
        return None
    for stmt in body:
        for n in ast.walk(stmt):
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and any(
                "__all__" in _stored_names(x) or "__all__" in _mutated_in(x) for x in n.body
            ):
                return None
    chosen: list[int] = []
    todo = set(wanted)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        seen.add(name)
        binders = [i for i, st in enumerate(body) if name in _bound_by(st) | _mutated_in(st)]
        if not binders and not hasattr(builtins, name):
            return None  # bound by a star import or the namespace: not known from this source
        for i in binders:
            if isinstance(body[i], ast.Import | ast.ImportFrom):
                return (
                    None  # another module's value (`__all__ += _events.__all__`): may change there
                )
            if i not in chosen:
                chosen.append(i)
                todo |= _names_read_now(body[i]) - seen
    return "\n".join(ast.dump(body[i]) for i in sorted(chosen))


def block_binds(node: ast.stmt) -> set[str]:
    """Every name a binds-only block may bind, in any branch (the differ's fold and staging's blocks)."""
    out: set[str] = set()
    for n in ast.walk(node):
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(n.name)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.add(n.id)
        elif isinstance(n, ast.alias):
            out.add(n.asname or n.name.split(".")[0])
    return out


def _bound_by(stmt: ast.stmt) -> set[str]:
    """Names a module-level statement binds (assignments, imports, defs, loops...)."""
    out = set(_assigned_names(stmt) or ()) | set(_stored_names(stmt))
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        out.add(stmt.name)
    elif isinstance(stmt, ast.Import | ast.ImportFrom):
        out |= {bound for bound, _ in _import_bindings(stmt)}
    return out


def _mutated_in(stmt: ast.stmt) -> set[str]:
    """Names whose object a statement changes in place by a method call (`__all__.append(x)`)."""
    return {
        n.func.value.id
        for n in ast.walk(stmt)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
    }


def _module_scope_imports(body: list[ast.stmt]) -> list[ast.stmt]:
    """The import statements (not `*`, not `__future__`) that bind names in the module's scope: at top
    level and inside top-level blocks, not inside defs and classes."""
    out: list[ast.stmt] = []
    stack: list[ast.AST] = list(reversed(body))
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Import) or (
            isinstance(n, ast.ImportFrom)
            and n.module != "__future__"
            and not any(a.name == "*" for a in n.names)
        ):
            out.append(n)
        elif isinstance(n, ast.stmt) and not isinstance(
            n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef
        ):
            stack.extend(reversed([c for c in ast.iter_child_nodes(n) if isinstance(c, ast.stmt)]))
    return out


def walk_source(source: str, filename: str = "<livepatch>", *, full: bool = True) -> ModuleWalk:
    """Parse and compile `source` (never execute it) and list its definitions.

    `full=False` is staging's walk: the same definitions (qualname, kind, node, code, owner, name,
    decorators), classes (node, slots present or not, assignments), statement_nodes, future and code, but
    none of the differ's analyses, which were most of the walk's time (a tenth of a second to a second
    for kvserver's aof.py and resp.py on a busy machine, on the server's patcher thread): Definition's
    `defaults` and `value`, ClassInfo's `header`, `other_statements`, `body_reads` and instance analyses,
    the statements' (dump, text), `readers`, `namespace_readers`, `mutated` and `from_imports` are left
    empty (tests/patch/test_walk_light.py checks the rest equals the full walk's).

    Raises SyntaxError (with `filename`) when the source does not compile. Pure; any thread.
    """
    tree = ast.parse(source, filename)
    # compiling the tree gives the same code objects as compiling the text (what the import system does:
    # tests/patch/test_fingerprint.py checks it) and saves a second parse
    code = compile(tree, filename, "exec", dont_inherit=True)
    return _Walker(source, full).walk(tree, code)


def parse_in_pieces(
    source: str, filename: str = "<livepatch>", between: Callable[[], None] | None = None
) -> ast.Module:
    """`ast.parse(source, filename)`, in one parse per top-level statement: the same tree (line numbers
    included), but the GIL is never held for the whole module. ast.parse is one C call: 7-12 ms of CPU
    for kvserver's resp.py (40 kB), which on a busy machine the OS stretches, GIL held, into a stall of
    every other thread of the server (the latency column at a live update, docs/performance.md).

    Candidate cuts are the lines that start in column 0 with something other than a comment, a closing
    bracket, `else`, `elif`, `except`, `finally`, or the def or class of a decorator line above. From a
    statement boundary, a piece grows cut by cut until it parses: where it does, the tokenizer is at a
    line start with no string, bracket or backslash continuation open and at indentation 0, as it is at
    that line of the whole source, so the next line starts a new statement (the clauses that would
    continue one are not candidates). A multi-line docstring or string therefore joins its piece; a
    source that does not parse is parsed whole, for ast.parse's own error. (tests/patch/
    test_walk_light.py checks the trees against ast.parse on kvserver and on the tricky cases.)
    `between` (if given) is called before each piece's parse (staging's runtime.pacing.Pacer)."""
    lines = source_lines(source)
    starts: list[int] = []
    decorated = False  # a decorator line started the current statement: its def or class follows
    for i, line in enumerate(lines):
        if i and (line[:1] in _NOT_A_START or _CONTINUES.match(line)):
            continue
        if decorated and (line.startswith("@") or _DEFINITION.match(line)):
            decorated = not line.startswith(("def", "class", "async"))
            continue
        starts.append(i)
        decorated = line.startswith("@")
    if len(starts) < 2:
        return ast.parse(source, filename)
    starts.append(len(lines))
    body: list[ast.stmt] = []
    type_ignores: list[ast.TypeIgnore] = []
    k = 0
    while k < len(starts) - 1:
        first = starts[k]
        # the piece starts after `first` empty lines, so the parser numbers its lines as in the whole
        # source (ast.increment_lineno afterwards walked every node in Python: ~1/3 of the CPU)
        padding = "\n" * first
        if between is not None:
            between()
        for k in range(k + 1, len(starts)):  # noqa: B020 - the piece grows until it parses
            try:
                piece = ast.parse(padding + "".join(lines[first : starts[k]]), filename)
                break
            except SyntaxError:
                continue
        else:
            return ast.parse(source, filename)  # the rest does not parse: ast.parse's own error
        body.extend(piece.body)
        type_ignores.extend(t for t in piece.type_ignores if isinstance(t, ast.TypeIgnore))
    return ast.Module(body=body, type_ignores=type_ignores)


def source_lines(source: str) -> list[str]:
    """The physical lines of `source`, each with its line ending, as the tokenizer counts them."""
    if not any(c in source for c in _OTHER_BREAKS):
        # str.splitlines splits where the tokenizer does (\r\n, \r, \n) when none of its other
        # breaks is there, in C: the regex split took ~2 ms for kvserver's resp.py, ~0.05 ms this way
        return source.splitlines(keepends=True)
    return [line for line in _LINES.split(source) if line]


# the line breaks of str.splitlines that do not end a line for the tokenizer
_OTHER_BREAKS = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")


def _may_declare_global(source: str) -> bool:
    """`_GLOBAL_KEYWORD.search(source) is not None`, searched only on the lines that hold the word: a match
    ending at an occurrence either starts on its line or crosses that line's start through whitespace
    only, where `^` matches as well (~0.05 ms instead of ~1.5 ms for resp.py's 40 kB)."""
    i = source.find("global")
    while i != -1:
        start = source.rfind("\n", 0, i) + 1
        if _GLOBAL_KEYWORD.search(source, start, i + 7):  # one character past: for the \b
            return True
        i = source.find("global", i + 1)
    return False


def module_scope_imports(body: list[ast.stmt]) -> list[ast.stmt]:
    """The `from __future__` imports and the imports that bind names in the module's scope (`future`'s
    prelude, see ModuleWalk): what a statement compiled alone is compiled with."""
    return [
        *(s for s in body if isinstance(s, ast.ImportFrom) and s.module == "__future__"),
        *_module_scope_imports(body),
    ]


# physical lines as the tokenizer ends them (\r\n, \r, \n; str.splitlines also splits on \f, \x1c...)
_LINES = re.compile(r"(?<=\n)|(?<=\r)(?!\n)")
_DEFINITION = re.compile(r"(?:def|class|async)\b")
# a line that cannot start a top-level statement: indented, blank, a comment, a closing bracket
_NOT_A_START = frozenset(" \t\f\r\n#)]}")
# a clause continuing the statement above it (and `@`: the def a decorator line belongs to follows)
_CONTINUES = re.compile(r"(?:else|elif|except|finally)\b")


def _nothing() -> None:
    pass


def walk_tree(
    source: str,
    tree: ast.Module,
    code: CodeType | None,
    *,
    full: bool = True,
    between: Callable[[], None] | None = None,
) -> ModuleWalk:
    """walk_source's walk of an already parsed `tree` of `source`, with `code` compiled from that tree,
    or None: then no Definition has code either (staging compiles a module only once a definition's
    code is needed: a block or an import needs only its node). Pure; any thread. `between` (if given)
    is called before each top-level statement's turn (staging's runtime.pacing.Pacer)."""
    return _Walker(source, full, between).walk(tree, code)
