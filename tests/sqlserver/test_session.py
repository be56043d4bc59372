"""Session driven directly with the codec's client side: startup, simple and extended query,
transactions and their failed state, SQLSTATEs, formats and type OIDs, COPY, cancel, write lock."""

from __future__ import annotations

import struct
import threading

import pytest

from sqlserver.protocol import (
    PROTOCOL_3_0,
    Bind,
    BindComplete,
    CancelRequest,
    Close,
    CopyData,
    CopyDone,
    CopyFail,
    CopyInResponse,
    CopyOutResponse,
    Describe,
    EmptyQueryResponse,
    Execute,
    Flush,
    GSSENCRequest,
    NoData,
    ParameterDescription,
    ParameterStatus,
    Parse,
    ParseComplete,
    PortalSuspended,
    Query,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
    encode_frontend,
)
from tests.sqlserver.session_helpers import SessionClient, new_state


@pytest.fixture
def state(tmp_path):
    s = new_state(tmp_path, lock_timeout_ms=300)
    yield s
    s.shutdown()


@pytest.fixture
def c(state):
    return SessionClient(state)


def test_startup_reports_parameters_and_key(state):
    c = SessionClient(state, startup=False)
    assert c.session.receive(encode_frontend(SSLRequest())) == b"N"
    assert c.session.receive(encode_frontend(GSSENCRequest())) == b"N"
    r = c.send(
        StartupMessage(PROTOCOL_3_0, {"user": "alice", "database": "db", "application_name": "t1"})
    )
    params = {m.name: m.value for m in r.of(ParameterStatus)}
    assert params["server_version"].startswith("15.")
    assert params["client_encoding"] == "UTF8" and params["server_encoding"] == "UTF8"
    assert params["DateStyle"] == "ISO, MDY" and params["TimeZone"] == "UTC"
    assert params["integer_datetimes"] == "on" and params["standard_conforming_strings"] == "on"
    assert params["application_name"] == "t1" and params["session_authorization"] == "alice"
    assert r.status == "I" and c.session.idle
    assert c.query("select current_setting('application_name'), pg_backend_pid()").text_rows == [
        ("t1", str(c.session.backend_pid))
    ]


def test_simple_query_several_statements_are_one_implicit_transaction(c):
    c.query("create table a (k int primary key)")
    r = c.query("insert into a values (1); insert into a values (2); select 1/0")
    assert r.tags == ["INSERT 0 1", "INSERT 0 1"] and r.errors == ["22012"] and r.status == "I"
    assert c.query("select count(*) from a").text_rows == [("0",)]  # rolled back together
    r = c.query("insert into a values (1); insert into a values (2)")
    assert r.status == "I" and c.query("select count(*) from a").text_rows == [("2",)]


def test_sqlstates(c):
    c.query("create table u (k int primary key, v text not null)")
    c.query("insert into u values (1, 'a')")
    assert c.query("insert into u values (1, 'b')").errors == ["23505"]
    assert c.query("insert into u values (2, null)").errors == ["23502"]
    assert c.query("selec 1").errors == ["42601"]
    assert c.query("select * from nope").errors == ["42P01"]
    assert c.query("select nope from u").errors == ["42703"]
    assert c.query("select 1/0").errors == ["22012"]
    assert c.query("select 5 % 0").errors == ["22012"]
    assert c.query("listen chan").errors == ["0A000"]
    assert c.query("create extension foo").errors == ["0A000"]
    assert c.query("select 7/2, -7/2, 7.0/2").text_rows == [("3", "-3", "3.5")]


def test_failed_transaction_until_rollback(c):
    c.query("create table t (k int)")
    assert c.query("begin").status == "T"
    assert c.query("insert into t values (1)").status == "T"
    r = c.query("select 1/0")
    assert r.errors == ["22012"] and r.status == "E"
    r = c.query("select 1")
    assert r.errors == ["25P02"] and r.status == "E"
    r = c.query("commit")
    assert r.tags == ["ROLLBACK"] and r.status == "I"  # COMMIT of a failed block rolls back
    assert c.query("select count(*) from t").text_rows == [("0",)]


