"""Attacks on a real kvserver process (issue 10): no client stalls the others, no input gets a
traceback, SIGTERM does not wait for a long KEYS, memory comes back when attackers leave.

Bounded for CI (a few seconds each); the bounds on time are generous (they fail clearly on the old
behaviour, not on a busy machine): the goals themselves are measured by scripts/kv_attack.py.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvserver.resp import ReplyParser, encode_command

ELEMENT = b"$1\r\nx\r\n"
PIECES = [ELEMENT[:2], ELEMENT[2:5], ELEMENT[5:]]  # one more argument, in three reads


def connect(server) -> socket.socket:
    s = socket.create_connection((server.host, server.port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def pending_request(server, args: int) -> socket.socket:
    """A connection holding a half-received request: "*1048576" and `args` one-byte arguments."""
    s = connect(server)
    s.sendall(b"*1048576\r\n" + ELEMENT * args)
    return s


def wait_until_buffered(r, total: int) -> None:
    """Wait (deterministically: the server says so) until its clients' query buffers hold total bytes."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(int(c["qbuf"]) for c in r.client_list()) >= total:
            return
    raise AssertionError(f"the server did not receive {total} bytes in time")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def trickle_rounds(attackers: list[socket.socket], r, rounds: int) -> float:
    """Each round: every attacker sends one piece of one more argument, then a bystander PINGs.
    Returns the total time of the rounds."""
    t0 = time.monotonic()
    for i in range(rounds):
        for s in attackers:
            s.sendall(PIECES[i % 3])
        assert r.ping()
    return time.monotonic() - t0


def test_a_trickled_huge_request_does_not_stall_other_clients(kv_server):
    """Regression (issue 10): every read of a request being received re-parsed it from its start;
    with 500,000 arguments pending that is 130-400 ms per read here, 30 rounds 4-12 s. Now ~1 ms."""
    r = kv_server.client()
    attacker = pending_request(kv_server, 500_000)
    wait_until_buffered(r, 10 + 500_000 * len(ELEMENT))
    elapsed = trickle_rounds([attacker], r, 30)
    assert elapsed < 1.5, f"30 PINGs took {elapsed:.2f} s while one client trickled a request"
    attacker.close()
    assert r.ping()


def test_many_clients_trickling_requests_do_not_stall_other_clients(kv_server):
    """The same with 100 attackers of 5,000 pending arguments each (old: ~250 ms per round)."""
    r = kv_server.client()
    attackers = [pending_request(kv_server, 5_000) for _ in range(100)]
    try:
        wait_until_buffered(r, 100 * (10 + 5_000 * len(ELEMENT)))
        elapsed = trickle_rounds(attackers, r, 15)
        assert elapsed < 1.5, f"15 rounds took {elapsed:.2f} s while 100 clients trickled requests"
    finally:
        for s in attackers:
            s.close()
    assert r.ping()


def test_a_completed_trickled_request_runs(kv_server):
    """The incremental parser's result is the request: 20,000 arguments, the last 3,000 bytes of them
    sent 3 bytes at a time."""
    r = kv_server.client()
    s = connect(kv_server)
    args = [b"RPUSH", b"l"] + [b"%d" % i for i in range(20_000)]
    data = encode_command(*args)
    s.sendall(data[: len(data) - 3000])
    for i in range(len(data) - 3000, len(data), 3):
        s.sendall(data[i : i + 3])
    parser = ReplyParser()
    replies: list[object] = []
    while not replies:
        parser.feed(s.recv(65536))
        replies = parser.replies()
    assert replies == [20_000]
    assert r.lrange("l", -2, -1) == [b"19998", b"19999"]
    s.close()


PATHOLOGICAL = b"a*" * 20 + b"b"


def test_a_pathological_glob_answers_at_once(kv_server):
    """Regression (issue 10): KEYS a*a*...*b (20 stars) against a 40-byte key backtracked for days."""
    r = kv_server.client(socket_timeout=10)
    r.set(b"a" * 40, 1)
    r.set(b"a" * 40 + b"b", 2)
    r.hset("h", mapping={b"a" * 40: 1})
    r.sadd("s", b"a" * 40)
    r.zadd("z", {b"a" * 40: 1})
    t0 = time.monotonic()
    assert r.keys(PATHOLOGICAL) == [b"a" * 40 + b"b"]
    assert r.scan(0, match=PATHOLOGICAL, count=100)[1] == [b"a" * 40 + b"b"]
    assert r.hscan("h", 0, match=PATHOLOGICAL)[1] == {}
    assert r.sscan("s", 0, match=PATHOLOGICAL)[1] == []
    assert r.zscan("z", 0, match=PATHOLOGICAL)[1] == []
    assert r.config_get(b"*a" * 30 + b"*z") == {}
    assert time.monotonic() - t0 < 5.0


