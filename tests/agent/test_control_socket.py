"""The control socket of an in-process Agent: permissions, peer uid check, limits, bad requests,
and the refusals the agent makes before the runtime sees a patch. Real Unix sockets, real clients
(the socket client of the CLI and, for other uids, a subprocess run as `nobody`)."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import livepatch
from livepatch.agent import client, protocol
from livepatch.patch import lpatch, signing
from livepatch.patch.model import (
    Category,
    ChangeKind,
    DefinitionKind,
    ModulePatch,
    PatchSpec,
    Refusal,
    TargetChange,
)
from livepatch.runtime.lifecycle import EventName, Outcome
from tests.agent.agent_helpers import AS_NOBODY, socket_dir


def spec(
    category: Category = Category.THREAD_LOCAL, refusals: tuple[Refusal, ...] = ()
) -> PatchSpec:
    change = TargetChange("f", ChangeKind.CHANGED, DefinitionKind.FUNCTION, "0" * 64, "1" * 64)
    module = ModulePatch("lp_not_loaded_anywhere", "def f():\n    return 2\n", (change,))
    return PatchSpec("p-test", "lp", category, (module,), refusals=refusals)


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[signing.PrivateKey, Path]:
    priv, pub, _ = signing.generate_keypair(tmp_path / "keys")
    return signing.load_private_key(priv), pub


@pytest.fixture()
def sockdir() -> Iterator[Path]:
    with socket_dir() as d:
        yield d


def apply_req(pf: lpatch.PatchFile, method: str = "auto") -> dict:
    return {"op": "apply", "patch": pf.to_document(), "method": method, "timeout": 2.0}


def test_socket_mode_and_removed_on_stop(sockdir: Path, keys) -> None:
    path = sockdir / "a.sock"
    agent = livepatch.Agent(socket_path=path, trusted_keys=[keys[1]])
    agent.start()
    try:
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
    finally:
        agent.stop()
    assert not path.exists()
    agent.stop()  # idempotent


def test_stale_socket_is_replaced_live_one_and_files_are_not(sockdir: Path) -> None:
    path = sockdir / "a.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file nobody listens on, as a crashed server leaves it
    with (
        livepatch.Agent(socket_path=path, allow_unsigned=True),
        pytest.raises(FileExistsError, match="another agent"),
    ):
        livepatch.Agent(socket_path=path).start()
    plain = sockdir / "file"
    plain.write_text("data")
    with pytest.raises(FileExistsError, match="not a socket"):
        livepatch.Agent(socket_path=plain).start()
    assert plain.read_text() == "data"


def test_bad_trusted_key_fails_at_construction(tmp_path: Path) -> None:
    bad = tmp_path / "x.pub"
    bad.write_text("nope")
    with pytest.raises(signing.KeyFileError):
        livepatch.Agent(socket_path=tmp_path / "s", trusted_keys=[bad])


def raw_exchange(path: Path, payload: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(path))
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return protocol.decode(protocol.read_line(s, 1 << 20, __import__("time").monotonic() + 30))


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json\n", "not a JSON line"),
        (b"[1,2]\n", "must be a JSON object"),
        (b'{"op": "format-disk"}\n', "unknown op"),
        (b'{"op": "apply"}\n', "needs a 'patch' object"),
        (b'{"op": "revert", "method": "sideways"}\n', "unknown method"),
        (b'{"op": "revert", "timeout": -1}\n', "'timeout' must be a number"),
        (b'{"op": "apply", "patch": {}, "watch": {"max_errors": -2}}\n', "max_errors"),
        (b"\xff\xfe\n", "not a JSON line"),
    ],
)
def test_bad_requests_get_errors_and_agent_keeps_serving(
    sockdir: Path, keys, payload: bytes, message: str
) -> None:
    path = sockdir / "a.sock"
    with livepatch.Agent(socket_path=path, trusted_keys=[keys[1]]):
        reply = raw_exchange(path, payload)
        assert reply["ok"] is False and message in reply["error"]
        # the next, well-formed request is served normally (refused: it is unsigned)
        reply = client.request(str(path), apply_req(lpatch.build(spec())))
        assert reply["result"]["patch_id"] == "p-test"
        assert "not signed" in reply["error"]


def test_oversized_request_is_refused_without_reading_it_all(sockdir: Path) -> None:
    path = sockdir / "a.sock"
    with livepatch.Agent(socket_path=path, allow_unsigned=True):
        big = b'{"op":"status","pad":"' + b"x" * (protocol.MAX_REQUEST_BYTES + 10) + b'"}\n'
        reply = raw_exchange(path, big)
        assert reply["ok"] is False
        assert f"limit of {protocol.MAX_REQUEST_BYTES} bytes" in reply["error"]
        reply = raw_exchange(path, b'{"op": "apply", "patch": {}}\n')
        assert "not a patch file" in reply["error"]


def test_client_that_hangs_up_does_not_hurt(sockdir: Path) -> None:
    path = sockdir / "a.sock"
    with livepatch.Agent(socket_path=path, allow_unsigned=True):
        for _ in range(20):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(b'{"op": "sta')  # and close mid-line
        reply = raw_exchange(path, b'{"op": "apply", "patch": {}}\n')
        assert reply["ok"] is False and "not a patch file" in reply["error"]


def test_refusals_before_the_runtime(sockdir: Path, keys, tmp_path: Path) -> None:
    private, public = keys
    path = sockdir / "a.sock"
    other_priv, _, _ = signing.generate_keypair(tmp_path / "other")
    with livepatch.Agent(socket_path=path, trusted_keys=[public]) as agent:
        cases = [
            (apply_req(lpatch.build(spec())), "not signed"),
            (
                apply_req(lpatch.build(spec(), signing.load_private_key(other_priv))),
                "does not trust",
            ),
            (apply_req(lpatch.build(spec(Category.PROCESS), private), "local"), "cannot use local"),
            (
                apply_req(lpatch.build(spec(refusals=(Refusal("m", "f", "why", "how"),)), private)),
                "cannot be live-patched",
            ),
        ]
        tampered = lpatch.build(spec(), private).to_document()
        tampered["manifest"]["modules"][0]["new_source"] = "def f():\n    return 666\n"
        cases.append(({"op": "apply", "patch": tampered, "method": "auto"}, "bad signature"))
        before = len(agent.history())
        for req, message in cases:
            reply = client.request(str(path), req)
            assert reply["ok"] is False, reply
            assert message in reply["error"]
            assert reply["result"]["outcome"] == "refused"
            assert [e["name"] for e in reply["result"]["events"]] == ["received", "refused"]
        # one history, the runtime's (per process): the refusals made before the runtime saw the patch
        # are in it, in order, as typed results
        refused = agent.history()[before:]
        assert agent.history() == livepatch.history()
        assert [r.outcome for r in refused] == [Outcome.REFUSED] * len(cases)
        assert all(r.events[0].name == EventName.RECEIVED for r in refused)


def test_concurrent_clients(sockdir: Path) -> None:
    import threading

    path = sockdir / "a.sock"
    errors: list[BaseException] = []
    barrier = threading.Barrier(12)

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            for _ in range(10):
                reply = client.request(str(path), {"op": "apply", "patch": {}}, timeout=30)
                assert reply["ok"] is False and "not a patch file" in reply["error"]
        except BaseException as exc:
            errors.append(exc)

    with livepatch.Agent(socket_path=path, allow_unsigned=True):
        threads = [threading.Thread(target=worker) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors[:3]


NOBODY_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError as e:
    print(json.dumps({"connect": "EACCES"})); sys.exit(0)
try:
    s.sendall(b'{"op": "status"}\\n')
except (BrokenPipeError, ConnectionResetError):
    pass  # the agent may refuse (and close) before we even send: its reply is still readable
print(json.dumps({"connect": "ok", "reply": s.makefile().readline()}))
"""


