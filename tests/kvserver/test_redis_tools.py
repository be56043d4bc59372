"""The real Redis tools against kvserver: redis-cli and redis-benchmark."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import require_tool


def cli(server, *args: str, stdin: bytes | None = None) -> str:
    tool = require_tool("redis-cli")
    done = subprocess.run(
        [tool, "-h", server.host, "-p", str(server.port), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return done.stdout.decode()


def test_redis_cli_commands_and_pipe(kv_server):
    assert cli(kv_server, "PING").strip() == "PONG"
    assert cli(kv_server, "SET", "greeting", "hello world").strip() == "OK"
    assert cli(kv_server, "GET", "greeting").strip() == "hello world"
    assert cli(kv_server, "--no-raw", "INCR", "n").strip() == "(integer) 1"
    assert "ERR unknown command 'NOSUCH'" in cli(kv_server, "NOSUCH")
    # Commands read from stdin (each line is one command).
    out = cli(kv_server, stdin=b"SET a 1\nINCR a\nGET a\n")
    assert out.split() == ["OK", "2", "2"]
    # --pipe mass insertion speaks raw RESP and counts the replies.
    payload = b"".join(
        b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(k), k)
        for k in (b"p%d" % i for i in range(1000))
    )
    out = cli(kv_server, "--pipe", stdin=payload)
    assert "errors: 0, replies: 1000" in out
    assert cli(kv_server, "DBSIZE").strip() == "1003"


def test_redis_cli_resp3(kv_server):
    out = cli(kv_server, "-3", "HGETALL", "nosuch")
    assert out.strip() in ("", "(empty hash)")
    cli(kv_server, "HSET", "h", "f", "v")
    assert cli(kv_server, "-3", "--no-raw", "HGETALL", "h").split() == ["1#", '"f"', "=>", '"v"']


@pytest.mark.timeout(300)
def test_redis_benchmark_suite_runs_without_errors(kv_server):
    tool = require_tool("redis-benchmark")
    done = subprocess.run(
        [
            tool, "-h", kv_server.host, "-p", str(kv_server.port),
            "-t", "ping,set,get,incr,lpush,rpop,sadd,hset,zadd,lrange",
            "-n", "20000", "-q",
        ],
        capture_output=True,
        timeout=280,
    )  # fmt: skip
    out = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, out
    summary = [line.split("\r")[-1] for line in out.splitlines() if "requests per second" in line]
    tests = {line.split(":")[0].strip() for line in summary}
    assert {
        "PING_INLINE",
        "PING_MBULK",
        "SET",
        "GET",
        "INCR",
        "LPUSH",
        "RPOP",
        "SADD",
        "HSET",
    } <= tests
    assert any(t.startswith("LRANGE_100") for t in tests)
    assert "error" not in out.lower(), out
    assert kv_server.alive()
