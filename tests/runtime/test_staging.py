"""stage(): verification against the live code, refusals with their fixes, and staging changes nothing."""

from __future__ import annotations

import builtins
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

from livepatch.errors import PatchAborted, PatchRefused
from livepatch.patch import compiled, lpatch, signing
from livepatch.patch.diff import patch_from_sources
from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.model import ChangeKind, ModulePatch, PatchSpec, TargetChange
from livepatch.runtime.staging import stage
from tests.fixtures.livefixtures import forget, load, load_source, source, unique_name


@pytest.fixture(params=["source", "compiled"])
def new_code(request: pytest.FixtureRequest) -> str:
    """Where staging gets the new code: compiled from the patch's source here, or compiled by `livepatch
    diff` and carried by the (signed) patch file. Both must stage exactly the same."""
    return str(request.param)


def _prepared(spec: PatchSpec, new_code: str) -> PatchSpec:
    if new_code == "source":
        return spec
    # (a patch of class members only carries no compiled code: staging builds those from the source)
    return compiled.attach(spec, compiled.build_section(spec))


def _snapshot(module: ModuleType) -> dict[str, object]:
    out: dict[str, object] = {}
    for name, value in vars(module).items():
        out[name] = (value, getattr(value, "__code__", None), getattr(value, "__defaults__", None))
        if isinstance(value, type):
            for attr, v in vars(value).items():
                out[f"{name}.{attr}"] = (v, getattr(v, "__code__", None))
    return out


def test_patch_built_from_another_version_is_refused_naming_the_first_mismatch(
    tmp_path: Path, new_code: str
) -> None:
    live = load("corpus/strings_bugfix", "v2", tmp_path)  # the server already runs v2
    try:
        v1, v2 = source("corpus/strings_bugfix", "v1"), source("corpus/strings_bugfix", "v2")
        v3 = v2.replace("value[start : end + 1]", "value[start : end + 1] or b''")
        spec = patch_from_sources({live.__name__: (v1, v3)})  # built against v1
        with pytest.raises(PatchRefused) as info:
            stage(_prepared(spec, new_code))
        assert str(info.value) == (
            f"{live.__name__}:getrange_command does not match the patch: the server runs another version"
        )
    finally:
        forget(live)


def test_mismatch_of_an_unchanged_function_is_also_refused(tmp_path: Path) -> None:
    text = "def a():\n    return 1\n\n\ndef b():\n    return 2\n"
    live = load_source(text, tmp_path, unique_name("same_check"))
    try:
        live.a.__code__ = (lambda: 99).__code__.replace(co_name="a", co_qualname="a")  # a hand edit
        spec = patch_from_sources({live.__name__: (text, text.replace("return 2", "return 3"))})
        with pytest.raises(PatchRefused, match=r":a does not match the patch"):
            stage(spec)
    finally:
        forget(live)


def test_patch_of_modules_none_of_which_is_loaded_is_refused() -> None:
    spec = patch_from_sources(
        {"no_such_module_xyz": ("def f():\n    return 1\n", "def f():\n    return 2\n")}
    )
    with pytest.raises(
        PatchRefused,
        match=r"none of the patch's modules is loaded in this process \(no_such_module_xyz\)",
    ):
        stage(spec)


def test_package_patch_skips_unloaded_modules_and_adds_new_ones(
    tmp_path: Path, new_code: str
) -> None:
    pkg = unique_name("pkg")
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    a1 = "def f():\n    return 1\n"
    a2 = f"def f():\n    from {pkg} import helpers\n\n    return helpers.two()\n"
    (tmp_path / pkg / "a.py").write_text(a1)
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        a = importlib.import_module(f"{pkg}.a")
        parent = sys.modules[pkg]
        spec = patch_from_sources(
            {
                f"{pkg}.a": (a1, a2),
                f"{pkg}.helpers": ("", "def two():\n    return 2\n"),  # a new module
                f"{pkg}.unused": (
                    "def g():\n    return 1\n",
                    "def g():\n    return 2\n",
                ),  # never imported
            }
        )
        staged = stage(_prepared(spec, new_code))
        assert staged.skipped_modules == (f"{pkg}.unused",)
        assert f"{pkg}.helpers" not in sys.modules  # staging changes nothing
        staged.swap_in()
        assert a.f() == 2
        assert sys.modules[f"{pkg}.helpers"] is parent.helpers
        staged.swap_out()
        assert a.f() == 1
        assert f"{pkg}.helpers" not in sys.modules and not hasattr(parent, "helpers")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == pkg or n.startswith(pkg + ".")]:
            del sys.modules[name]


