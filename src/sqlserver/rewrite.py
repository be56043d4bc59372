"""AST rewrites from PostgreSQL to SQLite, one sqlglot tree at a time (used by translate.py).

Each rewrite says why it exists; the generated SQL is what SQLite 3.35+ understands. Column types
in CREATE TABLE keep PostgreSQL's canonical names (int4, numeric(10,2), timestamptz, bytea...):
SQLite derives the same storage affinity from them as from its own names, and keeping them is how
infer.py later knows the PostgreSQL type of a column (PRAGMA table_info returns them).
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp
from sqlglot.errors import ErrorLevel, UnsupportedError

from sqlserver import statement as tr
from sqlserver.protocol.errors import FEATURE_NOT_SUPPORTED, PgError

T = exp.DataType.Type

# sqlglot type -> PostgreSQL canonical name (what format_type and \d show after mapping in results.py)
_TYPE_NAMES: dict[Any, str] = {
    T.SMALLINT: "int2",
    T.INT: "int4",
    T.BIGINT: "int8",
    T.SMALLSERIAL: "int2",
    T.SERIAL: "int4",
    T.BIGSERIAL: "int8",
    T.DOUBLE: "float8",
    T.FLOAT: "float4",
    T.DECIMAL: "numeric",
    T.VARCHAR: "varchar",
    T.CHAR: "bpchar",
    T.NCHAR: "bpchar",
    T.NVARCHAR: "varchar",
    T.TEXT: "text",
    T.BOOLEAN: "bool",
    T.TIMESTAMP: "timestamp",
    T.TIMESTAMPTZ: "timestamptz",
    T.DATE: "date",
    T.TIME: "time",
    T.TIMETZ: "timetz",
    T.VARBINARY: "bytea",
    T.BINARY: "bytea",
    T.JSON: "json",
    T.JSONB: "jsonb",
    T.UUID: "uuid",
    T.INTERVAL: "interval",
    T.NAME: "name",
}
_SERIALS = {T.SMALLSERIAL, T.SERIAL, T.BIGSERIAL}


def pg_type_name(dtype: exp.DataType) -> str:
    """PostgreSQL's canonical name of a declared type, with its modifiers: numeric(10,2), varchar(20)."""
    if dtype.this == T.ARRAY:
        return "text"  # arrays are stored as their text form; see docs/sqlserver.md
    if dtype.this == T.USERDEFINED:
        return str(dtype.args.get("kind") or "text").lower()
    name = _TYPE_NAMES.get(dtype.this)
    if name is None:
        return dtype.sql("postgres").lower()
    params = [p.sql("postgres") for p in dtype.expressions]
    return f"{name}({','.join(params)})" if params else name


def raw_type(name: str) -> exp.DataType:
    return exp.DataType(this=T.USERDEFINED, kind=name)


def placeholder_count(tree: exp.Expression) -> int:
    return max(
        (int(p.this.this) for p in tree.find_all(exp.Parameter) if isinstance(p.this, exp.Literal)),
        default=0,
    )


def _is_nonzero_number(node: exp.Expression) -> bool:
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this) != 0
        except ValueError:
            return False
    return False


_REGEX_OPS = {"~": ("", False), "~*": ("i", False), "!~": ("", True), "!~*": ("i", True)}


def _sub(node: exp.Expression) -> exp.Expression:
    # exp.transform does not descend into a node it replaced: rewrite the moved children here
    return node.transform(_expression_rewrite, copy=False)


def _extract_source(node: exp.Expression) -> exp.Expression:
    """EXTRACT's source; a typed literal stays its text (SQLite's DATETIME() would drop a fraction)."""
    if (
        isinstance(node, exp.Cast)
        and isinstance(node.this, exp.Literal)
        and node.this.is_string
        and isinstance(node.to, exp.DataType)
        and node.to.this in (T.TIMESTAMP, T.TIMESTAMPTZ, T.DATE)
    ):
        text = node.this.this.strip()
        if node.to.this == T.DATE:
            return exp.Literal.string(text[:10])
        return exp.Literal.string(text if len(text) > 10 else text + " 00:00:00")
    return _sub(node)


