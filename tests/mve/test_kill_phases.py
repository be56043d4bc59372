"""Kill -9 of the follower or of the leader at every phase of a validated update (issue 14).

The server holds at a chosen phase (livepatch.mve.phases: LIVEPATCH_MVE_HOLD_DIR/_AT make it block on a
FIFO), the test waits for the FIFO to appear (the phase is reached), then kills: no sleep decides when.
  follower killed: the leader's clients keep being served and see nothing (no error);
  leader killed:   the follower exits by itself, and a restart has every acknowledged write
                   (appendfsync always);
  either killed in the hand-over: exactly one process serves, or none and a restart recovers.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.mve.conftest import KVServer, livepatch_cli
from tests.mve.test_validated_update import Traffic, children, held

BEFORE_HANDOVER = ("follower:fork", "follower:transform", "follower:catch-up", "follower:compare")


def start(kv_factory: Any, work: Path, monkeypatch: Any, point: str) -> KVServer:
    holds = work / "holds"
    holds.mkdir()
    monkeypatch.setenv("LIVEPATCH_MVE_HOLD_DIR", str(holds))
    monkeypatch.setenv("LIVEPATCH_MVE_HOLD_AT", point)
    return kv_factory(
        "--livepatch-socket", str(work / "lp.sock"), "--allow-unsigned",
        "--dir", str(work / "data"), "--appendfsync", "always",
    )  # fmt: skip


def background_update(patch: Path, work: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livepatch.cli", "update", str(patch), "--socket",
         str(work / "lp.sock"), "--validate", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_hold(work: Path, point: str, proc: subprocess.Popen[str]) -> None:
    """Until the server reached `point` (its FIFO exists); fails if the update ended first."""
    fifo = work / "holds" / point.replace(":", "-")
    deadline = time.monotonic() + 90
    while not fifo.exists():
        if proc.poll() is not None:
            pytest.fail(f"the update ended before {point}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"{point} not reached in 90 s"
        time.sleep(0.005)


def follower_pid(work: Path) -> int:
    out = livepatch_cli("update-status", "--socket", str(work / "lp.sock"), "--json")
    pid = (json.loads(out.stdout).get("update") or {}).get("follower_pid")
    assert isinstance(pid, int), out.stdout
    return pid


def wait_gone(pid: int, timeout: float = 30) -> bool:
    """Whether `pid` exits within `timeout`; if not, it is killed (no test leaves an orphan behind)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        gone = bool(select.select([fd], [], [], timeout)[0])
        if not gone:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        return gone
    finally:
        os.close(fd)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out + err


def restart_has_every_acked_write(kv_factory: Any, work: Path, acked: list[str]) -> None:
    again = kv_factory("--dir", str(work / "data"))
    r = again.client()
    missing = [k for k in acked if r.get(k) != k.encode()]
    assert acked and not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    assert again.stop() == 0


def serves(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=5).ping())
    except redis.ConnectionError:
        return False


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", BEFORE_HANDOVER)
def test_follower_killed_before_the_hand_over_clients_see_nothing(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path, monkeypatch: Any, point: str
) -> None:
    server = start(kv_factory, work_dir, monkeypatch, point)
    held(server).execute_command("DEBUG", "POPULATE", "1000")
    with Traffic(server) as traffic:
        proc = background_update(patches["good"], work_dir, "--promote", "manual")
        wait_for_hold(work_dir, point, proc)
        follower = follower_pid(work_dir)
        acked = len(traffic.acked)
        os.kill(follower, signal.SIGKILL)
        code, out = finish(proc)
        assert traffic.wait_for_acked(acked + 200)  # still served after the follower died
    assert code == 1 and "killed by signal 9" in out, out
    assert not traffic.errors, traffic.errors[:5]
    assert traffic.max_latency_s < 5.0, traffic.max_latency_s
    assert children(server.process.pid) == []
    r = held(server)
    assert all(r.get(k) == k.encode() for k in traffic.acked[-100:])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", BEFORE_HANDOVER)
def test_leader_killed_the_follower_exits_and_a_restart_loses_no_acknowledged_write(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path, monkeypatch: Any, point: str
) -> None:
    server = start(kv_factory, work_dir, monkeypatch, point)
    held(server).execute_command("DEBUG", "POPULATE", "1000")
    with Traffic(server) as traffic:
        proc = background_update(patches["good"], work_dir, "--promote", "manual")
        wait_for_hold(work_dir, point, proc)
        follower = follower_pid(work_dir)
        assert traffic.wait_for_acked(len(traffic.acked) + 50)
        server.kill()
        assert wait_gone(follower), f"the follower {follower} outlived its leader ({point})"
        code, _ = finish(proc)
    assert code == 1
    restart_has_every_acked_write(kv_factory, work_dir, traffic.acked)


@pytest.mark.timeout(180)
def test_follower_killed_in_the_hand_over_the_leader_serves_on(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path, monkeypatch: Any
) -> None:
    server = start(kv_factory, work_dir, monkeypatch, "follower:handover")
    held(server).execute_command("DEBUG", "POPULATE", "1000")
    with Traffic(server, ping=True) as traffic:
        proc = background_update(patches["good"], work_dir, "--window", "1s", "--rules",
                                 str(_pang_rules(work_dir)), "--exercise-wait", "0")  # fmt: skip
        wait_for_hold(work_dir, "follower:handover", proc)
        follower = follower_pid(work_dir)
        os.kill(follower, signal.SIGKILL)  # it holds every socket, has not confirmed yet
        code, out = finish(proc)
        acked = len(traffic.acked)
        assert traffic.wait_for_acked(acked + 200)  # exactly one serves: the leader
    assert code == 1 and "did not take over" in out, out
    assert not traffic.errors, traffic.errors[:5]  # a pause, never an error
    assert traffic.replies.get(b"PANG", 0) == 0  # nothing was ever answered by the new version
    assert server.alive() and children(server.process.pid) == []
    assert serves(server.port)
    assert server.stop() == 0
    restart_has_every_acked_write(kv_factory, work_dir, traffic.acked)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", ["leader:handover", "leader:handed-over"])
def test_leader_killed_in_the_hand_over_none_serves_and_a_restart_recovers(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path, monkeypatch: Any, point: str
) -> None:
    server = start(kv_factory, work_dir, monkeypatch, point)
    held(server).execute_command("DEBUG", "POPULATE", "1000")
    with Traffic(server) as traffic:
        proc = background_update(patches["good"], work_dir, "--window", "1s", "--rules",
                                 str(_pang_rules(work_dir)), "--exercise-wait", "0")  # fmt: skip
        wait_for_hold(work_dir, point, proc)
        follower = follower_pid(work_dir)
        server.kill()
        # The follower dies with its leader (PR_SET_PDEATHSIG): one server at most, never two.
        assert wait_gone(follower), f"the follower {follower} outlived its leader ({point})"
        finish(proc)
    assert not serves(server.port)
    restart_has_every_acked_write(kv_factory, work_dir, traffic.acked)


def _pang_rules(work: Path) -> Path:
    from tests.mve.test_validated_update import PANG_RULES

    rules = work / "rules.py"
    rules.write_text(PANG_RULES)
    return rules
