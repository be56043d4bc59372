"""Strategies and bounds shared by the fuzz tests (test_fuzz_*.py) and scripts/fuzz_livepatch.py.

CI runs FUZZ_EXAMPLES examples per property (a few seconds each); the script sets
LIVEPATCH_FUZZ_EXAMPLES to run many more.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ_EXAMPLES = int(os.environ.get("LIVEPATCH_FUZZ_EXAMPLES", "150"))
FUZZ_TIMEOUT_S = 120 + FUZZ_EXAMPLES // 5  # per test: CI's 150 examples take a few seconds
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=os.environ.get("LIVEPATCH_FUZZ_RANDOM") != "1",  # CI: reproducible
)

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)

# Values that stress the decoder: deep nesting, long digit strings, odd constants, control characters.
HOSTILE_JSON_TEXT = st.one_of(
    st.integers(1, 200_000).map(lambda n: "[" * n),
    st.integers(1, 200).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 20_000).map(lambda n: "9" * n),
    st.integers(1, 20_000).map(lambda n: "1e" + "9" * n),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999999", '"\\ud800"', '"\\u0000"']),
    st.text(max_size=50).map(lambda s: '"' + s),
)


def set_path(doc: Any, path: list[Any], value: Any) -> Any:
    """A copy-free edit: doc[path[0]]...[path[-1]] = value (path items valid for doc's shape)."""
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def paths(doc: Any, prefix: list[Any] | None = None) -> list[list[Any]]:
    """Every path to a value inside `doc` (dict keys and list indexes)."""
    prefix = prefix or []
    out: list[list[Any]] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append([*prefix, k])
            out.extend(paths(v, [*prefix, k]))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append([*prefix, i])
            out.extend(paths(v, [*prefix, i]))
    return out
