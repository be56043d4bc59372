"""The corpus's own rules, below the CLI: which modules are tests, the bounds on one commit (time,
memory), and the figures (sole kinds, the widening order)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import PurePosixPath

import pytest

from livepatch.corpus.classify import CommitResult, ErrorKind, Outcome, classify
from livepatch.corpus.history import is_test_module
from livepatch.corpus.summary import summarise
from livepatch.patch.package import PackageVersion


@pytest.mark.parametrize(
    ("path", "is_test"),
    [
        ("tests/test_cart.py", True),
        ("tests/__init__.py", True),
        ("tests", True),
        ("sub/testing/helpers.py", True),
        ("test_cart.py", True),
        ("cart_test.py", True),
        ("conftest.py", True),
        ("cart.py", False),
        ("testimony.py", False),
        ("contest/cart.py", False),
        ("__init__.py", False),
    ],
)
def test_test_modules(path: str, is_test: bool) -> None:
    assert is_test_module(PurePosixPath(path)) is is_test


def _big(n: int, ret: int) -> PackageVersion:
    body = "".join(f"def f{i}(x):\n    return x + {ret}\n\n" for i in range(n))
    return PackageVersion("big", "test", {"big": body})


def test_a_commit_over_its_time_is_an_error_and_the_child_is_gone() -> None:
    old, new = _big(3000, 1), _big(3000, 2)  # a few hundred ms of diffing at least
    result = classify("a" * 40, "slow", old, new, timeout=0.001)
    assert result.outcome is Outcome.ERROR and result.error_kind is ErrorKind.TIMEOUT
    assert "longer than 0.001 s" in result.reason
    small = classify("b" * 40, "small", _big(2, 1), _big(2, 2), timeout=30)
    assert small.outcome is Outcome.ACCEPTED and len(small.functions) == 2


_MEMORY_PROBE = """
import json
from livepatch.corpus.classify import classify
from livepatch.patch.package import PackageVersion

def big(n, ret):
    body = "".join(f"def f{i}(x):\\n    return x + {ret}\\n\\n" for i in range(n))
    return PackageVersion("big", "test", {"big": body})

fat = classify("c" * 40, "fat", big(3000, 1), big(3000, 2), memory=1 << 20)  # 1 MiB: below any real run
ok = classify("d" * 40, "ok", big(1, 1), big(1, 2))
print(json.dumps([fat.outcome, fat.error_kind, fat.reason, ok.outcome]))
"""


def test_a_commit_over_its_memory_is_an_error() -> None:
    # In a fresh interpreter: in the test process the child inherits whatever heap earlier tests freed,
    # and a diff that fits in those holes never meets the address-space limit.
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    outcome, error_kind, reason, next_outcome = json.loads(proc.stdout)
    assert outcome == Outcome.ERROR
    # a MemoryError, or the SystemError CPython's compile() raises when it runs out of memory
    assert (error_kind, reason) == (ErrorKind.MEMORY, "out of memory") or (
        error_kind == ErrorKind.INTERNAL and reason.startswith("SystemError")
    ), (error_kind, reason)
    # the parent is unharmed, and the next commit is classified normally
    assert next_outcome == Outcome.ACCEPTED


def _refused(sha: str, *kinds: str) -> CommitResult:
    refusals = [{"kind": k, "module": "m", "qualname": "q", "reason": f"{k} here"} for k in kinds]
    return CommitResult(sha, sha, Outcome.REFUSED, refusals=refusals)


def test_sole_kinds_and_the_widening_order() -> None:
    results = [
        CommitResult("s0", "docs", Outcome.SKIPPED),
        CommitResult("a1", "fix", Outcome.ACCEPTED),
        CommitResult("e1", "comment", Outcome.EMPTY),
        _refused("r1", "module-state"),
        _refused("r2", "module-state"),
        _refused("r3", "module-state", "import"),
        _refused("r4", "instance-attribute", "import"),
        _refused("r5", "closure"),
    ]
    s = summarise(results)
    assert s.seen == 8 and s.changing == 7
    assert s.accepted_pct == round(100 / 7, 1)
    assert s.accepted_of_code_pct == round(100 / 6, 1)
    by_kind = {k.kind: (k.commits, k.sole, k.example) for k in s.refusals}
    assert by_kind == {
        "module-state": (3, 2, "r1"),
        "import": (2, 0, "r3"),
        "instance-attribute": (1, 0, "r4"),
        "closure": (1, 1, "r5"),
    }
    assert [k.kind for k in s.refusals] == [  # most commits first, then most sole, then by name
        "module-state",
        "import",
        "closure",
        "instance-attribute",
    ]
    # module-state unlocks 2; then import unlocks r3 (1) and is in 2 commits; then
    # instance-attribute and closure unlock one each (tie on both counts: by name)
    assert s.widening == [
        ("module-state", round(300 / 7, 1)),
        ("import", round(400 / 7, 1)),
        ("closure", round(500 / 7, 1)),
        ("instance-attribute", round(600 / 7, 1)),
    ]


@pytest.mark.timeout(10)
def test_widening_ends_when_no_single_kind_unlocks_a_commit() -> None:
    # regression: a kind already widened was chosen again (it unlocked nothing, but was in most
    # commits), forever
    s = summarise([_refused("r1", "a", "b", "c"), _refused("r2", "a", "b", "d")])
    assert s.widening == [("a", 0.0), ("b", 0.0), ("c", 50.0), ("d", 100.0)]
