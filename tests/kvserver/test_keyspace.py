"""Keyspace directly: lazy and active expiry, TTL bookkeeping, SCAN's guarantee, RANDOMKEY."""

from __future__ import annotations

import pickle
from collections import deque

from hypothesis import given, settings
from hypothesis import strategies as st

from kvserver.keyspace import MAX_SCANS, SCAN_MEMORY_FACTOR, Keyspace, type_name
from kvserver.types.zset import SortedSet


def test_lookup_store_delete_and_len() -> None:
    ks = Keyspace()
    assert ks.lookup(b"k", 0) is None
    ks.store(b"k", b"v")
    assert ks.lookup(b"k", 0) == b"v"
    assert len(ks) == 1
    assert ks.delete(b"k") is True
    assert ks.delete(b"k") is False
    assert len(ks) == 0


def test_lazy_expiry_deletes_on_lookup_and_len_counts_unreaped_keys() -> None:
    ks = Keyspace()
    ks.store(b"a", b"1", expire_at_ms=1000)
    ks.store(b"b", b"2")
    assert ks.expires_count() == 1
    assert ks.lookup(b"a", 999) == b"1"
    assert len(ks) == 2  # expired-but-unreaped keys count, as in Redis
    assert ks.lookup(b"a", 1000) is None  # expires exactly at its time
    assert len(ks) == 1
    assert ks.expires_count() == 0


def test_store_replaces_ttl_and_replace_keeps_it() -> None:
    ks = Keyspace()
    ks.store(b"k", b"1", expire_at_ms=500)
    ks.replace(b"k", b"2")
    assert ks.get_expire(b"k") == 500
    ks.store(b"k", b"3")
    assert ks.get_expire(b"k") is None
    ks.set_expire(b"k", 700)
    assert ks.persist(b"k") is True
    assert ks.persist(b"k") is False
    assert ks.lookup(b"k", 10**15) == b"3"


def test_active_expire_cycle_is_bounded_and_skips_stale_entries() -> None:
    ks = Keyspace()
    for i in range(100):
        ks.store(b"k%d" % i, b"v", expire_at_ms=1000 + i)
    # Re-time half of them far in the future: their old heap entries become stale.
    for i in range(0, 100, 2):
        ks.set_expire(b"k%d" % i, 10**9)
    ks.store(b"k1", b"fresh")  # TTL removed by a plain store: stale too
    assert ks.active_expire_cycle(now_ms=999, max_keys=1000) == 0
    assert ks.active_expire_cycle(now_ms=5000, max_keys=10) == 10
    assert ks.active_expire_cycle(now_ms=5000, max_keys=1000) == 39  # odd keys minus k1, minus 10
    assert len(ks) == 51
    assert ks.lookup(b"k1", 5000) == b"fresh"
    assert all(ks.lookup(b"k%d" % i, 5000) == b"v" for i in range(0, 100, 2))


def test_expiry_heap_does_not_grow_without_bound_under_ttl_rewrites() -> None:
    ks = Keyspace()
    ks.store(b"k", b"v")
    for when in range(10_000):
        ks.set_expire(b"k", 10**6 + when)
    assert len(ks._heap) <= 130  # rebuilt whenever stale entries dominate
    assert ks.active_expire_cycle(10**7, 10) == 1


def test_clear_and_items_snapshot() -> None:
    ks = Keyspace()
    ks.store(b"a", b"1", 5)
    ks.store(b"b", deque([b"x"]))
    assert sorted(ks.items(), key=lambda t: t[0]) == [(b"a", b"1", 5), (b"b", deque([b"x"]), None)]
    ks.clear()
    assert len(ks) == 0 and ks.expires_count() == 0
    assert list(ks.items()) == []


def test_type_names() -> None:
    assert type_name(b"") == b"string"
    assert type_name(deque()) == b"list"
    assert type_name({}) == b"hash"
    assert type_name(set()) == b"set"
    assert type_name(SortedSet()) == b"zset"


def test_values_pickle_round_trip() -> None:
    z = SortedSet([(b"a", 1.5), (b"b", float("-inf"))])
    assert pickle.loads(pickle.dumps(z)) == z
    assert list(pickle.loads(pickle.dumps(z))) == [(b"b", float("-inf")), (b"a", 1.5)]


def _full_scan(ks: Keyspace, count: int, between: list[tuple[str, bytes]]) -> list[bytes]:
    """Walk a scan to the end, applying one queued mutation between calls."""
    seen: list[bytes] = []
    cursor = 0
    steps = 0
    while True:
        cursor, keys = ks.scan(cursor, count)
        seen.extend(keys)
        if between:
            op, key = between.pop(0)
            if op == "add":
                ks.store(key, b"x")
            else:
                ks.delete(key)
        steps += 1
        assert steps < 10_000, "scan did not terminate"
        if cursor == 0:
            return seen


