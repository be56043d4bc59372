"""The public surface (STYLE.md §12): every name in livepatch.__all__ exists and is exported once."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import livepatch

INIT = Path(livepatch.__file__)


def test_every_public_name_exists() -> None:
    missing = [name for name in livepatch.__all__ if not hasattr(livepatch, name)]
    assert missing == []


def test_every_public_name_is_listed_once() -> None:
    dupes = [name for name, n in Counter(livepatch.__all__).items() if n > 1]
    assert dupes == []


def _type_checking_imports() -> Counter[str]:
    """Names imported in __init__'s `if TYPE_CHECKING:` block (what type checkers see)."""
    tree = ast.parse(INIT.read_text())
    blocks = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Name)
        and node.test.id == "TYPE_CHECKING"
    ]
    assert len(blocks) == 1
    return Counter(
        alias.asname or alias.name
        for node in blocks[0].body
        if isinstance(node, ast.ImportFrom) and node.module != "typing"
        for alias in node.names
    )


def test_every_public_name_is_imported_once_and_nothing_public_is_unlisted() -> None:
    lazy = livepatch._LAZY
    assert sorted(lazy) == sorted(livepatch.__all__)
    seen_by_type_checkers = _type_checking_imports()
    assert [n for n, c in seen_by_type_checkers.items() if c > 1] == []
    assert sorted(seen_by_type_checkers) == sorted(livepatch.__all__)
    tree = ast.parse(INIT.read_text())
    eager = [node for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert [ast.unparse(n) for n in eager if n.module != "__future__"] == []


def test_each_lazy_name_comes_from_the_module_the_type_checkers_see() -> None:
    tree = ast.parse(INIT.read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If))
    for node in block.body:
        if isinstance(node, ast.ImportFrom) and node.module != "typing":
            for alias in node.names:
                assert livepatch._LAZY[alias.name] == node.module, alias.name


def test_from_livepatch_import_works_for_every_name_in_a_fresh_interpreter() -> None:
    names = ", ".join(livepatch.__all__)
    code = (
        "import sys\n"
        "import livepatch\n"
        "heavy = [m for m in ('livepatch.agent', 'livepatch.patch', 'livepatch.runtime', 'cryptography',"
        " 'json', 'logging', 'ast', 'typing') if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        f"from livepatch import {names}\n"
        "assert livepatch.quiescence_point is quiescence_point\n"
        "assert 'Agent' in dir(livepatch)\n"
        "try:\n"
        "    livepatch.no_such_name\n"
        "except AttributeError as exc:\n"
        "    assert 'no_such_name' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('no AttributeError')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_runtime_api_is_public() -> None:
    for name in (
        "quiescence_point",
        "managed_thread",
        "activate",
        "deactivate",
        "set_priority",
        "add_wakeup_hook",
        "remove_wakeup_hook",
        "statistics",
        "apply_patch",
        "revert_patch",
        "history",
        "applied_patches",
        "PatchResult",
        "Event",
        "WatchPolicy",
        "RuntimeStatistics",
        "Priority",
    ):
        assert name in livepatch.__all__, name
    assert livepatch.Priority.LOW < livepatch.Priority.MEDIUM < livepatch.Priority.CRITICAL
