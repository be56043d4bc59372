"""Patches outlive the process, on sqlserver too (issue 13): a real sqlserver with a stack of 3 signed
patches, restarted on the old code, on a version the stack knows nothing of (refused, then started
with `--on-stale-patches warn`), and on the newest code (every patch included).

The code versions are copies of the installed sqlserver whose `SHOW server_version` answers
"<version> (vN)" (v0 as installed); the patches are the real `livepatch diff` of v0->v1, v1->v2,
v2->v3, signed, applied with the real `livepatch apply`; restarts are new processes of `python -m
sqlserver.cli` on the same data directory, socket and state directory, with PYTHONPATH choosing the
deployed version. The first reply of a restarted server comes from the first connection (psycopg),
opened as soon as it printed its readiness line: when it already shows v3, the stack was back before
anyone was served. Same shape as tests/agent/test_persist_kvserver.py.
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

import pytest

import sqlserver
from tests.agent.persist_helpers import (
    apply,
    entries_of,
    history,
    restore_of,
    signed_diff,
    start_server,
)
from tests.integrations.serving import keygen

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.timeout(300)

SRC = Path(sqlserver.__file__).resolve().parent
FUNCTION = "def show_command("  # SHOW's handler
OLD_LINE = "    value = session.settings.get(name)\n"
READY = re.compile(r"sqlserver ready on [\d.]+:(\d+)")


@dataclass
class Stack:
    work: Path
    trees: dict[str, Path]  # version -> a directory holding that version's sqlserver package
    patches: list[Path]
    pub: Path


def _version(work: Path, name: str, tag: str | None) -> Path:
    root = work / name
    shutil.copytree(SRC, root / "sqlserver", ignore=shutil.ignore_patterns("__pycache__"))
    if tag is not None:
        [module] = [f for f in (root / "sqlserver").glob("*.py") if FUNCTION in f.read_text()]
        text = module.read_text()
        start = text.index(FUNCTION)
        end = text.index("\ndef ", start + 1)
        assert text.count(OLD_LINE, start, end) == 1, f"{FUNCTION} changed: update OLD_LINE"
        new_line = f'    value = f"{{session.settings.get(name)}} ({tag})"\n'
        module.write_text(text[:start] + text[start:end].replace(OLD_LINE, new_line) + text[end:])
    return root


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    work = Path(tempfile.mkdtemp(prefix="lp-sqlp-"))  # short: a Unix socket path has ~100 bytes
    try:
        key, pub = keygen(work / "keys")
        trees = {"v0": _version(work, "v0", None)}
        for n in (1, 2, 3):
            trees[f"v{n}"] = _version(work, f"v{n}", f"v{n}")
        trees["other"] = _version(work, "other", "other")
        patches = [
            signed_diff(
                trees[f"v{n}"], trees[f"v{n + 1}"], "sqlserver", key, work / f"p{n + 1}.lpatch"
            )
            for n in (0, 1, 2)
        ]
        yield Stack(work, trees, patches, pub)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _argv(stack: Stack, case: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "sqlserver.cli", "--port", "0", "--dir", str(case / "data"),
        "--livepatch-socket", str(case / "lp.sock"), "--trusted-key", str(stack.pub),
        "--state-dir", str(case / "state"), *extra,
    ]  # fmt: skip


class Server:
    """One sqlserver process at a code version; `first_version` is the very first reply it serves."""

    def __init__(self, stack: Stack, case: Path, version: str, *extra: str) -> None:
        self.log = case / f"server-{len(list(case.glob('server-*.log')))}.log"
        self.proc = start_server(_argv(stack, case, *extra), READY, self.log, stack.trees[version])
        m = READY.search(self.log.read_text())
        assert m is not None
        self.port = int(m.group(1))
        self.first_version = self.server_version()

    def server_version(self) -> str:
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", connect_timeout=30
        ) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        return str(row[0])

    def stop(self) -> None:
        self.proc.stop()


def _start_with_stack(stack: Stack, case: Path) -> list[str]:
    """Start on v0, apply the 3 patches; return their ids."""
    server = Server(stack, case, "v0")
    try:
        assert not server.first_version.endswith(")")
        ids = [apply(p, case / "lp.sock")["result"]["patch_id"] for p in stack.patches]
        assert server.server_version().endswith(" (v3)")
    finally:
        server.stop()
    return ids


def test_stack_is_reapplied_before_serving_refused_when_stale_included_when_deployed(
    stack: Stack,
) -> None:
    case = stack.work / "a"
    case.mkdir()
    ids = _start_with_stack(stack, case)

    # Restart on the old code: the first reply already comes from the patched code.
    server = Server(stack, case, "v0")
    try:
        assert server.first_version.endswith(" (v3)")
        h = history(case / "lp.sock")
        assert restore_of(h, 2) == [(i, "re-applied") for i in ids]
        assert entries_of(h, 2) == [(i, "apply", "applied") for i in ids]
    finally:
        server.stop()

    # A version the stack knows nothing of: refused, with what to do; the stack is kept as it was.
    stacked = (case / "state" / "stack.json").read_bytes()
    refused = subprocess.run(
        _argv(stack, case), capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(stack.trees["other"])},
    )  # fmt: skip
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "sqlserver ready" not in refused.stdout
    assert f"stacked patch {ids[0]}" in refused.stderr
    assert "--on-stale-patches warn" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (case / "state" / "stack.json").read_bytes() == stacked

    # Deployed v3 (the last patch's new code): every patch is included, nothing is applied.
    server = Server(stack, case, "v3")
    try:
        assert server.first_version.endswith(" (v3)")
        h = history(case / "lp.sock")
        assert [s["outcome"] for s in h["starts"]] == ["serving", "serving", "refused", "serving"]
        assert restore_of(h, 4) == [(i, "included") for i in ids]
        assert entries_of(h, 4) == []
    finally:
        server.stop()
    server = Server(stack, case, "v3")  # and the next restart has nothing left to do
    try:
        assert restore_of(history(case / "lp.sock"), 5) == []
    finally:
        server.stop()


def test_stale_stack_with_warn_starts_without_it_and_says_so(stack: Stack) -> None:
    case = stack.work / "b"
    case.mkdir()
    ids = _start_with_stack(stack, case)
    server = Server(stack, case, "other", "--on-stale-patches", "warn")
    try:
        assert server.first_version.endswith(" (other)")  # its own code, unpatched
        h = history(case / "lp.sock")
        assert restore_of(h, 2) == [(ids[0], "stale"), (ids[1], "dropped"), (ids[2], "dropped")]
        assert entries_of(h, 2) == [(ids[0], "apply", "refused")]
        log = server.log.read_text()
        assert "STALE PATCHES DROPPED" in log and "Traceback" not in log
    finally:
        server.stop()
    server = Server(stack, case, "v0")  # the stack was dropped: v0 stays v0
    try:
        assert not server.first_version.endswith(")")
    finally:
        server.stop()
