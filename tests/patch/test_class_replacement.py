"""`--accept-transformer` for a class whose `__slots__` change: the generated transform hook replaces the
class and rebuilds every live instance (livepatch.migrate), applied for real (apply_patch with global
quiescence, managed worker threads using the live objects until they park); the refusal stands without
the flag, and where no exact replacement exists. Also: a generated transformer never waives a refusal
of a kind it does not take care of."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from livepatch import (
    WatchPolicy,
    apply_patch,
    history,
    managed_thread,
    quiescence_point,
    revert_patch,
)
from livepatch.patch.diff import diff_sources
from livepatch.patch.model import RefusalKind
from tests.fixtures.livefixtures import forget, load_source, unique_name

CASE = Path(__file__).resolve().parent / "values_corpus_transformer" / "slots_parser"
V1 = (CASE / "v1.py").read_text()
V2 = (CASE / "v2.py").read_text()


def test_without_confirmation_the_layout_change_is_refused_and_the_fix_names_the_flag() -> None:
    spec = diff_sources({"m": (V1, V2)}).spec
    layout = [r for r in spec.refusals if r.kind is RefusalKind.CLASS_LAYOUT]
    assert len(layout) == 1 and "changes its __slots__" in layout[0].reason
    assert "replaces the class and rebuilds its live instances" in layout[0].fix
    assert "--accept-transformer" in layout[0].fix


def test_confirmed_replacement_is_generated_and_printed() -> None:
    result = diff_sources({"m": (V1, V2)}, accept_transformer=True)
    assert result.spec.refusals == ()
    text = result.generated_transformer or ""
    assert "replace_class" in text and "def untransform(ctx)" in text
    assert "('limit', '1000')" in text and "('lock', 'threading.Lock()')" in text
    assert sorted(w.refusal.kind for w in result.waived) == sorted(
        [RefusalKind.CLASS_LAYOUT, RefusalKind.INSTANCE_ATTRIBUTE, RefusalKind.INSTANCE_ATTRIBUTE]
    )


# the class statement reads a name the same patch adds (bound before the hook runs: session 10)
V2_READS_ADDED = V2.replace('"lock", "parsed")', '"lock", "parsed") + EXTRA').replace(
    "class Parser:", "EXTRA = ()\n\n\nclass Parser:"
)


_REGISTRY = """
KINDS = []


class Registered:
    def __init_subclass__(cls):
        KINDS.append(cls)
