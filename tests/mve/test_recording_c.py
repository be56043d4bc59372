"""The C recording (kvserver._mverecord) writes the same log as the pure-Python recorder.

Both recorders run the same requests against two fresh servers in process: single requests, several
in one read, MULTI/EXEC, errors, a client parked in BLPOP woken by a push with a backlog, pub/sub, a
connection event and a cron tick. The log each one produced, encoded as it goes to the follower, must
decode to the same records, and the session's request count must be the requests executed.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

import pytest

from kvserver import mve_support
from kvserver.config import Config
from kvserver.mve_support import VIRTUAL_SOCKET, KvHost
from kvserver.server import ServerState
from livepatch.mve import channel
from livepatch.mve.session import Session

_mverecord = pytest.importorskip("kvserver._mverecord")


class _Loop:
    def __init__(self, server: ServerState) -> None:
        self.server = server


def _session() -> tuple[Session, socket.socket]:
    """A Session reduced to its Recorder half (no fork), whose log goes into a socketpair."""
    leader, follower = socket.socketpair()
    session = Session.__new__(Session)
    session.seq = 0
    session._uncounted = 0
    session._writer = channel.LogWriter(leader, 1 << 30)
    return session, follower


def _drain(sock: socket.socket) -> list[Any]:
    sock.setblocking(False)
    reader = channel.FrameReader()
    records: list[Any] = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            break
        for frame in reader.feed(data):
            records.extend(frame)
    return records


def _run(python_recorder: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], int]:
    if python_recorder:
        monkeypatch.setenv("LIVEPATCH_MVE_PY_RECORDER", "1")
    else:
        monkeypatch.delenv("LIVEPATCH_MVE_PY_RECORDER", raising=False)
    server = ServerState(Config())
    server.now_ms = 1_764_700_000_123
    session, end = _session()
    a, b, c = (ServerState.new_client(server, VIRTUAL_SOCKET, "t") for _ in range(3))
    KvHost(_Loop(server)).start_recording(session)  # type: ignore[arg-type]
    process = server.process_commands
    assert (type(process).__name__ == "Recorder") != python_recorder
    executed = 0

    def send(client: Any, *commands: list[bytes]) -> None:
        nonlocal executed
        process(client, list(commands))
        executed += len(commands)
        client.out.clear()

    for i in range(300):  # more than a batch: flushes in the middle
        send(a, [b"SET", b"k%d" % i, b"v" * (i % 300)])
        send(b, [b"GET", b"k%d" % (i // 2)])
    send(a, [b"INCR", b"n"], [b"INCRBY", b"n", b"-7000000000"], [b"GET", b"n"])  # one read
    send(a, [b"MULTI"])
    send(a, [b"SET", b"m", b"1"])
    send(a, [b"EXEC"])
    send(b, [b"NOSUCHCOMMAND", b"x"])
    send(b, [b"GET"])  # wrong arity
    send(c, [b"BLPOP", b"q", b"0"])  # parked
    send(c, [b"GET", b"k1"])  # waits in its backlog
    send(a, [b"LPUSH", b"q", b"x", b"y"])  # wakes c, runs its backlog inside this request
    send(b, [b"SUBSCRIBE", b"ch"])
    send(a, [b"PUBLISH", b"ch", b"hello"])
    server.new_client(VIRTUAL_SOCKET, "late")
    server.cron(server.now_ms + 100)
    d = max(server.clients.values(), key=lambda cl: cl.id)
    send(d, [b"PING"])
    server.forget_client(d)
    session.flush()
    return _drain(end), session.seq - executed


def test_the_c_recorder_logs_what_the_python_recorder_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert mve_support._CRecorder is not None, "kvserver._mverecord was not built"
    c_log, c_miscount = _run(False, monkeypatch)
    py_log, py_miscount = _run(True, monkeypatch)
    assert len(c_log) > 600
    assert c_log == py_log
    kinds = {record[0] for record in c_log}
    assert kinds == {"x1", "x", "o", "c", "t"}
    # The woken client's reply (and its backlog's) is part of the push's record.
    push = next(r for r in c_log if r[0] in ("x", "x1") and b"LPUSH" in str(r[3]).encode())
    assert b">>> connection" in (push[4] if push[0] == "x1" else push[4][0])
    assert c_miscount == 0 and py_miscount == 0  # session.seq counts exactly what was executed


def test_encode_frame_is_a_pickle_of_the_batch_and_declines_what_it_does_not_write() -> None:
    records: list[Any] = [
        ("x1", 7, 1_764_700_000_123, [b"SET", b"k" * 300, b""], b"+OK\r\n"),
        ("x", 8, -1, [[b"A"], [b"B" * 70_000]], [b"r", b"s" * 300]),
        ("o", 9, "127.0.0.1:5555 é"),
        ("c", 9),
        ("t", 0),
        ("n", None, True, False, (), [], (1,), 2**31, -(2**31) - 1, 2**63 - 1, -(2**63)),
    ]
    frame = _mverecord.encode_frame(records)
    (size,) = struct.unpack("!I", frame[:4])
    assert size == len(frame) - 4
    assert pickle.loads(frame[4:]) == records
    assert channel.FrameReader().feed(frame) == [records]
    for other in ([("h", {"state": 1})], [("x", 2**64)], [("o", 1, "\ud800")]):
        assert _mverecord.encode_frame(other) is None  # the writer pickles such a batch itself
