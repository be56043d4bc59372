"""The staging view a compiled patch carries (patch.view): staging parses only the statements it names and
stages exactly what it stages from the whole source; a view that was tampered with, that does not match
its source, or that is malformed is refused; `livepatch diff` carries none where a partial walk would
differ from the whole one."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path
from types import FunctionType, ModuleType

import pytest

from livepatch.errors import PatchRefused
from livepatch.patch import compiled, lpatch, signing
from livepatch.patch import view as view_mod
from livepatch.patch import walk as walk_mod
from livepatch.patch.diff import patch_from_sources
from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.model import ModulePatch, PatchSpec
from livepatch.runtime.staging import stage
from tests.fixtures.livefixtures import forget, load_source, unique_name

TESTS = Path(__file__).resolve().parents[1]
CASES = sorted(
    p.parent
    for p in [*TESTS.glob("fixtures/*/*/v2.py"), *TESTS.glob("patch/values_corpus*/*/v2.py")]
)

# kvserver 8ba46d9 in small: a changed compat block among many statements, a method added to a class
V1 = (
    '"""A module."""\n\nimport os\n\ntry:\n    import json\nexcept ImportError:\n    json = None\n\n'
    "LIMIT = 10\n\nif os.name:\n    SEP = ':'\nelse:\n    SEP = ';'\n\n\n"
    "class Feed:\n    def __init__(self):\n        self.items = []\n\n"
    "    def feed(self, x):\n        self.items.append(x)\n        return len(self.items)\n\n\n"
    + "".join(f"def filler_{i}(a, b=[{i}]):\n    return a + b[0] + LIMIT\n\n\n" for i in range(40))
)
V2 = V1.replace("    SEP = ':'\n", "    SEP = ':'\n    TAB = '\\t'\n").replace(
    "        return len(self.items)\n",
    "        return self.feed_one(x)\n\n    def feed_one(self, x):\n"
    "        self.items.append(x)\n        return len(self.items)\n",
)


def _outcome(module: ModuleType) -> list[tuple[str, str]]:
    """What a patched module holds: each name's type, and its code for functions and methods."""
    out = []
    for name, value in sorted(vars(module).items()):
        if name.startswith("__"):
            continue
        out.append((name, type(value).__name__))
        members = vars(value).items() if isinstance(value, type) else [("", value)]
        for member, v in sorted(members):
            if isinstance(v, FunctionType):
                out.append((f"{name}.{member}", code_fingerprint(v.__code__)))
    return out


def _staged(spec: PatchSpec, live: ModuleType) -> tuple[str, list[tuple[str, str]]]:
    """Stage and swap in `spec`; (the refusal, or "", and what the module then holds), swapped out."""
    try:
        staged = stage(spec)
    except PatchRefused as exc:
        return str(exc).replace(live.__name__, "M"), []
    staged.swap_in()
    try:
        return "", _outcome(live)
    finally:
        staged.swap_out()


def _with_and_without_views(spec: PatchSpec) -> tuple[PatchSpec, PatchSpec]:
    section = compiled.build_section(spec)
    assert section is not None
    no_views = {k: v for k, v in section.items() if k != "views"}
    return compiled.attach(spec, section), compiled.attach(spec, no_views)


