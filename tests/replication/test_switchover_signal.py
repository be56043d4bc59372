"""The SWITCHOVER frame (issue 15, docs/standby.md): a planned hand-over's new primary holds write
replies until its old primary has joined as its standby and holds them, while a failover's (kill -9)
or a SIGTERM's new primary does not wait for a standby nobody is starting; a standby of protocol
version 1 gets a clear refusal; a standby that dropped the link just before the request (a false
suspicion on a busy machine) gets the switchover refused with nothing changed, and a retry works.
Real kvserver processes, redis-py clients; the link runs through a TCP proxy where it must be cut."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from livepatch.replication import query
from tests.replication.faultproxy import FaultProxy
from tests.replication.nodes import Node, wait_serving
from tests.replication.old_standby import OldStandby
from tests.replication.workload import retrying_client, single_shot_client

pytestmark = pytest.mark.timeout(240)


def _write_in_thread(port: int) -> tuple[dict[str, Any], threading.Event]:
    box: dict[str, Any] = {}
    done = threading.Event()

    def write() -> None:
        try:
            with single_shot_client(port) as c:
                box["reply"] = c.set("after", "switchover")
        except Exception as exc:  # reported through box
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=write, daemon=True).start()
    return box, done


def test_after_a_switchover_no_write_is_acknowledged_before_a_standby_holds_it(
    pair: tuple[int, Node, Node],
) -> None:
    """Under the default --on-standby-loss degrade: the link from b (the new primary) to a (its new
    standby) runs through a proxy cut during the switchover, so a cannot join; a write to b waits,
    held, and is answered once the proxy heals and a acknowledges it (no full sync). On main it was
    answered at once while no standby held it."""
    port, a, b = pair
    proxy = FaultProxy(a.repl_port)  # b replicates to a through it once b has taken over
    try:
        b.start_standby(port, a, "--standby-timeout-ms", "60000", replicate_to=proxy.port)
        a.start_primary(port, b, "--replication-listen", f"127.0.0.1:{a.repl_port}")
        a.wait_protected()
        proxy.blackhole()
        answer = query(a.status_socket, timeout=15.0, request="switchover")
        assert answer["ok"], answer
        wait_serving(port, 60)  # b serves (PING waits for nothing)
        box, done = _write_in_thread(port)
        b.wait_status(lambda s: s["held_replies"] >= 1, 30, "the write held")
        assert not done.is_set() and "reply" not in box, box  # held, not acknowledged unprotected
        proxy.heal()  # a joins as b's standby (resumed), acknowledges, the reply goes
        assert done.wait(60) and box.get("reply") is True, box
        status = b.wait_protected()
        assert status["full_syncs"] == 0 and status["degradations"] == 0, status
    finally:
        proxy.close()


def test_the_hold_after_a_switchover_is_bounded_by_the_standby_timeout(
    pair: tuple[int, Node, Node],
) -> None:
    """The old primary never joins (the proxy stays cut): under degrade the held write is answered
    after --standby-timeout-ms (here 500 ms) with the loud degradation, like any held reply."""
    port, a, b = pair
    proxy = FaultProxy(a.repl_port)
    try:
        b.start_standby(port, a, "--standby-timeout-ms", "500", replicate_to=proxy.port)
        a.start_primary(port, b, "--replication-listen", f"127.0.0.1:{a.repl_port}")
        a.wait_protected()
        proxy.blackhole()
        answer = query(a.status_socket, timeout=15.0, request="switchover")
        assert answer["ok"], answer
        wait_serving(port, 60)
        box, done = _write_in_thread(port)
        assert done.wait(60) and box.get("reply") is True, box
        status = b.wait_status(lambda s: s["degradations"] >= 1, 30, "b degraded")
        assert status["degradations"] == 1 and not status["protected"], status
        b.wait_log("REPLICATION UNPROTECTED")
    finally:
        proxy.close()


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
def test_a_failovers_new_primary_does_not_hold_writes_for_a_standby(
    pair: tuple[int, Node, Node], how: str
) -> None:
    """After a kill -9 (or a SIGTERM, which drains but does not make the old primary a standby) no
    standby is about to join the new primary: under degrade its writes are answered at once (a
    switchover's 60 s --standby-timeout-ms hold would stall them; 9a78c0b did), unprotected as
    documented, without a degradation warning."""
    port, a, b = pair
    b.start_standby(port, a, "--standby-timeout-ms", "60000")
    a.start_primary(port, b)
    a.wait_protected()
    if how == "kill -9":
        a.kill()
    else:
        a.signal(signal.SIGTERM)
    wait_serving(port, 60)
    started = time.monotonic()
    with single_shot_client(port, timeout_s=50.0) as c:
        assert c.set("after", how) is True
    took = time.monotonic() - started
    assert took < 20.0, f"the write waited {took:.1f} s: held for a standby nobody starts"
    status = b.status()
    assert status["role"] == "primary" and not status["protected"], status
    assert status["degradations"] == 0 and status["held_replies"] == 0, status


def test_a_switchover_to_a_version_1_standby_is_refused_clearly(
    pair: tuple[int, Node, Node],
) -> None:
    """A standby that predates the SWITCHOVER frame (its WELCOME says no version) would drop the link
    on it and take over as after a failover: the switchover is refused with that reason, nothing
    changed, and the primary keeps serving and replicating to it."""
    port, a, _ = pair
    old = OldStandby()
    try:
        a.start_primary(
            port, a, "--replication-listen", f"127.0.0.1:{a.repl_port}", replicate_to=old.port
        )
        a.wait_protected()
        answer = query(a.status_socket, timeout=15.0, request="switchover")
        assert not answer["ok"], answer
        assert "protocol version 1" in answer["error"] and "nothing was changed" in answer["error"]
        with retrying_client(port) as c:
            assert c.set("still", "served") is True  # acknowledged: the old standby holds it
        status = a.wait_protected()
        assert status["full_syncs"] == 1, status
        assert old.errors == [], old.errors  # it was never sent a frame it does not know
    finally:
        old.close()


def test_a_switchover_after_a_false_suspicion_is_refused_then_succeeds(
    pair: tuple[int, Node, Node],
) -> None:
    """The standby declares the primary silent (300 ms) and drops the link, and the primary has not
    seen it yet (the proxy keeps the close from it, as a busy loop that has not read the EOF): the
    switchover is refused, nothing changed (a still serves, b is still its standby); once the link
    heals and b is synchronised again, the same request hands over."""
    port, a, b = pair
    proxy = FaultProxy(b.repl_port)  # a replicates to b through it
    try:
        b.start_standby(port, a)
        a.start_primary(
            port,
            b,
            "--replication-listen",
            f"127.0.0.1:{a.repl_port}",
            "--standby-timeout-ms",
            "1500",
            replicate_to=proxy.port,
        )
        a.wait_protected()
        proxy.blackhole(hide_closes=True)
        b.wait_status(lambda s: s["state"] == "primary-lost", 30, "b suspects a")
        assert a.status()["state"] == "streaming"  # a has not noticed: the race of session 8
        answer = query(a.status_socket, timeout=15.0, request="switchover")
        assert not answer["ok"], answer
        assert "nothing was changed" in answer["error"], answer
        with single_shot_client(port, timeout_s=30.0) as c:
            assert c.ping()  # a still serves (b could not take the address)
        assert b.status()["role"] == "standby"
        proxy.heal()  # a sees the close, reconnects, b is synchronised again
        a.wait_status(
            lambda s: s["state"] == "streaming" and s["protected"] and s["full_syncs"] >= 2,
            60,
            "a resynchronised b",
        )
        answer = query(a.status_socket, timeout=15.0, request="switchover")
        assert answer["ok"], answer
        wait_serving(port, 60)
        assert b.wait_status(lambda s: s["role"] == "primary", 30)["role"] == "primary"
    finally:
        proxy.close()
