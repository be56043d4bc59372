"""limits.value_depth against a plain recursive definition, and its early stop at a limit."""

from __future__ import annotations

import random
from typing import Any

import pytest

from livepatch.patch.limits import MAX_JSON_DEPTH, JSONLimitError, loads_json, value_depth


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _random_value(rng: random.Random, budget: int) -> Any:
    roll = rng.random()
    if budget <= 0 or roll < 0.3:
        return rng.choice([1, "s", None, 2.5, True])
    children = [_random_value(rng, budget - rng.randint(1, 3)) for _ in range(rng.randint(0, 4))]
    if roll < 0.65:
        return children
    return {f"k{i}": c for i, c in enumerate(children)}


def test_value_depth_is_the_nesting_depth() -> None:
    rng = random.Random(9)
    values = [_random_value(rng, 12) for _ in range(500)]
    values += [0, "x", [], {}, [[]], {"a": [1, {"b": {}}]}, [[[[[]]]], 1]]
    for v in values:
        assert value_depth(v) == _depth(v), v


def test_value_depth_stops_past_its_limit() -> None:
    deep: list[Any] = []
    for _ in range(500):
        deep = [deep]
    assert value_depth(deep) == 501
    assert value_depth(deep, 64) == 65
    assert value_depth([[1]], 64) == 2


def test_a_decodable_document_over_the_limit_gets_its_whole_depth() -> None:
    text = "[" * 300 + "]" * 300  # decoded by json (under the recursion limit), then refused
    with pytest.raises(
        JSONLimitError, match=f"nested 300 levels deep, over the limit of {MAX_JSON_DEPTH}"
    ):
        loads_json(text)
    calls: list[None] = []
    assert loads_json("[" * 64 + "]" * 64, lambda: calls.append(None)) is not None
    assert len(calls) == 1 + 64  # after the decoding, after each level of the depth check


def test_between_is_called_as_each_object_is_decoded() -> None:
    """The control thread's pacer gets its turns inside the decoding of a request, not only after it."""
    seen: list[int] = []
    text = '{"a": [{"b": 1}, {"c": {"d": 2}}], "e": {}}'
    value = loads_json(text, lambda: seen.append(1))
    assert value == loads_json(text)
    # 5 objects decoded, 1 after the decoding, 4 levels of the depth walk
    assert len(seen) == 5 + 1 + 4
