"""The command line of hot standby: option mistakes get a clear error (no traceback), and
`livepatch replication status` reports a live primary and standby, in text and JSON."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.replication.nodes import Node

pytestmark = pytest.mark.timeout(120)


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livepatch.cli", "serve", "kv", "--no-livepatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--standby"], "--standby needs --replication-listen"),
        (["--takeover", "127.0.0.1:1"], "is for a standby: add --standby"),
        (["--replication-listen", "127.0.0.1:1"], "may become one by a switchover"),
        (
            ["--replicate-to", "127.0.0.1:1", "--replication-listen", "127.0.0.1:2", "--dir", "x"],
            "does not take --dir",
        ),
        (["--replicate-to", "nowhere"], "expected HOST:PORT"),
        (["--replicate-to", "127.0.0.1:99999"], "expected HOST:PORT"),
        (["--standby", "--replication-listen", "127.0.0.1:0", "--dir", "x"], "does not take --dir"),
        (["--replication-socket", "/tmp/x.sock"], "need --replicate-to or --standby"),
        (["--protection", "sometimes"], "'sometimes' is not one of"),
        (["--etcd", "http://127.0.0.1:1"], "need --replicate-to or --standby"),
        (["--replicate-to", "127.0.0.1:1", "--etcd", "127.0.0.1:2379"], "expected an http:// URL"),
    ],
)
def test_option_mistakes_are_explained(args: list[str], message: str) -> None:
    result = _serve(*args)
    assert result.returncode == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_status_of_a_missing_socket_says_what_to_do(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "livepatch.cli",
            "replication",
            "status",
            "--socket",
            str(tmp_path / "none.sock"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "start the server with --replication-socket" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[int, Node, Node]]:
    port = free_port()
    a = Node("a", free_port(), tmp_path)
    b = Node("b", free_port(), tmp_path)
    try:
        yield port, a, b
    finally:
        a.kill()
        b.kill()


def _status(node: Node, *flags: str) -> str:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "livepatch.cli",
            "replication",
            "status",
            "--socket",
            node.status_socket,
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def test_status_reports_epochs_lag_bytes_and_held_replies(pair: tuple[int, Node, Node]) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b, "--epoch-ms", "20")
    a.wait_protected()
    with redis.Redis(port=port) as c:
        for i in range(200):
            c.set(f"key:{i}", "x" * 1000)  # over COMPRESS_MIN: each epoch is compressed
    primary = json.loads(_status(a, "--json"))
    assert primary["ok"] and primary["role"] == "primary" and primary["protection"] == "commit"
    assert primary["epoch"] > 1 and primary["acked_epoch"] >= 1
    assert primary["held_replies"] == 0  # every write above was acknowledged, so released
    assert primary["bytes_sent"] > 200 * 1000 / 100  # compressed, but shipped
    assert primary["epoch_bytes_raw"] > 1.5 * primary["epoch_bytes_sent"]  # zstd on 'xxx...' values
    standby = json.loads(_status(b, "--json"))
    assert standby["role"] == "standby" and standby["state"] == "streaming"
    assert standby["epoch"] >= primary["acked_epoch"]
    text = _status(a)
    assert "role: primary" in text and "held replies: 0" in text and "compression ratio" in text


def test_group_commit_ms_spaces_the_epochs_a_waiting_write_closes(
    pair: tuple[int, Node, Node],
) -> None:
    """--group-commit-ms G: a write's reply waits for an epoch captured at least G ms after the
    previous one, so N writes in a row (each waiting for its reply) take at least (N - 1) x G and
    close at most one epoch each (with --epoch-ms long, every epoch here is a group commit)."""
    port, a, b = pair
    gap_ms, writes = 40, 15
    b.start_standby(port, a)
    a.start_primary(port, b, "--epoch-ms", "10000", "--group-commit-ms", str(gap_ms))
    a.wait_protected()
    assert a.status()["group_commit_ms"] == gap_ms
    with redis.Redis(port=port) as c:
        c.set("warm", "1")
        before = a.status()["epochs_captured"]
        started = time.monotonic()
        for i in range(writes):
            assert c.incr("n") == i + 1
        elapsed = time.monotonic() - started
    epochs = a.status()["epochs_captured"] - before
    assert elapsed >= (writes - 1) * gap_ms / 1000
    assert 1 <= epochs <= writes + 1  # one per write at most (the +1: a heartbeat-time epoch race)
