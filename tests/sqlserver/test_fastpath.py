"""The fast path answers a Bind/[Describe]/Execute/Sync burst byte for byte like the general path.

The general path is forced by appending a Flush to the same burst (fastpath.parse_burst accepts
only the exact burst), so both paths see the same statements, parameters and database state."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlserver.fastpath import parse_burst
from sqlserver.protocol import Bind, Describe, Execute, Flush, Parse, Sync, encode_frontend
from tests.sqlserver.session_helpers import SessionClient, new_state


def burst(*msgs):
    return b"".join(encode_frontend(m) for m in msgs)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    state = new_state(tmp_path_factory.mktemp("fast"))
    c = SessionClient(state)
    c.query("create table a (aid int primary key, abalance int, name text, f float8, b bytea)")
    for i in range(1, 21):
        c.query(f"insert into a values ({i}, {i * 10}, 'n{i}', {i / 4}, x'{i:02x}')")
    c.send(
        Parse("sel", "select abalance, name, f, b from a where aid = $1", ()),
        Parse("upd", "update a set abalance = abalance + $1 where aid = $2", ()),
        Parse("bad", "select 1 / $1", (23,)),
        Parse("begin", "BEGIN;", ()),
        Parse("end", "END;", ()),
        Sync(),
    )
    yield c
    state.shutdown()


def both(c, *msgs):
    data = burst(*msgs)
    assert parse_burst(data) is not None
    fast = c.session.receive(data)
    slow = c.session.receive(data + encode_frontend(Flush()))
    return fast, slow


@settings(max_examples=60, deadline=None)
@given(
    aid=st.integers(-2, 25),
    describe=st.booleans(),
    rfmt=st.sampled_from([(), (0,), (1,)]),
    stmt_delta=st.integers(-100, 100),
)
def test_fast_and_general_paths_agree(client, aid, describe, rfmt, stmt_delta):
    d = (Describe("P", ""),) if describe else ()
    fast, slow = both(
        client, Bind("", "sel", (), (str(aid).encode(),), rfmt), *d, Execute("", 0), Sync()
    )
    assert fast == slow
    # writes too: run the same update twice, then compare what each did
    fast, slow = both(
        client,
        Bind("", "upd", (), (str(stmt_delta).encode(), str(aid).encode()), ()),
        *d,
        Execute("", 0),
        Sync(),
    )
    assert fast == slow


def test_transaction_control_agrees(client):
    for describe in (False, True):
        d = (Describe("P", ""),) if describe else ()
        fast = client.session.receive(
            burst(Bind("", "begin", (), (), ()), *d, Execute("", 0), Sync())
        )
        assert fast.endswith(b"Z\x00\x00\x00\x05T")
        slow_end = client.session.receive(
            burst(Bind("", "end", (), (), ()), *d, Execute("", 0), Sync(), Flush())
        )
        slow_begin = client.session.receive(
            burst(Bind("", "begin", (), (), ()), *d, Execute("", 0), Sync(), Flush())
        )
        fast_end = client.session.receive(
            burst(Bind("", "end", (), (), ()), *d, Execute("", 0), Sync())
        )
        assert (fast, fast_end) == (slow_begin, slow_end)
        assert fast_end.endswith(b"Z\x00\x00\x00\x05I")


def test_errors_agree_and_end_with_ready(client):
    fast, slow = both(client, Bind("", "bad", (), (b"0",), ()), Execute("", 0), Sync())
    assert fast == slow and b"22012" in fast and fast.endswith(b"Z\x00\x00\x00\x05I")


def test_other_bursts_are_left_to_the_general_path():
    assert (
        parse_burst(burst(Bind("p", "s", (), (), ()), Execute("p", 0), Sync())) is None
    )  # named portal
    assert (
        parse_burst(burst(Bind("", "s", (), (), ()), Execute("", 5), Sync())) is None
    )  # row limit
    assert parse_burst(burst(Bind("", "s", (), (), ()), Execute("", 0))) is None  # no Sync
    whole = burst(Bind("", "s", (), (b"1",), ()), Execute("", 0), Sync())
    for cut in range(len(whole)):
        assert parse_burst(whole[:cut]) is None
    assert parse_burst(whole) == ("s", (), (b"1",), (), False)
