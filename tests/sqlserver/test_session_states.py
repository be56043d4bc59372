"""The session state machine under hypothesis: arbitrary sequences of valid messages never raise
out of Session.receive, and the transaction status every ReadyForQuery reports follows the table
in session_states.py, computed here by a small independent model of PostgreSQL's rules."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from sqlserver import session_states as ss
from sqlserver.protocol import Bind, Close, Describe, Execute, Parse, Sync
from tests.sqlserver.session_helpers import SessionClient, new_state

# (SQL, what it does to the model): "ok" runs, "error" fails, "begin"/"commit"/"rollback" move it
STATEMENTS = [
    ("select 1", "ok"),
    ("insert into t values (1)", "ok"),
    ("select 1/0", "error"),
    ("select * from missing", "error"),
    ("selec 1", "error"),
    ("begin", "begin"),
    ("commit", "commit"),
    ("end", "commit"),
    ("rollback", "rollback"),
    ("abort", "rollback"),
    ("set application_name = 'x'", "ok"),
    ("show server_version", "ok"),
]


class SessionModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.status = "I"

    @initialize()
    def start(self) -> None:
        self.client = SessionClient(STATE)
        self.client.query("create table if not exists t (k int)")

    def _expect(self, effect: str) -> None:
        s = self.status
        if effect == "begin":
            self.status = "E" if s == "E" else "T"
        elif effect in ("commit", "rollback"):
            self.status = "I"
        elif effect == "error" or (effect == "ok" and s == "E"):
            self.status = "E" if s != "I" else "I"

    @rule(i=st.integers(0, len(STATEMENTS) - 1))
    def simple(self, i: int) -> None:
        sql, effect = STATEMENTS[i]
        r = self.client.query(sql)
        assert "XX000" not in r.errors, r.messages  # an internal error is a bug
        self._expect(effect)
        assert r.status == self.status, (sql, r.messages)

    @rule(i=st.integers(0, len(STATEMENTS) - 1), describe=st.booleans(), named=st.booleans())
    def extended(self, i: int, describe: bool, named: bool) -> None:
        sql, effect = STATEMENTS[i]
        name = "s" if named else ""
        msgs = [Close("S", name), Parse(name, sql, ()), Bind("", name, (), (), ())]
        if describe:
            msgs.append(Describe("P", ""))
        msgs += [Execute("", 0), Sync()]
        r = self.client.send(*msgs)
        assert "XX000" not in r.errors, r.messages
        self._expect(effect)
        assert r.status == self.status, (sql, r.messages)

    @rule(a=st.integers(0, len(STATEMENTS) - 1), b=st.integers(0, len(STATEMENTS) - 1))
    def two_in_one_query(self, a: int, b: int) -> None:
        (sa, _ea), (sb, _eb) = STATEMENTS[a], STATEMENTS[b]
        r = self.client.query(f"{sa}; {sb}")
        assert "XX000" not in r.errors, r.messages
        # multi-statement semantics are checked by test_session; here: no exception, a valid status
        assert r.status in ("I", "T", "E")
        self.status = r.status

    def teardown(self) -> None:
        if hasattr(self, "client"):
            self.client.session.close()  # releases the write lock a block may hold

    @invariant()
    def session_agrees(self) -> None:
        if hasattr(self, "client"):
            assert self.client.session.status == self.status
            assert self.client.session.sm.phase == ss.READY
            # idle: holds nothing. Always in I, never in E; in T only before the block ran a
            # statement (BEGIN alone: SQLite's transaction starts lazily).
            session = self.client.session
            ex = session.executor
            assert ex is not None
            if self.status == "I":
                assert session.idle
            elif self.status == "E":
                assert not session.idle
            else:
                assert session.idle == (not ex.begun and not ex.conn.in_transaction)


STATE = None


@pytest.fixture(autouse=True)
def _state(tmp_path):
    global STATE
    STATE = new_state(tmp_path, lock_timeout_ms=200)
    yield
    STATE.shutdown()


def test_session_state_machine():
    settings_ = settings(
        max_examples=40,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    state_machine = SessionModel.TestCase
    state_machine.settings = settings_
    state_machine().runTest()


def test_table_rules():
    sm = ss.SessionState()
    with pytest.raises(ss.StateError):
        sm.on("copy_in")  # no COPY before startup
    sm.on("startup_trust")
    assert sm.tx("begin") == "T" and sm.tx("error") == "E"
    assert not sm.allows("select") and sm.allows("rollback")
    assert sm.tx("rollback_to") == "T" and sm.tx("commit") == "I"
    with pytest.raises(ss.StateError):
        sm.tx("rollback_to")  # no savepoint outside a block
    assert sm.on("terminate") == ss.CLOSED
    with pytest.raises(ss.StateError):
        sm.on("copy_in")
