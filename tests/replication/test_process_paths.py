"""PrimaryHost.process has two versions that must take the same decisions: the Python one and
kvserver._dirtyfast.Processor (C: the tracker's end of batch, Protection.hold_until, the hold). Here
both run the same batches of commands from two clients on two identical servers, with epochs
captured, acknowledged, protection given up and resumed between them, and after every batch the
held replies (epoch and bytes, per client, in order), the dirty and unacknowledged keys and the
tracker's per-batch state must be equal (the C one with its read-only-batch shortcut: a batch of
GET/EXISTS/MGET/DBSIZE alone notes no touched key). In-process: the same ServerState the servers run."""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvserver import dirty
from kvserver.config import Config
from kvserver.dirty import NATIVE, track
from kvserver.replication_support import PrimaryHost, readonly_names
from kvserver.server import ServerState
from livepatch.replication import Protection

pytestmark = pytest.mark.skipif(not NATIVE, reason="kvserver._dirtyfast is not built")

KEYS = [b"a", b"b", b"c"]
key = st.sampled_from(KEYS)
command = st.one_of(
    st.tuples(st.sampled_from([b"GET", b"get"]), key),  # read-only batches: _dirtyfast's shortcut
    st.tuples(st.just(b"EXISTS"), key),
    st.tuples(st.just(b"MGET"), key, key),
    st.tuples(st.just(b"SET"), key, st.sampled_from([b"1", b"2"])),
    st.tuples(st.just(b"INCR"), key),
    st.tuples(st.just(b"LPUSH"), key, st.just(b"x")),
    st.tuples(st.just(b"DEL"), key),
    st.tuples(st.just(b"DBSIZE")),
    st.tuples(st.just(b"SELECT"), st.sampled_from([b"0", b"1"])),
    st.tuples(st.just(b"FLUSHDB")),
    st.tuples(st.just(b"SWAPDB"), st.just(b"0"), st.just(b"1")),
    st.tuples(st.just(b"PING")),
).map(list)
# between batches: nothing, capture an epoch, acknowledge every captured one, give protection up
# (the Primary's degradation: every held reply released), resume it
between = st.sampled_from(["", "", "capture", "ack", "degrade", "resume"])
step = st.tuples(st.integers(0, 1), st.lists(command, min_size=1, max_size=3), between)


class Side:
    def __init__(self, mode: str, native_process: bool, split: bool = False) -> None:
        self.server = ServerState(Config(databases=2, livepatch=False))
        self.protection = Protection(mode)  # type: ignore[arg-type]
        self.host = PrimaryHost(SimpleNamespace(server=self.server, schedule_send=lambda c: None))
        self.host.tracker = track(self.server.databases, self.protection, native=True)
        self.host.protection = self.protection
        self.clients = [self.server.new_client(None, f"c{i}") for i in range(2)]
        self.process: Any = self.host.process
        if native_process:
            from kvserver import _dirtyfast

            self.process = _dirtyfast.Processor(
                self.server,
                self.host.tracker,
                self.host.held.by_conn,
                self.host._after_batch,
                self.host._hold,
                mode == "full",
                readonly_names(self.server),
                self.host.held,  # the hold in C as well (hold_replies)
            )
            self.host.release = partial(_dirtyfast.release_held, self.host.held)
        if split:  # as the event loop runs it: begin, the batch, end (kvserver.loop)
            process = self.process
            server = self.server

            def run_split(client: Any, batch: list[list[bytes]]) -> None:
                process.begin(batch)
                try:
                    server.process_commands(client, batch)
                finally:
                    process.end(client)

            self.process = run_split
        self.captured = 0
        self.sent: list[list[bytes]] = [[], []]  # replies that left at once or on release

    def current(self) -> None:
        """The tracker is one per process (module state, in Python and C): make ours current."""
        dirty._tracker = self.host.tracker
        from kvserver import _dirtyfast

        _dirtyfast.configure(self.host.tracker)

    def run(self, who: int, batch: list[list[bytes]]) -> None:
        self.current()
        client = self.clients[who]
        self.server.now_ms = 1_000_000
        self.process(client, batch)
        if client.out:  # not held: it goes out now
            self.sent[who].append(b"".join(client.out))
            client.out.clear()

    def between(self, what: str) -> None:
        self.current()
        p = self.protection
        assert self.host.tracker is not None
        if what == "capture":
            self.host.capture_epoch()
            self.captured = p.epoch
            p.epoch += 1
        elif what == "ack" and self.captured:
            p.acked = self.captured
            self.host.tracker.acknowledged(self.captured)
            self._released(self.host.release(self.captured))
        elif what == "degrade":
            p.active = False
            self._released(self.host.release(1 << 63))  # release_all's bound
        elif what == "resume":
            p.active = p.mode != "none"

    def _released(self, released: list[tuple[Any, bytes]]) -> None:
        for client, data in released:
            self.sent[self.clients.index(client)].append(data)

    def state(self) -> Any:
        t = self.host.tracker
        assert t is not None
        held = {
            self.clients.index(c): [(e, d) for e, d, _ in q]
            for c, q in self.host.held.by_conn.items()
        }
        tracked = [(dict(s.dirty), dict(s.written), s.floor) for s in t.ordered]
        counts = (self.host.held.count, self.host.held.newest_epoch())
        return held, counts, tracked, t.read_epoch, t.structural, list(t.touched), self.sent


