"""End to end: a patch whose new code hangs, on a real threaded service, driven through the real CLI.

`livepatch revert` cannot reach quiescence while a connection thread sits in the hanging code;
`livepatch revert --force` puts the old code back for new calls at once, says so loudly (CLI, server log,
history), and the server can be patched again while that thread still hangs. A watch window with a
per-call bound does the same by itself. The hanging call is ended by the test (a RELEASE request), and
finishes in the new code.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livepatch.agent import client as agent_client
from tests.agent.agent_helpers import SERVICE_DIR, LineClient, Service, cli, run_service, socket_dir

pytestmark = pytest.mark.timeout(120)

V1_REPLY = re.compile(r"^hello (\w+) \(v1\)$")


@pytest.fixture()
def service() -> Iterator[Service]:
    with socket_dir() as d, run_service(d / "agent.sock", allow_unsigned=True) as svc:
        yield svc


@pytest.fixture()
def hang_patch(tmp_path: Path) -> Path:
    out = tmp_path / "hang.lpatch"
    proc = cli(
        "diff",
        str(SERVICE_DIR / "v1"),
        str(SERVICE_DIR / "v2_hangs"),
        "--package",
        "greetsvc",
        "-o",
        str(out),
        "--patch-id",
        "hang",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def _json(*args: str) -> Any:
    proc = cli(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _status(svc: Service) -> dict[str, Any]:
    return agent_client.request(svc.socket_path, {"op": "status"})


def _enter_hang(svc: Service) -> LineClient:
    """A client whose request now sits inside the hanging greet (its thread running, not inactive)."""
    stuck = svc.connect()
    stuck.file.write(b"GREET stuck\n")
    stuck.file.flush()
    deadline = time.monotonic() + 30
    while _status(svc)["statistics"]["by_state"].get("running", 0) < 1:
        assert time.monotonic() < deadline, "the request never started"
    return stuck


def _release(svc: Service, stuck: LineClient) -> str:
    c = svc.connect()
    assert c.request("RELEASE") == "RELEASED"
    c.close()
    reply = stuck.file.readline().decode().strip()
    stuck.close()
    return reply


def test_revert_force_gets_out_of_a_patch_whose_code_hangs(
    service: Service, hang_patch: Path
) -> None:
    sock = ("--socket", service.socket_path)
    assert cli("apply", str(hang_patch), *sock, "--method", "global").returncode == 0
    stuck = _enter_hang(service)
    try:
        plain = cli("revert", *sock, "--method", "global", "--timeout", "0.5")
        assert plain.returncode == 1 and "connection" in plain.stderr, plain.stderr

        forced = cli("revert", *sock, "--force")
        assert forced.returncode == 0, forced.stderr
        assert "warning:" in forced.stderr and "FORCED" in forced.stderr
        assert "still inside the new code" in forced.stderr and "greet" in forced.stderr
        assert "FORCED revert" in service.log()  # the server's log says it too

        assert V1_REPLY.match(service.connect().request("GREET new"))  # new calls: the old code
        last = _json("history", *sock)["history"][-1]
        assert (last["action"], last["method"], last["outcome"]) == ("revert", "force", "reverted")
        assert "forced" in [e["name"] for e in last["events"]]
        states = [t["state"] for t in _json("status", *sock)["statistics"]["threads"]]
        assert "released" in states and _json("status", *sock)["applied"] == []

        # the thread still hangs, yet the server can be patched (and reverted) again
        again = cli("apply", str(hang_patch), *sock, "--method", "global", "--timeout", "5")
        assert again.returncode == 0, again.stderr
        back = cli("revert", *sock, "--method", "global", "--timeout", "5")
        assert back.returncode == 0, back.stderr
    finally:
        reply = _release(service, stuck)
    assert reply == "hello stuck (v2, late)"  # the running frame finished in the new code
    assert V1_REPLY.match(service.connect().request("GREET after"))
    assert service.proc.poll() is None


def test_watch_rolls_back_by_force_when_calls_hang(service: Service, hang_patch: Path) -> None:
    sock = ("--socket", service.socket_path)
    proc = cli(
        "apply",
        str(hang_patch),
        *sock,
        "--method",
        "global",
        "--watch",
        "60",
        "--watch-max-call-ms",
        "200",
    )
    assert proc.returncode == 0, proc.stderr
    stuck = _enter_hang(service)
    try:
        deadline = time.monotonic() + 30
        while not any(h["outcome"] == "rolled-back" for h in _json("history", *sock)["history"]):
            assert time.monotonic() < deadline, "no rollback within 30 s"
        rolled = _json("history", *sock)["history"][-1]
        assert rolled["method"] == "force" and "took longer than 200 ms" in rolled["reason"]
        assert V1_REPLY.match(service.connect().request("GREET new"))
        assert _json("status", *sock)["applied"] == []
    finally:
        reply = _release(service, stuck)
    assert reply == "hello stuck (v2, late)"


def test_cli_and_protocol_checks(service: Service, hang_patch: Path) -> None:
    help_text = cli("revert", "--help").stdout
    assert "--force" in help_text and "DANGEROUS" in help_text
    usage = cli(
        "apply", str(hang_patch), "--socket", service.socket_path, "--watch-max-call-ms", "5"
    )
    assert usage.returncode == 2 and "needs --watch" in usage.stderr
    bad = agent_client.request(service.socket_path, {"op": "revert", "force": "yes"})
    assert not bad["ok"] and "'force' must be true or false" in bad["error"]
    nothing = cli("revert", "--socket", service.socket_path, "--force")
    assert nothing.returncode == 1 and "applied" in nothing.stderr