def run_as_nobody(path: Path) -> dict:
    proc = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", NOBODY_CLIENT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to `nobody` needs root (CI runs as root)")
def test_other_uid_is_refused(sockdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = sockdir / "a.sock"
    # Mode 0600: the kernel refuses the connection before the agent sees it.
    with livepatch.Agent(socket_path=path, allow_unsigned=True):
        assert run_as_nobody(path) == {"connect": "EACCES"}
    # A relaxed mode (test-only option): the agent's own SO_PEERCRED check refuses and logs.
    caplog.set_level("WARNING", logger="livepatch.agent")
    with livepatch.Agent(socket_path=path, allow_unsigned=True, socket_mode=0o666):
        out = run_as_nobody(path)
        assert out["connect"] == "ok"
        reply = json.loads(out["reply"])
        assert reply["ok"] is False
        assert "permission denied: uid 65534" in reply["error"]
        # root (our uid) is still served on the same socket
        reply = client.request(str(path), {"op": "apply", "patch": {}})
        assert "not a patch file" in reply["error"]
    assert any(
        "refused control connection" in r.message and "uid 65534" in r.message
        for r in caplog.records
    )


def test_metrics_endpoint_counts_refusals(sockdir: Path) -> None:
    path = sockdir / "a.sock"
    with livepatch.Agent(socket_path=path, metrics_port=0) as agent:
        assert agent.metrics_address is not None
        host, port = agent.metrics_address

        def scrape() -> str:
            url = f"http://{host}:{port}/metrics"
            return str(urllib.request.urlopen(url, timeout=30).read().decode())

        def refused(body: str) -> float:
            # the runtime's history is per process (other tests in this process add to it)
            m = re.search(
                r'^livepatch_patches_total\{action="apply",outcome="refused"\} (\S+)$', body, re.M
            )
            return float(m.group(1)) if m else 0.0

        before = refused(scrape())
        for _ in range(3):
            client.request(str(path), apply_req(lpatch.build(spec())))
        body = scrape()
    assert refused(body) - before == 3.0
    assert "livepatch_applied_patches" in body


def test_agent_can_be_restarted(sockdir: Path) -> None:
    path = sockdir / "a.sock"
    agent = livepatch.Agent(socket_path=path, allow_unsigned=True)
    for _ in range(3):
        agent.start()
        reply = client.request(str(path), {"op": "apply", "patch": {}})
        assert "not a patch file" in reply["error"]
        agent.stop()
        assert not path.exists()
