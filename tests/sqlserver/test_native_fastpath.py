"""The C fast path (sqlserver._pgfast, sqlserver/native.py) answers exactly like the Python paths, serves
only what it was planned for, and steps aside for live patches.

In-process: a Session with its Native, driven with the codec's client side. The general path is forced by
appending a Flush to the same burst (no fast path accepts it), so both see the same statement, parameters
and data. `Native.served` counts the bursts the C code answered, so each test also shows which path ran.
Over a real process: a livepatch patch of a function the C code stands in for (the int encoder) takes
effect at the next transaction of a connection that the C code was serving, and a revert turns it back.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sqlserver
from sqlserver import native
from sqlserver import results as res
from sqlserver.protocol import (
    Bind,
    Close,
    Describe,
    Execute,
    Flush,
    Parse,
    Query,
    Sync,
    encode_frontend,
)
from tests.sqlserver.session_helpers import SessionClient, new_state
from tests.support import livepatch_cli

needs_native = pytest.mark.skipif(not native.AVAILABLE, reason="sqlserver._pgfast is not built")


def test_native_fast_path_is_built():
    """Optional for users; CI must build it (and load it), or the tests below would not run there."""
    if not native.AVAILABLE:
        msg = "sqlserver._pgfast is not built or could not load SQLite (no C compiler at install?)"
        if os.environ.get("LIVEPATCH_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    assert native.guards_hold()


def burst(*msgs) -> bytes:
    return b"".join(encode_frontend(m) for m in msgs)


def execute(name: str, params: tuple[bytes | None, ...], describe: bool, rfmt=(), pfmt=()) -> bytes:
    d = (Describe("P", ""),) if describe else ()
    return burst(Bind("", name, pfmt, params, rfmt), *d, Execute("", 0), Sync())


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Iterator[SessionClient]:
    state = new_state(tmp_path_factory.mktemp("native"))
    c = SessionClient(state)
    c.query("create table a (aid int primary key, abalance int, name text, f float8, big bigint)")
    for i in range(1, 21):
        name = "NULL" if i % 7 == 0 else f"'n{i}'" if i % 5 else "'nä'"
        c.query(f"insert into a values ({i}, {i * 10}, {name}, {i / 4}, {i * 10**15})")
    c.query("insert into a values (21, NULL, 'x', 0, -9223372036854775808)")
    c.query("insert into a values (22, 7, '', 0, 9223372036854775807)")
    c.send(
        Parse("one", "select abalance, name, big from a where aid = $1", ()),
        Parse("range", "select aid, name from a where aid between $1 and $2 order by aid", ()),
        Parse("byname", "select aid from a where name = $1", ()),
        Parse("float", "select f from a where aid = $1", ()),
        Parse("begin", "BEGIN;", ()),
        Parse("end", "END;", ()),
        Sync(),
    )
    yield c
    state.shutdown()


def both(c: SessionClient, data: bytes) -> tuple[bytes, bytes, int]:
    """(fast reply, general reply, bursts the C code answered for the fast one)."""
    nat = c.session.native
    before = nat.served if nat is not None else 0
    fast = c.session.receive(data)
    served = (nat.served if nat is not None else 0) - before
    slow = c.session.receive(data + encode_frontend(Flush()))
    return fast, slow, served


@needs_native
@settings(max_examples=80, deadline=None)
@given(
    aid=st.one_of(
        st.integers(-3, 25).map(lambda i: str(i).encode()),
        st.sampled_from([b"+5", b" 5", b"5 ", b"1_0", b"0005", b"99999999999999999999", b"x", b""]),
        st.none(),
    ),
    describe=st.booleans(),
    rfmt=st.sampled_from([(), (0,), (1,), (0, 0, 0), (0, 0)]),
)
def test_native_and_general_paths_agree(client, aid, describe, rfmt):
    fast, slow, _ = both(client, execute("one", (aid,), describe, rfmt))
    assert fast == slow


@needs_native
@settings(max_examples=60, deadline=None)
@given(
    aid=st.one_of(
        st.integers(-(2**31), 2**31 - 1).map(lambda i: struct.pack("!i", i)),
        st.integers(-3, 25).map(lambda i: struct.pack("!i", i)),
        st.sampled_from([b"\x00\x01", b"\x00" * 8, b"", b"\x00\x00\x00\x05\x00"]),
    ),
    pfmt=st.sampled_from([(1,), ()]),
    describe=st.booleans(),
)
def test_binary_integer_parameters_agree(client, aid, pfmt, describe):
    """psycopg sends integers in binary: 2, 4 or 8 bytes as the parameter's type says."""
    client.session.receive(execute("one", (struct.pack("!i", 1),), False, (), (1,)))
    fast, slow, served = both(client, execute("one", (aid,), describe, (), pfmt))
    assert fast == slow
    if pfmt == (1,) and len(aid) == 4:
        (v,) = struct.unpack("!i", aid)
        assert served == (0 if 1 <= v <= 20 and v % 5 == 0 else 1)  # 'nä' is Python's to encode


