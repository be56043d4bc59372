"""A live patch that changes the `__slots__` of kvserver's reference request parser, applied to a running
kvserver under load (issue 13, session 10).

The patch is shaped like the history's 5724a80d7a (PythonRequestParser gains slots): the parser gains
a slot `_errors`, set in `__init__` and read by the new code when it reports an invalid bulk length.
Every connection holds one (the `_fallback` of its accelerated parser), so a live parser cannot gain the
slot in place: `livepatch diff --accept-transformer` generates a hook that replaces the class and
rebuilds every live parser (livepatch.migrate). Checked from the outside, with real clients:
- a connection that sent half a request before the patch gets the whole request's reply after it (the
  parser's partial state moved to the new object);
- connections opened before the patch and pipelining redis-py writers running across it see no error,
  lose no acknowledged write, and answer like the new version (the new error text, which reads the new
  slot, on a connection opened before the patch);
- `livepatch revert` puts the old class back (session 11: the generated `untransform` hook, run while the
  threads are parked): a connection opened under the patch, with half a request in its parser, completes
  it after the revert and answers like the old version again (the old error text); nothing is lost.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pytest

import kvserver
from tests.support import livepatch_cli

SRC = Path(kvserver.__file__).resolve().parent
EDITS = [
    ('        "_chunks_len",\n', '        "_chunks_len",\n        "_errors",\n'),
    (
        "        self._limits = limits or Limits()\n",
        "        self._limits = limits or Limits()\n        self._errors = 0\n",
    ),
    (
        '                        raise ProtocolError("invalid bulk length")\n',
        "                        self._errors += 1\n"
        '                        raise ProtocolError(f"invalid bulk length (error {self._errors})")\n',
    ),
]


def build_patch(work: Path) -> tuple[Path, str]:
    old, new = work / "old", work / "new"
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(SRC, old / "kvserver", ignore=ignore)
    shutil.copytree(SRC, new / "kvserver", ignore=ignore)
    resp = new / "kvserver" / "resp.py"
    text = resp.read_text()
    for before, after in EDITS:
        assert text.count(before) == 1, before
        text = text.replace(before, after)
    resp.write_text(text)
    out = work / "slots.lpatch"
    refused = livepatch_cli("diff", str(old), str(new), "--package", "kvserver", "-o", str(out))
    assert refused.returncode != 0 and "changes its __slots__" in refused.stdout + refused.stderr
    done = livepatch_cli(
        "diff", str(old), str(new), "--package", "kvserver", "--accept-transformer", "-o", str(out)
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout


def recv_until(sock: socket.socket, end: bytes) -> bytes:
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


@pytest.mark.timeout(240)
def test_slots_change_of_the_request_parser_applied_live_under_load(kv_factory):
    work = Path(tempfile.mkdtemp(prefix="lp-kvc-"))  # short: a Unix socket path has ~100 bytes
    try:
        sock_path = work / "agent.sock"
        server = kv_factory("--livepatch-socket", str(sock_path), "--allow-unsigned")
        patch, shown = build_patch(work)
        assert "replace_class" in shown  # the generated hook is printed, never silent

        before = [server.client() for _ in range(5)]
        for i, r in enumerate(before):
            assert r.set(f"before:{i}", i) and r.get(f"before:{i}") == str(i).encode()
        # half a request, sent before the patch: the parser holds `SET half` and waits for the value
        half = socket.create_connection((server.host, server.port), timeout=30)
        half.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$5\r\nva")
        bad = socket.create_connection((server.host, server.port), timeout=30)
        bad.sendall(b"PING\r\n")
        assert recv_until(bad, b"\r\n") == b"+PONG\r\n"

        stop = threading.Event()
        errors: list[BaseException] = []
        acked: list[list[str]] = [[] for _ in range(4)]
        started = threading.Barrier(5)
        after_patch = threading.Event()
        continued = [threading.Event() for _ in range(4)]

        def write(n: int) -> None:
            r = server.client()
            i = 0
            try:
                started.wait(60)
                while not stop.is_set():
                    pipe = r.pipeline(transaction=False)
                    keys = [f"w{n}:{i + j}" for j in range(20)]
                    for key in keys:
                        pipe.set(key, key)
                    pipe.get(keys[0])
                    replies = pipe.execute()
                    assert replies[:-1] == [True] * 20 and replies[-1] == keys[0].encode()
                    acked[n].extend(keys)
                    i += 20
                    if after_patch.is_set():
                        continued[n].set()
            except BaseException as exc:
                errors.append(exc)
                for e in continued:
                    e.set()

        writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in writers:
            t.start()
        try:
            started.wait(60)
            done = livepatch_cli("apply", str(patch), "--socket", str(sock_path), "--json")
            assert done.returncode == 0, done.stdout + done.stderr
            after_patch.set()
            # the rest of the half request: the rebuilt parser completes what the old one began
            half.sendall(b"lue\r\n")
            assert recv_until(half, b"\r\n") == b"+OK\r\n"
            assert before[0].get("half") == b"value"
            # a connection opened before the patch answers like the new version (reads the new slot)
            bad.sendall(b"*1\r\n$abc\r\n")
            assert b"invalid bulk length (error 1)" in recv_until(bad, b"\r\n")
            for i, r in enumerate(before):
                assert r.get(f"before:{i}") == str(i).encode() and r.incr(f"n:{i}") == 1
            for e in continued:  # every writer pipelined across the swap and after it
                assert e.wait(60)
        finally:
            stop.set()
            for t in writers:
                t.join(30)
            half.close()
            bad.close()
        assert not errors, errors
        r = server.client()
        pipe = r.pipeline(transaction=False)
        keys = [k for keys in acked for k in keys]
        for key in keys:
            pipe.exists(key)
        assert all(pipe.execute()), "an acknowledged write is missing"
        # the way back: parsers made by the new class (a connection opened under the patch, with half
        # a request buffered) are rebuilt as the old class's, less the `_errors` slot it never had
        half2 = socket.create_connection((server.host, server.port), timeout=30)
        half2.sendall(b"*3\r\n$3\r\nSET\r\n$5\r\nhalf2\r\n$2\r\nv")
        bad2 = socket.create_connection((server.host, server.port), timeout=30)
        bad2.sendall(b"PING\r\n")
        assert recv_until(bad2, b"\r\n") == b"+PONG\r\n"
        reverted = livepatch_cli("revert", "--socket", str(sock_path))
        assert reverted.returncode == 0, reverted.stdout + reverted.stderr
        half2.sendall(b"2\r\n")
        assert recv_until(half2, b"\r\n") == b"+OK\r\n"
        assert r.get("half2") == b"v2"
        bad2.sendall(b"*1\r\n$abc\r\n")
        reply = recv_until(bad2, b"\r\n")
        assert b"invalid bulk length" in reply and b"(error" not in reply  # the old code again
        for i, c in enumerate(before):
            assert c.get(f"before:{i}") == str(i).encode() and c.incr(f"n:{i}") == 2
        half2.close()
        bad2.close()
        assert server.alive()
    finally:
        shutil.rmtree(work, ignore_errors=True)
