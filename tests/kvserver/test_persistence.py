"""Persistence with real processes: AOF replay, snapshots, torn tails, kill -9 under load."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import redis


def aof_files(data: Path) -> list[Path]:
    return sorted(data.glob("appendonly.*.aof"), key=lambda p: int(p.name.split(".")[1]))


def fill(r: redis.Redis) -> None:
    r.set("s", "v")
    r.incr("n")
    r.incr("n")
    r.rpush("l", "a", "b")
    r.hset("h", mapping={"f": "1"})
    r.sadd("set", "x")
    r.zadd("z", {"m": 1.5})
    r.set("ttl", "t", px=600_000)
    r.delete("nothing")
    pipe = r.pipeline(transaction=True)
    pipe.incr("n").set("in_tx", "yes")
    pipe.execute()


def check(r: redis.Redis) -> None:
    assert r.get("s") == b"v"
    assert r.get("n") == b"3"
    assert r.lrange("l", 0, -1) == [b"a", b"b"]
    assert r.hgetall("h") == {b"f": b"1"}
    assert r.smembers("set") == {b"x"}
    assert r.zscore("z", "m") == 1.5
    assert r.get("in_tx") == b"yes"
    assert 0 < r.pttl("ttl") <= 600_000


@pytest.mark.parametrize("fsync", ["always", "everysec", "no"])
def test_aof_replay_after_clean_stop(kv_factory, tmp_path, fsync):
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendfsync", fsync, "--save", "")
    r = srv.client()
    fill(r)
    r.select(3)  # redis-py keeps the connection on db 3 for what follows
    r.set("in3", "x")
    assert srv.stop() == 0
    srv2 = kv_factory("--dir", str(data), "--appendfsync", fsync, "--save", "")
    check(srv2.client())
    assert srv2.client(db=3).get("in3") == b"x"
    assert srv2.client(db=0).get("in3") is None


def test_aof_survives_kill_9_with_always(kv_factory, tmp_path):
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendfsync", "always", "--save", "")
    fill(srv.client())
    srv.kill()
    check(kv_factory("--dir", str(data), "--save", "").client())


def test_snapshot_then_aof_replay_does_not_double_apply(kv_factory, tmp_path):
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendfsync", "always", "--save", "")
    r = srv.client()
    r.incr("n")
    r.incr("n")
    assert r.save() is True
    r.incr("n")
    srv.kill()
    assert len(aof_files(data)) == 1  # the generation before the snapshot was deleted
    r2 = kv_factory("--dir", str(data), "--save", "").client()
    assert r2.get("n") == b"3"


def test_bgsave_snapshot_alone_restores(kv_factory, tmp_path):
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendonly", "no", "--save", "")
    r = srv.client()
    r.execute_command("DEBUG", "POPULATE", "5000")
    r.set("extra", "1")
    before = r.lastsave()
    assert r.bgsave() is True
    wait_bgsave_done(r)
    assert r.lastsave() >= before
    assert r.info("persistence")["rdb_last_bgsave_status"] == "ok"
    srv.kill()
    r2 = kv_factory("--dir", str(data), "--appendonly", "no").client()
    assert r2.dbsize() == 5001
    assert r2.get("key:4999") == b"value:4999"


def test_shutdown_save_and_sigterm_flush(kv_factory, tmp_path):
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendonly", "no", "--save", "3600 1")
    srv.client().set("a", "1")
    assert srv.stop() == 0  # SIGTERM: a save policy is configured, so it snapshots
    assert (data / "dump.kvsnap").exists()
    srv2 = kv_factory("--dir", str(data), "--appendonly", "no", "--save", "")
    r = srv2.client()
    assert r.get("a") == b"1"
    r.set("b", "2")
    r.shutdown(save=True)
    assert srv2.wait_exit() == 0
    r3 = kv_factory("--dir", str(data), "--appendonly", "no").client()
    assert r3.mget("a", "b") == [b"1", b"2"]


def test_torn_aof_tail_is_truncated_with_a_warning(kv_factory, tmp_path):
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendfsync", "always", "--save", "")
    r = srv.client()
    r.set("kept", "1")
    pipe = r.pipeline(transaction=True)
    pipe.set("tx1", "1").set("tx2", "2")
    pipe.execute()
    srv.kill()
    aof = aof_files(data)[-1]
    good_size = aof.stat().st_size
    with open(aof, "ab") as f:  # a crash in the middle of a later transaction's write
        f.write(b"*1\r\n$5\r\nMULTI\r\n*3\r\n$3\r\nSET\r\n$4\r\nlost\r\n$1\r\n1\r\n*3\r\n$3\r\nSE")
    srv2 = kv_factory("--dir", str(data), "--save", "", "--loglevel", "warning")
    r2 = srv2.client()
    assert r2.mget("kept", "tx1", "tx2", "lost") == [b"1", b"1", b"2", None]
    assert "torn last record" in srv2.log()
    assert aof.stat().st_size == good_size


def test_garbage_in_the_aof_refuses_to_start(kv_factory, tmp_path):
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--save", "")
    srv.client().set("a", "1")
    srv.stop()
    aof = aof_files(data)[-1]
    aof.write_bytes(b"*1\r\n+garbage\r\n" + aof.read_bytes())
    with pytest.raises(
        RuntimeError, match=r"exited before it was ready(.|\n)*bad record after offset 0"
    ):
        kv_factory("--dir", str(data), "--save", "")


@pytest.mark.timeout(120)
def test_kill_9_under_write_load_loses_no_acknowledged_write(kv_factory, tmp_path):
    """Writers record every acknowledged SET; kill -9 mid-load; all of them are there after restart."""
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendfsync", "always", "--save", "")
    writers, enough = 6, 600
    acked: list[list[str]] = [[] for _ in range(writers)]
    progress = threading.Semaphore(0)
    stop = threading.Event()

    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            r = srv.client(socket_timeout=10)
        except BaseException as exc:
            errors.append(exc)
            progress.release()
            return
        i = 0
        while not stop.is_set():
            key = f"w{n}:{i}"
            try:
                r.set(key, str(i))
            except (redis.ConnectionError, redis.TimeoutError):
                return  # the server died: this write may or may not have landed
            acked[n].append(key)
            progress.release()
            i += 1

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    try:
        for _ in range(enough):
            assert progress.acquire(timeout=60)
            assert not errors
        srv.kill()  # while the writers are still writing
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    total = sum(len(a) for a in acked)
    assert total >= enough
    r2 = kv_factory("--dir", str(data), "--save", "").client()
    pipe = r2.pipeline(transaction=False)
    keys = [k for a in acked for k in a]
    for k in keys:
        pipe.exists(k)
    missing = [k for k, present in zip(keys, pipe.execute(), strict=True) if not present]
    assert missing == []


def wait_bgsave_done(r: redis.Redis) -> None:
    """Until INFO says no BGSAVE runs (the loop reaps the child within a cron tick, 100 ms)."""
    done = threading.Event()
    for _ in range(1200):
        if r.info("persistence")["rdb_bgsave_in_progress"] == 0:
            return
        done.wait(0.05)  # polling another process's state: there is no event to wait on
    raise AssertionError("BGSAVE did not finish")


def test_bgsave_with_aof_rotates_generations_without_double_apply(kv_factory, tmp_path):
    data = tmp_path / "data"
    srv = kv_factory("--dir", str(data), "--appendfsync", "always", "--save", "")
    r = srv.client()
    for _ in range(5):
        r.incr("n")
    assert r.bgsave() is True
    for _ in range(3):  # written to the next generation while (or after) the child saves
        r.incr("n")
    wait_bgsave_done(r)
    assert r.info("persistence")["rdb_last_bgsave_status"] == "ok"
    r.incr("n")
    srv.kill()
    gens = [int(p.name.split(".")[1]) for p in aof_files(data)]
    assert gens == [2]  # generation 1 was deleted once the snapshot naming 2 was safe
    assert kv_factory("--dir", str(data), "--save", "").client().get("n") == b"9"
