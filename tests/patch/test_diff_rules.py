"""The differ's rules beyond the corpus: class-level state, top-level blocks, imports, and patch_from_sources."""

from __future__ import annotations

import pytest

from livepatch.patch.diff import diff_module, patch_from_sources
from livepatch.patch.model import Category, ChangeKind, DefinitionKind


def _non_same(d) -> set[str]:  # type: ignore[no-untyped-def]
    return {f"{c.kind.value}:{c.qualname}" for c in d.changes if c.kind is not ChangeKind.SAME}


def test_changed_class_level_value_is_a_value_change_unless_the_class_body_read_it() -> None:
    v1 = "class K:\n    TIMEOUT = 5\n\n    def m(self):\n        return self.TIMEOUT\n"
    v2 = v1.replace("TIMEOUT = 5", "TIMEOUT = 10")
    d = diff_module("m", v1, v2)
    assert d.refusals == () and _non_same(d) == {"changed:K.TIMEOUT"}
    change = next(c for c in d.changes if c.qualname == "K.TIMEOUT")
    assert change.definition is DefinitionKind.VALUE and change.old_value == "5"
    # read while the class body ran (a method's default): it holds the old value, refused (a hook
    # may take over); a class-level value computed from it is evaluated again instead
    r1 = v1.replace("    def m(self):", "    def m(self, t=TIMEOUT):")
    r2 = r1.replace("TIMEOUT = 5", "TIMEOUT = 10")
    d = diff_module("m", r1, r2)
    assert [r.qualname for r in d.refusals] == ["K.TIMEOUT"]
    assert "`K.m` read it when the class body ran" in d.refusals[0].reason
    double = v1.replace("    def m", "    DOUBLE = TIMEOUT * 2\n\n    def m")
    assert diff_module("m", double, double.replace("TIMEOUT = 5", "TIMEOUT = 10")).refusals == ()
    assert diff_module("m", r1, r2, hooks=("post_patch",)).refusals == ()
    assert diff_module("m", r1, r2, hooks=("pre_revert",)).refusals == d.refusals


def test_definitions_in_top_level_blocks_are_module_state() -> None:
    v1 = (
        "try:\n    import ujson as json\nexcept ImportError:\n    def loads(s):\n        return 1\n"
    )
    v2 = v1.replace("return 1", "return 2")
    d = diff_module("m", v1, v2)  # a block that only binds names: run again by staging
    assert d.refusals == () and _non_same(d) == {"changed:<block 0>"}
    calls = v1 + "    register(loads)\n"  # a block that runs a call statement is state
    d = diff_module("m", calls, calls.replace("return 1", "return 2"))
    assert [r.qualname for r in d.refusals] == ["<module>"]
    assert "module-level state changed" in d.refusals[0].reason


def test_main_guard_and_docstrings_are_not_changes() -> None:
    v1 = '"""doc 1"""\n\ndef f():\n    """f doc"""\n    return 1\n\n\nif __name__ == "__main__":\n    f()\n'
    v2 = v1.replace("doc 1", "doc 2").replace("    f()", "    print(f())")
    d = diff_module("m", v1, v2)
    assert d.refusals == () and _non_same(d) == set()
    assert not d.has_changes


def test_changed_import_binding_is_refused_new_and_removed_imports_are_not() -> None:
    v1 = "import os\nfrom json import loads\n"
    v2 = "import os\nfrom ujson import loads\nimport sys\n"
    d = diff_module("m", v1, v2)
    assert [r.qualname for r in d.refusals] == ["loads"]
    assert "from json import loads -> from ujson import loads" in d.refusals[0].reason
    assert _non_same(d) == {"added:sys"}
    d2 = diff_module("m", v1, "import os\n")
    assert _non_same(d2) == {"removed:loads"} and d2.refusals == ()


def test_kinds_qualnames_and_fingerprints_of_targets() -> None:
    v1 = (
        "class A:\n    class B:\n        def m(self):\n            return 1\n\n"
        "    @property\n    def p(self):\n        return 1\n\n    @p.setter\n    def p(self, v):\n        pass\n\n"
        "    @staticmethod\n    def s():\n        return 1\n\n    @classmethod\n    def c(cls):\n        return 1\n"
    )
    v2 = v1.replace("return 1", "return 2").replace("pass", "return v")
    d = diff_module("m", v1, v2)
    kinds = {c.qualname: (c.kind, c.definition) for c in d.changes}
    assert kinds == {
        "A": (ChangeKind.SAME, DefinitionKind.CLASS),
        "A.B": (ChangeKind.SAME, DefinitionKind.CLASS),
        "A.B.m": (ChangeKind.CHANGED, DefinitionKind.METHOD),
        "A.p.fget": (ChangeKind.CHANGED, DefinitionKind.PROPERTY),
        "A.p.fset": (ChangeKind.CHANGED, DefinitionKind.PROPERTY),
        "A.s": (ChangeKind.CHANGED, DefinitionKind.STATICMETHOD),
        "A.c": (ChangeKind.CHANGED, DefinitionKind.CLASSMETHOD),
    }
    changed = [c for c in d.changes if c.kind is ChangeKind.CHANGED]
    assert all(
        c.old_fingerprint and c.new_fingerprint and c.old_fingerprint != c.new_fingerprint
        for c in changed
    )
    assert d.counts() == {"same": 2, "changed": 5, "added": 0, "removed": 0}


