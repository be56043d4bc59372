"""SortedSet against a naive model (a dict sorted on every query), driven by hypothesis."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from kvserver.types.zset import ABOVE_ALL_MEMBERS, SortedSet

members = st.binary(min_size=0, max_size=3)
scores = st.one_of(
    st.integers(-5, 5).map(float),
    st.sampled_from([float("inf"), float("-inf"), 0.5, -0.0]),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), members, scores),
        st.tuples(st.just("rem"), members, scores),
        st.tuples(st.just("popmin"), st.integers(0, 3), scores),
        st.tuples(st.just("popmax"), st.integers(0, 3), scores),
    ),
    max_size=80,
)


def model_sorted(model: dict[bytes, float]) -> list[tuple[bytes, float]]:
    return sorted(model.items(), key=lambda kv: (kv[1], kv[0]))


def model_index_range(items: list, start: int, stop: int) -> list:
    n = len(items)
    if start < 0:
        start = max(start + n, 0)
    if stop < 0:
        stop += n
    return items[start : stop + 1] if start <= stop else []


@settings(max_examples=200, deadline=None)
@given(operations=ops, start=st.integers(-8, 8), stop=st.integers(-8, 8))
def test_sorted_set_matches_model(operations: list, start: int, stop: int) -> None:
    z = SortedSet()
    model: dict[bytes, float] = {}
    for op, a, b in operations:
        if op == "add":
            assert z.add(a, b) == (a not in model)
            model[a] = b
        elif op == "rem":
            assert z.remove(a) == (a in model)
            model.pop(a, None)
        elif op == "popmin":
            expected = model_sorted(model)[:a]
            assert z.pop_min(a) == expected
            for m, _ in expected:
                del model[m]
        else:
            expected = model_sorted(model)[::-1][:a]
            assert z.pop_max(a) == expected
            for m, _ in expected:
                del model[m]
    items = model_sorted(model)
    assert list(z) == items
    assert len(z) == len(model)
    for rank, (m, s) in enumerate(items):
        assert z.rank(m) == rank
        assert z.rank(m, reverse=True) == len(items) - 1 - rank
        assert z.score(m) == s
    assert z.rank(b"not-a-member-xx") is None
    assert z.range_by_index(start, stop) == model_index_range(items, start, stop)
    assert z.range_by_index(start, stop, reverse=True) == model_index_range(
        items[::-1], start, stop
    )


bounds = st.tuples(
    st.integers(-6, 6).map(float) | st.just(math.inf) | st.just(-math.inf), st.booleans()
)


@settings(max_examples=200, deadline=None)
@given(
    pairs=st.dictionaries(members, scores, max_size=30),
    lo=bounds,
    hi=bounds,
    offset=st.integers(0, 5),
    count=st.integers(-1, 5),
    reverse=st.booleans(),
)
def test_score_ranges_match_model(pairs, lo, hi, offset, count, reverse) -> None:
    z = SortedSet(pairs.items())
    (lo_v, lo_ex), (hi_v, hi_ex) = lo, hi

    def inside(s: float) -> bool:
        above = s > lo_v if lo_ex else s >= lo_v
        below = s < hi_v if hi_ex else s <= hi_v
        return above and below

    matching = [(m, s) for m, s in model_sorted(pairs) if inside(s)]
    assert z.count_by_score(lo_v, lo_ex, hi_v, hi_ex) == len(matching)
    ordered = matching[::-1] if reverse else matching
    window = ordered[offset:] if count < 0 else ordered[offset : offset + count]
    assert z.range_by_score(lo_v, lo_ex, hi_v, hi_ex, reverse, offset, count) == window


@settings(max_examples=200, deadline=None)
@given(
    names=st.sets(members, max_size=30),
    lo=st.tuples(st.one_of(st.none(), members), st.booleans()),
    hi=st.tuples(st.one_of(st.none(), members), st.booleans()),
    reverse=st.booleans(),
)
def test_lex_ranges_match_model_when_scores_are_equal(names, lo, hi, reverse) -> None:
    z = SortedSet((m, 0.0) for m in names)
    (lo_v, lo_ex), (hi_v, hi_ex) = lo, hi

    def inside(m: bytes) -> bool:
        above = lo_v is None or (m > lo_v if lo_ex else m >= lo_v)
        below = hi_v is None or (m < hi_v if hi_ex else m <= hi_v)
        return above and below

    matching = [(m, 0.0) for m in sorted(names) if inside(m)]
    assert z.count_by_lex(lo_v, lo_ex, hi_v, hi_ex) == len(matching)
    expected = matching[::-1] if reverse else matching
    assert z.range_by_lex(lo_v, lo_ex, hi_v, hi_ex, reverse) == expected


def test_above_all_probe_is_never_equal_to_a_member() -> None:
    z = SortedSet([(b"", 0.0), (b"a", 0.0)])
    # '+' as a lower bound: nothing lies above it, not even the empty member.
    assert z.range_by_lex(ABOVE_ALL_MEMBERS, False, None, False) == []


def test_rescoring_moves_the_member() -> None:
    z = SortedSet([(b"a", 1.0), (b"b", 2.0)])
    assert z.add(b"a", 3.0) is False
    assert list(z) == [(b"b", 2.0), (b"a", 3.0)]
    assert z.rank(b"a") == 1
