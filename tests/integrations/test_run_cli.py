"""`livepatch run` as a user meets it: a forking server refused with its reason before it serves, the
server started as python would start it, and clear errors (never a traceback) for what a user gets
wrong. Also: `import livepatch` does not import the integrations, and installing twice patches once."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent.agent_helpers import cli, socket_dir
from tests.conftest import free_port
from tests.integrations.serving import APPS, keygen

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def sock_dir() -> Iterator[Path]:
    with socket_dir() as d:
        yield d


def test_forking_server_is_refused_with_its_reason(sock_dir: Path) -> None:
    port, agent_socket = free_port(), sock_dir / "agent.sock"
    proc = cli(
        "run", "--allow-unsigned", "--socket", str(agent_socket),
        str(APPS / "forking_server.py"), str(port),
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "READY" not in proc.stdout  # refused when the server is built, before it listens
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("livepatch: agent listening on")
    error = proc.stderr.splitlines()[-1]
    assert error.startswith(
        "error: ForkingTCPServer is a forking server (socketserver.ForkingMixIn)"
    )
    assert "does not patch its children" in error and "ThreadingTCPServer" in error
    assert not agent_socket.exists()  # the agent was stopped
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.parametrize("as_module", [False, True])
def test_target_runs_as_python_would_run_it(
    as_module: bool, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(APPS)
    target = ["-m", "show_argv"] if as_module else ["show_argv.py"]
    proc = cli(
        "run", "--allow-unsigned", "--socket", str(sock_dir / "a.sock"),
        *target, "x", "--socket", "mine", "-m",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert shown["name"] == "__main__"
    # everything after the target is the server's, options that look like ours included
    assert shown["argv"][1:] == ["x", "--socket", "mine", "-m"]
    assert Path(shown["argv"][0]).name == "show_argv.py"
    assert Path(shown["path0"]).resolve() == APPS.resolve()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["show_argv.py"], "no trusted key: pass --trusted-key KEY.pub"),
        (["--allow-unsigned", "nosuch.py"], "no such script: nosuch.py"),
        (["--allow-unsigned", "-m", "nosuch_module"], "no module named 'nosuch_module'"),
        (["--trusted-key", "missing.pub", "show_argv.py"], "missing.pub"),
        (["--allow-unsigned", "--socket", "/nonexistent/dir/a.sock", "show_argv.py"],
         "cannot start the agent on /nonexistent/dir/a.sock"),
    ],
)  # fmt: skip
def test_bad_invocations_get_a_clear_error(
    args: list[str], expected: str, sock_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(APPS)
    monkeypatch.setenv("LIVEPATCH_SOCKET", str(sock_dir / "a.sock"))
    proc = cli("run", *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert proc.stderr.splitlines()[-1].startswith("error: ")
    assert expected in proc.stderr


def test_a_trusted_key_from_keygen_is_accepted(tmp_path: Path, sock_dir: Path) -> None:
    _, pub = keygen(tmp_path / "keys")
    proc = cli(
        "run", "--trusted-key", str(pub), "--socket", str(sock_dir / "a.sock"),
        str(APPS / "show_argv.py"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )


def test_import_livepatch_does_not_import_the_integrations() -> None:
    proc = _python(
        "import sys, livepatch, livepatch.cli\n"
        "assert livepatch.quiescence_point and livepatch.managed_thread\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('livepatch.integrations'))\n"
        "assert not loaded, loaded\n"
    )
    assert proc.returncode == 0, proc.stderr


# What install() replaces, as an expression each (read three times in the program below).
INSTALLED = {
    "finish_request": "socketserver.BaseServer.finish_request",
    "server_init": "socketserver.BaseServer.__init__",
    "setup": "socketserver.StreamRequestHandler.setup",
    "handle_one_request": "http.server.BaseHTTPRequestHandler.handle_one_request",
    "run_forever": "asyncio.base_events.BaseEventLoop.run_forever",
    "_worker": "concurrent.futures.thread._worker",
    "executor_init": "concurrent.futures.thread.ThreadPoolExecutor.__init__",
}


def test_install_is_idempotent_and_patches_what_the_docs_say() -> None:
    snapshot = "{" + ", ".join(f"{name!r}: {expr}" for name, expr in INSTALLED.items()) + "}"
    proc = _python(
        "import asyncio.base_events, concurrent.futures.thread, http.server, socketserver\n"
        f"before = {snapshot}\n"
        "import livepatch.integrations as li\n"
        "assert li.install() is None\n"
        f"first = {snapshot}\n"
        "li.install(); li.install_frameworks()\n"
        f"again = {snapshot}\n"
        f"assert sorted(before) == {sorted(INSTALLED)!r}\n"
        "for name in before:\n"
        "    assert first[name] is not before[name], name\n"
        "    assert first[name].__livepatch_replaces__ is before[name], name\n"
        "    assert again[name] is first[name], name\n"
        "try:\n"
        "    li.install_frameworks(['twisted'])\n"
        "except ValueError as exc:\n"
        "    assert 'twisted' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('unknown framework accepted')\n"
    )
    assert proc.returncode == 0, proc.stderr
