"""Micro-benchmark of the PostgreSQL codec's hot path (one pgbench -S -M prepared round trip).

A pgbench select-only transaction in prepared mode is, on the wire, one client batch
Bind(S_1, 1 text parameter) + Execute + Sync, answered by BindComplete + DataRow(1 column) +
CommandComplete("SELECT 1") + ReadyForQuery(I). This measures, in one process and one thread:
- parse: FrontendParser.feed() of that batch then next() until None (messages and batches per second);
- parse x16: sixteen such batches in one buffer (pipelined clients);
- reply: the server's answer built with the fast encoders (data_row, command_complete, constants);
- data_row: data_row() of one int4 text column, and of 10 mixed columns;
- params: types.decoder(INT4, 0) on the parameter and types.encoder(INT4, 0) on the result.
Each figure is the best of --repeats runs of --seconds each (best, because the machine is shared).

Usage: .venv/bin/python bench/pg_codec.py [--seconds 0.5] [--repeats 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from sqlserver.protocol import (
    BIND_COMPLETE,
    PROTOCOL_3_0,
    READY_IDLE,
    Bind,
    Execute,
    FrontendParser,
    StartupMessage,
    Sync,
    command_complete,
    data_row,
    encode_frontend,
    types,
)

BATCH = b"".join(
    encode_frontend(m) for m in (Bind("", "P0_1", (), (b"73421",), ()), Execute("", 0), Sync())
)


def rate(fn: Callable[[int], None], seconds: float, repeats: int) -> float:
    """Best calls per second of fn(n) (which does n operations) over `repeats` timed runs."""
    n = 1000
    while True:  # size n so one run lasts about `seconds`
        t = time.perf_counter()
        fn(n)
        elapsed = time.perf_counter() - t
        if elapsed > seconds / 4:
            break
        n *= 4
    n = max(1, int(n * seconds / elapsed))
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        fn(n)
        best = max(best, n / (time.perf_counter() - t))
    return best


def started_parser() -> FrontendParser:
    parser = FrontendParser()
    parser.feed(encode_frontend(StartupMessage(PROTOCOL_3_0, {"user": "u"})))
    parser.next()
    return parser


def parse_batches(buffer: bytes) -> Callable[[int], None]:
    parser = started_parser()
    feed, next_message = parser.feed, parser.next

    def run(n: int) -> None:
        for _ in range(n):
            feed(buffer)
            while next_message() is not None:
                pass

    return run


def reply(n: int) -> None:
    for _ in range(n):
        b"".join((BIND_COMPLETE, data_row((b"-2340",)), command_complete("SELECT 1"), READY_IDLE))


def row1(n: int) -> None:
    for _ in range(n):
        data_row((b"-2340",))


ROW10 = (
    b"1",
    b"73421",
    None,
    b"hello world",
    b"2024-01-01 10:00:00",
    b"3.5",
    b"t",
    b"",
    b"x" * 84,
    b"42",
)


def row10(n: int) -> None:
    for _ in range(n):
        data_row(ROW10)


def params(n: int) -> None:
    decode, encode = types.decoder(types.INT4, 0), types.encoder(types.INT4, 0)
    for _ in range(n):
        encode(decode(b"73421"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    batches = rate(parse_batches(BATCH), args.seconds, args.repeats)
    batches16 = rate(parse_batches(BATCH * 16), args.seconds, args.repeats) * 16
    results = {
        "parse_batches_per_s": batches,
        "parse_messages_per_s": batches * 3,
        "parse_x16_batches_per_s": batches16,
        "reply_batches_per_s": rate(reply, args.seconds, args.repeats),
        "data_row_1col_per_s": rate(row1, args.seconds, args.repeats),
        "data_row_10col_per_s": rate(row10, args.seconds, args.repeats),
        "int4_param_and_result_per_s": rate(params, args.seconds, args.repeats),
    }
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for name, value in results.items():
            print(f"{name:32s} {value:>14,.0f}")
        total = 1 / results["parse_batches_per_s"] + 1 / results["reply_batches_per_s"]
        total += 1 / results["int4_param_and_result_per_s"]
        print(f"codec time per pgbench -S transaction: {total * 1e6:.2f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
