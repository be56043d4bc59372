"""Cost of one pgbench transaction inside Session.receive, without sockets or threads.

    .venv/bin/python bench/sql_session.py [--transactions 50000] [--script select-only|tpcb] [--profile]
    .venv/bin/python bench/sql_session.py --instructions [--transactions 2000] [--script ...]

Builds pgbench's tables (scale 1: 100,000 accounts) through a Session, prepares pgbench's statements
as `pgbench -M prepared` does (named Parse once), then feeds the byte stream libpq sends per
statement (Bind, Describe portal, Execute, Sync) for random accounts, and reports the time per
transaction spent in Session.receive (wall and CPU, median of 5 rounds). --profile prints cProfile's
top functions for one round. These are the server-side costs the network layer adds to; figures
from a busy shared machine vary by 10-20%.

--instructions: machine instructions per transaction, independent of the machine's load: the script
runs twice under valgrind's callgrind (one round of N transactions, then two rounds of the same N)
and the difference of the two totals, divided by N, is the cost of one transaction (setup, imports
and building the byte streams cancel out).
Slow (valgrind is ~50x slower): keep N small.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sqlserver.config import SqlConfig
from sqlserver.protocol import (
    PROTOCOL_3_0,
    Bind,
    CopyData,
    CopyDone,
    Describe,
    Execute,
    Parse,
    Query,
    StartupMessage,
    Sync,
    encode_frontend,
)
from sqlserver.session import Session
from sqlserver.state import ServerState

ACCOUNTS = 100_000
SELECT = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;"
TPCB = [
    ("P_0", "BEGIN;", 0),
    ("P_1", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;", 2),
    ("P_2", "SELECT abalance FROM pgbench_accounts WHERE aid = $1;", 1),
    ("P_3", "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;", 2),
    ("P_4", "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;", 2),
    (
        "P_5",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
        4,
    ),
    ("P_6", "END;", 0),
]


def send(s: Session, *msgs: object) -> bytes:
    return s.receive(b"".join(encode_frontend(m) for m in msgs))  # type: ignore[arg-type]


def setup(state: ServerState) -> Session:
    s = state.new_session("bench")
    send(s, StartupMessage(PROTOCOL_3_0, {"user": "postgres", "database": "postgres"}))
    send(s, Query(
        "create table pgbench_branches(bid int not null,bbalance int,filler char(88));"
        "create table pgbench_tellers(tid int not null,bid int,tbalance int,filler char(84));"
        "create table pgbench_accounts(aid int not null,bid int,abalance int,filler char(84));"
        "create table pgbench_history(tid int,bid int,aid int,delta int,mtime timestamp,filler char(22));"
        "insert into pgbench_branches(bid,bbalance) values(1,0);"
    ))  # fmt: skip
    send(
        s,
        Query(
            "".join(
                f"insert into pgbench_tellers(tid,bid,tbalance) values ({i},1,0);"
                for i in range(1, 11)
            )
        ),
    )
    send(s, Query("copy pgbench_accounts from stdin"))
    rows = b"".join(b"%d\t1\t0\t\n" % i for i in range(1, ACCOUNTS + 1))
    send(s, CopyData(rows), CopyDone())
    for t, c in (("branches", "bid"), ("tellers", "tid"), ("accounts", "aid")):
        send(s, Query(f"alter table pgbench_{t} add primary key ({c})"))
    return s


def streams(script: str, n: int) -> tuple[list[bytes], bytes]:
    rnd = random.Random(1)
    if script == "select-only":
        prepare = encode_frontend(Parse("P_0", SELECT, ())) + encode_frontend(Sync())
        txs = []
        for _ in range(n):
            aid = str(rnd.randint(1, ACCOUNTS)).encode()
            txs.append(
                b"".join(
                    encode_frontend(m)
                    for m in (
                        Bind("", "P_0", (), (aid,), (0,)),
                        Describe("P", ""),
                        Execute("", 0),
                        Sync(),
                    )
                )
            )
        return txs, prepare
    prepare = b"".join(
        encode_frontend(Parse(name, sql, ())) for name, sql, _ in TPCB
    ) + encode_frontend(Sync())
    txs = []
    for _ in range(n):
        aid, tid, delta = rnd.randint(1, ACCOUNTS), rnd.randint(1, 10), rnd.randint(-5000, 5000)
        params = {
            0: (),
            2: (b"%d" % delta, b"%d" % aid),
            1: (b"%d" % aid,),
            4: (b"%d" % tid, b"1", b"%d" % aid, b"%d" % delta),
        }
        parts = []
        for i, (name, _sql, np) in enumerate(TPCB):
            ps = params[np] if i != 3 else (b"%d" % delta, b"%d" % tid)
            ps = ps if i != 4 else (b"%d" % delta, b"1")
            parts.append([Bind("", name, (), ps, (0,)), Describe("P", ""), Execute("", 0), Sync()])
        txs.append([b"".join(encode_frontend(m) for m in stmt) for stmt in parts])  # type: ignore[misc]
    return txs, prepare  # type: ignore[return-value]


def run(s: Session, txs: list, script: str) -> tuple[float, float]:
    receive = s.receive
    w0, c0 = time.perf_counter(), time.process_time()
    if script == "select-only":
        for data in txs:
            receive(data)
    else:
        for stmts in txs:
            for data in stmts:
                receive(data)
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--transactions", type=int, default=50_000)
    ap.add_argument("--script", choices=["select-only", "tpcb"], default="select-only")
    ap.add_argument("--synchronous", choices=["full", "normal", "off"], default="full")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--instructions", action="store_true", help="count instructions with callgrind")
    args = ap.parse_args()
    if args.instructions:
        return count_instructions(args)
    tmp = tempfile.mkdtemp(prefix="sql-session-bench-")
    state = ServerState(SqlConfig(data_dir=tmp, synchronous=args.synchronous))
    try:
        s = setup(state)
        txs, prepare = streams(args.script, args.transactions)
        assert b"E" not in s.receive(prepare)[:1], "prepare failed"
        check = s.receive(txs[0] if args.script == "select-only" else b"".join(txs[0]))
        assert b"ERROR" not in check and b"C\x00" in check, check
        walls, cpus = [], []
        for _ in range(args.rounds):
            w, c = run(s, txs, args.script)
            walls.append(w / len(txs) * 1e6)
            cpus.append(c / len(txs) * 1e6)
        print(f"{args.script}: {statistics.median(walls):.1f} us/transaction wall, "
              f"{statistics.median(cpus):.1f} us CPU (median of {args.rounds} x {len(txs)}; "
              f"{1e6 / statistics.median(walls):,.0f} transactions/s on one thread)")  # fmt: skip
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            run(s, txs, args.script)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        s.close()
    finally:
        state.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def count_instructions(args: argparse.Namespace) -> int:
    totals = []
    for rounds in (1, 2):
        cmd = [
            "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
            sys.executable, __file__, "--transactions", str(args.transactions), "--rounds", str(rounds),
            "--script", args.script, "--synchronous", args.synchronous,
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        m = re.search(r"Collected : (\d+)", done.stderr)
        assert m, done.stderr[-2000:]
        totals.append(int(m.group(1)))
    per_tx = (totals[1] - totals[0]) / args.transactions
    print(f"{args.script}: {per_tx:,.0f} instructions per transaction in Session.receive "
          f"(callgrind, 1 vs 2 rounds of {args.transactions} transactions)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