def test_savepoints_recover_a_failed_block(c):
    c.query("create table t (k int primary key)")
    c.query("begin; insert into t values (1); savepoint s1; insert into t values (2)")
    assert c.query("insert into t values (1)").status == "E"
    r = c.query("rollback to savepoint s1")
    assert r.status == "T" and r.tags == ["ROLLBACK"]
    c.query("insert into t values (3); release s1; commit")
    assert c.query("select k from t order by k").text_rows == [("1",), ("3",)]


def test_extended_query_with_row_limit_and_named_statements(c):
    c.query("create table t (k int primary key, v text)")
    for i in range(5):
        c.query(f"insert into t values ({i}, 'v{i}')")
    r = c.send(
        Parse("s1", "select k, v from t where k >= $1 order by k"), Describe("S", "s1"), Sync()
    )
    assert isinstance(r.messages[0], ParseComplete)
    assert r.of(ParameterDescription)[0].oids == (23,)  # k is int (int4), as in PostgreSQL
    fields = r.descriptions[0].fields
    assert [(f.name, f.type_oid) for f in fields] == [("k", 23), ("v", 25)]
    r = c.send(
        Bind("p", "s1", (), (b"0",), ()), Execute("p", 2), Execute("p", 2), Execute("p", 2), Sync()
    )
    assert len(r.of(PortalSuspended)) == 2
    assert r.text_rows == [(str(i), f"v{i}") for i in range(5)]
    assert r.tags == ["SELECT 5"] and r.status == "I"
    r = c.send(Close("S", "s1"), Sync())
    assert r.status == "I"
    assert c.send(Bind("", "s1", (), (b"1",), ()), Sync()).errors == ["26000"]


def test_extended_error_discards_until_sync(c):
    r = c.send(
        Parse("", "select 1/0"), Bind("", "", (), (), ()), Execute("", 0),
        Parse("", "select 2"), Bind("", "", (), (), ()), Execute("", 0), Sync(),
    )  # fmt: skip
    assert r.errors == ["22012"] and r.rows == [] and r.status == "I"
    r = c.send(Parse("", "select 2"), Bind("", "", (), (), ()), Execute("", 0), Sync())
    assert r.text_rows == [("2",)]


def test_binary_results_have_exact_oids(c):
    c.query("create table b (i int4, l int8, f float8, n numeric, t text, by bytea, ok bool)")
    c.query("insert into b values (7, 9000000000, 1.5, 2.25, 'x', '\\x00ff', true)")
    r = c.send(
        Parse("", "select i, l, f, n, t, by, ok from b"),
        Bind("", "", (), (), (1,)),
        Describe("P", ""),
        Execute("", 0),
        Sync(),
    )
    oids = [f.type_oid for f in r.descriptions[0].fields]
    assert oids == [23, 20, 701, 1700, 25, 17, 16]
    (row,) = r.rows
    assert struct.unpack("!i", row[0]) == (7,) and struct.unpack("!q", row[1]) == (9000000000,)
    assert struct.unpack("!d", row[2]) == (1.5,) and row[4] == b"x" and row[5] == b"\x00\xff"
    assert row[6] == b"\x01"


def test_binary_parameters_decode_by_type(c):
    c.query("create table p (i int4, f float8, by bytea)")
    r = c.send(
        Parse("", "insert into p values ($1, $2, $3)"),
        Bind("", "", (1,), (struct.pack("!i", -5), struct.pack("!d", 0.25), b"\x01\x02"), ()),
        Execute("", 0),
        Sync(),
    )
    assert r.tags == ["INSERT 0 1"], r.messages
    assert c.query("select i, f, by from p").text_rows == [("-5", "0.25", "\\x0102")]


