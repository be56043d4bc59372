"""Staging's light walk (`walk_source(..., full=False)`) finds exactly what the differ's full walk finds.

Staging reads definitions (qualname, kind, node, code, owner, name, decorators), the classes' nodes and
simple assignments, whether a class has `__slots__`, the module-level statement nodes (`<block N>`), the
`from __future__` prelude and the module's code; the light walk skips the differ's analyses, which were
most of the staging of a real kvserver commit (8ba46d9: aof.py and resp.py walked, ~65 ms CPU in all,
on the server's patcher thread). These tests hold the light walk to the full one on every module of the
kvserver package, and on the `global` declarations the light walk's shortcut has to see.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from livepatch.patch import walk as walk_mod
from livepatch.patch.walk import ModuleWalk, parse_in_pieces, walk_source

SRC = Path(__file__).resolve().parents[2] / "src"
# kvserver, the server the figures patch: 48 modules (the whole src/ took 2.5 minutes on a busy machine)
MODULES = sorted((SRC / "kvserver").rglob("*.py"))


def _staging_view(w: ModuleWalk) -> object:
    """Everything of a walk that staging reads."""
    return (
        [
            (d.qualname, d.kind, ast.dump(d.node), d.code, d.owner, d.name, d.decorators)
            for d in w.definitions.values()
        ],
        [
            (
                c.qualname,
                ast.dump(c.node),
                c.decorators,
                c.slots is None,
                {k: ast.dump(v) for k, v in c.assignments.items()},
            )
            for c in w.classes.values()
        ],
        [ast.dump(s) for s in w.statement_nodes],
        [ast.dump(s) for s in w.future],
        w.code,
    )


def test_there_are_modules_to_compare() -> None:
    assert len(MODULES) > 40


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_light_walk_finds_what_the_full_walk_finds(path: Path) -> None:
    source = path.read_text()
    assert _staging_view(walk_source(source, str(path), full=False)) == _staging_view(
        walk_source(source, str(path))
    )


# A name bound once by an assignment is a VALUE target, unless a def or class also binds it, which a
# `global` declaration in a def body does: each way of writing one must keep `X` from being a VALUE.
GLOBALS = [
    "def f():\n    global X\n    X = 2\n",
    "def f(): global X; X = 2\n",
    "def f():\n    if True: global X\n",
    "def f():\n    y = 1; global X\n",
    "def f():\n    y = 1; \\\n  global X\n",
    "class C:\n    def m(self):\n        global X\n        X = 3\n",
    "def f():\n    def g():\n        global X\n",
]


@pytest.mark.parametrize("body", GLOBALS)
def test_a_global_declaration_is_seen_by_the_light_walk(body: str) -> None:
    source = f"X = 1\n{body}"
    full, light = walk_source(source), walk_source(source, full=False)
    assert "X" not in full.definitions  # what the differ decides: X is not a plain VALUE
    assert "X" not in light.definitions
    assert _staging_view(light) == _staging_view(full)


def test_without_global_the_light_walk_does_not_scan_def_bodies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shortcut is taken (no ast.walk of a def body) when the source has no `global` statement, even
    with the word in a string."""
    source = 'X = 1\nDOC = "no global state"\ndef f():\n    return [y for y in range(3)]\n'
    real = ast.walk
    walked: list[str] = []

    def spy(node: ast.AST):  # type: ignore[no-untyped-def]
        if isinstance(node, ast.FunctionDef):
            walked.append(node.name)
        return real(node)

    monkeypatch.setattr(walk_mod.ast, "walk", spy)
    light = walk_source(source, full=False)
    assert walked == []
    assert {"X", "DOC", "f"} <= set(light.definitions)
    walk_source(source.replace("return", "global X\n    return"), full=False)
    assert walked == ["f"]  # with one, it does


def _same_tree(source: str) -> bool:
    whole = ast.dump(ast.parse(source), include_attributes=True)
    return ast.dump(parse_in_pieces(source), include_attributes=True) == whole


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_parsing_in_pieces_gives_the_tree_ast_parse_gives(path: Path) -> None:
    assert _same_tree(path.read_text())


# Lines in column 0 that do not start a statement, each of which a cut would break.
TRICKY = [
    'X = """\nnot = "a statement"\n"""\nY = 1\n',
    "X = (\n1,\n)\nY = [\n2\n]\n",
    "X = 1 + \\\n2\nY = 3\n",
    "if X:\n    A = 1\nelif Y:\n    A = 2\nelse:\n    A = 3\nB = 4\n",
    "try:\n    import a\nexcept ImportError:\n    a = None\nfinally:\n    pass\n",
    "@deco\n@deco(\n1\n)\ndef f():\n    pass\n\n@deco\nclass C:\n    pass\nZ = 0\n",
    "@deco\nasync def f():\n    pass\nZ = 0\n",
    "X = 1  # a comment with a \x1c in it\nY = 2\n",  # \x1c ends a line for str.splitlines only
    "X = 1\r\nY = 2\rZ = 3\n",
    "# only a comment\n\n\nX = 1\n# trailing\n",
    "X = 1; Y = 2\n",
    "for i in range(3):\n    pass\nelse:\n    pass\nwhile False:\n    pass\n",
    "X = 1",
    "",
]


@pytest.mark.parametrize("source", TRICKY)
def test_parsing_in_pieces_never_cuts_inside_a_statement(source: str) -> None:
    assert _same_tree(source)


def test_a_source_that_does_not_parse_raises_as_ast_parse_does() -> None:
    for bad in ("X = (\n1\nY = 2\n", "def f(:\n    pass\nY = 1\n"):
        with pytest.raises(SyntaxError) as whole:
            ast.parse(bad)
        with pytest.raises(SyntaxError) as pieces:
            parse_in_pieces(bad)
        assert (pieces.value.msg, pieces.value.lineno) == (whole.value.msg, whole.value.lineno)


def test_a_large_module_is_parsed_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """kvserver's resp.py, the module the figures' commit makes staging parse: no parse of the whole."""
    source = (SRC / "kvserver" / "resp.py").read_text()
    real = ast.parse
    sizes: list[int] = []

    def spy(text: str, *args: object, **kwargs: object) -> ast.Module:
        sizes.append(len(text.lstrip("\n")))  # a piece is padded with empty lines to its first line
        return real(text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(walk_mod.ast, "parse", spy)
    parse_in_pieces(source)
    assert len(sizes) > 20 and max(sizes) < len(source) / 4


KEYWORD_TEXTS = [
    *GLOBALS,
    "x = globals()\n",
    "s = 'no global here'\n",
    "x = 1;global y\n",
    "if a:global b\n",
    "x = 1 \\\n  global\n",
    "global",
    "a = 1; \\\n\n  global z\n",
    "xglobal y\n",
    "\r\n  global q\r\n",
]


@pytest.mark.parametrize(
    "source", [*KEYWORD_TEXTS, *(p.read_text() for p in MODULES)], ids=lambda s: s[:20]
)
def test_the_global_prefilter_answers_as_the_regex_over_the_whole_source(source: str) -> None:
    assert walk_mod._may_declare_global(source) == (
        walk_mod._GLOBAL_KEYWORD.search(source) is not None
    )


@pytest.mark.parametrize(
    "source", [*TRICKY, "a = 1\x0cb = 2\n", "x = '\u2028'\ny = 1\r", "\x85\n"], ids=repr
)
def test_source_lines_are_the_tokenizer_lines(source: str) -> None:
    assert walk_mod.source_lines(source) == [line for line in walk_mod._LINES.split(source) if line]
