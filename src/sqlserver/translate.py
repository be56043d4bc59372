"""PostgreSQL SQL in, SQLite SQL out: split, classify, rewrite, cache.

Theory of operation
-------------------
A query string is split into statements with sqlglot's tokenizer (quotes and comments respected).
Each statement is first matched against a few regular expressions for what SQLite has no use for
or the session handles itself (transaction control, SET/SHOW/RESET, VACUUM, DISCARD ...): those
never reach sqlglot. Everything else is parsed by sqlglot (read="postgres"), rewritten on the AST
(rewrite.py: placeholders, pg_catalog qualifiers, division by zero, SERIAL, PRIMARY KEY after the
fact, multi-table DROP/TRUNCATE...) and generated as SQLite. The result, a tuple of `Statement`, is
immutable and cached per statement text in a bounded LRU shared by all sessions (the translation
does not depend on the schema; the type inference that does lives in infer.py and is cached per
session). A statement sqlglot cannot parse or SQLite cannot express raises PgError: 42601 for a
syntax error, 0A000 for what is not supported, with the statement in the message.

Concurrency: `Translator.translate` may be called from any thread; the cache is guarded by a lock
held only around the dictionary operations, never while parsing.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any, cast

try:
    import sqlglot
except ImportError as e:  # the server is an optional part of livepatch: say how to get it
    raise ImportError("sqlserver needs sqlglot: pip install 'livepatch[sql]'") from e
from sqlglot import exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from sqlserver.copy import parse_copy
from sqlserver.protocol.errors import SYNTAX_ERROR, PgError
from sqlserver.rewrite import rewrite
from sqlserver.statement import (
    BEGIN,
    CLOSE_CURSOR,
    COMMIT,
    DEALLOCATE,
    DECLARE,
    DML,
    EMPTY,
    FETCH,
    NOOP,
    RELEASE,
    RESET,
    ROLLBACK,
    ROLLBACK_TO,
    SAVEPOINT,
    SELECT,
    SET,
    SHOW,
    Statement,
    clip,
    unsupported,
)

# sqlglot logs a warning for every statement it keeps as an opaque Command; those are expected.
logging.getLogger("sqlglot").setLevel(logging.ERROR)

# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------

_POSTGRES = Dialect.get_or_raise("postgres")  # its tokenizer knows $$dollar quotes$$ and E'...'


# A parameter number with something right after it ($1,$2 or $1=$2), and what to skip to find one.
_GLUED_PARAMETER = re.compile(r"\$\d+[^\s\d]")
_LEXEMES = re.compile(
    r"""[eE]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/"""
    r"|\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*|)\$.*?\$(?P=tag)\$|(?P<param>\$\d+)(?=[^\s\d])",
    re.DOTALL,
)


def space_parameters(text: str) -> str:
    """`text` with a space after every $n parameter that has something glued to it.

    sqlglot's PostgreSQL tokenizer reads `$1,$2` (psycopg's `%s,%s`), `$1=$2` or `f($1,$2)` as the
    start of a dollar-quoted string and fails; PostgreSQL's lexer never does (a dollar-quote tag
    cannot begin with a digit). Strings, quoted names, comments and dollar quotes are left as they are.
    """
    if "$" not in text or not _GLUED_PARAMETER.search(text):
        return text
    return _LEXEMES.sub(lambda m: m[0] + " " if m["param"] else m[0], text)


def split_statements(text: str) -> list[str]:
    """The statements of a query string, without their terminating semicolons; blanks dropped."""
    if ";" not in text:
        return [text] if text.strip() else []
    text = space_parameters(text)
    try:
        tokens = _POSTGRES.tokenize(text)
    except TokenError as e:
        raise PgError(SYNTAX_ERROR, f"syntax error: {e}") from None
    out: list[str] = []
    start = 0
    for t in tokens:
        if t.token_type == TokenType.SEMICOLON:
            part = text[start : t.start]
            if part.strip():
                out.append(part)
            start = t.end + 1
    tail = text[start:]
    if tail.strip():
        out.append(tail)
    return out


# --------------------------------------------------------------------------------------------
# Statements the session handles without SQLite (matched before sqlglot sees them)
# --------------------------------------------------------------------------------------------

_I = re.IGNORECASE | re.DOTALL
_COMMENT = re.compile(r"^\s*(--[^\n]*\n|/\*.*?\*/)", re.DOTALL)
_TX_MODES = r"(\s+(isolation\s+level\s+[a-z ]+|read\s+(write|only)|(not\s+)?deferrable)\s*,?)*"
_SIMPLE: list[tuple[re.Pattern[str], str, str]] = [
    (
        re.compile(
            r"^\s*(begin|start\s+transaction)(\s+(work|transaction))?" + _TX_MODES + r"\s*$", _I
        ),
        BEGIN,
        "BEGIN",
    ),
    (
        re.compile(r"^\s*(commit|end)(\s+(work|transaction))?(\s+and\s+no\s+chain)?\s*$", _I),
        COMMIT,
        "COMMIT",
    ),
    (
        re.compile(r"^\s*(rollback|abort)(\s+(work|transaction))?(\s+and\s+no\s+chain)?\s*$", _I),
        ROLLBACK,
        "ROLLBACK",
    ),
    (
        re.compile(
            r"^\s*rollback(\s+(work|transaction))?\s+to\s+(savepoint\s+)?(?P<name>\"?[\w$]+\"?)\s*$",
            _I,
        ),
        ROLLBACK_TO,
        "ROLLBACK",
    ),
    (re.compile(r"^\s*savepoint\s+(?P<name>\"?[\w$]+\"?)\s*$", _I), SAVEPOINT, "SAVEPOINT"),
    (
        re.compile(r"^\s*release(\s+savepoint)?\s+(?P<name>\"?[\w$]+\"?)\s*$", _I),
        RELEASE,
        "RELEASE",
    ),
    (re.compile(r"^\s*vacuum\b.*$", _I), NOOP, "VACUUM"),
    (re.compile(r"^\s*analy[sz]e\b.*$", _I), NOOP, "ANALYZE"),
    (re.compile(r"^\s*checkpoint\s*$", _I), NOOP, "CHECKPOINT"),
    (
        re.compile(r"^\s*discard\s+(all|plans|sequences|temp|temporary)\s*$", _I),
        NOOP,
        "DISCARD ALL",
    ),
    (re.compile(r"^\s*set\s+(session\s+)?characteristics\b.*$", _I), NOOP, "SET"),
    (re.compile(r"^\s*set\s+transaction\b.*$", _I), NOOP, "SET"),
    (re.compile(r"^\s*set\s+(session\s+)?authorization\b.*$", _I), NOOP, "SET"),
]
_SET = re.compile(
    r"^\s*set\s+(?P<scope>session\s+|local\s+)?(?P<name>[\w.]+)\s*(=|\s+to\s+|\s+)\s*(?P<value>.*?)\s*$",
    _I,
)
_SET_TIME_ZONE = re.compile(
    r"^\s*set\s+(?P<scope>session\s+|local\s+)?time\s+zone\s+(?P<value>.*?)\s*$", _I
)
_SHOW = re.compile(r"^\s*show\s+(?P<name>[\w.]+(\s+[\w.]+)*)\s*$", _I)
_RESET = re.compile(r"^\s*reset\s+(?P<name>[\w.]+|all)\s*$", _I)
_DECLARE = re.compile(
    r"^\s*declare\s+(?P<name>\"?[\w$]+\"?)\s+(?P<opts>(binary|insensitive|asensitive|no\s+scroll|scroll|\s)*)"
    r"cursor\s+(?P<hold>(with|without)\s+hold\s+)?for\s+(?P<query>.*)$",
    _I,
)
_FETCH = re.compile(
    r"^\s*(?P<verb>fetch|move)\s+(?:(?P<dir>next|forward\s+all|all|forward\s+\d+|forward|\d+)\s+)?"
    r"(?:(from|in)\s+)?(?P<name>\"?[\w$]+\"?)\s*$",
    _I,
)
_CLOSE = re.compile(r"^\s*close\s+(?P<name>\"?[\w$]+\"?)\s*$", _I)
_DEALLOCATE = re.compile(r"^\s*deallocate\s+(prepare\s+)?(?P<name>\"?[\w$]+\"?)\s*$", _I)
_UNSUPPORTED = re.compile(
    r"^\s*(listen|unlisten|notify|lock|declare|fetch|move|close|prepare|execute|deallocate|grant|revoke|"
    r"create\s+(role|user|database|schema|extension|function|procedure|trigger|type|domain|policy|rule)|"
    r"cluster|reindex|comment\s+on|security\s+label|refresh|import|do)\b",
    _I,
)


def _strip_comments(text: str) -> str:
    while True:
        m = _COMMENT.match(text)
        if not m:
            return text
        text = text[m.end() :]


def _unquote_ident(name: str) -> str:
    return name[1:-1] if name.startswith('"') else name.lower()


def _setting_value(raw: str) -> str:
    raw = raw.strip()
    if raw.lower() in ("default", "local"):
        return ""
    parts = [p.strip() for p in raw.split(",")]
    vals = []
    for p in parts:
        if len(p) >= 2 and p[0] == p[-1] == "'":
            vals.append(p[1:-1].replace("''", "'"))
        elif len(p) >= 2 and p[0] == p[-1] == '"':
            vals.append(p[1:-1])
        else:
            vals.append(p)
    return ", ".join(vals)


def _classify_simple(text: str) -> Statement | None:
    body = _strip_comments(text)
    if not body.strip():
        return Statement(EMPTY, text)
    head = body.lstrip()[:12].lower()
    if not head.startswith(
        (
            "begin",
            "start",
            "commit",
            "end",
            "rollback",
            "abort",
            "savepoint",
            "release",
            "vacuum",
            "analy",
            "checkpoint",
            "discard",
            "set",
            "show",
            "reset",
            "listen",
            "unlisten",
            "notify",
            "lock",
            "declare",
            "fetch",
            "move",
            "close",
            "prepare",
            "execute",
            "deallocate",
            "grant",
            "revoke",
            "create",
            "cluster",
            "reindex",
            "comment",
            "security",
            "refresh",
            "import",
            "do",
            "copy",
        )
    ):
        return None
    if head.startswith("copy"):
        return parse_copy(text, translate_one)
    for pattern, kind, tag in _SIMPLE:
        m = pattern.match(body)
        if m:
            name = m.groupdict().get("name")
            return Statement(kind, text, tag=tag, args=(_unquote_ident(name),) if name else ())
    m = _SET_TIME_ZONE.match(body)
    if m:
        return Statement(
            SET,
            text,
            tag="SET",
            args=(
                "timezone",
                _setting_value(m["value"]),
                bool(m["scope"] and m["scope"].lower().startswith("local")),
            ),
        )
    m = _SET.match(body)
    if m:
        return Statement(
            SET,
            text,
            tag="SET",
            args=(
                m["name"].lower(),
                _setting_value(m["value"]),
                bool(m["scope"] and m["scope"].lower().startswith("local")),
            ),
        )
    m = _SHOW.match(body)
    if m:
        return Statement(SHOW, text, tag="SHOW", args=(" ".join(m["name"].lower().split()),))
    m = _RESET.match(body)
    if m:
        return Statement(RESET, text, tag="RESET", args=(m["name"].lower(),))
    m = _DECLARE.match(body)
    if m:
        inner = translate_one(m["query"])
        if inner.kind != SELECT:
            raise unsupported("DECLARE for a statement that returns no rows", text)
        hold = bool(m["hold"] and m["hold"].lower().startswith("with"))
        binary = "binary" in (m["opts"] or "").lower()
        return Statement(
            DECLARE,
            text,
            inner.sql,
            "DECLARE CURSOR",
            inner.nparams,
            False,
            (_unquote_ident(m["name"]), hold, binary),
            inner.ast,
        )
    m = _FETCH.match(body)
    if m:
        direction = " ".join((m["dir"] or "next").lower().split())
        count = (
            None
            if direction.endswith("all")
            else int(direction.split()[-1])
            if direction[-1].isdigit()
            else 1
        )
        move = m["verb"].lower() == "move"
        return Statement(
            FETCH,
            text,
            tag="MOVE" if move else "FETCH",
            args=(_unquote_ident(m["name"]), count, move),
        )
    m = _CLOSE.match(body)
    if m:
        name = _unquote_ident(m["name"])
        return Statement(
            CLOSE_CURSOR,
            text,
            tag="CLOSE CURSOR" if name != "all" else "CLOSE CURSOR ALL",
            args=(None if name == "all" else name,),
        )
    m = _DEALLOCATE.match(body)
    if m:
        name = _unquote_ident(m["name"])
        return Statement(
            DEALLOCATE,
            text,
            tag="DEALLOCATE" if name != "all" else "DEALLOCATE ALL",
            args=(None if name == "all" else name,),
        )
    if _UNSUPPORTED.match(body):
        raise unsupported(body.split()[0].upper(), text)
    return None


# --------------------------------------------------------------------------------------------
# Translation through sqlglot
# --------------------------------------------------------------------------------------------


def translate_one(text: str) -> Statement:
    """Translate one statement (no semicolons inside, except in literals)."""
    simple = _classify_simple(text)
    if simple is not None:
        return simple
    try:
        tree = sqlglot.parse_one(space_parameters(text), read="postgres")
    except (ParseError, TokenError) as e:
        raise PgError(SYNTAX_ERROR, f"syntax error in {clip(text)!r}: {_first_line(e)}") from None
    if tree is None:
        return Statement(EMPTY, text)
    return rewrite(cast(exp.Expression, tree), text)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# --------------------------------------------------------------------------------------------
# Literals as parameters (simple query): one translation for texts that differ only in values
# --------------------------------------------------------------------------------------------

_LITERAL_AFTER = frozenset(
    {
        TokenType.EQ, TokenType.NEQ, TokenType.LT, TokenType.LTE, TokenType.GT, TokenType.GTE,
        TokenType.PLUS, TokenType.DASH, TokenType.STAR, TokenType.SLASH, TokenType.COMMA,
        TokenType.L_PAREN, TokenType.LIKE, TokenType.ILIKE, TokenType.BETWEEN,
    }
)  # fmt: skip
_LITERALS_FROM = frozenset({TokenType.WHERE, TokenType.SET, TokenType.VALUES})
_LITERALS_UNTIL = frozenset({TokenType.ORDER_BY, TokenType.GROUP_BY, TokenType.LIMIT})


def parameterize(text: str) -> tuple[str, list[Any]] | None:
    """The statement with its value literals replaced by $n, and the values; None if none is.

    Only literals in a WHERE, SET or VALUES part, right after an operator, a comma or an opening
    parenthesis, before any ORDER BY/GROUP BY/LIMIT, are replaced: there a literal and a bound
    value mean the same to SQLite (ORDER BY 1 would not; a projection's type would change; a typed
    literal such as DATE '...' keeps its type word in front, so it is never preceded by those).
    """
    head = text.lstrip()[:6].lower()
    if not head.startswith(("select", "insert", "update", "delete")):
        return None
    try:
        tokens = _POSTGRES.tokenize(text)
    except TokenError:
        return None
    parts: list[str] = []
    values: list[Any] = []
    last = 0
    started = False
    prev: TokenType | None = None
    for i, tok in enumerate(tokens):
        tt = tok.token_type
        if tt in (TokenType.PARAMETER, TokenType.PLACEHOLDER):
            return None  # the text has its own parameters
        if tt == TokenType.SEMICOLON and i != len(tokens) - 1:
            return None  # several statements
        if tt in _LITERALS_UNTIL:
            break
        if tt in _LITERALS_FROM:
            started = True
        elif started and prev in _LITERAL_AFTER and tt in (TokenType.NUMBER, TokenType.STRING):
            value: Any = tok.text
            if tt == TokenType.NUMBER:
                try:
                    value = int(tok.text)
                    if not -(2**63) <= value < 2**63:
                        prev = tt
                        continue  # SQLite cannot bind it; left as a literal
                except ValueError:
                    try:
                        value = float(tok.text)
                    except ValueError:
                        prev = tt
                        continue
            values.append(value)
            parts.append(text[last : tok.start])
            parts.append(f"${len(values)}")
            last = tok.end + 1
        prev = tt
    if not values:
        return None
    parts.append(text[last:])
    return "".join(parts), values


class Translator:
    """A bounded, thread-safe cache in front of translate_one, keyed by the whole query text.

    Failures are cached too (as the PgError to raise), so a client that repeats a bad statement
    does not pay for the parse again.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._capacity = capacity
        self._cache: OrderedDict[str, tuple[Statement, ...] | PgError] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def translate(self, text: str) -> tuple[Statement, ...]:
        """The statements of `text`, translated; raises PgError (42601, 0A000 ...)."""
        with self._lock:
            found = self._cache.get(text)
            if found is not None:
                self._cache.move_to_end(text)
                self.hits += 1
        if found is None:
            self.misses += 1
            try:
                found = tuple(translate_one(part) for part in split_statements(text))
            except PgError as e:
                found = e
            with self._lock:
                self._cache[text] = found
                if len(self._cache) > self._capacity:
                    self._cache.popitem(last=False)
        if isinstance(found, PgError):
            raise found.with_traceback(None)
        return found

    def translate_simple(self, text: str) -> tuple[tuple[Statement, ...], list[Any]]:
        """For a simple Query: the statements, and the values of literals made parameters.

        A text met again with other values (pgbench -M simple) reuses the translation of its
        parameterized form; when that form does not translate to one statement with exactly those
        parameters, the text is translated as it is.
        """
        hit = self._cache.get(text)
        if hit is None:
            param = parameterize(text)
            if param is not None:
                try:
                    stmts = self.translate(param[0])
                except PgError:
                    stmts = ()
                if (
                    len(stmts) == 1
                    and stmts[0].kind in (SELECT, DML)
                    and stmts[0].nparams == len(param[1])
                ):
                    return stmts, param[1]
        return self.translate(text), []
