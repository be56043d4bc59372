"""Server commands against a real kvserver: INFO, CONFIG, COMMAND, FLUSH*, DEBUG, SHUTDOWN, ..."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import redis

from tests.kvserver.resp_helpers import raw


def test_info_sections(kv_server):
    r = kv_server.client()
    r.set("a", "1")
    r.set("b", "2", px=100_000)
    info = r.info()
    assert info["redis_version"].startswith("7.")
    assert info["connected_clients"] >= 1
    assert info["db0"] == {"keys": 2, "expires": 1, "avg_ttl": 0}
    assert info["total_commands_processed"] >= 2
    assert info["aof_enabled"] == 0
    assert set(r.info("keyspace")) == {"db0"}
    assert "used_memory" in r.info("memory")
    assert r.info("persistence")["rdb_changes_since_last_save"] >= 2


def test_info_as_resp3_verbatim(kv_server):
    r3 = kv_server.client(protocol=3)
    assert r3.info("server")["tcp_port"] == kv_server.port


def test_config_get_globs_and_set(kv_server):
    r = kv_server.client()
    # What redis-benchmark asks first.
    assert r.config_get("save") == {"save": ""}
    assert r.config_get("appendonly") == {"appendonly": "no"}
    got = r.config_get("*max*")
    assert got["maxclients"] == "10000"
    assert got["proto-max-bulk-len"] == str(512 * 1024 * 1024)
    assert r.config_set("maxclients", "500") is True
    assert r.config_get("maxclients") == {"maxclients": "500"}
    with pytest.raises(redis.ResponseError, match="can't set immutable config"):
        r.config_set("port", "1")
    with pytest.raises(redis.ResponseError, match="must be one of"):
        r.config_set("appendfsync", "sometimes")


def test_config_set_unknown_parameter_is_accepted_and_reported(kv_server):
    r = kv_server.client()
    assert r.config_set("lazyfree-lazy-eviction", "yes") is True
    assert r.config_get("lazyfree-*") == {"lazyfree-lazy-eviction": "yes"}
    assert r.ping()


def test_command_count_info_docs(kv_server):
    r = kv_server.client()
    count = r.command_count()
    names = {n.decode() for n in raw(r, "COMMAND", "LIST")}
    assert count == len(names)
    assert {"get", "set", "multi", "config", "hello"} <= names
    info = raw(r, "COMMAND", "INFO", "get", "nosuchcmd")
    assert info[0][0] == b"get" and info[0][1] == 2 and info[1] is None
    docs = raw(r, "COMMAND", "DOCS", "set")
    assert docs[0] == b"set"
    assert raw(r, "COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2") == [b"a", b"b"]
    assert len(raw(r, "COMMAND")) == count


def test_flushdb_flushall(kv_server):
    r0 = kv_server.client(db=0)
    r1 = kv_server.client(db=1)
    r0.set("x", 1)
    r1.set("y", 1)
    assert r0.flushdb() is True
    assert r0.dbsize() == 0 and r1.dbsize() == 1
    r0.set("x", 1)
    assert r0.flushall() is True
    assert r0.dbsize() == 0 and r1.dbsize() == 0


def test_debug_populate(kv_server):
    r = kv_server.client()
    r.set("key:5", "mine")
    assert r.execute_command("DEBUG", "POPULATE", "1000") == b"OK"
    assert r.dbsize() == 1000
    assert r.get("key:0") == b"value:0"
    assert r.get("key:999") == b"value:999"
    assert r.get("key:5") == b"mine"  # existing keys are kept, like Redis
    r.execute_command("DEBUG", "POPULATE", "10", "other", "20")
    assert r.get("other:3") == b"value:3" + b"\x00" * 13


def test_debug_sleep_blocks_the_loop(kv_server):
    """Like Redis, DEBUG SLEEP stalls every client: a PING sent meanwhile is answered afterwards."""
    sleeper = kv_server.client()
    other = kv_server.client()
    other.ping()
    started = threading.Event()

    def sleep() -> None:
        started.set()
        sleeper.execute_command("DEBUG", "SLEEP", "0.3")

    t = threading.Thread(target=sleep)
    t0 = time.monotonic()
    t.start()
    started.wait(5)
    t.join(10)
    assert other.ping()
    assert time.monotonic() - t0 >= 0.3


def test_time_and_lastsave(kv_server):
    r = kv_server.client()
    seconds, micros = r.time()
    assert abs(seconds - time.time()) < 60 and 0 <= micros < 1_000_000
    assert abs(r.lastsave().timestamp() - time.time()) < 120


def test_save_without_dir_is_a_clear_error(kv_server):
    r = kv_server.client()
    with pytest.raises(redis.ResponseError, match="persistence is disabled"):
        r.save()


def test_shutdown_closes_without_reply_and_exits(kv_server):
    r = kv_server.client()
    r.shutdown(nosave=True)  # redis-py expects the connection to drop
    assert kv_server.wait_exit(20) == 0


def test_a_handler_bug_answers_an_error_and_the_server_carries_on(kv_server):
    r = kv_server.client()
    # CLIENT KILL with a malformed address finds nothing: a clean error; the server stays up.
    with pytest.raises(redis.ResponseError):
        r.execute_command("CLIENT", "KILL", "nonsense")
    assert r.ping()


def test_client_kill_by_id(kv_server):
    victim = kv_server.client()
    victim_id = victim.client_id()
    killer = kv_server.client()
    assert killer.execute_command("CLIENT", "KILL", "ID", str(victim_id)) == 1
    with socket.create_connection((kv_server.host, kv_server.port)) as s:
        s.sendall(b"CLIENT LIST\r\n")
        s.settimeout(5)
        listing = b""
        while not listing.endswith(b"\n\r\n"):
            listing += s.recv(65536)
    assert f"id={victim_id} ".encode() not in listing