@pytest.mark.parametrize("mode", ["commit", "full", "none"])
@settings(max_examples=150, deadline=None)
@given(st.lists(step, min_size=1, max_size=25))
def test_the_c_and_python_process_decide_alike(mode: str, steps: list[Any]) -> None:
    python, c = Side(mode, native_process=False), Side(mode, native_process=True)
    split = Side(mode, native_process=True, split=True)  # C begin/end around the batch
    for who, batch, what in steps:
        for side in (python, c, split):
            side.run(who, batch)
        assert c.state() == python.state() == split.state()
        for side in (python, c, split):
            side.between(what)
        assert c.state() == python.state() == split.state()


def test_a_write_waits_a_clean_read_does_not_a_read_behind_a_held_reply_waits() -> None:
    side = Side("commit", native_process=True)
    side.run(0, [[b"SET", b"k", b"v"]])
    assert [(e, d) for e, d, _ in side.host.held.by_conn[side.clients[0]]] == [(1, b"+OK\r\n")]
    side.run(1, [[b"GET", b"other"]])
    assert side.sent[1] == [b"$-1\r\n"]  # nothing unacknowledged read: out at once
    side.run(1, [[b"GET", b"k"]])
    assert side.clients[1] in side.host.held.by_conn  # it reads the unacknowledged write
    side.run(0, [[b"PING"]])
    assert len(side.host.held.by_conn[side.clients[0]]) == 2  # in order behind the held +OK
    side.between("capture")
    side.between("ack")
    assert side.sent[0] == [b"+OK\r\n+PONG\r\n"] and side.sent[1][-1] == b"$1\r\nv\r\n"
    assert not side.host.held.by_conn


def test_asynchronous_replication_keeps_no_per_key_epochs() -> None:
    side = Side("none", native_process=True)
    side.run(0, [[b"SET", b"k", b"v"], [b"GET", b"k"]])
    assert side.sent[0] == [b"+OK\r\n$1\r\nv\r\n"] and not side.host.held.by_conn
    state = side.host.tracker.ordered[0]  # type: ignore[union-attr]
    assert state.dirty == {b"k": None} and state.written == {}  # shipped, but no read waits


def test_the_read_only_names_are_the_tables_read_only_commands() -> None:
    server = ServerState(Config(livepatch=False))
    names = readonly_names(server)
    assert {b"GET", b"get", b"MGET", b"EXISTS", b"DBSIZE", b"STRLEN"} <= names
    for name in names:
        flags = server.table[name.upper()].flags
        assert "readonly" in flags and "write" not in flags, name
    # writes, and commands that run others or reset the write count, never count as read-only
    for name in (b"SET", b"LPUSH", b"EXEC", b"EVAL", b"MULTI", b"SAVE", b"FLUSHDB", b"SORT"):
        assert name not in names and name.lower() not in names, name


# HeldReplies.hold / release and their C versions (kvserver._dirtyfast.hold_replies, release_held),
# on the same random steps: hold a reply for a connection at an epoch, or release up to an epoch.
held_step = st.one_of(
    st.tuples(st.just("hold"), st.integers(0, 3), st.integers(0, 6), st.binary(max_size=3)),
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(st.just("release"), st.just(1 << 63)),  # release_all's bound: above any long long
)


