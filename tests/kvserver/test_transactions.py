"""MULTI / EXEC / DISCARD / WATCH against a real kvserver, with redis-py."""

from __future__ import annotations

import threading

import pytest
import redis


def test_multi_exec_runs_in_order(kv_server):
    r = kv_server.client()
    pipe = r.pipeline(transaction=True)
    pipe.set("a", "1").incr("a").get("a").lpush("l", "x")
    assert pipe.execute() == [True, 2, b"2", 1]


def test_exec_keeps_running_after_a_runtime_error(kv_server):
    r = kv_server.client()
    r.set("s", "text")
    pipe = r.pipeline(transaction=True)
    pipe.incr("s").set("after", "yes")
    results = pipe.execute(raise_on_error=False)
    assert isinstance(results[0], redis.ResponseError)
    assert results[1] is True
    assert r.get("after") == b"yes"


def run(r: redis.Redis, *commands: tuple[str, ...]) -> list:
    """Send commands one by one on one connection; return each raw reply or the error it raised."""
    conn = r.connection_pool.get_connection()
    replies: list = []
    try:
        for cmd in commands:
            conn.send_command(*cmd)
            try:
                replies.append(conn.read_response())
            except redis.ResponseError as exc:
                replies.append(exc)
    finally:
        r.connection_pool.release(conn)
    return replies


@pytest.mark.parametrize("bad", [("NOSUCHCOMMAND",), ("GET",)])
def test_queued_error_aborts_with_execabort(kv_server, bad):
    r = kv_server.client()
    replies = run(r, ("MULTI",), ("SET", "k", "v"), bad, ("EXEC",))
    assert replies[:2] == [b"OK", b"QUEUED"]
    assert isinstance(replies[2], redis.ResponseError)
    assert str(replies[3]) == "Transaction discarded because of previous errors."
    assert r.get("k") is None


def test_discard_and_errors_outside_multi(kv_server):
    r = kv_server.client()
    conn = r.connection_pool.get_connection()
    try:
        conn.send_command("MULTI")
        assert conn.read_response() == b"OK"
        conn.send_command("SET", "k", "v")
        assert conn.read_response() == b"QUEUED"
        conn.send_command("MULTI")
        with pytest.raises(redis.ResponseError, match="can not be nested"):
            conn.read_response()
        conn.send_command("WATCH", "k")
        with pytest.raises(redis.ResponseError, match="WATCH inside MULTI"):
            conn.read_response()
        conn.send_command("DISCARD")
        assert conn.read_response() == b"OK"
        conn.send_command("EXEC")
        with pytest.raises(redis.ResponseError, match="EXEC without MULTI"):
            conn.read_response()
        conn.send_command("DISCARD")
        with pytest.raises(redis.ResponseError, match="DISCARD without MULTI"):
            conn.read_response()
    finally:
        r.connection_pool.release(conn)
    assert r.get("k") is None


@pytest.mark.parametrize("protocol", [2, 3])
def test_watch_invalidated_by_another_clients_write(kv_server, protocol):
    r = kv_server.client(protocol=protocol)
    other = kv_server.client()
    r.set("balance", 10)
    with r.pipeline(transaction=True) as pipe:
        pipe.watch("balance")
        pipe.multi()
        pipe.incr("balance")
        other.set("balance", 100)  # touches the watched key
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert r.get("balance") == b"100"


def test_watch_not_invalidated_by_reads_or_other_keys(kv_server):
    r = kv_server.client()
    other = kv_server.client()
    r.set("w", 1)
    with r.pipeline(transaction=True) as pipe:
        pipe.watch("w")
        other.get("w")
        other.set("unrelated", 1)
        pipe.multi()
        pipe.incr("w")
        assert pipe.execute() == [2]


def test_watch_invalidated_by_flushdb_and_multikey_writes(kv_server):
    r = kv_server.client()
    other = kv_server.client()
    for trigger in (lambda: other.flushdb(), lambda: other.mset({"x": 1, "watched2": 2})):
        r.set("watched2", 1)
        with r.pipeline(transaction=True) as pipe:
            pipe.watch("watched2")
            trigger()
            pipe.multi()
            pipe.set("watched2", "mine")
            with pytest.raises(redis.WatchError):
                pipe.execute()


def test_unwatch_forgets(kv_server):
    r = kv_server.client()
    other = kv_server.client()
    conn = r.connection_pool.get_connection()
    try:
        for cmd in (("WATCH", "k"), ("UNWATCH",)):
            conn.send_command(*cmd)
            assert conn.read_response() == b"OK"
        other.set("k", "changed")
        conn.send_command("MULTI")
        conn.read_response()
        conn.send_command("GET", "k")
        conn.read_response()
        conn.send_command("EXEC")
        assert conn.read_response() == [b"changed"]
    finally:
        r.connection_pool.release(conn)


def test_concurrent_check_and_set_counter_loses_no_increment(kv_server):
    """Many clients increment one counter with WATCH/MULTI/EXEC retries: the total is exact."""
    threads, per_thread = 8, 40
    kv_server.client().set("counter", 0)
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        r = kv_server.client()
        try:
            barrier.wait(10)
            for _ in range(per_thread):
                while True:
                    with r.pipeline(transaction=True) as pipe:
                        try:
                            pipe.watch("counter")
                            value = int(pipe.get("counter"))
                            pipe.multi()
                            pipe.set("counter", value + 1)
                            pipe.execute()
                            break
                        except redis.WatchError:
                            continue
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert not errors
    assert int(kv_server.client().get("counter")) == threads * per_thread
