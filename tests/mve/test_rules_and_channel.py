"""The pieces of a validated update that need no server: rules files, the log channel, --window."""

from __future__ import annotations

import socket
import time

import click
import pytest

from livepatch.cli.update import parse_window
from livepatch.mve import channel
from livepatch.mve.rules import RulesError, load_rules_source, ruleset


def test_builtin_rules_accept_what_differs_by_nature_and_nothing_else() -> None:
    rules = ruleset(None)
    assert rules.explain([b"info", b"server"], b"$3\r\nabc\r\n", b"$3\r\nxyz\r\n")
    assert rules.explain([b"CLIENT", b"ID"], b":1\r\n", b":2\r\n")
    assert rules.explain([b"CLIENT", b"KILL", b"ID", b"3"], b"+OK\r\n", b"-ERR\r\n") is None
    assert rules.explain([b"GET", b"k"], b"$1\r\nv\r\n", b"$2\r\nv!\r\n") is None


def test_a_rules_file_adds_rules_in_order_and_a_raising_rule_accepts_nothing() -> None:
    source = (
        "def rule_boom(request, old_reply, new_reply):\n"
        "    raise ValueError('bug in the rule')\n"
        "def rule_get_bang(request, old_reply, new_reply):\n"
        "    return request[0] == b'GET' and new_reply.endswith(b'!\\r\\n')\n"
        "def helper():\n"
        "    return True\n"
    )
    rules = ruleset(source, "r.py")
    assert rules.names == ["rule_differs_by_nature", "rule_boom", "rule_get_bang"]
    assert rules.explain([b"GET", b"k"], b"$1\r\nv\r\n", b"$2\r\nv!\r\n") == "rule_get_bang"
    assert rules.explain([b"SET", b"k", b"v"], b"+OK\r\n", b"-ERR\r\n") is None


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def rule_x(:\n", "cannot load the rules file r.py: SyntaxError"),
        ("x = 1\n", "defines no rule"),
        ("def rule_x(request):\n    return True\n", "must take (request, old_reply, new_reply)"),
        ("raise SystemExit(3)\n", "cannot load the rules file"),
    ],
)
def test_a_bad_rules_file_is_refused_saying_what_to_fix(source: str, message: str) -> None:
    with pytest.raises(RulesError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_rules_source(source, "r.py")


def test_window_is_requests_or_seconds() -> None:
    assert parse_window("1000") == (1000, None)
    assert parse_window("5s") == (None, 5.0)
    assert parse_window("0.5 seconds") == (None, 0.5)
    for bad in ("abc", "0", "1.5", "-3", "5m"):
        with pytest.raises(click.BadParameter):
            parse_window(bad)


def test_frames_survive_arbitrary_splits() -> None:
    data = channel.encode(["a", 1]) + channel.encode({"b": b"\x00" * 300})
    for cut in range(len(data)):
        reader = channel.FrameReader()
        got = reader.feed(data[:cut]) + reader.feed(data[cut:])
        assert got == [["a", 1], {"b": b"\x00" * 300}]


def test_the_log_writer_never_blocks_and_overflows_past_its_bound() -> None:
    leader, follower = socket.socketpair()
    try:
        writer = channel.LogWriter(leader, max_backlog=1 << 20)
        t0 = time.monotonic()
        while not writer.overflowed:  # nobody reads the follower's end
            writer.append(("x", 1, 0, [[b"SET", b"k", b"v" * 1000]], [b"+OK\r\n"]))
            writer.flush()
            assert time.monotonic() - t0 < 10
        assert writer.backlog_bytes == 0  # dropped: the session discards this follower
        writer.append(("x",))
        writer.flush()  # and stays a no-op
        assert writer.backlog_bytes == 0
    finally:
        leader.close()
        follower.close()


def test_log_records_arrive_in_order() -> None:
    leader, follower = socket.socketpair()
    try:
        writer = channel.LogWriter(leader, max_backlog=1 << 24)
        for i in range(1000):
            writer.append(("x", i))
            if i % 10 == 9:
                writer.flush()
        assert writer.flush_blocking(5.0)
        got = []
        follower.settimeout(5)
        while len(got) < 1000:
            got.extend(channel.read_frame(follower))
        assert [r[1] for r in got] == list(range(1000))
    finally:
        leader.close()
        follower.close()


def test_rewrites_apply_in_order_and_a_broken_one_keeps_the_request() -> None:
    source = (
        "def rewrite_boom(request):\n"
        "    raise ValueError('bug in the rewrite')\n"
        "def rewrite_not_a_request(request):\n"
        "    return 'GET'\n"
        "def rewrite_swap(request):\n"
        "    if request[0] == b'GETRANGE':\n"
        "        return [request[0], request[1], request[3], request[2]]\n"
        "def rewrite_upper(request):\n"
        "    return [request[0].upper(), *request[1:]]\n"
        "def rule_any(request, old_reply, new_reply):\n"
        "    return False\n"
    )
    rules = ruleset(source, "r.py")
    assert rules.names == [
        "rewrite_boom",
        "rewrite_not_a_request",
        "rewrite_swap",
        "rewrite_upper",
        "rule_differs_by_nature",
        "rule_any",
    ]
    assert rules.rewrite([b"GETRANGE", b"k", b"1", b"3"]) == [b"GETRANGE", b"k", b"3", b"1"]
    assert rules.rewrite([b"get", b"k"]) == [b"GET", b"k"]
    assert ruleset(None).rewrite([b"get", b"k"]) == [b"get", b"k"]


def test_a_rewrite_with_the_wrong_signature_is_refused_with_what_to_write() -> None:
    with pytest.raises(RulesError, match=r"rewrite_x must take \(request\)"):
        load_rules_source("def rewrite_x(request, old_reply):\n    return None\n", "r.py")
    only_rewrites = ruleset("def rewrite_y(request):\n    return None\n", "r.py")
    assert only_rewrites.names == ["rewrite_y", "rule_differs_by_nature"]
