"""A small thread-per-connection TCP service that runs the livepatch Agent (end-to-end test subject).

Protocol: one request line in, one reply line out ("GREET name", "PING"). Each connection thread is a
managed thread; it is inactive while it waits for the next line (so a patch never waits for an idle
client) and passes a quiescence point before each request. The handlers live in the `greetsvc`
package loaded from --code (tests/agent/service/v1).

Prints "READY <port>" on stdout once it accepts connections; exits on SIGTERM or when stdin closes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading

import livepatch

MAX_LINE = 64 * 1024


def serve_connection(conn: socket.socket, handlers) -> None:  # type: ignore[no-untyped-def]
    with conn, livepatch.managed_thread("connection"), conn.makefile("rwb") as f:
        while True:
            livepatch.deactivate()  # waiting for a client is not work: no patch waits for it
            line = f.readline(MAX_LINE)
            livepatch.activate()
            if not line:
                return
            livepatch.quiescence_point()  # no lock, no request in flight: the safe place to move
            try:
                reply = handlers.handle(line.decode("utf-8", "replace").strip())
            except Exception as exc:  # a failing handler answers an error; the service keeps going
                reply = f"ERR {type(exc).__name__}: {exc}"
            f.write(reply.encode() + b"\n")
            f.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--trusted-key", action="append", default=[])
    ap.add_argument("--allow-unsigned", action="store_true")
    ap.add_argument("--socket-mode", type=lambda s: int(s, 8), default=0o600)
    ap.add_argument("--metrics-port", type=int, default=None)
    ap.add_argument("--max-history", type=int, default=None,
                    help="lower the attempts kept in memory and per start in the state directory")  # fmt: skip
    args = ap.parse_args()
    if args.max_history is not None:  # before the Agent (its keeper sizes its memory when created)
        from livepatch.agent import state_dir
        from livepatch.runtime import core

        core.DEFAULT.max_history = args.max_history
        state_dir.MAX_START_HISTORY = args.max_history
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )

    sys.path.insert(0, args.code)
    from greetsvc import handlers

    listener = socket.create_server(("127.0.0.1", 0))
    agent = livepatch.Agent(
        socket_path=args.socket,
        trusted_keys=args.trusted_key,
        allow_unsigned=args.allow_unsigned,
        metrics_port=args.metrics_port,
        socket_mode=args.socket_mode,
    )
    agent.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve_connection, args=(conn, handlers), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    metrics = f" {agent.metrics_address[1]}" if agent.metrics_address else ""
    print(f"READY {listener.getsockname()[1]}{metrics}", flush=True)
    stop.wait()
    agent.stop()
    listener.close()
    os._exit(0)  # connection threads are daemons blocked in reads: do not wait for them


if __name__ == "__main__":
    main()