def test_missing_live_target_is_refused(tmp_path: Path) -> None:
    text = "def f():\n    return 1\n"
    live = load_source(text, tmp_path, unique_name("missing"))
    try:
        del live.f
        spec = patch_from_sources({live.__name__: (text, text.replace("1", "2"))})
        with pytest.raises(
            PatchRefused, match=r":f cannot be patched: .*:f does not exist in the live module"
        ):
            stage(spec)
    finally:
        forget(live)


def test_staging_changes_nothing(tmp_path: Path, new_code: str) -> None:
    live = load("corpus/added_helpers", "v1", tmp_path)
    try:
        before = _snapshot(live)
        spec = patch_from_sources(
            {
                live.__name__: (
                    source("corpus/added_helpers", "v1"),
                    source("corpus/added_helpers", "v2"),
                )
            }
        )
        staged = stage(_prepared(spec, new_code))
        assert _snapshot(live) == before
        assert staged.function_count == 2
        assert staged.source_bytes == len(source("corpus/added_helpers", "v2").encode())
        staged.swap_in()
        assert live.Summary([2, 5]).product() == 10
        staged.swap_out()
        assert _snapshot(live) == before
    finally:
        forget(live)


def test_corrupt_new_source_is_refused(tmp_path: Path) -> None:
    text = "def f():\n    return 1\n"
    live = load_source(text, tmp_path, unique_name("corrupt"))
    try:
        spec = patch_from_sources({live.__name__: (text, "def f():\n    return 2\n")})
        bad = PatchSpec(
            patch_id=spec.patch_id,
            package=spec.package,
            category=spec.category,
            modules=(ModulePatch(live.__name__, "def f(:\n", spec.modules[0].changes),),
        )
        with pytest.raises(PatchRefused, match="does not compile"):
            stage(bad)
        other = PatchSpec(
            patch_id=spec.patch_id,
            package=spec.package,
            category=spec.category,
            modules=(
                ModulePatch(live.__name__, "def f():\n    return 3\n", spec.modules[0].changes),
            ),
        )
        with pytest.raises(PatchRefused, match="does not produce the code the patch names"):
            stage(other)
    finally:
        forget(live)


def test_freevars_mismatch_is_refused_at_stage_time_too(tmp_path: Path, new_code: str) -> None:
    """A hand-made spec that skips the differ's refusal still cannot make CPython mis-run."""
    v1, v2 = source("corpus/super_added", "v1"), source("corpus/super_added", "v2")
    live = load_source(v1, tmp_path, unique_name("freevars"))
    try:
        spec = patch_from_sources({live.__name__: (v1, v2)})
        assert spec.refusals
        unchecked = PatchSpec(spec.patch_id, spec.package, spec.category, spec.modules)
        with pytest.raises(
            PatchRefused, match=r"Cannot replace closure `Child.get` because its free variables"
        ):
            stage(_prepared(unchecked, new_code))
    finally:
        forget(live)


def test_generator_flag_change_is_refused_at_stage_time_too(tmp_path: Path, new_code: str) -> None:
    v1, v2 = source("corpus/generator_change", "v1"), source("corpus/generator_change", "v2")
    live = load_source(v1, tmp_path, unique_name("gen"))
    try:
        spec = patch_from_sources({live.__name__: (v1, v2)})
        unchecked = PatchSpec(spec.patch_id, spec.package, spec.category, spec.modules)
        with pytest.raises(PatchRefused, match="turns from a plain function into a generator"):
            stage(_prepared(unchecked, new_code))
    finally:
        forget(live)


