"""Pub/sub against redis-server 7.0: RESP2 and RESP3 (push) frames, the RESP2 subscribed context,
PUBSUB introspection, and subscriptions kept across a live patch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.kvserver.redis_diff import Conn, compare, wait_blocked

pytestmark = pytest.mark.timeout(60)


def test_resp2_messages_confirmations_and_the_subscribed_context(
    kv_shared: Any, redis_reference: Any
) -> None:
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        pub, sub = connect(), connect()
        sub.send("SUBSCRIBE", "news", "sport", "news")
        out = [sub.read(), sub.read(), sub.read()]
        sub.send("PSUBSCRIBE", "n*", "x?z")
        out += [sub.read(), sub.read()]
        out += [pub("PUBLISH", "news", "hello"), sub.read(), sub.read()]  # message, then pmessage
        out += [pub("PUBLISH", "nobody", "x"), pub("PUBLISH", "xyz", "p")]
        out += [sub.read(), sub.read()]  # pmessages: "n*" matches "nobody", "x?z" matches "xyz"
        out += [sub("GET", "k"), sub("PING"), sub("PING", "arg"), sub("HELLO", "3")]
        out += [sorted(pub("PUBSUB", "CHANNELS")), pub("PUBSUB", "CHANNELS", "s*")]
        out += [pub("PUBSUB", "NUMSUB", "news", "none"), pub("PUBSUB", "NUMPAT")]
        sub.send("UNSUBSCRIBE")
        frames = [sub.read(), sub.read()]  # in the server's own order (Redis: its hash order)
        out += [sorted(f[1] for f in frames), sorted(f[2] for f in frames)]
        sub.send("PUNSUBSCRIBE", "x?z", "never")
        out += [sub.read(), sub.read()]
        out += [sub("PUNSUBSCRIBE")]  # the last pattern: out of the subscribed context
        out += [sub("GET", "k"), sub("PING"), pub("PUBSUB", "NUMPAT"), pub("PUBLISH", "news", "x")]
        sub.send("UNSUBSCRIBE")
        out += [sub.read()]
        return out

    out = compare(kv_shared, redis_reference, scenario)
    assert out[0] == [b"subscribe", b"news", 1]


def test_resp3_push_frames_and_commands_while_subscribed(
    kv_shared: Any, redis_reference: Any
) -> None:
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        pub, sub = connect(), connect(3)
        sub.send("SUBSCRIBE", "c")
        out = [sub.read_push()]
        out += [sub("SET", "k", "v"), sub("GET", "k")]  # RESP3: any command is allowed
        out += [pub("PUBLISH", "c", "m1"), sub.read_push()]
        sub.send("PUBLISH", "c", "self")  # the push comes before the PUBLISH reply
        out += [sub.read_push(), sub.read_push()]
        sub.send("RESET")
        out += [sub.read_push(), pub("PUBSUB", "NUMSUB", "c")]
        return out

    compare(kv_shared, redis_reference, scenario)


def test_disconnect_drops_subscriptions(kv_shared: Any, redis_reference: Any) -> None:
    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        pub, sub = connect(), connect()
        sub.send("SUBSCRIBE", "gone")
        out = [sub.read(), pub("PUBSUB", "NUMSUB", "gone")]
        sub.close()
        for _ in range(1000):  # the server notices the close on its next iteration
            if pub("PUBLISH", "gone", "x") == 0:
                break
        out += [pub("PUBSUB", "NUMSUB", "gone")]
        return out

    assert compare(kv_shared, redis_reference, scenario)[-1] == [b"gone", 0]


@pytest.mark.timeout(180)
def test_subscriptions_survive_a_live_patch(kv_factory: Any) -> None:
    import shutil
    import tempfile
    from pathlib import Path

    from tests.kvserver.test_livepatch import build_patch
    from tests.support import livepatch_cli

    work = Path(tempfile.mkdtemp(prefix="lp-ps-"))  # short: a Unix socket path has ~100 bytes
    try:
        sock = work / "agent.sock"
        server = kv_factory("--livepatch-socket", str(sock), "--allow-unsigned")
        patch = build_patch(work)
        pub, sub2, sub3 = (Conn(server.host, server.port, p) for p in (2, 2, 3))
        sub2.send("PSUBSCRIBE", "ch*")
        assert sub2.read() == [b"psubscribe", b"ch*", 1]
        sub3.send("SUBSCRIBE", "ch1")
        assert sub3.read_push() == [b"subscribe", b"ch1", 1]
        done = livepatch_cli("apply", str(patch), "--socket", str(sock), "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        assert pub("ECHO", "x") == b"v2:x"
        assert pub("PUBLISH", "ch1", "after") == 2
        assert sub2.read() == [b"pmessage", b"ch*", b"ch1", b"after"]
        assert sub3.read_push() == [b"message", b"ch1", b"after"]
        assert sub2("PING") == [b"pong", b""] and sub3("ECHO", "y") == b"v2:y"
        for conn in (pub, sub2, sub3):
            conn.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_client_list_flags_and_kill_by_type(kv_shared: Any, redis_reference: Any) -> None:
    def fields(conn: Conn) -> dict[str, str]:
        info = conn("CLIENT", "INFO")
        return dict(kv.split("=", 1) for kv in info.decode().split())

    def scenario(connect: Callable[..., Conn]) -> list[Any]:
        ctl, sub, parked = connect(), connect(), connect()
        sub_id, parked_id = sub("CLIENT", "ID"), parked("CLIENT", "ID")
        sub.send("SUBSCRIBE", "a", "b")
        sub.send("PSUBSCRIBE", "p*")
        out = [sub.read(), sub.read(), sub.read()]
        parked.send("BLPOP", "nothing", "0")
        wait_blocked(ctl, 1)
        lines = {
            int(f["id"]): f
            for f in (
                dict(kv.split("=", 1) for kv in line.split())
                for line in ctl("CLIENT", "LIST").decode().splitlines()
            )
        }
        for cid in (sub_id, parked_id):
            out.append({k: lines[cid][k] for k in ("flags", "sub", "psub", "cmd")})
        out += [fields(ctl)["flags"], ctl("CLIENT", "KILL", "TYPE", "pubsub")]
        out += [ctl("PUBSUB", "NUMSUB", "a")]
        out += [ctl("CLIENT", "KILL", "TYPE", "normal")]  # the parked client (the caller is spared)
        wait_blocked(ctl, 0)
        return out

    out = compare(kv_shared, redis_reference, scenario)
    assert out[3]["flags"] == "P" and out[4]["flags"] == "b"
