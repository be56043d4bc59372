"""`livepatch switchover` with real processes and real redis-py clients writing through it (issue 15):
the primary hands its address to the caught-up standby and becomes its standby; every acknowledged
write is on the new primary, each counter equals the number of INCRs acknowledged (nothing lost and
nothing applied twice: a request the old primary did not execute is retried on the new one, one it
executed is answered before its connection closes), and no error reaches a client that retries as
docs/standby.md says. Then back again. Also: SIGTERM answers the replies that waited for the standby
once it holds their writes, and never answers one it does not hold."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from livepatch.replication import query
from tests.replication.nodes import Node, wait_serving
from tests.replication.workload import Writer, check, retrying_client, single_shot_client

pytestmark = pytest.mark.timeout(240)

WRITERS = 4
MORE_ACKS = 50  # acknowledged SETs each writer makes after a switchover before the next step


def _switchover(node: Node, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "livepatch.cli",
            "switchover",
            "--socket",
            node.status_socket,
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _wait_more_acks(writers: list[Writer], more: int) -> None:
    marks = [len(w.snapshot()[0]) for w in writers]
    done = threading.Event()

    def enough() -> bool:
        return all(len(w.snapshot()[0]) >= m + more for w, m in zip(writers, marks, strict=True))

    for _ in range(3000):  # bounded: 3000 x 20 ms
        if enough():
            return
        done.wait(0.02)
    raise AssertionError(f"the writers did not get {more} more acknowledgements in 60 s")


def _check_exact(port: int, writers: list[Writer]) -> list[str]:
    problems: list[str] = []
    for w in writers:
        problems += check(port, w)
    with redis.Redis(port=port) as c:
        for w in writers:
            ctr = int(c.get(f"{w.prefix}:ctr") or 0)
            if ctr != w.incrs:
                problems.append(f"{w.prefix}:ctr is {ctr}, {w.incrs} INCRs were acknowledged")
    return problems


def test_switchover_and_back_loses_nothing_and_no_client_sees_an_error(
    pair: tuple[int, Node, Node],
) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b, "--replication-listen", f"127.0.0.1:{a.repl_port}")
    a.wait_protected()
    writers = [Writer(port, name=f"sw{i}", retrying=True) for i in range(WRITERS)]
    for w in writers:
        w.start()
    try:
        _wait_more_acks(writers, MORE_ACKS)
        first = _switchover(a, "--json")
        assert first.returncode == 0, first.stderr
        outcome: dict[str, Any] = json.loads(first.stdout)
        assert outcome["ok"] and outcome["old_primary_now"] == "standby"
        assert a.status()["role"] == "standby"
        new = b.wait_protected()  # b serves, a follows it
        assert new["term"] == 2
        # a drained cleanly, so it holds b's state at the takeover: no full sync, epochs only
        assert new["full_syncs"] == 0 and a.status()["full_syncs"] == 0
        _wait_more_acks(writers, MORE_ACKS)
        back = _switchover(b)
        assert back.returncode == 0, back.stderr
        assert "switchover done" in back.stdout
        again = a.wait_protected()
        assert again["term"] == 3 and again["full_syncs"] == 0
        _wait_more_acks(writers, MORE_ACKS)
    finally:
        for w in writers:
            w.stop()
    assert [w.errors for w in writers] == [0] * WRITERS
    assert _check_exact(port, writers) == []
    assert b.status()["role"] == "standby"
    assert a.alive() and b.alive()  # the same two processes all along


def test_switchover_refused_with_a_reason(pair: tuple[int, Node, Node], tmp_path: Path) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b)  # no --replication-listen: it could not become the standby
    a.wait_protected()
    refused = _switchover(a)
    assert refused.returncode == 1
    assert "--replication-listen" in refused.stderr and "Traceback" not in refused.stderr
    wrong = _switchover(b)  # the standby's socket
    assert wrong.returncode == 1 and "not a primary" in wrong.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "livepatch.cli", "switchover", "--socket", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "--replication-socket" in missing.stderr
    unknown = query(a.status_socket, request="takeover please")
    assert unknown["ok"] is False and "does not do 'takeover please'" in unknown["error"]
    with redis.Redis(port=port) as c:  # nothing changed
        assert c.set("still", "served")
    assert a.status()["role"] == "primary"


def test_switchover_refused_when_the_standby_port_cannot_be_bound(
    pair: tuple[int, Node, Node],
) -> None:
    """The old primary binds its --replication-listen before it hands anything over: a port taken
    refuses the switchover with the reason and changes nothing (it used to hand the address over,
    then fail to listen and exit, leaving the new primary without a standby)."""
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b, "--replication-listen", f"127.0.0.1:{a.repl_port}")
    a.wait_protected()
    blocker = socket.create_server(("127.0.0.1", a.repl_port))
    try:
        refused = _switchover(a)
        assert refused.returncode == 1, refused.stdout
        assert "cannot listen on --replication-listen" in refused.stderr
        assert "nothing was changed" in refused.stderr
        with redis.Redis(port=port) as c:
            assert c.set("still", "served")
        assert a.wait_protected()["term"] == 1
    finally:
        blocker.close()
    done = _switchover(a)  # the port is free again: the switchover goes through
    assert done.returncode == 0, done.stderr
    assert b.wait_protected()["full_syncs"] == 0
    with retrying_client(port) as c:
        assert c.get("still") == b"served"


def _held_write(
    pair: tuple[int, Node, Node], standby_timeout_ms: str
) -> tuple[dict[str, Any], threading.Thread]:
    """A protected primary a whose standby b is stopped (SIGSTOP), and one SET whose reply a holds. The
    thread ends when the SET is answered ("reply") or its connection closes ("error")."""
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(
        port, b, "--on-standby-loss", "hold", "--standby-timeout-ms", standby_timeout_ms
    )
    a.wait_protected()
    b.signal(signal.SIGSTOP)
    box: dict[str, Any] = {}

    def write() -> None:
        try:
            with single_shot_client(port) as c:
                box["reply"] = c.set("k", "v")
        except redis.ConnectionError as exc:
            box["error"] = exc

    t = threading.Thread(target=write, daemon=True)
    t.start()
    a.wait_status(lambda s: s["held_replies"] >= 1, 30, "the write held")
    return box, t


def test_sigterm_answers_held_replies_once_the_standby_holds_them(
    pair: tuple[int, Node, Node],
) -> None:
    port, a, b = pair
    box, t = _held_write(pair, "60000")
    a.signal(signal.SIGTERM)  # it drains: waits for the standby before closing
    a.wait_log("replication: draining")  # executes nothing more, holds the reply, waits
    b.signal(signal.SIGCONT)
    t.join(60)
    assert not t.is_alive()
    assert box.get("reply") is True, box  # answered, not dropped
    wait_serving(port, 30)
    with retrying_client(port) as c:
        assert c.get("k") == b"v"


def test_sigterm_never_answers_a_write_the_standby_does_not_hold(
    pair: tuple[int, Node, Node],
) -> None:
    _, a, b = pair
    box, t = _held_write(pair, "300")
    a.signal(signal.SIGTERM)  # the standby stays stopped: the drain gives up after 300 ms
    assert a.process is not None and a.process.proc is not None
    a.process.proc.wait(timeout=60)
    t.join(60)
    assert "reply" not in box and "error" in box, box
    b.signal(signal.SIGCONT)