@settings(max_examples=300, deadline=None)
@given(st.lists(held_step, max_size=40))
def test_the_c_and_python_held_replies_hold_and_release_alike(steps: list[Any]) -> None:
    from kvserver import _dirtyfast
    from livepatch.replication import HeldReplies

    python: HeldReplies[int] = HeldReplies()
    c: HeldReplies[int] = HeldReplies()
    for s in steps:
        if s[0] == "hold":
            _, conn, epoch, data = s
            python.hold(conn, epoch, data)
            _dirtyfast.hold_replies(c, conn, epoch, data)
        else:
            assert _dirtyfast.release_held(c, s[1]) == python.release(s[1])
        assert {k: [(e, d) for e, d, _ in q] for k, q in c.by_conn.items()} == {
            k: [(e, d) for e, d, _ in q] for k, q in python.by_conn.items()
        }
        assert (c.count, c.newest_epoch(), len(c)) == (
            python.count,
            python.newest_epoch(),
            len(python),
        )
        since = c.oldest_since()
        assert (since is None) == (python.oldest_since() is None)


def test_the_c_hold_stamps_time_monotonic_and_the_python_hold_runs_for_a_closing_client() -> None:
    import time

    side = Side("commit", native_process=True)
    before = time.monotonic()
    side.run(0, [[b"SET", b"k", b"v"]])
    ((_, _, held_at),) = side.host.held.by_conn[side.clients[0]]
    assert before <= held_at <= time.monotonic()  # the same clock as HeldReplies.hold's
    # A client that asked to be closed after its replies (QUIT): the Python hold notes it.
    side.run(1, [[b"SET", b"j", b"v"], [b"QUIT"]])
    assert side.clients[1] in side.host._close_when_released
    assert side.clients[1].close_after_reply is False  # closed once the held replies are out


def test_end_ends_a_read_only_batch_even_after_the_batch_raised() -> None:
    """Between begin() of a read-only batch and end(), lookups note no key for shipping; a batch
    that raised still reaches end() (the loop's finally), and a write after it is shipped."""
    side = Side("commit", native_process=True)
    side.current()
    process: Any = side.process
    client = side.clients[0]
    db = side.server.databases[0]
    t = side.host.tracker
    assert t is not None
    process.begin([[b"GET", b"k"]])
    db.lookup(b"k", 0)
    assert t.touched == []  # a read-only batch: nothing to ship
    try:
        raise RuntimeError("the batch failed")
    except RuntimeError:
        pass
    finally:
        process.end(client)
    db.lookup(b"j", 0)  # no batch: every access is noted again
    assert [key for _, key in t.touched] == [b"j"]


def test_begin_tells_read_only_names_by_content_across_its_cache_of_recent_names() -> None:
    """begin() remembers the last few command names it classified (by content: the parser makes a
    new bytes object per request); more names than it remembers, names longer than it compares,
    upper and lower case, and a set changed after the Processor was made must not change an answer."""
    from kvserver import _dirtyfast

    side = Side("commit", native_process=False)
    side.current()
    long_name = b"A-READ-ONLY-COMMAND-NAME-LONGER-THAN-16"
    readonly = {b"GET", b"get", b"EXISTS", b"HGET", b"LRANGE", long_name}
    host = side.host
    process = _dirtyfast.Processor(
        side.server, host.tracker, host.held.by_conn, host._after_batch, host._hold, False,
        readonly, host.held,
    )  # fmt: skip
    readonly.add(b"SET")  # after the fact: the Processor keeps its own copy
    t = host.tracker
    assert t is not None
    db = side.server.databases[0]
    client = side.clients[0]
    names = [b"GET", b"SET", b"get", b"EXISTS", b"INCR", b"HGET", b"LRANGE", long_name,
             long_name[:-1] + b"X", b"GE", b"GETX", b"", b"GET"]  # fmt: skip
    for round_ in range(3):
        for name in names:
            name = bytes(bytearray(name))  # a new object every time, as the parser makes
            process.begin([[name, b"k"]])
            db.lookup(b"k", 0)
            touched = [key for _, key in t.touched]
            process.end(client)
            expected = name in {b"GET", b"get", b"EXISTS", b"HGET", b"LRANGE", long_name}
            assert touched == ([] if expected else [b"k"]), (round_, name)
