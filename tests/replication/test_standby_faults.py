"""Faults of the standby and of the replication link, with real processes (issue 15):
a stopped or killed standby stalls the primary for a bounded time only (degrade) or holds only what
must wait (hold); delays, dropped connections and a half-open link through a fault-injecting proxy
lose no acknowledged write and never make two servers serve the address."""

from __future__ import annotations

import pickle
import signal
import socket
import threading
import time

import pytest
import redis
import zstandard

from livepatch.replication import wire
from livepatch.replication.wire import Frame, Kind
from tests.replication.faultproxy import FaultProxy
from tests.replication.nodes import Node, wait_serving
from tests.replication.workload import Writer, check

pytestmark = pytest.mark.timeout(240)

BOUND_MS = 500  # --standby-timeout-ms in these tests
SLACK_S = 2.0  # scheduling on a busy 2-core machine
# Stores in one snapshot chunk of the busy-standby test: over 0.1 s of work at any speed CPython
# runs (well over standby.ALIVE_S), ~0.5 s here at load 2.
CHUNK_ENTRIES = 2_000_000


def _acked_after(writer: Writer, since: float) -> list[float]:
    with writer.lock:
        return [lat for start, lat in writer.latencies if start >= since]


def test_stopped_then_killed_standby_stalls_the_primary_for_a_bounded_time(
    pair: tuple[int, Node, Node],
) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b, "--standby-timeout-ms", str(BOUND_MS))
    a.wait_protected()
    writer = Writer(port)
    writer.start()
    try:
        for fault in ("SIGSTOP", "kill -9"):
            degradations = a.status()["degradations"]
            t = time.monotonic()
            if fault == "SIGSTOP":
                b.signal(signal.SIGSTOP)
            else:
                b.kill()
            a.wait_status(lambda s, d=degradations: s["degradations"] > d, 30, "degradation")
            # Writes go on: wait for 50 acknowledged after the fault, each within the bound.
            deadline = time.monotonic() + 30
            while len(_acked_after(writer, t)) < 50 and time.monotonic() < deadline:
                time.sleep(0.05)
            latencies = _acked_after(writer, t)
            assert len(latencies) >= 50, f"{fault}: the primary stopped acknowledging writes"
            assert max(latencies) < BOUND_MS / 1000 + SLACK_S, (fault, max(latencies))
            assert not a.status()["protected"]
            if fault == "SIGSTOP":
                b.signal(signal.SIGCONT)
                a.wait_protected()  # it caught up (resynchronised): protected again
                assert a.status()["protected"]
    finally:
        writer.stop()
    assert writer.errors == 0


def test_hold_policy_holds_writes_but_answers_clean_reads(pair: tuple[int, Node, Node]) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b, "--on-standby-loss", "hold", "--standby-timeout-ms", str(BOUND_MS))
    a.wait_protected()
    with redis.Redis(port=port, socket_timeout=60) as c:
        c.set("clean", "1")
        b.signal(signal.SIGSTOP)
        done = threading.Event()

        def write() -> None:
            with redis.Redis(port=port, socket_timeout=120) as w:
                w.set("held", "1")
            done.set()

        threading.Thread(target=write, daemon=True).start()
        t = time.monotonic()
        assert c.get("clean") == b"1"  # not written in an unacknowledged epoch: answered at once
        assert time.monotonic() - t < SLACK_S
        assert not done.wait(2 * BOUND_MS / 1000 + 1.0), (
            "a write was acknowledged without the standby"
        )
        assert a.status()["held_replies"] >= 1
        b.signal(signal.SIGCONT)
        assert done.wait(60), "the held write was never released after the standby came back"
    a.kill()
    wait_serving(port)
    with redis.Redis(port=port) as c:
        assert c.get("held") == b"1"


