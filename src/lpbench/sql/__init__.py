"""lpbench over the PostgreSQL wire protocol: a cheap client on the shared sans-IO codec
(sqlserver.protocol's client side), the load driver, and BenchBase-style workloads (NoOp, YCSB, TPC-C).

    pg.py          Conversation (sans-IO: startup, one Query at a time, Result per ReadyForQuery),
                   BlockingClient (loading, checks, tests), literal quoting
    driver.py      PgDriver: lpbench's driver for transactions of several round trips
    workloads.py   the registry of SQL workloads; noop.py, ycsb.py, tpcc.py one each
"""
