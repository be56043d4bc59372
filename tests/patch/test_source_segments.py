"""The differ's cached source segments equal ast.get_source_segment (which it replaces for speed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from livepatch.patch.walk import _Walker

ODD = (
    "x = 1\r\ny = '\x0c'\rdef f():\n    return 'é\x1c'  # \x0c\n\n\n"
    "class A:\r\n    z = 'ü' ; w = 3\n    def m(self):\n        return [\n            1,\n        ]\n"
)


def _sources() -> list[tuple[str, str]]:
    # the odd sample plus the five largest modules of this project (the reference is quadratic: keep it few)
    root = Path(__file__).resolve().parents[2] / "src"
    largest = sorted(root.rglob("*.py"), key=lambda p: p.stat().st_size)[-5:]
    return [("odd line endings", ODD)] + [(p.name, p.read_text()) for p in largest]


@pytest.mark.parametrize(("name", "source"), _sources(), ids=lambda v: v if len(v) < 80 else None)
def test_segments_match_the_standard_library(name: str, source: str) -> None:
    walker = _Walker(source)
    tree = ast.parse(source)
    # every statement of the odd sample; the module-level ones (what the differ asks for) elsewhere
    nodes = ast.walk(tree) if source is ODD else iter(tree.body)
    statements = [n for n in nodes if isinstance(n, ast.stmt)]
    assert statements
    for node in statements:
        assert walker._segment(node) == ast.get_source_segment(source, node), (name, node.lineno)
