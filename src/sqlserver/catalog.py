"""An emulated pg_catalog and information_schema: TEMP views over SQLite's own schema.

Each session's connection gets the views when it opens (install). rewrite.py drops the
`pg_catalog.` qualifier and renames `information_schema.x` to `information_schema_x`, so that
SQLite finds these TEMP views first. Relation OIDs are 16384 + the object's rowid in sqlite_schema
(stable while the object exists); namespaces are pg_catalog (11) and public (2200). Type rows come
from results.TYPES. What psql's \\d, \\dt, \\d+ t, \\l and \\dn, psycopg, asyncpg and pgbench ask
is covered; other catalog tables exist with their common columns and no rows.

Concurrency: install and the lookups run on the session's thread, on its connection.
"""

from __future__ import annotations

import sqlite3

from sqlserver import results as r

REL_OID_BASE = 16384
NS_CATALOG, NS_PUBLIC, NS_INFO = 11, 2200, 13000

_USER_OBJECTS = "m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_lp_%'"
_RELKIND = (
    "CASE m.type WHEN 'table' THEN 'r' WHEN 'index' THEN 'i' WHEN 'view' THEN 'v' ELSE 'r' END"
)


def _empty(columns: str) -> str:
    cols = ", ".join(f"NULL AS {c.strip()}" for c in columns.split(","))
    return f"SELECT {cols} WHERE 0"


def _type_rows() -> str:
    rows = []
    for oid, (name, size) in r.TYPES.items():
        elem = {
            r.TEXT_ARRAY: r.TEXT,
            r.INT4_ARRAY: r.INT4,
            r.NAME_ARRAY: r.NAME,
            r.OID_ARRAY: r.OID,
            r.CHAR_ARRAY: r.CHAR,
            r.INT2_ARRAY: r.INT2,
        }.get(oid, 0)
        array = {
            v: k
            for k, v in {
                r.TEXT_ARRAY: r.TEXT,
                r.INT4_ARRAY: r.INT4,
                r.NAME_ARRAY: r.NAME,
                r.OID_ARRAY: r.OID,
                r.CHAR_ARRAY: r.CHAR,
                r.INT2_ARRAY: r.INT2,
            }.items()
        }.get(oid, 0)
        category = (
            "A"
            if elem
            else {
                r.BOOL: "B",
                r.TEXT: "S",
                r.VARCHAR: "S",
                r.BPCHAR: "S",
                r.NAME: "S",
                r.DATE: "D",
                r.TIMESTAMP: "D",
                r.TIMESTAMPTZ: "D",
                r.UUID: "U",
                r.JSON: "U",
                r.JSONB: "U",
                r.BYTEA: "U",
            }.get(oid, "N")
        )
        rows.append(f"({oid}, '{name}', {NS_CATALOG}, {size}, 'b', '{category}', {elem}, {array})")
    return ", ".join(rows)