"""

# what makes a replacement not exact: the refusal stands, with `--accept-transformer` cannot help
NOT_REPLACEABLE = {
    "a class of the module derives from it": (
        V1 + "\n\nclass Sub(Parser):\n    __slots__ = ()\n",
        V2 + "\n\nclass Sub(Parser):\n    __slots__ = ()\n",
        "derive(s) from it",
    ),
    # a name the patch adds is bound before the hook runs (session 10, StagedPatch.bind_new_names):
    # test_a_class_statement_may_read_a_name_the_patch_adds
    "the class statement reads a name the patch changes": (
        V1.replace("class Parser:", "EXTRA = ()\n\n\nclass Parser:"),
        V2.replace('"lock", "parsed")', '"lock", "parsed") + EXTRA').replace(
            "class Parser:", "EXTRA = ('extra',)\n\n\nclass Parser:"
        ),
        "reads a name the patch changes",
    ),
    "a base of the module with __init_subclass__": (
        V1.replace("class Parser:", _REGISTRY + "\n\nclass Parser(Registered):"),
        V2.replace("class Parser:", _REGISTRY + "\n\nclass Parser(Registered):"),
        "__init_subclass__",
    ),
    "a metaclass": (
        V1.replace("class Parser:", "class Parser(metaclass=type):"),
        V2.replace("class Parser:", "class Parser(metaclass=type):"),
        "metaclass",
    ),
    "the class stops assigning an attribute": (
        V1,
        V2.replace("        self.parsed = 0\n", "").replace("self.parsed += 1", "pass"),
        "stops assigning an attribute",
    ),
}


def test_a_class_statement_may_read_a_name_the_patch_adds() -> None:
    """The transform hook runs with the names the patch adds to modules already bound (session 10), so
    the new class statement it runs may read one."""
    result = diff_sources({"m": (V1, V2_READS_ADDED)}, accept_transformer=True)
    assert result.generated_transformer is not None and result.spec.refusals == ()


@pytest.mark.parametrize("case", sorted(NOT_REPLACEABLE))
def test_no_replacement_where_it_would_not_be_exact(case: str) -> None:
    v1, v2, words = NOT_REPLACEABLE[case]
    result = diff_sources({"m": (v1, v2)}, accept_transformer=True)
    assert result.generated_transformer is None
    layout = [r for r in result.spec.refusals if r.kind is RefusalKind.CLASS_LAYOUT]
    assert layout and all("`--accept-transformer` cannot help" in r.fix for r in layout)
    assert words in layout[0].fix


def test_a_generated_transformer_never_waives_a_class_state_refusal_it_does_not_handle() -> None:
    """A transform hook waives whole kinds (model.COVERING_HOOKS). A transformer generated for a new
    attribute used to waive a class-state refusal of the same patch too, silently (the class-level
    value stayed old live)."""
    v1 = "class C:\n    if True:\n        mode = 1\n\n    def __init__(self):\n        self.a = 1\n"
    v2 = v1.replace("mode = 1", "mode = 2") + "        self.b = 0\n"
    result = diff_sources({"m": (v1, v2)}, accept_transformer=True)
    assert result.generated_transformer is None
    assert {r.kind for r in result.spec.refusals} == {
        RefusalKind.CLASS_STATE,
        RefusalKind.INSTANCE_ATTRIBUTE,
    }


@pytest.mark.parametrize("v2", [V2, V2_READS_ADDED], ids=["layout", "reads-an-added-name"])
def test_confirmed_replacement_applied_live_rebuilds_every_instance_and_keeps_its_state(
    tmp_path: Path, v2: str
) -> None:
    live = load_source(V1, tmp_path, unique_name("replacement"))
    result = diff_sources({live.__name__: (V1, v2)}, category=None, accept_transformer=True)
    spec = result.spec
    assert spec.refusals == () and result.generated_transformer is not None
    old_class_id = id(
        live.Parser
    )  # not the class: a thread's local holding it refuses the replacement
    stop = threading.Event()
    ready = threading.Barrier(3)
    errors: list[BaseException] = []
    replies: list[list[str]] = [[], []]

    def worker(i: int) -> None:
        with managed_thread("worker"):
            ready.wait(timeout=10)
            while not stop.is_set():
                quiescence_point()  # holds no parser here: each call reaches it through the list
                try:
                    replies[i].append(live.CONNECTIONS[i].handle(b"x"))
                except BaseException as exc:  # an old-layout parser under the new code raises
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=10)
        applied = apply_patch(spec, method="global", timeout=10)
        assert applied.outcome == "applied", applied.reason
        seen = [len(r) for r in replies]
        deadline = time.monotonic() + 10
        while any(len(r) <= s + 5 for r, s in zip(replies, seen, strict=True)):
            assert time.monotonic() < deadline, seen
            time.sleep(0.001)  # polling a counter with a deadline, not a timing guess
        assert errors == []
        assert id(live.Parser) != old_class_id
        for i, conn in enumerate(live.CONNECTIONS):
            assert type(conn.parser) is live.Parser and conn.parser.limit == 1000
            assert live.BY_NAME[conn.name] is conn.parser  # the module-level dict follows
            # the count went on from where the old parser was: state kept, new code running
            numbers = [int(r.split(":")[1].split("/")[0]) for r in replies[i]]
            assert numbers == list(range(1, len(numbers) + 1))
            assert replies[i][-1].endswith("/1000")
        assert live.Connection("c").handle(b"y") == "c:1/1000"  # built by the new code
        # the way back (session 11): the old class again, each parser rebuilt with its count and
        # without the slots the forward step gave it
        reverted = revert_patch()
        assert reverted.ok, reverted.reason
        assert id(live.Parser) == old_class_id
        for conn in live.CONNECTIONS:
            assert type(conn.parser) is live.Parser and not hasattr(conn.parser, "limit")
            assert live.BY_NAME[conn.name] is conn.parser
        assert live.CONNECTIONS[0].handle(b"x").count("/") == 0  # the old code, the old layout
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        forget(live)
    assert errors == []


BASES = Path(__file__).resolve().parents[1] / "fixtures" / "corpus" / "bases_change"


def test_a_bases_change_applied_live_gives_every_instance_the_new_bases(tmp_path: Path) -> None:
    v1 = (BASES / "v1.py").read_text() + "\n\nSTORES = [Store(), Store()]\n"
    v2 = (BASES / "v2.py").read_text() + "\n\nSTORES = [Store(), Store()]\n"
    live = load_source(v1, tmp_path, unique_name("bases"))
    try:
        live.STORES[0].note = "kept"  # instance state in its __dict__
        result = diff_sources({live.__name__: (v1, v2)}, category=None, accept_transformer=True)
        assert result.spec.refusals == () and result.generated_transformer is not None
        applied = apply_patch(result.spec, method="global", timeout=10)
        assert applied.outcome == "applied", applied.reason
        assert all(isinstance(s, live.Mixin) and type(s) is live.Store for s in live.STORES)
        assert live.Store.__bases__ == (live.Base, live.Mixin)
        assert live.STORES[0].note == "kept" and live.STORES[1].get() == 1
    finally:
        forget(live)


def test_a_refused_second_replacement_undoes_the_first_through_the_patcher(tmp_path: Path) -> None:
    """Two classes change layout; the second's live instance is held in a tuple, which cannot be
    rewritten: the hook raises after the first replacement, and the patcher undoes it while the threads
    are still parked. Nothing is swapped; the first class and its instances are the old ones."""
    extra = (
        '\n\nclass Other:\n    __slots__ = ("a",)\n\n    def __init__(self):\n        self.a = 1\n'
    )
    v1 = V1 + extra + "\nFROZEN = (Other(),)\n"
    v2 = (
        V2
        + extra.replace('("a",)', '("a", "b")').replace(
            "self.a = 1\n", "self.a = 1\n        self.b = 2\n"
        )
        + "\nFROZEN = (Other(),)\n"
    )
    live = load_source(v1, tmp_path, unique_name("undo"))
    try:
        old_parser, old_other = id(live.Parser), id(live.Other)
        parsers = [id(c.parser) for c in live.CONNECTIONS]
        result = diff_sources({live.__name__: (v1, v2)}, category=None, accept_transformer=True)
        text = result.generated_transformer or ""
        assert result.spec.refusals == () and text.index("'Parser'") < text.index("'Other'")
        failed = apply_patch(result.spec, method="global", timeout=10)
        assert failed.outcome == "failed" and "a tuple holds a live instance" in (
            failed.reason or ""
        )
        assert "replaced by the new class" in (failed.reason or "")  # the first step, undone
        assert id(live.Parser) == old_parser and id(live.Other) == old_other
        assert [id(c.parser) for c in live.CONNECTIONS] == parsers
        assert live.BY_NAME["a"] is live.CONNECTIONS[0].parser
        assert live.CONNECTIONS[0].handle(b"x") == "a:1"  # the old code, the old object
    finally:
        forget(live)


DATACLASS_V1 = """
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    host: str
    port: int = 0

    def where(self):
        return f"{self.host}:{self.port}"


