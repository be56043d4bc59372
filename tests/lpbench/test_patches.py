"""The source transformation behind the built-in patches: exactly the named functions change."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path
from types import SimpleNamespace

from lpbench.patches import (
    HOT_FUNCTION,
    bench_lines,
    bug_lines,
    handler_functions,
    insert_into,
    installed_package,
    make_version,
)

SAMPLE = textwrap.dedent(
    '''
    def get_command(ctx, argv):
        """Docstring stays first."""
        value = ctx.db.lookup(argv[1], ctx.now_ms)
        return value


    def one_liner(ctx, argv): return 1


    def other_command(ctx, argv):
        return b"other"
    '''
)


def functions(source: str) -> dict[str, str]:
    """name -> AST dump without positions, for every module-level function."""
    tree = ast.parse(source)
    return {
        n.name: ast.dump(n, include_attributes=False)
        for n in tree.body
        if isinstance(n, ast.FunctionDef)
    }


class Db:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def lookup(self, key: bytes, now_ms: int) -> bytes | None:
        return self.data.get(key)


def test_only_named_functions_change_and_docstring_stays_first() -> None:
    new, done = insert_into(SAMPLE, {"get_command", "one_liner"}, bench_lines)
    assert done == ["get_command"]  # the one-line def is skipped, not reflowed
    before, after = functions(SAMPLE), functions(new)
    assert before["other_command"] == after["other_command"]
    assert before["one_liner"] == after["one_liner"]
    assert before["get_command"] != after["get_command"]
    tree = ast.parse(new)
    get = tree.body[0]
    assert isinstance(get, ast.FunctionDef) and ast.get_docstring(get) == "Docstring stays first."


def test_planted_bug_behaves_as_documented() -> None:
    new, _ = insert_into(SAMPLE, {"get_command"}, bug_lines)
    ns: dict = {}
    exec(compile(new, "sample", "exec"), ns)
    ctx = SimpleNamespace(db=Db({b"demo:k": b"hello", b"k": b"hello"}), now_ms=0)
    assert ns["get_command"](ctx, [b"GET", b"demo:k"]) == b"hell"
    assert ns["get_command"](ctx, [b"GET", b"k"]) == b"hello"
    assert ns["get_command"](ctx, [b"GET", b"demo:missing"]) is None


def test_installed_kvserver_version_changes_only_the_hot_handler(tmp_path: Path) -> None:
    package = installed_package()
    assert HOT_FUNCTION in handler_functions(package)
    changed = make_version(package, tmp_path, [HOT_FUNCTION], bench_lines)
    assert changed == [f"{HOT_FUNCTION[0]}:{HOT_FUNCTION[1]}"]
    rel = HOT_FUNCTION[0].split("/", 1)[1]
    before = functions((package / rel).read_text())
    after = functions((tmp_path / HOT_FUNCTION[0]).read_text())
    assert {k for k in before if before[k] != after[k]} == {HOT_FUNCTION[1]}
    others = [p for p in package.rglob("*.py") if p.relative_to(package).as_posix() != rel]
    for p in others:
        assert (tmp_path / package.name / p.relative_to(package)).read_text() == p.read_text()
