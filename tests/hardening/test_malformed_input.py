"""No tracebacks on malformed input (issue 10): deeply nested JSON and huge integers, over the control
socket and inside a `.lpatch`, get a clear error (reply `ok: false` / exit 1), the service keeps serving,
and nothing reaches the agent's log as a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepatch.patch import lpatch
from livepatch.patch.limits import MAX_JSON_DEPTH, MAX_JSON_INT_DIGITS
from tests.agent.agent_helpers import Service, cli, run_service, socket_dir
from tests.hardening.hardening_helpers import greet_spec, no_traceback, raw_request

pytestmark = pytest.mark.timeout(120)

NESTED = b"[" * 100_000
HUGE_INT = b"1" * 5_000


@pytest.fixture()
def service(tmp_path: Path) -> Iterator[tuple[Service, Path]]:
    log = tmp_path / "service.log"
    with socket_dir() as d, run_service(d / "agent.sock", allow_unsigned=True, log_path=log) as svc:
        yield svc, log


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (NESTED + b"\n", f"nested 100000 levels deep, over the limit of {MAX_JSON_DEPTH}"),
        (b'{"op": ' + HUGE_INT + b"}\n", f"5000 digits, over the limit of {MAX_JSON_INT_DIGITS}"),
        (b'{"op": "status", "x": ' + NESTED + b"}\n", "over the limit of"),
        (b'{"op": "apply", "patch": ' + NESTED + b"}\n", "over the limit of"),
        (b'{"op": "apply", "timeout": NaN, "patch": {}}\n', "NaN is not valid JSON"),
    ],
)
def test_control_socket_answers_malformed_json(
    service: tuple[Service, Path], payload: bytes, expected: str
) -> None:
    svc, log = service
    reply = raw_request(svc.socket_path, payload)
    assert reply["ok"] is False
    assert reply["error"].startswith("bad request: ") and expected in reply["error"], reply
    assert svc.connect().request("PING") == "PONG"  # still serving
    no_traceback(log.read_text())


def test_patch_document_inside_a_request_is_checked_too(service: tuple[Service, Path]) -> None:
    svc, log = service
    doc = lpatch.build(greet_spec()).to_document()
    doc["manifest"]["description"] = "x"
    line = json.dumps({"op": "apply", "patch": doc}).encode()
    deep = line.replace(b'"description": "x"', b'"description": ' + b"[" * 5000 + b"]" * 5000)
    reply = raw_request(svc.socket_path, deep + b"\n")
    assert reply["ok"] is False and "nested 5003 levels deep" in reply["error"], reply
    big = line.replace(b'"description": "x"', b'"description": ' + HUGE_INT)
    reply = raw_request(svc.socket_path, big + b"\n")
    assert reply["ok"] is False and "5000 digits" in reply["error"], reply
    no_traceback(log.read_text())


@pytest.mark.parametrize(
    ("body", "expected"),
    [(NESTED, "nested 100000 levels deep"), (b'{"format": ' + HUGE_INT + b"}", "5000 digits")],
)
def test_inspect_and_apply_refuse_a_malformed_file(
    service: tuple[Service, Path], tmp_path: Path, body: bytes, expected: str
) -> None:
    svc, log = service
    bad = tmp_path / "bad.lpatch"
    bad.write_bytes(body)
    for args in (("inspect", str(bad)), ("apply", str(bad), "--socket", svc.socket_path)):
        proc = cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "is not a valid patch file" in proc.stderr and expected in proc.stderr
        no_traceback(proc.stderr + proc.stdout)
        as_json = cli(*args, "--json")
        assert as_json.returncode == 1
        error = json.loads(as_json.stdout)
        assert error["ok"] is False and expected in error["error"]
    no_traceback(log.read_text())


@pytest.mark.parametrize("what", ["module", "hooks"])
def test_diff_of_a_source_too_deep_to_compile(tmp_path: Path, what: str) -> None:
    deep = "x = " + "-" * 100_000 + "1\n"
    for version in ("old", "new"):
        (tmp_path / version / "p").mkdir(parents=True)
        (tmp_path / version / "p" / "__init__.py").write_text("def f():\n    return 1\n")
    hooks = tmp_path / "hooks.py"
    hooks.write_text(deep if what == "hooks" else "def post_patch(ctx):\n    pass\n")
    if what == "module":
        (tmp_path / "new" / "p" / "__init__.py").write_text(deep)
    proc = cli(
        "diff", str(tmp_path / "old"), str(tmp_path / "new"), "-p", "p", "--hooks", str(hooks)
    )
    assert proc.returncode == 1
    assert "nested too deeply to compile" in proc.stderr, proc.stderr
    no_traceback(proc.stdout + proc.stderr)
