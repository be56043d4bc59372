"""Helpers for the state-directory tests: the real `livepatch` command, history read back as JSON, and a
server process whose every line of output is kept (ManagedProcess).

A restart is a new process of the same command line on the same socket and state directory; the code it
runs is chosen with PYTHONPATH (a copy of the package at some version), as a deploy would swap it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from lpbench.servers import ManagedProcess
from tests.agent.agent_helpers import cli

LIVEPATCH = str(Path(sys.executable).parent / "livepatch")


def history(socket_path: Path) -> dict[str, Any]:
    """`livepatch history --json`: {"history": [... each with "start"], "starts": [...]}."""
    proc = cli("history", "--socket", str(socket_path), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reply: dict[str, Any] = json.loads(proc.stdout)
    return reply


def restore_of(reply: dict[str, Any], start: int) -> list[tuple[str, str]]:
    """(patch id, outcome) of each kept patch at that start."""
    (st,) = [s for s in reply["starts"] if s["start"] == start]
    return [(n["patch_id"], n["outcome"]) for n in st["restore"]]


def entries_of(reply: dict[str, Any], start: int) -> list[tuple[str, str, str]]:
    """(patch id, action, outcome) of each attempt of that start."""
    return [
        (e["patch_id"], e["action"], e["outcome"]) for e in reply["history"] if e["start"] == start
    ]


def start_server(
    argv: list[str], ready: re.Pattern[str], log: Path, pythonpath: Path | None = None
) -> ManagedProcess:
    """Start and wait for the readiness line; PYTHONPATH selects the code version."""
    old = os.environ.get("PYTHONPATH")
    if pythonpath is not None:
        os.environ["PYTHONPATH"] = str(pythonpath)
    try:
        server = ManagedProcess(argv, ready, log)
        server.start()
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    return server


def signed_diff(old: Path, new: Path, package: str, key: Path, out: Path) -> Path:
    """The real `livepatch diff OLD NEW`, signed with KEY."""
    proc = cli(
        "diff", str(old), str(new), "--package", package, "--key", str(key), "-o", str(out)
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def apply(patch: Path, socket_path: Path) -> dict[str, Any]:
    proc = cli("apply", str(patch), "--socket", str(socket_path), "--json")
    reply: dict[str, Any] = json.loads(proc.stdout)
    assert proc.returncode == 0 and reply["ok"], reply
    return reply
