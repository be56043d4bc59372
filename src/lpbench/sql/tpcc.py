"""TPC-C as BenchBase runs it (benchmarks/tpcc): W warehouses, the five transactions with the standard mix
    NewOrder 45, Payment 43, OrderStatus 4, Delivery 4, StockLevel 4,
no keying or think time, each connection a terminal with a home warehouse (connection c: c mod W + 1)
and its share of that warehouse's 10 districts (BenchBase's split), prepared statements, one transaction
per BEGIN .. COMMIT. Inputs follow the spec as BenchBase implements it: NURand customer and item ids,
customer by last name 60 % (Payment, OrderStatus), 15 % remote customers in Payment, 1 % remote supply
warehouses and 1 % NewOrders rolled back on an unknown item (a user abort: counted as done).

Scale: W = ceil(scale) warehouses. A scale below 1 keeps one warehouse and shrinks its per-warehouse
tables by that factor (items, customers and orders per district; at least 100 items, 30 customers), for
tests and short runs; the transactions are the same. Standard sizes: 100,000 items, 3,000 customers and
orders per district, the last 900 of them new.

Consistency checks after a run (TPC-C clause 3.3.2.1-4): W_YTD = sum(D_YTD); D_NEXT_O_ID - 1 =
max(O_ID) = max(NO_O_ID); the new orders of a district are contiguous; sum(O_OL_CNT) = count(order lines).

Two deliberate differences in statement order. NewOrder increments D_NEXT_O_ID as its first statement
and then reads it (o_id = the new value - 1), where BenchBase reads the customer, the warehouse and the
district (FOR UPDATE) first and increments after. Delivery takes each district's oldest new order with
one `DELETE ... WHERE no_o_id = (SELECT MIN(no_o_id) ...) RETURNING no_o_id`, where BenchBase selects it
and then deletes it. The spec makes each of these one step (2.4.2.2: D_NEXT_O_ID retrieved and
incremented; 2.7.4.2: the oldest new order selected and deleted), so both orders are TPC-C. It matters on sqlserver, whose transactions begin at their
first statement: one that begins with a write takes SQLite's write lock at once and is never refused,
one that reads first is refused with 40001 whenever another writer committed in between; in BenchBase's
order NewOrder (45 % of the mix, 3 reads before its first write) lost that race so often that about 1 in
900 exhausted its 200 retries under `livepatch stress --workload tpcc`, and after NewOrder's change
Delivery (4 %, one read before its first write) still lost 3 of ~800. PostgreSQL takes the same row
locks either way.

Amounts are computed in SQL (c_balance = c_balance - $1) rather than read, computed and written back as
BenchBase does: the same result inside the transaction, and the balance check does not depend on the
isolation level of the server under test.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from lpbench.sql.pg import BlockingClient, Result
from lpbench.sql.workloads import SqlWorkloadSpec, Tx, TxFactory, weighted
from lpbench.sql.ycsb import TextSource

DISTRICTS = 10
TYPES = ["new_order", "payment", "order_status", "delivery", "stock_level"]
WEIGHTS = [45, 43, 4, 4, 4]
SYLLABLES = ["BAR", "OUGHT", "ABLE", "PRI", "PRES", "ESE", "ANTI", "CALLY", "ATION", "EING"]
NOW = "2026-12-02 00:00:00"
C_LAST_RUN, C_ID_RUN, ITEM_RUN = 223, 259, 7911  # NURand's C constants (any fixed values are valid)


@dataclass(frozen=True)
class Sizes:
    warehouses: int
    items: int
    customers: int  # per district
    orders: int  # per district (one per customer at load time)
    new_orders: int  # the last ones of each district

    @classmethod
    def of(cls, scale: float) -> Sizes:
        if scale <= 0:
            raise ValueError("the TPC-C scale (warehouses) must be > 0")
        f = min(1.0, scale)
        customers = max(30, int(3000 * f))
        return cls(max(1, math.ceil(scale)), max(100, int(100_000 * f)), customers, customers,
                   customers * 3 // 10)  # fmt: skip


def last_name(n: int) -> str:
    return SYLLABLES[n // 100] + SYLLABLES[(n // 10) % 10] + SYLLABLES[n % 10]


def nurand(rng: random.Random, a: int, x: int, y: int, c: int) -> int:
    return (((rng.randint(0, a) | rng.randint(x, y)) + c) % (y - x + 1)) + x


# -- statements ---------------------------------------------------------------------------------
S_CUST = "SELECT c_discount, c_last, c_credit FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3"
S_WTAX = "SELECT w_tax FROM warehouse WHERE w_id = $1"
S_DIST = "SELECT d_next_o_id, d_tax FROM district WHERE d_w_id = $1 AND d_id = $2 FOR UPDATE"
U_DIST_NEXT = "UPDATE district SET d_next_o_id = d_next_o_id + 1 WHERE d_w_id = $1 AND d_id = $2"
I_ORDER = ("INSERT INTO oorder (o_id, o_d_id, o_w_id, o_c_id, o_entry_d, o_ol_cnt, o_all_local) "
           "VALUES ($1, $2, $3, $4, $5, $6, $7)")  # fmt: skip
I_NEW_ORDER = "INSERT INTO new_order (no_o_id, no_d_id, no_w_id) VALUES ($1, $2, $3)"
S_ITEM = "SELECT i_price, i_name, i_data FROM item WHERE i_id = $1"
S_STOCK = ("SELECT s_quantity, s_data, s_dist_{:02d} FROM stock WHERE s_i_id = $1 AND s_w_id = $2 "
           "FOR UPDATE")  # fmt: skip
U_STOCK = ("UPDATE stock SET s_quantity = $1, s_ytd = s_ytd + $2, s_order_cnt = s_order_cnt + 1, "
           "s_remote_cnt = s_remote_cnt + $3 WHERE s_i_id = $4 AND s_w_id = $5")  # fmt: skip
I_LINE = ("INSERT INTO order_line (ol_o_id, ol_d_id, ol_w_id, ol_number, ol_i_id, ol_supply_w_id, "
          "ol_quantity, ol_amount, ol_dist_info) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")  # fmt: skip
U_WYTD = "UPDATE warehouse SET w_ytd = w_ytd + $1 WHERE w_id = $2"
S_WADDR = (
    "SELECT w_street_1, w_street_2, w_city, w_state, w_zip, w_name FROM warehouse WHERE w_id = $1"
)
U_DYTD = "UPDATE district SET d_ytd = d_ytd + $1 WHERE d_w_id = $2 AND d_id = $3"
S_DADDR = ("SELECT d_street_1, d_street_2, d_city, d_state, d_zip, d_name FROM district "
           "WHERE d_w_id = $1 AND d_id = $2")  # fmt: skip
_C_COLS = ("c_id, c_first, c_middle, c_last, c_street_1, c_street_2, c_city, c_state, c_zip, c_phone, "
           "c_credit, c_credit_lim, c_discount, c_balance, c_ytd_payment, c_payment_cnt, c_since")  # fmt: skip
S_CUST_ID = f"SELECT {_C_COLS} FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3"
S_CUST_NAME = (f"SELECT {_C_COLS} FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_last = $3 "
               "ORDER BY c_first")  # fmt: skip
S_CDATA = "SELECT c_data FROM customer WHERE c_w_id = $1 AND c_d_id = $2 AND c_id = $3"
U_CUST_BC = ("UPDATE customer SET c_balance = c_balance - $1, c_ytd_payment = c_ytd_payment + $1, "
             "c_payment_cnt = c_payment_cnt + 1, c_data = $2 WHERE c_w_id = $3 AND c_d_id = $4 AND c_id = $5")  # fmt: skip
U_CUST = ("UPDATE customer SET c_balance = c_balance - $1, c_ytd_payment = c_ytd_payment + $1, "
          "c_payment_cnt = c_payment_cnt + 1 WHERE c_w_id = $2 AND c_d_id = $3 AND c_id = $4")  # fmt: skip
I_HIST = ("INSERT INTO history (h_c_d_id, h_c_w_id, h_c_id, h_d_id, h_w_id, h_date, h_amount, h_data) "
          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")  # fmt: skip
S_LAST_ORDER = ("SELECT o_id, o_carrier_id, o_entry_d FROM oorder WHERE o_w_id = $1 AND o_d_id = $2 "
                "AND o_c_id = $3 ORDER BY o_id DESC LIMIT 1")  # fmt: skip
S_LINES = ("SELECT ol_i_id, ol_supply_w_id, ol_quantity, ol_amount, ol_delivery_d FROM order_line "
           "WHERE ol_o_id = $1 AND ol_d_id = $2 AND ol_w_id = $3")  # fmt: skip
D_OLDEST_NEW = ("DELETE FROM new_order WHERE no_d_id = $1 AND no_w_id = $2 AND no_o_id = "
                "(SELECT MIN(no_o_id) FROM new_order WHERE no_d_id = $1 AND no_w_id = $2) RETURNING no_o_id")  # fmt: skip
S_ORDER_C = "SELECT o_c_id FROM oorder WHERE o_id = $1 AND o_d_id = $2 AND o_w_id = $3"
U_CARRIER = "UPDATE oorder SET o_carrier_id = $1 WHERE o_id = $2 AND o_d_id = $3 AND o_w_id = $4"
U_DELIVERY_D = (
    "UPDATE order_line SET ol_delivery_d = $1 WHERE ol_o_id = $2 AND ol_d_id = $3 AND ol_w_id = $4"
)
S_SUM = "SELECT SUM(ol_amount) FROM order_line WHERE ol_o_id = $1 AND ol_d_id = $2 AND ol_w_id = $3"
U_CUST_DELIVERY = ("UPDATE customer SET c_balance = c_balance + $1, c_delivery_cnt = c_delivery_cnt + 1 "
                   "WHERE c_w_id = $2 AND c_d_id = $3 AND c_id = $4")  # fmt: skip
S_NEXT = "SELECT d_next_o_id FROM district WHERE d_w_id = $1 AND d_id = $2"
S_STOCK_COUNT = ("SELECT COUNT(DISTINCT (s_i_id)) AS stock_count FROM order_line, stock "
                 "WHERE ol_w_id = $1 AND ol_d_id = $2 AND ol_o_id < $3 AND ol_o_id >= $4 "
                 "AND s_w_id = $5 AND s_i_id = ol_i_id AND s_quantity < $6")  # fmt: skip


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode()


# -- the transactions ---------------------------------------------------------------------------
def new_order(w: int, d: int, c: int, lines: list[tuple[int, int, int]], all_local: int) -> Tx:
    yield "BEGIN"
    # The increment first (see the module's docstring), then the district, warehouse and customer reads.
    yield (U_DIST_NEXT, (w, d))
    r: Result = yield (S_DIST, (w, d))
    o_id = int(_text(r.rows[0][0])) - 1
    yield (S_WTAX, (w,))
    yield (S_CUST, (w, d, c))
    yield (I_ORDER, (o_id, d, w, c, NOW, len(lines), all_local))
    yield (I_NEW_ORDER, (o_id, d, w))
    for number, (item, supply_w, qty) in enumerate(lines, 1):
        r = yield (S_ITEM, (item,))
        if not r.rows:  # the 1 % with an unknown item: a user abort, rolled back
            yield "ROLLBACK"
            return
        price = float(_text(r.rows[0][0]))
        r = yield (S_STOCK.format(d), (item, supply_w))
        s_qty = int(_text(r.rows[0][0]))
        new_qty = s_qty - qty if s_qty - qty >= 10 else s_qty - qty + 91
        yield (U_STOCK, (new_qty, qty, int(supply_w != w), item, supply_w))
        dist_info = _text(r.rows[0][2])
        yield (I_LINE, (o_id, d, w, number, item, supply_w, qty, round(qty * price, 2), dist_info))
    yield "COMMIT"


def _customer_by_name(w: int, d: int, name: str) -> Tx:
    """Yields the lookup; the caller takes the middle row (clause 2.5.2.2)."""
    yield (S_CUST_NAME, (w, d, name))


def payment(w: int, d: int, c_w: int, c_d: int, c_id: int | None, c_last: str, amount: float) -> Tx:
    yield "BEGIN"
    yield (U_WYTD, (amount, w))
    yield (S_WADDR, (w,))
    yield (U_DYTD, (amount, w, d))
    yield (S_DADDR, (w, d))
    if c_id is None:
        r: Result = yield (S_CUST_NAME, (c_w, c_d, c_last))
        row = r.rows[(len(r.rows) + 1) // 2 - 1]
    else:
        r = yield (S_CUST_ID, (c_w, c_d, c_id))
        row = r.rows[0]
    cid, credit = int(_text(row[0])), _text(row[10])
    if credit == "BC":
        r = yield (S_CDATA, (c_w, c_d, cid))
        data = f"{cid} {c_d} {c_w} {d} {w} {amount:.2f} | {_text(r.rows[0][0])}"[:500]
        yield (U_CUST_BC, (amount, data, c_w, c_d, cid))
    else:
        yield (U_CUST, (amount, c_w, c_d, cid))
    yield (I_HIST, (c_d, c_w, cid, d, w, NOW, amount, "payment"))
    yield "COMMIT"


def order_status(w: int, d: int, c_id: int | None, c_last: str) -> Tx:
    yield "BEGIN"
    if c_id is None:
        r: Result = yield (S_CUST_NAME, (w, d, c_last))
        c_id = int(_text(r.rows[(len(r.rows) + 1) // 2 - 1][0]))
    else:
        yield (S_CUST_ID, (w, d, c_id))
    r = yield (S_LAST_ORDER, (w, d, c_id))
    if r.rows:
        yield (S_LINES, (int(_text(r.rows[0][0])), d, w))
    yield "COMMIT"


def delivery(w: int, carrier: int) -> Tx:
    yield "BEGIN"
    for d in range(1, DISTRICTS + 1):
        r: Result = yield (D_OLDEST_NEW, (d, w))
        if not r.rows:  # none left, or another terminal delivered it first (read committed)
            continue
        o_id = int(_text(r.rows[0][0]))
        r = yield (S_ORDER_C, (o_id, d, w))
        c_id = int(_text(r.rows[0][0]))
        yield (U_CARRIER, (carrier, o_id, d, w))
        yield (U_DELIVERY_D, (NOW, o_id, d, w))
        r = yield (S_SUM, (o_id, d, w))
        total = float(_text(r.rows[0][0]) or 0)
        yield (U_CUST_DELIVERY, (round(total, 2), w, d, c_id))
    yield "COMMIT"


def stock_level(w: int, d: int, threshold: int) -> Tx:
    yield "BEGIN"
    r: Result = yield (S_NEXT, (w, d))
    next_o = int(_text(r.rows[0][0]))
    yield (S_STOCK_COUNT, (w, d, next_o, next_o - 20, w, threshold))
    yield "COMMIT"


class Tpcc:
    name = "tpcc"
    protocol = "pg"

    def __init__(self, scale: float, seed: int, connections: int) -> None:
        self.sizes = Sizes.of(scale)
        self.rng = random.Random(seed)
        self.pick = weighted(self.rng, TYPES, WEIGHTS)
        self.connections = max(1, connections)

    def _terminal(self, conn: int) -> tuple[int, int, int]:
        """(home warehouse, lowest, highest district) of connection conn (BenchBase's split)."""
        n_w = self.sizes.warehouses
        w = conn % n_w + 1
        terms = len(range(w - 1, self.connections, n_w))
        i = conn // n_w
        if terms > DISTRICTS or terms == 0:
            return w, 1, DISTRICTS
        return w, i * DISTRICTS // terms + 1, (i + 1) * DISTRICTS // terms

    def _customer(self) -> tuple[int | None, str]:
        rng, s = self.rng, self.sizes
        if rng.randint(1, 100) <= 60:
            n = nurand(rng, 255, 0, min(999, s.customers - 1), C_LAST_RUN)
            return None, last_name(n)
        return nurand(rng, 1023, 1, s.customers, C_ID_RUN), ""

    def next_transaction(self, conn: int) -> TxFactory:
        rng, s = self.rng, self.sizes
        w, lo, hi = self._terminal(conn)
        d = rng.randint(lo, hi)
        kind = self.pick()
        if kind == "new_order":
            c = nurand(rng, 1023, 1, s.customers, C_ID_RUN)
            lines = []
            n = rng.randint(5, 15)
            for _ in range(n):
                supply = w
                if s.warehouses > 1 and rng.randint(1, 100) == 1:
                    supply = rng.choice([x for x in range(1, s.warehouses + 1) if x != w])
                lines.append((nurand(rng, 8191, 1, s.items, ITEM_RUN), supply, rng.randint(1, 10)))
            if rng.randint(1, 100) == 1:
                lines[-1] = (s.items + 1, lines[-1][1], lines[-1][2])  # unknown item: rollback
            all_local = int(all(x[1] == w for x in lines))
            return lambda: new_order(w, d, c, lines, all_local)
        if kind == "payment":
            c_w, c_d = w, d
            if s.warehouses > 1 and rng.randint(1, 100) > 85:
                c_w = rng.choice([x for x in range(1, s.warehouses + 1) if x != w])
                c_d = rng.randint(1, DISTRICTS)
            c_id, c_last = self._customer()
            amount = round(rng.uniform(1, 5000), 2)
            return lambda: payment(w, d, c_w, c_d, c_id, c_last, amount)
        if kind == "order_status":
            c_id, c_last = self._customer()
            return lambda: order_status(w, d, c_id, c_last)
        if kind == "delivery":
            carrier = rng.randint(1, 10)
            return lambda: delivery(w, carrier)
        threshold = rng.randint(10, 20)
        return lambda: stock_level(w, d, threshold)


# -- schema and loading -------------------------------------------------------------------------
DDL = [
    "CREATE TABLE warehouse (w_id int PRIMARY KEY, w_ytd decimal(12,2) NOT NULL, w_tax decimal(4,4) "
    "NOT NULL, w_name varchar(10), w_street_1 varchar(20), w_street_2 varchar(20), w_city varchar(20), "
    "w_state char(2), w_zip char(9))",
    "CREATE TABLE item (i_id int PRIMARY KEY, i_name varchar(24), i_price decimal(5,2) NOT NULL, "
    "i_data varchar(50), i_im_id int)",
    "CREATE TABLE stock (s_w_id int NOT NULL, s_i_id int NOT NULL, s_quantity int NOT NULL, "
    "s_ytd decimal(8,2) NOT NULL, s_order_cnt int NOT NULL, s_remote_cnt int NOT NULL, s_data varchar(50), "
    + ", ".join(f"s_dist_{i:02d} char(24)" for i in range(1, 11))
    + ", PRIMARY KEY (s_w_id, s_i_id))",
    "CREATE TABLE district (d_w_id int NOT NULL, d_id int NOT NULL, d_ytd decimal(12,2) NOT NULL, "
    "d_tax decimal(4,4) NOT NULL, d_next_o_id int NOT NULL, d_name varchar(10), d_street_1 varchar(20), "
    "d_street_2 varchar(20), d_city varchar(20), d_state char(2), d_zip char(9), PRIMARY KEY (d_w_id, d_id))",
    "CREATE TABLE customer (c_w_id int NOT NULL, c_d_id int NOT NULL, c_id int NOT NULL, "
    "c_discount decimal(4,4), c_credit char(2), c_last varchar(16), c_first varchar(16), "
    "c_credit_lim decimal(12,2), c_balance decimal(12,2), c_ytd_payment float, c_payment_cnt int, "
    "c_delivery_cnt int, c_street_1 varchar(20), c_street_2 varchar(20), c_city varchar(20), "
    "c_state char(2), c_zip char(9), c_phone char(16), c_since timestamp, c_middle char(2), "
    "c_data varchar(500), PRIMARY KEY (c_w_id, c_d_id, c_id))",
    "CREATE TABLE history (h_c_id int, h_c_d_id int, h_c_w_id int, h_d_id int, h_w_id int, "
    "h_date timestamp, h_amount decimal(6,2), h_data varchar(24))",
    "CREATE TABLE oorder (o_w_id int NOT NULL, o_d_id int NOT NULL, o_id int NOT NULL, o_c_id int NOT NULL, "
    "o_carrier_id int, o_ol_cnt int NOT NULL, o_all_local int NOT NULL, o_entry_d timestamp, "
    "PRIMARY KEY (o_w_id, o_d_id, o_id))",
    "CREATE TABLE new_order (no_w_id int NOT NULL, no_d_id int NOT NULL, no_o_id int NOT NULL, "
    "PRIMARY KEY (no_w_id, no_d_id, no_o_id))",
    "CREATE TABLE order_line (ol_w_id int NOT NULL, ol_d_id int NOT NULL, ol_o_id int NOT NULL, "
    "ol_number int NOT NULL, ol_i_id int NOT NULL, ol_delivery_d timestamp, ol_amount decimal(6,2) NOT NULL, "
    "ol_supply_w_id int NOT NULL, ol_quantity decimal(6,2) NOT NULL, ol_dist_info char(24), "
    "PRIMARY KEY (ol_w_id, ol_d_id, ol_o_id, ol_number))",
    "CREATE INDEX idx_customer_name ON customer (c_w_id, c_d_id, c_last, c_first)",
    "CREATE INDEX idx_order ON oorder (o_w_id, o_d_id, o_c_id, o_id)",
]
TABLES = [
    "history",
    "new_order",
    "order_line",
    "oorder",
    "customer",
    "district",
    "stock",
    "item",
    "warehouse",
]


def load(client: BlockingClient, scale: float, seed: int) -> None:
    s = Sizes.of(scale)
    rng = random.Random(seed)
    text = TextSource(rng)
    for t in TABLES:
        client.execute(f"DROP TABLE IF EXISTS {t}")
    for ddl in DDL:
        client.execute(ddl)

    def addr() -> tuple[str, ...]:
        return (text.text(10), text.text(10), text.text(10), "CA", "123456789")

    client.copy_in("item", [
        (i, text.text(14), round(rng.uniform(1, 100), 2),
         text.text(26) + ("ORIGINAL" if rng.randint(1, 10) == 1 else ""), rng.randint(1, 10000))
        for i in range(1, s.items + 1)
    ])  # fmt: skip
    for w in range(1, s.warehouses + 1):
        client.copy_in(
            "warehouse", [(w, 300000.00, round(rng.uniform(0, 0.2), 4), f"W{w}", *addr())]
        )
        client.copy_in("stock", [
            (w, i, rng.randint(10, 100), 0, 0, 0, text.text(40),
             *(text.text(24) for _ in range(10)))
            for i in range(1, s.items + 1)
        ])  # fmt: skip
        client.copy_in("district", [
            (w, d, 30000.00, round(rng.uniform(0, 0.2), 4), s.orders + 1, f"D{d}", *addr())
            for d in range(1, DISTRICTS + 1)
        ])  # fmt: skip
        for d in range(1, DISTRICTS + 1):
            client.copy_in("customer", [
                (w, d, c, round(rng.uniform(0, 0.5), 4), "BC" if rng.randint(1, 10) == 1 else "GC",
                 last_name(c - 1 if c <= 1000 else nurand(rng, 255, 0, 999, C_LAST_RUN)),
                 text.text(12), 50000.00, -10.00, 10.0, 1, 0, *addr(), "1234567890123456",
                 NOW, "OE", text.text(300))
                for c in range(1, s.customers + 1)
            ])  # fmt: skip
            client.copy_in("history", [(c, d, w, d, w, NOW, 10.00, text.text(20))
                                       for c in range(1, s.customers + 1)])  # fmt: skip
            perm = list(range(1, s.customers + 1))
            rng.shuffle(perm)
            orders, lines, new = [], [], []
            first_new = s.orders - s.new_orders + 1
            for o in range(1, s.orders + 1):
                delivered = o < first_new
                cnt = rng.randint(5, 15)
                orders.append((w, d, o, perm[o - 1], rng.randint(1, 10) if delivered else None,
                               cnt, 1, NOW))  # fmt: skip
                if not delivered:
                    new.append((w, d, o))
                for n in range(1, cnt + 1):
                    lines.append((w, d, o, n, rng.randint(1, s.items), NOW if delivered else None,
                                  0.00 if delivered else round(rng.uniform(0.01, 9999.99), 2), w, 5,
                                  text.text(24)))  # fmt: skip
            client.copy_in("oorder", orders)
            client.copy_in("new_order", new)
            client.copy_in("order_line", lines)


def check(client: BlockingClient, scale: float) -> list[str]:
    problems = []
    rows = client.execute(
        "SELECT w_id, w_ytd, (SELECT SUM(d_ytd) FROM district WHERE d_w_id = w_id) FROM warehouse"
    ).rows
    for row in rows:
        wid, w_ytd, d_sum = (_text(v) for v in row)
        if abs(float(w_ytd) - float(d_sum)) > 0.01:
            problems.append(f"tpcc 1: warehouse {wid} W_YTD {w_ytd} != sum(D_YTD) {d_sum}")
    rows = client.execute(
        "SELECT d_w_id, d_id, d_next_o_id, "
        "(SELECT MAX(o_id) FROM oorder WHERE o_w_id = d_w_id AND o_d_id = d_id), "
        "(SELECT MAX(no_o_id) FROM new_order WHERE no_w_id = d_w_id AND no_d_id = d_id), "
        "(SELECT MIN(no_o_id) FROM new_order WHERE no_w_id = d_w_id AND no_d_id = d_id), "
        "(SELECT COUNT(*) FROM new_order WHERE no_w_id = d_w_id AND no_d_id = d_id), "
        "(SELECT SUM(o_ol_cnt) FROM oorder WHERE o_w_id = d_w_id AND o_d_id = d_id), "
        "(SELECT COUNT(*) FROM order_line WHERE ol_w_id = d_w_id AND ol_d_id = d_id) "
        "FROM district ORDER BY d_w_id, d_id"
    ).rows
    for line in rows:
        w, d, next_o, max_o, max_no, min_no, n_no, sum_cnt, n_lines = (_text(v) for v in line)
        where = f"warehouse {w} district {d}"
        if int(next_o) - 1 != int(max_o) or (max_no and int(max_no) != int(max_o)):
            problems.append(f"tpcc 2: {where}: D_NEXT_O_ID-1 {int(next_o) - 1}, max(O_ID) {max_o}, "
                            f"max(NO_O_ID) {max_no or '-'}")  # fmt: skip
        if max_no and int(max_no) - int(min_no) + 1 != int(n_no):
            problems.append(f"tpcc 3: {where}: new orders {min_no}..{max_no} but {n_no} rows")
        if int(sum_cnt) != int(n_lines):
            problems.append(f"tpcc 4: {where}: sum(O_OL_CNT) {sum_cnt} != {n_lines} order lines")
    return problems


SPEC = SqlWorkloadSpec(Tpcc, load, check, "TPC-C: 5 transactions, standard mix, W warehouses")