def test_defaults_changed_applied_unchanged_and_mutable_kept(tmp_path: Path, new_code: str) -> None:
    live = load("corpus/defaults", "v1", tmp_path)
    try:
        cache = live.fetch.__kwdefaults__["cache"]
        seen = live.marker.__defaults__[0]
        live.fetch("k")
        spec = patch_from_sources(
            {live.__name__: (source("corpus/defaults", "v1"), source("corpus/defaults", "v2"))}
        )
        stage(_prepared(spec, new_code)).swap_in()
        assert live.fetch.__defaults__ == (2.5,)
        assert live.fetch.__kwdefaults__["cache"] is cache  # static state carried over, not reset
        assert live.fetch("k") == ("k", 2.5, 2, 2)
        assert live.marker.__defaults__[0] is seen
    finally:
        forget(live)


def test_new_parameter_default_is_evaluated_in_the_live_namespace(
    tmp_path: Path, new_code: str
) -> None:
    v1 = "LIMIT = 7\n\n\ndef f(a):\n    return a\n"
    v2 = "LIMIT = 7\n\n\ndef f(a, b=LIMIT, *, c=LIMIT + 1):\n    return (a, b, c)\n"
    live = load_source(v1, tmp_path, unique_name("newdefault"))
    try:
        live.LIMIT = 70  # live state differs from the source: the live namespace wins
        stage(_prepared(patch_from_sources({live.__name__: (v1, v2)}), new_code)).swap_in()
        assert live.f(1) == (1, 70, 71)
    finally:
        forget(live)


def test_added_definitions_run_their_decorators_once_at_stage_time_only(
    tmp_path: Path, new_code: str
) -> None:
    v1 = "CALLS = []\n\n\ndef reg(fn):\n    CALLS.append(fn.__name__)\n    return fn\n"
    v2 = v1 + "\n\n@reg\ndef added():\n    return 'added'\n"
    live = load_source(v1, tmp_path, unique_name("decorators"))
    try:
        staged = stage(_prepared(patch_from_sources({live.__name__: (v1, v2)}), new_code))
        assert live.CALLS == ["added"]  # the decorator ran (while staging); nothing else did
        assert not hasattr(live, "added")
        staged.swap_in()
        assert live.added() == "added"
        assert live.CALLS == ["added"]
        staged.swap_out()
        assert not hasattr(live, "added")
    finally:
        forget(live)


def test_added_method_using_super_and_added_property_setter(tmp_path: Path, new_code: str) -> None:
    v1 = (
        "class Base:\n    def who(self):\n        return 'base'\n\n\n"
        "class C(Base):\n    def __init__(self):\n        self._v = 1\n\n"
        "    @property\n    def v(self):\n        return self._v\n"
    )
    v2 = (
        "class Base:\n    def who(self):\n        return 'base'\n\n\n"
        "class C(Base):\n    def __init__(self):\n        self._v = 1\n\n"
        "    @property\n    def v(self):\n        return self._v\n\n"
        "    @v.setter\n    def v(self, value):\n        self._v = value * 10\n\n"
        "    def who(self):\n        return 'c+' + super().who()\n\n"
        "    @classmethod\n    def make(cls, n=3):\n        c = cls()\n        c.v = n\n        return c\n"
    )
    live = load_source(v1, tmp_path, unique_name("added_methods"))
    try:
        obj = live.C()
        getter = live.C.__dict__["v"].fget
        staged = stage(_prepared(patch_from_sources({live.__name__: (v1, v2)}), new_code))
        staged.swap_in()
        assert obj.who() == "c+base"
        obj.v = 2
        assert obj.v == 20
        assert live.C.make().v == 30
        assert live.C.__dict__["v"].fget is getter
        staged.swap_out()
        assert "who" not in live.C.__dict__ and "make" not in live.C.__dict__
        assert live.C.__dict__["v"].fset is None
    finally:
        forget(live)