VIEWS: dict[str, str] = {
    "pg_namespace": f"SELECT CAST({NS_CATALOG} AS INTEGER) AS oid, 'pg_catalog' AS nspname, 10 AS nspowner, NULL AS nspacl "
    f"UNION ALL SELECT {NS_PUBLIC}, 'public', 10, NULL UNION ALL SELECT {NS_INFO}, 'information_schema', 10, NULL",
    "pg_class": f"SELECT CAST({REL_OID_BASE} + m.rowid AS INTEGER) AS oid, m.name AS relname, CAST({NS_PUBLIC} AS INTEGER) AS relnamespace, "
    f"{_RELKIND} AS relkind, 10 AS relowner, CASE m.type WHEN 'index' THEN 403 WHEN 'table' THEN 2 ELSE 0 END AS relam, "
    "0 AS reltablespace, 0 AS reltype, 0 AS reloftype, 0 AS relfilenode, 0 AS relpages, -1 AS reltuples, "
    "(SELECT count(*) FROM pragma_index_list(m.name)) > 0 AS relhasindex, 0 AS relisshared, 'p' AS relpersistence, "
    "(SELECT count(*) FROM pragma_table_info(m.name)) AS relnatts, 0 AS relchecks, 0 AS relhasrules, "
    "0 AS relhastriggers, 0 AS relhassubclass, 0 AS relrowsecurity, 0 AS relforcerowsecurity, 1 AS relispopulated, "
    "'d' AS relreplident, 0 AS relispartition, 0 AS reltoastrelid, NULL AS reloptions, NULL AS relacl, "
    "NULL AS relpartbound, 0 AS relfrozenxid "
    f"FROM main.sqlite_schema m WHERE {_USER_OBJECTS} AND m.type IN ('table', 'index', 'view') "
    f"UNION ALL SELECT 900000 + s.rowid, s.name, {NS_PUBLIC}, 'S', 10, 0, 0, 0, 0, 0, 0, -1, 0, 0, 'p', 3, 0, 0, 0, 0, 0, 0, 1, 'n', 0, 0, NULL, NULL, NULL, 0 "
    "FROM main._lp_sequences s",
    "pg_attribute": f"SELECT CAST({REL_OID_BASE} + m.rowid AS INTEGER) AS attrelid, p.name AS attname, "
    "coalesce(nullif(pg_decl_oid(p.type), 0), 25) AS atttypid, p.cid + 1 AS attnum, pg_decl_typmod(p.type) AS atttypmod, "
    'p."notnull" OR p.pk > 0 AS attnotnull, 0 AS attisdropped, p.dflt_value IS NOT NULL AS atthasdef, '
    "'' AS attidentity, '' AS attgenerated, 0 AS attcollation, -1 AS attlen, 0 AS attndims, 1 AS attislocal, "
    "'p' AS attstorage, NULL AS attcompression, -1 AS attstattarget, NULL AS attacl, NULL AS attoptions, 0 AS atthasmissing "
    f"FROM main.sqlite_schema m JOIN pragma_table_info(m.name) p WHERE m.type IN ('table', 'view') AND {_USER_OBJECTS}",
    "pg_attrdef": f"SELECT {REL_OID_BASE} * 100 + m.rowid * 64 + p.cid AS oid, CAST({REL_OID_BASE} + m.rowid AS INTEGER) AS adrelid, "
    "p.cid + 1 AS adnum, p.dflt_value AS adbin "
    f"FROM main.sqlite_schema m JOIN pragma_table_info(m.name) p WHERE m.type = 'table' AND p.dflt_value IS NOT NULL AND {_USER_OBJECTS}",
    "pg_index": f"SELECT CAST({REL_OID_BASE} + i.rowid AS INTEGER) AS indexrelid, CAST({REL_OID_BASE} + t.rowid AS INTEGER) AS indrelid, "
    "l.\"unique\" AS indisunique, (l.origin = 'pk' OR l.name LIKE '%\\_pkey' ESCAPE '\\') AS indisprimary, "
    "0 AS indisexclusion, 1 AS indimmediate, 0 AS indisclustered, 1 AS indisvalid, 0 AS indisreplident, "
    "1 AS indisready, 1 AS indislive, 0 AS indcheckxmin, 0 AS indnullsnotdistinct, "
    "(SELECT count(*) FROM pragma_index_info(l.name)) AS indnatts, (SELECT count(*) FROM pragma_index_info(l.name)) AS indnkeyatts, "
    "(SELECT group_concat(ii.cid + 1, ' ') FROM pragma_index_info(l.name) ii) AS indkey, "
    "NULL AS indexprs, NULL AS indpred, '0' AS indcollation, '0' AS indclass, '0' AS indoption "
    "FROM main.sqlite_schema t JOIN pragma_index_list(t.name) l JOIN main.sqlite_schema i ON i.name = l.name "
    "WHERE t.type = 'table' AND t.name NOT LIKE 'sqlite_%' AND t.name NOT LIKE '_lp_%'",
    "pg_type": "SELECT CAST(column1 AS INTEGER) AS oid, column2 AS typname, column3 AS typnamespace, column4 AS typlen, "
    "column5 AS typtype, column6 AS typcategory, column7 AS typelem, column8 AS typarray, 10 AS typowner, "
    "1 AS typbyval, 0 AS typrelid, 0 AS typbasetype, -1 AS typtypmod, 0 AS typndims, 0 AS typnotnull, "
    "1 AS typisdefined, ',' AS typdelim, 'i' AS typalign, 'p' AS typstorage, 0 AS typcollation, "
    "column2 || 'in' AS typinput, column2 || 'out' AS typoutput, column2 || 'recv' AS typreceive, "
    "column2 || 'send' AS typsend, 0 AS typispreferred, NULL AS typdefault, NULL AS typacl, 0 AS typsubscript "
    f"FROM (VALUES {_type_rows()})",
    "pg_database": "SELECT CAST(5 AS INTEGER) AS oid, 'postgres' AS datname, 10 AS datdba, 6 AS encoding, 'c' AS datlocprovider, "
    "0 AS datistemplate, 1 AS datallowconn, -1 AS datconnlimit, 'C' AS datcollate, 'C' AS datctype, "
    "NULL AS daticulocale, NULL AS datcollversion, NULL AS datacl, 1663 AS dattablespace "
    "UNION ALL SELECT 1, 'template1', 10, 6, 'c', 1, 1, -1, 'C', 'C', NULL, NULL, NULL, 1663",
    "pg_roles": "SELECT 10 AS oid, 'postgres' AS rolname, 1 AS rolsuper, 1 AS rolinherit, 1 AS rolcreaterole, "
    "1 AS rolcreatedb, 1 AS rolcanlogin, 1 AS rolreplication, 1 AS rolbypassrls, -1 AS rolconnlimit, "
    "'********' AS rolpassword, NULL AS rolvaliduntil, NULL AS rolconfig",
    "pg_user": "SELECT 'postgres' AS usename, 10 AS usesysid, 1 AS usecreatedb, 1 AS usesuper, 1 AS userepl, "
    "1 AS usebypassrls, '********' AS passwd, NULL AS valuntil, NULL AS useconfig",
    "pg_am": "SELECT 2 AS oid, 'heap' AS amname, 't' AS amtype, 'heap_tableam_handler' AS amhandler "
    "UNION ALL SELECT 403, 'btree', 'i', 'bthandler'",
    "pg_tablespace": "SELECT 1663 AS oid, 'pg_default' AS spcname, 10 AS spcowner, NULL AS spcacl, NULL AS spcoptions",
    "pg_settings": "SELECT NULL AS name, NULL AS setting WHERE 0",
    "pg_constraint": f"SELECT {REL_OID_BASE} * 10 + i.rowid AS oid, l.name AS conname, {NS_PUBLIC} AS connamespace, "
    "CASE WHEN l.origin = 'pk' OR l.name LIKE '%\\_pkey' ESCAPE '\\' THEN 'p' ELSE 'u' END AS contype, "
    f"CAST({REL_OID_BASE} + t.rowid AS INTEGER) AS conrelid, CAST({REL_OID_BASE} + i.rowid AS INTEGER) AS conindid, 0 AS confrelid, 0 AS condeferrable, "
    "0 AS condeferred, 1 AS convalidated, 0 AS contypid, 0 AS conparentid, ' ' AS confupdtype, ' ' AS confdeltype, "
    "' ' AS confmatchtype, 1 AS conislocal, 0 AS coninhcount, 1 AS connoinherit, "
    "'{' || (SELECT group_concat(ii.cid + 1, ',') FROM pragma_index_info(l.name) ii) || '}' AS conkey, "
    "NULL AS confkey, NULL AS conbin "
    "FROM main.sqlite_schema t JOIN pragma_index_list(t.name) l JOIN main.sqlite_schema i ON i.name = l.name "
    "WHERE t.type = 'table' AND t.name NOT LIKE 'sqlite_%' AND t.name NOT LIKE '_lp_%' AND l.\"unique\"",
    "pg_auth_members": _empty("roleid, member, grantor, admin_option"),
    "pg_description": _empty("objoid, classoid, objsubid, description"),
    "pg_shdescription": _empty("objoid, classoid, description"),
    "pg_inherits": _empty("inhrelid, inhparent, inhseqno, inhdetachpending"),
    "pg_partitioned_table": _empty("partrelid, partstrat, partnatts, partdefid, partattrs"),
    "pg_trigger": _empty(
        "oid, tgrelid, tgparentid, tgname, tgfoid, tgtype, tgenabled, tgisinternal, tgconstraint"
    ),
    "pg_policy": _empty(
        "oid, polname, polrelid, polcmd, polpermissive, polroles, polqual, polwithcheck"
    ),
    "pg_rewrite": _empty("oid, rulename, ev_class, ev_type, ev_enabled, is_instead"),
    "pg_statistic_ext": _empty(
        "oid, stxrelid, stxname, stxnamespace, stxowner, stxstattarget, stxkeys, stxkind"
    ),
    "pg_publication": _empty("oid, pubname, pubowner, puballtables"),
    "pg_publication_rel": _empty("oid, prpubid, prrelid"),
    "pg_publication_namespace": _empty("oid, pnpubid, pnnspid"),
    "pg_foreign_table": _empty("ftrelid, ftserver, ftoptions"),
    "pg_extension": _empty("oid, extname, extowner, extnamespace, extrelocatable, extversion"),
    "pg_proc": _empty(
        "oid, proname, pronamespace, proowner, prolang, prorettype, proargtypes, prokind"
    ),
    "pg_collation": _empty("oid, collname, collnamespace, collprovider, collcollate, collctype"),
    "pg_enum": _empty("oid, enumtypid, enumsortorder, enumlabel"),
    "pg_range": _empty("rngtypid, rngsubtype, rngmultitypid"),
    "pg_sequence": "SELECT 900000 + s.rowid AS seqrelid, 20 AS seqtypid, 1 AS seqstart, s.increment AS seqincrement, "
    "9223372036854775807 AS seqmax, 1 AS seqmin, 1 AS seqcache, 0 AS seqcycle FROM main._lp_sequences s",
    "pg_depend": _empty("classid, objid, objsubid, refclassid, refobjid, refobjsubid, deptype"),
    "pg_stat_activity": _empty("datid, datname, pid, usename, application_name, state, query"),
    "pg_locks": _empty("locktype, database, relation, pid, mode, granted"),
    "pg_tables": "SELECT 'public' AS schemaname, m.name AS tablename, 'postgres' AS tableowner, NULL AS tablespace, "
    f"0 AS hasindexes, 0 AS hasrules, 0 AS hastriggers, 0 AS rowsecurity FROM main.sqlite_schema m WHERE m.type = 'table' AND {_USER_OBJECTS}",
    "information_schema_tables": "SELECT 'postgres' AS table_catalog, 'public' AS table_schema, m.name AS table_name, "
    "CASE m.type WHEN 'view' THEN 'VIEW' ELSE 'BASE TABLE' END AS table_type, NULL AS self_referencing_column_name, "
    "NULL AS reference_generation, NULL AS user_defined_type_catalog, NULL AS user_defined_type_schema, "
    "NULL AS user_defined_type_name, 'YES' AS is_insertable_into, 'NO' AS is_typed, NULL AS commit_action "
    f"FROM main.sqlite_schema m WHERE m.type IN ('table', 'view') AND {_USER_OBJECTS}",
    "information_schema_columns": "SELECT 'postgres' AS table_catalog, 'public' AS table_schema, m.name AS table_name, "
    "p.name AS column_name, p.cid + 1 AS ordinal_position, p.dflt_value AS column_default, "
    "CASE WHEN p.\"notnull\" OR p.pk > 0 THEN 'NO' ELSE 'YES' END AS is_nullable, "
    "format_type(coalesce(nullif(pg_decl_oid(p.type), 0), 25), NULL) AS data_type, "
    "NULL AS character_maximum_length, NULL AS numeric_precision, NULL AS numeric_scale, "
    "coalesce(nullif(pg_decl_oid(p.type), 0), 25) AS udt_oid "
    f"FROM main.sqlite_schema m JOIN pragma_table_info(m.name) p WHERE m.type IN ('table', 'view') AND {_USER_OBJECTS}",
    "information_schema_schemata": "SELECT 'postgres' AS catalog_name, 'public' AS schema_name, 'postgres' AS schema_owner "
    "UNION ALL SELECT 'postgres', 'pg_catalog', 'postgres' UNION ALL SELECT 'postgres', 'information_schema', 'postgres'",
}


