"""List commands over a real server."""

from __future__ import annotations

import redis

from tests.kvserver.resp_helpers import err, raw


def test_push_pop_len(r: redis.Redis) -> None:
    assert r.rpush("l", "a", "b") == 2
    assert r.lpush("l", "x", "y") == 4  # y x a b
    assert r.lrange("l", 0, -1) == [b"y", b"x", b"a", b"b"]
    assert r.lpushx("nope", "a") == 0 and r.rpushx("nope", "a") == 0
    assert r.exists("nope") == 0
    assert r.rpushx("l", "z") == 5
    assert r.llen("l") == 5 and r.llen("nope") == 0
    assert r.lpop("l") == b"y"
    assert r.rpop("l") == b"z"
    assert r.lpop("l", 2) == [b"x", b"a"]
    assert r.rpop("l", 10) == [b"b"]
    assert r.exists("l") == 0  # emptied lists are deleted
    assert r.lpop("l") is None
    assert raw(r, "LPOP", "l", "2") is None  # RESP2 null array
    r.rpush("l", "a")
    assert raw(r, "LPOP", "l", "0") == []
    assert err(r, "LPOP", "l", "-1") == "value is out of range, must be positive"
    assert err(r, "LPOP", "l", "x") == "value is out of range, must be positive"
    assert err(r, "LPUSH", "l") == "wrong number of arguments for 'lpush' command"


def test_lindex_lset_lrange(r: redis.Redis) -> None:
    r.rpush("l", *"abcdefg")
    assert r.lindex("l", 0) == b"a" and r.lindex("l", -1) == b"g"
    assert r.lindex("l", 7) is None and r.lindex("nope", 0) is None
    assert r.lrange("l", 2, 4) == [b"c", b"d", b"e"]
    assert r.lrange("l", -3, -1) == [b"e", b"f", b"g"]
    assert r.lrange("l", -100, 1) == [b"a", b"b"]
    assert r.lrange("l", 5, 100) == [b"f", b"g"]
    assert r.lrange("l", 4, 2) == []
    assert r.lrange("l", 10, 20) == []
    assert r.lset("l", -1, "G") is True
    assert r.lindex("l", 6) == b"G"
    assert err(r, "LSET", "l", "7", "x") == "index out of range"
    assert err(r, "LSET", "nope", "0", "x") == "no such key"
    assert err(r, "LINDEX", "l", "x") == "value is not an integer or out of range"


def test_lrange_on_a_long_list_from_either_end(r: redis.Redis) -> None:
    r.rpush("l", *range(1000))
    assert r.lrange("l", 990, 995) == [str(i).encode() for i in range(990, 996)]
    assert r.lrange("l", 3, 5) == [b"3", b"4", b"5"]


def test_ltrim(r: redis.Redis) -> None:
    r.rpush("l", *"abcde")
    assert r.ltrim("l", 1, -2) is True
    assert r.lrange("l", 0, -1) == [b"b", b"c", b"d"]
    assert r.ltrim("l", 5, 10) is True
    assert r.exists("l") == 0
    assert r.ltrim("nope", 0, 1) is True


def test_linsert_lrem_lpos(r: redis.Redis) -> None:
    r.rpush("l", "a", "b", "c")
    assert r.linsert("l", "BEFORE", "b", "x") == 4
    assert r.linsert("l", "AFTER", "c", "y") == 5
    assert r.linsert("l", "AFTER", "zz", "y") == -1
    assert r.linsert("nope", "AFTER", "a", "y") == 0
    assert err(r, "LINSERT", "l", "MIDDLE", "a", "b") == "syntax error"
    assert r.lrange("l", 0, -1) == [b"a", b"x", b"b", b"c", b"y"]
    r.delete("l")
    r.rpush("l", *"aXbXcXdX")
    assert r.lrem("l", 2, "X") == 2
    assert r.lrange("l", 0, -1) == [b"a", b"b", b"c", b"X", b"d", b"X"]
    assert r.lrem("l", -1, "X") == 1
    assert r.lrange("l", 0, -1) == [b"a", b"b", b"c", b"X", b"d"]
    assert r.lrem("l", 0, "X") == 1 and r.lrem("l", 0, "X") == 0
    r.delete("l")
    r.rpush("l", "a", "b", "c", "1", "2", "3", "c", "c")
    assert r.lpos("l", "c") == 2
    assert r.lpos("l", "c", rank=2) == 6
    assert r.lpos("l", "c", rank=-1) == 7
    assert r.lpos("l", "c", count=2) == [2, 6]
    assert r.lpos("l", "c", count=0) == [2, 6, 7]
    assert r.lpos("l", "c", rank=-1, count=2) == [7, 6]
    assert r.lpos("l", "c", count=0, maxlen=3) == [2]
    assert r.lpos("l", "zz") is None
    assert r.lpos("l", "zz", count=1) == []
    assert err(r, "LPOS", "l", "c", "RANK", "0").startswith("RANK can't be zero")
    assert err(r, "LPOS", "l", "c", "COUNT", "-1") == "COUNT can't be negative"
    assert err(r, "LPOS", "l", "c", "MAXLEN", "-1") == "MAXLEN can't be negative"
    assert err(r, "LPOS", "l", "c", "COUNT", "x") == "COUNT can't be negative"
    assert err(r, "LPOS", "l", "c", "MAXLEN", "x") == "MAXLEN can't be negative"
    assert err(r, "LPOS", "l", "c", "RANK", "x") == "value is not an integer or out of range"
    assert err(r, "LPOS", "l", "c", "FOO", "1") == "syntax error"


def test_lmove_and_rpoplpush(r: redis.Redis) -> None:
    r.rpush("src", "a", "b", "c")
    assert r.lmove("src", "dst", "LEFT", "RIGHT") == b"a"
    assert r.lmove("src", "dst", "RIGHT", "LEFT") == b"c"
    assert r.lrange("dst", 0, -1) == [b"c", b"a"]
    assert r.rpoplpush("src", "dst") == b"b"
    assert r.exists("src") == 0
    assert r.rpoplpush("src", "dst") is None
    assert r.lrange("dst", 0, -1) == [b"b", b"c", b"a"]
    assert r.lmove("dst", "dst", "LEFT", "RIGHT") == b"b"  # rotation
    assert r.lrange("dst", 0, -1) == [b"c", b"a", b"b"]
    r.set("str", "v")
    assert err(r, "LMOVE", "dst", "str", "LEFT", "LEFT").startswith("WRONGTYPE")
    assert r.llen("dst") == 3  # nothing was popped
    assert err(r, "LMOVE", "dst", "x", "UP", "LEFT") == "syntax error"


def test_list_wrongtype(r: redis.Redis) -> None:
    r.set("s", "v")
    for args in (("LPUSH", "s", "a"), ("LRANGE", "s", "0", "-1"), ("LLEN", "s"), ("LPOP", "s")):
        assert err(r, *args).startswith("WRONGTYPE")


def test_resp3_pop_with_count_on_missing_key_is_null(r3: redis.Redis) -> None:
    assert raw(r3, "LPOP", "nope", "2") is None
    r3.rpush("l", "a")
    assert raw(r3, "RPOP", "l", "5") == [b"a"]
