"""Patches outlive the process: a real kvserver with a stack of 3 signed patches, restarted on the old
code, on the code of the first patch, on the newest code, and on a version the stack knows nothing of.

The code versions are copies of the installed kvserver whose ECHO answers `vN:` + its argument (v0 as
installed); the patches are the real `livepatch diff` of v0->v1, v1->v2, v2->v3, applied with the real
`livepatch apply`; restarts are new processes of `python -m kvserver` on the same socket and state
directory, with PYTHONPATH choosing the deployed version. The first reply of a restarted server comes
from the first connection, opened as soon as it printed its readiness line: it already shows v3, so
the stack was back before anyone was served.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

import kvserver
from tests.agent.persist_helpers import (
    apply,
    entries_of,
    history,
    restore_of,
    signed_diff,
    start_server,
)
from tests.integrations.serving import keygen

pytestmark = pytest.mark.timeout(300)

SRC = Path(kvserver.__file__).resolve().parent
OLD_ECHO = "    return argv[1]\n"
READY = re.compile(r"kvserver ready on [\d.]+:(\d+)")


@dataclass
class Stack:
    work: Path
    trees: dict[str, Path]  # version -> a directory holding that version's kvserver package
    patches: list[Path]
    pub: Path


def _version(work: Path, name: str, echo: str | None) -> Path:
    root = work / name
    shutil.copytree(SRC, root / "kvserver", ignore=shutil.ignore_patterns("__pycache__"))
    if echo is not None:
        handler = root / "kvserver" / "commands" / "connection.py"
        text = handler.read_text()
        at = text.index("def echo_command")
        assert text.count(OLD_ECHO, at, at + 200) == 1
        handler.write_text(text[:at] + text[at:].replace(OLD_ECHO, echo, 1))
    return root


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="lp-persist-"))  # short: a Unix socket path has ~100 bytes
    try:
        key, pub = keygen(work / "keys")
        trees = {"v0": _version(work, "v0", None)}
        for n in (1, 2, 3):
            trees[f"v{n}"] = _version(work, f"v{n}", f'    return b"v{n}:" + argv[1]\n')
        trees["other"] = _version(work, "other", '    return b"other:" + argv[1]\n')
        patches = [
            signed_diff(
                trees[f"v{n}"], trees[f"v{n + 1}"], "kvserver", key, work / f"p{n + 1}.lpatch"
            )
            for n in (0, 1, 2)
        ]
        yield Stack(work, trees, patches, pub)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _argv(stack: Stack, case: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "kvserver", "--port", "0",
        "--livepatch-socket", str(case / "lp.sock"), "--trusted-key", str(stack.pub),
        "--state-dir", str(case / "state"), *extra,
    ]  # fmt: skip


def _port(log: Path) -> int:
    m = READY.search(log.read_text())
    assert m is not None
    return int(m.group(1))


class Server:
    """One kvserver process at a code version; `first_echo` is the very first reply it serves."""

    def __init__(self, stack: Stack, case: Path, version: str, *extra: str) -> None:
        self.log = case / f"server-{len(list(case.glob('server-*.log')))}.log"
        self.proc = start_server(_argv(stack, case, *extra), READY, self.log, stack.trees[version])
        self.client = redis.Redis(port=_port(self.log), socket_timeout=30)
        self.first_echo = self.client.echo("x")

    def stop(self) -> None:
        self.client.close()
        self.proc.stop()


def _applied_ids(reply: dict[str, Any]) -> list[str]:
    return [e["patch_id"] for e in reply["history"] if e["outcome"] == "applied"]


def _start_with_stack(stack: Stack, case: Path) -> list[str]:
    """Start on v0, apply the 3 patches; return their ids."""
    server = Server(stack, case, "v0")
    try:
        assert server.first_echo == b"x"
        ids = [apply(p, case / "lp.sock")["result"]["patch_id"] for p in stack.patches]
        assert server.client.echo("x") == b"v3:x"
    finally:
        server.stop()
    return ids


def test_stack_is_reapplied_before_serving_included_when_deployed_refused_when_stale(
    stack: Stack,
) -> None:
    case = stack.work / "a"
    case.mkdir()
    ids = _start_with_stack(stack, case)

    # Restart on the old code: the first reply already comes from the patched code.
    server = Server(stack, case, "v0")
    try:
        assert server.first_echo == b"v3:x"
        h = history(case / "lp.sock")
        assert restore_of(h, 2) == [(i, "re-applied") for i in ids]
        assert entries_of(h, 2) == [(i, "apply", "applied") for i in ids]
        assert entries_of(h, 1) == [(i, "apply", "applied") for i in ids]  # the first start's
        starts = {s["start"]: s for s in h["starts"]}
        assert starts[1]["pid"] != starts[2]["pid"] == server.proc.proc.pid
    finally:
        server.stop()

    # A version the stack knows nothing of: refused, with what to do; the stack is kept as it was.
    stacked = (case / "state" / "stack.json").read_bytes()
    refused = subprocess.run(
        _argv(stack, case), capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(stack.trees["other"])},
    )  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "kvserver ready" not in refused.stdout
    assert f"stacked patch {ids[0]}" in refused.stderr
    assert "--on-stale-patches warn" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (case / "state" / "stack.json").read_bytes() == stacked

    # Deployed v1 (the first patch's new code): p1 is included, p2 and p3 are re-applied.
    server = Server(stack, case, "v1")
    try:
        assert server.first_echo == b"v3:x"
        h = history(case / "lp.sock")
        assert [s["outcome"] for s in h["starts"]] == ["serving", "serving", "refused", "serving"]
        assert restore_of(h, 3) == [(ids[0], "stale"), (ids[1], "dropped"), (ids[2], "dropped")]
        assert restore_of(h, 4) == [
            (ids[0], "included"),
            (ids[1], "re-applied"),
            (ids[2], "re-applied"),
        ]
    finally:
        server.stop()

    # Deployed v3: everything is included, nothing is applied, the stack is empty.
    server = Server(stack, case, "v3")
    try:
        assert server.first_echo == b"v3:x"
        h = history(case / "lp.sock")
        assert restore_of(h, 5) == [(ids[1], "included"), (ids[2], "included")]
        assert entries_of(h, 5) == []
        assert _applied_ids(h) == [*ids, *ids, ids[1], ids[2]]  # starts 1, 2 and 4
    finally:
        server.stop()
    server = Server(stack, case, "v3")  # and the next restart has nothing left to do
    try:
        assert restore_of(history(case / "lp.sock"), 6) == []
    finally:
        server.stop()


def test_stale_stack_with_warn_starts_without_it_and_says_so(stack: Stack) -> None:
    case = stack.work / "b"
    case.mkdir()
    ids = _start_with_stack(stack, case)
    server = Server(stack, case, "other", "--on-stale-patches", "warn")
    try:
        assert server.first_echo == b"other:x"  # its own code, unpatched
        h = history(case / "lp.sock")
        assert restore_of(h, 2) == [(ids[0], "stale"), (ids[1], "dropped"), (ids[2], "dropped")]
        assert entries_of(h, 2) == [(ids[0], "apply", "refused")]
        log = server.log.read_text()
        assert "STALE PATCHES DROPPED" in log and "Traceback" not in log
    finally:
        server.stop()
    server = Server(stack, case, "v0")  # the stack was dropped: v0 stays v0
    try:
        assert server.first_echo == b"x"
    finally:
        server.stop()
