"""Set commands over a real server (RESP2 arrays, RESP3 sets)."""

from __future__ import annotations

import redis

from tests.kvserver.resp_helpers import err, raw


def test_sadd_srem_smembers_card(r: redis.Redis) -> None:
    assert r.sadd("s", "a", "b", "a") == 2
    assert r.sadd("s", "b", "c") == 1
    assert r.smembers("s") == {b"a", b"b", b"c"}
    assert r.scard("s") == 3 and r.scard("nope") == 0
    assert r.sismember("s", "a") == 1 and r.sismember("s", "z") == 0
    assert r.smismember("s", ["a", "z", "c"]) == [True, False, True]
    assert r.smismember("nope", ["a"]) == [False]
    assert r.srem("s", "a", "z") == 1
    assert r.srem("s", "b", "c") == 2
    assert r.exists("s") == 0
    assert r.smembers("nope") == set()
    assert err(r, "SADD", "s") == "wrong number of arguments for 'sadd' command"


def test_spop_and_srandmember(r: redis.Redis) -> None:
    members = {f"m{i}".encode() for i in range(20)}
    r.sadd("s", *members)
    one = r.spop("s")
    assert one in members and r.sismember("s", one) == 0
    three = r.spop("s", 3)
    assert len(three) == 3 and set(three) <= members - {one}
    assert r.scard("s") == 16
    assert r.spop("nope") is None
    assert raw(r, "SPOP", "nope", "2") == []
    assert err(r, "SPOP", "s", "-1") == "value is out of range, must be positive"
    rest = r.spop("s", 100)
    assert len(rest) == 16 and r.exists("s") == 0
    r.sadd("s", "a", "b", "c")
    assert r.srandmember("s") in {b"a", b"b", b"c"}
    two = r.srandmember("s", 2)
    assert len(two) == 2 and len(set(two)) == 2
    assert sorted(r.srandmember("s", 10)) == [b"a", b"b", b"c"]
    repeats = r.srandmember("s", -10)
    assert len(repeats) == 10 and set(repeats) <= {b"a", b"b", b"c"}
    assert r.srandmember("nope") is None and r.srandmember("nope", 3) == []
    assert r.scard("s") == 3  # SRANDMEMBER removes nothing
    assert err(r, "SRANDMEMBER", "s", str(-(2**40))) == "value is out of range"


def test_spop_on_a_large_set_pops_distinct_members(r: redis.Redis) -> None:
    members = {f"m{i}".encode() for i in range(2000)}
    r.sadd("big", *members)
    popped = [r.spop("big") for _ in range(100)]
    assert len(set(popped)) == 100 and set(popped) <= members
    assert r.scard("big") == 1900
    assert not any(r.smismember("big", popped))


def test_set_algebra_and_store(r: redis.Redis) -> None:
    r.sadd("a", "1", "2", "3", "4")
    r.sadd("b", "3", "4", "5")
    r.sadd("c", "4", "6")
    assert r.sinter("a", "b", "c") == {b"4"}
    assert r.sinter("a", "nope") == set()
    assert r.sunion("a", "b", "nope") == {b"1", b"2", b"3", b"4", b"5"}
    assert r.sdiff("a", "b", "c") == {b"1", b"2"}
    assert r.sdiff("nope", "a") == set()
    assert r.sinterstore("d", "a", "b") == 2
    assert r.smembers("d") == {b"3", b"4"}
    assert r.sunionstore("d", "b", "c") == 4
    assert r.smembers("d") == {b"3", b"4", b"5", b"6"}
    assert r.sdiffstore("d", "a", "a") == 0
    assert r.exists("d") == 0  # an empty result deletes the destination
    assert r.sinterstore("a", "a", "b") == 2  # destination may be an operand
    assert r.smembers("a") == {b"3", b"4"}
    r.set("str", "v")
    assert err(r, "SINTER", "a", "str").startswith("WRONGTYPE")
    assert err(r, "SUNIONSTORE", "d", "a", "str").startswith("WRONGTYPE")
    assert r.sunionstore("str", "a") == 2  # the destination's old type does not matter
    assert r.type("str") == b"set"


def test_smove(r: redis.Redis) -> None:
    r.sadd("a", "x", "y")
    assert r.smove("a", "b", "x") is True
    assert r.smove("a", "b", "nope") is False
    assert r.smembers("b") == {b"x"}
    assert r.smove("a", "a", "y") is True
    assert r.smove("a", "b", "y") is True
    assert r.exists("a") == 0
    r.set("str", "v")
    assert err(r, "SMOVE", "b", "str", "x").startswith("WRONGTYPE")
    assert r.smembers("b") == {b"x", b"y"}


def test_sscan(r: redis.Redis) -> None:
    r.sadd("s", *[f"m{i}" for i in range(40)])
    assert set(r.sscan_iter("s")) == {f"m{i}".encode() for i in range(40)}
    assert set(r.sscan_iter("s", match="m3?")) == {f"m3{i}".encode() for i in range(10)}


def reply_type_byte(client: redis.Redis, *args: str) -> bytes:
    """The RESP type byte of a reply, read off the socket (redis-py turns RESP3 sets into lists)."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command(*args)
        return conn._sock.recv(1)  # type: ignore[union-attr]
    finally:
        conn.disconnect()  # the rest of the reply is unread: never reuse this connection
        client.connection_pool.release(conn)


def test_resp3_set_replies(r3: redis.Redis) -> None:
    r3.sadd("a", "1", "2")
    r3.sadd("b", "2", "3")
    assert sorted(raw(r3, "SMEMBERS", "a")) == [b"1", b"2"]
    assert sorted(raw(r3, "SUNION", "a", "b")) == [b"1", b"2", b"3"]
    assert raw(r3, "SISMEMBER", "a", "1") == 1  # an integer, not a boolean, in Redis 7
    assert reply_type_byte(r3, "SMEMBERS", "a") == b"~"
    assert reply_type_byte(r3, "SINTER", "a", "b") == b"~"
    assert reply_type_byte(r3, "SPOP", "a", "1") == b"~"
    assert reply_type_byte(r3, "SRANDMEMBER", "b", "1") == b"*"