def _run_through_proxy(pair: tuple[int, Node, Node], fault: str) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    proxy = FaultProxy(b.repl_port)
    try:
        a.start_primary(
            port,
            b,
            "--on-standby-loss",
            "hold",
            "--standby-timeout-ms",
            str(BOUND_MS),
            replicate_to=proxy.port,
        )
        a.wait_protected()
        writer = Writer(port)
        writer.start()
        try:
            run_id = redis.Redis(port=port).info("server")["run_id"]
            time.sleep(0.3)
            if fault == "delay":
                proxy.delay_s = 0.03
                time.sleep(1.5)
            elif fault == "drop":
                for _ in range(3):
                    syncs = a.status()["full_syncs"]
                    proxy.drop()
                    a.wait_status(
                        lambda s, n=syncs: (
                            s["full_syncs"] > n and s["protected"] and s["state"] == "streaming"
                        ),
                        30,
                        "resync",
                    )
            else:  # half-open: both sides silent, sockets open
                proxy.blackhole()
                b.wait_status(lambda s: s["state"] == "primary-lost", 30, "primary declared lost")
                acked = len(writer.snapshot()[0])
                time.sleep(2 * BOUND_MS / 1000)
                # Cut off, the standby must not serve the address the primary still holds
                assert b.status()["role"] == "standby"
                assert redis.Redis(port=port).info("server")["run_id"] == run_id
                # and no write may be acknowledged meanwhile (at most one already in flight)
                assert len(writer.snapshot()[0]) <= acked + 1
                proxy.heal()
            a.wait_protected()
            before = len(writer.snapshot()[0])
            deadline = time.monotonic() + 30
            while len(writer.snapshot()[0]) < before + 20 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(writer.snapshot()[0]) >= before + 20, "writes did not resume"
            a.kill()
            wait_serving(port)
            assert redis.Redis(port=port).info("server")["run_id"] != run_id
            assert check(port, writer) == []
        finally:
            writer.stop()
    finally:
        proxy.close()


@pytest.mark.parametrize("fault", ["delay", "drop", "half-open"])
def test_link_faults_lose_no_acknowledged_write(pair: tuple[int, Node, Node], fault: str) -> None:
    _run_through_proxy(pair, fault)


@pytest.mark.parametrize("synced_before", [False, True])
def test_a_standby_waits_out_a_pause_of_its_primary_during_a_full_sync(
    pair: tuple[int, Node, Node], synced_before: bool
) -> None:
    """A primary paused longer than --failover-after-ms in the middle of a full sync must not make
    the standby drop the link and so restart the sync (on a loaded machine the restarts never ended:
    the 100-kill bench stalled twice). Both the first sync (a fresh standby, which could not take
    over anyway) and a later one (after the link was lost)."""
    port, a, b = pair
    if synced_before:
        b.start_standby(port, a)
        a.start_primary(port, b)
        a.wait_protected()
    else:
        a.start_primary(port, b)  # no standby yet: it connects with backoff
    with redis.Redis(port=port, socket_timeout=120) as c:
        c.execute_command("DEBUG", "POPULATE", 300_000)
    if synced_before:
        b.signal(signal.SIGSTOP)  # the primary drops the silent link (2 s), and syncs again
        try:
            a.wait_status(lambda s: s.get("state") != "streaming", 60, "link dropped")
        finally:
            b.signal(signal.SIGCONT)
    else:
        b.start_standby(port, a)
    # The link drop may take more than one reconnection to settle (both ends notice it), so the sync
    # the pause hits is whichever is running now; the pause must not add one more.
    least = 2 if synced_before else 1
    syncs = b.wait_status(
        lambda s: s.get("state") == "syncing" and s.get("full_syncs", 0) >= least, 60, "syncing"
    )["full_syncs"]
    a.signal(signal.SIGSTOP)
    try:
        time.sleep(1.0)  # the fault: the primary silent for 1 s, over 3 x --failover-after-ms
    finally:
        a.signal(signal.SIGCONT)
    a.wait_protected(120)
    status = b.status()
    assert status["connections"] == syncs and status["full_syncs"] == syncs, status


