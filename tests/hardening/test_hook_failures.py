"""Any exception from a hook is a failed (or refused) patch, recorded and replied (issue 10): a transform
hook raising SystemExit used to end the patcher's job with no history entry, no log line and "closed
without a reply" for the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livepatch.patch.model import Category
from tests.agent.agent_helpers import cli, run_service, socket_dir
from tests.hardening.hardening_helpers import greet_spec, no_traceback, write_patch

pytestmark = pytest.mark.timeout(120)

CASES = [
    # (hooks source, expected outcome, words of the reason)
    (
        "import sys\n\ndef transform(ctx):\n    sys.exit(3)\n",
        "failed",
        "transform hook raised SystemExit(3)",
    ),
    (
        "def transform(ctx):\n    raise KeyboardInterrupt\n",
        "failed",
        "transform hook raised KeyboardInterrupt()",
    ),
    (
        "def pre_patch(ctx):\n    raise SystemExit('no')\n",
        "refused",
        "pre_patch hook vetoed the patch: SystemExit('no')",
    ),
    ("raise SystemExit(1)\n", "refused", "the patch's hooks failed to load: SystemExit(1)"),
]


def test_hooks_raising_base_exceptions_are_recorded_and_replied(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    with socket_dir() as d, run_service(d / "a.sock", allow_unsigned=True, log_path=log) as svc:
        client = svc.connect()
        for i, (hooks, outcome, reason) in enumerate(CASES):
            spec = greet_spec(category=Category.DATA, hooks_source=hooks, patch_id=f"hook-{i}")
            patch = write_patch(tmp_path / f"hook-{i}.lpatch", spec)
            proc = cli(
                "apply", str(patch), "--socket", svc.socket_path, "--method", "global", "--json"
            )
            assert proc.returncode == 1, proc.stderr
            reply = json.loads(proc.stdout)
            assert reply["ok"] is False and reason in reply["error"], reply
            assert reply["result"]["outcome"] == outcome
            assert client.request("GREET ann") == "hello ann (v1)"  # nothing changed, still serving
        history = json.loads(cli("history", "--socket", svc.socket_path, "--json").stdout)[
            "history"
        ]
        outcomes = {r["patch_id"]: (r["outcome"], r["reason"]) for r in history}
        for i, (_, outcome, reason) in enumerate(CASES):
            assert outcomes[f"hook-{i}"][0] == outcome and reason in outcomes[f"hook-{i}"][1]
        # the next patch still goes through: the patcher thread survived every one of them
        ok = write_patch(tmp_path / "ok.lpatch", greet_spec(patch_id="ok"))
        assert cli("apply", str(ok), "--socket", svc.socket_path).returncode == 0
        assert client.request("GREET ann") == "hello, ann! (v2)"
    text = log.read_text()
    for i in range(len(CASES)):
        assert f"hook-{i}" in text  # a log line for each attempt
    assert "SystemExit(3)" in text
    no_traceback(text)
