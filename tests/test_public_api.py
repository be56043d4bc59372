"""The public surface (STYLE.md §12): every name in livepatch.__all__ exists and is exported once."""

from __future__ import annotations

import ast
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


def test_every_public_name_is_imported_once_and_nothing_public_is_unlisted() -> None:
    tree = ast.parse(INIT.read_text())
    imported = Counter(
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    )
    assert [n for n, c in imported.items() if c > 1] == []
    unlisted = sorted(n for n in imported if not n.startswith("_") and n not in livepatch.__all__)
    assert unlisted == []


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
