"""Dirty tracking against a model: whatever commands run on a tracked primary, applying its epochs (and
a full sync taken at any point, interleaved with epochs as the link would carry them) to a standby
gives exactly the primary's databases. In-process: the same ServerState, Keyspace and payload code the
servers run, without sockets (the failover tests cover those)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from kvserver.config import Config
from kvserver.dirty import NATIVE, track
from kvserver.replication_support import PrimaryHost, StandbyHost
from kvserver.server import ServerState
from livepatch.replication import Protection, SnapshotRestart

KEYS = [b"a", b"b", b"c"]
DBS = 3

key = st.sampled_from(KEYS)
val = st.sampled_from([b"1", b"2", b"xyz", b"10"])
db = st.integers(0, DBS - 1)

command = st.one_of(
    st.tuples(st.just(b"SET"), key, val),
    st.tuples(st.just(b"SET"), key, val, st.just(b"PX"), st.sampled_from([b"1", b"100000"])),
    st.tuples(st.just(b"DEL"), key),
    st.tuples(st.just(b"INCR"), key),
    st.tuples(st.just(b"APPEND"), key, val),
    st.tuples(st.just(b"SETRANGE"), key, st.just(b"1"), val),
    st.tuples(st.just(b"LPUSH"), key, val),
    st.tuples(st.just(b"RPOP"), key),
    st.tuples(st.just(b"LMOVE"), key, key, st.just(b"LEFT"), st.just(b"RIGHT")),
    st.tuples(st.just(b"HSET"), key, val, val),
    st.tuples(st.just(b"HDEL"), key, val),
    st.tuples(st.just(b"HINCRBY"), key, val, st.just(b"3")),
    st.tuples(st.just(b"SADD"), key, val),
    st.tuples(st.just(b"SREM"), key, val),
    st.tuples(st.just(b"SMOVE"), key, key, val),
    st.tuples(st.just(b"SUNIONSTORE"), key, key, key),
    st.tuples(st.just(b"ZADD"), key, st.sampled_from([b"1", b"2.5"]), val),
    st.tuples(st.just(b"ZINCRBY"), key, st.just(b"2"), val),
    st.tuples(st.just(b"ZUNIONSTORE"), key, st.just(b"2"), key, key),
    st.tuples(st.just(b"ZPOPMIN"), key),
    st.tuples(st.just(b"LMPOP"), st.just(b"2"), key, key, st.just(b"LEFT")),
    st.tuples(st.just(b"EXPIRE"), key, st.just(b"1000")),
    st.tuples(st.just(b"PERSIST"), key),
    st.tuples(st.just(b"RENAME"), key, key),
    st.tuples(st.just(b"COPY"), key, key, st.just(b"DB"), st.sampled_from([b"0", b"1", b"2"])),
    st.tuples(st.just(b"MOVE"), key, st.sampled_from([b"0", b"1", b"2"])),
    st.tuples(st.just(b"GETDEL"), key),
    st.tuples(st.just(b"GET"), key),
    st.tuples(st.just(b"SELECT"), st.sampled_from([b"0", b"1", b"2"])),
    st.tuples(st.just(b"FLUSHDB")),
    st.tuples(st.just(b"FLUSHALL")),
    st.tuples(st.just(b"SWAPDB"), st.sampled_from([b"0", b"1"]), st.sampled_from([b"1", b"2"])),
    st.tuples(st.just(b"MULTI")),
    st.tuples(st.just(b"EXEC")),
).map(list)

# Both versions of the per-key notes: kvserver._dirtyfast's (C) and the Python fallback.
TRACKING = pytest.mark.parametrize(
    "native",
    [
        pytest.param(True, id="C", marks=pytest.mark.skipif(not NATIVE, reason="not built")),
        pytest.param(False, id="Python"),
    ],
)

# A step: a batch of commands (one read's worth), then maybe an epoch capture, maybe a sync start.
step = st.tuples(st.lists(command, min_size=1, max_size=4), st.booleans(), st.booleans())


def contents(server: ServerState) -> list[dict[bytes, Any]]:
    return [{k: (v, e) for k, v, e in d.items()} for d in server.databases]


def _in_place(*argv: bytes) -> list[Any]:
    """Create a value, ship it, change it in place (no Keyspace.store), ship again."""
    return [([list(argv)], True, False), ([[*argv[:2], b"more", *argv[3:]]], True, False)]


@TRACKING
@settings(max_examples=200, deadline=None)
@given(st.lists(step, min_size=1, max_size=30))
@example(_in_place(b"LPUSH", b"a", b"1"))
@example(_in_place(b"HSET", b"a", b"f", b"1"))
@example(_in_place(b"SADD", b"a", b"m"))
@example(_in_place(b"ZADD", b"a", b"1", b"m"))
def test_epochs_and_full_sync_rebuild_the_primary(native: bool, steps: list[Any]) -> None:
    primary = ServerState(Config(databases=DBS, livepatch=False))
    protection = Protection("commit")
    host = PrimaryHost(SimpleNamespace(server=primary))
    host.tracker = track(primary.databases, protection, native=native)
    client = primary.new_client(None, "model")
    # Two standbys: one follows from the start by epochs only, one joins with a full sync mid-way.
    follower = ServerState(Config(databases=DBS, livepatch=False))
    follower_host = StandbyHost(follower)
    joiner = ServerState(Config(databases=DBS, livepatch=False))
    joiner_host = StandbyHost(joiner)
    joiner_state = "waiting"  # -> syncing -> streaming

    def ship() -> None:
        payload = host.capture_epoch()
        protection.epoch += 1
        follower_host.apply_epoch(payload)
        if joiner_state != "waiting":
            joiner_host.apply_epoch(payload)

    def begin_sync() -> None:
        # What Primary._begin_sync does: cut the epoch being filled (only the follower, already
        # streaming, gets it), then snapshot.
        nonlocal joiner_state
        follower_host.apply_epoch(host.capture_epoch())
        protection.epoch += 1
        host.start_snapshot()
        joiner_host.begin_full_sync()
        joiner_state = "syncing"

    def next_chunk() -> bytes | None:
        while True:
            try:
                return host.snapshot_chunk(64)
            except SnapshotRestart:
                begin_sync()

    for batch, capture, sync in steps:
        before = primary.dirty
        primary.now_ms = 1_000_000  # fixed: expiry times are the same on both sides
        primary.process_commands(client, batch)
        client.out.clear()
        host.tracker.end_batch(primary.dirty != before)
        if joiner_state == "syncing":
            chunk = next_chunk()  # one chunk per step: epochs interleave with chunks
            if chunk is None:
                joiner_host.end_full_sync()
                joiner_state = "streaming"
            else:
                joiner_host.apply_snapshot_chunk(chunk)
        if sync and joiner_state == "waiting":
            begin_sync()
        if capture:
            ship()
    ship()
    if joiner_state == "syncing":
        while (chunk := next_chunk()) is not None:
            joiner_host.apply_snapshot_chunk(chunk)
        joiner_host.end_full_sync()
        joiner_state = "streaming"
    expected = contents(primary)
    assert contents(follower) == expected
    if joiner_state == "streaming":
        assert contents(joiner) == expected


@TRACKING
def test_reads_of_unacknowledged_writes_are_held_and_clean_reads_are_not(native: bool) -> None:
    primary = ServerState(Config(databases=2, livepatch=False))
    protection = Protection("commit")
    host = PrimaryHost(SimpleNamespace(server=primary))
    tracker = host.tracker = track(primary.databases, protection, native=native)
    client = primary.new_client(None, "model")

    def run(*argv: bytes) -> tuple[bool, int]:
        before = primary.dirty
        primary.process_commands(client, [list(argv)])
        client.out.clear()
        return tracker.end_batch(primary.dirty != before)

    assert run(b"SET", b"k", b"1") == (True, 0)
    assert protection.hold_until(True, 0) == 1
    assert run(b"GET", b"k") == (False, 1)  # written in epoch 1, not acknowledged: held
    assert run(b"GET", b"other") == (False, 0)  # nothing unacknowledged there: goes at once
    host.capture_epoch()
    protection.epoch = 2
    tracker.acknowledged(1)
    assert run(b"GET", b"k") == (False, 0)
    assert run(b"FLUSHDB") == (True, 0)
    assert run(b"GET", b"k") == (False, 2)  # its absence is the unacknowledged flush's doing
    assert run(b"LPUSH", b"l", b"x") == (True, 2)  # in-place writes count (the lookup touched it)