@needs_native
@settings(max_examples=40, deadline=None)
@given(lo=st.integers(-2, 23), hi=st.integers(-2, 23), describe=st.booleans())
def test_several_rows_nulls_and_non_ascii_text_agree(client, lo, hi, describe):
    client.session.receive(execute("range", (b"1", b"1"), False))  # planned by its first run
    fast, slow, served = both(
        client, execute("range", (str(lo).encode(), str(hi).encode()), describe)
    )
    assert fast == slow
    if not any(i % 5 == 0 for i in range(max(lo, 1), min(hi, 22) + 1)):
        assert served == 1  # ASCII text and NULLs only: the C code answered
    else:
        assert served == 0  # 'nä' is left to Python's encoder


@needs_native
@settings(max_examples=300, deadline=None)
@given(
    describe=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 8),
    extra=st.binary(max_size=6),
)
def test_the_c_code_answers_no_altered_burst_differently(client, describe, edits, cut, extra):
    """Bytes flipped, cut off or added: the C code declines, or answers exactly what Python does."""
    data = bytearray(execute("one", (b"3",), describe))
    for i, b in edits:
        data[i % len(data)] = b
    altered = bytes(data[: len(data) - cut]) + extra
    session = client.session
    nat = session.native
    client.session.receive(execute("one", (b"3",), describe))  # planned and enabled
    reply = nat.run(altered)
    if reply is None:
        return
    session.native = None
    try:
        assert session.receive(altered) == reply
    finally:
        session.native = nat


@needs_native
@pytest.mark.parametrize("length", [0, 3, 4, 5, 11, 12])
def test_a_bind_too_short_to_hold_its_fields_is_declined(client, length):
    """A Bind whose length field is shorter than its mandatory fields, followed by a valid tail: the
    C code must not read its fields past the stated end (it once searched for the name's NUL there)."""
    nat = client.session.native
    client.session.receive(execute("one", (b"3",), True))  # planned and enabled
    tail = burst(Describe("P", ""), Execute("", 0), Sync())
    data = b"B" + struct.pack("!i", length) + b"\x00" * max(0, length - 4) + tail
    assert nat.run(data + b"\x01" * 20) is None
    assert nat.run(data) is None


@needs_native
@pytest.mark.parametrize("value", ["n1", "nä", "", "no such name"])
def test_text_parameters_agree(client, value):
    for _ in range(2):  # the first run plans the statement, the second may run in C
        fast, slow, served = both(client, execute("byname", (value.encode(),), True))
        assert fast == slow
    assert served == (1 if value.isascii() else 0)


@needs_native
def test_the_c_code_serves_a_planned_select_and_not_the_rest(client):
    data = execute("one", (b"3",), True)
    client.session.receive(data)  # planned (if not yet)
    nat = client.session.native
    before = nat.served
    client.session.receive(data)
    assert nat.served == before + 1
    # a float column is not planned: Python's repr-based encoder answers
    for _ in range(2):
        fast, slow, served = both(client, execute("float", (b"2",), True))
        assert fast == slow and served == 0
    # inside a transaction block the C code never answers, and the block sees its own state
    client.session.receive(execute("begin", (), False))
    fast, slow, served = both(client, data)
    assert fast == slow and served == 0
    client.session.receive(execute("end", (), False))
    assert client.session.receive(data) and nat.served == before + 2


