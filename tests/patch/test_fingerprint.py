"""Fingerprints ignore where code is (lines, comments, file names) and see what it does."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.walk import walk_source
from livepatch.runtime.resolve import resolve_function
from tests.fixtures.livefixtures import FIXTURES, forget, load, source

CASES = sorted(p.name for p in (FIXTURES / "corpus").iterdir())


def _fingerprints(text: str, filename: str = "<test>") -> dict[str, str | None]:
    walk = walk_source(text, filename)
    return {
        q: (code_fingerprint(d.code) if d.code is not None else None)
        for q, d in walk.definitions.items()
    }


def _insert_noise(text: str, inserts: list[tuple[int, str]]) -> str:
    """Insert blank lines and comment lines before the given line indexes (never inside a string)."""
    lines = text.split("\n")
    for index, kind in sorted(inserts, reverse=True):
        i = index % (len(lines) + 1)
        following = lines[i] if i < len(lines) else ""
        indent = following[: len(following) - len(following.lstrip())]
        lines.insert(i, "" if kind == "blank" else f"{indent}# noise {kind}")
    return "\n".join(lines)


@settings(max_examples=60, deadline=None)
@given(
    case=st.sampled_from(CASES),
    version=st.sampled_from(["v1", "v2"]),
    shift=st.integers(min_value=0, max_value=500),
    inserts=st.lists(
        st.tuples(st.integers(min_value=0, max_value=200), st.sampled_from(["blank", "a", "b c"])),
        max_size=15,
    ),
)
def test_line_shifts_blank_lines_and_comments_do_not_change_fingerprints(
    case: str, version: str, shift: int, inserts: list[tuple[int, str]]
) -> None:
    text = source(f"corpus/{case}", version)
    noisy = "\n" * shift + _insert_noise(text, inserts)
    assert _fingerprints(noisy, "/elsewhere/other_name.py") == _fingerprints(text)


@settings(max_examples=60, deadline=None)
@given(
    a=st.integers() | st.text(max_size=5) | st.floats(allow_nan=False),
    b=st.integers() | st.text(max_size=5) | st.floats(allow_nan=False),
    shift=st.integers(min_value=0, max_value=50),
)
def test_a_changed_constant_changes_the_fingerprint(a: object, b: object, shift: int) -> None:
    template = "def f(x):\n    y = x\n    return (y, {!r})\n"
    fa = _fingerprints(template.format(a))["f"]
    fb = _fingerprints("\n" * shift + template.format(b))["f"]
    same = type(a) is type(b) and repr(a) == repr(b)
    assert (fa == fb) is same


def test_constant_types_are_told_apart() -> None:
    prints = {
        _fingerprints(f"def f():\n    return {c}\n")["f"]
        for c in ("1", "1.0", "True", "'1'", "b'1'", "(1,)")
    }
    assert len(prints) == 6


def test_nested_function_change_changes_the_parent() -> None:
    outer = "def f():\n    def g():\n        return {}\n    return g\n"
    assert _fingerprints(outer.format(1))["f"] != _fingerprints(outer.format(2))["f"]


def test_live_code_matches_code_compiled_from_its_source(tmp_path: Path) -> None:
    """What stage() relies on: the imported (and hot, specialised) function fingerprints like the source."""
    for case in CASES:
        text = source(f"corpus/{case}", "v1")
        module = load(f"corpus/{case}", "v1", tmp_path / case)
        try:
            walk = walk_source(text)
            checked = 0
            for qualname, d in walk.definitions.items():
                if d.code is None or d.kind.value in ("class", "import"):
                    continue
                accessor = qualname.rsplit(".", 1)[1] if d.kind.value == "property" else None
                live = resolve_function(module, d.owner, d.name, d.code_qualname, accessor)
                assert code_fingerprint(live.__code__) == code_fingerprint(d.code), (case, qualname)
                checked += 1
            assert checked > 0 or case in ("bases_change",)
        finally:
            forget(module)


def test_specialised_bytecode_fingerprints_the_same(tmp_path: Path) -> None:
    module = load("corpus/strings_bugfix", "v1", tmp_path)
    try:
        before = code_fingerprint(module.getrange_command.__code__)
        store = {b"k": b"hello"}
        for _ in range(5000):  # hot enough for the 3.11 adaptive interpreter to specialise it
            module.getrange_command(store, [b"k", "1", "3"])
        assert code_fingerprint(module.getrange_command.__code__) == before
    finally:
        forget(module)