@pytest.mark.timeout(300)
def test_sigterm_does_not_wait_for_a_long_keys(kv_factory):
    """KEYS over 2,000,000 keys runs for seconds; a SIGTERM meanwhile used to wait for all of it.
    Now KEYS gives up between batches and the server shuts down (Redis finishes KEYS first, but its
    KEYS is C: here the loop's quiescence and shutdown should not wait on a Python scan)."""
    server = kv_factory()
    r = server.client(socket_timeout=300)
    r.execute_command("DEBUG", "POPULATE", 2_000_000)
    t0 = time.monotonic()
    assert len(r.keys(b"*1*2*")) > 0
    keys_s = time.monotonic() - t0
    pid = server.process.pid
    s = connect(server)
    s.sendall(b"KEYS *1*2*\r\n")
    # Deterministic: wait until the server has spent CPU on it (nothing else is running there).
    before = _cpu_s(pid)
    while _cpu_s(pid) - before < 0.2:
        pass
    t1 = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.wait_exit(timeout=120)
    exit_s = time.monotonic() - t1
    s.close()
    assert exit_s < max(0.8, keys_s / 4), f"exit took {exit_s:.2f} s; KEYS alone {keys_s:.2f} s"


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_memory_comes_back_after_clients_leave_half_sent_large_values(kv_server):
    """Regression (issue 10): rounds of 100 clients each sending half of a 1 MB value, then closing,
    left RSS growing (32 -> 197 MB after 5 rounds here): a closed client's buffers waited for a full
    garbage collection (a ClientState is in a reference cycle). Goal: back within 25%."""
    r = kv_server.client()
    assert r.ping()
    before = rss_mb(kv_server.process.pid)
    half = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n" + b"x" * 524_288
    for _ in range(3):
        socks = [connect(kv_server) for _ in range(100)]
        for s in socks:
            s.sendall(half)
        wait_until_buffered(r, 100 * len(half))
        for s in socks:
            s.close()
        while len(r.client_list()) > 1:
            pass  # the server is closing them
    # The heap is trimmed at the loop's next cron tick after the clients left (kvserver/memory.py), not
    # at the close itself: reading RSS at once raced with it (CI-like runs saw 55-87 MB). Wait for the
    # observable outcome, bounded; the bug this guards against never gave the memory back at all.
    deadline = time.monotonic() + 10
    after = rss_mb(kv_server.process.pid)
    while after > before * 1.25 and time.monotonic() < deadline:
        r.ping()  # a round trip: the loop has run an iteration (and its cron when due)
        after = rss_mb(kv_server.process.pid)
    assert after <= before * 1.25, f"RSS {before:.0f} MB before, {after:.0f} MB after"


# ------------------------------------------------------------------------------------------ fuzz
SAFE_COMMANDS = [
    [b"PING"],
    [b"ECHO", b"hello"],
    [b"SET", b"k", b"v"],
    [b"GET", b"k"],
    [b"DEL", b"k"],
    [b"KEYS", b"*k*?[a-z]*"],
    [b"SCAN", b"0", b"MATCH", b"*[^x]*", b"COUNT", b"10"],
    [b"HSET", b"h", b"f", b"v"],
    [b"RPUSH", b"l", b"a", b"b"],
    [b"MGET", b"k", b"h", b"l"],
]
NEAR_MISS = [b"*", b"$", b"0", b"1", b"9", b"-", b"+", b" ", b"\r", b"\n", b'"', b"\x00", b"x"]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    commands=st.lists(st.sampled_from(SAFE_COMMANDS), min_size=1, max_size=6),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(NEAR_MISS)), max_size=3),
    cuts=st.lists(st.integers(0, 10_000), max_size=5),
    glob=st.lists(st.sampled_from(list(b"a*?[]^-\\")), max_size=40).map(bytes),
)  # fmt: skip
def test_fuzzed_requests_get_replies_or_a_protocol_error(kv_shared, commands, edits, cuts, glob):
    """Near-miss requests in random pieces, and random glob patterns: every reply parses, the
    connection ends with replies or one protocol error, others are served, no traceback is logged."""
    data = bytearray(b"".join(encode_command(*argv) for argv in commands))
    data += encode_command(b"KEYS", glob)
    for at, byte in edits:
        data[at % len(data) : at % len(data) + 1] = byte
    s = connect(kv_shared)
    s.settimeout(10)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    try:
        for a, b in itertools.pairwise(points):
            s.sendall(bytes(data[a:b]))
        s.shutdown(socket.SHUT_WR)  # the server answers what it got, then closes
    except OSError:
        pass  # it closed first (a protocol error): its replies are still there to read
    parser = ReplyParser()
    replies: list[object] = []
    while chunk := _recv(s):
        parser.feed(chunk)
        replies.extend(parser.replies())
    s.close()
    errors = [str(x) for x in replies if type(x).__name__ == "ErrorReply"]
    protocol_errors = [e for e in errors if "Protocol error" in e]
    assert len(protocol_errors) <= 1
    assert not any("internal error" in e for e in errors), errors
    assert kv_shared.client().ping()
    assert "Traceback" not in kv_shared.log()


def _recv(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except ConnectionResetError:
        return b""
