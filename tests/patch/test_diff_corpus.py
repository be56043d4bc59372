"""Issue 3's corpus: real-world-shaped v1/v2 modules, their expected classification, and for the patchable
ones a check that the patched live module behaves like a fresh import of the new version (and, after
swap_out, like a fresh import of the old one)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from livepatch.errors import PatchRefused
from livepatch.patch.diff import diff_module, patch_from_sources
from livepatch.patch.hooks_info import HOOK_NAMES
from livepatch.patch.model import COVERING_HOOKS
from livepatch.runtime.staging import stage
from tests.fixtures.livefixtures import forget, load, source

# case -> (non-SAME changes as "kind:qualname", probe expressions evaluated with `m` = the module)
PATCHABLE: dict[str, tuple[set[str], list[str]]] = {
    "strings_bugfix": (
        {"changed:getrange_command"},
        [
            "m.getrange_command({b'k': b'hello'}, [b'k', '1', '3'])",
            "m.getrange_command({b'k': b'hello'}, [b'k', '0', '-1'])",
            "m.strlen_command({b'k': b'ab'}, [b'k'])",
        ],
    ),
    "decorated": (
        {"changed:incr_command", "changed:decr_command", "changed:echo_command"},
        [
            "m.TABLE['incr']({}, 'a')",
            "m.incr_command({'a': 1}, 'a')",
            "m.decr_command({}, 'a')",
            "m.decr_command.__wrapped__({}, 'b')",
            "m.echo_command('hi')",
            "_raises(m.incr_command, {'a': 'x'}, 'a')",
        ],
    ),
    "closures": (
        {"changed:make_counter", "changed:total", "changed:sorted_keys"},
        ["m.make_counter(3)()", "m.total([1, 2, 3])", "m.sorted_keys({'a': 1, 'b': 2})"],
    ),
    "methods": (
        {
            "changed:Store.set",
            "changed:Store.get",
            "changed:Store.normalize",
            "changed:Store.create",
            "changed:Store.size.fget",
            "changed:Store.Stats.describe",
            "changed:Cache.get",
        },
        [
            "m.Store.normalize(' X ')",
            "(lambda s: (s.set('A ', 1), s.get('a'), s.size))(m.Store())",
            "m.Store.create(A=1).get(' a ')",
            "m.Cache.create(x=2).get('X')",
            "m.Store.Stats().describe(2)",
        ],
    ),
    "dataclass_method": (
        {"changed:Entry.render", "changed:Entry.matches"},
        ["m.Entry('k', b'v', ['A']).render()", "m.Entry('k', b'v', ['A']).matches('a')"],
    ),
    "added_helpers": (
        {
            "changed:parse_int",
            "changed:describe",
            "added:_parse_signed",
            "added:Summary",
            "added:math",
            "added:reduce",
        },
        ["m.parse_int(' +12 ')", "m.describe(9)", "m.Summary([2, 3]).product()"],
    ),
    "removed_function": ({"changed:new_api", "removed:old_api"}, ["m.new_api(1)"]),
    "defaults": (
        {"changed:fetch"},
        ["m.fetch('k', retries=5)[:3]", "m.fetch('j')[:3]", "m.marker()"],
    ),
    "class_default": (
        {
            "added:Conn.closing",
            "changed:Conn.__init__",
            "changed:Conn.describe",
            "added:Conn.close",
        },
        ["(lambda c: (c.describe(), c.close(), c.describe()))(m.Conn('x'))"],
    ),
    "async_handlers": (
        {"changed:handle", "changed:Session.run"},
        ["asyncio.run(m.Session().run([1, 2]))", "asyncio.run(m.handle(2))"],
    ),
    "line_shift": (set(), ["m.a(1)", "m.K().m()"]),
    # a changed constant only functions read at call time: rebound (tests/patch/test_values.py)
    "constant_change": ({"changed:MAX_CLIENTS"}, ["m.admit(15)", "m.MAX_CLIENTS"]),
    # adding @lru_cache: the new decorators run on the live function at staging (tests/patch/test_values.py)
    "decorator_change": ({"changed:lookup"}, ["m.lookup('a')", "hasattr(m.lookup, 'cache_info')"]),
}

# case -> (qualname, words of the reason, words of the fix, the hook that covers it or None)
REFUSED: dict[str, tuple[str, str, str, str | None]] = {
    "slots_change": (
        "Point",
        "changes its __slots__",
        "--hooks FILE defining transform(ctx) that rebuilds the live objects",
        "transform",
    ),
    "new_instance_attr": (
        "Conn",
        "new instance attribute `self.closing`",
        "give the attribute a class-level default (`closing = None`",
        "transform",
    ),
    "bases_change": (
        "Store",
        "changes its bases or metaclass",
        "keep the class layout",
        "transform",
    ),
    "dataclass_field": (
        "Entry",
        "gains class-level names (ttl)",
        "leave the fields as they are",
        "transform",
    ),
    "mutable_default_change": (
        "collect",
        "default of `into`",
        "use a `None` default",
        "post_patch",
    ),
    "generator_change": (
        "scan",
        "it turns from a plain function into a generator",
        "add a new function under another name",
        None,
    ),
    "super_added": (
        "Child.get",
        "Cannot replace closure `Child.get` because its free variables changed: () -> ('__class__',)",
        "use super()/__class__ in both versions or in neither",
        None,
    ),
    "kind_change": (
        "Store.size",
        "changes from a method to a staticmethod",
        "under another name",
        None,
    ),
}


def _raises(fn: Any, *args: Any) -> str:
    try:
        fn(*args)
    except Exception as exc:
        return type(exc).__name__
    return "no error"


def _probe(module: Any, expr: str) -> str:
    try:
        return repr(eval(expr, {"m": module, "asyncio": asyncio, "_raises": _raises}))
    except Exception as exc:  # e.g. a name only the new version has: compare the error's type
        return f"error: {type(exc).__name__}"


def _diff(case: str, *, hooks: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    return diff_module(
        case, source(f"corpus/{case}", "v1"), source(f"corpus/{case}", "v2"), hooks=hooks
    )


def test_corpus_is_complete() -> None:
    on_disk = {
        p.name for p in (Path(__file__).resolve().parents[1] / "fixtures" / "corpus").iterdir()
    }
    assert on_disk == set(PATCHABLE) | set(REFUSED)


@pytest.mark.parametrize("case", sorted(PATCHABLE))
def test_patchable_classification(case: str) -> None:
    d = _diff(case)
    assert d.refusals == ()
    expected, _ = PATCHABLE[case]
    assert {f"{c.kind.value}:{c.qualname}" for c in d.changes if c.kind.value != "same"} == expected


@pytest.mark.parametrize("case", sorted(PATCHABLE))
def test_patched_module_behaves_like_fresh_new_version(case: str, tmp_path: Path) -> None:
    _, probes = PATCHABLE[case]
    live = load(f"corpus/{case}", "v1", tmp_path / "live")
    fresh_new = load(f"corpus/{case}", "v2", tmp_path / "new")
    fresh_old = load(f"corpus/{case}", "v1", tmp_path / "old")
    try:
        spec = patch_from_sources(
            {live.__name__: (source(f"corpus/{case}", "v1"), source(f"corpus/{case}", "v2"))}
        )
        assert spec.refusals == ()
        staged = stage(spec)
        before = [_probe(live, p) for p in probes]
        assert before == [_probe(fresh_old, p) for p in probes]
        staged.swap_in()
        assert [_probe(live, p) for p in probes] == [_probe(fresh_new, p) for p in probes]
        staged.swap_out()
        assert [_probe(live, p) for p in probes] == [_probe(fresh_old, p) for p in probes]
    finally:
        forget(live, fresh_new, fresh_old)


def test_new_behaviour_differs_from_old_in_the_corpus(tmp_path: Path) -> None:
    """Guard against probes that cannot tell the versions apart (the test above would then prove nothing)."""
    differing = 0
    for case, (_, probes) in PATCHABLE.items():
        old = load(f"corpus/{case}", "v1", tmp_path / case / "old")
        new = load(f"corpus/{case}", "v2", tmp_path / case / "new")
        try:
            if [_probe(old, p) for p in probes] != [_probe(new, p) for p in probes]:
                differing += 1
        finally:
            forget(old, new)
    assert differing == len(PATCHABLE) - 1  # all but line_shift


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refusal_reason_and_fix(case: str) -> None:
    qualname, reason, fix, hook = REFUSED[case]
    d = _diff(case)
    assert len(d.refusals) == 1, d.refusals
    refusal = d.refusals[0]
    assert refusal.module == case
    assert refusal.qualname == qualname
    assert reason in refusal.reason
    assert fix in refusal.fix
    # "or ship --hooks" only where a hook can help
    assert ("--hooks" in refusal.fix) is (hook is not None)
    # a hooks file waives the refusal only when it defines the covering hook; CPython-level ones stand
    cover = COVERING_HOOKS.get(refusal.kind)
    others = tuple(h for h in HOOK_NAMES if cover is None or h not in cover.hooks)
    assert _diff(case, hooks=others).refusals == d.refusals
    if hook is not None:
        covered = _diff(case, hooks=(hook,))
        assert covered.refusals == ()
        assert [(w.refusal, w.hook) for w in covered.waived] == [(refusal, hook)]


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refused_patch_is_not_staged_and_nothing_changes(case: str, tmp_path: Path) -> None:
    live = load(f"corpus/{case}", "v1", tmp_path)
    try:
        before = {k: (v, getattr(v, "__code__", None)) for k, v in vars(live).items()}
        spec = patch_from_sources(
            {live.__name__: (source(f"corpus/{case}", "v1"), source(f"corpus/{case}", "v2"))}
        )
        assert len(spec.refusals) == 1
        with pytest.raises(PatchRefused, match="built with refusals"):
            stage(spec)
        after = {k: (v, getattr(v, "__code__", None)) for k, v in vars(live).items()}
        assert after == before
    finally:
        forget(live)
