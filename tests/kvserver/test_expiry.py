"""TTLs over a real server: EXPIRE family options, TTL/PTTL/PERSIST, lazy and active expiry.

No sleeps: past times expire at once; the active cycle is observed by polling DBSIZE (which counts
unreaped keys) under a bounded deadline.
"""

from __future__ import annotations

import time

import redis

from tests.kvserver.resp_helpers import err, raw


def test_ttl_pttl_persist(r: redis.Redis) -> None:
    assert r.ttl("nope") == -2 and r.pttl("nope") == -2
    r.set("k", "v")
    assert r.ttl("k") == -1 and r.pttl("k") == -1
    assert r.expire("k", 100) is True
    assert 99 <= r.ttl("k") <= 100
    assert 99_000 < r.pttl("k") <= 100_000
    assert r.persist("k") is True
    assert r.persist("k") is False
    assert r.persist("nope") is False
    assert r.ttl("k") == -1


def test_expire_variants_set_the_same_absolute_time(r: redis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    r.set("a", "v")
    r.pexpireat("a", now_ms + 500_000)
    assert raw(r, "PEXPIRETIME", "a") == now_ms + 500_000
    assert raw(r, "EXPIRETIME", "a") == (now_ms + 500_500) // 1000  # rounded
    r.expireat("a", now_ms // 1000 + 600)
    assert raw(r, "EXPIRETIME", "a") == now_ms // 1000 + 600
    r.pexpire("a", 700_000)
    assert 690_000 < r.pttl("a") <= 700_000


def test_expire_options_nx_xx_gt_lt(r: redis.Redis) -> None:
    r.set("k", "v")
    assert r.expire("k", 100, xx=True) is False  # no TTL yet
    assert r.expire("k", 100, gt=True) is False  # no TTL counts as infinite
    assert r.expire("k", 100, nx=True) is True
    assert r.expire("k", 200, nx=True) is False
    assert r.expire("k", 50, gt=True) is False
    assert r.expire("k", 300, gt=True) is True
    assert r.expire("k", 400, lt=True) is False
    assert r.expire("k", 10, lt=True) is True
    assert 0 < r.ttl("k") <= 10
    assert r.expire("k", 1000, xx=True) is True
    r.set("nottl", "v")
    assert r.expire("nottl", 5, lt=True) is True
    assert r.expire("missing", 5) is False
    assert (
        err(r, "EXPIRE", "k", "10", "NX", "XX")
        == "NX and XX, GT or LT options at the same time are not compatible"
    )
    assert err(r, "EXPIRE", "k", "10", "GT", "LT") == (
        "GT and LT options at the same time are not compatible"
    )
    assert err(r, "EXPIRE", "k", "10", "FOO") == "Unsupported option FOO"
    assert err(r, "EXPIRE", "k", "ten") == "value is not an integer or out of range"
    assert err(r, "EXPIRE", "k", str(2**62)) == "invalid expire time in 'expire' command"
    assert err(r, "PEXPIRE", "k", str(2**63 - 1)) == "invalid expire time in 'pexpire' command"


def test_expire_in_the_past_deletes_at_once(r: redis.Redis) -> None:
    r.set("a", "v")
    r.rpush("b", "x")
    assert r.expire("a", -1) is True
    assert r.pexpireat("b", 1) is True
    assert r.exists("a", "b") == 0
    assert r.set("c", "v", pxat=1) is True
    assert r.get("c") is None


def test_lazy_expiry_hides_a_key_once_its_time_passes(r: redis.Redis) -> None:
    r.set("k", "v", px=1)
    deadline = time.monotonic() + 10
    while r.get("k") is not None:
        assert time.monotonic() < deadline, "key with PX 1 still visible after 10 s"
    assert r.ttl("k") == -2
    assert r.exists("k") == 0


def test_active_expiry_reaps_keys_nobody_reads(r: redis.Redis) -> None:
    r.mset({f"k{i}": "v" for i in range(200)})
    r.set("keep", "v")
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.pexpire(f"k{i}", 1)
    pipe.execute()
    # DBSIZE counts expired keys that were not reaped yet: only the active cycle lowers it.
    deadline = time.monotonic() + 20
    while r.dbsize() > 1:
        assert time.monotonic() < deadline, f"active expiry left {r.dbsize()} keys after 20 s"
        time.sleep(0.02)  # polling interval, not a guess: the loop's exit is the condition above
    assert r.get("keep") == b"v"


def test_expired_keys_vanish_from_keys_scan_and_type(r: redis.Redis) -> None:
    r.set("live", "v")
    r.set("dead", "v", pxat=int(time.time() * 1000) - 1000)
    assert r.keys("*") == [b"live"]
    assert raw(r, "TYPE", "dead") == b"none"
    assert list(r.scan_iter()) == [b"live"]
