"""Leader election through a real etcd (Debian etcd-server; skipped where it is not installed):
two candidates, the lease decides; killing the leader elects the other; a leader cut off from etcd
stops acknowledging writes and gives the address up (issue 15)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepatch.replication.etcd import EtcdLease
from lpbench.servers import ManagedProcess
from tests.conftest import free_port
from tests.replication.faultproxy import FaultProxy
from tests.replication.nodes import READY, Node, wait_serving
from tests.replication.workload import Writer, check

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(
        shutil.which("etcd") is None, reason="etcd is not installed (Debian: etcd-server)"
    ),
]

TTL = "2"
READY_ETCD = re.compile(r"ready to serve client requests")


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[str]:
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    proc = ManagedProcess(
        [
            "etcd",
            "--name",
            "t",
            "--data-dir",
            str(tmp_path / "etcd"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"t=http://127.0.0.1:{peer}",
        ],
        READY_ETCD,
        tmp_path / "etcd.log",
    )
    proc.start()
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[int, Node, Node]]:
    port = free_port()
    a, b = Node("a", free_port(), tmp_path), Node("b", free_port(), tmp_path)
    try:
        yield port, a, b
    finally:
        a.kill()
        b.kill()


def _leader(url: str) -> str | None:
    return EtcdLease(url, "/livepatch/kv/leader", "observer").holder()


def test_two_candidates_the_lease_decides(etcd: str, tmp_path: Path) -> None:
    port = free_port()
    first = ManagedProcess(
        [
            sys.executable,
            "-m",
            "kvserver",
            "--no-livepatch",
            "--port",
            str(port),
            "--replicate-to",
            f"127.0.0.1:{free_port()}",
            "--etcd",
            etcd,
            "--etcd-ttl-s",
            TTL,
        ],
        READY,
        tmp_path / "first.log",
    )
    first.start()
    try:
        assert f":{port}" in (_leader(etcd) or "")
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "kvserver",
                "--no-livepatch",
                "--port",
                str(free_port()),
                "--replicate-to",
                f"127.0.0.1:{free_port()}",
                "--etcd",
                etcd,
                "--etcd-ttl-s",
                TTL,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "another server leads" in second.stderr and "--standby" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.stop()
    # A clean stop gives the key up at once.
    assert _leader(etcd) is None


def test_killing_the_leader_elects_the_standby(etcd: str, pair: tuple[int, Node, Node]) -> None:
    port, a, b = pair
    args = ("--etcd", etcd, "--etcd-ttl-s", TTL)
    b.start_standby(port, a, *args)
    a.start_primary(port, b, *args)
    a.wait_protected()
    writer = Writer(port)
    writer.start()
    time.sleep(0.5)
    a.kill()
    t = time.monotonic()
    gap = wait_serving(port, timeout_s=30) - t
    writer.stop()
    assert check(port, writer) == []
    assert f":{b.pid}:" in (_leader(etcd) or "")
    assert gap < float(TTL) + 5  # the old lease must expire first: the gap is about the TTL


def test_a_leader_cut_off_from_etcd_stops_acknowledging_and_steps_down(
    etcd: str, pair: tuple[int, Node, Node]
) -> None:
    port, a, b = pair
    proxy = FaultProxy(int(etcd.rsplit(":", 1)[1]))
    try:
        b.start_standby(port, a, "--etcd", etcd, "--etcd-ttl-s", TTL)
        a.start_primary(port, b, "--etcd", f"http://127.0.0.1:{proxy.port}", "--etcd-ttl-s", TTL)
        a.wait_protected()
        writer = Writer(port)
        writer.start()
        time.sleep(0.5)
        proxy.blackhole()
        cut = time.monotonic()
        assert a.process is not None and a.process.proc is not None
        a.process.proc.wait(timeout=30)  # it steps down: exits, freeing the address
        stepped_down = time.monotonic() - cut
        # Nothing was acknowledged after it gave up: every acknowledged write is on the standby.
        wait_serving(port, timeout_s=30)
        writer.stop()
        assert check(port, writer) == []
        assert f":{b.pid}:" in (_leader(etcd) or "")
        assert stepped_down < 0.6 * float(TTL) + 3.0
    finally:
        proxy.close()


def test_switchover_hands_the_etcd_key_to_the_new_primary(
    etcd: str, pair: tuple[int, Node, Node]
) -> None:
    """`livepatch switchover` with --etcd: the old primary gives the key up, the new one takes it
    (and renews it), nothing acknowledged is lost; then back again."""
    port, a, b = pair
    args = ("--etcd", etcd, "--etcd-ttl-s", TTL)
    b.start_standby(port, a, *args)
    a.start_primary(port, b, "--replication-listen", f"127.0.0.1:{a.repl_port}", *args)
    a.wait_protected()
    assert f":{a.pid}:" in (_leader(etcd) or "")
    writer = Writer(port, retrying=True)
    writer.start()
    try:
        for old, new in ((a, b), (b, a)):
            time.sleep(0.3)
            done = subprocess.run(
                [sys.executable, "-m", "livepatch.cli", "switchover", "--socket",
                 old.status_socket, "--timeout-s", "60"],
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            new.wait_protected()
            assert f":{new.pid}:" in (_leader(etcd) or "")
            # The new leader keeps its lease alive past a TTL (its keeper renews it).
            time.sleep(float(TTL) * 1.5)
            assert f":{new.pid}:" in (_leader(etcd) or "")
            assert new.status()["role"] == "primary" and old.status()["role"] == "standby"
    finally:
        writer.stop()
    assert writer.errors == 0
    assert check(port, writer) == []
