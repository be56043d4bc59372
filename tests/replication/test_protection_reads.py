"""Commit protection covers reads of the whole database (issue 15): DBSIZE, INFO keyspace, KEYS, SCAN,
RANDOMKEY and EXISTS reveal an unacknowledged write (a count, a name) as much as a GET does, so their
replies wait for the standby like the write's own; the same reads of a database with nothing
unacknowledged are answered at once. Real processes; the standby is stopped (SIGSTOP) so that nothing
is acknowledged while the test looks, and `--on-standby-loss hold` so that nothing is released."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis

from tests.replication.nodes import Node

pytestmark = pytest.mark.timeout(180)

READS: dict[str, Callable[[redis.Redis], Any]] = {
    "DBSIZE": lambda c: c.dbsize(),
    "INFO keyspace": lambda c: c.info("keyspace"),
    "KEYS": lambda c: c.keys("*"),
    "SCAN": lambda c: c.scan(0, count=100),
    "RANDOMKEY": lambda c: c.randomkey(),
    "EXISTS": lambda c: c.exists("fresh"),
}


def _in_thread(port: int, fn: Callable[[redis.Redis], Any], db: int = 0) -> dict[str, Any]:
    box: dict[str, Any] = {"done": threading.Event()}

    def run() -> None:
        with redis.Redis(port=port, db=db, socket_timeout=120) as c:
            box["value"] = fn(c)
        box["done"].set()

    threading.Thread(target=run, daemon=True).start()
    return box


def test_whole_database_reads_wait_for_the_standby(pair: tuple[int, Node, Node]) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b, "--on-standby-loss", "hold")
    a.wait_protected()
    with redis.Redis(port=port, db=1) as c:
        c.set("other", "1")  # database 1: acknowledged before the standby stops
    b.signal(signal.SIGSTOP)
    write = _in_thread(port, lambda c: c.set("fresh", "1"))
    a.wait_status(lambda s: s["held_replies"] >= 1, 30, "the write held")
    reads = {name: _in_thread(port, fn) for name, fn in READS.items()}
    # Every read of database 0 is held behind the write's epoch (the status counts them).
    a.wait_status(lambda s: s["held_replies"] >= 1 + len(READS), 30, "the reads held")
    assert not write["done"].is_set()
    assert [name for name, box in reads.items() if box["done"].is_set()] == []
    # Database 1 has nothing unacknowledged: the same reads there are answered while the standby is
    # still stopped (not INFO: it counts every database).
    clean = {
        name: _in_thread(port, fn, db=1)
        for name, fn in READS.items()
        if name not in ("EXISTS", "INFO keyspace")
    }
    for name, box in clean.items():
        assert box["done"].wait(30), f"{name} of a clean database was held"
    assert clean["DBSIZE"]["value"] == 1
    assert not write["done"].is_set()
    b.signal(signal.SIGCONT)
    assert write["done"].wait(60)
    for name, box in reads.items():
        assert box["done"].wait(60), f"{name} was never released"
    assert reads["DBSIZE"]["value"] == 1
    assert reads["KEYS"]["value"] == [b"fresh"]
    assert reads["EXISTS"]["value"] == 1
