"""End to end: a real threaded TCP service (subprocess) running the Agent, patched with the installed
`livepatch` command. Clients connected before the patch keep their connections and see the new code on
their next request; refused patches change nothing; other uids are refused; a failing patch is rolled
back automatically inside its watch window."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepatch.patch import signing
from tests.agent.agent_helpers import SERVICE_DIR, LineClient, Service, cli, run_service, socket_dir

pytestmark = pytest.mark.timeout(120)

V1_REPLY = re.compile(r"^hello (\w+) \(v1\)$")
V2_REPLY = re.compile(r"^hello, (\w+)! \(v2\)$")


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    proc = cli("keygen", "--out", str(tmp_path / "keys"))
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "keys" / "livepatch.key", tmp_path / "keys" / "livepatch.pub"


def build(tmp_path: Path, name: str, old: str, new: str, *extra: str) -> Path:
    out = tmp_path / f"{name}.lpatch"
    proc = cli(
        "diff",
        str(SERVICE_DIR / old),
        str(SERVICE_DIR / new),
        "--package",
        "greetsvc",
        "-o",
        str(out),
        "--patch-id",
        name,
        *extra,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.fixture()
def service(keys: tuple[Path, Path]) -> Iterator[Service]:
    with (
        socket_dir() as d,
        run_service(d / "agent.sock", trusted_keys=(keys[1],), metrics=True) as svc,
    ):
        yield svc


class Hammer:
    """A client thread sending requests in a loop until stopped; records every reply."""

    def __init__(self, svc: Service) -> None:
        self.client = svc.connect()
        self.replies: list[str] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.some = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.replies.append(self.client.request("GREET h"))
                if len(self.replies) >= 5:
                    self.some.set()
        except BaseException as exc:
            self.errors.append(exc)
            self.some.set()

    def finish(self) -> list[str]:
        self.stop.set()
        self.thread.join(timeout=30)
        self.client.close()
        assert not self.errors, self.errors
        return self.replies


def greet_all(clients: list[LineClient]) -> list[str]:
    return [c.request(f"GREET c{i}") for i, c in enumerate(clients)]


def cli_json(*args: str) -> tuple[int, dict, str]:
    proc = cli(*args, "--json")
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


@pytest.mark.parametrize("method", ["global", "local"])
def test_apply_status_revert_history(
    tmp_path: Path, keys: tuple[Path, Path], service: Service, method: str
) -> None:
    patch = build(
        tmp_path, "fix-greet", "v1", "v2", "--key", str(keys[0]), "--category", "thread-local"
    )
    clients = [service.connect() for _ in range(4)]
    assert all(V1_REPLY.match(r) for r in greet_all(clients))
    hammer = Hammer(service)
    assert hammer.some.wait(30)

    rc, reply, err = cli_json(
        "apply", str(patch), "--socket", service.socket_path, "--method", method
    )
    assert rc == 0, err
    result = reply["result"]
    assert result["outcome"] == "applied" and result["method"] == method
    assert reply["signed_by"] == signing.load_public_key(keys[1]).key_id
    names = [e["name"] for e in result["events"]]
    assert names[:3] == ["received", "signature-checked", "requested"]
    assert "finished" in names
    assert {"signature", "total"} <= set(result["timings"])

    # connections opened before the patch see the new code on their next request
    assert all(V2_REPLY.match(r) for r in greet_all(clients))
    assert V2_REPLY.match(service.connect().request("GREET new"))

    rc, status, err = cli_json("status", "--socket", service.socket_path)
    assert rc == 0, err
    assert status["applied"] == ["fix-greet"]

    assert service.metrics_port is not None
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=30)
        .read()
        .decode()
    )
    assert 'livepatch_patches_total{action="apply",outcome="applied"} 1.0' in body
    assert "livepatch_applied_patches 1.0" in body

    by_name = ("fix-greet",) if method == "global" else ()  # newest, or named: both ways work
    rc, reply, err = cli_json(
        "revert", *by_name, "--socket", service.socket_path, "--method", method
    )
    assert rc == 0, err
    assert reply["result"]["outcome"] == "reverted"
    assert all(V1_REPLY.match(r) for r in greet_all(clients))

    replies = hammer.finish()
    # every reply came whole from one version: no errors, no mixture, nothing dropped
    assert all(V1_REPLY.match(r) or V2_REPLY.match(r) for r in replies), set(replies)

    rc, hist, err = cli_json("history", "--socket", service.socket_path)
    assert rc == 0, err
    assert [(h["action"], h["outcome"]) for h in hist["history"]] == [
        ("apply", "applied"),
        ("revert", "reverted"),
    ]
    rc, status, _ = cli_json("status", "--socket", service.socket_path)
    assert status["applied"] == []
    for c in clients:
        c.close()


def test_human_output(tmp_path: Path, keys: tuple[Path, Path], service: Service) -> None:
    patch = build(tmp_path, "fix-h", "v1", "v2", "--key", str(keys[0]))
    proc = cli("apply", str(patch), "--socket", service.socket_path, "--method", "global")
    assert proc.returncode == 0, proc.stderr
    assert "apply fix-h: applied (global)" in proc.stdout
    assert re.search(r"\d+\.\d+ ms  finished", proc.stdout), proc.stdout
    assert "signed by key" in proc.stdout
    proc = cli("history", "--socket", service.socket_path)
    assert proc.returncode == 0 and "fix-h" in proc.stdout and "applied" in proc.stdout
    proc = cli("status", "--socket", service.socket_path)
    assert proc.returncode == 0 and "applied patches (oldest first): fix-h" in proc.stdout


def test_refused_patches_change_nothing(
    tmp_path: Path, keys: tuple[Path, Path], service: Service
) -> None:
    signed = ("--key", str(keys[0]))
    # a body-only fix is inferred thread-local: built as process, local quiescence is refused
    good = build(tmp_path, "good", "v1", "v2", *signed, "--category", "process")
    tampered = tmp_path / "tampered.lpatch"
    doc = json.loads(good.read_text())
    for m in doc["manifest"]["modules"]:
        m["new_source"] = m["new_source"].replace("hello, ", "pwned, ")
    tampered.write_text(json.dumps(doc))
    cases = [
        (tampered, (), "bad signature"),
        (build(tmp_path, "unsigned", "v1", "v2"), (), "not signed"),
        (build(tmp_path, "other-version", "v0", "v2", *signed), (), "does not match"),
        (good, ("--method", "local"), "cannot use local"),  # category process: global only
    ]
    client = service.connect()
    for patch, extra, message in cases:
        proc = cli("apply", str(patch), "--socket", service.socket_path, *extra)
        assert proc.returncode == 1, (patch, proc.stdout, proc.stderr)
        assert message in proc.stderr, proc.stderr
        assert V1_REPLY.match(client.request("GREET still"))  # the old behaviour, same connection
    proc = cli("revert", "no-such-patch", "--socket", service.socket_path)
    assert proc.returncode == 1 and "no-such-patch" in proc.stderr, proc.stderr
    _, hist, _ = cli_json("history", "--socket", service.socket_path)
    applies = [h["outcome"] for h in hist["history"] if h["action"] == "apply"]
    assert applies == ["refused"] * len(cases)
    _, status, _ = cli_json("status", "--socket", service.socket_path)
    assert status["applied"] == []
    client.close()


def test_other_uid_is_refused(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    patch = build(tmp_path, "good", "v1", "v2", "--key", str(keys[0]))
    with socket_dir() as d:
        with run_service(d / "a.sock", trusted_keys=(keys[1],)) as svc:
            proc = cli("status", "--socket", svc.socket_path, user="nobody")
            assert proc.returncode == 1 and "permission denied" in proc.stderr
            assert V1_REPLY.match(svc.connect().request("GREET x"))
        # a relaxed socket mode (test-only): the agent's SO_PEERCRED check refuses by itself
        readable = d / "good.lpatch"  # where `nobody` can read it (tmp_path is 0700)
        readable.write_bytes(patch.read_bytes())
        readable.chmod(0o644)
        with run_service(d / "b.sock", trusted_keys=(keys[1],), socket_mode=0o666) as svc:
            proc = cli("apply", str(readable), "--socket", svc.socket_path, user="nobody")
            assert proc.returncode == 1
            assert "permission denied: uid 65534" in proc.stderr
            assert V1_REPLY.match(svc.connect().request("GREET x"))
            rc, status, _ = cli_json("status", "--socket", svc.socket_path)
            assert rc == 0 and status["applied"] == []


def test_failing_patch_is_rolled_back_within_watch(
    tmp_path: Path, keys: tuple[Path, Path], service: Service
) -> None:
    patch = build(tmp_path, "broken", "v1", "v2_raises", "--key", str(keys[0]))
    client = service.connect()
    assert V1_REPLY.match(client.request("GREET a"))
    apply = subprocess.Popen(
        [
            *_cli_cmd(),
            "apply",
            str(patch),
            "--socket",
            service.socket_path,
            "--method",
            "global",
            "--watch",
            "30",
            "--max-errors",
            "2",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # the service keeps answering throughout: first the broken code's errors, then the old code
        saw_error = False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            reply = client.request("GREET a")
            if reply.startswith("ERR RuntimeError: broken greeting"):
                saw_error = True
            elif V1_REPLY.match(reply) and saw_error:
                break
            else:
                assert V1_REPLY.match(reply), reply
        else:
            pytest.fail("the broken patch was not rolled back within 60 s")
        out, err = apply.communicate(timeout=90)
        assert apply.returncode == 0, err  # the apply itself succeeded; the rollback came later
        assert json.loads(out)["result"]["outcome"] == "applied"
    finally:
        if apply.poll() is None:
            apply.kill()
            apply.wait(timeout=10)
    _, hist, _ = cli_json("history", "--socket", service.socket_path)
    outcomes = [h["outcome"] for h in hist["history"]]
    assert "rolled-back" in outcomes, outcomes
    rolled = next(h for h in hist["history"] if h["outcome"] == "rolled-back")
    assert rolled["reason"]
    _, status, _ = cli_json("status", "--socket", service.socket_path)
    assert status["applied"] == []
    client.close()


def _cli_cmd() -> list[str]:
    from tests.agent.agent_helpers import LIVEPATCH

    return [LIVEPATCH]


def test_abort_when_a_thread_does_not_reach_quiescence(
    tmp_path: Path, keys: tuple[Path, Path], service: Service
) -> None:
    from livepatch.agent import client as agent_client

    patch = build(tmp_path, "fix-a", "v1", "v2", "--key", str(keys[0]))
    holder = service.connect()
    holder.file.write(b"HOLD 60\n")  # a long request: its thread passes no quiescence point
    holder.file.flush()
    deadline = time.monotonic() + 30
    while True:  # wait until the holding thread is inside its request (running, not inactive)
        stats = agent_client.request(service.socket_path, {"op": "status"})["statistics"]
        if stats["by_state"].get("running", 0) >= 1:
            break
        assert time.monotonic() < deadline, stats
    proc = cli(
        "apply",
        str(patch),
        "--socket",
        service.socket_path,
        "--method",
        "global",
        "--timeout",
        "0.5",
    )
    assert proc.returncode == 1, proc.stdout
    assert "aborted" in proc.stdout
    assert proc.stderr.startswith("error:") and "connection" in proc.stderr  # names the straggler
    # nothing changed; the other clients are served; the long request completes normally
    assert V1_REPLY.match(service.connect().request("GREET other"))
    assert service.connect().request("RELEASE") == "RELEASED"
    assert holder.file.readline().decode().strip() == "HELD"
    # and once the server can reach quiescence, the same patch applies
    proc = cli("apply", str(patch), "--socket", service.socket_path, "--method", "global")
    assert proc.returncode == 0, proc.stderr
    assert V2_REPLY.match(holder.request("GREET holder"))
    _, hist, _ = cli_json("history", "--socket", service.socket_path)
    assert [h["outcome"] for h in hist["history"]] == ["aborted", "applied"]
    holder.close()


def test_patch_with_hooks(tmp_path: Path, keys: tuple[Path, Path], service: Service) -> None:
    signed = ("--key", str(keys[0]))
    # without hooks, the new module-level state is refused and no patch is written
    proc = cli(
        "diff", str(SERVICE_DIR / "v1"), str(SERVICE_DIR / "v3_hooks"), "--package", "greetsvc"
    )
    assert proc.returncode == 1 and "module-level state" in proc.stdout
    hooks = ("--hooks", str(SERVICE_DIR / "hooks_v3.py"))
    patch = build(tmp_path, "with-hooks", "v1", "v3_hooks", *signed, *hooks)
    client = service.connect()
    assert V1_REPLY.match(client.request("GREET a"))
    rc, reply, err = cli_json(
        "apply", str(patch), "--socket", service.socket_path, "--method", "global"
    )
    assert rc == 0, err
    assert client.request("GREET a") == "hey a (v3)"
    rc, reply, err = cli_json("revert", "--socket", service.socket_path)
    assert rc == 0, err
    assert reply["result"]["outcome"] == "reverted"
    assert V1_REPLY.match(client.request("GREET a"))
    client.close()
