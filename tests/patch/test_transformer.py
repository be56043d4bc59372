"""`--accept-transformer`: a new instance attribute whose value the new __init__ computes from globals,
self and constructor arguments the object keeps is set on every live instance by a generated transform
hook, applied for real (apply_patch with global quiescence, managed worker threads using the live
instance until they park). Cases: values_corpus_transformer/counter (globals and self) and
kept_arguments (`self.adj = adj` ... `self.inbuf = Buffer(adj.inbuf_overflow)`), with their refused
neighbours."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from livepatch import apply_patch, managed_thread, quiescence_point, revert_patch
from livepatch.patch.diff import diff_sources
from livepatch.patch.model import Category, PatchSpec, RefusalKind
from tests.fixtures.livefixtures import forget, load_source, unique_name

CASE = Path(__file__).resolve().parent / "values_corpus_transformer" / "counter"
V1 = (CASE / "v1.py").read_text()
V2 = (CASE / "v2.py").read_text()


def test_without_confirmation_the_new_attributes_are_refused_and_the_fix_names_the_flag() -> None:
    spec = diff_sources({"m": (V1, V2)}).spec
    assert [r.kind for r in spec.refusals] == [RefusalKind.INSTANCE_ATTRIBUTE] * 2
    assert all("--accept-transformer" in r.fix for r in spec.refusals)


def test_no_transformer_when_an_attribute_comes_from_a_constructor_argument_not_kept() -> None:
    v2 = V2.replace("def __init__(self, name):", "def __init__(self, name, owner=''):").replace(
        "self.hits = 0", "self.hits = 0\n        self.owner = owner.upper()"
    )
    result = diff_sources({"m": (V1, v2)}, accept_transformer=True)
    assert result.generated_transformer is None
    owner = [r for r in result.spec.refusals if "`self.owner`" in r.reason]
    assert len(owner) == 1 and "`--accept-transformer` cannot help" in owner[0].fix


def test_confirmed_transformer_sets_the_attributes_on_live_instances_under_global_quiescence(
    tmp_path: Path,
) -> None:
    live = load_source(V1, tmp_path, unique_name("transformer"))
    result = diff_sources({live.__name__: (V1, V2)}, category=None, accept_transformer=True)
    spec = result.spec
    assert spec.refusals == () and spec.category is Category.DATA
    assert result.generated_transformer is not None and "def transform(ctx)" in (
        spec.hooks_source or ""
    )
    assert [w.hook for w in result.waived] == ["transform", "transform"]
    built_before = live.Counter("b")  # another instance built by the old __init__
    stop = threading.Event()
    ready = threading.Barrier(3)
    errors: list[BaseException] = []
    calls = [0, 0]

    def worker(i: int) -> None:
        with managed_thread("worker"):
            ready.wait(timeout=10)
            while not stop.is_set():
                quiescence_point()
                try:
                    live.LIVE.hit()
                    calls[i] += 1
                except BaseException as exc:  # an instance without `lock` would raise here
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=10)
        result_apply = apply_patch(spec, method="global", timeout=10)
        assert result_apply.outcome == "applied", result_apply.reason
        seen = list(calls)
        deadline = time.monotonic() + 10
        while calls[0] <= seen[0] + 5 or calls[1] <= seen[1] + 5:  # both ran the new code
            assert time.monotonic() < deadline, calls
            time.sleep(0.001)  # polling a counter with a deadline, not a timing guess
        assert errors == []
        assert isinstance(live.LIVE.lock, type(threading.Lock()))
        assert built_before.hit() == "b:1"  # set by the transformer, then counted by the new code
        assert live.Counter("c").hit() == "c:1"  # built by the new __init__
        assert revert_patch().ok
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        forget(live)
    assert errors == []


KEPT = Path(__file__).resolve().parent / "values_corpus_transformer" / "kept_arguments"
KV1 = (KEPT / "v1.py").read_text()
KV2 = (KEPT / "v2.py").read_text()


def test_kept_constructor_arguments_are_read_through_the_attributes_that_keep_them() -> None:
    result = diff_sources({"m": (KV1, KV2)}, accept_transformer=True)
    assert result.spec.refusals == ()
    assert [w.hook for w in result.waived] == ["transform", "transform"]
    text = result.generated_transformer or ""
    assert "Buffer(self.adj.inbuf_overflow)" in text and "self.server.upper()" in text
    assert (
        "('adj', 'server')" in text
    )  # the kept attributes: the hook checks who built the instance


# what makes `self.adj` (or `self.server`) not provably the argument the new __init__ would read
REFUSED_NEIGHBOURS = {
    "kept attribute assigned by another method": (
        KV1,
        KV2.replace(
            "    def received_bytes(self, data):",
            "    def reconfigure(self, adj):\n        self.adj = adj\n\n    def received_bytes(self, data):",
        ),
    ),
    "kept attribute changed in place by an augmented assignment": (
        KV1,
        KV2.replace(
            "        self.received += len(data)",
            "        self.received += len(data)\n        self.server += '!'",
        ),
    ),
    "old __init__ did not keep the argument": (
        KV1.replace("        self.adj = adj\n", ""),
        KV2,
    ),
    "argument rebound after it is kept": (
        KV1,
        KV2.replace(
            "        self.received = 0\n        self.inbuf",
            "        self.received = 0\n        adj = Adjustments(1)\n        self.inbuf",
        ),
    ),
    "default built differently by the two versions": (
        KV1,
        KV2.replace("adj = Adjustments()", "adj = Adjustments(8)"),
    ),
    "a subclass in the module keeps something else there": (
        KV1
        + "\n\nclass Quiet(Channel):\n    def __init__(self, server):\n        super().__init__(server)\n        self.server = ''\n",
        KV2
        + "\n\nclass Quiet(Channel):\n    def __init__(self, server):\n        super().__init__(server)\n        self.server = ''\n",
    ),
    "an attribute the new version stops assigning may hold the state the new one takes over": (
        KV1,
        KV2.replace("self.received", "self.total"),  # `received` becomes `total`
    ),
    "an early return may skip the statement that keeps it": (
        KV1.replace(
            "        self.received = 0\n",
            "        self.received = 0\n        if server is None:\n            return\n",
            1,
        ),
        KV2.replace(
            "        self.received = 0\n",
            "        self.received = 0\n        if server is None:\n            return\n",
            1,
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED_NEIGHBOURS))
def test_refused_neighbours_of_kept_arguments(case: str) -> None:
    v1, v2 = REFUSED_NEIGHBOURS[case]
    result = diff_sources({"m": (v1, v2)}, accept_transformer=True)
    assert result.generated_transformer is None, case
    refused = [r for r in result.spec.refusals if r.kind is RefusalKind.INSTANCE_ATTRIBUTE]
    assert refused, case
    assert any("`--accept-transformer` cannot help" in r.fix for r in refused), case


def _run_under_load(
    live: ModuleType, spec: PatchSpec
) -> tuple[str, str | None, list[BaseException]]:
    """apply_patch(spec) with global quiescence while two managed threads use live.LIVE."""
    stop = threading.Event()
    ready = threading.Barrier(3)
    errors: list[BaseException] = []
    calls = [0, 0]

    def worker(i: int) -> None:
        with managed_thread("worker"):
            ready.wait(timeout=10)
            while not stop.is_set():
                quiescence_point()
                try:
                    live.LIVE.received_bytes(b"x")
                    calls[i] += 1
                except BaseException as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(2)]
    for t in threads:
        t.start()
    try:
        ready.wait(timeout=10)
        outcome = apply_patch(spec, method="global", timeout=10)
        seen = list(calls)
        deadline = time.monotonic() + 10
        while (
            calls[0] <= seen[0] + 5 or calls[1] <= seen[1] + 5
        ):  # both ran the code after the apply
            assert time.monotonic() < deadline, calls
            time.sleep(0.001)  # polling a counter with a deadline, not a timing guess
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    return outcome.outcome, outcome.reason, errors


def test_kept_arguments_transformer_applied_live_behaves_like_a_fresh_import(
    tmp_path: Path,
) -> None:
    live = load_source(KV1, tmp_path / "live", unique_name("kept"))
    fresh = load_source(KV2, tmp_path / "fresh", unique_name("kept_fresh"))
    try:
        result = diff_sources({live.__name__: (KV1, KV2)}, category=None, accept_transformer=True)
        assert result.spec.refusals == () and result.spec.category is Category.DATA
        built_before = live.Channel("other")  # default adjustments, built by the old __init__
        outcome, reason, errors = _run_under_load(live, result.spec)
        assert outcome == "applied", reason
        assert errors == []
        # the buffer is sized from the adjustments each instance was built with, as the new __init__
        assert live.LIVE.inbuf.overflow == 4 and built_before.inbuf.overflow == 512
        assert live.LIVE.label == "SRV" and built_before.label == "OTHER"
        # and behaves like an instance a fresh import of v2 builds with the same arguments
        mine = [built_before.received_bytes(b"abc") for _ in range(3)]
        theirs = fresh.Channel("other")
        assert mine == [theirs.received_bytes(b"abc") for _ in range(3)]
        small = live.Channel("srv", live.Adjustments(4))  # built by the new __init__
        assert small.received_bytes(b"abcde") == fresh.Channel(
            "srv", fresh.Adjustments(4)
        ).received_bytes(b"abcde")
        assert revert_patch().ok  # the old code runs again; the attributes stay (it ignores them)
        assert live.LIVE.received_bytes(b"x").startswith("srv:")
    finally:
        forget(live, fresh)


def test_kept_arguments_transformer_refuses_a_live_subclass_with_its_own_init(
    tmp_path: Path,
) -> None:
    live = load_source(KV1, tmp_path, unique_name("kept_sub"))
    try:

        class Quiet(live.Channel):  # type: ignore[name-defined]
            def __init__(self, server: str) -> None:
                super().__init__(server)
                self.adj = None  # keeps something else than the argument

        quiet = Quiet("q")
        result = diff_sources({live.__name__: (KV1, KV2)}, category=None, accept_transformer=True)
        outcome, reason, errors = _run_under_load(live, result.spec)
        assert outcome != "applied"
        assert "overrides Channel.__init__" in (reason or ""), reason
        assert errors == []
        # nothing changed: no live instance got the new attributes, the old code runs
        assert not hasattr(live.LIVE, "inbuf") and not hasattr(quiet, "inbuf")
        assert live.LIVE.received_bytes(b"x").startswith("srv:")
    finally:
        forget(live)


def test_an_annotated_store_gets_a_transformer_a_store_made_twice_in_init_does_not() -> None:
    """kvserver annotates its attributes (`self._reader: Any = None`): an annotated store is a store
    like any other. But kvserver 71b3105b40 also assigns it again in the same __init__ (`if fast:
    self._reader = Reader()`): the first value is then not the one the new __init__ leaves, so no
    transformer is generated for it (the first version took the first top-level store and would have
    given every live instance None where a fresh one gets a Reader)."""
    v2 = V2.replace("self.hits = 0", "self.hits: int = 0")
    result = diff_sources({"m": (V1, v2)}, accept_transformer=True)
    assert result.spec.refusals == () and result.generated_transformer is not None
    assert "'hits', '0'" in result.generated_transformer
    twice = V2.replace(
        "self.hits = 0", "self.hits = 0\n        if FAST:\n            self.hits = 1"
    )
    result = diff_sources({"m": (V1, "FAST = True\n" + twice)}, accept_transformer=True)
    assert result.generated_transformer is None
    hits = [r for r in result.spec.refusals if "`self.hits`" in r.reason]
    assert len(hits) == 1 and "`--accept-transformer` cannot help" in hits[0].fix


TABLE_V1 = (
    "class Row:\n"
    "    def __init__(self, handler, flags):\n"
    "        self.handler, self.flags = handler, flags\n"
    "\n"
    "class State:\n"
    "    def __init__(self):\n"
    "        self.table = {'get': Row(len, ''), 'set': Row(str, 'write')}\n"
    "\n"
    "    def call(self, name):\n"
    "        return self.table[name].handler\n"
)
TABLE_V2 = TABLE_V1.replace(
    "'write')}\n",
    "'write')}\n"
    "        self._dispatch = {n: (r.handler, 'write' in r.flags) for n, r in self.table.items()}\n",
).replace("return self.table[name].handler", "return self._dispatch[name]")


def test_a_comprehension_over_self_gets_a_transformer_that_runs_it_on_live_instances(
    tmp_path: Path,
) -> None:
    """kvserver 8e169fe7ce: `self._dispatch = {n: (c.handler, ...) for n, c in self.table.items()}`.
    The comprehension's own targets are not locals of __init__ (the walker counted them as such, so
    no transformer was offered), and the generated hook evaluated the expression with `self` as a local
    of `eval`, which a comprehension cannot see: it now evaluates `lambda self: (expr)` over the live
    module's globals, so `self` reaches the comprehension through the closure, as in __init__. A
    comprehension or lambda reading a parameter of __init__ still gets none."""
    live = load_source(TABLE_V1, tmp_path, unique_name("comprehension"))
    fresh = load_source(TABLE_V2, tmp_path / "fresh", unique_name("comprehension_new"))
    try:
        state = live.State()
        result = diff_sources(
            {live.__name__: (TABLE_V1, TABLE_V2)}, category=None, accept_transformer=True
        )
        assert result.spec.refusals == () and result.generated_transformer is not None
        applied = apply_patch(result.spec, method="global", timeout=10)
        assert applied.outcome == "applied", applied.reason
        assert state._dispatch == {
            n: (r.handler, "write" in r.flags) for n, r in state.table.items()
        }
        assert [state.call(n) for n in ("get", "set")] == [
            fresh.State().call(n) for n in ("get", "set")
        ]
        assert revert_patch().ok
    finally:
        forget(live, fresh)
    for reads_a_parameter in (
        "{n: r for n, r in self.table.items() if n != skip}",
        "[lambda: skip]",
    ):
        v2 = TABLE_V2.replace("def __init__(self):", "def __init__(self, skip=None):").replace(
            "{n: (r.handler, 'write' in r.flags) for n, r in self.table.items()}", reads_a_parameter
        )
        v1 = TABLE_V1.replace("def __init__(self):", "def __init__(self, skip=None):")
        result = diff_sources({"m": (v1, v2)}, accept_transformer=True)
        assert result.generated_transformer is None, reads_a_parameter


FILE_V1 = (
    "import io\n\n\n"
    "def _is_seekable(f):\n"
    "    return hasattr(f, 'seekable') and f.seekable()\n\n\n"
    "class FileWrapper:\n"
    "    def __init__(self, file, block_size=8):\n"
    "        self.file = file\n"
    "        self.block_size = block_size\n\n"
    "    def read(self):\n"
    "        return self.file.read(self.block_size)\n"
)
FILE_V2 = FILE_V1.replace(
    "        self.block_size = block_size\n",
    "        self.block_size = block_size\n\n"
    "        if _is_seekable(self.file):\n"
    "            if hasattr(self.file, 'seekable'):\n"
    "                self.seekable = self.file.seekable\n"
    "            self.seek = self.file.seek\n"
    "            self.tell = self.file.tell\n",
)


def test_an_if_of_init_storing_only_new_attributes_is_run_again_on_live_instances(
    tmp_path: Path,
) -> None:
    """waitress e828cd5731: `if _is_seekable(self.file): ... self.seek = self.file.seek` in
    ReadOnlyFileBasedBuffer.__init__. The attributes are set only when the test holds: no expression
    gives a live instance what a fresh one has, but the statement does; the generated hook runs it
    again on each live instance (a seekable file gains seek/tell, a pipe-like one stays without)."""
    live = load_source(FILE_V1, tmp_path, unique_name("rerun_if"))
    fresh = load_source(FILE_V2, tmp_path / "fresh", unique_name("rerun_if_new"))

    class Pipe:
        def read(self, n: int) -> bytes:
            return b"p" * n

    try:
        seekable, pipe = live.FileWrapper(io.BytesIO(b"0123456789")), live.FileWrapper(Pipe())
        result = diff_sources({live.__name__: (FILE_V1, FILE_V2)}, accept_transformer=True)
        assert {
            r.reason.split("`")[1] for r in diff_sources({"m": (FILE_V1, FILE_V2)}).spec.refusals
        } == {
            "self.seekable",
            "self.seek",
            "self.tell",
        }
        assert result.spec.refusals == () and result.generated_transformer is not None
        applied = apply_patch(result.spec, method="global", timeout=10)
        assert applied.outcome == "applied", applied.reason
        for obj in (seekable, pipe):
            new = fresh.FileWrapper(obj.file)
            assert {k for k in vars(obj) if k != "file"} == {k for k in vars(new) if k != "file"}
        seekable.seek(4)
        assert seekable.read() == b"456789" and seekable.tell() == 10
        assert revert_patch().ok
        assert not hasattr(
            pipe, "seek"
        )  # (a revert keeps transformed data, as for every transformer)
    finally:
        forget(live, fresh)
    # neighbours: no transformer (the refusal stands)
    for v2 in (
        # the test reads a parameter of __init__
        FILE_V2.replace("if _is_seekable(self.file):", "if _is_seekable(file):"),
        # the statement also stores an attribute live instances have: running it again resets it
        FILE_V2.replace(
            "            self.tell = self.file.tell\n",
            "            self.tell = self.file.tell\n            self.block_size = 1\n",
        ),
        # the statement runs a call for its effect
        FILE_V2.replace(
            "            self.tell = self.file.tell\n",
            "            self.tell = self.file.tell\n            print('seekable')\n",
        ),
        # an earlier `return` may skip it
        FILE_V2.replace(
            "        self.file = file\n",
            "        self.file = file\n        if file is None:\n            return\n",
        ),
        # the attribute is also stored elsewhere in __init__
        FILE_V2.replace(
            "        self.block_size = block_size\n\n",
            "        self.block_size = block_size\n        self.seek = None\n\n",
        ),
    ):
        result = diff_sources({"m": (FILE_V1, v2)}, accept_transformer=True)
        assert result.generated_transformer is None
        assert any(r.kind is RefusalKind.INSTANCE_ATTRIBUTE for r in result.spec.refusals)


def test_a_transformer_may_read_a_name_the_patch_adds_but_not_one_it_changes_or_take_over_state() -> (
    None
):
    """Found by applying the transformer commits live (scripts/live_apply_history.py --transformers,
    session 9). The hook ran before the swap bound the patch's module-level names: h11 ec0ff35e9fba
    (`self._delimiter_regex = delimiter_regex`, a new module-level regex) raised NameError live. Since
    session 10 the names a patch adds to modules are bound before the hook runs (applied below); a
    value or function the patch changes would still be its old version there: no transformer.
    waitress d060d2424292 and 5bd69e954571 replace `thread_mgmt_lock`/`queue_lock` by new locks and
    conditions: fresh ones on a live dispatcher whose threads wait on the old ones failed requests. No
    transformer for those."""
    v1 = (
        "import re\n\n"
        "LIMIT = 4\n\n\n"
        "class Buffer:\n"
        "    def __init__(self):\n"
        "        self.data = b''\n"
        "        self.lock = None\n\n"
        "    def split(self):\n"
        "        return self.data.split(b'\\n')\n"
    )
    new_name = v1.replace("LIMIT = 4\n", "LIMIT = 4\nDELIM = re.compile(b'\\\\r?\\\\n')\n").replace(
        "        self.lock = None\n", "        self.lock = None\n        self.delim = DELIM\n"
    )
    changed = v1.replace("LIMIT = 4", "LIMIT = 8").replace(
        "        self.lock = None\n", "        self.lock = None\n        self.cap = [0] * LIMIT\n"
    )
    moved = v1.replace(
        "        self.lock = None\n", "        self.cv = __import__('threading').Condition()\n"
    )
    unchanged = v1.replace(
        "        self.lock = None\n", "        self.lock = None\n        self.cap = [0] * LIMIT\n"
    )
    helper = v1.replace("LIMIT = 4\n", "LIMIT = 4\n\n\ndef cap():\n    return [0] * LIMIT\n")
    calls_changed = helper.replace("* LIMIT\n", "* (LIMIT + 1)\n").replace(
        "        self.lock = None\n", "        self.lock = None\n        self.cap = cap()\n"
    )
    calls_same = helper.replace(
        "        self.lock = None\n", "        self.lock = None\n        self.cap = cap()\n"
    )
    for before, v2, generated in (
        (v1, new_name, True),
        (v1, changed, False),
        (v1, moved, False),
        (v1, unchanged, True),
        (helper, calls_changed, False),  # a function the patch changes: its old code would run
        (helper, calls_same, True),
        # a new global shadowing a builtin is bound by the swap only: the hook would read the builtin
        (v1, new_name.replace("DELIM", "format"), False),
    ):
        result = diff_sources({"m": (before, v2)}, accept_transformer=True)
        assert (result.generated_transformer is not None) is generated, v2
        if not generated:
            refused = [r for r in result.spec.refusals if r.kind is RefusalKind.INSTANCE_ATTRIBUTE]
            assert refused and all("--accept-transformer` cannot help" in r.fix for r in refused)


READS_V1 = (
    "import re\n\n"
    "LIMIT = 4\n\n\n"
    "class Buffer:\n"
    "    def __init__(self):\n"
    "        self.data = b''\n\n"
    "    def received_bytes(self, data):\n"
    "        self.data = (self.data + data)[-8:]\n"
    "        return len(self.data)\n\n\n"
    "LIVE = Buffer()\n"
)
# h11 ec0ff35e9fba's shape: a new module-level regex the new __init__ stores (and a value it does
# not change)
READS_V2 = (
    READS_V1.replace("LIMIT = 4\n", "LIMIT = 4\nDELIM = re.compile(b'\\\\r?\\\\n')\n")
    .replace(
        "        self.data = b''\n",
        "        self.data = b''\n        self.delim = DELIM\n        self.cap = [0] * LIMIT\n",
    )
    .replace(
        "        return len(self.data)\n",
        "        return (len(self.data), self.delim.pattern, len(self.cap))\n",
    )
)


def test_a_transformer_reading_a_name_the_patch_adds_applies_live_like_a_fresh_import(
    tmp_path: Path,
) -> None:
    """The names a patch adds to modules are bound before the generated hook runs (session 10):
    `DELIM`, which the patch adds, is the new version's object when the hook evaluates it on the live
    instance; two managed threads use it throughout and none sees an error."""
    live = load_source(READS_V1, tmp_path, unique_name("reads_new"))
    fresh = load_source(READS_V2, tmp_path / "fresh", unique_name("reads_new_fresh"))
    try:
        result = diff_sources({live.__name__: (READS_V1, READS_V2)}, accept_transformer=True)
        assert result.spec.refusals == () and result.generated_transformer is not None
        outcome, reason, errors = _run_under_load(live, result.spec)
        assert outcome == "applied", reason
        assert errors == []
        assert live.LIVE.delim is live.DELIM and live.LIVE.cap == fresh.Buffer().cap == [0] * 4
        assert live.LIVE.received_bytes(b"x")[1:] == fresh.Buffer().received_bytes(b"x")[1:]
        assert revert_patch().ok
    finally:
        forget(live, fresh)


def test_a_transformer_reaches_the_instances_gc_freeze_froze(tmp_path: Path) -> None:
    """kvserver freezes its heap at start-up (gc.freeze()), its EventLoop included, and
    gc.get_objects() does not list frozen objects: the generated transformer skipped them, the patch
    applied, and the live loop then lacked the new attribute (kvserver 34145cf84b: every connection
    failed on `self.begin_batch`; found by the live run, session 11). It now finds them through the
    referrer search that class replacement uses (migrate.live_instances)."""
    import gc

    live = load_source(V1, tmp_path, unique_name("frozen"))
    try:
        frozen = [live.Counter("frozen")]
        gc.freeze()
        try:
            later = live.Counter("later")
            result = diff_sources({live.__name__: (V1, V2)}, category=None, accept_transformer=True)
            applied = apply_patch(result.spec, method="global", timeout=10)
            assert applied.outcome == "applied", applied.reason
            for counter in (frozen[0], later, live.LIVE):
                assert {"lock", "hits"} <= set(vars(counter))
            assert frozen[0].hit() == "frozen:1"
        finally:
            gc.unfreeze()
        assert revert_patch().ok
    finally:
        forget(live)
