"""Patches outlive the process under `livepatch run`: an unmodified socketserver app with a stack of 3
signed patches (one of them adds a function), restarted on the old code, on a version the stack knows
nothing of, and on the newest code.

Under `livepatch run` the agent starts before the app's code is imported: the restore imports the
modules the patches name and re-applies the stack before the app's `__main__` runs, so the very first
connection, opened when the app prints READY, already gets the newest reply.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agent.persist_helpers import (
    LIVEPATCH,
    apply,
    entries_of,
    history,
    restore_of,
    signed_diff,
)
from tests.agent.persist_helpers import start_server as start_process
from tests.integrations.serving import APPS, LineClient, keygen

pytestmark = pytest.mark.timeout(240)

READY = re.compile(r"^READY (\d+)", re.MULTILINE)
REPLIES = {
    "v1": 'def reply(name: str) -> str:\n    return f"v1 hello {name}"\n',
    "v2": 'def reply(name: str) -> str:\n    return f"v2 hello {name}"\n',
    # v3 adds a function: its presence is what says "v3 is deployed" for that patch
    "v3": 'def greeting() -> str:\n    return "v3"\n\n\n'
    'def reply(name: str) -> str:\n    return f"{greeting()} hello {name}"\n',
    "v4": 'def greeting() -> str:\n    return "v3"\n\n\n'
    'def reply(name: str) -> str:\n    return f"v4 hello {name}"\n',
    "other": 'def reply(name: str) -> str:\n    return f"other hello {name}"\n',
}


def _tree(work: Path, version: str) -> Path:
    root = work / version
    shutil.copytree(APPS / "lineapp" / "v1", root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "lineapp" / "replies.py").write_text(REPLIES[version])
    return root


def _argv(case: Path, pub: Path, port: int, *extra: str) -> list[str]:
    return [
        LIVEPATCH, "run", "--socket", str(case / "lp.sock"), "--trusted-key", str(pub),
        "--state-dir", str(case / "state"), *extra, "-m", "lineapp", str(port),
    ]  # fmt: skip


class App:
    """`livepatch run -m lineapp` from a version's directory; `first` is the first reply it served."""

    def __init__(self, case: Path, tree: Path, pub: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from tests.conftest import free_port

        self.log = case / f"app-{len(list(case.glob('app-*.log')))}.log"
        monkeypatch.chdir(tree)  # -m finds the package in the current directory
        self.proc = start_process(_argv(case, pub, free_port()), READY, self.log)
        m = READY.search(self.log.read_text())
        assert m is not None
        self.client = LineClient(int(m.group(1)))
        self.first = self.client.request("x")

    def stop(self) -> None:
        self.client.close()
        self.proc.stop()


def test_run_app_stack_is_restored_before_main_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="lp-prun-"))  # short: a Unix socket path has ~100 bytes
    try:
        key, pub = keygen(tmp_path / "keys")
        trees = {v: _tree(work, v) for v in REPLIES}
        patches = [
            signed_diff(trees[a], trees[b], "lineapp", key, tmp_path / f"{b}.lpatch")
            for a, b in (("v1", "v2"), ("v2", "v3"), ("v3", "v4"))
        ]
        case = work / "c"
        case.mkdir()

        app = App(case, trees["v1"], pub, monkeypatch)
        try:
            assert app.first == "v1 hello x"
            ids = [apply(p, case / "lp.sock")["result"]["patch_id"] for p in patches]
            assert app.client.request("x") == "v4 hello x"
        finally:
            app.stop()

        app = App(case, trees["v1"], pub, monkeypatch)  # restart on the old code
        try:
            assert app.first == "v4 hello x"
            h = history(case / "lp.sock")
            assert restore_of(h, 2) == [(i, "re-applied") for i in ids]
            assert entries_of(h, 2) == [(i, "apply", "applied") for i in ids]
        finally:
            app.stop()

        refused = subprocess.run(
            _argv(case, pub, 1), cwd=trees["other"], capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )  # fmt: skip
        assert refused.returncode == 1, refused.stdout + refused.stderr
        last = refused.stderr.strip().splitlines()[-1]
        assert last.startswith("error: stacked patch") and "--on-stale-patches warn" in last, last
        assert "READY" not in refused.stdout and "Traceback" not in refused.stderr

        app = App(case, trees["v4"], pub, monkeypatch)  # the newest code deployed
        try:
            assert app.first == "v4 hello x"
            h = history(case / "lp.sock")
            assert restore_of(h, 4) == [(i, "included") for i in ids]
            assert entries_of(h, 4) == []
            text = subprocess.run(
                [LIVEPATCH, "history", "--socket", str(case / "lp.sock")],
                capture_output=True, text=True, timeout=60,
            ).stdout  # fmt: skip
            assert "REFUSED TO START" in text and "start 4" in text, text
        finally:
            app.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