def _unnest_sources(select: exp.Select) -> None:
    """FROM unnest(array) x: a json_each over the array's elements; the column x is its `value`.

    SQLite has table-valued functions (correlated arguments allowed) but no LATERAL subqueries."""
    aliases = []
    for table in select.find_all(exp.Table):
        inner = table.this
        if table.parent_select is select and isinstance(inner, exp.Explode | exp.Unnest):
            arg = inner.this if isinstance(inner, exp.Explode) else (inner.expressions or [None])[0]
            alias = table.alias or "unnest"
            call = exp.Anonymous(
                this="json_each",
                expressions=[exp.Anonymous(this="pg_array_json", expressions=[arg])],
            )
            table.set("this", call)
            table.set("db", None)
            table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
            aliases.append(alias)
    for un in list(select.find_all(exp.Unnest)):
        if isinstance(un.parent, exp.From | exp.Join) and un.parent.parent_select is select:
            alias_node = un.args.get("alias")
            alias = alias_node.name if alias_node is not None and alias_node.name else "unnest"
            if alias_node is not None and alias_node.columns:
                alias = alias_node.columns[0].name
            arg = un.expressions[0] if un.expressions else exp.null()
            call = exp.Anonymous(
                this="json_each",
                expressions=[exp.Anonymous(this="pg_array_json", expressions=[arg])],
            )
            un.replace(exp.Table(this=call, alias=exp.TableAlias(this=exp.to_identifier(alias))))
            aliases.append(alias)
    for col in list(select.find_all(exp.Column)):
        if not col.table and col.name in aliases:
            col.replace(exp.column("value", table=col.name))