@settings(max_examples=60, deadline=None)
@given(
    initial=st.sets(st.integers(0, 300), max_size=200),
    mutations=st.lists(
        st.tuples(st.sampled_from(["add", "del"]), st.integers(0, 600)), max_size=100
    ),
    count=st.integers(1, 40),
)
def test_scan_returns_every_key_present_for_the_whole_scan(
    initial: set[int], mutations: list[tuple[str, int]], count: int
) -> None:
    ks = Keyspace()
    for i in initial:
        ks.store(b"%d" % i, b"v")
    queued = [(op, b"%d" % i) for op, i in mutations]
    touched = {k for _, k in queued}
    stable = {b"%d" % i for i in initial} - touched
    seen = _full_scan(ks, count, queued)
    assert stable <= set(seen)
    assert len(seen) == len(set(seen))  # a snapshot walk never repeats a key


def test_scan_cursor_survives_many_other_scans_and_count_is_respected() -> None:
    ks = Keyspace()
    for i in range(50):
        ks.store(b"%d" % i, b"v")
    cursor, first = ks.scan(0, 10)
    assert len(first) == 10 and cursor != 0
    for _ in range(MAX_SCANS - 1):
        ks.scan(0, 1)  # other clients' scans, abandoned
    seen = list(first)
    while cursor:
        cursor, keys = ks.scan(cursor, 10)
        seen += keys
    assert sorted(seen) == sorted(b"%d" % i for i in range(50))


def test_random_key_returns_live_keys_only() -> None:
    ks = Keyspace()
    assert ks.random_key(0) is None
    for i in range(200):
        ks.store(b"dead%d" % i, b"v", expire_at_ms=10)
    ks.store(b"alive", b"v")
    assert ks.random_key(100) == b"alive"  # all the others have expired
    for i in range(20):
        ks.store(b"k%d" % i, b"v")
    drawn = {ks.random_key(100) for _ in range(300)}
    assert drawn <= {b"alive"} | {b"k%d" % i for i in range(20)}
    assert len(drawn) > 5


def test_abandoned_scans_hold_bounded_memory() -> None:
    ks = Keyspace()
    for i in range(10_000):
        ks.store(b"%d" % i, b"v")
    for _ in range(100):
        cursor, _keys = ks.scan(0, 10)  # started and abandoned
        assert cursor != 0
    held = sum(len(v) for v in ks._scans.values())
    assert len(ks._scans) <= MAX_SCANS
    assert held <= SCAN_MEMORY_FACTOR * len(ks) + 4096


key_names = st.sampled_from([b"a", b"b", b"c", b"d", b"e"])
keyspace_ops = st.lists(
    st.one_of(
        st.tuples(st.just("store"), key_names, st.one_of(st.none(), st.integers(0, 60))),
        st.tuples(st.just("expire"), key_names, st.integers(0, 60)),
        st.tuples(st.just("persist"), key_names, st.none()),
        st.tuples(st.just("delete"), key_names, st.none()),
        st.tuples(st.just("lookup"), key_names, st.none()),
        st.tuples(st.just("cycle"), key_names, st.integers(0, 3)),
        st.tuples(st.just("tick"), key_names, st.integers(0, 10)),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(operations=keyspace_ops)
def test_expiry_matches_a_naive_model(operations: list) -> None:
    """Lazy lookups, TTL rewrites and bounded active cycles agree with a dict of (value, expiry)."""
    ks = Keyspace()
    model: dict[bytes, tuple[bytes, int | None]] = {}
    now = 0
    version = 0

    def live(key: bytes) -> bool:
        entry = model.get(key)
        return entry is not None and (entry[1] is None or entry[1] > now)

    for op, key, arg in operations:
        if op == "store":
            version += 1
            value = b"%d" % version
            ks.store(key, value, None if arg is None else now + arg)
            model[key] = (value, None if arg is None else now + arg)
        elif op == "expire":
            if ks.lookup(key, now) is not None:
                ks.set_expire(key, now + arg)
                model[key] = (model[key][0], now + arg)
            else:
                assert not live(key)
                model.pop(key, None)
        elif op == "persist":
            if ks.lookup(key, now) is not None:
                assert ks.persist(key) == (model[key][1] is not None)
                model[key] = (model[key][0], None)
            else:
                model.pop(key, None)
        elif op == "delete":
            assert ks.delete(key) == (key in model)
            model.pop(key, None)
        elif op == "lookup":
            expected = model[key][0] if live(key) else None
            assert ks.lookup(key, now) == expected
            if expected is None:
                model.pop(key, None)
        elif op == "cycle":
            dead = sorted(k for k in model if not live(k))
            reaped = ks.active_expire_cycle(now, arg)
            assert reaped == min(arg, len(dead))
            for k in [k for k in model if not live(k)]:
                if k not in ks:
                    del model[k]
        else:
            now += arg
        # Invariants after every step: the same keys exist (reaped or not) with the same TTLs.
        assert len(ks) == len(model)
        assert ks.expires_count() == sum(1 for _, when in model.values() if when is not None)
        for k, (_value, when) in model.items():
            assert k in ks
            assert ks.get_expire(k) == when
    # Finally every dead key can be reaped and only those.
    dead = {k for k in model if not live(k)}
    assert ks.active_expire_cycle(now, 100) == len(dead)
    assert {k for k, _, _ in ks.items()} == set(model) - dead
