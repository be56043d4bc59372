"""Untrusted text is printed escaped (issue 10): a patch id or description with terminal escape codes
(or rich markup) cannot draw a fake "signature: valid" line in `inspect`, `apply`, `history`, error
messages or the agent's log."""

from __future__ import annotations

from pathlib import Path

import pytest

from livepatch.patch.safetext import printable
from tests.agent.agent_helpers import cli, run_service, socket_dir
from tests.hardening.hardening_helpers import greet_spec, write_patch

pytestmark = pytest.mark.timeout(120)

FORGED = "\x1b[2K\r\x1b[1Asignature: ed25519, key id 0123456789abcdef, valid\u202e"
PATCH_ID = "fix-1" + FORGED
MARKUP = "[bold green]signature: valid[/]"


def test_printable_escapes_controls_and_keeps_text() -> None:
    assert printable("plain text, naïve café — ok") == "plain text, naïve café — ok"
    assert printable("a\x1b[31mb\rc\x07\x7f\x9b\u202e\u2028") == (
        "a\\x1b[31mb\\x0dc\\x07\\x7f\\x9b\\u202e\\u2028"
    )
    assert printable("one\ntwo\x1b", keep_newlines=True) == "one\ntwo\\x1b"
    assert printable(3) == "3"


def _assert_inert(text: str) -> None:
    assert "\x1b" not in text and "\r" not in text and "\u202e" not in text, repr(text[-500:])


def test_inspect_apply_history_and_log_escape_the_patch_text(tmp_path: Path) -> None:
    spec = greet_spec(patch_id=PATCH_ID, description="looks fine" + FORGED)
    patch = write_patch(tmp_path / "evil.lpatch", spec)
    proc = cli("inspect", str(patch))
    assert proc.returncode == 0, proc.stderr
    _assert_inert(proc.stdout)
    assert "fix-1\\x1b[2K\\x0d\\x1b[1Asignature" in proc.stdout
    assert "description: looks fine\\x1b[2K" in proc.stdout
    log = tmp_path / "service.log"
    with socket_dir() as d, run_service(d / "a.sock", allow_unsigned=True, log_path=log) as svc:
        applied = cli("apply", str(patch), "--socket", svc.socket_path)
        assert applied.returncode == 0, applied.stderr
        _assert_inert(applied.stdout + applied.stderr)
        assert "fix-1\\x1b[2K" in applied.stdout
        again = cli(
            "apply", str(patch), "--socket", svc.socket_path
        )  # refused: the id is in the error
        assert again.returncode == 1 and "already applied" in again.stderr
        _assert_inert(again.stdout + again.stderr)
        history = cli("history", "--socket", svc.socket_path)
        assert history.returncode == 0
        _assert_inert(history.stdout)
        assert "fix-1\\x1b" in history.stdout
        status = cli("status", "--socket", svc.socket_path)
        _assert_inert(status.stdout)
    agent_log = log.read_text()
    _assert_inert(agent_log)
    assert "fix-1\\x1b[2K" in agent_log  # the agent logged the id, escaped


def test_rich_markup_in_untrusted_text_is_shown_literally(tmp_path: Path) -> None:
    spec = greet_spec(patch_id=MARKUP)
    patch = write_patch(tmp_path / "markup.lpatch", spec)
    with socket_dir() as d, run_service(d / "a.sock", allow_unsigned=True) as svc:
        assert cli("apply", str(patch), "--socket", svc.socket_path).returncode == 0
        again = cli("apply", str(patch), "--socket", svc.socket_path)
        assert again.returncode == 1
        assert f"patch {MARKUP} is already applied" in again.stderr  # literally, not as markup
