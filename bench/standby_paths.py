"""What commit protection adds to the primary's request path, in machine instructions, deterministically.

The end-to-end count (`replication_overhead.py instructions`) moved by ~4% between runs of the same
code (18,620-19,547 instructions per request for the same plain server in session 10), because the
requests per loop iteration and the writes per epoch follow the machine. This drives a kvserver's
request path in-process, the way the event loop calls it, with the same deterministic sequence for every
config and code tree: 40 closed-loop clients (a client whose reply is held sends nothing until it is
released), each request a GET (95%) or a SET (5%) of a uniform key of 100,000 populated ones, an
epoch every EPOCH_REQUESTS requests (captured and pickled as the primary does) and the previous one
acknowledged then (its replies released and put in the clients' output). No sockets, no Primary frames
or acknowledgement decoding: the parts that differ between the request paths of two trees.

Run under callgrind twice with N and 3N requests; the difference / 2N is the cost per request:

    .venv/bin/python bench/standby_paths.py [--requests 60000] [--configs None,commit,none]
    (PYTHONPATH=OTHER_TREE/src for the other tree; the loop's call is whichever the tree has:
    PrimaryHost.begin/end around process_commands, or PrimaryHost.process)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EPOCH_REQUESTS = (
    50  # ~20 epochs per 1,000 requests: what the 95/5 kvmix load measured at 40 clients
)
CLIENTS = 40
KEYS = 100_000


class _Loop:
    """The parts of kvserver.loop.EventLoop that install_primary and PrimaryHost use."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.replication: Any = None
        self.pending: dict[Any, None] = {}

    def schedule_send(self, client: Any) -> None:
        self.pending[client] = None

    def watch_readable(self, fd: int, callback: Any) -> None:
        pass

    def unwatch(self, fd: int) -> None:
        pass

    def call_soon_threadsafe(self, fn: Any) -> None:
        pass


def drive(
    config: str, requests: int, clients: int = CLIENTS, epoch_requests: int = EPOCH_REQUESTS
) -> None:
    """The request path for `requests` requests (config None: no replication)."""
    from kvserver.config import Config
    from kvserver.server import ServerState

    server = ServerState(Config(livepatch=False))
    loop = _Loop(server)
    n_clients = clients
    clients = [server.new_client(None, f"c{i}") for i in range(n_clients)]
    for client in clients:
        client.sock = object()  # "connected": released replies go to its output
    for i in range(KEYS):
        server.databases[0].store(b"key:%012d" % i, b"xxx")
    host = None
    if config != "None":
        from kvserver import replication_support
        from livepatch.replication import Primary, PrimaryOptions, wire

        # install_primary without starting the sender thread (no standby: nothing to connect to)
        start, Primary.start = Primary.start, lambda self: None  # type: ignore[method-assign]
        try:
            primary = replication_support.install_primary(
                loop,
                ("127.0.0.1", 9),
                PrimaryOptions(protection=config),  # type: ignore[arg-type]
            )
        finally:
            Primary.start = start  # type: ignore[method-assign]
        primary.protection.active = config != "none"  # as once a standby has synchronised
        host = loop.replication
        # The link: a connected socket pair, attached as connection 1, synchronised (no full sync).
        link, standby = socket.socketpair()
        link.setblocking(False)
        primary._link_gen = primary._synced_gen = 1
        primary._attached = (1, link, wire.FrameDecoder())

        def ack(epoch: int) -> bytes:
            return wire.encode(wire.Frame(wire.Kind.ACK, epoch, primary.term))

    rng = random.Random(1)
    p = host.protection if host is not None else None
    split = host is not None and hasattr(host, "begin")
    # The loop's call: its own attributes (this tree, kvserver.loop), or the host's methods (a tree
    # of the first begin/end commit), or PrimaryHost.process (older trees).
    hooks: Any = loop if hasattr(loop, "begin_batch") else None
    held = host.held.by_conn if host is not None else {}
    process = server.process_commands
    done = 0
    c = 0
    while done < requests:
        c = (c + 1) % n_clients
        client = clients[c]
        if client in held:
            if len(held) == n_clients:  # nothing can run until an epoch, which needs requests
                raise SystemExit("every client waits: use fewer --epoch-requests or more --clients")
            continue  # waits for its reply
        key = b"key:%012d" % rng.randrange(KEYS)
        batch = [[b"SET", key, b"xyz"]] if rng.random() < 0.05 else [[b"GET", key]]
        if host is None:
            process(client, batch)
        elif hooks is not None:  # as kvserver.loop reads them: attribute loads, then calls
            begin, end = hooks.begin_batch, hooks.end_batch
            begin(batch)
            try:
                process(client, batch)
            finally:
                end(client)
        elif split:
            host.begin(batch)
            try:
                process(client, batch)
            finally:
                host.end(client)
        else:
            host.process(client, batch)
        client.out.clear()  # sent (or nothing: held)
        done += 1
        if done % epoch_requests == 0 and p is not None:  # the same test in every config
            # The Primary's own capture: the tracker's changes, pickled, framed, sent on the link.
            primary._capture(1, time.monotonic())
            standby.recv(1 << 16)
            if p.epoch > 2:  # the epoch before the one just captured is acknowledged now
                standby.send(ack(p.epoch - 2))
                primary._on_readable(1)  # received, decoded, its replies released
                for client in loop.pending:
                    client.out.clear()
                loop.pending.clear()


_TOTALS = re.compile(r"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


def instructions(config: str, requests: int, clients: int, epoch_requests: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        # The same hash seed every run: string and bytes hashes (hence dict probing and the
        # instructions per lookup) otherwise differ from run to run by ~1.5% of the total.
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--drive",
                config,
                "--requests",
                str(requests),
                "--clients",
                str(clients),
                "--epoch-requests",
                str(epoch_requests),
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        return int(_TOTALS.findall(out.read_text(errors="replace"))[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=60_000, help="N: runs N and 3N")
    parser.add_argument("--configs", default="None,commit,none")
    parser.add_argument("--clients", type=int, default=CLIENTS, help="closed-loop clients")
    parser.add_argument(
        "--epoch-requests",
        type=int,
        default=EPOCH_REQUESTS,
        help="requests per epoch (50: 40 clients' rate; 200-250: what 200 clients saturating the "
        "primary measured, 4-5 epochs per 1,000 requests)",
    )
    parser.add_argument("--drive", help=argparse.SUPPRESS)  # the child under valgrind
    args = parser.parse_args()
    if args.drive:
        drive(args.drive, args.requests, args.clients, args.epoch_requests)
        return
    out: dict[str, Any] = {"load_average": os.getloadavg()[0], "pythonpath": os.environ.get(
        "PYTHONPATH", ""), "clients": args.clients,
        "epoch_requests": args.epoch_requests}  # fmt: skip
    for config in args.configs.split(","):
        small = instructions(config, args.requests, args.clients, args.epoch_requests)
        large = instructions(config, 3 * args.requests, args.clients, args.epoch_requests)
        out[config] = round((large - small) / (2 * args.requests))
        print(config, out[config], flush=True)
    base = out.get("None")
    if base:
        out["vs_no_replication"] = {
            c: round(out[c] / base - 1, 3) for c in args.configs.split(",") if c != "None"
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