def test_swap_in_is_all_or_nothing(tmp_path: Path, new_code: str) -> None:
    """A failure in the middle of swap_in (here: a metaclass refusing a new name) undoes every step."""
    v1 = (
        "class Meta(type):\n    def __setattr__(cls, name, value):\n"
        "        if name == 'forbidden':\n            raise AttributeError('no')\n"
        "        super().__setattr__(name, value)\n\n\n"
        "def f():\n    return 1\n\n\nclass K(metaclass=Meta):\n    def m(self):\n        return 1\n"
    )
    v2 = (
        v1.replace("return 1\n\n\nclass K", "return helper()\n\n\nclass K")
        + "\n    def forbidden(self):\n        return 2\n\n\ndef helper():\n    return 2\n"
    )
    live = load_source(v1, tmp_path, unique_name("allornothing"))
    try:
        before = _snapshot(live)
        staged = stage(_prepared(patch_from_sources({live.__name__: (v1, v2)}), new_code))
        with pytest.raises(PatchAborted, match="swap failed and was undone"):
            staged.swap_in()
        assert _snapshot(live) == before
        assert live.f() == 1 and not hasattr(live, "helper")
    finally:
        forget(live)


def test_stacked_patches_revert_newest_first(tmp_path: Path) -> None:
    v1 = "def f():\n    return 1\n"
    v2 = "def f():\n    return 2\n\n\ndef g():\n    return 'g2'\n"
    v3 = "def f():\n    return 3\n\n\ndef g():\n    return 'g3'\n"
    live = load_source(v1, tmp_path, unique_name("stack"))
    try:
        code1 = live.f.__code__
        p1 = stage(patch_from_sources({live.__name__: (v1, v2)}))
        p1.swap_in()
        p2 = stage(patch_from_sources({live.__name__: (v2, v3)}))
        assert p2.replaced_codes == frozenset({live.f.__code__, live.g.__code__})
        p2.swap_in()
        assert (live.f(), live.g()) == (3, "g3")
        with pytest.raises(PatchAborted, match="changed since the patch was staged"):
            p1.swap_out()  # p2 is on top: p1's revert must not tear it apart
        assert (live.f(), live.g()) == (3, "g3")
        p2.reversed().swap_in()
        assert (live.f(), live.g()) == (2, "g2")
        p1.swap_out()
        assert live.f() == 1 and live.f.__code__ is code1 and not hasattr(live, "g")
        # a patch built against v1 stages again, one built against v2 no longer does
        stage(patch_from_sources({live.__name__: (v1, v2)}))
        with pytest.raises(PatchRefused, match="does not match the patch"):
            stage(patch_from_sources({live.__name__: (v2, v3)}))
    finally:
        forget(live)


def test_fingerprint_after_swap_is_the_new_fingerprint(tmp_path: Path, new_code: str) -> None:
    live = load("corpus/methods", "v1", tmp_path)
    try:
        spec = patch_from_sources(
            {live.__name__: (source("corpus/methods", "v1"), source("corpus/methods", "v2"))}
        )
        stage(_prepared(spec, new_code)).swap_in()
        expected = {
            c.qualname: c.new_fingerprint
            for c in spec.modules[0].changes
            if c.kind is ChangeKind.CHANGED
        }
        assert (
            code_fingerprint(live.Store.__dict__["normalize"].__func__.__code__)
            == expected["Store.normalize"]
        )
        assert (
            code_fingerprint(live.Store.__dict__["size"].fget.__code__)
            == expected["Store.size.fget"]
        )
        assert (
            code_fingerprint(live.Store.Stats.describe.__code__) == expected["Store.Stats.describe"]
        )
    finally:
        forget(live)


