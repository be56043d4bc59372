"""What old and new references see after swap_in and after swap_out (docs/patchability.md backs its claims
with these tests). The fixture (tests/fixtures/references) builds every kind of holder at import time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from livepatch.patch.diff import patch_from_sources
from livepatch.runtime.staging import StagedPatch, stage
from tests.fixtures.livefixtures import forget, load, load_source, source, unique_name


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[ModuleType, ModuleType, StagedPatch]]:
    """The v1 module, a consumer module that did `from <v1> import ...`, and the staged v1 -> v2 patch."""
    module = load("references", "v1", tmp_path)
    consumer = load_source(
        f"from {module.__name__} import greet, Service, INSTANCE\nALIAS = greet\n",
        tmp_path,
        unique_name("consumer"),
    )
    spec = patch_from_sources(
        {module.__name__: (source("references", "v1"), source("references", "v2"))}
    )
    assert spec.refusals == ()
    try:
        yield module, consumer, stage(spec)
    finally:
        forget(module, consumer)


def _observe(m: ModuleType, consumer: ModuleType, held: dict[str, Any]) -> dict[str, Any]:
    return {
        "module attribute": m.greet("x"),
        "from-import alias": consumer.greet("x"),
        "alias of alias": consumer.ALIAS("x"),
        "alias taken before the patch": held["greet"]("x"),
        "dispatch dict built at import": m.HANDLERS["greet"]("x"),
        "functools.partial built at import": m.GREET_PARTIAL(),
        "default argument holding a function": m.run_callback(),
        "registered by a decorator": m.REGISTRY["registered"](1),
        "decorated without functools.wraps": m.wrapped(1),
        "existing instance": m.INSTANCE.describe(),
        "instance via consumer": consumer.INSTANCE.describe(),
        "bound method stored as a callback": m.CALLBACKS[0](),
        "bound method taken before the patch": held["bound"](),
        "unbound method taken before the patch": held["unbound"](m.INSTANCE),
        "staticmethod": m.Service.version(),
        "staticmethod held before": held["static"](),
        "classmethod": m.Service.build("b"),
        "classmethod bound before": held["classmethod"]("b"),
        "property": m.INSTANCE.label,
        "property getter held before": held["fget"](m.INSTANCE),
        "subclass calling super()": m.Child("c").describe(),
        "new closure from a patched parent": m.make_multiplier(2)(5),
    }


def test_every_holder_follows_the_patch_and_the_revert(
    live: tuple[ModuleType, ModuleType, StagedPatch],
) -> None:
    m, consumer, staged = live
    held = {
        "greet": m.greet,
        "bound": m.INSTANCE.describe,
        "unbound": m.Service.describe,
        "static": m.Service.version,
        "classmethod": m.Service.build,
        "fget": m.Service.label.fget,
    }
    before = _observe(m, consumer, held)
    assert all("v1" in repr(v) for v in before.values()), before
    staged.swap_in()
    after = _observe(m, consumer, held)
    not_following = {k: v for k, v in after.items() if "v2" not in repr(v) or "v1" in repr(v)}
    assert not_following == {}
    assert after["subclass calling super()"] == "child2 v2 svc c"
    staged.swap_out()
    assert _observe(m, consumer, held) == before


def test_identity_of_every_holder_is_kept(live: tuple[ModuleType, ModuleType, StagedPatch]) -> None:
    m, consumer, staged = live

    def holders() -> list[Any]:
        return [
            m.greet,
            consumer.greet,
            m.HANDLERS["greet"],
            m.GREET_PARTIAL.func,
            m.Service.__dict__["describe"],
        ]

    objects = holders()
    code = m.greet.__code__
    staged.swap_in()
    assert all(a is b for a, b in zip(objects, holders(), strict=True))
    assert m.greet.__code__ is not code


def test_closures_created_before_the_patch_keep_the_old_inner_code(
    live: tuple[ModuleType, ModuleType, StagedPatch],
) -> None:
    """A changed inner function is a change of its parent: closures made later get the new inner code,
    closures made before (here at import) keep the old one. A hook must rebuild them."""
    m, _, staged = live
    staged.swap_in()
    assert m.make_multiplier(3)(2) == ("v2", 6)
    assert m.TRIPLE(2) == ("v1", 6)


def test_lru_cache_keeps_results_computed_by_the_old_code(
    live: tuple[ModuleType, ModuleType, StagedPatch],
) -> None:
    """The cached function is patched (through __wrapped__), but results cached before stay until cleared."""
    m, _, staged = live
    assert m.cached_square(3) == ("v1", 9)
    staged.swap_in()
    assert m.cached_square(3) == ("v1", 9)  # stale: cached by v1
    assert m.cached_square(4) == ("v2", 16)  # computed by v2
    m.cached_square.cache_clear()  # what a post_patch hook does
    assert m.cached_square(3) == ("v2", 9)


def test_a_copy_of_the_code_made_at_import_does_not_follow(
    live: tuple[ModuleType, ModuleType, StagedPatch],
) -> None:
    """Only the function object is patched: a new function built from its old __code__ is another function."""
    import types

    m, _, staged = live
    copy = types.FunctionType(m.greet.__code__, m.__dict__, "greet_copy")
    staged.swap_in()
    assert m.greet("x") == "v2 hello x"
    assert copy("x") == "v1 hello x"


def test_generations_of_references_see_the_same_function(
    live: tuple[ModuleType, ModuleType, StagedPatch],
) -> None:
    """References taken after the patch and before it are the same object: nothing can call 'the old one'."""
    m, _, staged = live
    before = m.greet
    staged.swap_in()
    assert m.greet is before
    staged.swap_out()
    staged.swap_in()
    assert before("z") == "v2 hello z"