@needs_native
def test_a_replaced_or_closed_statement_is_never_served_from_the_old_plan(tmp_path):
    state = new_state(tmp_path)
    try:
        c = SessionClient(state)
        c.query("create table t (k int primary key, v int, w text)")
        c.query("insert into t values (1, 10, 'ten'), (2, 20, 'twenty')")
        c.send(Parse("s", "select v from t where k = $1", ()), Sync())
        data = execute("s", (b"1",), True)
        first = c.session.receive(data)
        assert c.session.receive(data) == first and c.session.native.served == 1
        # Close, then the same name for another statement
        c.send(Close("S", "s"), Sync())
        c.send(Parse("s", "select w from t where k = $1", ()), Sync())
        again = c.session.receive(data)
        assert b"ten" in again and b"10" not in again
        assert c.session.receive(data) == again
        # DEALLOCATE ALL, then the name again
        assert c.query("deallocate all").tags == ["DEALLOCATE ALL"]
        c.send(Parse("s", "select k from t where v = $1", ()), Sync())
        third = c.session.receive(execute("s", (b"20",), True))
        assert third == c.session.receive(execute("s", (b"20",), True))
        assert b"\x00\x00\x00\x012" in third  # k = 2, one byte long
        # a write committed by the general path is seen by the next C-served read
        c.query("update t set w = 'zwanzig' where k = 2")
        c.send(Parse("w", "select w from t where k = $1", ()), Sync())
        c.session.receive(execute("w", (b"2",), False))
        served = c.session.native.served
        assert b"zwanzig" in c.session.receive(execute("w", (b"2",), False))
        assert c.session.native.served == served + 1
    finally:
        state.shutdown()


@needs_native
def test_a_replaced_function_turns_the_c_code_off(client):
    """What a live patch does to a function (its __code__ replaced): the C code declines from then on,
    so the patched Python runs; putting the code back turns it on again."""
    data = execute("one", (b"4",), True)
    client.session.receive(data)
    original = res._text_int.__code__
    patched = (lambda v: (str(v) + "0").encode()).__code__  # a visible change: one more digit
    nat = client.session.native
    try:
        res._text_int.__code__ = patched
        assert not native.guards_hold()
        before = nat.served
        reply = client.session.receive(data)
        assert nat.served == before
        assert b"\x00\x00\x00\x03400" in reply  # abalance 40 through the patched encoder
    finally:
        res._text_int.__code__ = original
    assert native.guards_hold()
    before = nat.served
    assert b"\x00\x00\x00\x0240" in client.session.receive(data)
    assert nat.served == before + 1


@needs_native
def test_an_interrupted_statement_is_answered_as_cancelled_not_run_again(client):
    """sqlite3_interrupt (a CancelRequest) stops the C code's step: the reply is 57014. Running the
    statement again in Python would lose the cancel. A progress handler interrupts exactly once."""
    data = execute("one", (b"8",), True)
    normal = client.session.receive(data)
    client.session.receive(data)  # planned, enabled
    nat = client.session.native
    conn = client.session.executor.conn
    calls: list[int] = []
    conn.set_progress_handler(lambda: (calls.append(1), len(calls) == 1)[1], 1)
    try:
        before = nat.served
        reply = client.session.receive(data)
    finally:
        conn.set_progress_handler(None, 1)
    assert calls and nat.served == before
    assert b"C57014" in reply and reply.startswith(b"2") and reply.endswith(b"Z\x00\x00\x00\x05I")
    assert b"SELECT" not in reply
    assert client.session.receive(data) == normal and nat.served == before + 1


@needs_native
def test_every_function_the_c_code_stands_in_for_is_guarded():
    """Replacing the code of any of them (what a patch does) turns the C code off."""
    from sqlserver.session import Session

    funcs = [*native._guarded(), Session.receive, Session._fast, Session._cancelled]
    assert len(funcs) > 15
    for f in funcs:
        original = f.__code__
        f.__code__ = original.replace()  # an equal copy: a different object, as a patch's would be
        try:
            assert not native.guards_hold(), f
        finally:
            f.__code__ = original
        assert native.guards_hold(), f


@needs_native
def test_serve_reads_answers_and_hands_back_over_a_socket(client):
    """thread-per-connection's loop: Native.serve(fd) answers a burst itself (None), hands back any other
    bytes, b"" at end of file, BlockingIOError when the socket's receive timeout expires."""
    data = execute("one", (b"6",), True)
    expected = client.session.receive(data)
    client.session.receive(data)  # planned, enabled
    nat = client.session.native
    a, b = socket.socketpair()
    try:
        a.settimeout(30)
        a.sendall(data)
        assert nat.serve(b.fileno()) is None
        got = b""
        while len(got) < len(expected):
            got += a.recv(65536)
        assert got == expected
        other = burst(Query("select 1"))
        a.sendall(other)
        assert nat.serve(b.fileno()) == other
        b.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVTIMEO, b"\x00" * 8 + (1000).to_bytes(8, "little")
        )
        with pytest.raises(BlockingIOError):
            nat.serve(b.fileno())
        a.shutdown(socket.SHUT_WR)
        assert nat.serve(b.fileno()) == b""
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------------------- live patch

