"""Follow-back: a validated update promoted with --follow-back leaves the old version standing by; kill -9
of the new version makes the old one take over the listening socket, and the clients that reconnect
find every acknowledged write (appendfsync always); `livepatch retire` ends the standing by.

The `good` patch makes PING answer PANG: the reply tells which version serves.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.mve.mve_helpers import agent_status, held, pang_rules, raw, start_server, update
from tests.support import livepatch_cli, wait_for


class RetryingWriter:
    """SETs fresh keys, reconnecting after any connection error; records what was acknowledged."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RetryingWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        i = 0
        r: redis.Redis | None = None
        while not self.stop.is_set():
            try:
                if r is None:
                    r = redis.Redis(host=self.host, port=self.port, socket_timeout=10)
                key = f"w:{i}"
                r.set(key, key)
                self.acked.append(key)
                i += 1
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                if r is not None:
                    r.close()
                r = None
                time.sleep(0.01)  # a retry's pace (not a wait for an event)


def _promote_with_follow_back(
    kv_factory: Any, work: Path, patch: Path
) -> tuple[Any, RetryingWriter, int]:
    """A persistent server (appendfsync always) under a retrying writer, updated to `patch` with
    --follow-back: the server, the writer (running) and the new version's pid."""
    server = start_server(kv_factory, work, "--dir", str(work / "data"), "--appendfsync", "always")
    held(server).mset({f"p:{i}": str(i) for i in range(1000)})
    writer = RetryingWriter(server.host, server.port).__enter__()
    wait_for(lambda: len(writer.acked) > 50, 60, "writes before the update")
    done = update(
        work, patch, "--rules", str(pang_rules(work)),
        "--window", "1s", "--exercise-wait", "0", "--follow-back",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stands by until `livepatch retire`" in done.stdout
    assert agent_status(str(work / "lp.sock")).returncode == 0  # the new agent is up
    status = json.loads(
        livepatch_cli("update-status", "--socket", str(work / "lp.sock"), "--json").stdout
    )
    fb = status["follow_back"]
    assert fb["state"] == "standing by" and fb["old_version_pid"] == server.pid(), fb
    return server, writer, fb["server_pid"]


@pytest.mark.timeout(240)
def test_kill_9_of_the_new_version_falls_back_to_the_old_with_every_acknowledged_write(
    kv_factory: Any, work_dir: Path, patches: dict[str, Path]
) -> None:
    server, writer, new_pid = _promote_with_follow_back(kv_factory, work_dir, patches["good"])
    try:
        assert _ping(server) == b"PANG"  # the new version serves
        before = len(writer.acked)
        wait_for(lambda: len(writer.acked) > before + 50, 60, "writes to the new version")
        os.kill(new_pid, signal.SIGKILL)
        # The old version (same pid as the server started by the test) takes over the listening
        # socket: a fresh connection reaches it, and it answers as the old version does.
        wait_for(lambda: _ping(server) == b"PONG", 120, "the old version serving")
        assert server.alive()
        after = len(writer.acked)
        wait_for(lambda: len(writer.acked) > after + 50, 60, "writes to the old version")
    finally:
        writer.__exit__()
    r = redis.Redis(host=server.host, port=server.port, socket_timeout=30)
    values = r.mget(writer.acked)
    lost = [k for k, v in zip(writer.acked, values, strict=True) if v != k.encode()]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    assert r.mget([f"p:{i}" for i in range(1000)]) == [str(i).encode() for i in range(1000)]
    assert "the old version takes over (follow-back)" in server.log()


@pytest.mark.timeout(240)
def test_retire_ends_the_follow_back(
    kv_factory: Any, work_dir: Path, patches: dict[str, Path]
) -> None:
    server, writer, new_pid = _promote_with_follow_back(kv_factory, work_dir, patches["good"])
    writer.__exit__()
    sock = str(work_dir / "lp.sock")
    done = livepatch_cli("retire", "--socket", sock)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(livepatch_cli("update-status", "--socket", sock, "--json").stdout)
    assert status["follow_back"]["state"] == "retired"
    again = livepatch_cli("retire", "--socket", sock, "--json")  # idempotent
    assert again.returncode == 0 and json.loads(again.stdout)["follow_back"]["state"] == "retired"
    # Retired: a crash of the new version is the end of the server (the waiter exits with it).
    os.kill(new_pid, signal.SIGKILL)
    assert server.wait_exit(timeout=60) == 128 + signal.SIGKILL
    assert "takes over (follow-back)" not in server.log()


@pytest.mark.timeout(60)
def test_retire_without_follow_back_says_why(kv_factory: Any, work_dir: Path) -> None:
    start_server(kv_factory, work_dir)
    done = livepatch_cli("retire", "--socket", str(work_dir / "lp.sock"))
    assert done.returncode == 1 and "no old version is standing by" in done.stderr


def _ping(server: Any) -> bytes | None:
    """PING's reply on a fresh connection (PONG: the old version, PANG: the new), None if refused."""
    try:
        with redis.Redis(
            host=server.host, port=server.port, socket_timeout=5, single_connection_client=True
        ) as r:
            return raw(r, "PING")  # type: ignore[no-any-return]
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return None