_BOOLS = [
    "relhasindex",
    "relisshared",
    "relhasrules",
    "relhastriggers",
    "relhassubclass",
    "relrowsecurity",
    "relforcerowsecurity",
    "relispopulated",
    "relispartition",
    "attnotnull",
    "attisdropped",
    "atthasdef",
    "attislocal",
    "atthasmissing",
    "indisunique",
    "indisprimary",
    "indisexclusion",
    "indimmediate",
    "indisclustered",
    "indisvalid",
    "indisreplident",
    "indisready",
    "indislive",
    "indcheckxmin",
    "indnullsnotdistinct",
    "condeferrable",
    "condeferred",
    "convalidated",
    "conislocal",
    "connoinherit",
    "typbyval",
    "typnotnull",
    "typisdefined",
    "typispreferred",
    "datistemplate",
    "datallowconn",
    "rolsuper",
    "rolinherit",
    "rolcreaterole",
    "rolcreatedb",
    "rolcanlogin",
    "rolreplication",
    "rolbypassrls",
    "usecreatedb",
    "usesuper",
    "userepl",
    "usebypassrls",
    "hasindexes",
    "hasrules",
    "hastriggers",
    "rowsecurity",
    "seqcycle",
]
_OIDS = [
    "oid",
    "relnamespace",
    "relowner",
    "relam",
    "reltablespace",
    "reltype",
    "reloftype",
    "relfilenode",
    "reltoastrelid",
    "attrelid",
    "atttypid",
    "attcollation",
    "adrelid",
    "indexrelid",
    "indrelid",
    "conrelid",
    "conindid",
    "confrelid",
    "contypid",
    "conparentid",
    "connamespace",
    "typnamespace",
    "typelem",
    "typarray",
    "typowner",
    "typrelid",
    "typbasetype",
    "typcollation",
    "nspowner",
    "datdba",
    "dattablespace",
    "spcowner",
    "seqrelid",
    "seqtypid",
]
_NAMES = [
    "relname",
    "attname",
    "nspname",
    "typname",
    "datname",
    "rolname",
    "usename",
    "amname",
    "conname",
    "spcname",
    "tablename",
    "schemaname",
]
# PostgreSQL types of the catalog views' columns (SQLite computes ints and strings): psql compares
# booleans with "t", asyncpg decodes oid columns in binary.
COLUMN_TYPES: dict[str, str] = {
    **{c: "bool" for c in _BOOLS},
    **{c: "oid" for c in _OIDS},
    **{c: "name" for c in _NAMES},
    "attnum": "int2",
    "atttypmod": "int4",
    "attlen": "int2",
    "typlen": "int2",
    "relnatts": "int2",
    "reltuples": "float4",
    "relpages": "int4",
    "relchecks": "int2",
    "indnatts": "int2",
    "adnum": "int2",
    "indkey": "int2vector",
    "conkey": "_int2",
}


