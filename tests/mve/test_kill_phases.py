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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.kvserver.conftest import KVServer
from tests.mve.mve_helpers import Traffic, background_update, children, finish, held, pang_rules
from tests.support import livepatch_cli

MANUAL = ("--promote", "manual")  # the follower waits at its phase; nothing promotes it
BEFORE_HANDOVER = ("follower:fork", "follower:transform", "follower:catch-up", "follower:compare")


@dataclass
class Held:
    """A validated update stopped at a phase: the server, its traffic, the update, its follower."""

    server: KVServer
    traffic: Traffic
    proc: subprocess.Popen[str]
    follower: int


@contextmanager
def held_at(
    kv_factory: Any, patch: Path, work: Path, monkeypatch: Any, point: str, *options: str,
    ping: bool = False,
) -> Iterator[Held]:  # fmt: skip
    """A server with 1000 keys and traffic, a validated update of `patch` holding at `point` (the server
    blocks on a FIFO there: LIVEPATCH_MVE_HOLD_DIR/_AT); the traffic runs until the end of the block."""
    holds = work / "holds"
    holds.mkdir()
    monkeypatch.setenv("LIVEPATCH_MVE_HOLD_DIR", str(holds))
    monkeypatch.setenv("LIVEPATCH_MVE_HOLD_AT", point)
    server = kv_factory(
        "--livepatch-socket", str(work / "lp.sock"), "--allow-unsigned",
        "--dir", str(work / "data"), "--appendfsync", "always",
    )  # fmt: skip
    held(server).execute_command("DEBUG", "POPULATE", "1000")
    with (
        Traffic(server, ping=ping) as traffic,
        background_update(patch, str(work / "lp.sock"), *options) as proc,
    ):
        wait_for_hold(work, point, proc)
        yield Held(server, traffic, proc, follower_pid(work))


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
    with held_at(kv_factory, patches["good"], work_dir, monkeypatch, point, *MANUAL) as at:
        acked = len(at.traffic.acked)
        os.kill(at.follower, signal.SIGKILL)
        code, out = finish(at.proc)
        assert at.traffic.wait_for_acked(acked + 200)  # still served after the follower died
    assert code == 1 and "killed by signal 9" in out, out
    assert not at.traffic.errors, at.traffic.errors[:5]
    assert at.traffic.max_latency_s < 5.0, at.traffic.max_latency_s
    assert children(at.server.process.pid) == []
    r = held(at.server)
    assert all(r.get(k) == k.encode() for k in at.traffic.acked[-100:])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", BEFORE_HANDOVER)
def test_leader_killed_the_follower_exits_and_a_restart_loses_no_acknowledged_write(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path, monkeypatch: Any, point: str
) -> None:
    with held_at(kv_factory, patches["good"], work_dir, monkeypatch, point, *MANUAL) as at:
        assert at.traffic.wait_for_acked(len(at.traffic.acked) + 50)
        at.server.kill()
        assert wait_gone(at.follower), f"the follower {at.follower} outlived its leader ({point})"
        code, _ = finish(at.proc)
    assert code == 1
    restart_has_every_acked_write(kv_factory, work_dir, at.traffic.acked)


@pytest.mark.timeout(180)
def test_follower_killed_in_the_hand_over_the_leader_serves_on(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path, monkeypatch: Any
) -> None:
    options = promoting(work_dir)
    point = "follower:handover"
    with held_at(
        kv_factory, patches["good"], work_dir, monkeypatch, point, *options, ping=True
    ) as at:
        os.kill(at.follower, signal.SIGKILL)  # it holds every socket, has not confirmed yet
        code, out = finish(at.proc)
        acked = len(at.traffic.acked)
        assert at.traffic.wait_for_acked(acked + 200)  # exactly one serves: the leader
    assert code == 1 and "did not take over" in out, out
    assert not at.traffic.errors, at.traffic.errors[:5]  # a pause, never an error
    assert at.traffic.replies.get(b"PANG", 0) == 0  # nothing was ever answered by the new version
    assert at.server.alive() and children(at.server.process.pid) == []
    assert serves(at.server.port)
    assert at.server.stop() == 0
    restart_has_every_acked_write(kv_factory, work_dir, at.traffic.acked)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("point", ["leader:handover", "leader:handed-over"])
def test_leader_killed_in_the_hand_over_none_serves_and_a_restart_recovers(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path, monkeypatch: Any, point: str
) -> None:
    options = promoting(work_dir)
    with held_at(kv_factory, patches["good"], work_dir, monkeypatch, point, *options) as at:
        at.server.kill()
        # The follower dies with its leader (PR_SET_PDEATHSIG): one server at most, never two.
        assert wait_gone(at.follower), f"the follower {at.follower} outlived its leader ({point})"
        finish(at.proc)
    assert not serves(at.server.port)
    restart_has_every_acked_write(kv_factory, work_dir, at.traffic.acked)


def promoting(work: Path) -> tuple[str, ...]:
    """Options of an update that reaches the hand-over at once: the PING difference is declared."""
    return ("--window", "1s", "--rules", str(pang_rules(work)), "--exercise-wait", "0")
