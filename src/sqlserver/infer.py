"""Types of a statement's parameters and result columns, from its tree and the table schemas.

SQLite has no static types (cursor.description gives names only), but drivers need them before the
first row: asyncpg encodes parameters and decodes results in binary by the OIDs of
ParameterDescription and RowDescription. So this module walks the rewritten PostgreSQL tree:
a column has its table's declared type (PRAGMA table_info, through `columns_of`); a parameter takes
the type of what it is compared with, assigned to or inserted into; casts, literals and the common
functions have their PostgreSQL types. What stays unknown is 0: the session types it from the first
row's values, or reports text.

Concurrency: pure functions; `columns_of` is the caller's (a session's own connection).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlglot import exp

from sqlserver import results as r
from sqlserver.rewrite import pg_type_name

ColumnsOf = Callable[[str], Sequence[tuple[str, str]] | None]  # table -> [(column, decltype)]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    oid: int  # 0: unknown until a value is seen
    table: str | None = None
    typmod: int = -1  # PostgreSQL's type modifier (numeric(p,s) columns), -1 if none


_FUNCTION_TYPES = {
    "version": r.TEXT,
    "current_setting": r.TEXT,
    "pg_backend_pid": r.INT4,
    "nextval": r.INT8,
    "currval": r.INT8,
    "setval": r.INT8,
    "lastval": r.INT8,
    "current_database": r.NAME,
    "current_schema": r.NAME,
    "current_user": r.NAME,
    "session_user": r.NAME,
    "pg_get_userbyid": r.NAME,
    "format_type": r.TEXT,
    "pg_table_is_visible": r.BOOL,
    "pg_encoding_to_char": r.NAME,
    "length": r.INT4,
    "char_length": r.INT4,
    "upper": r.TEXT,
    "lower": r.TEXT,
    "concat": r.TEXT,
    "pg_regex": r.BOOL,
    "now": r.TIMESTAMPTZ,
    "pg_bool": r.BOOL,
    "obj_description": r.TEXT,
    "col_description": r.TEXT,
    "pg_get_expr": r.TEXT,
    "pg_get_indexdef": r.TEXT,
    "pg_get_constraintdef": r.TEXT,
    "has_table_privilege": r.BOOL,
    "pg_is_in_recovery": r.BOOL,
    "quote_ident": r.TEXT,
    "set_config": r.TEXT,
    "md5": r.TEXT,
    "to_char": r.TEXT,
    "extract": r.NUMERIC,  # PostgreSQL 14+: EXTRACT answers numeric (extract.py)
    "ascii": r.INT4,
}
_BOOL_NODES = (
    exp.Predicate,
    exp.Connector,
    exp.Not,
    exp.Exists,
    exp.In,
    exp.Between,
    exp.Is,
    exp.Boolean,
)


def _name(node: exp.Expression) -> str:
    """PostgreSQL's name of an unnamed result column."""
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(node, exp.Column):
        return node.name
    if isinstance(node, exp.Cast):
        inner = _name(node.this)
        return (
            inner
            if inner != "?column?"
            else pg_type_name(node.to).split("(")[0]
            if isinstance(node.to, exp.DataType)
            else inner
        )
    if isinstance(node, exp.Anonymous):
        return (
            str(node.this).lower().removeprefix("pg_")
            if str(node.this).lower() in ("pg_bool",)
            else str(node.this).lower()
        )
    if isinstance(node, exp.Count):
        return "count"
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    if isinstance(node, exp.Paren):
        return _name(node.this)
    return "?column?"