def test_spec_round_trip_through_json_stages_the_same(tmp_path: Path) -> None:
    live = load("corpus/decorated", "v1", tmp_path)
    try:
        spec = patch_from_sources(
            {live.__name__: (source("corpus/decorated", "v1"), source("corpus/decorated", "v2"))}
        )
        again = PatchSpec.from_dict(spec.to_dict())
        assert again == spec
        staged = stage(again)
        staged.swap_in()
        assert live.echo_command("a") == ("logged", "A")
        assert isinstance(spec.modules[0].changes[0], TargetChange)
    finally:
        forget(live)


def test_new_class_level_default_is_added_but_enum_members_are_refused(tmp_path: Path) -> None:
    v1 = "import enum\n\n\nclass Color(enum.Enum):\n    RED = 1\n\n\nclass K:\n    pass\n"
    v2 = v1.replace("RED = 1", "RED = 1\n    BLUE = 2").replace(
        "class K:\n    pass", "class K:\n    LIMIT = 5"
    )
    live = load_source(v1, tmp_path, unique_name("enum"))
    try:
        spec = patch_from_sources({live.__name__: (v1, v2)})
        with pytest.raises(PatchRefused, match="new members cannot be added to a live Enum"):
            stage(spec)
        only_k = patch_from_sources(
            {live.__name__: (v1, v1.replace("class K:\n    pass", "class K:\n    LIMIT = 5"))}
        )
        staged = stage(only_k)
        staged.swap_in()
        assert live.K.LIMIT == 5
        staged.swap_out()
        assert not hasattr(live.K, "LIMIT")
    finally:
        forget(live)


def test_a_compiled_patch_is_staged_without_parsing_or_compiling_its_source(tmp_path: Path) -> None:
    v1 = "def helper(x):\n    return x\n\n\ndef f(x):\n    return [helper(i) for i in range(x)]\n"
    v2 = (
        v1.replace("[helper(i) for", "[tenfold(i) for") + "\n\ndef tenfold(x):\n    return 10 * x\n"
    )
    live = load_source(v1, tmp_path, unique_name("compiled"))
    try:
        with_code = _prepared(patch_from_sources({live.__name__: (v1, v2)}), "compiled")
        (mp,) = with_code.modules
        assert isinstance(mp, compiled.CompiledModulePatch)
        # the source would not even parse: staging must not need it
        broken = compiled.CompiledModulePatch(
            mp.module,
            "def f(:\n",
            mp.changes,
            mp.old_source_sha256,
            compiled=mp.compiled,
            added=mp.added,
        )
        staged = stage(
            PatchSpec(with_code.patch_id, with_code.package, with_code.category, (broken,))
        )
        staged.swap_in()
        assert live.f(3) == [0, 10, 20]
        # the new code (the comprehension nested in it too) names the live module's file in tracebacks
        code = live.f.__code__
        nested = [c for c in code.co_consts if hasattr(c, "co_filename")]
        assert nested and {code.co_filename, *(c.co_filename for c in nested)} == {live.__file__}
        assert (
            live.tenfold.__code__.co_filename == live.__file__
        )  # added, from its compiled statement
        staged.swap_out()
        assert live.f(3) == [0, 1, 2] and not hasattr(live, "tenfold")
    finally:
        forget(live)


def test_a_compiled_patch_with_added_definitions_compiles_those_with_the_future_imports(
    tmp_path: Path,
) -> None:
    # f has a default: staging the changed f evaluates defaults before the added g is compiled
    v1 = "from __future__ import annotations\n\n\ndef f(a=1):\n    return a\n"
    v2 = (
        "from __future__ import annotations\n\n\ndef f(a=2):\n    return g(a)\n\n\n"
        "def g(x: NotDefinedAnywhere) -> NotDefinedAnywhere:\n    return x\n"
    )
    live = load_source(v1, tmp_path, unique_name("compiled_added"))
    try:
        spec = _prepared(patch_from_sources({live.__name__: (v1, v2)}), "compiled")
        kinds = [c.kind for c in spec.modules[0].changes]
        assert ChangeKind.CHANGED in kinds and ChangeKind.ADDED in kinds
        stage(
            spec
        ).swap_in()  # without the __future__ import, g's annotations would raise NameError
        assert live.f() == 2
        assert live.g.__annotations__ == {"x": "NotDefinedAnywhere", "return": "NotDefinedAnywhere"}
    finally:
        forget(live)