def install(conn: sqlite3.Connection) -> None:
    """Create the catalog views on a new connection (TEMP: private to it, gone when it closes)."""
    conn.executescript(
        "".join(f"CREATE TEMP VIEW IF NOT EXISTS {name} AS {sql};\n" for name, sql in VIEWS.items())
    )


def table_columns(conn: sqlite3.Connection, table: str) -> list[tuple[str, str]] | None:
    """[(column, declared type)] of a table or view, None if there is none by that name."""
    try:
        rows = conn.execute("SELECT name, type FROM pragma_table_info(?)", (table,)).fetchall()
    except sqlite3.Error:
        return None
    if not rows:
        return None
    if table in VIEWS:
        return [(n, COLUMN_TYPES.get(n) or t) for n, t in rows]
    return [(n, t) for n, t in rows]


def relation_oid(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute(
        "SELECT oid FROM temp.pg_class WHERE relname = ?",
        (name if name.startswith('"') is False else name.strip('"'),),
    ).fetchone()
    return int(row[0]) if row else None


def index_definition(conn: sqlite3.Connection, oid: int) -> str | None:
    """pg_get_indexdef: PostgreSQL's CREATE INDEX text for an index's OID (see REL_OID_BASE)."""
    row = conn.execute(
        "SELECT name, tbl_name FROM main.sqlite_schema WHERE rowid = ? AND type = 'index'",
        (oid - REL_OID_BASE,),
    ).fetchone()
    if row is None:
        return None
    name, table = row
    unique = any(
        r[1] == name and r[2] for r in conn.execute("SELECT * FROM pragma_index_list(?)", (table,))
    )
    cols = ", ".join(
        r[2] or "expr" for r in conn.execute("SELECT * FROM pragma_index_info(?)", (name,))
    )
    return (
        f"CREATE {'UNIQUE ' if unique else ''}INDEX {name} ON public.{table} USING btree ({cols})"
    )
