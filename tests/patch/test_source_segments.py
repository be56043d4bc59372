"""The differ's cached source segments equal ast.get_source_segment (which it replaces for speed)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from livepatch.patch.diff_walk import _Walker

ODD = (
    "x = 1\r\ny = '\x0c'\rdef f():\n    return 'é\x1c'  # \x0c\n\n\n"
    "class A:\r\n    z = 'ü' ; w = 3\n    def m(self):\n        return [\n            1,\n        ]\n"
)


def _sources() -> list[tuple[str, str]]:
    root = Path(__file__).resolve().parents[2] / "src"
    return [("odd line endings", ODD)] + [
        (str(p), p.read_text()) for p in sorted(root.rglob("*.py"))
    ]


@pytest.mark.parametrize(("name", "source"), _sources(), ids=lambda v: v if len(v) < 80 else None)
def test_segments_match_the_standard_library(name: str, source: str) -> None:
    walker = _Walker(source)
    statements = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.stmt)]
    assert statements
    for node in statements:
        assert walker._segment(node) == ast.get_source_segment(source, node), (name, node.lineno)