def test_serial_returning_on_conflict_sequences(c):
    c.query("create table s (id serial primary key, name text unique, hits int default 0)")
    r = c.query("insert into s (name) values ('a'), ('b') returning id, name")
    assert r.text_rows == [("1", "a"), ("2", "b")] and r.tags == ["INSERT 0 2"]
    c.query("insert into s (name) values ('a') on conflict (name) do update set hits = s.hits + 1")
    assert c.query("select hits from s where name = 'a'").text_rows == [("1",)]
    c.query("create table q (n bigserial, v text)")
    c.query("insert into q (v) values ('x'), ('y')")
    assert c.query("select n from q order by n").text_rows == [("1",), ("2",)]
    c.query("create sequence seq start 10 increment 5")
    assert c.query("select nextval('seq'), nextval('seq')").text_rows == [("10", "15")]
    assert c.query("select currval('seq')").text_rows == [("15",)]


def test_set_show_reset(c):
    r = c.query("set application_name = 'app'")
    assert r.tags == ["SET"] and ("application_name", "app") in [
        (m.name, m.value) for m in r.of(ParameterStatus)
    ]
    assert c.query("show application_name").text_rows == [("app",)]
    assert c.query("select current_setting('application_name')").text_rows == [("app",)]
    c.query("reset application_name")
    assert c.query("show application_name").text_rows == [("",)]
    assert c.query("show transaction isolation level").tags == ["SHOW"]
    assert c.query("show no_such_thing").errors == ["42704"]
    assert c.query("set timezone to 'Europe/Paris'").errors == ["0A000"]
    assert "PostgreSQL 15" in c.query("select version()").text_rows[0][0]


def test_empty_query(c):
    assert c.query("").of(EmptyQueryResponse) and c.query("  ;  ").status == "I"


def test_copy_from_stdin_text_and_csv_then_to_stdout(c):
    c.query("create table cp (k int, v text)")
    r = c.query("copy cp from stdin")
    assert r.of(CopyInResponse) and c.session.status == "I" and not c.session.idle
    r = c.send(CopyData(b"1\tone\n2\t"), CopyData(b"\\N\n3\ttab\\there\n"), CopyDone())
    assert r.tags == ["COPY 3"] and r.status == "I"
    c.query("copy cp (k, v) from stdin with (format csv, header true)")
    r = c.send(CopyData(b'k,v\n4,"a,b"\n'), CopyDone())
    assert r.tags == ["COPY 1"]
    r = c.query("copy cp to stdout")
    assert r.of(CopyOutResponse) and r.tags == ["COPY 4"]
    data = b"".join(m.data for m in r.of(CopyData))
    assert data == b"1\tone\n2\t\\N\n3\ttab\\there\n4\ta,b\n"
    c.query("copy cp from stdin")
    r = c.send(CopyData(b"9\tnine\n"), CopyFail("client gave up"))
    assert r.errors == ["57014"] and r.status == "I"
    assert c.query("select count(*) from cp").text_rows == [("4",)]


def test_pgbench_init_statements(c):
    for sql in [
        "drop table if exists pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers",
        "create table pgbench_branches(bid int not null,bbalance int,filler char(88)) with (fillfactor=100)",
        "create table pgbench_accounts(aid int not null,bid int,abalance int,filler char(84)) with (fillfactor=100)",
        "begin",
        "truncate table pgbench_accounts, pgbench_branches",
        "insert into pgbench_branches(bid,bbalance) values(1,0)",
    ]:
        assert c.query(sql).errors == [], sql
    c.query("copy pgbench_accounts from stdin with (freeze on)")
    assert c.send(CopyData(b"1\t1\t0\t\n"), CopyData(b"2\t1\t0\t\n"), CopyDone()).tags == ["COPY 2"]
    for sql in [
        "commit",
        "vacuum analyze pgbench_branches",
        "alter table pgbench_accounts add primary key (aid)",
    ]:
        assert c.query(sql).errors == [], sql
    assert c.query("insert into pgbench_accounts values (1, 1, 0, '')").errors == ["23505"]


def test_two_writers_wait_then_time_out_with_55P03(state):
    a, b = SessionClient(state), SessionClient(state)
    a.query("create table w (k int)")
    a.query("begin; insert into w values (1)")
    r = b.query("insert into w values (2)")  # lock_timeout_ms=300 in this fixture
    assert r.errors == ["55P03"] and r.status == "I"
    a.query("commit")
    assert b.query("insert into w values (2)").errors == []


