"""A validated update of kvserver (issue 14) under a probing client: fork and install times, the longest
request the client saw, and its throughput while two versions run vs before.

    .venv/bin/python bench/mve_update.py [KEYS ...]      (default: 100000 1000000)

Per state size: start kvserver with the agent, DEBUG POPULATE KEYS, then one client sends GET/SET in a
loop (each request timed) while `livepatch update pang.lpatch --validate --window 2s --exercise-wait 0`
runs (PING -> PANG, declared by a rule); prints one JSON line per size. A first measurement: one probing
client, no pipelining, on a shared machine (see the machine note).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import redis

import kvserver
from kv_common import machine_note
from lpbench.servers import ManagedProcess, free_port

RULES = "def rule_pang(request, old, new):\n    return request[0].upper() == b'PING'\n"
PING = "return argv[1] if len(argv) == 2 else PONG"
PANG = 'return argv[1] if len(argv) == 2 else SimpleString("PANG")'


def build_patch(work: Path) -> Path:
    src = Path(kvserver.__file__).resolve().parent
    for v in ("v1", "v2"):
        shutil.copytree(src, work / v / "kvserver", ignore=shutil.ignore_patterns("__pycache__"))
    f = work / "v2" / "kvserver" / "commands" / "connection.py"
    f.write_text(f.read_text().replace(PING, PANG))
    out = work / "pang.lpatch"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "livepatch.cli",
            "diff",
            str(work / "v1"),
            str(work / "v2"),
            "--package",
            "kvserver",
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def probe(port: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    r = redis.Redis(port=port, single_connection_client=True, socket_timeout=60)
    i = 0
    while not stop.is_set():
        t0 = time.monotonic()
        if i % 2:
            r.get(f"key:{i % 1000}")
        else:
            r.set(f"probe:{i}", i)
        samples.append((t0, time.monotonic() - t0))
        i += 1


def one(keys: int, work: Path, patch: Path) -> dict[str, object]:
    port = free_port()
    sock = work / f"lp{keys}.sock"
    rules = work / "rules.py"
    rules.write_text(RULES)
    server = ManagedProcess(
        [
            sys.executable,
            "-m",
            "kvserver",
            "--port",
            str(port),
            "--livepatch-socket",
            str(sock),
            "--allow-unsigned",
        ],
        __import__("re").compile(r"kvserver ready on"),
        work / f"server{keys}.log",
        ready_timeout_s=600,
        stop_timeout_s=600,
    )
    server.start()
    try:
        redis.Redis(port=port).execute_command("DEBUG", "POPULATE", str(keys))
        stop = threading.Event()
        samples: list[tuple[float, float]] = []
        t = threading.Thread(target=probe, args=(port, stop, samples), daemon=True)
        t.start()
        time.sleep(2.0)  # the baseline: two seconds of one version
        t_update = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "livepatch.cli",
                "update",
                str(patch),
                "--socket",
                str(sock),
                "--validate",
                "--rules",
                str(rules),
                "--window",
                "2s",
                "--exercise-wait",
                "0",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        t_done = time.monotonic()
        time.sleep(1.0)
        stop.set()
        t.join(timeout=60)
    finally:
        server.stop()
    report = json.loads(done.stdout)["update"]
    before = [lat for ts, lat in samples if ts < t_update]
    during = [lat for ts, lat in samples if t_update <= ts <= t_done]
    return {
        "keys": keys,
        "outcome": report["outcome"],
        "fork_ms": round(report["fork_ms"], 1),
        "follower_install_ms": round(report["apply_ms"], 1),
        "update_s": round(t_done - t_update, 2),
        "max_latency_ms_before": round(max(before) * 1e3, 1),
        "max_latency_ms_during_update": round(max(during) * 1e3, 1),
        "probe_ops_per_s_before": round(len(before) / 2.0),
        "probe_ops_per_s_during": round(len(during) / (t_done - t_update)),
    }


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    print(json.dumps({"machine": machine_note()}), flush=True)
    work = Path(tempfile.mkdtemp(prefix="mvebench-"))
    try:
        patch = build_patch(work)
        for keys in sizes:
            print(json.dumps(one(keys, work, patch)), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
