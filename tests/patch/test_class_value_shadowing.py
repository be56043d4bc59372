"""A class-level `X` and the instances' own `X` (session 11, harness11's state check): a patch that
changes which instances store their own `X` is refused, because live instances (made by the old
`__init__`) and fresh ones (made by the new one) would read different values. waitress 36240c88b1 and
603d2c12ce did this to `Adjustments.clear_untrusted_proxy_headers` (whether untrusted proxy headers are
stripped); the differ accepted both."""

from __future__ import annotations

from livepatch.patch.diff import diff_sources
from livepatch.patch.model import RefusalKind

OLD = """
class Settings:
    strip_headers = True
    proxy_count = 1

    def __init__(self, trusted=None):
        self.trusted = trusted
        if trusted is not None:
            self.strip_headers = False

    def strips(self):
        return self.strip_headers
"""

# 36240c88b1's shape: the new __init__ always stores it
ALWAYS = OLD.replace(
    "        self.trusted = trusted\n",
    "        self.trusted = trusted\n        self.strip_headers = trusted is None\n",
)

# 603d2c12ce's shape: the new code never stores it
NEVER = OLD.replace("        if trusted is not None:\n            self.strip_headers = False\n", "")


def refusals(old: str, new: str) -> list[tuple[RefusalKind, str]]:
    spec = diff_sources({"m": (old, new)}).spec
    return [(r.kind, r.reason) for r in spec.refusals]


def live_and_fresh(old: str, new: str, *args: object) -> tuple[bool, bool]:
    """What a live instance (made by the old code, then given the new methods and class values)
    and a fresh one read: the divergence the refusal prevents."""
    old_ns: dict[str, object] = {}
    new_ns: dict[str, object] = {}
    exec(old, old_ns)
    exec(new, new_ns)
    old_cls, new_cls = old_ns["Settings"], new_ns["Settings"]
    live = old_cls(*args)  # type: ignore[operator]
    for name, value in vars(new_cls).items():  # what a patch does to the live class
        if not name.startswith("__"):
            setattr(old_cls, name, value)
    return live.strips(), new_cls(*args).strips()  # type: ignore[operator]


def test_an_init_that_now_always_stores_a_class_valued_attribute_is_refused() -> None:
    assert live_and_fresh(OLD, ALWAYS.replace("trusted is None", "False")) == (True, False)
    got = refusals(OLD, ALWAYS)
    assert [k for k, _ in got] == [RefusalKind.INSTANCE_ATTRIBUTE], got
    assert "always stores `self.strip_headers`" in got[0][1]


def test_code_that_no_longer_stores_a_class_valued_attribute_is_refused() -> None:
    assert live_and_fresh(OLD, NEVER, "proxy") == (False, True)
    got = refusals(OLD, NEVER)
    assert [k for k, _ in got] == [RefusalKind.INSTANCE_ATTRIBUTE], got
    assert "no longer stores `self.strip_headers`" in got[0][1]


def test_the_same_constant_on_both_sides_is_no_refusal() -> None:
    # the instance stores exactly the class value: live and fresh read the same
    same = OLD.replace(
        "        self.trusted = trusted\n",
        "        self.trusted = trusted\n        self.proxy_count = 1\n",
    )
    assert refusals(OLD, same) == []
    assert refusals(same, OLD) == []


def test_unchanged_stores_and_method_changes_stay_accepted() -> None:
    assert (
        refusals(OLD, OLD.replace("return self.strip_headers", "return bool(self.strip_headers)"))
        == []
    )


CHANNEL = """
import threading
from collections import deque


class Channel:
    def __init__(self):
        self.lock = threading.RLock()
        self.queue = []
        self.timeout = 30
        self.name = "c"

    def close(self):
        with self.lock:
            self.queue.clear()
"""


def test_an_attribute_made_as_another_kind_of_object_is_refused() -> None:
    # waitress 5583715063: the live channel keeps its RLock, the new close() calls notify()
    lock = CHANNEL.replace("threading.RLock()", "threading.Condition()").replace(
        "self.queue.clear()", "self.queue.clear()\n            self.lock.notify()"
    )
    got = refusals(CHANNEL, lock)
    assert [k for k, _ in got] == [RefusalKind.INSTANCE_ATTRIBUTE], got
    assert "`self.lock` a `threading.Condition`" in got[0][1]
    assert "a `threading.RLock`" in got[0][1]
    got = refusals(CHANNEL, CHANNEL.replace("self.queue = []", "self.queue = deque()"))
    assert [k for k, _ in got] == [RefusalKind.INSTANCE_ATTRIBUTE], got


def test_the_same_kind_made_differently_stays_accepted() -> None:
    for new in (
        CHANNEL.replace("self.timeout = 30", "self.timeout = 60.0"),
        CHANNEL.replace('self.name = "c"', 'self.name = "channel"'),
        CHANNEL.replace("self.queue = []", "self.queue = [None]"),
        CHANNEL.replace("threading.RLock()", "threading.RLock(  )"),
    ):
        assert refusals(CHANNEL, new) == [], new


def test_a_store_under_other_conditions_is_refused() -> None:
    # 36240c88b1's shape: the store's condition changes (no longer only with a trusted proxy)
    other = OLD.replace("        if trusted is not None:\n", "        if trusted != 'any':\n")
    assert live_and_fresh(OLD, other) == (True, False)
    got = refusals(OLD, other)
    assert [k for k, _ in got] == [RefusalKind.INSTANCE_ATTRIBUTE], got
    assert "under other conditions" in got[0][1]


def test_a_value_a_method_returns_is_of_no_known_kind() -> None:
    old = CHANNEL.replace('self.name = "c"', "self.name = self.make_name()") + (
        "\n    def make_name(self):\n        return 'c'\n\n    def other_name(self):\n        return 'd'\n"
    )
    assert refusals(old, old.replace("self.make_name()", "self.other_name()")) == []


def test_a_function_call_is_of_no_known_kind() -> None:
    # kvserver b29989ec9d: `min(...)` -> `_fast_limit(...)`, both numbers
    old = CHANNEL.replace("self.timeout = 30", "self.timeout = min(30, 40)")
    assert (
        refusals(
            old, old.replace("min(30, 40)", "_limit(30)") + "\n\ndef _limit(n):\n    return n\n"
        )
        == []
    )
    # but a class named in CapWords is a kind
    got = refusals(
        CHANNEL,
        CHANNEL.replace("self.queue = []", "self.queue = Queue()")
        + "\n\nclass Queue(list):\n    pass\n",
    )
    assert [k for k, _ in got] == [RefusalKind.INSTANCE_ATTRIBUTE], got