def test_cached_fingerprints_do_not_hide_a_hand_edit(tmp_path: Path, new_code: str) -> None:
    text = "def a():\n    return 1\n\n\ndef b():\n    return 2\n"
    live = load_source(text, tmp_path, unique_name("cache_check"))
    try:
        spec = _prepared(
            patch_from_sources({live.__name__: (text, text.replace("return 2", "return 3"))}),
            new_code,
        )
        for _ in range(3):  # the fingerprints of the live code are cached now
            stage(spec)
        live.a.__code__ = (lambda: 99).__code__.replace(co_name="a", co_qualname="a")
        with pytest.raises(PatchRefused, match=r":a does not match the patch"):
            stage(spec)
    finally:
        forget(live)


def test_a_signed_patch_stages_the_code_it_carries_an_unsigned_one_its_source(
    tmp_path: Path,
) -> None:
    """A patch file whose compiled code (return 3) and source (return 2) disagree, as only a buggy or
    malicious builder would make: signed and trusted, the agent's path runs the compiled code; the same
    file unsigned is compiled from its source, which does not produce the code the patch names."""
    v1 = "def f():\n    return 1\n"
    live = load_source(v1, tmp_path, unique_name("trust"))
    try:
        spec3 = patch_from_sources({live.__name__: (v1, v1.replace("1", "3"))})
        (mp3,) = spec3.modules
        doctored = PatchSpec(
            spec3.patch_id,
            spec3.package,
            spec3.category,
            (ModulePatch(mp3.module, v1.replace("1", "2"), mp3.changes),),
        )
        manifest = {**doctored.to_dict(), "compiled": compiled.build_section(spec3)}
        priv, pub, _ = signing.generate_keypair(tmp_path / "keys")
        key, trusted = signing.load_private_key(priv), signing.load_public_key(pub)
        signature = lpatch.Signature(key.key_id, key.sign(lpatch.canonical_bytes(manifest)))
        signed = lpatch.PatchFile(doctored, manifest, signature)
        spec, signer = lpatch.from_document(signed.to_document()).verified_spec([trusted])
        assert signer == key.key_id
        staged = stage(spec)
        staged.swap_in()
        assert live.f() == 3
        staged.swap_out()
        unsigned = lpatch.PatchFile(doctored, manifest, None).to_document()
        spec, signer = lpatch.from_document(unsigned).verified_spec([trusted], allow_unsigned=True)
        assert signer is None
        with pytest.raises(PatchRefused, match="does not produce the code the patch names"):
            stage(spec)
        assert live.f() == 1
    finally:
        forget(live)


def test_a_statement_adding_several_names_runs_once(tmp_path: Path, new_code: str) -> None:
    v1 = "def f():\n    return 1\n"
    v2 = "from os import pathsep, sep\n\n\ndef f():\n    return sep + pathsep\n"
    live = load_source(v1, tmp_path, unique_name("two_names"))
    try:
        imports: list[str] = []

        def counting_import(name: str, *args: object, **kwargs: object) -> object:
            imports.append(name)
            return __import__(name, *args, **kwargs)  # type: ignore[arg-type]

        # the live module's own builtins: its `import` statements go through counting_import
        live.__builtins__ = {**vars(builtins), "__import__": counting_import}  # type: ignore[attr-defined]
        spec = _prepared(patch_from_sources({live.__name__: (v1, v2)}), new_code)
        assert sorted(
            c.qualname for c in spec.modules[0].changes if c.kind is ChangeKind.ADDED
        ) == [
            "pathsep",
            "sep",
        ]
        stage(spec).swap_in()
        assert imports == ["os"]
        assert live.f() == os.sep + os.pathsep
    finally:
        forget(live)