def test_read_then_write_after_a_concurrent_commit_is_40001(state):
    a, b = SessionClient(state), SessionClient(state)
    a.query("create table w (k int)")
    a.query("begin")
    a.query("select count(*) from w")  # a's snapshot
    b.query("insert into w values (1)")  # commits after it
    r = a.query("insert into w values (2)")
    assert r.errors == ["40001"] and r.status == "E"
    assert a.query("rollback").status == "I"


def test_select_for_update_holds_writers_off_until_commit(state):
    """FOR UPDATE takes the write lock (SQLite has no row locks): another writer waits for the
    transaction (55P03 after this fixture's 300 ms), and the locking transaction's own write then
    succeeds instead of failing with 40001 (without it, b's write got in first)."""
    a, b = SessionClient(state), SessionClient(state)
    a.query("create table acct (id int primary key, v int)")
    a.query("insert into acct values (1, 0)")
    assert a.query("begin").status == "T"
    assert a.query("select v from acct where id = 1 for update").text_rows == [("0",)]
    r = b.query("update acct set v = v + 10 where id = 1")
    assert r.errors == ["55P03"] and r.status == "I"
    assert a.query("update acct set v = v + 1 where id = 1").errors == []
    assert a.query("commit").status == "I"
    assert b.query("select v from acct").text_rows == [("1",)]
    assert a.query("select v from acct where id = 1 for update").errors == []  # autocommit too


def test_cancel_interrupts_a_running_statement(state):
    c = SessionClient(state)
    long = "with recursive r(x) as (select 1 union all select x + 1 from r where x < 1000000000) select count(*) from r"
    results = []
    t = threading.Thread(target=lambda: results.append(c.query(long)))
    t.start()
    other = SessionClient(state, startup=False)
    for _ in range(200):  # deterministic end: the statement stops only when a cancel lands
        other.session.receive(
            encode_frontend(CancelRequest(c.session.backend_pid, c.session.secret_key))
        )
        t.join(0.05)
        if not t.is_alive():
            break
        other = SessionClient(state, startup=False)
    t.join(10)
    assert not t.is_alive() and results[0].errors == ["57014"]
    assert other.session.closed
    assert c.query("select 1").text_rows == [("1",)]


def test_cancel_with_a_wrong_key_does_nothing(state):
    c = SessionClient(state)
    other = SessionClient(state, startup=False)
    assert (
        other.session.receive(
            encode_frontend(CancelRequest(c.session.backend_pid, c.session.secret_key ^ 1))
        )
        == b""
    )
    assert other.session.closed and c.query("select 1").errors == []


def test_terminate_closes_and_garbage_is_fatal(state):
    c = SessionClient(state)
    c.send(Terminate())
    assert c.session.closed and c.session.receive(b"Q") == b""
    d = SessionClient(state)
    r = d.send_bytes(b"\x00\x00\x00\x00\x00")
    assert r.errors == ["08P01"] and d.session.closed


def test_flush_and_describe_of_statement_without_rows(c):
    c.query("create table t (k int)")
    r = c.send(Parse("i", "insert into t values ($1)"), Describe("S", "i"), Flush())
    assert r.of(ParameterDescription)[0].oids == (23,) and r.of(NoData)
    r = c.send(Bind("", "i", (), (b"5",), ()), Execute("", 0), Sync())
    assert r.of(BindComplete) and r.tags == ["INSERT 0 1"]


def test_sql_cursors(c):
    c.query("create table t (k int)")
    for i in range(5):
        c.query(f"insert into t values ({i})")
    assert c.query("declare x cursor for select k from t order by k").errors == ["25P01"]
    c.query("begin")
    assert c.query("declare x cursor for select k from t order by k").tags == ["DECLARE CURSOR"]
    assert c.query("fetch 2 from x").text_rows == [("0",), ("1",)]
    r = c.query("fetch all from x")
    assert r.text_rows == [("2",), ("3",), ("4",)] and r.tags == ["FETCH 3"]
    assert c.query("close x").tags == ["CLOSE CURSOR"]
    c.query("commit")


