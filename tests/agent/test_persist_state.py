"""The state directory's files: atomic, checked, locked; a corrupt or tampered one is a clear error at
start, never a traceback, and never code the agent does not trust.

File-level checks use StateDir directly; what a user sees is checked on the real `livepatch run` with an
unmodified app (lineapp) and a patch made by the real `livepatch diff`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from livepatch.agent import state_dir as sd
from tests.agent.persist_helpers import LIVEPATCH, apply, restore_of, start_server
from tests.conftest import free_port
from tests.integrations.serving import APPS, LineClient, build_patch, keygen

pytestmark = pytest.mark.timeout(180)
READY = re.compile(r"^READY (\d+)", re.MULTILINE)


def _stored(tmp_path: Path) -> sd.StateDir:
    state = sd.StateDir(tmp_path / "state")
    state.lock()
    doc = {"format": "lpatch", "manifest": {"patch_id": "abc"}}
    sha = state.save_document(doc)
    state.save_stack([sd.StoredPatch("abc", sha, "auto", 5.0, None, 1)])
    state.save_start(sd.StartRecord(1, os.getpid(), 0.0))
    return state


def test_files_round_trip_without_leftovers(tmp_path: Path) -> None:
    state = _stored(tmp_path)
    try:
        (stored,) = state.load_stack()
        assert stored.patch_id == "abc"
        assert state.load_document(stored)["manifest"] == {"patch_id": "abc"}
        assert [s.start for s in state.load_starts()] == [1]
        assert state.next_start() == 2
        leftovers = [p.name for p in (tmp_path / "state").rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == []
        assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
        state.save_stack([])  # a patch no entry names any more is deleted
        assert list((tmp_path / "state" / "patches").iterdir()) == []
    finally:
        state.unlock()


def _rewrite_body(path: Path, change: Callable[[Any], Any]) -> object:
    """Edit an envelope's body and fix its hash, as someone who knows the format would."""
    env = json.loads(path.read_text())
    env["body"] = change(env["body"])
    env["sha256"] = hashlib.sha256(sd.canonical(env["body"])).hexdigest()
    return path.write_bytes(sd.canonical(env))


CORRUPTIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:20]), "is corrupt \\(not valid JSON"),
    "edited": (
        lambda p: p.write_bytes(p.read_bytes().replace(b'"auto"', b'"local"')),
        "does not match its sha256",
    ),
    "not ours": (lambda p: p.write_text("{}"), "is not a livepatch stack file"),
    "newer version": (
        lambda p: p.write_bytes(p.read_bytes().replace(b'"version":1', b'"version":9')),
        "has version 9",
    ),
    "malformed": (
        lambda p: _rewrite_body(p, lambda b: {"patches": [{"patch_id": "abc"}]}),
        "is malformed",
    ),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupt_stack_file_is_a_clear_error(tmp_path: Path, corruption: str) -> None:
    _stored(tmp_path).unlock()
    damage, message = CORRUPTIONS[corruption]
    damage(tmp_path / "state" / "stack.json")
    with pytest.raises(sd.StateError, match=message) as info:
        sd.StateDir(tmp_path / "state").load_stack()
    assert str(tmp_path / "state" / "stack.json") in str(info.value)


def test_a_tampered_document_or_start_is_a_clear_error(tmp_path: Path) -> None:
    state = _stored(tmp_path)
    state.unlock()
    (stored,) = state.load_stack()
    doc = tmp_path / "state" / "patches" / f"{stored.sha256}.lpatch"
    doc.write_bytes(doc.read_bytes().replace(b"abc", b"abd"))
    with pytest.raises(sd.StateError, match="does not match its hash"):
        state.load_document(stored)
    start = tmp_path / "state" / "starts" / "000001.json"
    _rewrite_body(start, lambda b: {**b, "history": [{"patch_id": 1}]})
    with pytest.raises(sd.StateError, match=r"000001\.json is malformed"):
        state.load_starts()


def test_one_agent_per_state_directory(tmp_path: Path) -> None:
    first = sd.StateDir(tmp_path / "state")
    first.lock()
    try:
        with pytest.raises(
            sd.StateError, match=f"in use by another server \\(pid {os.getpid()}\\)"
        ):
            sd.StateDir(tmp_path / "state").lock()
    finally:
        first.unlock()
    second = sd.StateDir(tmp_path / "state")
    second.lock()  # free again once the first let go
    second.unlock()


# -- what a user sees -------------------------------------------------------------------------------------


@pytest.fixture()
def work() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="lp-pstate-"))  # short: a Unix socket path has ~100 bytes
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _run(work: Path, pub: Path, port: int) -> list[str]:
    return [
        LIVEPATCH, "run", "--socket", str(work / "lp.sock"), "--trusted-key", str(pub),
        "--state-dir", str(work / "state"), "-m", "lineapp", str(port),
    ]  # fmt: skip


def test_corrupt_or_tampered_state_stops_livepatch_run_with_a_clear_error(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, pub = keygen(work / "keys")
    patch = build_patch("lineapp", key, work / "fix.lpatch")
    code = APPS / "lineapp" / "v1"
    monkeypatch.chdir(code)
    server = start_server(_run(work, pub, free_port()), READY, work / "app.log")
    try:
        apply(patch, work / "lp.sock")
    finally:
        server.stop()

    def refused() -> str:
        proc = subprocess.run(
            _run(work, pub, free_port()), cwd=code, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 1 and "READY" not in proc.stdout, proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.stderr.strip().splitlines()[-1]

    # A patch whose code was changed and whose hashes were fixed up: its signature no longer holds.
    (stored,) = sd.StateDir(work / "state").load_stack()
    doc_path = work / "state" / "patches" / f"{stored.sha256}.lpatch"
    doc = json.loads(doc_path.read_text())
    manifest = doc["manifest"]
    (module,) = [m for m in manifest["modules"] if m["module"] == "lineapp.replies"]
    module["new_source"] = module["new_source"].replace("v2 hi", "pwned")
    manifest.pop("compiled", None)
    sha = sd.document_sha256(doc)
    doc_path.unlink()
    (work / "state" / "patches" / f"{sha}.lpatch").write_bytes(sd.canonical(doc))
    _rewrite_body(
        work / "state" / "stack.json",
        lambda b: {"patches": [{**b["patches"][0], "sha256": sha}]},
    )
    line = refused()
    assert "no longer verifies" in line and "bad signature" in line, line

    (work / "state" / "stack.json").write_text('{"format": "livepatch-state", "kind"')
    line = refused()
    assert line.startswith("error: the state file") and "is corrupt" in line, line

    # Moved away, as the message says: the app starts on its own code, the history keeps the refusals.
    (work / "state" / "stack.json").unlink()
    server = start_server(_run(work, pub, free_port()), READY, work / "app2.log")
    try:
        m = READY.search((work / "app2.log").read_text())
        assert m is not None
        client = LineClient(int(m.group(1)))
        assert client.request("x") == "v1 hello x"
        client.close()
        proc = subprocess.run(
            [LIVEPATCH, "history", "--socket", str(work / "lp.sock"), "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        h = json.loads(proc.stdout)
        assert [s["outcome"] for s in h["starts"]] == ["serving", "refused", "serving"]
        assert restore_of(h, 2)[0][1] == "stale"
    finally:
        server.stop()
