"""Validated updates on kvserver, end to end: real server processes, redis-py clients, the `livepatch`
command. A correct update is promoted with every connection surviving; a buggy one is discarded at the
first diverging request; a killed follower is discarded; a declared difference is accepted."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.mve.conftest import KVServer, livepatch_cli

PANG_RULES = """
def rule_ping_says_pang(request, old_reply, new_reply):
    return request[0].upper() == b"PING" and old_reply == b"+PONG\\r\\n" and new_reply == b"+PANG\\r\\n"
"""


def start_server(kv_factory: Callable[..., KVServer], work: Path, *extra: str) -> KVServer:
    return kv_factory("--livepatch-socket", str(work / "lp.sock"), "--allow-unsigned", *extra)


def raw(r: redis.Redis, *args: str) -> Any:
    """A command on r's one connection, its reply as parsed, without redis-py's callbacks."""
    conn = r.connection
    assert conn is not None
    conn.send_command(*args)
    return conn.read_response()


def held(server: KVServer) -> redis.Redis:
    """One client, one connection for its whole life (what must survive the update)."""
    return server.client(single_connection_client=True)


class Traffic:
    """Clients hammering the server from threads until stopped; every reply is checked as it comes."""

    def __init__(self, server: KVServer, ping: bool = False, clients: int = 4) -> None:
        self.server, self.ping = server, ping
        self.stop = threading.Event()
        self.acked: list[str] = []
        self.errors: list[str] = []
        self.replies: dict[bytes, int] = {}
        self.changed = threading.Condition()
        self.max_latency_s = 0.0  # the longest SET+GET round trips of any client
        self.progress = threading.Semaphore(0)
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)
        ]

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        for _ in self.threads:  # every client is in its loop before the update starts
            assert self.progress.acquire(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def wait_for_acked(self, count: int, timeout: float = 30) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.acked) >= count, timeout)

    def wait_for_reply(self, reply: bytes, timeout: float = 30) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.replies.get(reply, 0) > 0, timeout)

    def _run(self, n: int) -> None:
        r = held(self.server)
        i = 0
        first = True
        try:
            while not self.stop.is_set():
                key = f"t{n}:{i}"
                t0 = time.monotonic()
                r.set(key, key)
                with self.changed:
                    self.acked.append(key)
                    self.changed.notify_all()
                value = r.get(key)
                self.max_latency_s = max(self.max_latency_s, time.monotonic() - t0)
                if value != key.encode():
                    self.errors.append(f"GET {key} -> {value!r}")
                if self.ping:
                    pong = raw(r, "PING")
                    if pong not in (b"PONG", b"PANG"):
                        self.errors.append(f"PING -> {pong!r}")
                    with self.changed:
                        self.replies[pong] = self.replies.get(pong, 0) + 1
                        self.changed.notify_all()
                i += 1
                if first:
                    first = False
                    self.progress.release()
        except Exception as exc:
            self.errors.append(f"client {n}: {type(exc).__name__}: {exc}")
            if first:
                self.progress.release()


def update(work: Path, patch: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return livepatch_cli(
        "update", str(patch), "--socket", str(work / "lp.sock"), "--validate", *extra, timeout=200
    )


def start_manual_update(patch: Path, sock: str) -> subprocess.Popen[str]:
    """`livepatch update PATCH --validate --promote manual` in the background: the follower keeps
    following until the test promotes, discards or kills something."""
    return subprocess.Popen(
        [sys.executable, "-m", "livepatch.cli", "update", str(patch), "--socket", sock,
         "--validate", "--promote", "manual"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


@pytest.mark.timeout(180)
def test_correct_update_is_promoted_connections_survive_no_key_lost(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    data = work_dir / "data"
    server = start_server(kv_factory, work_dir, "--dir", str(data), "--appendfsync", "always")
    base = held(server)
    base.execute_command("DEBUG", "POPULATE", "1000")
    in_db3 = held(server)
    in_db3.select(3)
    in_db3.set("db3key", "three")
    in_multi = held(server)
    assert raw(in_multi, "MULTI") == b"OK"
    assert raw(in_multi, "SET", "queued", "before") == b"QUEUED"
    half = socket.create_connection((server.host, server.port), timeout=30)
    half.sendall(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$5\r\nwh")  # a request cut in two
    assert (
        raw(base, "PING") == b"PONG"
    )  # likely read into its parser by now (else still in the kernel)
    rules = work_dir / "rules.py"
    rules.write_text(PANG_RULES)
    with Traffic(server, ping=True) as traffic:
        done = update(work_dir, patches["good"], "--rules", str(rules), "--window", "1s")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "promoted" in done.stdout
        # New connections are served by the new version, while the traffic continues.
        assert raw(held(server), "PING") == b"PANG"
    assert not traffic.errors, traffic.errors[:5]
    # Every connection open before the update survived, with its session state, and sees PANG.
    assert raw(base, "PING") == b"PANG"
    # The agent moved with the server: the control socket answers from the promoted process.
    deadline = time.monotonic() + 30
    status = livepatch_cli("status", "--socket", str(work_dir / "lp.sock"), "--json")
    while status.returncode != 0 and time.monotonic() < deadline:
        status = livepatch_cli("status", "--socket", str(work_dir / "lp.sock"), "--json")
    assert status.returncode == 0, status.stdout + status.stderr + server.log()[-4000:]
    assert json.loads(status.stdout)["pid"] in children(server.process.pid)
    half.sendall(b"ole\r\n")  # the rest of the request, to the new version
    assert half.recv(100) == b"+OK\r\n"
    assert base.get("half") == b"whole"
    half.close()
    assert in_db3.get("db3key") == b"three"  # still in database 3, without a new SELECT
    assert raw(in_multi, "EXEC") == [b"OK"]  # the MULTI opened before the update
    assert base.get("queued") == b"before"
    for key in traffic.acked:
        assert base.get(key) == key.encode(), key
    size = base.dbsize()
    assert size >= 1000 + len(traffic.acked) + 1
    # The original pid still stands for the server: SIGTERM stops the promoted one (clean shutdown),
    # and a restart from the same directory has every acknowledged write (the AOF moved with it).
    assert server.stop() == 0
    again = kv_factory("--dir", str(data))
    r = again.client()
    assert r.dbsize() == size
    assert all(r.get(k) == k.encode() for k in traffic.acked[-50:])
    assert again.stop() == 0


@pytest.mark.timeout(180)
def test_buggy_update_is_discarded_at_the_first_diverging_get(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    before = held(server)
    before.set("k", "v")
    with Traffic(server) as traffic:
        done = update(work_dir, patches["bad"], "--window", "30s")
    assert done.returncode == 1, done.stdout + done.stderr
    report = done.stdout
    assert "discarded" in report
    assert "b'GET'" in report  # the report names the request...
    assert "!" in report.split("new version:")[1]  # ...and both replies
    assert not traffic.errors, traffic.errors[:5]  # clients saw only the old version's replies
    assert before.get("k") == b"v"
    assert children(server.process.pid) == []  # the follower is gone


@pytest.mark.timeout(180)
def test_killed_follower_is_discarded_and_clients_see_nothing(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    sock = str(work_dir / "lp.sock")
    with Traffic(server) as traffic:
        proc = start_manual_update(patches["good"], sock)
        try:
            follower = None
            deadline = time.monotonic() + 60
            while follower is None and time.monotonic() < deadline:
                status = json.loads(
                    livepatch_cli("update-status", "--socket", sock, "--json").stdout
                )
                update_state = status.get("update") or {}
                if update_state.get("follower_pid") and update_state.get("compared", 0) > 0:
                    follower = update_state["follower_pid"]
                else:
                    time.sleep(0.05)
            assert follower in children(server.process.pid)
            os.kill(follower, signal.SIGKILL)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1, out + err
    assert "killed by signal 9" in out
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.acked and held(server).get(traffic.acked[-1]) is not None


@pytest.mark.timeout(240)
def test_declared_difference_is_accepted_and_the_same_undeclared_is_not(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    with Traffic(server, ping=True) as traffic:
        refused = update(work_dir, patches["good"], "--window", "1s")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "b'PING'" in refused.stdout and "PANG" in refused.stdout
        assert "rule_differs_by_nature" in refused.stdout  # the rule set in force is named
        rules = work_dir / "rules.py"
        rules.write_text(PANG_RULES)
        accepted = update(work_dir, patches["good"], "--rules", str(rules), "--window", "1s")
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        assert traffic.wait_for_reply(
            b"PANG"
        )  # the same connections, now served by the new version
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.replies.get(b"PONG", 0) > 0 and traffic.replies.get(b"PANG", 0) > 0
    assert raw(held(server), "PING") == b"PANG"


@pytest.mark.timeout(180)
def test_follower_falling_behind_is_discarded_and_the_leader_never_stalls(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    with Traffic(server) as traffic:
        done = update(work_dir, patches["slow"], "--max-lag", "200", "--window", "60s")
        acked_at_discard = len(traffic.acked)
        assert traffic.wait_for_acked(acked_at_discard + 100)  # still served after the discard
    assert done.returncode == 1, done.stdout + done.stderr
    assert "lagged" in done.stdout and "--max-lag 200" in done.stdout
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.max_latency_s < 2.0, traffic.max_latency_s  # no stall waiting for the follower
    assert children(server.process.pid) == []


@pytest.mark.timeout(180)
def test_hanging_follower_is_discarded_within_its_deadline(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    with Traffic(server) as traffic:
        t0 = time.monotonic()
        done = update(work_dir, patches["hang"], "--window", "60s", "--max-lag", "10000000")
        took = time.monotonic() - t0
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no progress for 10 s" in done.stdout
    assert took < 40, took
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.max_latency_s < 2.0, traffic.max_latency_s
    assert children(server.process.pid) == []


def test_cli_refusals_say_what_to_do(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    sock = str(work_dir / "lp.sock")
    plain = livepatch_cli("update", str(patches["good"]), "--socket", sock)
    assert plain.returncode == 2 and "add --validate" in plain.stderr
    window = livepatch_cli(
        "update", str(patches["good"]), "--socket", sock, "--validate", "--window", "5m"
    )
    assert window.returncode == 2 and "--window" in window.stderr
    rules = work_dir / "broken.py"
    rules.write_text("def rule_x(:\n")
    broken = update(work_dir, patches["good"], "--rules", str(rules))
    assert broken.returncode == 1
    assert "cannot load the rules file" in broken.stderr and "Traceback" not in broken.stderr
    idle = livepatch_cli("promote", "--socket", sock)
    assert idle.returncode == 1 and "no validated update is running" in idle.stderr
    status = livepatch_cli("update-status", "--socket", sock)
    assert status.returncode == 0 and "no validated update is running" in status.stdout
    assert children(server.process.pid) == []  # nothing was forked for any of these
    assert raw(held(server), "PING") == b"PONG"


@pytest.mark.timeout(120)
def test_follower_exits_by_itself_when_the_leader_is_killed(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    sock = str(work_dir / "lp.sock")
    proc = start_manual_update(patches["good"], sock)
    try:
        follower = None
        deadline = time.monotonic() + 60
        while follower is None and time.monotonic() < deadline:
            state = json.loads(livepatch_cli("update-status", "--socket", sock, "--json").stdout)
            follower = (state.get("update") or {}).get("follower_pid")
        assert follower in children(server.process.pid)
        exited = os.pidfd_open(follower)
        try:
            server.kill()  # SIGKILL of the leader
            ready, _, _ = select.select([exited], [], [], 30)
            assert ready, "the follower kept running after its leader was killed"
        finally:
            os.close(exited)
        proc.communicate(timeout=30)
        assert proc.returncode == 1  # the CLI lost its agent: not promoted
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(120)
def test_the_follower_never_writes_the_leaders_files(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    """A SAVE during the window is the leader's alone: the follower answers it differently (it holds no
    persistence), so the update is discarded, naming SAVE, and the snapshot is the leader's."""
    data = work_dir / "data"
    server = start_server(kv_factory, work_dir, "--dir", str(data))
    r = held(server)
    r.set("k", "v")
    sock = str(work_dir / "lp.sock")
    proc = start_manual_update(patches["good"], sock)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = json.loads(livepatch_cli("update-status", "--socket", sock, "--json").stdout)
            if (state.get("update") or {}).get("state") in ("following", "validated"):
                break
        assert raw(r, "SAVE") == b"OK"
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    assert "b'SAVE'" in out
    assert r.get("k") == b"v"


@pytest.mark.timeout(120)
def test_a_server_asked_to_stop_during_an_update_stops_promptly(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    sock = str(work_dir / "lp.sock")
    proc = start_manual_update(patches["good"], sock)
    try:
        follower = None
        deadline = time.monotonic() + 60
        while follower is None and time.monotonic() < deadline:
            state = json.loads(livepatch_cli("update-status", "--socket", sock, "--json").stdout)
            follower = (state.get("update") or {}).get("follower_pid")
        assert follower in children(server.process.pid)
        t0 = time.monotonic()
        assert server.stop(timeout=15) == 0  # SIGTERM: a clean stop, not the SIGKILL after 15 s
        assert time.monotonic() - t0 < 10
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1
        assert "shutting down" in out + err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
