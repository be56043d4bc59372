"""The leader's cost of running two versions, in instructions per request, without the machine's noise
and without valgrind's slowdown skewing the periodic work (issue 14).

    .venv/bin/python bench/mve_record_cost.py [--requests 50000] [--python-too]

valgrind --tool=callgrind runs the same in-process workload twice: kvserver's dispatcher
(ServerState.process_commands) over N requests shaped like redis-benchmark's (-t set,get -c 50 -r
100000: one request per read, 50 clients in turn), once as it runs with no update, once with a validated
update's recording installed (kvserver.mve_support's wrappers feeding a livepatch.mve Session's log
writer, which pickles and sends the log into a socketpair in bulk, as in the leader). The difference
over N is what recording adds per request. Combined with the server's whole per-request count
(bench/mve_throughput.py --instructions, "with_mve_host": parsing, system-call wrappers, the loop)
it gives the leader's throughput with a follower relative to without, as far as the CPU goes.
What this leaves out, by design: the monitor thread's periodic work (about 20 wake-ups a second,
independent of the load: under valgrind, which runs the server ~50x slower, that periodic work is
charged to 50x fewer requests and swamps the count, which is why the whole-server count with a
follower is not the figure to quote).
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
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def workload(n: int, record: bool) -> None:
    from kvserver.config import Config
    from kvserver.mve_support import KvHost
    from kvserver.server import ServerState
    from livepatch.mve import channel
    from livepatch.mve.session import Session

    rnd = random.Random(1)
    server = ServerState(Config())
    clients = [ServerState.new_client(server, None, "bench") for _ in range(50)]
    requests = []
    for i in range(n):
        key = b"key:%012d" % rnd.randrange(100_000)
        argv = [b"SET", key, b"xxx"] if (i // 50) % 2 == 0 else [b"GET", key]
        requests.append((clients[i % 50], argv))
    if record:
        leader, _follower = socket.socketpair()  # nobody reads: the log waits in the backlog
        session = Session.__new__(Session)  # only its Recorder half: no fork, no monitor
        session.seq = 0
        session._uncounted = 0
        session._writer = channel.LogWriter(leader, 1 << 30)
        KvHost(types.SimpleNamespace(server=server)).start_recording(session)
    process = server.process_commands
    for client, argv in requests:
        process(client, [argv])
        client.out.clear()  # the loop sends and clears it


def count(n: int, record: bool, python_recorder: bool = False) -> int:
    env = dict(os.environ)
    env.pop("LIVEPATCH_MVE_PY_RECORDER", None)
    if python_recorder:
        env["LIVEPATCH_MVE_PY_RECORDER"] = "1"  # kvserver.mve_support's pure-Python recorder
    with tempfile.TemporaryDirectory() as work:
        log = Path(work) / "cg.log"
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", f"--log-file={log}",
             sys.executable, __file__, "--child", str(n), "--record" if record else "--plain"],
            check=True, capture_output=True, env=env,
        )  # fmt: skip
        found = re.findall(r"Collected : (\d+)", log.read_text())
        return int(found[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--server-instructions", type=float, default=None,
                    help="the whole server's count per request (bench/mve_throughput.py --instructions)")  # fmt: skip
    ap.add_argument("--python-too", action="store_true",
                    help="also count the pure-Python recorder (LIVEPATCH_MVE_PY_RECORDER=1), same run")  # fmt: skip
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--record", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.child is not None:
        workload(args.child, args.record)
        return
    n = args.requests
    from kvserver import mve_support

    plain, recorded = count(n, False), count(n, True)
    extra = (recorded - plain) / n
    row: dict[str, object] = {
        "requests": n,
        "dispatch_instructions_per_request": round(plain / n),
        "recorder": "C" if mve_support._CRecorder is not None else "python (C module not built)",
        "recording_adds_per_request": round(extra),
    }
    if args.python_too:
        python_extra = (count(n, True, python_recorder=True) - plain) / n
        row["python_recorder_adds_per_request"] = round(python_extra)
    if args.server_instructions:
        row["leader_one_version_over_two"] = round(
            args.server_instructions / (args.server_instructions + extra), 3
        )
        if args.python_too:
            row["leader_one_version_over_two_python_recorder"] = round(
                args.server_instructions / (args.server_instructions + python_extra), 3
            )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
