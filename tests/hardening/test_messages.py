"""Messages a user needs (issue 10), each in the `livepatch` command's terms: what went wrong and what to
type next; --json prints a JSON error object on every failure; every option has help."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from livepatch.cli import main
from livepatch.patch.model import Category
from tests.agent.agent_helpers import LIVEPATCH, cli, run_service, socket_dir
from tests.hardening.hardening_helpers import greet_spec, write_patch

pytestmark = pytest.mark.timeout(120)


def _json_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    data = json.loads(proc.stdout)
    assert data["ok"] is False and isinstance(data["error"], str) and data["error"]
    return str(data["error"])


def test_agent_refusals_say_what_to_type(tmp_path: Path) -> None:
    process_patch = write_patch(tmp_path / "p.lpatch", greet_spec(patch_id="proc-1"))
    with socket_dir() as d, run_service(d / "a.sock", allow_unsigned=True) as svc:
        sock = ["--socket", svc.socket_path]
        # nothing applied yet
        proc = cli("revert", *sock)
        assert proc.returncode == 1 and "nothing to revert" in proc.stderr, proc.stderr
        assert "nothing to revert" in _json_error(cli("revert", *sock, "--json"))
        # a process patch with --method local: how to apply it, and how to rebuild it
        proc = cli("apply", str(process_patch), *sock, "--method", "local")
        assert proc.returncode == 1
        assert "--method global" in proc.stderr and "--category thread-local" in proc.stderr
        assert "method='global'" not in proc.stderr
        # a thread-local patch with a transform hook and --method local
        transform = write_patch(
            tmp_path / "t.lpatch",
            greet_spec(
                category=Category.THREAD_LOCAL,
                hooks_source="def transform(ctx):\n    pass\n",
                patch_id="tr-1",
            ),
        )
        for method in ("local", "auto"):  # auto: local for a thread-local patch
            proc = cli("apply", str(transform), *sock, "--method", method)
            assert proc.returncode == 1 and "--method global" in proc.stderr, proc.stderr
            assert "method='global'" not in proc.stderr
        # applied twice
        assert cli("apply", str(process_patch), *sock).returncode == 0
        proc = cli("apply", str(process_patch), *sock)
        assert proc.returncode == 1 and "proc-1 is already applied" in proc.stderr
        assert "livepatch revert proc-1" in proc.stderr
        assert "already applied" in _json_error(cli("apply", str(process_patch), *sock, "--json"))
        # reverting a process patch with --method local (the runtime's check)
        proc = cli("revert", *sock, "--method", "local")
        assert proc.returncode == 1 and "--method global" in proc.stderr, proc.stderr


def test_stale_and_non_socket_paths(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))  # bound, never listening, closed: what a killed server leaves behind
    regular = tmp_path / "file.sock"
    regular.write_text("not a socket")
    for path in (stale, regular):
        for command in (("status",), ("history",), ("revert",)):
            proc = cli(*command, "--socket", str(path))
            assert proc.returncode == 1
            assert "no server is listening on this socket (stale socket?)" in proc.stderr, (
                proc.stderr
            )
            assert "stale socket?" in _json_error(cli(*command, "--socket", str(path), "--json"))
    assert "it is not a socket file" in cli("status", "--socket", str(regular)).stderr


def test_json_error_object_on_every_failure(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.sock")
    bad = tmp_path / "bad.lpatch"
    bad.write_text("{}")
    for args in (
        ("status", "--socket", missing),
        ("apply", str(bad), "--socket", missing),
        ("inspect", str(bad)),
        ("diff", str(tmp_path), str(tmp_path), "-p", "nope"),
    ):
        _json_error(cli(*args, "--json"))
    # usage errors (exit 2) too
    proc = cli("apply", str(tmp_path / "nope.lpatch"), "--socket", missing, "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["ok"] is False


def test_every_option_has_help_and_the_main_commands_have_examples() -> None:
    ctx = click.Context(main)
    for name in main.list_commands(ctx):
        if name in ("serve", "bench", "demo"):
            continue  # other owners' commands
        cmd = main.get_command(ctx, name)
        assert cmd is not None
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert param.help, f"livepatch {name} {param.opts[0]} has no help"
    for name in ("apply", "diff", "revert"):
        cmd = main.get_command(ctx, name)
        assert cmd is not None and cmd.help and "Examples:" in cmd.help
        assert f"livepatch {name} " in cmd.help


def test_kvserver_warns_when_no_patch_can_ever_be_accepted(tmp_path: Path) -> None:
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [
            LIVEPATCH,
            "serve",
            "kv",
            "--port",
            str(port),
            "--livepatch-socket",
            str(tmp_path / "kv.sock"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # the warning comes before the server starts
        assert "no patch" in line or "refuse every patch" in line, line
        assert "--trusted-key" in line
    finally:
        proc.terminate()
        proc.wait(timeout=10)


HOLD_S = 10


def _wait_for_transition(socket_path: str) -> None:
    deadline = time.monotonic() + HOLD_S / 2
    while True:  # the patch waits for quiescence once the agent reports a global transition
        status = json.loads(cli("status", "--socket", socket_path, "--json").stdout)
        if status["statistics"]["transition"] == "global":
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_cli_killed_mid_apply_the_patch_completes_and_history_shows_it(tmp_path: Path) -> None:
    """Documented in docs/cli.md: the agent finishes the apply when the CLI goes away."""
    patch = write_patch(tmp_path / "p.lpatch", greet_spec(patch_id="killed-cli"))
    with socket_dir() as d, run_service(d / "a.sock", allow_unsigned=True) as svc:
        holder = svc.connect()
        # a request in flight with no quiescence point for HOLD_S seconds; while a global patch waits,
        # no other connection is served (activate() and birth wait), so the hold ends on its own
        holder.file.write(f"HOLD {HOLD_S}\n".encode())
        holder.file.flush()
        apply = subprocess.Popen(
            [
                LIVEPATCH,
                "apply",
                str(patch),
                "--socket",
                svc.socket_path,
                "--method",
                "global",
                "--timeout",
                "60",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_for_transition(svc.socket_path)
            os.kill(apply.pid, signal.SIGKILL)
            apply.wait(timeout=10)
        finally:
            if apply.poll() is None:
                apply.kill()
                apply.wait(timeout=10)
        # killed while the patch was still waiting for quiescence (the transition is still pending)
        status = json.loads(cli("status", "--socket", svc.socket_path, "--json").stdout)
        assert status["statistics"]["transition"] == "global", status
        assert holder.file.readline() == b"HOLD TIMED OUT\n"
        deadline = time.monotonic() + 30
        while True:
            history = json.loads(cli("history", "--socket", svc.socket_path, "--json").stdout)
            done = [r for r in history["history"] if r["patch_id"] == "killed-cli"]
            if done:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert done[0]["outcome"] == "applied"
        assert holder.request("GREET kim") == "hello, kim! (v2)"
        assert "killed-cli" in cli("history", "--socket", svc.socket_path).stdout


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