def _expression_rewrite(node: exp.Expression) -> exp.Expression:
    """Expression-level rewrites, applied top-down by exp.transform."""
    if isinstance(node, exp.Select) and node.find(exp.Explode, exp.Unnest):
        _unnest_sources(node)
    if isinstance(node, exp.Parameter) and isinstance(node.this, exp.Literal):
        # $n -> ?n: SQLite's numbered parameter (sqlglot would write @n, a named one).
        return exp.Var(this=f"?{node.this.this}")
    if (
        isinstance(node, exp.Dot)
        and isinstance(node.this, exp.Identifier)
        and node.this.name.lower() == "pg_catalog"
    ):
        # pg_catalog.f(x): SQLite has no schema-qualified functions; ours are registered unqualified.
        return _sub(node.expression)
    if isinstance(node, exp.Collate):
        return _sub(
            node.this
        )  # PostgreSQL collations ("C", pg_catalog.default) mean nothing to SQLite
    if isinstance(node, exp.Operator):
        op = str(node.args.get("operator", "")).split(".")[-1]
        if op in _REGEX_OPS:
            flags, negate = _REGEX_OPS[op]
            call = exp.Anonymous(
                this="pg_regex",
                expressions=[_sub(node.this), _sub(node.expression), exp.Literal.string(flags)],
            )
            return exp.Not(this=call) if negate else call
        return exp.Anonymous(
            this="pg_operator_" + {"=": "eq", "<>": "ne"}.get(op, "unknown"),
            expressions=[_sub(node.this), _sub(node.expression)],
        )
    if isinstance(node, exp.RegexpLike):
        return exp.Anonymous(
            this="pg_regex",
            expressions=[_sub(node.this), _sub(node.expression), exp.Literal.string("")],
        )
    if isinstance(node, exp.RegexpILike):
        return exp.Anonymous(
            this="pg_regex",
            expressions=[_sub(node.this), _sub(node.expression), exp.Literal.string("i")],
        )
    if isinstance(node, exp.Array):
        # PostgreSQL arrays travel as their text form '{a,b}' (see docs/sqlserver.md)
        items = node.expressions
        if len(items) == 1 and isinstance(items[0], exp.Select | exp.Subquery):
            sel: Any = _sub(
                (items[0] if isinstance(items[0], exp.Select) else items[0].this).copy()
            )
            first = sel.expressions[0]
            sel.set(
                "expressions",
                [exp.alias_(first.unalias() if isinstance(first, exp.Alias) else first, "_v")],
            )
            agg = exp.Anonymous(this="pg_array_agg", expressions=[exp.column("_v")])
            return exp.Subquery(this=exp.select(agg).from_(sel.subquery("_a")))
        return exp.Anonymous(this="pg_array", expressions=[_sub(e) for e in items])
    if isinstance(node, exp.EQ | exp.NEQ) and isinstance(node.expression, exp.Any | exp.All):
        target = node.expression.this
        while isinstance(target, exp.Paren):
            target = target.this
        if isinstance(target, exp.Select | exp.Subquery):
            sel = target if isinstance(target, exp.Select) else target.this
            test: exp.Expression = exp.In(
                this=_sub(node.this), query=exp.Subquery(this=_sub(sel.copy()))
            )
        else:
            test = exp.Anonymous(this="pg_any_eq", expressions=[_sub(node.this), _sub(target)])
        return exp.Not(this=test) if isinstance(node, exp.NEQ) else test
    if isinstance(node, exp.ArrayToString):
        return exp.Anonymous(
            this="array_to_string", expressions=[_sub(node.this), _sub(node.expression)]
        )
    if isinstance(node, exp.ByteString):
        return exp.Literal.string(str(node.this))  # E'...': sqlglot has already decoded the escapes
    if isinstance(node, exp.Extract):
        # SQLite has no EXTRACT: extract('field', x), registered by functions.py (extract.py)
        return exp.Anonymous(
            this="extract",
            expressions=[exp.Literal.string(node.name.lower()), _extract_source(node.expression)],
        )
    if isinstance(node, exp.CurrentVersion):
        return exp.Anonymous(this="version", expressions=[])
    if isinstance(node, exp.Div) and not _is_nonzero_number(node.expression):
        # SQLite answers NULL for x / 0; PostgreSQL raises 22012. pg_div raises (functions.py).
        return exp.Anonymous(this="pg_div", expressions=[_sub(node.this), _sub(node.expression)])
    if isinstance(node, exp.Mod) and not _is_nonzero_number(node.expression):
        return exp.Anonymous(this="pg_mod", expressions=[_sub(node.this), _sub(node.expression)])
    if isinstance(node, exp.Cast):
        to = node.to
        kind = to.this if isinstance(to, exp.DataType) else None
        target = (to.sql("postgres") if not isinstance(to, exp.DataType) else "").lower()
        if target in ("regclass", "regtype", "regproc", "regnamespace") or (
            isinstance(to, exp.DataType)
            and to.this == T.USERDEFINED
            and str(to.args.get("kind", "")).lower().startswith("reg")
        ):
            name = target or str(to.args.get("kind")).lower()
            return exp.Anonymous(this=f"pg_{name}", expressions=[_sub(node.this)])
        if isinstance(to, exp.ObjectIdentifier):
            return exp.Anonymous(this=f"pg_{to.name.lower()}", expressions=[_sub(node.this)])
        if kind == T.BOOLEAN:
            return exp.Anonymous(this="pg_bool", expressions=[_sub(node.this)])
        if kind in (T.TEXT, T.VARCHAR, T.CHAR, T.NAME):
            return exp.Cast(this=_sub(node.this), to=raw_type("TEXT"))
        if kind == T.USERDEFINED and str(to.args.get("kind", "")).lower() == "oid":
            return exp.Cast(this=_sub(node.this), to=raw_type("INTEGER"))
    if isinstance(node, exp.Table):
        db = node.args.get("db")
        schema = db.name.lower() if isinstance(db, exp.Identifier) else ""
        if schema in ("public", "pg_catalog"):
            # public is SQLite's main database; pg_catalog's tables are per-connection TEMP views
            # (catalog.py), found first by SQLite's unqualified name lookup.
            node.set("db", None)
        elif schema == "information_schema":
            node.set("db", None)
            node.set("this", exp.to_identifier(f"information_schema_{node.name.lower()}"))
    if (
        isinstance(node, exp.Ordered) and isinstance(node.parent, (exp.OnConflict, exp.Schema))
    ) or (isinstance(node, exp.Ordered) and isinstance(node.parent, exp.IndexParameters)):
        # sqlglot spells PostgreSQL's default null ordering out; SQLite refuses NULLS LAST there
        return _sub(node.this) if not node.args.get("desc") else node
    return node


