"""livepatch.mve.coverage: a tripwire reports a function's first call and then gets out of the way
(the real code back in place, same function object), whatever the function's shape."""

from __future__ import annotations

from collections.abc import Iterator
from types import FunctionType
from typing import Any, cast

from livepatch.mve.coverage import _GLOBAL, Coverage


def _closure() -> Any:
    offset = 5

    def inner(a: int, b: int = 2, *, c: int = 3) -> int:
        return a + b + c + offset

    return inner


class Base:
    def m(self, v: int) -> int:
        return v * 2


class Child(Base):
    def m(self, v: int) -> int:
        return super().m(v) + 1  # needs the __class__ cell: the real code must run in its own frame


def gen(n: int) -> Iterator[int]:
    yield from range(n)


def test_tripwires_see_the_first_call_and_leave_the_real_code() -> None:
    inner = _closure()
    real: dict[Any, Any] = {f: f.__code__ for f in (inner, Child.m, gen)}
    cov = Coverage([inner, cast(FunctionType, Child.m), cast(FunctionType, gen)])
    assert cov.uncovered() == ["Child.m", "_closure.<locals>.inner", "gen"]
    assert all(f.__code__ is not code for f, code in real.items())  # armed
    assert inner(1, c=10) == 18
    assert cov.uncovered() == ["Child.m", "gen"]
    assert inner.__code__ is real[inner]
    assert Child().m(3) == 7 and cov.uncovered() == ["gen"]
    assert list(gen(3)) == [0, 1, 2] and cov.uncovered() == []
    assert all(f.__code__ is code for f, code in real.items())
    assert Child().m(4) == 9 and inner(1) == 11
    cov.disarm()
    assert _GLOBAL not in globals()


def test_disarm_puts_back_what_never_ran() -> None:
    code = gen.__code__
    cov = Coverage([cast(FunctionType, gen)] * 2)  # the same function twice is one tripwire
    assert cov.uncovered() == ["gen"]
    cov.disarm()
    assert gen.__code__ is code and cov.uncovered() == [] and _GLOBAL not in globals()
    assert list(gen(2)) == [0, 1]