class _Scope:
    """The tables a SELECT reads: alias -> (table, columns)."""

    def __init__(self, select: exp.Expression, columns_of: ColumnsOf) -> None:
        self.columns_of = columns_of
        self.tables: dict[str, tuple[str, list[tuple[str, str]]]] = {}
        self.order: list[str] = []
        sources: list[exp.Expression] = []
        from_ = select.args.get("from_") or select.args.get("from")
        if from_ is not None:
            sources.append(from_.this)
        for j in select.args.get("joins") or []:
            sources.append(j.this)
        if isinstance(select, exp.Insert | exp.Update | exp.Delete):
            target = select.this.this if isinstance(select.this, exp.Schema) else select.this
            sources.insert(0, target)
        for src in sources:
            if isinstance(src, exp.Table):
                cols = columns_of(src.name) if src.name else None
                if cols is not None:
                    key = src.alias_or_name
                    self.tables[key] = (src.name, list(cols))
                    self.order.append(key)

    def column(self, col: exp.Column) -> Column | None:
        keys = [col.table] if col.table else self.order
        for k in keys:
            entry = self.tables.get(k)
            if entry is None:
                continue
            for name, decl in entry[1]:
                if name.lower() == col.name.lower():
                    return Column(col.name, r.declared_oid(decl), entry[0], r.numeric_typmod(decl))
        return None


def _type(node: exp.Expression, scope: _Scope) -> int:
    if isinstance(node, exp.Alias | exp.Paren):
        return _type(node.this, scope)
    if isinstance(node, exp.Column):
        c = scope.column(node)
        return c.oid if c else 0
    if isinstance(node, exp.Literal):
        if node.is_string:
            return r.TEXT
        return (
            r.INT4
            if node.this.lstrip("-").isdigit() and abs(int(node.this)) < 2**31
            else (r.INT8 if node.this.lstrip("-").isdigit() else r.NUMERIC)
        )
    if isinstance(node, exp.Cast):
        return r.declared_oid(pg_type_name(node.to)) if isinstance(node.to, exp.DataType) else 0
    if isinstance(node, _BOOL_NODES):
        return r.BOOL
    if isinstance(node, exp.Count):
        return r.INT8
    if isinstance(node, exp.Sum):
        inner = _type(node.this, scope)
        return r.INT8 if inner in (r.INT2, r.INT4) else (r.NUMERIC if inner == r.INT8 else inner)
    if isinstance(node, exp.Avg):
        return r.NUMERIC
    if isinstance(node, exp.Max | exp.Min | exp.Abs):
        return _type(node.this, scope)
    if isinstance(node, exp.Coalesce):
        return _type(node.this, scope)
    if isinstance(node, exp.CurrentTimestamp):
        return r.TIMESTAMPTZ
    if isinstance(node, exp.CurrentDate):
        return r.DATE
    if isinstance(node, exp.Case):
        ifs = node.args.get("ifs") or []
        return _type(ifs[0].args["true"], scope) if ifs else 0
    if isinstance(node, exp.Binary) and isinstance(
        node, exp.Add | exp.Sub | exp.Mul | exp.Div | exp.Mod
    ):
        a, b = _type(node.this, scope), _type(node.expression, scope)
        return _arith(a, b)
    if isinstance(node, exp.DPipe | exp.Concat):
        return r.TEXT
    if isinstance(node, exp.Anonymous):
        name = str(node.this).lower()
        if name in ("pg_div", "pg_mod") and len(node.expressions) == 2:
            return _arith(_type(node.expressions[0], scope), _type(node.expressions[1], scope))
        return _FUNCTION_TYPES.get(name, 0)
    if isinstance(node, exp.Subquery):
        inner = node.this
        if isinstance(inner, exp.Select) and inner.expressions:
            return _type(inner.expressions[0], _Scope(inner, scope.columns_of))
    if isinstance(node, exp.Func):
        return _FUNCTION_TYPES.get(node.sql_name().lower(), 0)
    return 0


_INT_RANK = {r.INT2: 1, r.INT4: 2, r.INT8: 3}


def _arith(a: int, b: int) -> int:
    if a in _INT_RANK and b in _INT_RANK:
        return a if _INT_RANK[a] >= _INT_RANK[b] else b
    if r.FLOAT8 in (a, b) or r.FLOAT4 in (a, b):
        return r.FLOAT8
    if r.NUMERIC in (a, b):
        return r.NUMERIC
    return a or b


