"""OLAP: five of CH-benCHmark's analytical queries (BenchBase's `chbenchmark`, Q1, Q4, Q6, Q12, Q14:
the ones that need only TPC-C's tables) over the TPC-C schema and data (lpbench.sql.tpcc loads and
checks it), verbatim, one query per transaction, weights as in BenchBase's sample configuration
(Q1 3, Q4 2, Q6 5, Q12 5, Q14 5). Each scans order_line (and oorder or item): long-running against
short OLTP transactions, the paper's OLAP case. As in BenchBase, the loader's dates are the load time,
so the date windows of Q6, Q12 and Q14 (before 2020) select nothing after scanning everything.
"""

from __future__ import annotations

import random

from lpbench.sql import tpcc
from lpbench.sql.workloads import SqlWorkloadSpec, Tx, TxFactory, weighted

QUERIES = {
    "q1": "SELECT ol_number, sum(ol_quantity) AS sum_qty, sum(ol_amount) AS sum_amount, "
    "avg(ol_quantity) AS avg_qty, avg(ol_amount) AS avg_amount, count(*) AS count_order "
    "FROM order_line WHERE ol_delivery_d > '2007-01-02 00:00:00.000000' "
    "GROUP BY ol_number ORDER BY ol_number",
    "q4": "SELECT o_ol_cnt, count(*) AS order_count FROM oorder WHERE exists (SELECT * FROM order_line "
    "WHERE o_id = ol_o_id AND o_w_id = ol_w_id AND o_d_id = ol_d_id AND ol_delivery_d >= o_entry_d) "
    "GROUP BY o_ol_cnt ORDER BY o_ol_cnt",
    "q6": "SELECT sum(ol_amount) AS revenue FROM order_line "
    "WHERE ol_delivery_d >= '1999-01-01 00:00:00.000000' AND ol_delivery_d < '2020-01-01 00:00:00.000000' "
    "AND ol_quantity BETWEEN 1 AND 100000",
    "q12": "SELECT o_ol_cnt, sum(CASE WHEN o_carrier_id = 1 OR o_carrier_id = 2 THEN 1 ELSE 0 END) "
    "AS high_line_count, sum(CASE WHEN o_carrier_id <> 1 AND o_carrier_id <> 2 THEN 1 ELSE 0 END) "
    "AS low_line_count FROM oorder, order_line WHERE ol_w_id = o_w_id AND ol_d_id = o_d_id "
    "AND ol_o_id = o_id AND o_entry_d <= ol_delivery_d AND ol_delivery_d < '2020-01-01 00:00:00.000000' "
    "GROUP BY o_ol_cnt ORDER BY o_ol_cnt",
    "q14": "SELECT (100.00 * sum(CASE WHEN i_data LIKE 'PR%' THEN ol_amount ELSE 0 END) "
    "/ (1 + sum(ol_amount))) AS promo_revenue FROM order_line, item WHERE ol_i_id = i_id "
    "AND ol_delivery_d >= '2007-01-02 00:00:00.000000' AND ol_delivery_d < '2020-01-02 00:00:00.000000'",
}
WEIGHTS = [3, 2, 5, 5, 5]


def _query(sql: str) -> Tx:
    yield (sql, ())


class Olap:
    name = "olap"
    protocol = "pg"

    def __init__(self, scale: float, seed: int, connections: int) -> None:
        self.pick = weighted(random.Random(seed), list(QUERIES), WEIGHTS)

    def next_transaction(self, conn: int) -> TxFactory:
        sql = QUERIES[self.pick()]
        return lambda: _query(sql)


SPEC = SqlWorkloadSpec(Olap, tpcc.load, tpcc.check, "CH-benCHmark Q1, Q4, Q6, Q12, Q14 over TPC-C")
