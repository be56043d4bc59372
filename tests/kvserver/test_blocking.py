"""Blocking pops (BLPOP ... BZMPOP), CLIENT UNBLOCK and parked clients, against redis-server 7.0.

Each scenario runs the same steps on kvserver and on the real redis-server, with several raw
connections per server (a parked client is one whose reply has not come yet), and the observed replies
are compared. Waiting is deterministic: until INFO reports the expected number of blocked clients
(bounded), never a sleep. A live patch with clients parked goes through and they are served after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.kvserver.redis_diff import Conn, compare, wait_blocked

pytestmark = pytest.mark.timeout(60)


def test_first_blocked_first_served_and_a_push_serves_as_many_as_it_brings(
    kv_shared, redis_reference
):
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        ctl, a, b, c = connect(), connect(), connect(), connect()
        a.send("BLPOP", "l", "0")
        wait_blocked(ctl, 1)
        b.send("BRPOP", "l", "other", "0")
        wait_blocked(ctl, 2)
        c.send("BLMPOP", "0", "2", "other", "l", "LEFT", "COUNT", "5")
        wait_blocked(ctl, 3)
        out = [ctl("RPUSH", "l", "x", "y")]  # two elements: a and b, not c
        out += [a.read(), b.read()]
        wait_blocked(ctl, 1)
        out += [ctl("RPUSH", "other", "1", "2", "3"), c.read(), ctl("LRANGE", "other", 0, -1)]
        return out

    assert compare(kv_shared, redis_reference, scenario)[1:3] == [[b"l", b"x"], [b"l", b"y"]]


def test_timeouts_and_bad_timeouts(kv_shared, redis_reference):
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        a = connect()
        out = [
            a("BLPOP", "l", "0.05"),
            a("BZPOPMIN", "z", "0.01"),
            a("BLMOVE", "s", "d", "LEFT", "RIGHT", "0.01"),
        ]
        out += [
            a("BLPOP", "l", "-1"),
            a("BLPOP", "l", "abc"),
            a("BRPOP", "l", "inf"),
            a("BLPOP", "l", "1e300"),
            a("BLPOP", "l", "-inf"),
        ]
        out += [
            a("BLMPOP", "0", "0", "l", "LEFT"),
            a("BLMPOP", "0", "1", "l", "UP"),
            a("BZMPOP", "0", "1", "z"),
        ]
        return out

    out = compare(kv_shared, redis_reference, scenario)
    assert out[0] is None and out[3][0] == "error"


def test_inside_multi_a_blocking_pop_does_not_block(kv_shared, redis_reference):
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        a = connect()
        return [a("MULTI"), a("BLPOP", "l", "0"), a("BRPOPLPUSH", "l", "d", "0"),
                a("BZPOPMAX", "z", "0"), a("BLMPOP", "0", "1", "l", "RIGHT"), a("EXEC")]  # fmt: skip

    assert compare(kv_shared, redis_reference, scenario)[-1] == [None, None, None, None]


def test_a_key_emptied_or_retyped_before_the_batch_ends_leaves_clients_parked(
    kv_shared, redis_reference
):
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        ctl, a = connect(), connect()
        a.send("BLPOP", "l", "0")
        wait_blocked(ctl, 1)
        out = [
            ctl("MULTI"),
            ctl("LPUSH", "l", "x"),
            ctl("DEL", "l"),
            ctl("SET", "l", "str"),
            ctl("EXEC"),
        ]
        wait_blocked(ctl, 1)  # still parked: no WRONGTYPE for a key of another kind
        out += [ctl("DEL", "l"), ctl("LPUSH", "l", "y"), a.read()]
        return out

    assert compare(kv_shared, redis_reference, scenario)[-1] == [b"l", b"y"]


def test_blmove_chain_and_wrong_destination(kv_shared, redis_reference):
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        ctl, a, b, c = connect(), connect(), connect(), connect()
        a.send("BLMOVE", "l1", "l2", "RIGHT", "LEFT", "0")
        wait_blocked(ctl, 1)
        b.send("BLPOP", "l2", "0")
        wait_blocked(ctl, 2)
        out = [ctl("RPUSH", "l1", "v"), a.read(), b.read(), ctl("EXISTS", "l1", "l2")]
        ctl("SET", "t", "str")
        c.send("BRPOPLPUSH", "src", "t", "0")
        wait_blocked(ctl, 1)
        out += [ctl("LPUSH", "src", "kept"), c.read(), ctl("LRANGE", "src", 0, -1)]
        return out

    out = compare(kv_shared, redis_reference, scenario)
    assert out[1:3] == [b"v", [b"l2", b"v"]] and out[-2][1].startswith("WRONGTYPE")


def test_requests_sent_while_parked_run_after_the_answer_in_order(kv_shared, redis_reference):
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        ctl, a = connect(), connect()
        a.send("BLPOP", "l", "0")
        a.send("SET", "after", "1")
        a.send("GET", "after")
        wait_blocked(ctl, 1)
        out = [ctl("EXISTS", "after"), ctl("RPUSH", "l", "v")]
        out += [a.read(), a.read(), a.read(), ctl("GET", "after")]
        return out

    assert compare(kv_shared, redis_reference, scenario)[0] == 0


def test_client_unblock_and_disconnect(kv_shared, redis_reference):
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        ctl, a, b = connect(), connect(), connect()
        a_id, b_id = a("CLIENT", "ID"), b("CLIENT", "ID")
        a.send("BLPOP", "l", "0")
        b.send("BZPOPMIN", "z", "0")
        wait_blocked(ctl, 2)
        out = [
            ctl("CLIENT", "UNBLOCK", a_id),
            a.read(),
            ctl("CLIENT", "UNBLOCK", b_id, "ERROR"),
            b.read(),
        ]
        out += [ctl("CLIENT", "UNBLOCK", a_id), ctl("CLIENT", "UNBLOCK", a_id, "MAYBE")]
        a.send("BLPOP", "l", "0")
        wait_blocked(ctl, 1)
        a.close()
        wait_blocked(ctl, 0)
        out += [ctl("RPUSH", "l", "v"), ctl("LLEN", "l")]  # nobody took it
        return out

    out = compare(kv_shared, redis_reference, scenario)
    assert out[:3] == [1, None, 1] and out[3][1].startswith("UNBLOCKED")


@pytest.mark.parametrize("protocol", [2, 3])
def test_sorted_set_pops_reply_like_redis(kv_shared, redis_reference, protocol):
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        ctl, a, b = connect(protocol), connect(protocol), connect(protocol)
        a.send("BZPOPMAX", "z1", "z2", "0")
        wait_blocked(ctl, 1)
        b.send("BZMPOP", "0", "1", "z2", "MIN", "COUNT", "2")
        wait_blocked(ctl, 2)
        out = [ctl("ZADD", "z2", "1.5", "a", "2", "b", "3", "c"), a.read(), b.read()]
        out += [ctl("ZADD", "z1", "7", "x"), ctl("BZPOPMIN", "z1", "0"), ctl("TYPE", "z1")]
        return out

    compare(kv_shared, redis_reference, scenario)


def test_swapdb_and_rename_wake_a_parked_client(kv_shared, redis_reference):
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        ctl, a, b = connect(), connect(), connect()
        a.send("BLPOP", "l", "0")
        wait_blocked(ctl, 1)
        out = [ctl("SELECT", "1"), ctl("RPUSH", "l", "from1"), ctl("SWAPDB", "0", "1"), a.read()]
        b.send("BRPOP", "target", "0")
        ctl("SELECT", "0")
        wait_blocked(ctl, 1)
        out += [ctl("RPUSH", "tmp", "r"), ctl("RENAME", "tmp", "target"), b.read()]
        return out

    compare(kv_shared, redis_reference, scenario)


@pytest.mark.timeout(180)
def test_a_live_patch_goes_through_with_clients_parked(kv_factory):
    """Parked clients are loop data, not a request in flight: the patch is applied at once, and
    they are served afterwards by the same connection (and the new code answers everyone)."""
    import shutil
    import tempfile
    from pathlib import Path

    from tests.kvserver.test_livepatch import build_patch
    from tests.support import livepatch_cli

    work = Path(tempfile.mkdtemp(prefix="lp-blk-"))  # short: a Unix socket path has ~100 bytes
    try:
        sock = work / "agent.sock"
        server = kv_factory("--livepatch-socket", str(sock), "--allow-unsigned")
        patch = build_patch(work)
        ctl = Conn(server.host, server.port)
        parked = [Conn(server.host, server.port) for _ in range(3)]
        for i, conn in enumerate(parked):
            conn.send("BLPOP", f"q{i}", "0")
        wait_blocked(ctl, 3)
        done = livepatch_cli("apply", str(patch), "--socket", str(sock), "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_blocked(ctl, 3)
        assert ctl("ECHO", "x") == b"v2:x"
        for i, conn in enumerate(parked):
            assert ctl("RPUSH", f"q{i}", f"v{i}") == 1
            assert conn.read() == [f"q{i}".encode(), f"v{i}".encode()]
            assert conn("ECHO", "y") == b"v2:y"
        for conn in [ctl, *parked]:
            conn.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_served_pops_are_logged_as_their_twins_and_replay(kv_factory, tmp_path):
    """The AOF holds LPOP/LMOVE/ZPOPMIN for served blocking pops, never a blocking command, so a
    restart replays to the same data (and a replayed BLPOP could not wait for anything)."""
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendfsync", "always", "--save", "")
    ctl, a, b, c = (Conn(srv.host, srv.port) for _ in range(4))
    a.send("BLPOP", "l", "0")
    b.send("BLMOVE", "m", "dst", "LEFT", "RIGHT", "0")
    c.send("BZPOPMIN", "z", "0")
    wait_blocked(ctl, 3)
    ctl("RPUSH", "l", "1", "2")
    ctl("RPUSH", "m", "x", "y")
    ctl("ZADD", "z", "1", "one", "2", "two")
    assert [a.read(), b.read(), c.read()] == [[b"l", b"1"], b"x", [b"z", b"one", b"1"]]
    before = [ctl("LRANGE", "l", 0, -1), ctl("LRANGE", "m", 0, -1), ctl("LRANGE", "dst", 0, -1),
              ctl("ZRANGE", "z", 0, -1)]  # fmt: skip
    for conn in (ctl, a, b, c):
        conn.close()
    log = b"".join(p.read_bytes() for p in sorted(data.glob("appendonly*.aof")))
    assert b"BLPOP" not in log.upper() and b"BZPOPMIN" not in log.upper()
    srv.stop()
    again = kv_factory("--dir", str(data), "--appendfsync", "always", "--save", "")
    ctl = Conn(again.host, again.port)
    after = [ctl("LRANGE", "l", 0, -1), ctl("LRANGE", "m", 0, -1), ctl("LRANGE", "dst", 0, -1),
             ctl("ZRANGE", "z", 0, -1)]  # fmt: skip
    assert after == before == [[b"2"], [b"y"], [b"x"], [b"two"]]
    ctl.close()