def test_members_of_added_and_removed_classes_are_not_separate_targets() -> None:
    v1 = "class Old:\n    def m(self):\n        return 1\n"
    v2 = "class New:\n    def m(self):\n        return 1\n"
    assert _non_same(diff_module("m", v1, v2)) == {"added:New", "removed:Old"}


def test_patch_from_sources_drops_unchanged_modules_and_is_deterministic() -> None:
    same = "def f():\n    return 1\n"
    mods = {"pkg.a": (same, same.replace("1", "2")), "pkg.b": (same, "\n\n" + same)}
    spec = patch_from_sources(mods, category=Category.THREAD_LOCAL, description="fix f")
    assert [m.module for m in spec.modules] == ["pkg.a"]
    assert (
        spec.package == "pkg"
        and spec.category is Category.THREAD_LOCAL
        and spec.description == "fix f"
    )
    assert (
        len(spec.patch_id) == 12
        and spec.patch_id == patch_from_sources(mods, category=Category.THREAD_LOCAL).patch_id
    )
    assert patch_from_sources(mods).patch_id != spec.patch_id  # the category is part of the content
    assert patch_from_sources(mods, patch_id="fix-1", package="other").patch_id == "fix-1"
    assert spec.changed_count == 1


def test_hooks_are_carried_and_lift_hookable_refusals() -> None:
    v1 = "LIMIT = 1\n\n\ndef f(limit=LIMIT):\n    return limit\n"  # the default captured LIMIT
    v2 = "LIMIT = 2\n\n\ndef f(limit=LIMIT):\n    return limit\n"
    assert patch_from_sources({"m": (v1, v2)}).refusals
    spec = patch_from_sources({"m": (v1, v2)}, hooks_source="def post_patch(ctx):\n    pass\n")
    assert spec.refusals == () and spec.hooks_source is not None


def test_syntax_error_names_the_module_and_version() -> None:
    with pytest.raises(SyntaxError) as info:
        diff_module("pkg.mod", "def f():\n    return 1\n", "def f(:\n")
    assert info.value.filename == "<pkg.mod (new)>"


def test_every_corpus_version_diffed_with_itself_is_all_same() -> None:
    from tests.fixtures.livefixtures import FIXTURES, source

    for case_dir in sorted((FIXTURES / "corpus").iterdir()):
        for version in ("v1", "v2"):
            text = source(f"corpus/{case_dir.name}", version)
            d = diff_module("m", text, text)
            assert d.refusals == () and not d.has_changes, (case_dir.name, version)
            assert all(c.old_fingerprint == c.new_fingerprint for c in d.changes)


def test_added_and_removed_modules_are_not_module_state_changes() -> None:
    text = "import os\n\nTABLE = {}\n\n\ndef f():\n    return TABLE\n"
    added = diff_module("pkg.new", None, text)  # None: the old version has no such module
    assert added.refusals == ()
    assert _non_same(added) == {"added:os", "added:f", "added:TABLE"}
    removed = diff_module("pkg.old", text, "")
    assert removed.refusals == () and _non_same(removed) == {
        "removed:os",
        "removed:f",
        "removed:TABLE",
    }


@pytest.mark.parametrize("old", ["", "# the package\n", '"""Docstring only."""\n'])
def test_new_code_in_an_existing_empty_module_adds_the_value_with_the_function(
    old: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """Regression (issue 10): an empty (or comments-only) __init__.py that gains `LIMIT = 5` and
    `def limit(): return LIMIT` gave a patch adding `limit` without `LIMIT`, and limit() raised NameError
    once applied. Now the new value is a target of its own (ADDED, evaluated in the live module at
    staging like the new function), so the applied patch has both."""

    from livepatch.runtime.staging import stage
    from tests.fixtures.livefixtures import forget, load_source, unique_name

    new = "LIMIT = 5\n\n\ndef limit():\n    return LIMIT\n"
    live = load_source(old, tmp_path, unique_name("empty_init"))
    try:
        spec = patch_from_sources({live.__name__: (old, new)})
        assert spec.refusals == ()
        assert {f"{c.kind.value}:{c.qualname}" for c in spec.modules[0].changes} == {
            "added:LIMIT",
            "added:limit",
        }
        staged = stage(spec)
        assert not hasattr(live, "LIMIT")  # staging binds nothing
        staged.swap_in()
        assert live.limit() == 5 and live.LIMIT == 5
        staged.swap_out()
        assert not hasattr(live, "LIMIT") and not hasattr(live, "limit")
    finally:
        forget(live)


def test_a_module_the_old_version_lacks_runs_its_top_level(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from livepatch.patch.package import build_patch, read_directory

    (tmp_path / "old" / "pkg").mkdir(parents=True)
    (tmp_path / "old" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "new" / "pkg").mkdir(parents=True)
    (tmp_path / "new" / "pkg" / "__init__.py").write_text("")
    (tmp_path / "new" / "pkg" / "extra.py").write_text(
        "LIMIT = 5\n\n\ndef limit():\n    return LIMIT\n"
    )
    pp = build_patch(
        read_directory(tmp_path / "old", "pkg"), read_directory(tmp_path / "new", "pkg")
    )
    assert pp.spec.refusals == ()
    assert {m.module: m.status for m in pp.modules} == {"pkg": "unchanged", "pkg.extra": "added"}