CONFIGS = {"a": Config("a", 1), "b": Config("b")}
"""
DATACLASS_V2 = DATACLASS_V1.replace(
    "    port: int = 0\n",
    "    port: int = 0\n    secret: bytes | None = None\n    tags: list = field(default_factory=list)\n",
).replace('return f"{self.host}:{self.port}"', 'return f"{self.host}:{self.port}/{len(self.tags)}"')


def test_a_dataclass_gaining_fields_is_replaced_with_the_defaults_of_its_new_fields(
    tmp_path: Path,
) -> None:
    """A dataclass's fields decide its generated __init__, __eq__ and __repr__, which no source of the
    patch holds: the class is replaced by running its class statement (the same `@dataclass`) again,
    and each live instance gets what the new __init__ gives a field nobody passes (session 11)."""
    refused = diff_sources({"m": (DATACLASS_V1, DATACLASS_V2)}).spec.refusals
    assert [r.kind for r in refused] == [RefusalKind.CLASS_FIELDS]
    assert "--accept-transformer" in refused[0].fix and "cannot help" not in refused[0].fix
    live = load_source(DATACLASS_V1, tmp_path, unique_name("dataclass"))
    try:
        old = id(live.Config)  # not the class: a local holding it refuses the replacement
        result = diff_sources(
            {live.__name__: (DATACLASS_V1, DATACLASS_V2)}, category=None, accept_transformer=True
        )
        assert result.spec.refusals == ()
        assert "('secret', 'None'), ('tags', '(list)()')" in (result.generated_transformer or "")
        applied = apply_patch(result.spec, method="global", timeout=10)
        assert applied.outcome == "applied", applied.reason
        a = live.CONFIGS["a"]
        assert type(a) is live.Config and id(live.Config) != old
        assert a == live.Config("a", 1)  # the new __eq__ compares the new fields too
        assert repr(a) == "Config(host='a', port=1, secret=None, tags=[])"
        assert a.where() == "a:1/0" and live.CONFIGS["b"].where() == "b:0/0"
        assert a.tags is not live.CONFIGS["b"].tags  # a factory's value per instance
        with pytest.raises(AttributeError):
            a.port = 2  # still frozen: the same decorator ran
    finally:
        forget(live)


def test_a_dataclass_field_without_a_default_or_another_decorator_is_not_replaced() -> None:
    no_default = DATACLASS_V1.replace("    port: int = 0\n", "    port: int = 0\n    extra: int\n")
    for v2, words in [
        (no_default, "class-level state"),  # `extra: int` binds nothing: a class-body statement
        (no_default.replace("extra: int", "extra: int = field(repr=False)"), "has no default"),
        (DATACLASS_V2.replace("@dataclass(frozen=True)", "@dataclass"), "decorators"),
        (
            DATACLASS_V2.replace("@dataclass(frozen=True)", "@register").replace(
                "from dataclasses", "register = lambda c: c\nfrom dataclasses"
            ),
            "decorated",
        ),
    ]:
        v1 = DATACLASS_V1
        if "@register" in v2:
            v1 = DATACLASS_V1.replace("@dataclass(frozen=True)", "@register").replace(
                "from dataclasses", "register = lambda c: c\nfrom dataclasses"
            )
        result = diff_sources({"m": (v1, v2)}, accept_transformer=True)
        assert result.generated_transformer is None, words
        text = " ".join(r.reason + r.fix for r in result.spec.refusals)
        assert words in text, text


def test_a_watch_window_rolls_back_a_class_replacement_through_the_way_back(tmp_path: Path) -> None:
    """A bad patch that also replaced a class: an exception escapes its new code inside the watch
    window, and the automatic rollback (a normal revert, threads parked) runs the generated
    `untransform`: the old class is bound again and every live instance rebuilt as one of it, with its
    state, less the slots the forward step gave it. Before session 11 its `pre_revert` vetoed every
    revert, and the rollback failed."""
    check_v1 = "\n\ndef check(data):\n    return len(data)\n"
    check_v2 = (
        "\n\ndef check(data):\n    if data == b'boom':\n        raise ValueError('bad patch')\n"
        "    return len(data)\n"
    )
    v1, v2 = V1 + check_v1, V2 + check_v2
    live = load_source(v1, tmp_path, unique_name("rollback"))
    try:
        old_class_id = id(live.Parser)
        live.CONNECTIONS[0].handle(b"x")
        spec = diff_sources({live.__name__: (v1, v2)}, category=None, accept_transformer=True).spec
        applied = apply_patch(
            spec, method="global", timeout=10, watch=WatchPolicy(window_s=60, max_errors=0)
        )
        assert applied.outcome == "applied", applied.reason
        assert id(live.Parser) != old_class_id and live.CONNECTIONS[0].parser.limit == 1000
        assert live.CONNECTIONS[0].handle(b"x") == "a:2/1000"
        watcher = next(
            t for t in threading.enumerate() if t.name == f"livepatch-watch-{spec.patch_id}"
        )
        with pytest.raises(ValueError, match="bad patch"):
            live.check(b"boom")
        watcher.join(timeout=30)  # the window ends itself on the error and rolls back
        assert not watcher.is_alive()
        rb = history()[-1]
        assert (rb.action, rb.outcome) == ("revert", "rolled-back"), rb.reason
        assert id(live.Parser) == old_class_id
        for conn in live.CONNECTIONS:
            assert type(conn.parser) is live.Parser and not hasattr(conn.parser, "limit")
            assert live.BY_NAME[conn.name] is conn.parser
        assert live.CONNECTIONS[0].handle(b"x") == "a:3"  # the count kept, the old code again
        assert live.check(b"boom") == 4
    finally:
        forget(live)


def test_a_forced_revert_of_a_class_replacement_is_refused(tmp_path: Path) -> None:
    """Without quiescence the instances cannot be moved back: a forced revert refuses, nothing changes."""
    live = load_source(V1, tmp_path, unique_name("forced"))
    try:
        spec = diff_sources({live.__name__: (V1, V2)}, category=None, accept_transformer=True).spec
        assert apply_patch(spec, method="global", timeout=10).outcome == "applied"
        forced = revert_patch(force=True)
        assert not forced.ok and "forced revert cannot move" in (forced.reason or "")
        assert live.CONNECTIONS[0].parser.limit == 1000
        assert revert_patch().ok and not hasattr(live.CONNECTIONS[0].parser, "limit")
    finally:
        forget(live)