SRC = Path(sqlserver.__file__).resolve().parent
OLD_LINE = "    return str(v).encode() if type(v) is int else _text_any(v)\n"
NEW_LINE = '    return (str(v) + "0").encode() if type(v) is int else _text_any(v)\n'


def _build_patch(work: Path) -> Path:
    old, new = work / "old", work / "new"
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(SRC, old / "sqlserver", ignore=ignore)
    shutil.copytree(SRC, new / "sqlserver", ignore=ignore)
    module = new / "sqlserver" / "results.py"
    text = module.read_text()
    assert text.count(OLD_LINE) == 1, "results._text_int changed: update OLD_LINE"
    module.write_text(text.replace(OLD_LINE, NEW_LINE))
    out = work / "int-patched.lpatch"
    done = livepatch_cli(
        "diff", str(old), str(new), "--package", "sqlserver", "--category", "thread-local",
        "-o", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def _cli(*args: str) -> dict:
    done = livepatch_cli(*args, "--json", timeout=90)
    try:
        reply = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(done.stdout + done.stderr) from None
    assert reply.get("result"), reply
    return dict(reply["result"])


@needs_native
@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["global", "local"])
@pytest.mark.parametrize("policy", ["thread-per-connection", "pool"])
def test_a_patch_of_a_function_the_c_code_stands_in_for_takes_effect(sql_factory, policy, method):
    psycopg = pytest.importorskip("psycopg")
    work = Path(tempfile.mkdtemp(prefix="lp-nat-"))  # short: a Unix socket path has ~100 bytes
    try:
        sock = work / "agent.sock"
        server = sql_factory(
            "--policy", policy, "--dir", str(work / "data"), "--livepatch-socket", str(sock),
            "--allow-unsigned",
        )  # fmt: skip
        patch = _build_patch(work)
        with psycopg.connect(server.dsn, autocommit=True) as setup:
            setup.execute("create table acc (aid int primary key, abalance int)")
            setup.execute("insert into acc values (1, 42), (2, 7)")
        with psycopg.connect(server.dsn, autocommit=True) as conn:

            def read() -> int:
                # %s: psycopg sends the integer in binary, %t in text; both are served in C
                for query in (
                    "select abalance from acc where aid = %s",
                    "select abalance from acc where aid = %t",
                ):
                    row = conn.execute(query, (1,), prepare=True).fetchone()
                    assert row is not None
                    first = int(row[0])
                row = conn.execute(query, (1,), prepare=True).fetchone()
                assert row is not None and int(row[0]) == first
                return first

            assert [read() for _ in range(5)] == [42] * 5  # prepared; the C code serves it
            result = _cli(
                "apply", str(patch), "--socket", str(sock), "--method", method, "--timeout", "20"
            )
            assert result["outcome"] == "applied", result
            assert read() == 420  # the next transaction runs the patched encoder
            assert read() == 420
            result = _cli("revert", "--socket", str(sock), "--method", method, "--timeout", "20")
            assert result["outcome"] == "reverted", result
            assert [read() for _ in range(3)] == [42] * 3
        assert server.alive()
    finally:
        shutil.rmtree(work, ignore_errors=True)


@needs_native
@pytest.mark.timeout(120)
@pytest.mark.parametrize("policy", ["thread-per-connection", "pool"])
def test_a_cancel_request_stops_a_query_the_c_code_runs(sql_factory, tmp_path, policy):
    """The C code runs a prepared SELECT that a CancelRequest interrupts: the client gets 57014, not the
    statement run again from the start by Python (which would lose the cancel)."""
    psycopg = pytest.importorskip("psycopg")
    server = sql_factory("--policy", policy, "--dir", str(tmp_path / "data"))
    query = (
        "with recursive c(x) as (select 1 union all select x + 1 from c where x < %t::int) "
        "select count(*) from c"
    )
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        for _ in range(3):  # prepared and planned, then run by the C code
            row = conn.execute(query, (5,), prepare=True).fetchone()
            assert row == (5,)
        outcome: list[BaseException | None] = []
        started = threading.Event()

        def run() -> None:
            started.set()
            try:
                conn.execute(query, (2_000_000_000,), prepare=True).fetchone()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=run)
        t.start()
        assert started.wait(10)
        # Cancel until it lands: the first one may arrive before the statement began executing.
        for _ in range(100):
            conn.cancel()
            t.join(0.2)
            if not t.is_alive():
                break
        t.join(30)
        assert not t.is_alive(), "the long query was not cancelled"
        assert outcome and isinstance(outcome[0], psycopg.errors.QueryCanceled), outcome
        assert conn.execute(query, (7,), prepare=True).fetchone() == (7,)  # the session goes on