@pytest.mark.parametrize("case", CASES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_view_stages_what_the_whole_source_stages(case: Path, tmp_path: Path) -> None:
    v1, v2 = (case / "v1.py").read_text(), (case / "v2.py").read_text()
    live = load_source(v1, tmp_path, unique_name("view"))
    try:
        spec = patch_from_sources({live.__name__: (v1, v2)})
        if compiled.build_section(spec) is None:
            pytest.skip("nothing compiled, no view")
        with_view, without = _with_and_without_views(spec)
        assert _staged(with_view, live) == _staged(without, live)
    finally:
        forget(live)


def test_the_corpus_has_cases_with_views() -> None:
    with_views = 0
    for case in CASES:
        v1, v2 = (case / "v1.py").read_text(), (case / "v2.py").read_text()
        spec = patch_from_sources({"m": (v1, v2)})
        with_views += any(
            view_mod.build_view(mp, "<livepatch m>") is not None for mp in spec.modules
        )
    assert len(CASES) > 30 and with_views > 10


def test_staging_with_a_view_parses_only_its_statements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = load_source(V1, tmp_path, unique_name("view_parse"))
    try:
        spec = patch_from_sources({live.__name__: (V1, V2)})
        with_view, without = _with_and_without_views(spec)
        (mp,) = with_view.modules
        assert isinstance(mp, compiled.CompiledModulePatch) and mp.view is not None
        expected = _staged(without, live)
        assert expected[0] == "" and ("TAB", "str") in expected[1]
        real = ast.parse
        parsed: list[int] = []

        def spy(text: str, *args: object, **kwargs: object) -> ast.Module:
            parsed.append(len(text.lstrip("\n")))  # without the padding to the statement's line
            return real(text, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(walk_mod.ast, "parse", spy)
        assert _staged(with_view, live) == expected
        assert parsed and sum(parsed) < len(V2) / 3
    finally:
        forget(live)


def _signed(spec: PatchSpec, manifest: dict[str, object], tmp_path: Path) -> tuple[dict, object]:
    priv, pub, _ = signing.generate_keypair(tmp_path / "keys")
    key, trusted = signing.load_private_key(priv), signing.load_public_key(pub)
    signature = lpatch.Signature(key.key_id, key.sign(lpatch.canonical_bytes(manifest)))
    return lpatch.PatchFile(spec, manifest, signature).to_document(), trusted


def test_a_tampered_view_fails_the_signature(tmp_path: Path) -> None:
    spec = patch_from_sources({"m": (V1, V2)})
    section = compiled.build_section(spec)
    assert section is not None and "views" in section
    document, trusted = _signed(spec, {**spec.to_dict(), "compiled": section}, tmp_path)
    views = document["manifest"]["compiled"]["views"][compiled.magic()]
    views["m"]["spans"][-1][1] += 1
    with pytest.raises(PatchRefused, match="signature"):
        lpatch.from_document(document).verified_spec([trusted])


def _with_view(spec: PatchSpec, view: view_mod.ModuleView) -> PatchSpec:
    (mp,) = compiled.attach(spec, compiled.build_section(spec)).modules
    assert isinstance(mp, compiled.CompiledModulePatch)
    return dataclasses.replace(spec, modules=(dataclasses.replace(mp, view=view),))


def test_a_view_that_does_not_match_its_source_is_refused(tmp_path: Path) -> None:
    """As only a buggy or malicious builder would sign: a span cutting a statement, a block index naming
    another statement, a view leaving out the class a member is added to. Nothing is swapped."""
    live = load_source(V1, tmp_path, unique_name("view_mismatch"))
    try:
        spec = patch_from_sources({live.__name__: (V1, V2)})
        good = view_mod.build_view(spec.modules[0], "<livepatch m>")
        assert good is not None and good.blocks
        first, end = good.spans[-1]  # the class: cut short, it still parses (feed_one loses a line)
        cut = view_mod.ModuleView((*good.spans[:-1], (first, end - 1)), good.blocks)
        with pytest.raises(PatchRefused, match="does not define what the patch names"):
            stage(_with_view(spec, cut))
        split = view_mod.ModuleView((*good.spans[:-1], (first, first + 2)), good.blocks)
        with pytest.raises(PatchRefused, match="staging view does not match its new source"):
            stage(_with_view(spec, split))
        (block,) = good.blocks
        other = view_mod.ModuleView(good.spans, {block: good.blocks[block] - 1})
        with pytest.raises(PatchRefused, match="does not have this block"):
            stage(_with_view(spec, other))
        no_class = view_mod.ModuleView(good.spans[:-1], good.blocks)
        with pytest.raises(PatchRefused, match="does not define it"):
            stage(_with_view(spec, no_class))
        assert not hasattr(live, "TAB") and not hasattr(live.Feed, "feed_one")
    finally:
        forget(live)


@pytest.mark.parametrize(
    "views",
    [
        [],
        {"m": {"spans": [[0, "1"]], "blocks": {}}},
        {"m": {"spans": [[0, 1]], "blocks": {"<block 0>": "0"}}},
        {"m": {"spans": [[0, 1]]}},
        {"other": {"spans": [], "blocks": {}}},
    ],
)
def test_a_malformed_view_is_rejected(views: object) -> None:
    spec = patch_from_sources({"m": (V1, V2)})
    section = compiled.build_section(spec)
    assert section is not None
    section["views"] = {compiled.magic(): views}
    with pytest.raises(ValueError, match=r"view|modules the patch does not change"):
        compiled.attach(spec, section)


@pytest.mark.parametrize(
    "v1",
    [
        "class C:\n    def f(self):\n        return 1\n\n\nclass C:\n    def g(self):\n        return 2\n",
        "X = 1\n\n\ndef f():\n    return X\n\n\nX = 2\n",
        "import os; X = 1\n\n\ndef f():\n    return os.sep\n",
    ],
    ids=["class twice", "bound twice", "two statements on a line"],
)
def test_no_view_where_a_partial_walk_would_differ(v1: str) -> None:
    """A class defined twice (the first one's members stay definitions of the whole walk), a name bound
    twice (a VALUE only if bound once), a line holding two statements: staging parses the whole source."""
    v2 = re.sub(r"return (\d)", lambda m: f"return {int(m[1]) + 5}", v1).replace("X = 1", "X = 3")
    spec = patch_from_sources({"m": (v1, v2)})
    (mp,) = spec.modules
    assert view_mod.build_view(ModulePatch(mp.module, v2, mp.changes), "<livepatch m>") is None
