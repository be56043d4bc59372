"""The cost of `livepatch run`: the test apps (tests/integrations/apps) served plain and under it.

    .venv/bin/python bench/integrations_overhead.py [--requests 3000] [--rounds 5] [--connections 4]

Per app (lineapp: socketserver line server; httpapp: http.server keep-alive; asyncapp: asyncio; poolapp
is left out, it installs itself), two servers run at once: `python -m APP PORT` ("plain") and
`livepatch run --allow-unsigned -m APP PORT` ("run"). Each round sends both the same closed-loop load
(N connections, each sending requests back to back, one at a time), alternating which goes first. Printed:
requests/s and server CPU time per request (/proc: user + system) of each side per round, and the
medians over rounds of the per-round ratios run / plain. CPU per request is the steadier figure on a
shared machine. httpapp gets a twentieth of the requests: its responses go out as two writes (headers,
then body), so each request waits for the client's delayed ACK (~40 ms), with or without livepatch.
The per-request work of the integration is a deactivate/activate pair (two registry lock round trips)
and a quiescence point (one attribute read) per request; on a busy shared machine the ratio is the
figure to read, not the absolute rates.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402

from lpbench.servers import ManagedProcess  # noqa: E402

APPS = ROOT / "tests" / "integrations" / "apps"
LIVEPATCH = str(Path(sys.executable).parent / "livepatch")
READY = re.compile(r"^READY \d+", re.MULTILINE)


def line_load(port: int, requests: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s, s.makefile("rwb") as f:
        for _ in range(requests):
            f.write(b"ann\n")
            f.flush()
            if not f.readline():
                raise ConnectionError("closed")


def http_load(port: int, requests: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(requests):
        conn.request("GET", "/ann")
        resp = conn.getresponse()
        resp.read()
        if resp.status != 200:
            raise ConnectionError(resp.status)
    conn.close()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rate(app: str, port: int, requests: int, connections: int) -> float:
    load = http_load if app == "httpapp" else line_load
    workers = [
        threading.Thread(target=load, args=(port, requests // connections))
        for _ in range(connections)
    ]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return (requests // connections) * connections / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--apps", default="lineapp,httpapp,asyncapp")
    args = ap.parse_args()
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"  # the servers run from the test apps in the tree
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} (shared machine)")
    for app in args.apps.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            os.chdir(APPS / app / "v1")
            ports = {"plain": free_port(), "run": free_port()}
            sock = str(Path(tmp) / "agent.sock")
            lp = [LIVEPATCH, "run", "--allow-unsigned", "--socket", sock, "-m", app]
            servers = {
                "plain": ManagedProcess(
                    [sys.executable, "-m", app, str(ports["plain"])], READY, Path(tmp) / "p.log"
                ),
                "run": ManagedProcess([*lp, str(ports["run"])], READY, Path(tmp) / "r.log"),
            }
            try:
                for s in servers.values():
                    s.start()
                n = args.requests // 20 if app == "httpapp" else args.requests
                rps, cpu = [], []
                for r in range(args.rounds):
                    got, per = {}, {}
                    for k in ["plain", "run"] if r % 2 == 0 else ["run", "plain"]:
                        proc = servers[k].proc
                        assert proc is not None
                        c0 = cpu_s(proc.pid)
                        got[k] = rate(app, ports[k], n, args.connections)
                        per[k] = (cpu_s(proc.pid) - c0) / n * 1e6
                    rps.append(got["run"] / got["plain"])
                    cpu.append(per["run"] / per["plain"] if per["plain"] else float("nan"))
                    print(
                        f"  {app} round {r}: plain {got['plain']:7.0f} req/s {per['plain']:6.1f} us CPU/req;"
                        f" run {got['run']:7.0f} req/s {per['run']:6.1f} us CPU/req"
                    )
                print(
                    f"{app}: run / plain, medians of {args.rounds} rounds: "
                    f"req/s {statistics.median(rps):.3f}, CPU/req {statistics.median(cpu):.3f}"
                )
            finally:
                for s in servers.values():
                    s.stop()


if __name__ == "__main__":
    main()
