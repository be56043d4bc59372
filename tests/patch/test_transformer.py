"""`--accept-transformer`: a new instance attribute whose value the new __init__ computes from globals
and self is set on every live instance by a generated transform hook, applied for real (apply_patch with
global quiescence, managed worker threads using the live instance until they park)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from livepatch import apply_patch, managed_thread, quiescence_point, revert_patch
from livepatch.patch.diff import diff_sources
from livepatch.patch.model import Category, RefusalKind
from tests.fixtures.livefixtures import forget, load_source, unique_name

CASE = Path(__file__).resolve().parent / "values_corpus_transformer" / "counter"
V1 = (CASE / "v1.py").read_text()
V2 = (CASE / "v2.py").read_text()


def test_without_confirmation_the_new_attributes_are_refused_and_the_fix_names_the_flag() -> None:
    spec = diff_sources({"m": (V1, V2)}).spec
    assert [r.kind for r in spec.refusals] == [RefusalKind.INSTANCE_ATTRIBUTE] * 2
    assert all("--accept-transformer" in r.fix for r in spec.refusals)


def test_no_transformer_when_an_attribute_comes_from_a_constructor_argument() -> None:
    v2 = V2.replace("self.hits = 0", "self.hits = 0\n        self.owner = name.upper()")
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