def test_the_primary_waits_out_a_pause_of_its_standby_applying_a_full_sync(
    pair: tuple[int, Node, Node],
) -> None:
    """The primary has sent the whole snapshot (SNAPSHOT_END queued) long before a loaded standby has
    applied it; a standby silent for more than the link's 2 s then must not be dropped before it
    acknowledges the sync's end (the sync's 10 s hold until then), or the sync restarts, and on a
    loaded machine restarted forever (the third stall of the 100-kill bench, session 7)."""
    port, a, b = pair
    a.start_primary(port, b)  # --standby-timeout-ms 1000: the link's silence 2 s, 10 s in a sync
    with redis.Redis(port=port, socket_timeout=120) as c:
        # ~6 MB pickled (~31 bytes a key), under primary.SYNC_QUEUE_BYTES (8 MB): the primary's
        # queue alone takes the whole snapshot while the standby is stopped. 300,000 keys were
        # ~9.1 MB: the rest had to fit in the kernel's buffers, and the queue's bytes count until
        # the sender's batch is written, so a stop early in the sync (a loaded machine, session 8:
        # "snapshot sent not reached in 6 s") could leave it unfinished, against the premise.
        c.execute_command("DEBUG", "POPULATE", 200_000)
    b.start_standby(port, a)
    b.wait_status(lambda s: s.get("state") == "syncing", 60, "syncing")
    b.signal(signal.SIGSTOP)  # applying the snapshot: stopped before it could acknowledge it
    try:
        # The primary produces the rest of the snapshot meanwhile (the kernel's buffers and its
        # queue take it) and so counts the sync as sent; the standby has acknowledged nothing.
        sent = a.wait_status(lambda s: s.get("state") == "streaming", 6, "snapshot sent")
        assert sent["full_syncs"] == 1 and sent["acked_epoch"] == 0, sent
        time.sleep(3.0)  # the fault: silent 3 s after that, over the link's 2 s, under 10 s
    finally:
        b.signal(signal.SIGCONT)
    a.wait_protected(120)
    assert a.status()["full_syncs"] == 1
    status = b.status()
    assert status["connections"] == 1 and status["full_syncs"] == 1, status


def _read_frames(sock: socket.socket, decoder: wire.FrameDecoder, timeout_s: float) -> list[Frame]:
    """The next frames the standby sends (at least one); TimeoutError after timeout_s of nothing."""
    sock.settimeout(timeout_s)
    while True:
        data = sock.recv(4096)
        assert data, "the standby closed the link"
        frames = decoder.feed(data)
        if frames:
            return frames


def test_a_standby_busy_applying_a_long_batch_keeps_saying_it_is_alive(
    pair: tuple[int, Node, Node],
) -> None:
    """One read can hold seconds of work (frames queue up while a loaded standby applies, or
    while the primary was paused: a whole 300,000-key snapshot compresses to ~400 KB and came in
    one read). The standby acknowledged only once it had applied all of it, so the primary heard
    nothing for that long and dropped the link as silent (10 s during a sync, 2 s after), cutting
    the sync short to start it again (the flake of test_a_standby_waits_out_..._full_sync[True],
    session 9). This test plays the primary over a real socket: the batch reaches the stopped
    standby whole, and each chunk takes the standby well over standby.ALIVE_S to apply
    (CHUNK_ENTRIES stores), so it must say ACK(0) between them, before the sync's ACK."""
    port, _, b = pair
    b.start_standby(port, None)
    term, begin_epoch, chunks = 1, 5, 4
    entry = (b"key", b"value", None)  # one object: the pickle repeats a 2-byte reference
    chunk = pickle.dumps((0, [entry] * CHUNK_ENTRIES), protocol=pickle.HIGHEST_PROTOCOL)
    packed = zstandard.ZstdCompressor(level=3).compress(chunk)
    batch = [Frame(Kind.SNAPSHOT_BEGIN, begin_epoch, term)]
    batch += [Frame(Kind.SNAPSHOT_CHUNK, 0, term, packed, wire.COMPRESSED)] * chunks
    batch.append(Frame(Kind.SNAPSHOT_END, begin_epoch - 1, term))
    data = b"".join(wire.encode(f) for f in batch)
    assert len(data) < 16 << 10  # the receive buffer takes it whole while the standby is stopped
    with socket.create_connection(("127.0.0.1", b.repl_port), timeout=10) as sock:
        decoder = wire.FrameDecoder()
        sock.sendall(wire.encode(Frame(Kind.HELLO, 0, term, b"", wire.with_version())))
        assert _read_frames(sock, decoder, 10)[0].kind == Kind.WELCOME
        b.signal(signal.SIGSTOP)
        try:
            sock.sendall(data)  # one read for the standby: it is stopped until it has all of it
        finally:
            b.signal(signal.SIGCONT)
        acks: list[int] = []
        while begin_epoch - 1 not in acks:
            frames = _read_frames(sock, decoder, 60)  # bounded: a loaded machine applies slowly
            assert all(f.kind == Kind.ACK for f in frames), frames
            acks += [f.epoch for f in frames]
    # Before the fix: [4], nothing until the whole batch was applied.
    assert acks.count(0) >= chunks - 1 and acks[-1] == begin_epoch - 1, acks
    status = b.status()
    assert status["full_syncs"] == 1 and status["connections"] == 1, status