def expression_rewrite(tree: exp.Expression) -> exp.Expression:
    """Rewrite in place (a parsed tree belongs to one translation: copying it cost a third of the
    time of a translation)."""
    tree = tree.transform(_expression_rewrite, copy=False)
    for select in tree.find_all(exp.Select):
        select.set("locks", None)  # SQLite has none: see rewrite() for what FOR UPDATE does
    return tree


def to_sqlite(tree: exp.Expression, text: str) -> str:
    try:
        return tree.sql("sqlite", unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as e:
        raise PgError(
            FEATURE_NOT_SUPPORTED,
            f"sqlserver cannot run this on SQLite ({str(e).splitlines()[0]}): {tr.clip(text)}",
            hint="See docs/sqlserver.md for the SQL that sqlserver supports.",
        ) from None


# --------------------------------------------------------------------------------------------
# Statements
# --------------------------------------------------------------------------------------------


def rewrite(tree: exp.Expression, text: str) -> tr.Statement:
    """The Statement (translate.py) for one parsed PostgreSQL statement; raises PgError 0A000."""
    if isinstance(tree, exp.Query | exp.Values):
        nparams = placeholder_count(tree)
        # FOR UPDATE/SHARE: SQLite has no row locks; the statement takes the write lock instead
        # (held to the end of the transaction), so a concurrent SELECT ... FOR UPDATE or write
        # waits for this transaction as in PostgreSQL, rather than this one failing with 40001 at
        # its later write because another writer committed after its snapshot.
        locks = any(sel.args.get("locks") for sel in tree.find_all(exp.Select))
        empty = _always_empty(tree)
        t = empty if empty is not None else expression_rewrite(tree)
        return tr.Statement(tr.SELECT, text, (to_sqlite(t, text),), "SELECT", nparams, locks, (), t)
    if isinstance(tree, exp.Insert | exp.Update | exp.Delete):
        nparams = placeholder_count(tree)
        verb = {exp.Insert: "INSERT", exp.Update: "UPDATE", exp.Delete: "DELETE"}[type(tree)]
        t = expression_rewrite(tree)
        kind = tr.SELECT if t.args.get("returning") else tr.DML
        return tr.Statement(kind, text, (to_sqlite(t, text),), verb, nparams, True, (), t)
    if isinstance(tree, exp.Create):
        return _create(tree, text)
    if isinstance(tree, exp.Drop):
        return _drop(tree, text)
    if isinstance(tree, exp.TruncateTable):
        names = [_table_sql(t) for t in tree.expressions]
        sql = tuple(f"DELETE FROM {n}" for n in names)
        return tr.Statement(tr.DDL, text, sql, "TRUNCATE TABLE", 0, True)
    if isinstance(tree, exp.Alter):
        return _alter(tree, text)
    raise tr.unsupported(
        type(tree).__name__.upper()
        if not isinstance(tree, exp.Command)
        else str(tree.this).upper(),
        text,
    )


# Catalog tables that have no rows in sqlserver (no policies, publications, triggers, partitions,
# inheritance, extended statistics, rules): a query that inner-joins one of them returns nothing,
# whatever else it says, so it is answered as an empty result with the same columns. This keeps
# psql's \d+ working without translating the PostgreSQL-only expressions those queries carry.
ALWAYS_EMPTY = frozenset(
    {
        "pg_policy",
        "pg_publication",
        "pg_publication_rel",
        "pg_publication_namespace",
        "pg_trigger",
        "pg_inherits",
        "pg_partitioned_table",
        "pg_statistic_ext",
        "pg_rewrite",
        "pg_foreign_table",
        "pg_description",
        "pg_shdescription",
        "pg_auth_members",
        "pg_extension",
        "pg_proc",
        "pg_enum",
        "pg_event_trigger",
        "pg_subscription",
        "pg_foreign_data_wrapper",
        "pg_foreign_server",
        "pg_user_mapping",
        "pg_default_acl",
        "pg_init_privs",
        "pg_seclabel",
        "pg_cast",
        "pg_operator",
        "pg_opclass",
        "pg_ts_config",
        "pg_ts_dict",
        "pg_ts_parser",
        "pg_ts_template",
        "pg_conversion",
        "pg_language",
        "pg_aggregate",
        "pg_largeobject_metadata",
        "pg_statistic_ext_data",
    }
)


def _branch_empty(sel: Any) -> bool:
    if isinstance(sel, exp.Union):
        return _branch_empty(sel.left) and _branch_empty(sel.right)
    if not isinstance(sel, exp.Select):
        return False
    from_ = sel.args.get("from_") or sel.args.get("from")
    sources = [from_.this] if from_ is not None else []
    sources += [j.this for j in sel.args.get("joins") or [] if not j.args.get("side")]
    return any(isinstance(t, exp.Table) and t.name.lower() in ALWAYS_EMPTY for t in sources)


def _always_empty(tree: exp.Expression) -> exp.Expression | None:
    if not _branch_empty(tree):
        return None
    first: Any = tree
    while isinstance(first, exp.Union):
        first = first.left
    assert isinstance(first, exp.Select)
    names = []
    for i, e in enumerate(first.expressions):
        names.append(
            e.alias_or_name if e.alias_or_name and not isinstance(e, exp.Star) else f"column{i + 1}"
        )
    empty = exp.select(
        *[exp.alias_(exp.null(), n or f"column{i + 1}", quoted=True) for i, n in enumerate(names)]
    )
    nparams = placeholder_count(tree)
    if not nparams:
        return empty.where(exp.false())
    # the statement keeps its parameters (a client binds them): mentioned, never true
    args = [exp.Var(this=f"?{i}") for i in range(1, nparams + 1)]
    used = exp.Is(
        this=exp.Anonymous(this="coalesce", expressions=[*args, exp.Literal.number(1)]),
        expression=exp.null(),
    )
    return empty.where(exp.and_(exp.false(), used))


def _table_sql(table: exp.Expression) -> str:
    t = expression_rewrite(table)
    return t.sql("sqlite")


def _create(tree: exp.Create, text: str) -> tr.Statement:
    kind = str(tree.args.get("kind", "")).upper()
    if kind == "SEQUENCE":
        name = tree.this.name if isinstance(tree.this, exp.Table) else str(tree.this)
        start, increment = 1, 1
        for prop in (tree.args.get("properties") or exp.Properties()).expressions:
            if isinstance(prop, exp.SequenceProperties):
                if prop.args.get("start") is not None:
                    start = int(prop.args["start"].sql())
                if prop.args.get("increment") is not None:
                    increment = int(prop.args["increment"].sql())
        return tr.Statement(
            tr.CREATE_SEQUENCE,
            text,
            (),
            "CREATE SEQUENCE",
            0,
            True,
            (name, start, increment, bool(tree.args.get("exists"))),
        )
    if kind not in ("TABLE", "INDEX", "VIEW"):
        raise tr.unsupported(f"CREATE {kind}", text)
    tree = tree.copy()
    extra: list[str] = []
    if kind == "TABLE" and isinstance(tree.this, exp.Schema):
        table = tree.this.this.name
        for col in tree.this.expressions:
            if isinstance(col, exp.ColumnDef):
                extra += _column(table, col)
    props = tree.args.get("properties")
    if props is not None:
        keep = [p for p in props.expressions if isinstance(p, exp.TemporaryProperty)]
        tree.set("properties", exp.Properties(expressions=keep) if keep else None)
    t = expression_rewrite(tree)
    sql = (to_sqlite(t, text), *extra)
    return tr.Statement(tr.DDL, text, sql, f"CREATE {kind}", 0, True, (), t)


def _column(table: str, col: exp.ColumnDef) -> list[str]:
    """Rewrite one column definition in place; returns SQL to run after CREATE TABLE (sequences)."""
    dtype = col.args.get("kind")
    constraints = col.args.get("constraints") or []
    identity = [
        c
        for c in constraints
        if isinstance(c.args.get("kind"), exp.GeneratedAsIdentityColumnConstraint)
    ]
    for c in identity:
        constraints.remove(c)
    is_pk = any(isinstance(c.args.get("kind"), exp.PrimaryKeyColumnConstraint) for c in constraints)
    serial = isinstance(dtype, exp.DataType) and (dtype.this in _SERIALS or bool(identity))
    name = pg_type_name(dtype) if isinstance(dtype, exp.DataType) else "text"
    if is_pk and name == "int8":
        # SQLite's rowid alias: exactly "INTEGER PRIMARY KEY" (one B-tree instead of a table and an
        # index). Only for int8: the alias is reported as int8 (PRAGMA table_info spells it
        # "INTEGER", whatever the case written), and its values are assigned like a bigserial's.
        col.set("kind", raw_type("INTEGER"))
        return []
    col.set("kind", raw_type(name))
    if is_pk and not any(
        isinstance(c.args.get("kind"), exp.NotNullColumnConstraint) for c in constraints
    ):
        # A primary key is NOT NULL in PostgreSQL; SQLite lets NULL into one that is not a rowid.
        col.append("constraints", exp.ColumnConstraint(kind=exp.NotNullColumnConstraint()))
    if not serial:
        return []
    seq = f"{table}_{col.name}_seq"
    col.append(
        "constraints",
        exp.ColumnConstraint(
            kind=exp.DefaultColumnConstraint(
                this=exp.Paren(
                    this=exp.Anonymous(this="nextval", expressions=[exp.Literal.string(seq)])
                )
            )
        ),
    )
    return [
        f"INSERT OR IGNORE INTO _lp_sequences (name, last_value, increment, owner_table, owner_column) VALUES ('{seq}', 0, 1, '{table}', '{col.name}')"
    ]


def _drop(tree: exp.Drop, text: str) -> tr.Statement:
    kind = str(tree.args.get("kind", "")).upper()
    exists = " IF EXISTS" if tree.args.get("exists") else ""
    names = list(tree.args.get("tables") or []) or [tree.this]
    if kind == "SEQUENCE":
        return tr.Statement(
            tr.DROP_SEQUENCE, text, (), "DROP SEQUENCE", 0, True, tuple(n.name for n in names)
        )
    if kind not in ("TABLE", "INDEX", "VIEW"):
        raise tr.unsupported(f"DROP {kind}", text)
    # SQLite drops one object per statement; PostgreSQL's "drop table a, b, c" becomes three.
    sql = tuple(f"DROP {kind}{exists} {_table_sql(n)}" for n in names)
    if kind == "TABLE":
        sql += tuple(f"DELETE FROM _lp_sequences WHERE owner_table = '{n.name}'" for n in names)
    return tr.Statement(tr.DDL, text, sql, f"DROP {kind}", 0, True)


def _alter(tree: exp.Alter, text: str) -> tr.Statement:
    table = _table_sql(tree.this)
    sql: list[str] = []
    for action in tree.args.get("actions") or []:
        pk = None
        name = f"{tree.this.name}_pkey"
        if isinstance(action, exp.AddConstraint):
            for e in action.expressions:
                if isinstance(e, exp.Constraint):
                    name = e.name or name
                    e = next(
                        (
                            x
                            for x in e.expressions
                            if isinstance(x, exp.PrimaryKey | exp.UniqueColumnConstraint)
                        ),
                        e,
                    )
                if isinstance(e, exp.PrimaryKey):
                    pk = e
        if pk is not None:
            # SQLite cannot add a primary key to an existing table; a unique index named like
            # PostgreSQL's constraint enforces the same (catalog.py shows it as the primary key).
            cols = ", ".join(c.sql("sqlite") for c in pk.expressions)
            sql.append(f'CREATE UNIQUE INDEX "{name}" ON {table} ({cols})')
            continue
        if isinstance(action, exp.AlterColumn) and action.args.get("allow_null") is not None:
            continue  # NOT NULL after the fact: not enforced; see docs/sqlserver.md
        single = exp.Alter(this=tree.this.copy(), kind="TABLE", actions=[action.copy()])
        if isinstance(action, exp.ColumnDef):
            _column(tree.this.name, single.args["actions"][0])
        sql.append(to_sqlite(expression_rewrite(single), text))
    return tr.Statement(tr.DDL, text, tuple(sql), "ALTER TABLE", 0, True)
