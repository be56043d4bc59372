"""The runtime tests' fixture: a fresh Runtime per test (core.py), so no test reasons relative to a
generation, a registry or a history an earlier test left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from livepatch.runtime.core import Runtime


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = Runtime()
    yield runtime
    # A test must not leave a transition running (a detached reversal would outlive it unnoticed).
    assert runtime.wait_idle(10), "a transition was still running when the test ended"
