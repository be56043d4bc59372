"""Each SQL workload transaction, run alone through lpbench's transaction runner on a real connection,
does what its benchmark says to the data -- against a real sqlserver process and, where installed, the
real PostgreSQL 15 (the same assertions on both: the drivers are right, and sqlserver agrees with
PostgreSQL). test_sql_workloads.py runs whole mixes and the consistency checks; this file pins each
transaction's own effect (TPC-C clauses 2.4-2.8, YCSB's six operations). The OLAP queries' answers are
compared between the two servers in test_sql_olap.py (with CH-benCHmark's extra tables loaded).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lpbench.recording import ERROR_REPLY, OK
from lpbench.servers import SqlServer
from lpbench.sql import tpcc, ycsb
from lpbench.sql.pg import BlockingClient, Result
from lpbench.sql.workloads import Tx, run_transaction
from tests.conftest import free_port

pytest.importorskip("sqlglot")

TPCC_SCALE = 0.05  # one warehouse, 5,000 items, 150 customers per district, 150 orders per district


def run_tx(c: BlockingClient, factory: object) -> int:
    """Drive one transaction (with BenchBase's retries) on c; its recording status."""
    gen = run_transaction(factory)  # type: ignore[arg-type]
    try:
        step = next(gen)
        while True:
            step = gen.send(c.run(step))
    except StopIteration as stop:
        return int(stop.value)


def one(c: BlockingClient, sql: str, *params: object) -> str | None:
    return c.execute((sql, params) if params else sql).scalar()


def num(c: BlockingClient, sql: str, *params: object) -> float:
    v = one(c, sql, *params)
    assert v is not None, sql
    return float(v)


# -- the two servers --------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlserver", "postgres"])
def target(request: pytest.FixtureRequest) -> Iterator[int]:
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_port")
        return
    work = Path(tempfile.mkdtemp(prefix="lpst-"))
    server = SqlServer(free_port(), work)
    try:
        server.start()
        yield server.port
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def tpcc_db(target: int) -> int:
    with BlockingClient("127.0.0.1", target, timeout_s=300) as c:
        for t in tpcc.TABLES:
            c.execute(f"DROP TABLE IF EXISTS {t}")
        tpcc.load(c, TPCC_SCALE, 1)
    return target


@pytest.fixture
def db(tpcc_db: int) -> Iterator[BlockingClient]:
    with BlockingClient("127.0.0.1", tpcc_db) as c:
        yield c
        assert tpcc.check(c, TPCC_SCALE) == []  # every transaction leaves the database consistent


# -- TPC-C ------------------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_new_order_adds_the_order_its_lines_and_a_new_order(db: BlockingClient) -> None:
    w, d, c_id = 1, 3, 7
    next_o = int(num(db, tpcc.S_NEXT, w, d))
    stock_before = num(db, "SELECT s_quantity FROM stock WHERE s_w_id = $1 AND s_i_id = $2", w, 11)
    lines = [(11, w, 4), (12, w, 1), (13, w, 10)]
    assert run_tx(db, lambda: tpcc.new_order(w, d, c_id, lines, 1)) == OK
    assert num(db, tpcc.S_NEXT, w, d) == next_o + 1
    o = "WHERE o_w_id = $1 AND o_d_id = $2 AND o_id = $3"
    assert num(db, f"SELECT o_ol_cnt FROM oorder {o}", w, d, next_o) == 3
    assert num(db, f"SELECT o_c_id FROM oorder {o}", w, d, next_o) == c_id
    assert one(db, f"SELECT o_carrier_id FROM oorder {o}", w, d, next_o) is None
    assert num(db, "SELECT count(*) FROM new_order WHERE no_w_id = $1 AND no_d_id = $2 AND no_o_id = $3",
               w, d, next_o) == 1  # fmt: skip
    ol = "FROM order_line WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3"
    assert num(db, f"SELECT count(*) {ol}", w, d, next_o) == 3
    price = num(db, "SELECT i_price FROM item WHERE i_id = $1", 11)
    amount = num(db, f"SELECT ol_amount {ol} AND ol_number = 1", w, d, next_o)
    assert math.isclose(amount, round(4 * price, 2), abs_tol=0.011)
    after = num(db, "SELECT s_quantity FROM stock WHERE s_w_id = $1 AND s_i_id = $2", w, 11)
    assert after == (stock_before - 4 if stock_before - 4 >= 10 else stock_before - 4 + 91)


@pytest.mark.timeout(120)
def test_new_order_with_an_unknown_item_rolls_back_everything(db: BlockingClient) -> None:
    w, d = 1, 4
    next_o = int(num(db, tpcc.S_NEXT, w, d))
    orders = num(db, "SELECT count(*) FROM oorder")
    unknown = tpcc.Sizes.of(TPCC_SCALE).items + 1
    lines = [(21, w, 2), (unknown, w, 1)]
    assert (
        run_tx(db, lambda: tpcc.new_order(w, d, 9, lines, 1)) == OK
    )  # a user abort counts as done
    assert num(db, tpcc.S_NEXT, w, d) == next_o  # the increment was rolled back too
    assert num(db, "SELECT count(*) FROM oorder") == orders


@pytest.mark.timeout(120)
def test_payment_moves_the_amount_everywhere(db: BlockingClient) -> None:
    w, d, c_id, amount = 1, 2, 5, 123.45
    c = "WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3"
    w_ytd, d_ytd = (
        num(db, "SELECT w_ytd FROM warehouse WHERE w_id = 1"),
        num(db, "SELECT d_ytd FROM district WHERE d_w_id = $1 AND d_id = $2", w, d),
    )
    balance = num(db, f"SELECT c_balance FROM customer {c}", w, d, c_id)
    count = num(db, f"SELECT c_payment_cnt FROM customer {c}", w, d, c_id)
    history = num(db, "SELECT count(*) FROM history")
    assert run_tx(db, lambda: tpcc.payment(w, d, w, d, c_id, "", amount)) == OK
    assert math.isclose(
        num(db, "SELECT w_ytd FROM warehouse WHERE w_id = 1"), w_ytd + amount, abs_tol=0.005
    )
    assert math.isclose(num(db, "SELECT d_ytd FROM district WHERE d_w_id = $1 AND d_id = $2", w, d),
                        d_ytd + amount, abs_tol=0.005)  # fmt: skip
    assert math.isclose(num(db, f"SELECT c_balance FROM customer {c}", w, d, c_id), balance - amount,
                        abs_tol=0.005)  # fmt: skip
    assert num(db, f"SELECT c_payment_cnt FROM customer {c}", w, d, c_id) == count + 1
    assert num(db, "SELECT count(*) FROM history") == history + 1


@pytest.mark.timeout(120)
def test_payment_by_last_name_pays_the_middle_customer(db: BlockingClient) -> None:
    w, d = 1, 6
    name = tpcc.last_name(
        0
    )  # loaded for customers 1..1000 by rule: the first 1000 get names 0..999
    rows = db.execute(("SELECT c_id FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_last = $3 "
                       "ORDER BY c_first", (w, d, name))).rows  # fmt: skip
    assert rows, f"no customer named {name}"
    middle = int(rows[(len(rows) + 1) // 2 - 1][0] or b"0")
    c = "WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3"
    before = num(db, f"SELECT c_payment_cnt FROM customer {c}", w, d, middle)
    assert run_tx(db, lambda: tpcc.payment(w, d, w, d, None, name, 10.0)) == OK
    assert num(db, f"SELECT c_payment_cnt FROM customer {c}", w, d, middle) == before + 1


@pytest.mark.timeout(120)
def test_delivery_delivers_the_oldest_new_order_of_every_district(db: BlockingClient) -> None:
    w = 1
    oldest = {}
    for d in range(1, tpcc.DISTRICTS + 1):
        oldest[d] = int(
            num(db, "SELECT min(no_o_id) FROM new_order WHERE no_w_id = $1 AND no_d_id = $2", w, d)
        )
    d = 8
    o = oldest[d]
    c_id = int(num(db, tpcc.S_ORDER_C, o, d, w))
    total = num(db, tpcc.S_SUM, o, d, w)
    c = "WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3"
    balance = num(db, f"SELECT c_balance FROM customer {c}", w, d, c_id)
    deliveries = num(db, f"SELECT c_delivery_cnt FROM customer {c}", w, d, c_id)
    new_orders = num(db, "SELECT count(*) FROM new_order")
    assert run_tx(db, lambda: tpcc.delivery(w, 7)) == OK
    assert num(db, "SELECT count(*) FROM new_order") == new_orders - tpcc.DISTRICTS
    for dd in range(1, tpcc.DISTRICTS + 1):
        assert (
            num(db, "SELECT min(no_o_id) FROM new_order WHERE no_w_id = $1 AND no_d_id = $2", w, dd)
            > oldest[dd]
        )
        assert num(db, "SELECT o_carrier_id FROM oorder WHERE o_w_id = $1 AND o_d_id = $2 AND o_id = $3",
                   w, dd, oldest[dd]) == 7  # fmt: skip
    assert math.isclose(num(db, f"SELECT c_balance FROM customer {c}", w, d, c_id), balance + total,
                        abs_tol=0.011)  # fmt: skip
    assert num(db, f"SELECT c_delivery_cnt FROM customer {c}", w, d, c_id) == deliveries + 1
    assert one(db, "SELECT count(*) FROM order_line WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id = $3 "
                   "AND ol_delivery_d IS NULL", w, d, o) == "0"  # fmt: skip


@pytest.mark.timeout(120)
def test_read_only_transactions_change_nothing(db: BlockingClient) -> None:
    def snapshot() -> list[str | None]:
        return [one(db, "SELECT sum(c_balance) FROM customer"), one(db, "SELECT count(*) FROM oorder"),
                one(db, "SELECT sum(s_quantity) FROM stock"), one(db, "SELECT count(*) FROM new_order")]  # fmt: skip

    before = snapshot()
    assert run_tx(db, lambda: tpcc.order_status(1, 1, 3, "")) == OK
    assert run_tx(db, lambda: tpcc.order_status(1, 2, None, tpcc.last_name(1))) == OK
    assert run_tx(db, lambda: tpcc.stock_level(1, 5, 15)) == OK
    assert snapshot() == before


@pytest.mark.timeout(120)
def test_stock_level_counts_distinct_low_items_of_the_last_20_orders(db: BlockingClient) -> None:
    captured: list[Result] = []

    def spy() -> Tx:
        gen = tpcc.stock_level(1, 9, 20)
        result = None
        try:
            step = next(gen)
            while True:
                result = yield step
                if isinstance(step, tuple) and step[0] == tpcc.S_STOCK_COUNT:
                    captured.append(result)
                step = gen.send(result)
        except StopIteration:
            return

    assert run_tx(db, spy) == OK
    next_o = int(num(db, tpcc.S_NEXT, 1, 9))
    rows = db.execute(("SELECT DISTINCT ol_i_id FROM order_line WHERE ol_w_id = 1 AND ol_d_id = 9 "
                       "AND ol_o_id < $1 AND ol_o_id >= $2", (next_o, next_o - 20))).rows  # fmt: skip
    low = [r for r in rows
           if num(db, "SELECT s_quantity FROM stock WHERE s_w_id = 1 AND s_i_id = $1", int(r[0] or b"0")) < 20]  # fmt: skip
    assert captured and int(captured[0].scalar() or "0") == len(low)


# -- YCSB -------------------------------------------------------------------------------------------
@pytest.fixture
def ycsb_db(target: int) -> Iterator[BlockingClient]:
    with BlockingClient("127.0.0.1", target, timeout_s=120) as c:
        c.execute("DROP TABLE IF EXISTS usertable")
        ycsb.load(c, 0.1, 1)  # 100 rows
        yield c
        assert ycsb.check(c, 0.1) == []


def _step(sql: str, *params: object) -> object:
    return lambda: ycsb._one((sql, params))


@pytest.mark.timeout(120)
def test_ycsb_operations(ycsb_db: BlockingClient) -> None:
    c = ycsb_db
    fields = [f"{i:03d}" + "x" * 97 for i in range(ycsb.FIELDS)]
    assert run_tx(c, _step(ycsb.INSERT, 5000, *fields)) == OK
    row = c.execute((ycsb.READ, (5000,))).rows
    assert [v.decode() for v in row[0][1:] if v is not None] == fields
    assert (
        run_tx(c, _step(ycsb.INSERT, 5000, *fields)) == ERROR_REPLY
    )  # the key exists: not retried
    assert len(c.execute((ycsb.SCAN, (10, 21))).rows) == 10  # keys 11..20
    assert run_tx(c, _step(ycsb.DELETE, 15)) == OK
    assert len(c.execute((ycsb.SCAN, (10, 21))).rows) == 9
    assert c.execute((ycsb.READ, (15,))).rows == []
    new = [f"{i:03d}" + "y" * 97 for i in range(ycsb.FIELDS)]
    assert run_tx(c, _step(ycsb.UPDATE, *new, 16)) == OK
    assert [v.decode() for v in c.execute((ycsb.READ, (16,))).rows[0][1:] if v is not None] == new
    newer = [f"{i:03d}" + "z" * 97 for i in range(ycsb.FIELDS)]
    assert (
        run_tx(c, lambda: ycsb._rmw((ycsb.READ_FOR_UPDATE, (17,)), (ycsb.UPDATE, (*newer, 17))))
        == OK
    )
    assert [v.decode() for v in c.execute((ycsb.READ, (17,))).rows[0][1:] if v is not None] == newer
    assert run_tx(c, _step(ycsb.DELETE, 5000)) == OK