def result_columns(tree: exp.Expression, columns_of: ColumnsOf) -> list[Column] | None:
    """The result columns of a row-returning statement, or None when they cannot be listed
    statically (the session then asks SQLite for the names)."""
    select_like: exp.Expression
    if isinstance(tree, exp.Insert | exp.Update | exp.Delete):
        returning = tree.args.get("returning")
        if returning is None:
            return []
        select_like, projections = tree, returning.expressions
    elif isinstance(tree, exp.Select):
        select_like, projections = tree, tree.expressions
    elif isinstance(tree, exp.Union):
        return result_columns(tree.left, columns_of) if isinstance(tree.left, exp.Select) else None
    else:
        return None
    scope = _Scope(select_like, columns_of)
    out: list[Column] = []
    for p in projections:
        if isinstance(p, exp.Star) or (isinstance(p, exp.Column) and isinstance(p.this, exp.Star)):
            keys = [p.table] if isinstance(p, exp.Column) and p.table else scope.order
            if not keys or any(k not in scope.tables for k in keys):
                return None
            for k in keys:
                table, cols = scope.tables[k]
                out += [Column(n, r.declared_oid(d), table, r.numeric_typmod(d)) for n, d in cols]
            continue
        node = p.this if isinstance(p, exp.Alias) else p
        src = scope.column(node) if isinstance(node, exp.Column) else None
        out.append(Column(_name(p), _type(p, scope), typmod=src.typmod if src else -1))
    return out


def param_types(tree: exp.Expression | None, nparams: int, columns_of: ColumnsOf) -> list[int]:
    """The OID of each $n (0 when nothing says), from what the parameter meets."""
    oids = [0] * nparams
    if tree is None or nparams == 0:
        return oids
    for select_like in [tree, *tree.find_all(exp.Select)]:
        scope = _Scope(select_like, columns_of)
        if isinstance(select_like, exp.Insert):
            _insert_params(select_like, scope, oids)
        for node in select_like.find_all(exp.Var):
            n = _param_index(node)
            if n is None or n > nparams or oids[n - 1]:
                continue
            oids[n - 1] = _context_type(node, scope)
    return oids


def _param_index(node: exp.Expression) -> int | None:
    if (
        isinstance(node, exp.Var)
        and str(node.this).startswith("?")
        and str(node.this)[1:].isdigit()
    ):
        return int(str(node.this)[1:])
    return None


def _insert_params(ins: exp.Insert, scope: _Scope, oids: list[int]) -> None:
    table = ins.this.this if isinstance(ins.this, exp.Schema) else ins.this
    entry = scope.tables.get(table.alias_or_name)
    if entry is None:
        return
    names = (
        [c.name for c in ins.this.expressions]
        if isinstance(ins.this, exp.Schema)
        else [n for n, _ in entry[1]]
    )
    decl = {n.lower(): d for n, d in entry[1]}
    values = ins.expression
    if not isinstance(values, exp.Values):
        return
    for row in values.expressions:
        for name, v in zip(names, row.expressions, strict=False):
            n = _param_index(v)
            if n is not None and n <= len(oids) and not oids[n - 1]:
                oids[n - 1] = r.declared_oid(decl.get(name.lower()))


def _context_type(node: exp.Expression, scope: _Scope) -> int:
    parent = node.parent
    if isinstance(parent, exp.Cast):
        return _type(parent, scope)
    if isinstance(parent, exp.Limit | exp.Offset):
        return r.INT8
    if isinstance(parent, exp.EQ) and isinstance(parent.parent, exp.Update | exp.Set):
        return _type(parent.this, scope)
    if isinstance(parent, exp.Binary):
        other = parent.expression if parent.this is node else parent.this
        t = _type(other, scope)
        if isinstance(parent, exp.Add | exp.Sub | exp.Mul) and t in _INT_RANK:
            return t
        return t
    if isinstance(parent, exp.In):
        return _type(parent.this, scope)
    if isinstance(parent, exp.Anonymous) and str(parent.this).lower() in ("pg_div", "pg_mod"):
        other = parent.expressions[1] if parent.expressions[0] is node else parent.expressions[0]
        return _type(other, scope)
    return 0
