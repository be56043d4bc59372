"""The differ and the resolver on the project's own real code (kvserver and livepatch modules):
every live function resolves, and its fingerprint equals the one compiled from its source file."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from livepatch.patch.diff import diff_module
from livepatch.patch.diff_walk import walk_source
from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.model import DefinitionKind
from livepatch.runtime.resolve import ResolveError, resolve_function

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGES = ("kvserver", "livepatch")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package in PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            parts = path.relative_to(SRC).with_suffix("").parts
            if parts[-1] == "__main__":
                continue  # importing it would run the program
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out.append((name, path))
    return out


@pytest.mark.timeout(120)
def test_live_functions_of_real_modules_match_their_source() -> None:
    checked = 0
    for name, path in _modules():
        text = path.read_text()
        try:
            module = importlib.import_module(name)
        except Exception:
            continue  # another engineer's module in the middle of an edit: not this test's subject
        if getattr(module, "__file__", None) != str(path):
            continue
        walk = walk_source(text, str(path))
        for qualname, d in walk.definitions.items():
            if d.code is None or d.kind in (DefinitionKind.CLASS, DefinitionKind.IMPORT):
                continue
            accessor = qualname.rsplit(".", 1)[1] if d.kind is DefinitionKind.PROPERTY else None
            try:
                live = resolve_function(module, d.owner, d.name, d.code_qualname, accessor)
            except ResolveError:
                continue  # e.g. rebound at import time by a decorator that keeps no reference
            assert code_fingerprint(live.__code__) == code_fingerprint(d.code), f"{name}:{qualname}"
            checked += 1
    assert checked > 100


def test_real_modules_diffed_with_themselves_are_unchanged() -> None:
    for name, path in _modules():
        text = path.read_text()
        try:
            d = diff_module(name, text, text)
        except SyntaxError:
            continue  # mid-edit
        assert d.refusals == () and not d.has_changes, name
