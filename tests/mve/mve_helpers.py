"""What every validated-update test does: start a kvserver with a control socket, hold connections,
drive traffic that checks every reply, run `livepatch update --validate` (in the foreground or in the
background), watch its status, and make sure a background update never outlives its test."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.kvserver.conftest import KVServer
from tests.support import livepatch_cli

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


def pang_rules(work: Path) -> Path:
    """A rules file declaring the `good` patch's one difference (PING answers PANG)."""
    rules = work / "rules.py"
    rules.write_text(PANG_RULES)
    return rules


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
    """`livepatch update PATCH --validate ...` to its end."""
    return livepatch_cli(
        "update", str(patch), "--socket", str(work / "lp.sock"), "--validate", *extra, timeout=200
    )


@contextmanager
def background_update(patch: Path, sock: str, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """`livepatch update PATCH --validate ...` running in the background while the test acts (promotes,
    kills, stops); killed at the end of the block if the test did not see it end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "livepatch.cli", "update", str(patch), "--socket", sock,
         "--validate", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    """The background update's exit code and output (stdout then stderr), once it ends."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def wait_for_status(
    sock: str, proc: subprocess.Popen[str], until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The running update's status (`update-status`) once `until(status)`; fails at once, with the
    update's output, if the update ended first, and after 90 s."""
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the update ended before the test could act: {proc.communicate()}")
        done = livepatch_cli("update-status", "--socket", sock, "--json")
        status = (json.loads(done.stdout).get("update") or {}) if done.returncode == 0 else {}
        if status and until(status):
            return status
        assert time.monotonic() < deadline, f"no such status within 90 s: {status}"


def agent_status(sock: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`livepatch status --json` once the agent answers: after a promotion it restarts in the promoted
    process once the old one is gone. The last attempt's result (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    status = livepatch_cli("status", "--socket", sock, "--json")
    while status.returncode != 0 and time.monotonic() < deadline:
        status = livepatch_cli("status", "--socket", sock, "--json")
    return status


def children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]
