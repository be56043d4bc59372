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
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kvserver.conftest import KVServer
from tests.mve.mve_helpers import (
    PANG_RULES,
    Traffic,
    agent_status,
    background_update,
    children,
    finish,
    held,
    pang_rules,
    raw,
    start_server,
    update,
    wait_for_status,
)
from tests.support import livepatch_cli

MANUAL = ("--promote", "manual")  # the follower keeps following until the test acts


def follower_of(server: KVServer, sock: str, proc: subprocess.Popen[str]) -> int:
    """The running update's follower once it is forked: a child of the server."""
    follower = wait_for_status(sock, proc, lambda s: bool(s.get("follower_pid")))["follower_pid"]
    assert follower in children(server.process.pid)
    return int(follower)


# MVE tests written before tests/mve/mve_helpers.py import these from here.
__all__ = ["PANG_RULES", "Traffic", "children", "held", "raw", "start_server", "update"]


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
    with Traffic(server, ping=True) as traffic:
        done = update(
            work_dir, patches["good"], "--rules", str(pang_rules(work_dir)), "--window", "1s"
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "promoted" in done.stdout
        # New connections are served by the new version, while the traffic continues.
        assert raw(held(server), "PING") == b"PANG"
    assert not traffic.errors, traffic.errors[:5]
    # Every connection open before the update survived, with its session state, and sees PANG.
    assert raw(base, "PING") == b"PANG"
    # The agent moved with the server: the control socket answers from the promoted process.
    status = agent_status(str(work_dir / "lp.sock"))
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
    with Traffic(server) as traffic, background_update(patches["good"], sock, *MANUAL) as proc:
        follower = wait_for_status(
            sock, proc, lambda s: bool(s.get("follower_pid")) and s.get("compared", 0) > 0
        )["follower_pid"]
        assert follower in children(server.process.pid)
        os.kill(follower, signal.SIGKILL)
        code, out = finish(proc)
    assert code == 1, out
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
        rules = pang_rules(work_dir)
        accepted = update(work_dir, patches["good"], "--rules", str(rules), "--window", "1s")
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        assert traffic.wait_for_reply(
            b"PANG"
        )  # the same connections, now served by the new version
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.replies.get(b"PONG", 0) > 0 and traffic.replies.get(b"PANG", 0) > 0
    assert raw(held(server), "PING") == b"PANG"


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("patch", "options", "says"),
    [
        # A follower falling behind: discarded once it lags 200 requests.
        ("slow", ("--max-lag", "200", "--window", "60s"), ("lagged", "--max-lag 200")),
        # A follower that hangs: discarded at its progress deadline, whatever the lag bound.
        ("hang", ("--window", "60s", "--max-lag", "10000000"), ("no progress for 10 s",)),
    ],
    ids=["falling-behind", "hanging"],
)
def test_a_stuck_follower_is_discarded_and_the_leader_never_stalls(
    kv_factory: Any,
    patches: dict[str, Path],
    work_dir: Path,
    patch: str,
    options: tuple[str, ...],
    says: tuple[str, ...],
) -> None:
    server = start_server(kv_factory, work_dir)
    with Traffic(server) as traffic:
        t0 = time.monotonic()
        done = update(work_dir, patches[patch], *options)
        took = time.monotonic() - t0
        acked_at_discard = len(traffic.acked)
        assert traffic.wait_for_acked(acked_at_discard + 100)  # still served after the discard
    assert done.returncode == 1, done.stdout + done.stderr
    assert all(text in done.stdout for text in says), done.stdout
    assert took < 40, (
        took
    )  # a bound, generous: the deadlines are 10 s of no progress / 200 requests
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.max_latency_s < 2.0, traffic.max_latency_s  # no stall waiting for the follower
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
    with background_update(patches["good"], sock, *MANUAL) as proc:
        follower = follower_of(server, sock, proc)
        exited = os.pidfd_open(follower)
        try:
            server.kill()  # SIGKILL of the leader
            ready, _, _ = select.select([exited], [], [], 30)
            assert ready, "the follower kept running after its leader was killed"
        finally:
            os.close(exited)
        code, _ = finish(proc)
        assert code == 1  # the CLI lost its agent: not promoted


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
    with background_update(patches["good"], sock, *MANUAL) as proc:
        wait_for_status(sock, proc, lambda s: s.get("state") in ("following", "validated"))
        assert raw(r, "SAVE") == b"OK"
        code, out = finish(proc)
    assert code == 1, out
    assert "b'SAVE'" in out
    assert r.get("k") == b"v"


@pytest.mark.timeout(120)
def test_a_server_asked_to_stop_during_an_update_stops_promptly(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = start_server(kv_factory, work_dir)
    sock = str(work_dir / "lp.sock")
    with background_update(patches["good"], sock, *MANUAL) as proc:
        follower_of(server, sock, proc)
        t0 = time.monotonic()
        assert server.stop(timeout=15) == 0  # SIGTERM: a clean stop, not the SIGKILL after 15 s
        assert time.monotonic() - t0 < 10
        code, out = finish(proc, timeout=30)
        assert code == 1
        assert "shutting down" in out