@pytest.mark.parametrize("method", ["password", "md5", "scram-sha-256"])
def test_password_authentication(tmp_path, method):
    from sqlserver.protocol import (
        AuthenticationCleartextPassword,
        AuthenticationMD5Password,
        AuthenticationOk,
        AuthenticationSASLContinue,
        AuthenticationSASLFinal,
        password_message,
        sasl_initial_response,
    )
    from sqlserver.protocol.auth import ScramClient, md5_salted_hash

    pw = tmp_path / "pw"
    pw.write_text("# users\nbob:s3cret\n")
    state = new_state(tmp_path / "d", auth=method, password_file=str(pw))
    try:
        for password, ok in (("s3cret", True), ("wrong", False)):
            c = SessionClient(state, startup=False)
            r = c.send(StartupMessage(PROTOCOL_3_0, {"user": "bob"}))
            if method == "password":
                assert r.of(AuthenticationCleartextPassword)
                r = c.send(password_message(password))
            elif method == "md5":
                salt = r.of(AuthenticationMD5Password)[0].salt
                r = c.send(password_message(md5_salted_hash("bob", password, salt)))
            else:
                client = ScramClient("bob", password)
                r = c.send(sasl_initial_response("SCRAM-SHA-256", client.first()))
                server_first = r.of(AuthenticationSASLContinue)[0].data
                r = c.send(password_message_raw(client.final(server_first)))
                if ok:
                    assert r.of(AuthenticationSASLFinal)
            if ok:
                assert r.of(AuthenticationOk) and r.status == "I"
            else:
                assert r.errors == ["28P01"] and c.session.closed
    finally:
        state.shutdown()


def password_message_raw(data: bytes):
    from sqlserver.protocol import PasswordMessage

    return PasswordMessage(data)


def test_query_while_failed_in_extended_protocol_reports_25P02(c):
    c.query("begin")
    c.query("select 1/0")
    r = c.send(Parse("", "select 1"), Bind("", "", (), (), ()), Execute("", 0), Sync())
    assert r.errors == ["25P02"] and r.status == "E"
    assert c.send(Query("rollback")).status == "I"


def test_statement_length_limit(tmp_path):
    state = new_state(tmp_path, statement_max_bytes=100)
    try:
        c = SessionClient(state)
        r = c.query("select '" + "x" * 200 + "'")
        assert r.errors == ["54000"] and r.status == "I"
        assert c.send(Parse("", "select " + "1" * 200), Sync()).errors == ["54000"]
    finally:
        state.shutdown()


def test_identity_columns_and_default_values(c):
    c.query(
        "create table idt (id int generated always as identity primary key, v text default 'd')"
    )
    c.query("insert into idt default values")
    c.query("insert into idt (v) values ('x')")
    assert c.query("select id, v from idt order by id").text_rows == [("1", "d"), ("2", "x")]
    c.query("create table idn (n bigint generated by default as identity, v text)")
    c.query("insert into idn (v) values ('a'), ('b')")
    assert c.query("select n from idn order by n").text_rows == [("1",), ("2",)]


def test_simple_queries_with_literals_as_parameters(c):
    c.query("create table lit (k int primary key, v text, n numeric)")
    for i in range(5):
        assert c.query(f"insert into lit values ({i}, 'v''{i}', {i}.5)").tags == ["INSERT 0 1"]
    assert c.query("select v from lit where k = 3").text_rows == [("v'3",)]
    assert c.query("select v from lit where k = 4").text_rows == [("v'4",)]
    assert c.query("update lit set n = n + -1 where k >= 3").tags == ["UPDATE 2"]
    assert c.query("select k, n from lit where k > 2 order by 2 desc").text_rows == [
        ("4", "3.5"),
        ("3", "2.5"),
    ]
    assert c.query(
        "select count(*) from lit where v like 'v%' and k between 1 and 3"
    ).text_rows == [("3",)]
    assert c.query("select k / 0 from lit where k = 1").errors == ["22012"]
    r = c.query("select 1 as one from lit where k = 1")
    assert r.descriptions[0].fields[0].type_oid == 23 and r.text_rows == [
        ("1",)
    ]  # projection untouched
